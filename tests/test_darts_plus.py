"""DARTS+ early stop criteria and the parameter-free-op monitor, on scripted genotype and α trajectories."""
from types import SimpleNamespace

import pytest

import dnas
from dnas.engine.callbacks import Callback, LoopState
from dnas.engine.darts_plus import count_param_free, learnable_ranking, normal_cells
from dnas.registry import create_callback

OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def _state(space=None, warmup=0, epoch=0):
    space = space or dnas.create_space("darts", C=4, layers=3, nodes=2)
    return LoopState(supernet=SimpleNamespace(space=space), strategy=SimpleNamespace(config=SimpleNamespace(warmup_epochs=warmup)),
                     run=None, epoch=epoch)


def _genotype(normal_skips: int, reduce_skips: int = 0) -> dict:
    """A tiny DARTS genotype (2 nodes, 2 edges each) with that many skip connections per cell."""
    out = {}
    for cell, skips in (("normal", normal_skips), ("reduce", reduce_skips)):
        edges = [f"{cell}.node0.edge0", f"{cell}.node0.edge1", f"{cell}.node1.edge0", f"{cell}.node1.edge2"]
        for k, e in enumerate(edges):
            out[e] = ["skip_connect" if k < skips else "sep_conv_3x3"]
        out[f"{cell}.node1.edge1"] = []
    return out


def test_callbacks_are_registered_with_options():
    for name in ("darts_plus_skip", "darts_plus_rank", "param_free_ops"):
        assert isinstance(create_callback(name), Callback)
    with pytest.raises(dnas.DnasError, match="max_skips"):
        create_callback("darts_plus_skip", max_skips=0)


def test_param_free_count_by_hand():
    g = _genotype(1, 3)
    g["normal.node1.edge0"] = ["max_pool_3x3"]
    total, by_cell = count_param_free(g)
    assert by_cell == {"normal": 2, "reduce": 3} and total == 5
    cb, state = create_callback("param_free_ops"), _state()
    record = {"epoch": 1, "genotype": g}
    cb.on_epoch_end(state, record)
    assert record["param_free_ops"] == 5 and record["param_free_ops_by_cell"] == {"normal": 2, "reduce": 3}


def test_skip_criterion_stops_at_two_skips_in_the_normal_cell():
    cb, state = create_callback("darts_plus_skip"), _state()
    assert normal_cells(state.supernet.space) == {"normal"}
    stops = []
    for epoch, (n, r) in enumerate([(0, 0), (1, 3), (1, 4), (2, 0)], start=1):  # reduce-cell skips do not count
        cb.on_epoch_end(state, {"epoch": epoch, "genotype": _genotype(n, r)})
        stops.append(cb.should_stop(state))
    assert stops[:3] == [None, None, None]
    assert "cell 'normal' holds 2 skip_connect" in stops[3] and "criterion 1" in stops[3]
    every = create_callback("darts_plus_skip", cells="all")
    every.on_epoch_end(state, {"epoch": 1, "genotype": _genotype(0, 2)})
    assert "cell 'reduce'" in every.should_stop(state)
    late = create_callback("darts_plus_skip", from_epoch=5)
    late.on_epoch_end(state, {"epoch": 4, "genotype": _genotype(3)})
    assert late.should_stop(state) is None


def _alphas(order: list[str]) -> dict:
    """α rows for every decision of the tiny space, with the learnable ops weighted in ``order``
    (first = highest) and the parameter-free ops weighted highest of all (they must not count)."""
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    row = [0.0] * len(OPS)
    for k, op in enumerate(order):
        row[OPS.index(op)] = 0.5 - 0.1 * k
    row[OPS.index("skip_connect")] = 0.9
    return {d.name: list(row) for d in space.decisions()}


def test_rank_criterion_on_a_scripted_trajectory():
    a = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    b = ["sep_conv_5x5", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"]
    trajectory = [a, b, b, b, a, a, a, a]  # ranking changes at epochs 2 and 5, then holds
    cb, state = create_callback("darts_plus_rank", patience=3), _state()
    stops = []
    for epoch, order in enumerate(trajectory, start=1):
        record = {"epoch": epoch, "alphas": _alphas(order)}
        cb.on_epoch_end(state, record)
        stops.append(cb.should_stop(state))
    # stable counts: 0 0 1 2 0 1 2 3 → first stop after epoch 8
    assert [s is not None for s in stops] == [False] * 7 + [True]
    assert "has not changed for 3 epochs" in stops[-1]


def test_rank_criterion_ignores_parameter_free_ops_and_warmup_and_resumes():
    ranking = learnable_ranking({"e": [0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 0.5]}, {"e": OPS})
    assert ranking == {"e": ("dil_conv_5x5", "dil_conv_3x3", "sep_conv_5x5", "sep_conv_3x3")}
    a = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    cb, state = create_callback("darts_plus_rank", patience=2), _state(warmup=3)
    for epoch in (1, 2, 3):  # warm-up: α frozen, the unchanged ranking is no evidence
        cb.on_epoch_end(state, {"epoch": epoch, "alphas": _alphas(a)})
        assert cb.should_stop(state) is None
    cb.on_epoch_end(state, {"epoch": 4, "alphas": _alphas(a)})
    cb.on_epoch_end(state, {"epoch": 5, "alphas": _alphas(a)})
    saved = cb.state_dict()
    again = create_callback("darts_plus_rank", patience=2)
    again.load_state_dict(saved)  # a resumed search keeps the count
    again.on_epoch_end(state, {"epoch": 6, "alphas": _alphas(a)})
    assert again.should_stop(state) is not None and cb.should_stop(state) is None


def test_show_plots_param_free_ops(tmp_path):
    from dnas.tools.show import plot_run

    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    g = space.genotype(_genotype(1))
    history = [{"epoch": e, "param_free_ops": n, "param_free_ops_by_cell": {"normal": n, "reduce": 0}} for e, n in ((1, 0), (2, 1), (3, 3))]
    written = plot_run(tmp_path, g, history)
    assert any(p.name == "param_free_ops.png" and p.stat().st_size > 0 for p in written)


def test_dnas_show_reports_and_plots_param_free_ops(tmp_path):
    import json

    from dnas.tools.show import show

    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    space.genotype(_genotype(2)).save(tmp_path / "genotype.yaml")
    (tmp_path / "history.jsonl").write_text("".join(json.dumps({"epoch": e, "param_free_ops": n}) + "\n" for e, n in ((1, 1), (2, 2))))
    text = show(str(tmp_path))
    assert "param_free_ops 2" in text and (tmp_path / "plots" / "param_free_ops.png").is_file()
