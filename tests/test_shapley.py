"""D-DARTS: cell ablation, the ablation loss (4.3), the exact per-cell gradient, Algorithm 2 (deepen)."""
import random

import pytest
import torch
import torch.nn.functional as F

import dnas
from dnas.cli import main as cli
from dnas.tools.deepen import deepen, deepen_positions
from dnas.genotype import load_genotype
from dnas.space import Task
from dnas.strategies.fairdarts import zero_one_loss
from dnas.strategies.shapley import ablation_loss, shapley_grads, shapley_grads_naive
from dnas.testing import check_space

TASK = Task((3, 8, 8), 4)


def batch(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *TASK.input_shape, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def tiny_ddarts(layers=4, **kw):
    torch.manual_seed(0)
    net = dnas.create_space("ddarts", C=4, layers=layers, nodes=2, **kw).supernet(TASK).double()
    net.relaxation = "sigmoid"
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 1.0)
    return net


# -- ablation ---------------------------------------------------------------------------------
def cell_inputs(net, x):
    """(s0, s1) seen by every cell, and the logits."""
    seen = {}
    hooks = [c.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, (args[0], args[1]))) for i, c in enumerate(net.cells)]
    try:
        logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, logits


@pytest.mark.parametrize("stem_multiplier", [2, 3])  # 2 = nodes: the first cell's input has its output shape
def test_ablation_replaces_exactly_one_cell_output_by_its_input_path(stem_multiplier):
    net = tiny_ddarts(layers=5, stem_multiplier=stem_multiplier)  # reductions at 1 and 3
    net.eval()  # BN running stats: every cell is a fixed function of its inputs
    x = batch(0)[0]
    with torch.no_grad():
        base, logits = cell_inputs(net, x)
        n = net.num_cells()
        for i in range(n):
            with net.ablated(i):
                seen, out = cell_inputs(net, x)
            assert i not in seen  # the cell itself does not run
            for j in range(i):  # cells before i see exactly what they saw
                assert torch.equal(seen[j][0], base[j][0]) and torch.equal(seen[j][1], base[j][1])
            s0, s1 = base[i]
            cell = net.cells[i]
            if not cell.reduction and s1.shape[1] == cell.nodes * cell.C:
                expected = s1  # the input path itself
            else:
                y = cell.pre1(s1)
                y = F.avg_pool2d(y, 3, 2, 1, count_include_pad=False) if cell.reduction else y
                expected = y.repeat(1, cell.nodes, 1, 1)
            normal = base[i + 1][1] if i + 1 < n else None
            if i + 1 < n:
                assert torch.equal(seen[i + 1][1], expected) and expected.shape == normal.shape
                assert not torch.allclose(seen[i + 1][1], normal)
                assert torch.equal(seen[i + 1][0], base[i + 1][0])  # its other input is untouched
            assert not torch.allclose(out, logits)
        assert torch.equal(net(x), logits)  # the context restores the cell


def test_ablated_cell_alpha_gets_no_gradient_and_bad_index_fails():
    net = tiny_ddarts(layers=3)
    with net.ablated(1):
        loss = net.loss(batch(0))["loss"]
    grads = torch.autograd.grad(loss, net.arch_parameters(), allow_unused=True)
    assert grads[1] is None and grads[0] is not None and grads[2] is not None
    with pytest.raises(dnas.DnasError, match="cells 0 to 2"):
        with net.ablated(3):
            pass
    with pytest.raises(dnas.DnasError, match="ablation mode"):
        with net.ablated(0, mode="zero"):
            pass


def test_ddarts_still_passes_conformance():
    check_space("ddarts")


# -- ablation loss and its gradient --------------------------------------------------------------
def test_ablation_loss_by_hand():
    M = torch.tensor([1.0, 3.0])  # mean 2: (1 − 2)/2, (3 − 2)/2
    assert torch.allclose(ablation_loss(M), torch.tensor([-0.5, 0.5]))
    assert torch.equal(ablation_loss(torch.tensor([1.0, -1.0])), torch.zeros(2))  # mean 0 -> 0
    assert torch.allclose(ablation_loss(torch.tensor([-1.0, -2.0, -3.0])), torch.tensor([-0.5, 0.0, 0.5]))


@pytest.mark.parametrize("mode", ["input", "random"])
def test_per_cell_gradients_equal_the_naive_formula(mode):
    net = tiny_ddarts(layers=4)
    b = batch(1)
    torch.manual_seed(5)  # the random ablation draws the same weights in both, in cell order
    fast, metrics = shapley_grads(net, b, w01=8.0, wAB=0.5, ablation=mode)
    torch.manual_seed(5)
    naive = shapley_grads_naive(net, b, w01=8.0, wAB=0.5, ablation=mode)
    assert float(metrics["ablation_mean_mc"]) != 0 and float(metrics["ablation_spread"]) > 0
    for f, nv in zip(fast, naive):
        for x, y in zip(f, nv):
            assert torch.allclose(x, y, atol=1e-5, rtol=0)
    # the ablation term really contributes: without it the gradients differ
    torch.manual_seed(5)
    no_ab, _ = shapley_grads(net, b, w01=8.0, wAB=0.0, ablation=mode)
    assert any(not torch.allclose(x[0], y[0], atol=1e-5) for x, y in zip(fast, no_ab))


@pytest.mark.parametrize("mode, options", [("input", {}), ("random", {"partial_channels": 2}), ("input", {"checkpoint_cells": True})])
def test_pass_tree_equals_separate_passes_and_the_naive_formula(mode, options):
    """The cached pass tree (passes start at the dropped cell from the full network's inputs) gives
    the gradient of n + 1 separate passes. With PC-DARTS β and the random ablation, β_j still
    enters pass j, so the diagonal terms D_j are not zero there."""
    net = tiny_ddarts(layers=3, **options)
    b = batch(3, n=4)
    out = {}
    for how in ("tree", "separate", "naive"):
        torch.manual_seed(7)
        if how == "naive":
            out[how] = shapley_grads_naive(net, b, w01=8.0, wAB=0.5, ablation=mode)
        else:
            out[how], metrics = shapley_grads(net, b, w01=8.0, wAB=0.5, ablation=mode, cached=how == "tree")
            out[how + "_metrics"] = metrics
    for k in ("val_loss", "ablation_mean_mc", "zero_one"):
        assert torch.allclose(out["tree_metrics"][k], out["separate_metrics"][k], atol=1e-12, rtol=0), k
    assert len(out["tree"][0]) == (2 if options.get("partial_channels") else 1)
    for t, s, nv in zip(out["tree"], out["separate"], out["naive"]):
        for x, y, z in zip(t, s, nv):
            assert torch.allclose(x, y, atol=1e-10, rtol=0) and torch.allclose(x, z, atol=1e-10, rtol=0)


class LeakyAblation(torch.nn.Module):
    """A smooth toy "supernet" whose ablated cell still depends on its α (scaled by 0.3), so the
    diagonal terms ∇_i L_CE(C without C_i) of the exact gradient are not zero."""

    def __init__(self, n=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.alphas = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(2, 3, generator=g, dtype=torch.float64)) for _ in range(n))
        self.mix = torch.randn(n, 3, generator=g, dtype=torch.float64)
        self.off = None

    def arch_parameters(self):
        return list(self.alphas)

    def arch_groups(self):
        return {f"cell{i}": [a] for i, a in enumerate(self.alphas)}

    def num_cells(self):
        return len(self.alphas)

    def ablated(self, cell, mode="input"):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.off = cell
            yield
            self.off = None

        return ctx()

    def loss(self, batch):
        h = sum((0.3 if i == self.off else 1.0) * (torch.sigmoid(a) * self.mix[i]).sum(0) for i, a in enumerate(self.alphas))
        return {"loss": torch.logsumexp(h, 0) + 0.1 * (h**2).sum()}


def test_exact_gradient_keeps_the_diagonal_terms():
    net = LeakyAblation()
    fast, _ = shapley_grads(net, None, w01=8.0, wAB=0.5)
    naive = shapley_grads_naive(net, None, w01=8.0, wAB=0.5)
    for f, nv in zip(fast, naive):
        assert torch.allclose(f[0], nv[0], atol=1e-10, rtol=0)


class SavedBytes:
    """Peak bytes of tensors autograd holds for backward (saved_tensors_hooks), on any device."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        counter = self

        class Held:
            def __init__(self, t):
                self.t, self.n = t.detach(), t.numel() * t.element_size()  # detach: no cycle through the graph
                counter.live += self.n
                counter.peak = max(counter.peak, counter.live)

            def __del__(self):
                counter.live -= self.n

        self._ctx = torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def test_exact_gradient_holds_one_graph_at_a_time():
    net = tiny_ddarts(layers=4)
    b = batch(0, n=4)
    with SavedBytes() as one:  # one FairDARTS-style α gradient: a single graph
        torch.autograd.grad(net.loss(b)["loss"], net.arch_parameters())
    with SavedBytes() as fast:
        shapley_grads(net, b, 8.0, 0.5)
    with SavedBytes() as naive:
        shapley_grads_naive(net, b, 8.0, 0.5)
    assert fast.live == 0 and fast.peak <= 1.05 * one.peak
    assert naive.peak > 3 * one.peak  # n + 1 = 5 graphs at once: what the test guards against


def test_zero_mean_contribution_gives_no_ablation_gradient():
    net = tiny_ddarts(layers=3)
    with torch.no_grad():  # constant logits: every ablation has the same loss, so M_C = 0
        net.classifier.weight.zero_()
        net.classifier.bias.zero_()
    grads, metrics = shapley_grads(net, batch(0), w01=8.0, wAB=0.5)
    assert float(metrics["ablation_mean_mc"]) == 0 and float(metrics["ablation_spread"]) == 0
    for (key, group), cell in zip(net.arch_groups().items(), grads):
        g01 = torch.autograd.grad(8.0 * zero_one_loss(group), group)
        assert torch.allclose(cell[0], g01[0], atol=1e-12)  # only the zero-one term is left, finite


def test_arch_step_moves_each_cell_by_its_own_optimizer():
    net = tiny_ddarts(layers=3)
    s = dnas.create_strategy("shapley", a_lr=0.01, a_weight_decay=0.0)
    state = s.init_state(net)
    assert len(state.optimizers.arch) == 3
    val = batch(2)
    torch.manual_seed(0)
    grads, _ = shapley_grads(net, val, 8.0, 0.5)
    before = [a.detach().clone() for a in net.arch_parameters()]
    s.arch_step(net, batch(1), val, state)
    for a, b, cell in zip(net.arch_parameters(), before, grads):
        g = cell[0]
        assert torch.allclose(a.detach(), b - 0.01 * g / (g.abs() + 1e-8), atol=1e-9)  # Adam's first step


def test_shapley_needs_cells():
    with pytest.raises(dnas.DnasError, match=r"one α per cell \(alpha_per_cell\); space 'darts' offers it with space.individual=true"):
        dnas.search("darts", "shapley", "synthetic", space_config=dict(C=4, layers=3, nodes=2), progress=False)


def test_shapley_search_runs_and_logs_its_terms(tmp_path):
    r = dnas.search(
        "ddarts", "shapley", "synthetic", space_config=dict(C=4, layers=3, nodes=2),
        strategy_config=dict(epochs=1), data_config=dict(batch_size=64), out=tmp_path / "run", progress=False,
    )
    rec = r.history[-1]
    assert {"ablation_mean_mc", "ablation_spread", "zero_one", "dominant_ops"} <= set(rec)
    assert rec["zero_one"] < 0 and rec["ablation_spread"] >= 0
    assert all(len(v) <= 1 for v in r.genotype.choices.values())


# -- Algorithm 2 -------------------------------------------------------------------------------
def _algorithm_2(n, N):
    """D-DARTS Algorithm 2 as written, by hand: reductions at N/3 and 2N/3 keep the searched
    reductions n/3 and 2n/3; a normal position i of third t takes S_t[i mod k], S_t the k searched
    normal cells of third t."""
    r, R = (n // 3, 2 * n // 3), (N // 3, 2 * N // 3)
    thirds = [list(range(r[0])), list(range(r[0] + 1, r[1])), list(range(r[1] + 1, n))]
    out = []
    for i in range(N):
        if i in R:
            out.append(r[R.index(i)])
        else:
            s = thirds[0 if i < R[0] else 1 if i < R[1] else 2]
            out.append(s[i % len(s)])
    return out


def test_deepen_positions_follow_algorithm_2():
    # 8 cells: reductions 2, 5; thirds of normal cells [0, 1], [3, 4], [6, 7]
    # 14 cells: reductions 4, 9; position 5 is odd, so its third starts with S_2[1] = cell 4
    assert deepen_positions(8, 14) == [0, 1, 0, 1, 2, 4, 3, 4, 3, 5, 6, 7, 6, 7]
    # 20 cells: reductions 6, 13
    assert deepen_positions(8, 20) == [0, 1, 0, 1, 0, 1, 2, 4, 3, 4, 3, 4, 3, 5, 6, 7, 6, 7, 6, 7]
    # 6 cells: reductions 2, 4, thirds [0, 1], [3], [5]; 10 cells: reductions 3, 6
    assert deepen_positions(6, 10) == [0, 1, 0, 2, 3, 3, 4, 5, 5, 5]
    # 5 cells: reductions 1, 3, thirds [0], [2], [4]; 8 cells: reductions 2, 5
    assert deepen_positions(5, 8) == [0, 0, 1, 2, 2, 3, 4, 4]
    # as written, the algorithm permutes a third that starts at an odd position even for N = n
    assert deepen_positions(8, 8) == [0, 1, 2, 4, 3, 5, 6, 7]
    for n in range(5, 13):
        for N in range(n, 25):
            assert deepen_positions(n, N) == _algorithm_2(n, N), (n, N)
    with pytest.raises(dnas.DnasError, match="no normal cell in third 2"):
        deepen_positions(3, 8)  # 3 cells: reductions 1, 2, nothing between them
    with pytest.raises(dnas.DnasError, match="unknown deepen mapping"):
        deepen_positions(8, 14, "cyclic")


def test_deepen_per_third_mapping_restarts_each_third():
    assert deepen_positions(8, 14, "per_third") == [0, 1, 0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 6, 7]
    assert deepen_positions(8, 20, "per_third") == [0, 1, 0, 1, 0, 1, 2, 3, 4, 3, 4, 3, 4, 5, 6, 7, 6, 7, 6, 7]
    assert deepen_positions(8, 8, "per_third") == list(range(8))
    differ = sum(deepen_positions(n, N) != deepen_positions(n, N, "per_third") for n in range(6, 13) for N in range(n + 1, 25))
    assert differ == 70  # of the 105 pairs n 6..12, n < N <= 24


def test_deepen_copies_cells_and_the_cli_writes_a_valid_genotype(tmp_path):
    g8 = dnas.create_space("ddarts", C=4, layers=8, nodes=2).random_genotype(random.Random(0))
    g14 = deepen(g8, 14)
    assert g14.config["layers"] == 14 and len(g14.choices) == 14 * len(g8.choices) // 8
    for pos, src in enumerate([0, 1, 0, 1, 2, 4, 3, 4, 3, 5, 6, 7, 6, 7]):
        for name, ops in g8.choices.items():
            if name.startswith(f"cell{src}."):
                assert g14.choices[f"cell{pos}." + name.split(".", 1)[1]] == ops
    path = tmp_path / "g8.yaml"
    g8.save(path)
    assert cli(["deepen", str(path), "--cells", "14", "--out", str(tmp_path / "g14.yaml")]) == 0
    assert load_genotype(tmp_path / "g14.yaml") == g14  # load validates it against ddarts
    assert cli(["deepen", str(path), "--cells", "14", "--mapping", "per_third", "--out", str(tmp_path / "p14.yaml")]) == 0
    assert load_genotype(tmp_path / "p14.yaml") == deepen(g8, 14, "per_third") != g14
    assert cli(["deepen", str(path), "--cells", "14", "--out", str(path)]) == 2  # the searched genotype is not written over
    assert load_genotype(path) == g8
    with pytest.raises(dnas.DnasError, match=r"number of cells of the new genotype \(--cells\), >= 1; got 0"):
        deepen(g8, 0)
    # shared normal/reduce cells (darts): only the depth changes
    gd = dnas.create_space("darts", C=4, layers=8, nodes=2).random_genotype(random.Random(0))
    assert deepen(gd, 14).choices == gd.choices and deepen(gd, 14).config["layers"] == 14


def test_deepen_refuses_custom_reductions():
    sp = dnas.create_space("ddarts", C=4, layers=5, nodes=2, reductions=[1, 3])
    with pytest.raises(dnas.DnasError, match="reductions"):
        deepen(sp.random_genotype(random.Random(0)), 8)
