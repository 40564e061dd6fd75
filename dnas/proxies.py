"""Data-agnostic performance proxies S(θ̃) for DARIO (thesis Table 6.1), registered by name.

Each proxy takes ``theta`` (the T stepped parameter tensors θ̃^a) and ``grads`` (∂R_SF/∂θ^a, the
synflow gradients of the same step) and returns a scalar the search **minimises** (a strategy may
flip the sign). L0 counts non-zero entries: it has no gradient w.r.t. α and only ranks samples.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from dnas.errors import DnasError
from dnas.registry import did_you_mean

Tensors = Sequence[torch.Tensor]
#: name -> f(theta, grads, c) -> scalar; ``c`` is the composite's coefficient
PROXIES: dict[str, Callable[[Tensors, Tensors, float], torch.Tensor]] = {}


def register_proxy(name: str):
    def deco(fn):
        PROXIES[name] = fn
        return fn

    return deco


def get_proxy(name: str) -> Callable[[Tensors, Tensors, float], torch.Tensor]:
    if name not in PROXIES:
        raise DnasError(f"unknown proxy '{name}'{did_you_mean(name, PROXIES)}; choose one of: {', '.join(PROXIES)}")
    return PROXIES[name]


def _mean_norm(theta: Tensors, p: int) -> torch.Tensor:
    if p == 0:
        return torch.stack([(t != 0).sum().to(t.dtype) for t in theta]).mean()  # Table 6.1: L0
    return torch.stack([torch.linalg.vector_norm(t, p) for t in theta]).mean()  # Table 6.1: L1, L2


@register_proxy("l0")
def l0(theta, grads=(), c=1.0):
    """Mean over the T tensors of their L0 norm (non-zero count)."""
    return _mean_norm(theta, 0)


@register_proxy("l1")
def l1(theta, grads=(), c=1.0):
    """Mean over the T tensors of their L1 norm."""
    return _mean_norm(theta, 1)


@register_proxy("l2")
def l2(theta, grads=(), c=1.0):
    """Mean over the T tensors of their L2 norm."""
    return _mean_norm(theta, 2)


@register_proxy("synflow")
def synflow(theta, grads, c=1.0):
    """``Σ_a Σ (∂R_SF/∂θ^a ⊙ θ̃^a)`` (Table 6.1; classic synflow with the strategy's ``abs_params``)."""
    return sum((g * t).sum() for g, t in zip(grads, theta))


@register_proxy("synflow_norm")
def synflow_norm(theta, grads, c=1.0):
    """Synflow divided by the number of parameters N (Table 6.1)."""
    return synflow(theta, grads) / sum(t.numel() for t in theta)


@register_proxy("var")
def var(theta, grads=(), c=1.0):
    """``S_var = 1/(N−1) Σ (θ̃_n − θ̄)²`` over all N parameters (Table 6.1; DARIO's proxy, minimised)."""
    n = sum(t.numel() for t in theta)
    mean = sum(t.sum() for t in theta) / n
    return sum(((t - mean) ** 2).sum() for t in theta) / (n - 1)


@register_proxy("l0-var")
def l0_var(theta, grads=(), c=1.0):
    """``L0 − c1·S_var`` (Table 6.1)."""
    return l0(theta) - c * var(theta)


@register_proxy("l1-var")
def l1_var(theta, grads=(), c=1.0):
    """``L1 − c2·S_var`` (Table 6.1)."""
    return l1(theta) - c * var(theta)


@register_proxy("l0+l1")
def l0_l1(theta, grads=(), c=1.0):
    """``L0 + c3·L1`` (Table 6.1)."""
    return l0(theta) + c * l1(theta)
