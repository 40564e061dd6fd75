"""DARTS α gradients: the mixed edge by hand, first order against finite differences, second order
against an exact autograd Hessian-vector product (float64 throughout)."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import dnas
from dnas.spaces.ops import DARTS_OPS
from dnas.spaces.darts import MixedOp
from dnas.engine.callbacks import LoopState
from dnas.strategies.darts import unrolled_arch_grads
from dnas.space import Task

TASK = Task((3, 8, 8), 4)


def batch(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *TASK.input_shape, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def two_cell_supernet():
    torch.manual_seed(0)
    space = dnas.create_space("darts", C=4, layers=2, nodes=2)
    net = space.supernet(TASK).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)  # away from uniform, so the test sees a non-trivial softmax
    return net


def test_mixed_edge_gradient_matches_hand_formula():
    # dL/dα_k = p_k (<g, o_k> − Σ_j p_j <g, o_j>) with p = softmax(α), o_none = 0 (eq. 2.7)
    torch.manual_seed(0)
    op = MixedOp(3, 1, tuple(DARTS_OPS), DARTS_OPS).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    alpha = torch.randn(len(DARTS_OPS), dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    (op(x, F.softmax(alpha, -1)) * g).sum().backward()
    with torch.no_grad():
        outs = [torch.zeros_like(x) if n == "none" else op.ops[k](x) for k, n in enumerate(DARTS_OPS)]
        s = torch.stack([(g * o).sum() for o in outs])
        p = F.softmax(alpha, -1)
        expected = p * (s - (p * s).sum())
        # skipping `none` changes nothing: the output equals the full sum over all 8 ops
        assert torch.allclose(op(x, p), sum(w * o for w, o in zip(p, outs)))
    assert torch.allclose(alpha.grad, expected, atol=1e-12)


def test_first_order_step_is_adam_on_the_val_gradient():
    net = two_cell_supernet()
    strategy = dnas.create_strategy("darts", a_lr=0.01)
    state = strategy.init_state(net)
    train, val = batch(1), batch(2)
    alphas = net.arch_parameters()
    before = [a.detach().clone() for a in alphas]
    weights_before = [w.detach().clone() for w in net.weight_parameters()]

    # central finite differences of L_val(w, α) w.r.t. every α entry, at the current w
    fd = []
    for a in alphas:
        g = torch.zeros_like(a)
        for idx in range(a.numel()):
            with torch.no_grad():
                a.view(-1)[idx] += 1e-6
                up = float(net.loss(val)["loss"])
                a.view(-1)[idx] -= 2e-6
                down = float(net.loss(val)["loss"])
                a.view(-1)[idx] += 1e-6
            g.view(-1)[idx] = (up - down) / 2e-6
        fd.append(g)

    strategy.arch_step(net, train, val, state)
    for a, g, a0 in zip(alphas, fd, before):
        assert torch.allclose(a.grad, g, atol=1e-7), "α gradient is not ∇_α L_val"
        # Adam's first step with L2 weight decay: α1 = α0 − lr · ĝ / (|ĝ| + eps), ĝ = g + wd α0
        ghat = a.grad + 1e-3 * a0
        assert torch.allclose(a.detach(), a0 - 0.01 * ghat / (ghat.abs() + 1e-8), atol=1e-12)
    # the α step leaves the weights alone
    assert all(torch.equal(w, w0) for w, w0 in zip(net.weight_parameters(), weights_before))


def test_second_order_matches_exact_hessian_vector_product():
    """Eq. (2.9) with the finite-difference HVP against autograd through w' = w − ξ∇_w L_train.

    On a smooth net (the plugin MLP with tanh/ELU/softplus): ReLU and max-pool kinks in DARTS cells
    make any finite difference of size ε = 0.01/‖∇L‖ inexact there (as in the original DARTS)."""
    import toyspace  # noqa: F401  (tests/plugins, registers "toy-mlp")

    torch.manual_seed(0)
    net = dnas.create_space("toy-mlp").supernet(TASK).double()
    with torch.no_grad():
        net.alphas["layers"].normal_(0, 0.5)
    strategy = dnas.create_strategy("darts", order=2)
    train, val = batch(3), batch(4)
    xi = 0.05
    names = [n for n, p in net.named_parameters() if not n.startswith("alphas.")]
    alpha_names = [n for n, _ in net.named_parameters() if n.startswith("alphas.")]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}

    params = dict(net.named_parameters())
    loss_t = F.cross_entropy(functional_call(net, params, (train[0],)), train[1])
    g_w = torch.autograd.grad(loss_t, [params[n] for n in names], create_graph=True)
    unrolled = {**params, **{n: params[n] - xi * g for n, g in zip(names, g_w)}}  # w' = w − ξ∇_w L_train
    loss_v = F.cross_entropy(functional_call(net, unrolled, (val[0],)), val[1])
    exact = torch.autograd.grad(loss_v, [params[n] for n in alpha_names])

    ours, _ = unrolled_arch_grads(strategy, net, train, val, xi, LoopState(net, strategy, None))
    for e, o in zip(exact, ours):
        assert torch.allclose(o, e, atol=1e-6)
    # the first-order gradient differs by far more than the tolerance: the Hessian term is tested
    first = torch.autograd.grad(net.loss(val)["loss"], net.arch_parameters())
    assert float((first[0] - exact[0]).abs().max()) > 1e-4
    for n, p in net.named_parameters():  # weights restored bit for bit
        assert torch.equal(p, before[n]), n


def test_second_order_on_darts_cells_restores_weights_and_is_finite():
    net = two_cell_supernet()
    before = [w.detach().clone() for w in net.weight_parameters()]
    s = dnas.create_strategy("darts", order=2)
    grads, metrics = unrolled_arch_grads(s, net, batch(3), batch(4), 0.025, LoopState(net, s, None))
    assert all(torch.isfinite(g).all() for g in grads) and "val_loss" in metrics
    assert all(torch.equal(w, w0) for w, w0 in zip(net.weight_parameters(), before))


@pytest.mark.parametrize("order", [1, 2])
def test_search_step_moves_alpha_and_weights(order):
    net = two_cell_supernet().float()
    strategy = dnas.create_strategy("darts", order=order, a_lr=0.01)
    state = strategy.init_state(net)
    tb, vb = batch(5), batch(6)
    tb, vb = (tb[0].float(), tb[1]), (vb[0].float(), vb[1])
    a0 = [a.detach().clone() for a in net.arch_parameters()]
    w0 = [w.detach().clone() for w in net.weight_parameters()]
    metrics = strategy.step(net, tb, vb, state)
    assert {"train_loss", "val_loss"} <= set(metrics)
    assert not torch.equal(net.alphas["reduce"], a0[0])
    assert any(not torch.equal(w, w_) for w, w_ in zip(net.weight_parameters(), w0))
