"""DARTOpti (shipped ResNet/Xception genotypes, α from a genotype, shared α, warm-up) and the
pictures of ``dnas show RUN_DIR``."""
import json

import pytest
import torch

import dnas
from dnas.cli import main
from dnas.engine.dartopti import INIT_HIGH, INIT_LOW, init_alpha_from_genotype
from dnas.errors import DnasError
from dnas.genotype import load_genotype
from dnas.tools.show import alpha_matrices, plot_run
from dnas.space import Task

TASK = Task((3, 8, 8), 4)
SHIPPED = ["resnet18", "resnet50", "xception"]


def _space(g, **over):
    return dnas.create_space(g.space, **{**dict(g.config), "C": 4, **over})


# -- shipped genotypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_genotypes_load_validate_and_build(name):
    g = load_genotype(name)  # validates against its space
    assert g.space == "ddarts" and g.config["ops"] == "darts-o"
    space = _space(g)
    net = space.build_network(g, TASK).eval()
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    # every op of S_o the encoding uses is one of the 12, and every decision has a choice
    assert set(g.choices) == {d.name for d in space.decisions()}


def test_resnet_encodings_are_residual_stages():
    r18, r50 = load_genotype("resnet18"), load_genotype("resnet50")
    assert r18.config["layers"] == r50.config["layers"] == 4
    assert _space(r18).reduction_layers() == {1, 2, 3}  # stages 2-4 halve the resolution
    for i in range(4):  # basic blocks: conv, conv + shortcut, twice
        c = f"cell{i}"
        assert r18[f"{c}.node1.edge2"] == ("simple_conv_3x3",) and r18[f"{c}.node1.edge1"] == ("skip_connect",)
        assert r18[f"{c}.node3.edge4"] == ("simple_conv_3x3",) and r18[f"{c}.node3.edge3"] == ("skip_connect",)
    blocks = [sum("bottleneck_1x3x1" in r50[n] for n in r50.choices if n.startswith(f"cell{i}.")) for i in range(4)]
    assert blocks == [3, 4, 6, 3]  # ResNet50's bottleneck blocks per stage


def test_xception_has_13_cells_5_alpha_tensors_shared_by_identical_cells():
    g = load_genotype("xception")
    space = _space(g)
    net = space.supernet(TASK)
    assert len(net.cells) == 13 and len(net.alphas) == 5
    keys = net.cell_keys
    assert keys[1] == keys[2] and keys[3] == keys[10] and len(set(keys)) == 5
    assert net.alphas[keys[2]] is net.alphas[keys[1]]  # the same Parameter, not a copy
    assert list(net.arch_groups()) == ["cell0", "cell1", "cell3", "cell11", "cell12"]  # one α group per tensor
    # a shared α receives the gradient of every cell that uses it: both cells 1 and 2 contribute
    loss = net.loss(space.example_batch(TASK))["loss"]
    full = torch.autograd.grad(loss, net.alphas["cell1"])[0]
    assert full.abs().sum() > 0


def test_share_option_is_checked():
    with pytest.raises(DnasError, match="individual"):
        dnas.create_space("darts", layers=3, share=[0, 0, 0])
    with pytest.raises(DnasError, match="index of an earlier"):
        dnas.create_space("ddarts", layers=3, share=[0, 2, 2])
    with pytest.raises(DnasError, match="not both normal or both reduction"):
        dnas.create_space("ddarts", layers=3, share=[0, 0, 2])  # cell 1 is a reduction, cell 0 not


def test_dnas_show_shipped_name(capsys):
    assert main(["show", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "cell3:" in out and "simple_conv_3x3 <- node2" in out
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.split("genotypes:")[1]
    assert all(n in listed for n in SHIPPED)


# -- α from a genotype ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("parser", ["edge", "threshold"])
def test_alpha_init_makes_the_parser_return_the_genotype(name, parser):
    g = load_genotype(name)
    net = _space(g).supernet(TASK)
    init_alpha_from_genotype(net, name)
    net.relaxation = "sigmoid"  # σ(3) = 0.953 >= 0.85 > σ(-3)
    assert net.genotype(parser, threshold=0.85).choices == g.choices
    for d in net.space.decisions():
        row = net.decision_alpha(d.name)
        assert torch.equal(row, torch.tensor([INIT_HIGH if o in g[d.name] else INIT_LOW for o in d.options]))


def test_alpha_init_from_a_genotype_that_does_not_fit_fails_in_one_line():
    net = dnas.create_space("ddarts", C=4, layers=3, nodes=2, ops="darts-o").supernet(TASK)
    with pytest.raises(DnasError, match=r"--set space.layers=4 --set space.nodes=4 --set space.reductions=\[1,2,3\]"):
        init_alpha_from_genotype(net, "resnet18")
    darts = dnas.create_space("darts", C=4, layers=3, nodes=2).supernet(TASK)
    with pytest.raises(DnasError, match="--space ddarts"):
        init_alpha_from_genotype(darts, "resnet18")


# -- warm-up ----------------------------------------------------------------------------------------------
def test_warmup_leaves_alpha_untouched():
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    net = space.supernet(space.tiny_task)
    s = dnas.create_strategy("darts", warmup_epochs=2, a_lr=0.1)
    state = s.init_state(net)
    batch = space.example_batch(space.tiny_task, 8)
    before = [a.detach().clone() for a in net.arch_parameters()]
    w0 = net.weight_parameters()[0].detach().clone()
    for epoch in (0, 1):
        state.epoch = epoch
        m = s.step(net, batch, batch, state)
        assert "val_loss" not in m  # no α step ran
    assert all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
    assert not torch.equal(net.weight_parameters()[0], w0)  # the weights did train
    state.epoch = 2
    s.step(net, batch, batch, state)
    assert not all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))  # epoch 2: α moves


# -- one tiny DARTOpti run: init + warm-up through the API, then its pictures -----------------------------
@pytest.fixture(scope="module")
def dartopti_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dartopti") / "run"
    g = load_genotype("resnet18")
    space_cfg = {k: g.config[k] for k in ("ops", "layers", "nodes", "reductions")}
    r = dnas.search(
        "ddarts", "fairdarts", "synthetic", space_config={**space_cfg, "C": 2},
        strategy_config=dict(epochs=2, warmup_epochs=1, parser="edge", a_lr=0.3), callbacks={"init_genotype": {"genotype": "resnet18"}},
        data_config=dict(batch_size=32, subset=0.25), out=out, progress=False,  # 1 step per epoch
    )
    return r, g


def test_init_genotype_and_warmup_through_the_api(dartopti_run):
    r, g = dartopti_run
    first, second = r.history
    assert first["genotype"] == {k: list(v) for k, v in g.choices.items()}  # warm-up epoch: α still the init
    assert first["distance_start"] == 0.0 and first["distance_prev"] == 0.0
    sig3 = round(float(torch.sigmoid(torch.tensor(INIT_HIGH))), 6)
    assert first["alphas"]["cell0.node0.edge1"][list(dnas.create_space("ddarts", ops="darts-o").op_names).index("simple_conv_3x3")] == sig3
    assert second["alphas"] != first["alphas"]  # after the warm-up α moves
    assert second["distance_start"] == pytest.approx(second["distance_prev"])  # epoch 1 genotype = start


def test_show_run_dir_writes_pictures_matching_the_history(dartopti_run, capsys):
    r, g = dartopti_run
    assert main(["show", str(r.run_dir)]) == 0
    assert "plots:" in capsys.readouterr().out
    plots = r.run_dir / "plots"
    names = sorted(p.name for p in plots.glob("*.png"))
    assert names == sorted([f"alpha_cell{i}.png" for i in range(4)] + ["distance.png", "dominant_ops.png", "param_free_ops.png"])
    assert all((plots / n).stat().st_size > 1000 for n in names)
    last = r.history[-1]
    mats = alpha_matrices(last, g)
    ops = list(dnas.create_space("ddarts", ops="darts-o").op_names)
    for cell, (decisions, op_names, rows) in mats.items():
        assert op_names == ops
        for dec, row in zip(decisions, rows):
            assert row == last["alphas"][f"{cell}.{dec}"]  # the heatmap shows exactly the history's α
    assert sum(len(d) for d, _, _ in mats.values()) == len(last["alphas"])


def test_plot_run_from_a_stub_history(tmp_path):
    g = dnas.create_space("darts", C=4, layers=3, nodes=2).random_genotype(__import__("random").Random(0))
    alphas = {d.name: [0.1 * k for k in range(8)] for d in dnas.create_space("darts", C=4, layers=3, nodes=2).decisions()}
    hist = [{"epoch": e, "alphas": alphas} for e in (1, 2)]  # no distances, no dominant ops: heatmaps only
    written = plot_run(tmp_path, g, hist)
    assert sorted(p.name for p in written) == ["alpha_normal.png", "alpha_reduce.png"]
    assert all(p.stat().st_size > 0 for p in written)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))


def test_cli_flags_reach_the_strategy_config():
    from dnas.api import resolve
    from dnas.cli import build_parser
    from dnas.cli.search import _search_overlay

    args = build_parser().parse_args(
        ["search", "--space", "ddarts", "--strategy", "fairdarts", "--init-genotype", "resnet18", "--early-stop", "distance"]
    )
    r = resolve(_search_overlay(args))
    assert r.config["callbacks"]["init_genotype"]["genotype"] == "resnet18" and "distance_stop" in r.config["callbacks"]
    assert [c.name for c in r.callbacks] == ["rollback", "param_free_ops", "distance", "dominant_ops", "init_genotype", "distance_stop"]


def test_dartopti_encodings_are_not_deepened(capsys):
    assert main(["deepen", "xception", "--cells", "14"]) == 2
    assert "cannot be deepened" in capsys.readouterr().err
