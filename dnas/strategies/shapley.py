"""D-DARTS (Heuillet et al.): one α optimizer per cell and the Shapley-style ablation loss.

Every cell i has its own α_i and its own Adam (``arch_groups()``: one group per cell, in cell
order). Its loss adds to FairDARTS' a term saying how much cell i matters compared to the others:

    M_C^i  = L_CE(C) − L_CE(C \\ {C_i})                       D-DARTS eq. (4.2)
    L_AB^i = (M_C^i − mean(M_C)) / mean(M_C), 0 if the mean is 0   eq. (4.3)
    L_T^i  = L_CE(C) + w01 · L01(α_i) + wAB · L_AB^i             eq. (4.4), (4.5)

and optimizer i steps α_i along ∇_{α_i} L_T^i. ``C \\ {C_i}`` is the supernet inside
``supernet.ablated(i)`` (its output replaced by its input path, or by random op weights as in the
authors' code with ``ablation: random``). L01(α_i) is FairDARTS' zero-one loss over cell i's own α
(as the authors' code: each cell's loss sees its own σ(α)).

The gradient, assembled with one graph alive at a time. Write L = L_CE(C), L_j = L_CE(C \\ {C_j}),
n cells, M_j = L − L_j, m = (1/n) Σ_j M_j = L − (1/n) Σ_j L_j, and ∇_i for the gradient w.r.t. α_i.
Since L_AB^i = M_i / m − 1,

    ∇_i L_AB^i = (∇_i M_i · m − M_i · ∇_i m) / m²
    ∇_i M_i    = ∇_i L − ∇_i L_i
    ∇_i m      = ∇_i L − (1/n) Σ_j ∇_i L_j

so everything follows from G = ∇_α L, S = Σ_j ∇_α L_j (summed one ablated forward/backward at a
time, each graph freed before the next), the diagonal blocks D_i = ∇_i L_i (zero with the
input-path ablation, which no α_i enters, but kept so any ablation is exact) and the scalars L, L_j:

    ∇_i L_T^i = G_i + w01 ∇_i L01(α_i) + wAB · 1[m ≠ 0] · ((G_i − D_i) m − M_i (G_i − S_i / n)) / m²

The pass tree. The n ablated networks share every cell before the one they drop: with s_k the
input of cell k in the full network (s_0 the stem's output), network C \\ {C_j} computes exactly
s_0 … s_j (same inputs, same batch statistics), then its own states from cell j on. So L and the
L_j are the leaves of a tree: a trunk (the full network, cells 0 … n − 1 and the head) and, at each
s_j, a branch j (cell j switched off, cells j + 1 … n − 1, the head). Every forward pass of the
ablated networks before cell j is a repeat of the trunk; the cached passes run it once.

Reverse mode over the tree, exactly. Two cotangents run down the trunk: u_k = ∂L/∂s_k and
v_k = Σ_j ∂L_j/∂s_k, where ∂L_j/∂s_k is zero for k > j (branch j leaves the trunk at s_j) and
branch j adds its own ∂L_j/∂s_j (its backward stops at the trunk's s_j) at the branch point.
A trunk cell k < j is part of network j, so

    G_k = VJP_{α_k}(cell k, u_{k+1})
    S_k = VJP_{α_k}(cell k, v_{k+1}) + Σ_{j < k} ∇_k L_j (α_k inside branch j) + D_k

with D_k the branch k's own α_k gradient (0 with the input-path ablation). The two cotangents must
stay separate: optimizer k weights G_k and S_k by different scalars, c_k = 1 + wAB (m − M_k)/m²
and wAB M_k/(n m²), which the trunk cannot mix into one cotangent (a cotangent fixes the ratio of
L's and L_j's weight along the whole trunk below s_j, while it would have to change with k). They
are pulled back through cell k by two vector-Jacobian products on the same graph.

Order and memory. The trunk is cut at every cell (each cell's inputs are fresh graph roots), and
the backward goes from the last cell down: at cell j the trunk's cell j is pulled back (its graph
freed), then branch j runs forward and is pulled back to s_j. When branch j runs, the trunk holds
cells 0 … j − 1 and branch j holds cells j + 1 … n − 1: never more than one network's graph
(FairDARTS' peak). Cost, in cell forwards f and cell backwards b: trunk n(f + 2b), branches
n(n − 1)/2 · (f + b), against (n + 1) · n (f + b) for n + 1 separate passes. Later cells are
also the cheaper ones (half the resolution after each reduction), and the branches only run
later cells.

BatchNorm. In training mode a cell's output depends on its batch only, so the branch passes
compute the same values as n + 1 separate passes and the gradient is the same. Their running
statistics differ: a cell before j is not run again for pass j, so it updates its running
statistics once per pass that runs it (k + 1 times for cell k with the input-path ablation)
instead of n times.

The authors' code builds L_AB from ``.item()`` values, so α gets no gradient from it, and its
per-cell backward calls add every cell's gradient into every α; here each α_i gets exactly
∇_{α_i} L_T^i (checked against autograd of the formula in the tests). Their code also subtracts the
term (``− wAB · L_AB``); dnas follows the paper's sign (+).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from dnas.engine.loop import GradientConfig, GradientStrategy, Optimizers
from dnas.errors import DnasError
from dnas.registry import register_strategy
from dnas.strategies.fairdarts import FairLossMixin, zero_one_loss


@dataclass
class ShapleyConfig(GradientConfig):
    """D-DARTS defaults: w01 = 8, wAB = 0.5 (the authors' code: 9 and 0.7), sparse parser at 0.85.
    The optimizers keep DARTS' settings; the authors' code values are in each field's metadata."""

    w_lr: float = field(default=0.025, metadata={"code": 0.005})
    a_lr: float = field(default=3e-4, metadata={"code": 3e-3})
    a_betas: tuple[float, float] = field(default=(0.5, 0.999), metadata={"code": (0.9, 0.999)})
    w01: float = field(default=8.0, metadata={"paper": 8.0, "code": 9.0})  # D-DARTS eq. (4.4)
    wAB: float = field(default=0.5, metadata={"paper": 0.5, "code": 0.7})  # D-DARTS eq. (4.5)
    # how a cell is switched off (see DartsSupernet.ablated): the paper's input path, or the code's random weights
    ablation: Literal["input", "random"] = field(default="input", metadata={"paper": "input", "code": "random"})
    parser: str | None = "sparse"
    threshold: float = 0.85

    def check(self):
        if self.w01 < 0 or self.wAB < 0:
            return "w01 and wAB must be >= 0"
        if not 0 < self.threshold < 1:
            return "threshold must be in (0, 1)"
        return super().check()


def _cell_groups(supernet) -> list[list[torch.Tensor]]:
    groups = list(supernet.arch_groups().values())
    n = supernet.num_cells()
    if n < 2 or len(groups) != n:
        raise DnasError(
            f"strategy 'shapley' needs one α group per cell and at least 2 cells; space "
            f"'{supernet.space.name}' gives {len(groups)} group(s) for {n} cell(s) (use space ddarts)"
        )
    return groups


def ablation_loss(M: torch.Tensor) -> torch.Tensor:
    """D-DARTS eq. (4.3) for every cell: L_AB^i = (M_C^i − mean(M_C)) / mean(M_C), all 0 if the mean is 0."""
    m = M.mean()
    nonzero = m != 0
    return torch.where(nonzero, (M - m) / torch.where(nonzero, m, torch.ones_like(m)), torch.zeros_like(M))  # eq. (4.3)


def _grad(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    """A new graph root holding ``t``'s value: each cell's graph becomes its own piece."""
    return t.detach().requires_grad_()


def _add(acc: list, k: int, g: torch.Tensor | None) -> None:
    if g is not None:
        acc[k] = g if acc[k] is None else acc[k] + g


def _cached_passes(supernet, batch: Any, groups, ablation: str):
    """L, (L_j), G = ∇_α L, S = Σ_j ∇_α L_j and D_i = ∇_i L_i on the pass tree (module docstring).

    The trunk (the full network) runs once, cut into one graph per cell (each cell's inputs are
    fresh roots); pass j starts at cell j from the trunk's inputs of cell j. Reverse mode goes from
    the last cell down: at cell j the trunk's cotangents u (from L) and v (from the L_k, k > j)
    are pulled back through cell j (which frees it), then pass j runs and is pulled back to the
    inputs of cell j, where its cotangent joins v. One graph of at most n cells is alive at a time.
    """
    x, y = batch
    alphas = supernet.arch_parameters()
    index = {id(a): k for k, a in enumerate(alphas)}
    n = len(groups)
    rand = None
    if ablation == "random":  # the same draws, in the same order, as n separate passes would take
        rand = [torch.rand_like(supernet.mixing_weights(k).detach()) for k in supernet.cell_keys]
    # trunk: st[k] is the input s1 of cell k (st[0] the stem), i.e. the output of cell k − 1
    st = [supernet.stem_forward(x).detach()]
    roots, outs = [], []
    for i in range(n):
        s0 = _leaf(st[i - 1]) if i >= 2 else st[0]  # the stem needs no cotangent: no α before it
        s1 = _leaf(st[i]) if i >= 1 else st[0]
        out = supernet.cells_forward(i, i + 1, s0, s1)[1]
        roots.append(((i - 1, s0) if i >= 2 else None, (i, s1) if i >= 1 else None))
        outs.append(out)
        st.append(out.detach())
    top = _leaf(st[n])
    logits = supernet.head(top)
    L = F.cross_entropy(logits, y)
    metrics = {"val_loss": L.detach(), "val_acc": (logits.argmax(1) == y).float().mean().detach()}
    U: list = [None] * (n + 1)  # cotangent of L at st[k]
    V: list = [None] * (n + 1)  # cotangent of Σ_{j} L_j at st[k] (the passes branching there or later)
    (U[n],) = torch.autograd.grad(L, top)
    del logits, top
    G = [torch.zeros_like(a) for a in alphas]
    S = [torch.zeros_like(a) for a in alphas]
    D = [[torch.zeros_like(a) for a in group] for group in groups]
    Ls: list = [None] * n
    for j in reversed(range(n)):
        # 1. the trunk's cell j: pull u and v back to α_j and to the cell's inputs, then free it
        group = list(groups[j])
        ins = [r[1] for r in roots[j] if r is not None]
        for acc, cot, last in ((G, U, V[j + 1] is None), (S, V, True)):
            if cot[j + 1] is None:
                continue
            gs = torch.autograd.grad(outs[j], group + ins, cot[j + 1], retain_graph=not last, allow_unused=True)
            for a, g in zip(group, gs):
                if g is not None:
                    acc[index[id(a)]] += g
            for (k, _), g in zip([r for r in roots[j] if r is not None], gs[len(group):]):
                _add(cot, k, g)
        outs[j] = roots[j] = None
        # 2. pass j: the network without cell j, from the trunk's inputs of cell j
        b0 = _leaf(st[j - 1]) if j >= 2 else st[max(j - 1, 0)]
        b1 = _leaf(st[j]) if j >= 1 else st[0]
        with supernet.ablated(j, mode=ablation, random_weights=None if rand is None else rand[j]):
            Lj = F.cross_entropy(supernet.forward_from(j, b0, b1), y)
        bins = [(k, t) for k, t in ((j - 1, b0), (j, b1)) if j >= 1 and t.requires_grad]
        gs = torch.autograd.grad(Lj, alphas + [t for _, t in bins], allow_unused=True)
        for k, g in enumerate(gs[: len(alphas)]):
            if g is not None:
                S[k] += g
        for m, a in enumerate(groups[j]):
            g = gs[index[id(a)]]
            if g is not None:
                D[j][m] = g  # nonzero only where α_j still enters pass j (random ablation with β)
        for (k, _), g in zip(bins, gs[len(alphas):]):
            _add(V, k, g)
        Ls[j] = Lj.detach()
        del Lj, gs
    return L.detach(), Ls, G, S, D, metrics


def _cacheable(supernet, batch) -> bool:
    """The pass tree needs a supernet that can start at a cell and the plain cross-entropy loss."""
    from dnas.supernet import Supernet

    return (
        hasattr(supernet, "cells_forward")
        and type(supernet).loss is Supernet.loss
        and isinstance(batch, (tuple, list))
        and len(batch) == 2
    )


def _separate_passes(supernet, batch: Any, groups, ablation: str):
    """L, (L_j), G, S, D from n + 1 separate forward/backward passes (any supernet with ``ablated``)."""
    alphas = supernet.arch_parameters()
    index = {id(a): k for k, a in enumerate(alphas)}
    out = supernet.loss(batch)
    metrics = {f"val_{k}": v.detach() for k, v in out.items()}
    L = out.pop("loss")
    del out  # nothing else may keep the graph: autograd.grad frees only the part leading to α
    G = _grad(L, alphas)  # ∇_α L_CE(C)
    L = L.detach()  # the full graph is gone here
    S = [torch.zeros_like(a) for a in alphas]
    D: list[list[torch.Tensor]] = []
    Ls = []
    for j, group in enumerate(groups):
        with supernet.ablated(j, mode=ablation):
            Lj = supernet.loss(batch)["loss"]
        gj = _grad(Lj, alphas)  # ∇_α L_CE(C \ {C_j}); this graph is freed before the next
        S = [s + g for s, g in zip(S, gj)]
        D.append([gj[index[id(a)]] for a in group])
        Ls.append(Lj.detach())
        del Lj, gj  # free this graph (also its part not leading to α) before the next pass
    return L, Ls, G, S, D, metrics


def shapley_grads(supernet, batch: Any, w01: float, wAB: float, ablation: str = "input", cached: bool | None = None):
    """Per-cell ∇_{α_i} L_T^i (D-DARTS eq. (4.2)–(4.5)) with one graph alive at a time (see module doc).

    Args:
        supernet: a supernet with one α group per cell and ``ablated``.
        batch: the validation batch ``(x, y)``.
        w01: weight of the zero-one loss (eq. (4.5)).
        wAB: weight of the ablation loss (eq. (4.5)).
        ablation: ``input`` or ``random`` (see ``DartsSupernet.ablated``).
        cached: run the pass tree (passes start from the full network's cell inputs); None: where
            the supernet allows it (``cells_forward`` and the plain cross-entropy loss), else n + 1
            separate passes. Both give the same gradient.

    Returns:
        (grads, metrics): ``grads[i]`` lists the gradients of cell i's α (``arch_groups()`` order).
    """
    groups = _cell_groups(supernet)
    alphas = supernet.arch_parameters()
    index = {id(a): k for k, a in enumerate(alphas)}
    n = len(groups)
    if cached is None:
        cached = _cacheable(supernet, batch)
    run = _cached_passes if cached else _separate_passes
    L, Ls, G, S, D, metrics = run(supernet, batch, groups, ablation)
    M = L - torch.stack(Ls)  # D-DARTS eq. (4.2)
    m = M.mean()
    nonzero = m != 0
    m_safe = torch.where(nonzero, m, torch.ones_like(m))
    on = nonzero.to(m.dtype)
    grads, l01s = [], []
    for i, group in enumerate(groups):
        l01 = zero_one_loss(group)  # FairDARTS eq. (3.1) on cell i's α
        g01 = torch.autograd.grad(l01, group)
        l01s.append(l01.detach())
        cell = []
        for a, d, g_01 in zip(group, D[i], g01):
            Gi, Si = G[index[id(a)]], S[index[id(a)]]
            # ∇_i L_AB^i of eq. (4.3), quotient rule on M_i / m (module docstring)
            g_ab = ((Gi - d) * m - M[i] * (Gi - Si / n)) / m_safe**2 * on
            cell.append(Gi + w01 * g_01 + wAB * g_ab)  # D-DARTS eq. (4.4), (4.5)
        grads.append(cell)
    l_ab = ablation_loss(M)  # eq. (4.3), for the history
    metrics.update(
        zero_one=w01 * torch.stack(l01s).mean(),
        ablation_mean_mc=m,
        ablation_spread=l_ab.abs().mean(),  # mean |L_AB^i| (the mean of L_AB^i itself is 0)
    )
    return grads, metrics


def shapley_grads_naive(supernet, batch: Any, w01: float, wAB: float, ablation: str = "input"):
    """The reference: eq. (4.2)–(4.5) written out on one graph holding all n + 1 passes, then n
    separate ``autograd.grad`` calls of L_T^i w.r.t. α_i. Exact but n + 1 graphs alive at once."""
    groups = _cell_groups(supernet)
    L = supernet.loss(batch)["loss"]
    Ls = []
    for j in range(len(groups)):
        with supernet.ablated(j, mode=ablation):
            Ls.append(supernet.loss(batch)["loss"])
    l_ab = ablation_loss(L - torch.stack(Ls))  # eq. (4.2), (4.3)
    grads = []
    for i, group in enumerate(groups):
        total = L + w01 * zero_one_loss(group) + wAB * l_ab[i]  # eq. (4.4), (4.5)
        grads.append(list(torch.autograd.grad(total, group, retain_graph=True, allow_unused=True)))
    return grads


@register_strategy("shapley")
class Shapley(FairLossMixin, GradientStrategy):
    """D-DARTS search: sigmoid relaxation (as FairDARTS), per-cell α steps on L_T^i (eq. 4.5)."""

    Config = ShapleyConfig
    needs = frozenset({"alpha", "data", "alpha_per_cell", "ablation"})
    relaxation = "sigmoid"

    def optimizers(self, supernet) -> Optimizers:
        _cell_groups(supernet)  # fail before any work if the space has no per-cell α
        return super().optimizers(supernet)

    def arch_step(self, supernet, train_batch, val_batch, state):
        c = self.config
        with supernet.grad_only(supernet.arch_parameters()):  # every pass differentiates α only
            grads, metrics = shapley_grads(supernet, val_batch, c.w01, c.wAB, c.ablation)
        for (key, group), cell in zip(supernet.arch_groups().items(), grads):
            for a, g in zip(group, cell):
                a.grad = g
            state.optimizers.arch[key].step()  # cell i's own optimizer moves α_i only
        return metrics
