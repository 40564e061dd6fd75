"""Strategy ``proxy``: DARIO's single-level, data-free gate search (thesis §6.1, Algorithm 5).

One iteration: a batch of ones through the gated model, ``R_SF = Σ H`` (eq. 6.5); one synflow step
``θ̃(α) = θ − γ ∂R_SF/∂θ`` with ``create_graph`` so θ̃ depends on α (eq. 6.6); the proxy ``S(θ̃)``;
an AdamW step on α (problem 6.4). θ itself never changes. The authors' code updates θ in place,
so its variance proxy has no path to the gates; here ∂S/∂α is the proxy's true gradient.

All-ones inputs make every sample identical, and the model runs in eval mode (each sample's output
depends on that sample only), so ``R_SF`` over a batch of B ones is exactly B times ``R_SF`` of one:
dnas runs one sample and steps with ``γ·B``, an exact and B times cheaper equivalent.

``mode: random`` is the baseline with the same budget: ``warm_start + iters`` random α ~ N(0,1),
the best by the proxy is kept.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

import torch

from dnas.errors import DnasError
from dnas.strategies.proxies import get_proxy, stepped_proxy
from dnas.registry import register_strategy
from dnas.engine.loop import alpha_snapshot
from dnas.strategy import Strategy

if TYPE_CHECKING:
    from dnas.engine.run import Run
    from dnas.supernet import Supernet


@dataclass
class ProxyConfig:
    """Defaults: the DARIO code (AdamW lr 0.1 wd 0.01 cosine over 500 iterations, 100 warm-start
    samples, batch 32 of ones) and the thesis' threshold 0.65 (its code used 0.3)."""

    proxy: str = "var"
    maximize: bool = False  # maximise the proxy instead (var and the others are minimised)
    iters: int = 500
    warm_start: int = 100  # best of k random α ~ N(0,1); 0 keeps the supernet's α
    lr: float = 0.1
    weight_decay: float = 0.01
    gamma: float = 1e-3  # synflow step size γ (eq. 6.6); a dnas default, the thesis gives none
    batch_size: int = 32  # B ones: computed exactly as one sample with step γ·B
    abs_params: bool = False  # R_SF on |θ| (classic synflow); the equations use θ
    coef: float = 1.0  # c1/c2/c3 of the composite proxies
    threshold: float = 0.65
    mode: Literal["gradient", "random"] = "gradient"
    terms: dict = field(default_factory=dict)  # {name: {options}}: extra terms added to S (PROXY_TERMS)

    def check(self):
        if self.iters < 0 or self.warm_start < 0 or self.batch_size < 1:
            return "iters and warm_start must be >= 0, batch_size >= 1"
        if self.mode == "random" and self.iters + self.warm_start < 1:
            return "mode random needs iters + warm_start >= 1"
        get_proxy(self.proxy)
        unknown = [n for n in self.terms if n not in PROXY_TERMS]
        if unknown:
            return f"unknown proxy term {unknown[0]!r}; choose among: {', '.join(PROXY_TERMS) or 'none registered'}"
        return None


# -- extra proxy terms (e.g. ``calibration``, a data-aware term): one hook, used by the search below ---------
#: name -> factory(supernet, options, alpha_grad) -> term; ``term(supernet)`` is a scalar differentiable
#: w.r.t. α, minimised with S; ``alpha_grad()`` gives ∂S/∂α at the current α (to scale a term against).
#: A strategy config enables them as ``terms: {name: {options}}``.
PROXY_TERMS: dict[str, Callable[..., Callable[["Supernet"], torch.Tensor]]] = {}


def register_proxy_term(name: str):
    """Register a proxy-term factory under ``name`` (decorator)."""
    def deco(factory):
        PROXY_TERMS[name] = factory
        return factory

    return deco


def build_terms(supernet: "Supernet", cfg: ProxyConfig) -> list:
    """The term callables of ``cfg.terms``, built once per search."""
    def alpha_grad():
        return torch.autograd.grad(proxy_objective(supernet, cfg), supernet.arch_parameters(), allow_unused=True)

    return [PROXY_TERMS[name](supernet, dict(options or {}), alpha_grad) for name, options in cfg.terms.items()]


def add_terms(supernet: "Supernet", terms, s: torch.Tensor, grads: list | None = None):
    """``S + Σ term`` and, given ``grads`` (∂S/∂α), ``∂S/∂α + Σ ∂term/∂α``; unchanged without terms."""
    if not terms:
        return s, grads
    with torch.enable_grad():
        t = sum(term(supernet) for term in terms)
        if grads is not None:
            extra = torch.autograd.grad(t, supernet.arch_parameters(), allow_unused=True)
            grads = [g if e is None else g + e for g, e in zip(grads, extra)]
    return s + t.detach().to(s.dtype), grads


@contextmanager
def unfused_attention(model: torch.nn.Module):
    """timm's fused attention has no double backward on the CPU: use the plain path meanwhile."""
    mods = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in mods:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in mods:
            m.fused_attn = True


def proxy_objective(supernet: "Supernet", cfg: ProxyConfig, create_graph: bool = True) -> torch.Tensor:
    """``S(θ̃(α))`` for the supernet's current α; differentiable w.r.t. α when ``create_graph``."""
    named = [(n, p) for n, p in supernet.model.named_parameters() if p.requires_grad]
    if not named:
        raise DnasError("the model has no trainable parameters for the synflow step")
    dev = named[0][1].device
    x = torch.ones(1, *supernet.input_shape(), device=dev, dtype=named[0][1].dtype)  # Algorithm 5: ones
    if cfg.abs_params:
        theta = [p.detach().abs().requires_grad_() for _, p in named]
        out = supernet(x, params={n: t for (n, _), t in zip(named, theta)})
    else:
        theta = [p for _, p in named]
        out = supernet(x)
    r_sf = out.sum() * cfg.batch_size  # DARIO eq. (6.5): R_SF = Σ H over B identical samples
    grads = torch.autograd.grad(r_sf, theta, create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(theta, grads)]
    s = stepped_proxy(cfg.proxy, theta, grads, cfg.gamma, cfg.coef)  # S(θ̃), θ̃ = θ − γ ∂R_SF/∂θ: eq. (6.6), Table 6.1
    return -s if cfg.maximize else s


@register_strategy("proxy")
class ProxyStrategy(Strategy):
    """DARIO Algorithm 5: warm start, then gradient steps on α of a data-free proxy."""

    Config = ProxyConfig
    needs = frozenset({"alpha"})
    _terms: list = []  # the built ``terms`` of the current search

    def _sample(self, supernet, k: int, run, history, t0) -> None:
        """Set α to the best of ``k`` draws from N(0,1) (Algorithm 5's warm start / random search)."""
        alphas = supernet.arch_parameters()
        best, best_s = None, float("inf")
        for i in range(k):
            with torch.no_grad():
                for a in alphas:
                    a.normal_()
            with torch.enable_grad():
                s = float(add_terms(supernet, self._terms, proxy_objective(supernet, self.config, create_graph=False).detach())[0])
            if s < best_s:
                best, best_s = [a.detach().clone() for a in alphas], s
            self._record(supernet, run, history, len(history) + 1, {"phase": "sample", "proxy": s, "best": best_s}, t0)
        with torch.no_grad():
            for a, b in zip(alphas, best):
                a.copy_(b)

    def _record(self, supernet, run, history, step, extra, t0) -> None:
        c = self.config
        g = supernet.genotype("threshold", threshold=c.threshold)
        rec = {"epoch": step, **extra, "seconds": round(time.perf_counter() - t0, 3), "alphas": alpha_snapshot(supernet),
               "genotype": {k: list(v) for k, v in g.choices.items()}}
        history.append(rec)
        run.append_history(rec)

    def search(self, supernet: "Supernet", data, run: "Run"):
        from rich.progress import Progress

        c = self.config
        supernet.relaxation = "sigmoid"
        supernet.eval()  # dropout off; BatchNorm per sample (the all-ones batch equivalence)
        history: list = []
        t0 = time.perf_counter()
        with unfused_attention(supernet), Progress(console=run.console, disable=not run.progress, transient=True) as bar:
            self._terms = build_terms(supernet, c)
            if c.mode == "random":
                self._sample(supernet, c.warm_start + c.iters, run, history, t0)
            else:
                if c.warm_start:
                    self._sample(supernet, c.warm_start, run, history, t0)
                alphas = supernet.arch_parameters()
                opt = torch.optim.AdamW(alphas, lr=c.lr, weight_decay=c.weight_decay)
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(c.iters, 1))
                task = bar.add_task("proxy search", total=c.iters)
                for it in range(c.iters):
                    s = proxy_objective(supernet, c)
                    grads = torch.autograd.grad(s, alphas, allow_unused=True)  # ∂S(θ̃(α))/∂α, problem (6.4)
                    s, grads = add_terms(supernet, self._terms, s.detach(), grads)
                    for a, g in zip(alphas, grads):
                        a.grad = torch.zeros_like(a) if g is None else g
                    opt.step()
                    sched.step()
                    if not all(torch.isfinite(a).all() for a in alphas) or not torch.isfinite(s):
                        raise DnasError(f"the proxy search diverged at iteration {it + 1}; lower lr or gamma")
                    self._record(supernet, run, history, len(history) + 1, {"phase": "gradient", "proxy": float(s.detach())}, t0)
                    bar.update(task, advance=1)
        run.log(f"proxy search: {len(history)} proxy evaluations in {time.perf_counter() - t0:.1f}s")
        return supernet.genotype("threshold", threshold=c.threshold)
