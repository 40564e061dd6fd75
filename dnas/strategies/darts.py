"""DARTS (Liu et al., ICLR 2019): bilevel search, first or second order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from dnas.engine.callbacks import LoopState
from dnas.engine.distributed import average_
from dnas.engine.loop import GradientConfig, GradientStrategy
from dnas.registry import register_strategy


@dataclass
class DartsConfig(GradientConfig):
    order: Literal[1, 2] = 1  # 2 = unrolled second-order approximation, eq. (2.9)
    xi: float | None = None  # virtual step size ξ; None = the current weight learning rate (as DARTS)
    beta_decay: float = 0.0  # β-DARTS: weight λ of the Beta-Decay term added to the α loss; 0 = off
    beta_decay_schedule: Literal["constant", "linear"] = "constant"  # linear: λ · epoch / epochs (β-DARTS ramps λ up)

    def check(self):
        if self.beta_decay < 0:
            return "beta_decay must be >= 0"
        return super().check()


def beta_decay_loss(supernet) -> torch.Tensor:
    """β-DARTS (Ye et al., CVPR 2022), Beta-Decay regularisation: L_Beta = (1/|E|) Σ_e log Σ_k exp(α_e,k),
    the mean over decisions (edges) of the log-sum-exp of their α. Its weight λ is constant or, as in
    the paper, ramped up linearly (``beta_decay_schedule``; the authors' code: λ = 50 · epoch / 100)."""
    names = [d.name for d in supernet.space.decisions()]
    return torch.stack([torch.logsumexp(supernet.decision_alpha(n), dim=-1) for n in names]).mean()


def unrolled_arch_grads(strategy: GradientStrategy, supernet, train_batch: Any, val_batch: Any, xi: float, state: LoopState):
    """DARTS eq. (2.9): ∇_α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α),
    w' = w − ξ ∇_w L_train(w, α); the Hessian-vector product by central finite differences with
    ε = 0.01 / ‖∇_{w'} L_val‖. The weights are restored bit for bit afterwards."""
    weights = [p for p in supernet.weight_parameters() if p.requires_grad]
    alphas = supernet.arch_parameters()
    backup = [w.detach().clone() for w in weights]
    with supernet.grad_only(weights):
        g_train = torch.autograd.grad(supernet.loss(train_batch)["loss"], weights, allow_unused=True)
    average_(g_train)  # data-parallel: every gradient below is the mean over ranks
    with torch.no_grad():
        for w, g in zip(weights, g_train):
            if g is not None:
                w.sub_(xi * g)  # w' = w − ξ ∇_w L_train(w, α)
    total, metrics = strategy.arch_loss(supernet, val_batch, state)
    grads = torch.autograd.grad(total, alphas + weights, allow_unused=True)
    d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads[: len(alphas)])]
    d_w = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads[len(alphas) :])]
    average_(d_alpha + d_w)
    eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in d_w)).clamp_min(1e-12)

    def alpha_grad_at(sign: float):
        with torch.no_grad():
            for w, b, v in zip(weights, backup, d_w):
                w.copy_(b + sign * eps * v)  # w± = w ± ε ∇_{w'} L_val
        with supernet.grad_only(alphas):
            gs = torch.autograd.grad(supernet.loss(train_batch)["loss"], alphas, allow_unused=True)
        gs = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, gs)]
        average_(gs)
        return gs

    g_plus, g_minus = alpha_grad_at(1.0), alpha_grad_at(-1.0)
    with torch.no_grad():
        for w, b in zip(weights, backup):
            w.copy_(b)
    hvp = [(p - m) / (2 * eps) for p, m in zip(g_plus, g_minus)]
    return [da - xi * h for da, h in zip(d_alpha, hvp)], metrics


@register_strategy("darts")
class Darts(GradientStrategy):
    """Bilevel DARTS (eq. 2.8): α on the val half, w on the train half; softmax relaxation."""

    Config = DartsConfig
    needs = frozenset({"alpha", "data"})

    def loss_terms(self, supernet, state: LoopState) -> dict[str, torch.Tensor]:
        c = self.config
        if not c.beta_decay:
            return {}
        w = c.beta_decay * (state.epoch / max(c.epochs, 1) if c.beta_decay_schedule == "linear" else 1.0)
        return {"beta_decay": w * beta_decay_loss(supernet)}  # β-DARTS: L_val + λ L_Beta

    def arch_step(self, supernet, train_batch, val_batch, state: LoopState):
        if self.config.order == 1:
            return super().arch_step(supernet, train_batch, val_batch, state)
        opt = state.optimizers
        xi = self.config.xi if self.config.xi is not None else opt.weights.param_groups[0]["lr"]
        grads, metrics = unrolled_arch_grads(self, supernet, train_batch, val_batch, xi, state)
        for a, g in zip(supernet.arch_parameters(), grads):
            a.grad = g
        for o in opt.arch.values():
            o.step()
        return metrics
