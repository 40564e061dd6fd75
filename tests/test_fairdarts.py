"""FairDARTS: zero-one loss by hand, the α step, sigmoid parsers through a supernet, dominant-op history."""
import math

import pytest
import torch

import dnas
from dnas.space import Task
from dnas.engine.callbacks import LoopState
from dnas.strategies.darts import unrolled_arch_grads
from dnas.strategies.fairdarts import dominant_ops, zero_one_loss

TASK = Task((3, 8, 8), 4)
LN3 = math.log(3.0)  # σ(ln 3) = 0.75, σ(−ln 3) = 0.25


def batch(seed, n=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *TASK.input_shape, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def tiny_net(space="ddarts", std=0.5):
    torch.manual_seed(0)
    net = dnas.create_space(space, C=4, layers=3, nodes=2).supernet(TASK).double()
    net.relaxation = "sigmoid"
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, std)
    return net


def test_zero_one_loss_matches_hand_computation_over_all_alpha():
    # σ = 0.5, 0.75, 0.25 -> (σ − 0.5)² = 0, 1/16, 1/16; N = 3 over both tensors (eq. 3.1)
    alphas = [torch.tensor([0.0, LN3], dtype=torch.float64), torch.tensor([[-LN3]], dtype=torch.float64)]
    assert zero_one_loss(alphas).item() == pytest.approx(-(2 / 16) / 3, abs=1e-12)


def test_loss_terms_are_w01_times_l01():
    net = tiny_net()
    for w01, expected_w in ((None, 10.0), (3.0, 3.0)):
        kw = {} if w01 is None else {"w01": w01}
        s = dnas.create_strategy("fairdarts", **kw)
        terms = s.loss_terms(net, LoopState(net, s, None))
        assert set(terms) == {"zero_one"}
        assert terms["zero_one"].item() == pytest.approx(expected_w * zero_one_loss(net.arch_parameters()).item(), rel=1e-12)


def test_first_order_step_is_adam_on_val_loss_plus_hand_l01_gradient():
    net = tiny_net()
    s = dnas.create_strategy("fairdarts", a_lr=0.01, a_weight_decay=0.0, w01=10.0)
    assert s.relaxation == "sigmoid"
    state = s.init_state(net)
    val = batch(2)
    alphas = net.arch_parameters()
    before = [a.detach().clone() for a in alphas]
    g_val = torch.autograd.grad(net.loss(val)["loss"], alphas)
    N = sum(a.numel() for a in alphas)
    expected = []
    for a, gv, b in zip(alphas, g_val, before):
        sig = torch.sigmoid(b)
        g01 = -(2.0 / N) * (sig - 0.5) * sig * (1 - sig)  # d/dα of −(1/N) Σ (σ − 0.5)²
        g = gv + 10.0 * g01
        expected.append(b - 0.01 * g / (g.abs() + 1e-8))  # Adam's first step: m̂ = g, v̂ = g²
    s.arch_step(net, batch(1), val, state)
    for a, e in zip(alphas, expected):
        assert torch.allclose(a.detach(), e, atol=1e-9)


def test_zero_one_loss_pushes_sigma_away_from_half():
    net = tiny_net(std=0.3)
    s = dnas.create_strategy("fairdarts", a_lr=0.05, a_weight_decay=0.0, w01=1e6)  # L01 dominates L_val
    state = s.init_state(net)
    before = torch.cat([a.detach().flatten() for a in net.arch_parameters()])
    s.arch_step(net, batch(1), batch(2), state)
    after = torch.cat([a.detach().flatten() for a in net.arch_parameters()])
    assert torch.equal(torch.sign(after - before), torch.sign(before))  # |σ(α) − 0.5| grows everywhere


def test_second_order_adds_exactly_w01_grad_l01():
    net = tiny_net()
    train, val = batch(1), batch(2)
    fair, plain = (dnas.create_strategy("fairdarts", order=2, w01=w01) for w01 in (10.0, 0.0))
    g_fair, _ = unrolled_arch_grads(fair, net, train, val, 0.01, LoopState(net, fair, None))
    g_plain, _ = unrolled_arch_grads(plain, net, train, val, 0.01, LoopState(net, plain, None))
    g01 = torch.autograd.grad(10.0 * zero_one_loss(net.arch_parameters()), net.arch_parameters())
    for f, p, z in zip(g_fair, g_plain, g01):
        assert torch.allclose(f - p, z, atol=1e-10)


def set_sigmas(net, values: dict[str, list[float]]):
    """Set α so that σ(α) of each named decision is exactly the given row."""
    with torch.no_grad():
        for a in net.arch_parameters():
            a.fill_(-10.0)  # σ ≈ 0: nothing kept unless set below
        for name, sig in values.items():
            s = torch.tensor(sig, dtype=torch.float64)
            net.decision_alpha(name).copy_(torch.log(s / (1 - s)))


def test_sparse_edge_threshold_parsers_through_a_supernet():
    net = tiny_net("darts")
    ops = net.space.op_names  # none, max_pool, avg_pool, skip, sep3, sep5, dil3, dil5
    row = [0.5] * len(ops)
    row[ops.index("sep_conv_3x3")], row[ops.index("skip_connect")], row[ops.index("dil_conv_5x5")] = 0.95, 0.88, 0.8
    row[ops.index("none")] = 0.99  # `none` is never kept
    set_sigmas(net, {"normal.node0.edge1": row, "normal.node1.edge2": [0.3] * len(ops)})
    sparse = net.genotype("sparse", threshold=0.85)
    assert sparse["normal.node0.edge1"] == ("sep_conv_3x3",)
    assert net.genotype("edge", threshold=0.85)["normal.node0.edge1"] == ("sep_conv_3x3", "skip_connect")
    assert net.genotype("threshold", threshold=0.7)["normal.node0.edge1"] == ("sep_conv_3x3", "skip_connect", "dil_conv_5x5")
    assert net.genotype("sparse", threshold=0.9)["normal.node0.edge1"] == ("sep_conv_3x3",)
    # nothing reaches 0.96: edge1 keeps its best op only as the node's fallback, the other edge stays out
    at96 = net.genotype("sparse", threshold=0.96)
    assert at96["normal.node0.edge1"] == ("sep_conv_3x3",) and at96["normal.node0.edge0"] == ()
    # node1 has nothing above 0.85: it keeps its single best real op (the σ = 0.3 edge), never empty
    assert sparse["normal.node1.edge2"] == ("max_pool_3x3",) and sparse["normal.node1.edge0"] == ()


def test_parser_args_pass_threshold_only_to_parsers_that_take_it():
    assert dnas.create_strategy("fairdarts").parser_args() == {"threshold": 0.85}
    assert dnas.create_strategy("fairdarts", parser="edge", threshold=0.7).parser_args() == {"threshold": 0.7}
    assert dnas.create_strategy("fairdarts", parser="darts").parser_args() == {}
    assert dnas.create_strategy("darts").parser_args() == {}
    with pytest.raises(dnas.DnasError, match="threshold"):
        dnas.create_strategy("fairdarts", threshold=1.5)


def test_dominant_ops_counts_sigma_above_0_9_without_none():
    net = tiny_net("ddarts")
    ops = net.space.op_names
    row = [0.5] * len(ops)
    row[ops.index("none")] = 0.99
    row[ops.index("sep_conv_3x3")], row[ops.index("skip_connect")] = 0.95, 0.91
    row2 = [0.2] * len(ops)
    row2[ops.index("avg_pool_3x3")] = 0.89  # just below: not dominant
    set_sigmas(net, {"cell0.node0.edge0": row, "cell2.node1.edge1": row, "cell1.node0.edge1": row2})
    assert dominant_ops(net) == {"cell0": 2, "cell1": 0, "cell2": 2}


@pytest.mark.parametrize("space", ["darts", "ddarts"])
def test_search_records_dominant_ops_and_parses_sparse(space, tmp_path):
    r = dnas.search(
        space, "fairdarts", "synthetic", space_config=dict(C=4, layers=3, nodes=2),
        strategy_config=dict(epochs=2, a_lr=0.3), data_config=dict(batch_size=32), out=tmp_path / "run", progress=False,
    )
    for rec in r.history:
        assert rec["zero_one"] < 0
        # the count in the history equals the count read off that epoch's σ(α) snapshot
        by_hand = sum(
            int(v > 0.9) for name, row in rec["alphas"].items() for v, o in zip(row, dnas.create_space(space).op_names) if o != "none"
        )
        assert rec["dominant_ops"] == by_hand == sum(rec["dominant_ops_by_cell"].values())
    assert r.history[-1]["dominant_ops"] > 0  # a_lr 0.3 with L01 saturates some σ within 2 epochs
    assert all(len(v) <= 1 for v in r.genotype.choices.values())  # sparse: at most one op per edge


def test_sigmoid_parsers_keep_a_decision_that_must_choose():
    from dnas.parsers import sparse_parser
    from dnas.space import Decision

    layer = Decision("layer0", ("relu", "silu", "identity"))  # min_options = 1: a layer must keep an op
    w = {"layer0": torch.tensor([0.3, 0.6, 0.1])}
    assert sparse_parser([layer], w) == {"layer0": ["silu"]}  # nothing ≥ 0.85: its best op, not nothing
    assert sparse_parser([layer], {"layer0": torch.tensor([0.9, 0.95, 0.1])}) == {"layer0": ["silu"]}


@pytest.mark.parametrize("space", ["nasiam-mlp", "mlp-depth", "colornas", "activation"])
def test_fairdarts_step_and_parse_on_other_alpha_spaces(space):
    from dnas.registry import SPACES

    if space not in SPACES:
        pytest.skip(f"space {space} not registered")
    sp = dnas.create_space(space, **SPACES.get(space).tiny_config)
    s = dnas.create_strategy("fairdarts", a_lr=0.1)
    torch.manual_seed(0)
    net = sp.supernet(sp.tiny_task)
    net.relaxation = s.relaxation
    state = s.init_state(net)
    b = sp.example_batch(sp.tiny_task, 4)
    before = [a.detach().clone() for a in net.arch_parameters()]
    m = s.arch_step(net, b, b, state)
    assert float(m["zero_one"]) <= 0
    assert any(not torch.equal(a, x) for a, x in zip(net.arch_parameters(), before))
    sp.validate(net.genotype(s.config.parser, **s.parser_args()))  # the sparse parser gives a valid genotype
