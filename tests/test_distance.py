"""The D-DARTS distance M (dnas/distance.py, eqs. 4.6-4.8) and the early stop built on it."""
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dnas
from dnas.cli import main
from dnas.engine.distance import OP_SCORES, cell_distances, distance, edge_distance, hausdorff
from dnas.errors import DnasError
from dnas.engine.callbacks import LoopState
from dnas.engine.loop import GradientStrategy
from dnas.registry import create_callback

S = {k: v / 100 for k, v in OP_SCORES.items()}  # Table 4.1, % / 100
TINY = dict(C=4, layers=3, nodes=2)  # reductions at 3//3 = 1 and 2*3//3 = 2: cells normal, reduce, reduce


def _edges(key, nodes=2):
    return [f"{key}.node{i}.edge{j}" for i in range(nodes) for j in range(2 + i)]


def _darts(normal, reduce, **cfg):
    space = dnas.create_space("darts", **{**TINY, **cfg})
    return space.genotype({**dict(zip(_edges("normal"), normal)), **dict(zip(_edges("reduce"), reduce))})


N0 = [["sep_conv_3x3"], ["skip_connect"], ["max_pool_3x3"], [], ["dil_conv_3x3"]]
R0 = [["max_pool_3x3"], ["max_pool_3x3"], [], ["skip_connect"], ["avg_pool_3x3"]]


# -- hand-computed cases ---------------------------------------------------------------------------
def test_edge_distance_by_hand():
    # one op against the empty edge: only the sep_conv_3x3 position differs -> 0.8319 / 12
    assert edge_distance(["sep_conv_3x3"], []) == pytest.approx(0.8319 / 12)
    # two different single ops differ at two positions: (0.8319 + 0.8215) / 12
    assert edge_distance(["sep_conv_3x3"], ["skip_connect"]) == pytest.approx((0.8319 + 0.8215) / 12)
    # multi-hot: {sep3, skip} vs {skip} differ at sep3 only
    assert edge_distance(["sep_conv_3x3", "skip_connect"], ["skip_connect"]) == pytest.approx(0.8319 / 12)
    # `none` is not one of the 12 S_o ops: ignored, so [none] is the zero vector
    assert edge_distance(["none"], []) == 0.0
    # the authors' scipy normalisation divides by the sum of the scores instead of 12
    assert edge_distance(["sep_conv_5x5"], [], norm="weights") == pytest.approx(0.8487 / sum(S.values()))


def test_hausdorff_by_hand():
    a, b = [["sep_conv_3x3"], []], [["sep_conv_3x3"]]
    # A->B: sep3 -> 0, {} -> d({}, sep3) = 0.8319/12; max = 0.06933. B->A: sep3 -> 0. H = max = 0.06933
    assert hausdorff(a, b) == pytest.approx(0.8319 / 12)
    assert hausdorff(b, a) == pytest.approx(0.8319 / 12)
    c = [["skip_connect"], ["max_pool_3x3"]]
    # A->C: sep3 -> min(d(sep3,skip)=(.8319+.8215)/12=.13778, d(sep3,max)=(.8319+.8296)/12=.13846) = .13778
    #       {}   -> min(.8215/12=.06846, .8296/12=.06913) = .06846           => directed .13778
    # C->A: skip -> min(.13778, d(skip,{})=.06846) = .06846 ; max -> min(.13846, .06913) = .06913 => .06913
    assert hausdorff(a, c) == pytest.approx((0.8319 + 0.8215) / 12)


def test_genotype_distance_weighs_cell_positions():
    a = _darts(N0, R0)
    b = _darts([["sep_conv_5x5"]] + N0[1:], R0)  # only the first normal edge differs
    # normal cell: edges {sep3, skip, max, {}, dil3} vs {sep5, skip, max, {}, dil3}:
    #   A->B: sep3 -> nearest in B is {} at .8319/12 (sep5 is at (.8319+.8487)/12); the others are in B: 0
    #   B->A: sep5 -> nearest in A is {} at .8487/12.  H = max(.8319, .8487)/12 = .070725
    h = 0.8487 / 12
    assert cell_distances(a, b) == pytest.approx([h, 0.0, 0.0])  # positions: normal, reduce, reduce
    assert distance(a, b) == pytest.approx(h / 3)  # eq. (4.8): mean over the 3 cells of the network
    assert distance(a, b, norm="weights") == pytest.approx(h / 3 * 12 / sum(S.values()))


def test_ddarts_compares_cell_i_with_cell_i():
    space = dnas.create_space("ddarts", **TINY, ops="darts-o")
    base = {n: ["simple_conv_3x3"] if n.endswith(("edge1", "edge2")) else [] for k in ("cell0", "cell1", "cell2") for n in _edges(k)}
    a = space.genotype(base)
    b = space.genotype({**base, "cell2.node1.edge2": ["bottleneck_1x3x1"]})
    # cell2: A = {conv3, {}} ; B = {conv3, {}, bottleneck}: B->A: bottleneck -> {} at .8306/12
    assert cell_distances(a, b) == pytest.approx([0.0, 0.0, 0.8306 / 12])
    assert distance(a, b) == pytest.approx(0.8306 / 12 / 3)


def test_mismatched_genotypes_fail_in_one_line():
    a = _darts(N0, R0)
    with pytest.raises(DnasError, match="same space"):
        distance(a, dnas.create_space("ddarts", **TINY).random_genotype(random.Random(0)))
    deeper = dnas.create_space("ddarts", **{**TINY, "layers": 4}).random_genotype(random.Random(0))
    with pytest.raises(DnasError, match="same number of cells"):
        distance(dnas.create_space("ddarts", **TINY).random_genotype(random.Random(0)), deeper)


def test_permuted_edges_are_at_distance_zero():
    """M is a pseudometric: a cell is the *set* of its edge vectors (Hausdorff), so swapping the ops
    of two edges of a cell gives another genotype at distance 0 (identity of indiscernibles fails)."""
    a = _darts(N0, R0)
    b = _darts([N0[1], N0[0]] + N0[2:], R0)
    assert a != b and distance(a, b) == 0.0


# -- properties on random genotypes ----------------------------------------------------------------
SPACES = {
    "darts": dnas.create_space("darts", **TINY),
    "ddarts-o": dnas.create_space("ddarts", **TINY, ops="darts-o"),
}
seeds = st.integers(0, 2**31 - 1)


def _random(space_name, seed):
    return SPACES[space_name].random_genotype(random.Random(seed))


def _edge_sets(g):
    from dnas.engine.distance import cell_edges

    return [{frozenset(o for o in e if o in OP_SCORES) for e in edges} for _, edges in cell_edges(g)]


@given(st.sampled_from(sorted(SPACES)), seeds, seeds, seeds)
def test_metric_properties(space_name, s1, s2, s3):
    a, b, c = (_random(space_name, s) for s in (s1, s2, s3))
    assert distance(a, a) == 0.0
    assert distance(a, b) == distance(b, a)  # symmetry
    assert distance(a, c) <= distance(a, b) + distance(b, c) + 1e-12  # triangle inequality
    # identity of indiscernibles holds on the cells' edge *sets*: M = 0 exactly when they coincide
    assert (distance(a, b) == 0.0) == (_edge_sets(a) == _edge_sets(b))
    assert 0.0 <= distance(a, b) <= sum(S.values()) / 12


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_distance(tmp_path, capsys):
    a, b = _darts(N0, R0), _darts([["sep_conv_5x5"]] + N0[1:], R0)
    a.save(tmp_path / "a.yaml")
    b.save(tmp_path / "b.yaml")
    assert main(["distance", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--cells"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert float(out[0]) == pytest.approx(distance(a, b), abs=1e-6)
    assert out[1:] == [f"cell {i}: {x:.6f}" for i, x in enumerate(cell_distances(a, b))]
    assert main(["distance", str(tmp_path / "a.yaml"), "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dnas: error:") and len(err.strip().splitlines()) == 1


# -- the loop: M every epoch, early stop -------------------------------------------------------------
def _history(prev, start=None, first=1):
    return [
        {"epoch": first + i, "distance_prev": p, "distance_start": (start or [0.0] * len(prev))[i]}
        for i, p in enumerate(prev)
    ]


def _stop(history, warmup_epochs=0, **options):
    """The distance_stop callback's answer after the last epoch of a scripted history."""
    cb = create_callback("distance_stop", **options)
    return cb.should_stop(LoopState(None, dnas.create_strategy("darts", warmup_epochs=warmup_epochs), None, history=history))


def test_distance_stop_exact_epoch_from_a_stub_history():
    prev = [0.1, 0.05, 0.0, 0.0, 0.02] + [0.0] * 10  # stable from epoch 6 on; thesis: patience 5, from epoch 10, tol 0
    stops = [n for n in range(1, len(prev) + 1) if _stop(_history(prev[:n]))]
    assert stops[0] == 10  # epochs 6-10 are the first 5 stable ones, and 10 >= from_epoch
    late = [0.1] * 11 + [0.0] * 5  # stable only over epochs 12-16
    first = next(n for n in range(1, 17) if _stop(_history(late[:n])))
    assert first == 16
    assert _stop([]) is None
    # the warm-up epochs (α frozen, M = 0 trivially) are not evidence
    assert next(n for n in range(1, 30) if _stop(_history([0.0] * n), warmup_epochs=8)) == 13


def test_distance_stop_on_the_start_distance_as_the_authors_code():
    opts = dict(on="start", patience=4, tol=0.001, from_epoch=1)
    start = [0.01, 0.02, 0.028, 0.0302, 0.0305, 0.0308, 0.0309]  # range ≤ 0.001 over epochs 4-7 (0.0007) only
    stops = [n for n in range(1, 8) if _stop(_history([0.1] * n, start[:n]), **opts)]
    assert stops[0] == 7
    assert "0.001" in _stop(_history([0.1] * 7, start), **opts)
    with pytest.raises(DnasError, match="patience"):
        create_callback("distance_stop", patience=0)


def test_distance_callback_records_m_to_the_previous_epoch_and_the_start():
    space = dnas.create_space("darts", **TINY)
    net = space.supernet(space.tiny_task)
    a, b = _darts(N0, R0), _darts([["sep_conv_5x5"]] + N0[1:], R0)
    state = LoopState(net, dnas.create_strategy("darts"), None, start_genotype={k: list(v) for k, v in a.choices.items()})
    cb = create_callback("distance")
    cb.on_search_start(state)
    records = [{"epoch": 1, "genotype": dict(a.choices)}, {"epoch": 2, "genotype": dict(b.choices)}, {"epoch": 3, "genotype": dict(b.choices)}]
    for r in records:
        cb.on_epoch_end(state, r)
        state.history.append(r)
    assert [r["distance_prev"] for r in records] == [0.0, pytest.approx(distance(b, a), abs=1e-6), 0.0]
    assert [r["distance_start"] for r in records] == [0.0] + [pytest.approx(distance(b, a), abs=1e-6)] * 2
    mlp = dnas.create_space("nasiam-mlp")
    with pytest.raises(DnasError, match="callback 'distance' needs the distance M"):
        cb.on_search_start(LoopState(mlp.supernet(mlp.tiny_task), state.strategy, None))


def test_run_logs_distances_and_stops_when_alpha_is_frozen(tmp_path, capsys):
    """a_lr = 0: α never moves, so every M is 0 and the search stops after exactly epoch
    max(early_stop_from, warmup_epochs + patience) = max(3, 1 + 2) = 3."""
    r = dnas.search(
        "ddarts", "fairdarts", "synthetic", space_config=TINY,
        strategy_config=dict(epochs=6, a_lr=0.0, warmup_epochs=1), callbacks={"distance_stop": {"from_epoch": 3, "patience": 2}},
        data_config=dict(batch_size=64), out=tmp_path / "run", progress=False,
    )
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert all(h["distance_prev"] == 0.0 and h["distance_start"] == 0.0 for h in r.history)
    assert "early stop after epoch 3: distance M to the previous epoch" in capsys.readouterr().err


def test_run_distances_match_the_recorded_genotypes(tmp_path):
    r = dnas.search(
        "darts", "darts", "synthetic", space_config=TINY, strategy_config=dict(epochs=3, a_lr=0.5),
        data_config=dict(batch_size=64), out=tmp_path / "run", progress=False,
    )
    space = dnas.create_space("darts", **TINY)
    gs = [space.genotype(h["genotype"]) for h in r.history]
    for prev, now, h in zip(gs, gs[1:], r.history[1:]):
        assert h["distance_prev"] == pytest.approx(distance(now, prev), abs=1e-6)
    assert r.history[-1]["distance_start"] >= 0.0
    assert any(h["distance_start"] > 0 for h in r.history)  # a_lr 0.5 moves the genotype away from epoch 0


def test_start_genotype_survives_a_checkpoint_in_the_loop_state():
    space = dnas.create_space("darts", **TINY)
    net = space.supernet(space.tiny_task)
    s = GradientStrategy()
    state = s.init_state(net)
    state.start_genotype = {"x": ["a"]}
    other = s.init_state(net)
    other.load_state_dict(state.state_dict())
    assert other.start_genotype == {"x": ["a"]}


def test_distance_only_on_cnn_cell_spaces():
    from dnas.engine.distance import has_cells

    assert has_cells(SPACES["darts"]) and has_cells(SPACES["ddarts-o"])
    assert not has_cells(dnas.create_space("nasiam-mlp"))  # MLP heads: cells, but no S_o op to compare
