"""Activation and depth search for MLPs (thesis §6.2), regression data, and the NaN/inf blame."""
from __future__ import annotations

import math
import random
import sys

import numpy as np
import pytest
import torch

import dnas
from dnas.engine.data import DataConfig, load_datasets, synthetic_regression_dataset, table_dataset
from dnas.errors import DnasError
from dnas.space import Task
from dnas.spaces.activation import BINARY, UNARY, Activation, MixedActivation, formula, formula_parser
from dnas.spaces.mlp_depth import task_loss
from dnas.testing import check_space
from dnas.tools.show import describe


@pytest.mark.parametrize("name", ["mlp-depth", "activation"])
@pytest.mark.parametrize("task", [None, Task((1, 4, 4), 3)])  # regression (tiny_task) and classification
def test_mlp_spaces_conform(name, task):
    g = check_space(name, task=task)
    assert g.space == name


# -- primitives ----------------------------------------------------------------------------------
HAND_UNARY = {
    "max0": lambda v: max(v, 0.0), "min0": lambda v: min(v, 0.0), "exp": math.exp, "tanh": math.tanh,
    "x": lambda v: v, "abs": abs, "sin": math.sin, "cos": math.cos, "one": lambda v: 1.0, "square": lambda v: v * v,
}
HAND_BINARY = {
    "add": lambda a, b: a + b, "prod": lambda a, b: a * b, "sub": lambda a, b: a - b,
    "max": max, "min": min, "mask": lambda a, b: a,
}
XS = [-1.7, -0.3, 0.0, 0.4, 2.1]


@pytest.mark.parametrize("u", list(UNARY))
def test_each_unary_primitive_matches_its_formula(u):
    assert set(HAND_UNARY) == set(UNARY)
    out = Activation("mask", u, "x")(torch.tensor(XS, dtype=torch.float64))  # mask(a, b) = a: U1 alone
    assert out.tolist() == pytest.approx([HAND_UNARY[u](v) for v in XS], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("b", list(BINARY))
def test_each_binary_primitive_matches_its_formula(b):
    assert set(HAND_BINARY) == set(BINARY)
    out = Activation(b, "sin", "square")(torch.tensor(XS, dtype=torch.float64))  # B(sin x, x²)
    assert out.tolist() == pytest.approx([HAND_BINARY[b](math.sin(v), v * v) for v in XS], rel=1e-12, abs=1e-12)


def test_mixed_activation_is_the_softmax_mixture_by_hand():
    torch.manual_seed(0)
    ab, a1, a2 = torch.randn(6, dtype=torch.float64), torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    pb, p1, p2 = (torch.softmax(a, 0) for a in (ab, a1, a2))
    out = MixedActivation()(torch.tensor(XS, dtype=torch.float64), pb, p1, p2)
    for v, o in zip(XS, out.tolist()):
        u1 = sum(float(p1[k]) * HAND_UNARY[n](v) for k, n in enumerate(UNARY))
        u2 = sum(float(p2[k]) * HAND_UNARY[n](v) for k, n in enumerate(UNARY))
        assert o == pytest.approx(sum(float(pb[k]) * HAND_BINARY[n](u1, u2) for k, n in enumerate(BINARY)), rel=1e-10)


def test_formula_text():
    assert formula("add", "exp", "max0") == "exp(x) + max(x, 0)"
    assert formula("max", "square", "one") == "max(x^2, 1)"
    assert formula("mask", "tanh", "cos") == "tanh(x)"


# -- numerical safety ----------------------------------------------------------------------------
def _uniform():
    return torch.full((6,), 1 / 6), torch.full((10,), 0.1), torch.full((10,), 0.1)


def test_nan_detector_names_exp():
    with pytest.raises(DnasError, match="'exp'"):
        MixedActivation()(torch.tensor([1.0, 100.0]), *_uniform())  # exp(100) overflows float32


def test_nan_detector_names_square_and_prod():
    with pytest.raises(DnasError, match="'square'"):
        Activation("add", "x", "square")(torch.tensor([1e20]))
    with pytest.raises(DnasError, match="'prod'"):  # exp(50) is finite, exp(50)² is not
        Activation("prod", "exp", "exp")(torch.tensor([50.0]))
    with pytest.raises(DnasError, match="already NaN"):
        Activation("add", "x", "x")(torch.tensor([float("nan")]))


def test_nan_in_supernet_loss_is_reported_not_propagated():
    net = dnas.create_space("activation", widths=[4]).supernet(Task((2,), 0, out_dim=1))
    with torch.no_grad():
        net.linears[0].weight.fill_(100.0)
    with pytest.raises(DnasError, match=r"linear layer 0: unary primitive 'exp'"):
        net.loss((torch.ones(3, 2), torch.zeros(3, 1)))
    unchecked = dnas.create_space("activation", widths=[4], check_finite=False).supernet(Task((2,), 0, out_dim=1))
    unchecked.load_state_dict(net.state_dict())
    assert not torch.isfinite(unchecked.loss((torch.ones(3, 2), torch.zeros(3, 1)))["loss"])  # the opt-out


# -- derivation ----------------------------------------------------------------------------------
def _weights(**kw):
    w = {"binary": torch.full((6,), 0.01), "unary1": torch.full((10,), 0.01), "unary2": torch.full((10,), 0.01)}
    for key, (opts, vals) in kw.items():
        for o, v in zip(opts, vals):
            names = list(BINARY) if key == "binary" else list(UNARY)
            w[key][names.index(o)] = v
    return w


def test_formula_parser_merges_the_two_orders_of_a_commutative_binary():
    space = dnas.create_space("activation")
    # add with U1 = U2 = ½ exp + ½ relu: exp + relu is learnt, per-decision argmax would say exp + exp
    w = _weights(binary=(["add"], [0.9]), unary1=(["exp", "max0"], [0.46, 0.44]), unary2=(["exp", "max0"], [0.46, 0.44]))
    assert formula_parser(space.decisions(), w) == {"binary": ["add"], "unary1": ["max0"], "unary2": ["exp"]}
    assert dnas.parsers.argmax_parser(space.decisions(), w)["unary2"] == ["exp"]
    # sub is not commutative: the ordered argmax stands
    w = _weights(binary=(["sub"], [0.9]), unary1=(["exp", "max0"], [0.46, 0.44]), unary2=(["exp", "max0"], [0.46, 0.44]))
    assert formula_parser(space.decisions(), w) == {"binary": ["sub"], "unary1": ["exp"], "unary2": ["exp"]}


def test_recovers_exp_plus_relu_elementwise():
    """Data y = exp(x) + max(x, 0) elementwise; the MLP's linear layers fixed to the identity, so only
    α learn (the first-order DARTS α step, Adam on ∇_α L). The derived formula must be the target."""
    torch.manual_seed(0)
    data = synthetic_regression_dataset(n_train=256)
    x, y = data.train.tensors
    net = dnas.create_space("activation", widths=[1]).supernet(data.task)
    with torch.no_grad():
        for lin in [*net.linears, net.out]:
            lin.weight.fill_(1.0)
            lin.bias.zero_()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.2)
    for _ in range(800):
        loss = net.loss((x, y))["loss"]
        opt.zero_grad()
        loss.backward(inputs=net.arch_parameters())
        opt.step()
    g = net.genotype()
    assert {k: v[0] for k, v in g.choices.items()} == {"binary": "add", "unary1": "max0", "unary2": "exp"}
    assert "A(x) = max(x, 0) + exp(x)" in describe(g)
    assert float(loss.detach()) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_recovers_exp_plus_relu_inside_a_fixed_mlp(seed):
    """y = a fixed random MLP (2 -> 4 -> 4 -> 1) with A = exp + relu; the student shares its linear layers."""
    torch.manual_seed(seed)
    x = torch.rand(256, 2) * 4 - 2
    net = dnas.create_space("activation", widths=[4, 4]).supernet(Task((2,), 0, out_dim=1))
    with torch.no_grad():
        h = x
        for lin in net.linears:
            h = Activation("add", "exp", "max0")(lin(h))
        y = net.out(h)
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.2)
    for _ in range(1500):
        loss = net.loss((x, y))["loss"]
        opt.zero_grad()
        loss.backward(inputs=net.arch_parameters())
        opt.step()
    assert {k: v[0] for k, v in net.genotype().choices.items()} == {"binary": "add", "unary1": "max0", "unary2": "exp"}


# -- mlp-depth -----------------------------------------------------------------------------------
def test_mlp_depth_mixes_layer_and_identity_by_hand():
    torch.manual_seed(0)
    net = dnas.create_space("mlp-depth", width=3, max_layers=2).supernet(Task((2,), 0, out_dim=1))
    x = torch.randn(4, 2)
    W = torch.softmax(net.alphas["layers"].detach(), -1)
    h = torch.relu(net.inp(x))
    for i, lin in enumerate(net.hidden):
        h = W[i, 0] * torch.relu(lin(h)) + W[i, 1] * h
    assert torch.allclose(net(x), net.out(h))


def test_mlp_depth_network_keeps_only_chosen_layers():
    space = dnas.create_space("mlp-depth", width=5, max_layers=4)
    g = space.genotype({"layer0": ["identity"], "layer1": ["linear_relu"], "layer2": ["identity"], "layer3": ["linear_relu"]})
    net = space.build_network(g, Task((3,), 0, out_dim=2))
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 2 + 2  # input, output + 2 kept
    assert net(torch.randn(7, 3)).shape == (7, 2)
    assert "2 of 4" in describe(g)


def test_task_loss_is_mse_for_regression_and_ce_for_classes():
    out, y = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert float(task_loss(out, y, Task((2,), 0, out_dim=2))["loss"]) == pytest.approx((1 + 0 + 1 + 4) / 4)
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    assert float(task_loss(logits, labels, Task((2,), 2))["loss"]) == pytest.approx(math.log(1 + math.exp(2.0)))


# -- table data (csv:PATH) -------------------------------------------------------------------------
def test_csv_with_header_and_named_targets(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 4)).astype(np.float32)
    p = tmp_path / "d.csv"
    np.savetxt(p, table, delimiter=",", header="a,b,c,d", comments="")
    ds = load_datasets(DataConfig(name=f"csv:{p}", target="b,d"))
    assert ds.task == Task((2,), 0, out_dim=2)
    xs, ys = ds.train.tensors
    assert len(xs) + len(ds.test.tensors[0]) == 50 and len(ds.test.tensors[0]) == 10
    row = table[np.isclose(table[:, 0], float(xs[0, 0]))][0]
    assert xs[0].tolist() == pytest.approx(row[[0, 2]].tolist()) and ys[0].tolist() == pytest.approx(row[[1, 3]].tolist())


def test_npy_npz_and_default_last_column(tmp_path):
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "t.npy", table)
    ds = table_dataset(str(tmp_path / "t.npy"))
    assert ds.task.input_shape == (3,) and ds.task.out_dim == 1
    x, y = ds.train.tensors
    assert torch.equal(y[:, 0], x[:, 2] + 1)  # the last column is the target
    np.savez(tmp_path / "t.npz", x=table[:, :2], y=table[:, 2:])
    assert table_dataset(str(tmp_path / "t.npz")).task == Task((2,), 0, out_dim=2)


def test_bad_regression_input_is_one_clear_error(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DnasError, match="target column 'zz'"):
        load_datasets(DataConfig(name=f"csv:{p}", target="zz"))
    with pytest.raises(DnasError, match="not found"):
        load_datasets(DataConfig(name=f"csv:{tmp_path / 'missing.csv'}"))


def test_csv_text_labels_are_classes_with_or_without_header(tmp_path):
    rng = np.random.default_rng(0)
    names = ["setosa", "versicolor", "virginica"]
    rows = [(*np.round(rng.normal(size=2) + 3 * (i % 3), 3), names[i % 3]) for i in range(60)]
    for header in ("a,b,species\n", ""):
        p = tmp_path / f"iris{len(header)}.csv"
        p.write_text(header + "".join(f'{a},{b},"{s}"\n' for a, b, s in rows))
        ds = load_datasets(DataConfig(name=f"csv:{p}"))
        assert ds.task == Task((2,), 3) and ds.train.classes == names
        x, y = ds.train.tensors
        assert y.dtype == torch.int64 and len(x) == 48
        for xi, yi in zip(x[:10], y[:10]):  # each row keeps its own label
            row = next(r for r in rows if abs(r[0] - float(xi[0])) < 1e-4 and abs(r[1] - float(xi[1])) < 1e-4)
            assert names[int(yi)] == row[2]


def test_csv_numeric_labels_as_classes_and_the_hint_when_they_look_like_labels(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("".join(f"{i * 0.5},{(10, 20, 30)[i % 3]}\n" for i in range(30)))
    with pytest.warns(UserWarning, match="3 distinct whole numbers.*data.task=classification"):
        reg = load_datasets(DataConfig(name=f"csv:{p}"))
    assert reg.task == Task((1,), 0, out_dim=1)
    ds = load_datasets(DataConfig(name=f"csv:{p}", task="classification"))
    assert ds.task == Task((1,), 3) and ds.train.classes == [10, 20, 30]
    x, y = ds.train.tensors
    assert torch.equal(y, torch.round(x[:, 0] * 2).long() % 3)  # 10 -> 0, 20 -> 1, 30 -> 2


def test_bad_tables_are_one_clear_error(tmp_path):
    p = tmp_path / "d.csv"
    cases = {
        "a,b,y\n1,2,0\n3,,1\n": "input column 'b' is empty at line 3",
        "a,b,y\n1,x,0\n3,4,1\n": "input column 'b' holds text \\('x'\\) at line 2",
        "a,y\n1,0\n2,1,5\n": "row 3 has 3 cells",
        "a,y\n1,nan\n2,1\n": "NaN or infinite in data row",
        "a,y\n": "has a header and no rows",
    }
    for text, message in cases.items():
        p.write_text(text)
        with pytest.raises(DnasError, match=message):
            load_datasets(DataConfig(name=f"csv:{p}"))
    p.write_text("1,2,cat\n3,4,dog\n")
    with pytest.raises(DnasError, match="holds text, which regression cannot fit"):
        load_datasets(DataConfig(name=f"csv:{p}", task="regression"))
    with pytest.raises(DnasError, match="one target column, got 2"):
        load_datasets(DataConfig(name=f"csv:{p}", target="1,2", task="classification"))
    assert DataConfig(task="classify").check() == "task must be auto, classification or regression"


def test_a_searched_mlp_learns_a_labelled_csv(tmp_path):
    import dnas

    rng = np.random.default_rng(1)
    names = ["a", "b", "c"]
    p = tmp_path / "t.csv"
    p.write_text("u,v,w,label\n" + "".join(
        ",".join(f"{v:.3f}" for v in rng.normal(size=3) + 2.0 * np.eye(3)[i % 3]) + f",{names[i % 3]}\n" for i in range(300)))
    res = dnas.search("mlp-depth", "darts", f"csv:{p}", space_config={"width": 16, "max_layers": 2},
                      strategy_config={"epochs": 3}, out=str(tmp_path / "run"))
    metrics = dnas.train(res.genotype, data=f"csv:{p}", train_config={"epochs": 15}, out=str(tmp_path / "train"))
    assert metrics["task"]["num_classes"] == 3 and metrics["top1"] > 0.6  # chance: 1/3


def test_synthetic_regression_is_exp_plus_relu():
    ds = load_datasets(DataConfig(name="synthetic-regression"))
    x, y = ds.train.tensors
    assert torch.allclose(y, torch.exp(x) + x.clamp_min(0))
    assert ds.task == Task((1,), 0, out_dim=1)


# -- a user loss through the Python API (examples/jacobian_loss.py) --------------------------------
def test_jacobian_loss_example_plugs_in_and_matches_per_sample_autograd():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "jacobian_loss.py"
    spec = importlib.util.spec_from_file_location("jacobian_loss_example", path)
    mod = importlib.util.module_from_spec(spec)
    from dnas.registry import SPACES

    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)  # registers the space "activation-jacobian"
        assert SPACES.get("activation-jacobian") is mod.JacobianActivationSpace
    finally:
        SPACES._items.pop("activation-jacobian", None)  # leave the registry as the other tests expect
        sys.modules.pop(spec.name, None)
    torch.manual_seed(0)
    space = mod.JacobianActivationSpace(widths=[3], jacobian_weight=0.5)
    net = space.supernet(Task((2,), 0, out_dim=1)).double()
    x, y = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    out = net.loss((x, y))
    J = torch.stack([torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[b]) for b in range(5)])
    jac = (J - mod.target_jacobian(x)).pow(2).mean()
    assert float(out["jacobian"]) == pytest.approx(float(jac), rel=1e-9)
    mse = float(((net(x) - y) ** 2).mean().detach())
    assert float(out["loss"]) == pytest.approx(mse + 0.5 * float(jac), rel=1e-9)
    out["loss"].backward()
    assert all(a.grad is not None and float(a.grad.abs().sum()) > 0 for a in net.arch_parameters())


# -- β-DARTS Beta-Decay ----------------------------------------------------------------------------
def test_beta_decay_term_by_hand():
    from dnas.strategies.darts import beta_decay_loss

    net = dnas.create_space("mlp-depth", width=2, max_layers=3).supernet(Task((2,), 0, out_dim=1))
    alpha = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]])
    with torch.no_grad():
        net.alphas["layers"].copy_(alpha)
    hand = sum(math.log(math.exp(a) + math.exp(b)) for a, b in alpha.tolist()) / 3
    assert float(beta_decay_loss(net).detach()) == pytest.approx(hand, rel=1e-6)
    from dnas.engine.callbacks import LoopState

    strat = dnas.create_strategy("darts", beta_decay=0.7)
    total, metrics = strat.arch_loss(net, (torch.randn(4, 2), torch.randn(4, 1)), LoopState(net, strat, None))
    assert float(metrics["beta_decay"]) == pytest.approx(0.7 * hand, rel=1e-6)
    assert float(total.detach()) == pytest.approx(float(metrics["val_loss"]) + 0.7 * hand, rel=1e-6)
    # its α gradient is λ · softmax(α_e) / |E| per row
    g = torch.autograd.grad(0.7 * beta_decay_loss(net), net.alphas["layers"])[0]
    assert torch.allclose(g, 0.7 * torch.softmax(alpha, -1) / 3, atol=1e-6)
    assert dnas.create_strategy("darts").loss_terms(net, LoopState(net, strat, None)) == {}
    fair = dnas.create_strategy("fairdarts", beta_decay=0.7).loss_terms(net, LoopState(net, strat, None))
    assert set(fair) == {"beta_decay", "zero_one"} and float(fair["beta_decay"].detach()) == pytest.approx(0.7 * hand, rel=1e-6)
    with pytest.raises(DnasError, match="beta_decay"):
        dnas.create_strategy("darts", beta_decay=-1)
    # linear schedule: λ_e = W · e / epochs (the authors' code: 50 · e / 100)
    ramp = dnas.create_strategy("darts", beta_decay=0.7, beta_decay_schedule="linear", epochs=10)
    at_epoch_4 = LoopState(net, ramp, None, epoch=4)  # the loop hands the epoch to the steps
    assert float(ramp.loss_terms(net, at_epoch_4)["beta_decay"].detach()) == pytest.approx(0.7 * 0.4 * hand, rel=1e-6)


# -- ColorNAS ------------------------------------------------------------------------------------
def test_colornas_conforms_and_every_channel_has_its_own_normal_and_reduce_alpha():
    g = check_space("colornas")  # tiny config: the RGBY model, 4 networks
    space = dnas.create_space("colornas", **dnas.registry.SPACES.get("colornas").tiny_config)
    net = space.supernet(space.tiny_task)
    keys = [k for k, _ in net.named_arch_parameters()]
    assert keys == [f"rgby_{ch}_{c}" for ch in ("r", "g", "b", "y") for c in ("normal", "reduce")]
    assert len({id(a) for a in net.arch_parameters()}) == 8
    assert {k.split(".")[0] for k in g.choices} == set(keys)
    net.relaxation = "sigmoid"  # the strategy's relaxation reaches each channel network
    assert all(b.relaxation == "sigmoid" for b in net.branches)


@pytest.mark.parametrize("model,channels", [("rgb", "rgb"), ("rb", "rb"), ("rgby", "rgby"), ("r", "r"), ("g", "g"), ("b", "b")])
def test_colornas_one_network_per_channel_of_the_colour_model(model, channels):
    # thesis Algorithm 7: RGB = 3 networks, RB = 2, RGBY = 4, one channel = 1; each its own α pair
    C, hidden = 4, 8
    space = dnas.create_space("colornas", model=model, C=C, layers=3, nodes=2, hidden=hidden)
    net = space.supernet(Task((3, 8, 8), 5))
    assert len(net.branches) == len(channels)
    assert [k for k, _ in net.named_arch_parameters()] == [f"{model}_{ch}_{c}" for ch in channels for c in ("normal", "reduce")]
    assert all(b.stem[0].in_channels == 1 for b in net.branches)  # each network reads one channel
    # the meta-learner reads the concatenated pooled feature maps: per network 4 nodes·C at the last
    # cell, C doubled twice by the two reductions: 2 nodes · 4C = 32 here (not the 5 class scores)
    x = torch.randn(2, 3, 8, 8)
    outs = net.branch_outputs(x)
    assert [o.shape for o in outs] == [torch.Size([2, 2 * 4 * C])] * len(channels)
    assert net.meta[0].in_features == len(channels) * 2 * 4 * C and net.meta[-1].out_features == 5
    assert net(x).shape == (2, 5)
    ev = space.build_network(space.random_genotype(random.Random(0)), Task((3, 8, 8), 5))
    assert len(ev.branches) == len(channels) and ev.meta[0].in_features == len(channels) * 2 * 4 * C
    assert ev(x).shape == (2, 5)


def test_colornas_groups_and_score_fusion_stay_as_options():
    space = dnas.create_space("colornas", per_channel=False, groups=["rgb", "rb", "rgby"], fusion="scores", C=4, layers=3,
                              nodes=2, hidden=8)
    net = space.supernet(Task((3, 8, 8), 4))
    assert [b.stem[0].in_channels for b in net.branches] == [3, 2, 4]
    assert [k for k, _ in net.named_arch_parameters()] == [f"{g}_{c}" for g in ("rgb", "rb", "rgby") for c in ("normal", "reduce")]
    assert net.meta[0].in_features == 3 * 4  # three networks' class scores
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_colornas_threshold_parser_keeps_ops_at_0_7():
    space = dnas.create_space("colornas", model="r", C=4, layers=3, nodes=2, hidden=8)
    net = space.supernet(Task((3, 8, 8), 4))
    assert space.default_parser == "colornas"
    with torch.no_grad():
        for a in net.arch_parameters():
            a.zero_()
        a = net.alphas["r_r_normal"]
        ops = space.branch_spaces()["r_r"].op_names
        a[0, ops.index("sep_conv_3x3")] = 10.0  # softmax weight ≈ 1 ≥ 0.7: kept
        a[1, ops.index("skip_connect")] = 1.0  # softmax weight ≈ 0.28 < 0.7: dropped
    g = net.genotype()
    assert g.choices["r_r_normal.node0.edge0"] == ("sep_conv_3x3",)
    assert g.choices["r_r_normal.node0.edge1"] == ()
    # node1 has no weight ≥ 0.7: it keeps its single best op (ties: the first edge)
    assert sum(len(g.choices[f"r_r_normal.node1.edge{j}"]) for j in range(3)) == 1
    space.validate(g)


def test_colornas_channel_groups_by_hand():
    from dnas.spaces.colornas import CHANNELS, GROUPS

    x = torch.tensor([0.9, 0.2, 0.5]).reshape(1, 3, 1, 1)
    assert GROUPS["rb"][1](x).flatten().tolist() == pytest.approx([0.9, 0.5])
    # R' = R − min(R, G) = 0.7, G' = 0, B, Y = R' + G'
    assert GROUPS["rgby"][1](x).flatten().tolist() == pytest.approx([0.7, 0.0, 0.5, 0.7])
    assert [float(f(x)) for f in CHANNELS["rgby"].values()] == pytest.approx([0.7, 0.0, 0.5, 0.7])
    assert [float(f(x)) for f in CHANNELS["rb"].values()] == pytest.approx([0.9, 0.5])
    assert GROUPS["g"][1](x).flatten().tolist() == pytest.approx([0.2])


def test_colornas_network_sees_only_its_channels():
    torch.manual_seed(0)
    space = dnas.create_space("colornas", model="rb", C=4, layers=3, nodes=2, hidden=8)
    net = space.supernet(Task((3, 8, 8), 4)).eval()
    x = torch.randn(2, 3, 8, 8)
    x2 = x.clone()
    x2[:, 1] += 5.0  # green changes; the R and B networks ignore it
    assert torch.allclose(net(x), net(x2))
    x3 = x.clone()
    x3[:, 2] += 5.0  # blue reaches only the B network
    r_out, b_out = net.branch_outputs(x), net.branch_outputs(x3)
    assert torch.allclose(r_out[0], b_out[0]) and not torch.allclose(r_out[1], b_out[1])
    with pytest.raises(DnasError, match="RGB"):
        space.supernet(Task((1, 8, 8), 4))


# -- experiment config -----------------------------------------------------------------------------
def test_activation_experiment_yaml_validates():
    from pathlib import Path

    from dnas.api import load_config_file, resolve

    path = Path(__file__).resolve().parents[1] / "experiments" / "activation_search.yaml"
    r = resolve(load_config_file(path))
    assert r.space.name == "activation" and r.strategy.name == "darts" and r.data.name == "synthetic-regression"
    assert r.config["space"]["widths"] == [64, 64]


@pytest.mark.slow
def test_activation_experiment_small_scale_runs(tmp_path):
    from pathlib import Path

    from dnas.api import load_config_file, merge_config

    path = Path(__file__).resolve().parents[1] / "experiments" / "activation_search.yaml"
    cfg = merge_config(load_config_file(path), {"space": {"widths": [16]}, "strategy": {"epochs": 5}})
    result = dnas.search(config=cfg, out=tmp_path / "run", progress=False)
    assert len(result.history) == 5 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert "A(x) = " in describe(result.genotype)


# -- evaluation phase on regression data ----------------------------------------------------------------
def test_train_and_evaluate_a_regressor():
    from torch.utils.data import DataLoader, TensorDataset

    from dnas.evaluate.supervised import TrainConfig, evaluate, train_network

    lin = torch.nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [2.0]]))
        lin.bias.zero_()
    x, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    # outputs (1, 2), (3, 6): squared errors 1, 0, 0, 9 -> mean 2.5
    assert evaluate(lin, DataLoader(TensorDataset(x, y), batch_size=1), torch.device("cpu"))["mse"] == pytest.approx(2.5)
    space = dnas.create_space("activation", widths=[8])
    g = space.genotype({"binary": ["add"], "unary1": ["exp"], "unary2": ["max0"]})
    torch.manual_seed(0)
    data = synthetic_regression_dataset()
    res = train_network(space.build_network(g, data.task), data, TrainConfig(epochs=3, lr=0.01, batch_size=64), torch.device("cpu"), log=lambda *_: None)
    assert "top1" not in res and res["history"][-1]["test_mse"] < res["history"][0]["test_mse"]


def test_show_an_activation_run_prints_the_formula_and_plots(tmp_path):
    from dnas.tools.show import show

    result = dnas.search("activation", "darts", "synthetic-regression", space_config={"widths": [4]},
                         strategy_config={"epochs": 1}, out=tmp_path / "run", progress=False)
    text = show(str(result.run_dir))
    c = {k: v[0] for k, v in result.genotype.choices.items()}
    assert f"activation: A(x) = {formula(c['binary'], c['unary1'], c['unary2'])}" in text
    assert len(list((result.run_dir / "plots").glob("*.png"))) >= 2  # binary and unary α drawn apart


def test_overflow_in_a_search_rolls_back_then_names_the_primitive(tmp_path):
    from dnas.engine.loop import Diverged

    p = tmp_path / "big.csv"
    x = np.linspace(500, 1000, 64, dtype=np.float32)
    np.savetxt(p, np.stack([x, x], 1), delimiter=",", header="x,y", comments="")
    with pytest.raises(DnasError, match=r"diverged again .*unary primitive '(exp|square)'") as e:
        dnas.search("activation", "darts", f"csv:{p}", space_config={"widths": [4]}, strategy_config={"epochs": 1},
                    data_config={"target": "y", "batch_size": 16}, out=tmp_path / "run", progress=False)
    with pytest.raises(Diverged):  # the loop's rollback sees it as a divergence
        Activation("add", "exp", "x")(torch.tensor([200.0]))
    assert e.type is DnasError and "\n" not in str(e.value)  # one line, from the loop after its rollback


def test_beta_decay_linear_schedule_in_the_search_loop(tmp_path):
    result = dnas.search("mlp-depth", "darts", "synthetic-regression", space_config={"width": 4, "max_layers": 2},
                         strategy_config={"epochs": 2, "beta_decay": 2.0, "beta_decay_schedule": "linear"},
                         out=tmp_path / "run", progress=False)
    first, second = (r["beta_decay"] for r in result.history)
    assert first == 0.0 and second > 0.0  # λ = 2 · e / 2: 0 in epoch 0, 1 in epoch 1 (× L_Beta ≈ log 2)
    assert second == pytest.approx(math.log(2), abs=0.05)
