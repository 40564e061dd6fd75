"""Strategy ``proxy``: DARIO's single-level, data-free gate search (thesis §6.1, Algorithm 5).

One iteration: a batch of ones through the gated model, ``R_SF = Σ H`` (eq. 6.5) on |θ| (eq. 6.5,
Table 6.1); one synflow step ``θ̃(α) = θ − γ ∂R_SF/∂θ`` that depends on α (eq. 6.6); the proxy
``S(θ̃)``; an AdamW step on α (problem 6.4). θ itself never changes. The authors' code updates θ in
place, so its variance proxy has no path to the gates; here ∂S/∂α is the proxy's true gradient.

∂S/∂α = Σ_θ (∂S/∂g)·(∂g/∂α) with g = ∂R_SF/∂θ is a mixed second derivative of R_SF along u = ∂S/∂g.
``alpha_grad: fd`` (default) takes it by a finite difference of ∂R_SF/∂α, as DARTS does for its
second-order step: ``(∂R_SF/∂α(θ + εu) − ∂R_SF/∂α(θ)) / ε``, ε = ``fd_eps``·‖θ‖/‖u‖ (within about
0.5 % of the exact gradient in float32 on a tiny ViT, tested). An iteration is two
forward/backward passes and no double backward (about 5 forward passes of the model);
``alpha_grad: exact`` differentiates through the gradient (``create_graph``), about twice the cost.

All-ones inputs make every sample identical, and the model runs in eval mode (each sample's output
depends on that sample only), so ``R_SF`` over a batch of B ones is exactly B times ``R_SF`` of one:
dnas runs one sample and steps with ``γ·B``, an exact and B times cheaper equivalent.

``precision: auto`` searches in float64 where R_SF's square overflows float32 (deep nets without
normalisation: a CNN's eval-mode BatchNorm passes no scale, and a ResNet-18 on |θ| gives R_SF ≈ 7e29).

``mode: random`` is the baseline with the same budget: ``warm_start + iters`` random α ~ N(0,1),
the best by the proxy is kept.

The strategy needs a supernet with α, a data-free input and a functional forward (the base
``Supernet`` offers both), so it runs on any such space, not only ``dario``.
"""
from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from dnas.engine.loop import Diverged, alpha_snapshot
from dnas.errors import DnasError
from dnas.registry import register_strategy
from dnas.strategies.proxies import get_proxy, stepped_proxy
from dnas.strategy import Strategy

if TYPE_CHECKING:
    from dnas.engine.run import Run
    from dnas.supernet import Supernet


@dataclass
class ProxyConfig:
    """Defaults: the DARIO code (AdamW lr 0.1 wd 0.01 cosine over 500 iterations, 100 warm-start
    samples, batch 32 of ones), the thesis' threshold 0.65 and R_SF on |θ| (eq. 6.5, Table 6.1)."""

    proxy: str = "var"
    maximize: bool = False  # maximise the proxy instead (var and the others are minimised)
    iters: int = 500
    warm_start: int = 100  # best of k random α ~ N(0,1); 0 keeps the supernet's α
    lr: float = 0.1
    weight_decay: float = 0.01
    gamma: float = 1e-3  # synflow step size γ (eq. 6.6); a dnas default, the thesis gives none
    batch_size: int = 32  # B ones: computed exactly as one sample with step γ·B
    abs_params: bool = field(default=True, metadata={
        "paper": "True: R_SF and the step on |θ| (thesis eq. 6.5, Table 6.1)",
        "code": "False: the authors' code runs the synflow step on the signed θ"})
    coef: float = 1.0  # c1/c2/c3 of the composite proxies
    threshold: float = field(default=0.65, metadata={
        "paper": "0.65 (the thesis' final models)", "code": "0.3 (the authors' code)"})
    mode: Literal["gradient", "random"] = "gradient"
    alpha_grad: Literal["fd", "exact"] = "fd"  # ∂S/∂α by a finite difference (2 passes) or double backward
    terms: dict = field(default_factory=dict)  # {name: {options}}: extra terms added to S (PROXY_TERMS)
    fd_eps: float = 3e-5  # ‖εu‖ / ‖θ‖: the finite difference's step, relative to the weights' norm
    precision: Literal["auto", "float32", "float64"] = "auto"  # auto: float64 where R_SF² overflows float32

    def check(self):
        if self.iters < 0 or self.warm_start < 0 or self.batch_size < 1:
            return "iters and warm_start must be >= 0, batch_size >= 1"
        if self.mode == "random" and self.iters + self.warm_start < 1:
            return "mode random needs iters + warm_start >= 1"
        if self.fd_eps <= 0:
            return "fd_eps must be > 0"
        if self.precision not in ("auto", "float32", "float64"):
            return f"precision must be auto, float32 or float64 (got {self.precision!r})"
        if not 0 < self.threshold < 1:
            return f"threshold must be in (0, 1): gates σ(α) lie there (got {self.threshold})"
        get_proxy(self.proxy)
        unknown = [n for n in self.terms if n not in PROXY_TERMS]
        if unknown:
            return f"unknown proxy term {unknown[0]!r}; choose among: {', '.join(PROXY_TERMS) or 'none registered'}"
        return None


# -- extra proxy terms (e.g. ``calibration``, a data-aware term): one hook, used by the search below ---------
#: name -> factory(supernet, options, alpha_grad) -> term; ``term(supernet)`` is a scalar differentiable
#: w.r.t. α, minimised with S; ``alpha_grad()`` gives ∂S/∂α at the current α (to scale a term against).
#: A strategy config enables them as ``terms: {name: {options}}``.
PROXY_TERMS: dict[str, Callable[..., Callable[[Supernet], torch.Tensor]]] = {}


def register_proxy_term(name: str):
    """Register a proxy-term factory under ``name`` (decorator)."""
    def deco(factory):
        PROXY_TERMS[name] = factory
        return factory

    return deco


def build_terms(supernet: Supernet, cfg: ProxyConfig) -> list:
    """The term callables of ``cfg.terms``, built once per search."""
    def alpha_grad():
        return proxy_step(supernet, cfg)[1]

    return [PROXY_TERMS[name](supernet, dict(options or {}), alpha_grad) for name, options in cfg.terms.items()]


def add_terms(supernet: Supernet, terms, s: torch.Tensor, grads: list | None = None):
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


_THETA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # supernet -> (key, names, leaves)


def _theta(supernet: Supernet, cfg: ProxyConfig) -> tuple[list[str], list[torch.Tensor]]:
    """Names and leaf tensors of the weights the synflow step runs on: |θ| (default) or θ.
    θ never changes during a search: the leaves are built once and reused while it stays so."""
    named = supernet.named_weight_parameters()
    if not named:
        raise DnasError("the model has no trainable parameters for the synflow step")
    key = (cfg.abs_params, tuple((id(p), p._version, p.dtype, p.device) for _, p in named))
    hit = _THETA.get(supernet)
    if hit is None or hit[0] != key:
        if cfg.abs_params:  # DARIO eq. (6.5), Table 6.1: synflow on |θ|
            leaves = [p.detach().abs().requires_grad_() for _, p in named]
        else:
            leaves = [p.detach().requires_grad_() for _, p in named]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach().float()) for t in leaves])))
        hit = _THETA[supernet] = (key, [n for n, _ in named], leaves, norm, [])
    return hit[1], hit[2]


def _theta_norm(supernet: Supernet) -> float:
    return _THETA[supernet][3]


def _buffers(supernet: Supernet, theta: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors shaped like θ, allocated once per search (fresh large tensors cost page faults)."""
    bufs = _THETA[supernet][4]
    if not bufs:
        bufs.extend(torch.empty_like(t, requires_grad=False) for t in theta)
    return bufs


def _var_shift(theta, g, gamma: float, sign: float, step: float, out: list[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """S_var(θ − γg) (Table 6.1) and ``out = θ + εu`` in place, with u = ∂S/∂g and ‖εu‖ = ``step``;
    returns (S, 1/ε), 1/ε = 0 where S has no gradient.

    u_n = −2γ (θ̃_n − θ̄)/(N − 1), so ‖u‖ = 2γ·sqrt(S/(N − 1)), εu = −step·(θ̃ − θ̄)/‖θ̃ − θ̄‖ and
    ‖θ̃ − θ̄‖² = (N − 1)·S."""
    from dnas.strategies.proxies import _dot, _theta_sums

    n = sum(t.numel() for t in theta)
    sums = [_theta_sums(t) for t in theta]
    s_t = sum(a for a, _ in sums) - gamma * sum(float(d.sum()) for d in g)
    sq = sum(b - 2 * gamma * float(_dot(t.detach(), d)) + gamma**2 * float(_dot(d, d)) for (_, b), t, d in zip(sums, theta, g))
    var = (sq - s_t * s_t / n) / (n - 1)  # Table 6.1: 1/(N−1) Σ (θ̃_n − θ̄)²
    if not var > 0 or gamma == 0:
        return torch.tensor(sign * var, dtype=torch.float64), 0.0
    c = -sign * step / (var * (n - 1)) ** 0.5
    # θ + εu = θ + c (θ − γg − θ̄) = (1 + c)(θ − cγ/(1 + c) g) − c θ̄: two passes, no new tensor
    shift = torch.tensor(-c * s_t / n, dtype=out[0].dtype, device=out[0].device)
    with torch.no_grad():
        for o, t, d in zip(out, theta, g):
            torch.add(t.detach(), d, alpha=-c * gamma / (1 + c), out=o)
            torch.add(shift, o, alpha=1 + c, out=o)
    return torch.tensor(sign * var, dtype=torch.float64), 2 * abs(gamma) * (var / (n - 1)) ** 0.5 / step


def proxy_objective(supernet: Supernet, cfg: ProxyConfig, create_graph: bool = True) -> torch.Tensor:
    """``S(θ̃(α))`` for the supernet's current α; differentiable w.r.t. α when ``create_graph``."""
    names, theta = _theta(supernet, cfg)
    x = supernet.data_free_input(1)  # Algorithm 5: ones
    out = supernet.functional_forward(x, dict(zip(names, theta)))
    r_sf = out.sum() * cfg.batch_size  # DARIO eq. (6.5): R_SF = Σ H over B identical samples
    grads = torch.autograd.grad(r_sf, theta, create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(theta, grads)]
    s = stepped_proxy(cfg.proxy, theta, grads, cfg.gamma, cfg.coef)  # S(θ̃), θ̃ = θ − γ ∂R_SF/∂θ: eq. (6.6), Table 6.1
    return -s if cfg.maximize else s


def proxy_step(supernet: Supernet, cfg: ProxyConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``S(θ̃(α))`` and ``∂S/∂α`` (problem 6.4), by ``cfg.alpha_grad``: fd (two passes) or exact."""
    alphas = supernet.arch_parameters()
    if cfg.alpha_grad == "exact":
        s = proxy_objective(supernet, cfg)
        grads = torch.autograd.grad(s, alphas, allow_unused=True)
        return s.detach(), [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
    names, theta = _theta(supernet, cfg)
    x = supernet.data_free_input(1)
    r_sf = supernet.functional_forward(x, dict(zip(names, theta))).sum() * cfg.batch_size  # eq. (6.5)
    both = torch.autograd.grad(r_sf, theta + alphas, allow_unused=True)
    g = [torch.zeros_like(t) if d is None else d for t, d in zip(theta, both[:len(theta)])]
    ra = [torch.zeros_like(a) if d is None else d for a, d in zip(alphas, both[len(theta):])]
    step = cfg.fd_eps * _theta_norm(supernet)
    if cfg.proxy == "var":  # closed form: no autograd, no new parameter-sized tensors
        s, inv_eps = _var_shift(theta, g, cfg.gamma, -1.0 if cfg.maximize else 1.0, step, _buffers(supernet, theta))
        if not inv_eps:
            return s, [torch.zeros_like(a) for a in alphas]
        return s, _fd_alpha_grad(supernet, x, names, _buffers(supernet, theta), ra, inv_eps, cfg)
    g_leaf = [d.requires_grad_() for d in g]
    with torch.enable_grad():
        s = stepped_proxy(cfg.proxy, [t.detach() for t in theta], g_leaf, cfg.gamma, cfg.coef)  # eq. (6.6), Table 6.1
        if cfg.maximize:
            s = -s
        u = torch.autograd.grad(s, g_leaf, allow_unused=True) if s.requires_grad else [None] * len(g)
    u = [torch.zeros_like(t) if d is None else d for t, d in zip(theta, u)]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in u])))
    if norm == 0 or not torch.isfinite(torch.tensor(norm)):
        return s.detach(), [torch.zeros_like(a) for a in alphas]  # e.g. L0: no gradient w.r.t. α
    eps = step / norm
    shifted = _buffers(supernet, theta)
    with torch.no_grad():
        torch._foreach_copy_(shifted, [t.detach() for t in theta])
        torch._foreach_add_(shifted, u, alpha=eps)  # θ + εu
    return s.detach(), _fd_alpha_grad(supernet, x, names, shifted, ra, 1 / eps, cfg)


def _fd_alpha_grad(supernet, x, names, shifted, ra, inv_eps: float, cfg) -> list[torch.Tensor]:
    """∂S/∂α = ∂/∂α (gᵀu) = (∂R_SF/∂α(θ + εu) − ∂R_SF/∂α(θ)) / ε, u = ∂S/∂g held fixed."""
    alphas = supernet.arch_parameters()
    r2 = supernet.functional_forward(x, dict(zip(names, shifted))).sum() * cfg.batch_size  # eq. (6.5) at θ + εu
    ra2 = torch.autograd.grad(r2, alphas, allow_unused=True)
    return [torch.zeros_like(a) if b is None else (b - a0) * inv_eps for a, a0, b in zip(alphas, ra, ra2)]


def float64_reason(supernet: Supernet, cfg: ProxyConfig) -> str | None:
    """Why to take the proxy in float64, or None (float32, or the supernet is float64 already): asked
    (``precision: float64``), or ``auto`` and R_SF on the batch of ones past the square root of float32's
    largest value (its square, the scale of S_var and of ∂S/∂α, overflows) or not finite. Deep nets without
    normalisation reach that: eval-mode BatchNorm on |θ| passes no scale, and a ResNet-18 gives 7e29, where
    a float32 search diverges."""
    if cfg.precision == "float32" or next(iter(supernet.parameters())).dtype == torch.float64:
        return None
    if cfg.precision == "float64":
        return "strategy.precision=float64"
    names, theta = _theta(supernet, cfg)
    with torch.no_grad():
        r = float(supernet.functional_forward(supernet.data_free_input(1), dict(zip(names, theta))).sum()) * cfg.batch_size
    if math.isfinite(r) and abs(r) <= torch.finfo(torch.float32).max ** 0.5:
        return None
    return f"R_SF is {r:.3g} on this model, {'whose square overflows float32' if math.isfinite(r) else 'not finite in float32'}"


@register_strategy("proxy")
class ProxyStrategy(Strategy):
    """DARIO Algorithm 5: warm start, then gradient steps on α of a data-free proxy."""

    Config = ProxyConfig
    needs = frozenset({"alpha", "functional", "data_free"})
    _terms: tuple = ()  # the built ``terms`` of the current search

    @staticmethod
    def _gated(supernet) -> bool:
        """Gates kept above a threshold (DARIO, σ relaxation), else the space's own parser."""
        return supernet.space.default_parser == "threshold"

    def _genotype(self, supernet):
        if self._gated(supernet):
            return supernet.genotype("threshold", threshold=self.config.threshold)
        return supernet.genotype()

    def _sample(self, supernet, k: int, run, history, t0, bar=None) -> None:
        """Set α to the best of ``k`` draws from N(0,1) (Algorithm 5's warm start / random search)."""
        alphas = supernet.arch_parameters()
        task = bar.add_task("warm start", total=k) if bar is not None else None
        best, best_s = None, float("inf")
        values = []  # the finite proxy values, to tell whether the proxy sees the gates at all
        for i in range(k):
            with torch.no_grad():
                for a in alphas:
                    a.normal_()
            failed = None
            try:
                with torch.enable_grad():
                    s = float(add_terms(supernet, self._terms, proxy_objective(supernet, self.config, create_graph=False).detach())[0])
            except Diverged as e:  # a sample whose network overflows (e.g. exp in an activation cell): skipped, recorded
                s, failed = float("inf"), str(e)
            if s < float("inf"):
                values.append(s)
            if s < best_s:
                best, best_s = [a.detach().clone() for a in alphas], s
            extra = {"phase": "sample", "proxy": s if failed is None else None, "best": best_s if best is not None else None}
            self._record(supernet, run, history, len(history) + 1, {**extra, **({"error": failed} if failed else {})}, t0)
            if bar is not None:
                bar.update(task, advance=1, description=f"warm start: best proxy {best_s:.4g}")
        if best is None:
            signed = ", synflow on signed weights (dnas prune --signed-synflow, strategy.abs_params=false)" \
                if self.config.abs_params else ""
            raise DnasError(f"every one of the {k} random α samples gave a non-finite proxy "
                            f"({history[-1].get('error', 'NaN/inf')}); lower strategy.gamma{signed}, or use another space option"
                            f"{self._wider(supernet)}")
        if len(values) >= 3 and max(values) - min(values) <= 1e-9 * max(abs(v) for v in values):
            hint = "synflow on signed weights (dnas prune --signed-synflow, or strategy.abs_params=false), " \
                if self.config.abs_params else ""
            raise DnasError(f"the proxy is the same for all {len(values)} random gate settings ({values[0]:.4g}): on this "
                            f"model it does not see the gates, so the search would prune at random; try {hint}trained "
                            f"weights (--weights, or space.weights) or another proxy (--proxy, or strategy.proxy)")
        with torch.no_grad():
            for a, b in zip(alphas, best):
                a.copy_(b)

    def _record(self, supernet, run, history, step, extra, t0) -> None:
        g = self._genotype(supernet)
        rec = {"epoch": step, **extra, "seconds": round(time.perf_counter() - t0, 3), "alphas": alpha_snapshot(supernet),
               "genotype": {k: list(v) for k, v in g.choices.items()}}
        history.append(rec)
        run.append_history(rec)

    def search(self, supernet: Supernet, data, run: Run, callbacks=None):
        self.refuse_callbacks(callbacks)
        if self._gated(supernet):
            supernet.relaxation = "sigmoid"  # independent gates (DARIO eq. 6.1, 6.2)
        supernet.eval()  # dropout off; BatchNorm per sample (the all-ones batch equivalence)
        dtype = next(iter(supernet.parameters())).dtype
        wide = self._float64(supernet, run)
        try:
            return self._search(supernet, run)
        finally:
            if wide:
                supernet.to(dtype)

    def _float64(self, supernet: Supernet, run: Run) -> bool:
        """Search in float64 where :func:`float64_reason` says so (the supernet converted; ``search``
        converts it back)."""
        reason = float64_reason(supernet, self.config)
        if reason is None:
            return False
        if self.config.precision == "auto":
            run.log(f"proxy search in float64: {reason} (strategy.precision=float32 to force it)")
        supernet.double()
        return True

    def _search(self, supernet: Supernet, run: Run):
        from rich.progress import Progress

        c = self.config
        history: list = []
        t0 = time.perf_counter()
        # only the exact α-gradient differentiates through a gradient (no fused double backward on the CPU)
        unfused = unfused_attention(supernet) if c.alpha_grad == "exact" else nullcontext()
        with unfused, Progress(console=run.console, disable=not run.progress, transient=True) as bar:
            self._terms = build_terms(supernet, c)
            if c.mode == "random":
                self._sample(supernet, c.warm_start + c.iters, run, history, t0, bar)
            else:
                if c.warm_start:
                    self._sample(supernet, c.warm_start, run, history, t0, bar)
                alphas = supernet.arch_parameters()
                opt = torch.optim.AdamW(alphas, lr=c.lr, weight_decay=c.weight_decay)
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(c.iters, 1))
                task = bar.add_task("proxy search", total=c.iters)
                for it in range(c.iters):
                    try:
                        s, grads = proxy_step(supernet, c)  # S(θ̃(α)) and ∂S/∂α, problem (6.4)
                    except Diverged as e:
                        raise DnasError(f"the proxy search diverged at iteration {it + 1} ({e}); lower strategy.lr or strategy.gamma"
                                        f"{self._wider(supernet)}") from None
                    s, grads = add_terms(supernet, self._terms, s, grads)
                    for a, g in zip(alphas, grads):
                        a.grad = g
                    opt.step()
                    sched.step()
                    if not all(torch.isfinite(a).all() for a in alphas) or not torch.isfinite(s):
                        raise DnasError(f"the proxy search diverged at iteration {it + 1}; lower strategy.lr or strategy.gamma"
                                        f"{self._wider(supernet)}")
                    self._record(supernet, run, history, len(history) + 1, {"phase": "gradient", "proxy": float(s)}, t0)
                    bar.update(task, advance=1, description=f"proxy {float(s):.4g} · {self._open(supernet)}")
        run.log(f"proxy search: {len(history)} proxy evaluations in {time.perf_counter() - t0:.1f}s")
        return self._genotype(supernet)

    @staticmethod
    def _wider(supernet) -> str:
        """The float64 hint of a divergence, where the search ran in a narrower type."""
        return "" if next(iter(supernet.parameters())).dtype == torch.float64 else ", or search in float64 (strategy.precision=float64)"

    def _open(self, supernet) -> str:
        """'gates open k/n' (σ(α) ≥ threshold) for gated spaces, else the decisions' count."""
        if not self._gated(supernet):
            return f"{len(supernet.space.decisions())} decisions"
        w = supernet.decision_weights()
        return f"gates open {sum(float(v.max()) >= self.config.threshold for v in w.values())}/{len(w)}"
