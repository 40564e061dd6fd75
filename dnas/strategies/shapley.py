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

Peak memory is that of one forward/backward (as FairDARTS); the cost is n + 1 of them per α step.
The authors' code builds L_AB from ``.item()`` values, so α gets no gradient from it, and its
per-cell backward calls add every cell's gradient into every α; here each α_i gets exactly
∇_{α_i} L_T^i (checked against autograd of the formula in the tests). Their code also subtracts the
term (``− wAB · L_AB``); dnas follows the paper's sign (+).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from dnas.errors import DnasError
from dnas.registry import register_strategy
from dnas.strategies.fairdarts import FairLossMixin, zero_one_loss
from dnas.engine.loop import GradientConfig, GradientStrategy, Optimizers


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


def shapley_grads(supernet, batch: Any, w01: float, wAB: float, ablation: str = "input"):
    """Per-cell ∇_{α_i} L_T^i (D-DARTS eq. (4.2)–(4.5)) with one graph alive at a time (see module doc).

    Returns:
        (grads, metrics): ``grads[i]`` lists the gradients of cell i's α (``arch_groups()`` order).
    """
    groups = _cell_groups(supernet)
    alphas = supernet.arch_parameters()
    index = {id(a): k for k, a in enumerate(alphas)}
    n = len(groups)
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
