"""Data-agnostic performance proxies S(θ̃) for DARIO (thesis Table 6.1), registered by name.

Each proxy takes ``theta`` (the T stepped parameter tensors θ̃^a) and ``grads`` (∂R_SF/∂θ^a, the
synflow gradients of the same step) and returns a scalar the search **minimises** (a strategy may
flip the sign). L0 counts non-zero entries: it has no gradient w.r.t. α and only ranks samples.
"""
from __future__ import annotations

import weakref
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


# -- closed forms in θ and g (θ̃ = θ − γ g never materialised: 86 M floats fewer per step) ---------
#: name -> f(theta, grads, gamma, c), equal to PROXIES[name]([θ − γ g], grads, c) (tested)
STEPPED: dict[str, Callable[[Tensors, Tensors, float, float], torch.Tensor]] = {}


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a · b as a float64 scalar. Synflow gradients of deep conv nets on |θ| reach 1e22, whose
    squares overflow float32: such a dot is taken again in float64."""
    d = torch.dot(a.reshape(-1), b.reshape(-1))
    if d.dtype != torch.float64 and not torch.isfinite(d):
        d = torch.dot(a.reshape(-1).double(), b.reshape(-1).double())
    return d.double()


_CONST: dict[int, tuple] = {}  # id(θ) -> (weakref to θ, version, Σθ, Σθ²)


def _theta_sums(t: torch.Tensor) -> tuple[float, float]:
    """Σθ and Σθ² of a fixed parameter, cached while it is the same, unmodified tensor."""
    hit = _CONST.get(id(t))
    if hit is None or hit[0]() is not t or hit[1] != t._version:
        d = t.detach()
        hit = _CONST[id(t)] = (weakref.ref(t), t._version, float(d.sum()), float(_dot(d, d)))
        if len(_CONST) > 100_000:  # models come and go: never grow without bound
            _CONST.clear()
    return hit[2], hit[3]


class _SteppedVar(torch.autograd.Function):
    """``S_var(θ − γg)`` and its gradient w.r.t. the g, with one new tensor per parameter."""

    @staticmethod
    def forward(ctx, gamma, n, *tg):
        theta, grads = tg[0::2], tg[1::2]
        sums = [_theta_sums(t) for t in theta]
        s_t = sum(a for a, _ in sums) - gamma * sum(float(g.sum()) for g in grads)
        sq = sum(b - 2 * gamma * float(_dot(t.detach(), g)) + gamma**2 * float(_dot(g, g)) for (_, b), t, g in zip(sums, theta, grads))
        ctx.gamma, ctx.n, ctx.mean = gamma, n, s_t / n
        ctx.save_for_backward(*tg)
        return torch.tensor((sq - s_t * s_t / n) / (n - 1), dtype=torch.float64)  # Table 6.1: 1/(N−1) Σ (θ̃_n − θ̄)²

    @staticmethod
    def backward(ctx, go):
        tg = ctx.saved_tensors
        k = -2 * ctx.gamma * float(go) / (ctx.n - 1)  # ∂S/∂g_n = −2γ (θ̃_n − θ̄) / (N−1)
        out = [None, None]
        for t, g in zip(tg[0::2], tg[1::2]):
            out += [None, torch.add(t.detach(), g, alpha=-ctx.gamma).sub_(ctx.mean).mul_(k)]
        return tuple(out)


def _var_stepped(theta, grads, gamma, c=1.0):
    """``S_var(θ − γg)`` from Σθ, Σθ² (cached), Σg, Σθg, Σg²: θ̃ is never materialised."""
    n = sum(t.numel() for t in theta)
    return _SteppedVar.apply(gamma, n, *[x for pair in zip(theta, grads) for x in pair])


def _synflow_stepped(theta, grads, gamma, c=1.0):
    return sum(_dot(g, t.detach()) - gamma * _dot(g, g) for t, g in zip(theta, grads))  # Σ g ⊙ (θ − γ g)


STEPPED["var"] = _var_stepped
STEPPED["synflow"] = _synflow_stepped
STEPPED["synflow_norm"] = lambda theta, grads, gamma, c=1.0: _synflow_stepped(theta, grads, gamma) / sum(t.numel() for t in theta)


def stepped_proxy(name: str, theta: Tensors, grads: Tensors, gamma: float, c: float = 1.0) -> torch.Tensor:
    """``S(θ − γ g)``: a closed form where one exists, else ``PROXIES[name]`` on the stepped tensors."""
    if name in STEPPED:
        return STEPPED[name](theta, grads, gamma, c)
    return get_proxy(name)([t.detach() - gamma * g for t, g in zip(theta, grads)], grads, c)


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
