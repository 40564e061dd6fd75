"""Callbacks: what a search does besides its steps (early stops, warm starts, monitors, loggers).

The gradient loop (:func:`dnas.engine.loop.search_loop`) knows no method; everything a method adds
around the steps is a :class:`Callback` (as Lightning's ``Callback`` hooks). The loop calls, in order::

    on_search_start(state)              once: optimizers built, a checkpoint (if any) restored
    for each epoch:
        on_epoch_start(state)
        ... the strategy's steps ...    a NaN/inf in a step: on_divergence(state, error) -> bool
        on_epoch_end(state, record)     the epoch's history record; a callback may add keys to it
        (the record is appended to the history and the checkpoint written)
        should_stop(state) -> str|None  a reason to stop after this epoch, or None
    on_search_end(state, genotype)      once, with the final genotype

Callbacks run in the order of their list: first a strategy's defaults (``rollback``, ``distance``
on spaces of cells, ``dominant_ops`` for fairdarts and shapley), then those a search config adds
in its top-level ``callbacks`` section (``callbacks: {name: {option: value}}``; ``name: false``
switches a default off). ``state`` is a :class:`LoopState`; a callback keeps what it must carry
across a ``--resume`` in ``state_dict()`` / ``load_state_dict()`` (plain data, saved in the checkpoint).

Example:
    >>> from dnas.engine.callbacks import Callback
    >>> from dnas.registry import register_callback
    >>> @register_callback("print-loss")
    ... class PrintLoss(Callback):
    ...     def on_epoch_end(self, state, record):
    ...         print(state.epoch, record.get("train_loss"))
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from dnas.config import config_dict, make_config
from dnas.errors import DnasError
from dnas.registry import CALLBACKS, create_callback, register_callback

if TYPE_CHECKING:
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace
    from dnas.strategy import Strategy
    from dnas.supernet import Supernet


def diverged_advice(epochs_done: int) -> str:
    """What to do after a search diverged: a resume keeps the config it started with, so the learning
    rates are lowered in a new run."""
    kept = f"the run folder keeps its {epochs_done} finished epoch(s); " if epochs_done else ""
    return f"{kept}start it again with lower learning rates (--set strategy.w_lr=... --set strategy.a_lr=...) in another --out"


@dataclass
class LoopState:
    """What the loop hands its strategy's steps and its callbacks: the live objects and where the search is."""

    supernet: "Supernet"
    strategy: "Strategy"
    run: "Run | None"
    epoch: int = 0  # epochs finished so far (during an epoch's steps: the 0-based index of that epoch)
    epochs: int = 0  # epochs planned
    history: list[dict[str, Any]] = field(default_factory=list)  # the records of the finished epochs
    optimizers: Any = None  # dnas.engine.loop.Optimizers
    resumed: bool = False  # the search continues from a checkpoint
    scalers: dict[str, Any] = field(default_factory=dict)  # amp fp16: the GradScaler of each step ("arch", "weights")
    start_genotype: dict[str, list[str]] | None = None  # the choices derived before the first epoch (after on_search_start)
    events: list[str] = field(default_factory=list)  # this epoch's notable events, written to its record

    def state_dict(self) -> dict[str, Any]:
        """Everything the loop needs to continue bit for bit (a checkpoint, or a rollback's snapshot)."""
        return {
            "epoch": self.epoch,
            "supernet": self.supernet.state_dict(),
            "optimizers": self.optimizers.state_dict(),
            "grad_scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "strategy": self.strategy.state_dict(),
            "start_genotype": self.start_genotype,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.optimizers.load_state_dict(state["optimizers"])
        for k, saved in state.get("grad_scalers", {}).items():
            if k in self.scalers and saved:  # the loss scale goes on where the run left it
                self.scalers[k].load_state_dict(saved)
        self.strategy.load_state_dict(state.get("strategy", {}))
        self.start_genotype = state.get("start_genotype")
        self.epoch = state["epoch"]
        torch.set_rng_state(state["rng"])


@dataclass
class NoOptions:
    """A callback without options."""


class Callback:
    """Base of every callback; each hook does nothing unless overridden.

    A registered callback (``@register_callback("name")``) has a ``Config`` dataclass of its options,
    checked like a space's or a strategy's, and is switched on by a search config's ``callbacks``
    section (``callbacks: {name: {option: value}}``). An unregistered instance can be handed to
    ``strategy.search(supernet, data, run, callbacks=[...])`` directly.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"callback '{self.key}'")

    @property
    def key(self) -> str:
        """The name under which the checkpoint keeps this callback's state."""
        return self.name or type(self).__name__

    def on_search_start(self, state: LoopState) -> None:
        """Once, before the first epoch (``state.resumed`` tells a fresh run from a resumed one)."""

    def on_epoch_start(self, state: LoopState) -> None:
        """Before the steps of epoch ``state.epoch + 1``."""

    def on_divergence(self, state: LoopState, error: Exception) -> bool:
        """A step gave a NaN/inf (``error.term`` names the term). Return True after repairing
        ``state`` to have the loop replay the epoch; False leaves it to the next callback. If none
        returns True, the search stops with a one-line error."""
        return False

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        """After epoch ``state.epoch``: ``record`` is its history record (add keys to it here)."""

    def should_stop(self, state: LoopState) -> str | None:
        """A reason to stop after this epoch (logged), or None to go on."""
        return None

    def on_search_end(self, state: LoopState, genotype: "Genotype") -> None:
        """Once, with the final genotype."""

    def state_dict(self) -> dict[str, Any]:
        """Plain data to carry across a ``--resume`` (saved in the checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


# -- the callbacks section of a search config ------------------------------------------------------
def resolve_callbacks(defaults: dict[str, dict[str, Any]], section: dict[str, Any] | None) -> tuple[list[Callback], dict[str, Any]]:
    """Build the callbacks of a search: ``defaults`` (a strategy's ``default_callbacks``) overlaid by a
    config's ``callbacks`` section (``{name: options}``; ``true``/``null`` = default options, ``false`` = off).

    Returns:
        (callbacks, resolved): the instances in order, and the section with every option filled in
        (``false`` kept for a default switched off), as written to run/config.yaml.
    """
    section = dict(section or {})
    merged: dict[str, Any] = {}
    for name in [*defaults, *(k for k in section if k not in defaults)]:
        opts = dict(defaults.get(name, {}))
        if name in section:
            value = section[name]
            if value is False:
                merged[name] = False
                continue
            if value not in (None, True):
                if not isinstance(value, dict):
                    raise DnasError(f"callbacks.{name} must be a mapping of options, true or false, got {value!r}")
                opts.update(value)
        merged[name] = opts
    callbacks, resolved = [], {}
    for name, opts in merged.items():
        if opts is False:
            CALLBACKS.get(name)  # an unknown name fails in one line, with "did you mean"
            resolved[name] = False
            continue
        cb = create_callback(name, **opts)
        callbacks.append(cb)
        resolved[name] = config_dict(cb.config)
    return callbacks, resolved


def default_callbacks(strategy: "Strategy", space: "SearchSpace") -> list[Callback]:
    """The callbacks a strategy runs when none are given (``strategy.search(...)`` called directly)."""
    return resolve_callbacks(strategy.default_callbacks(space), None)[0]


#: the options of the gradient strategies that became callbacks: old key -> (callback, option)
LEGACY_KEYS = {
    "early_stop_on": ("distance_stop", "on"),
    "early_stop_patience": ("distance_stop", "patience"),
    "early_stop_from": ("distance_stop", "from_epoch"),
    "early_stop_tol": ("distance_stop", "tol"),
    "init_genotype": ("init_genotype", "genotype"),
    "divergence_lr_factor": ("rollback", "lr_factor"),
    "max_divergences": ("rollback", "max_divergences"),
}


def upgrade_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Move the strategy options that became callbacks (``strategy.early_stop*``,
    ``strategy.init_genotype``, ``strategy.divergence_lr_factor``, ``strategy.max_divergences``, as
    older config files and run folders hold them) to the ``callbacks`` section; explicit
    ``callbacks`` options win. Returns a new dict; ``cfg`` is left as it is."""
    strat = cfg.get("strategy")
    if not isinstance(strat, dict) or not any(k in strat for k in (*LEGACY_KEYS, "early_stop")):
        return cfg
    strat = dict(strat)
    found: dict[str, dict[str, Any]] = {}
    stop = strat.pop("early_stop", None)
    for old, (cb, opt) in LEGACY_KEYS.items():
        if old in strat:
            value = strat.pop(old)
            if cb == "distance_stop" and stop != "distance":
                continue  # early_stop: none — its options were never used
            if cb == "init_genotype" and not value:
                continue
            found.setdefault(cb, {})[opt] = value
    if stop == "distance":
        found.setdefault("distance_stop", {})
    section = cfg.get("callbacks") or {}
    if not isinstance(section, dict):
        return {**cfg, "strategy": strat}
    merged = dict(section)
    for cb, opts in found.items():
        if merged.get(cb) is False:
            continue
        explicit = merged.get(cb) if isinstance(merged.get(cb), dict) else {}
        merged[cb] = {**opts, **explicit}
    return {**cfg, "strategy": strat, "callbacks": merged}


# -- the built-in callbacks ------------------------------------------------------------------------
@dataclass
class RollbackConfig:
    lr_factor: float = 0.1  # after a rollback every learning rate (and the schedule) is multiplied by this
    max_divergences: int = 1  # rollbacks allowed in a run; one more divergence stops it

    def check(self):
        if not 0 < self.lr_factor <= 1 or self.max_divergences < 0:
            return "lr_factor must be in (0, 1] and max_divergences >= 0"
        return None


@register_callback("rollback")
class Rollback(Callback):
    """A NaN/inf in a loss term or an α: restore the state of the epoch's start (weights, α,
    optimizers, loss scalers, random state), multiply every learning rate by ``lr_factor``, note it
    in the epoch's ``events`` and replay the epoch. After ``max_divergences`` rollbacks the next
    divergence stops the search (the run folder keeps every finished epoch for a ``--resume``)."""

    Config = RollbackConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.divergences = 0
        self._last_good: dict[str, Any] | None = None  # the epoch start, in memory only

    def on_epoch_start(self, state: LoopState) -> None:
        self._last_good = copy.deepcopy(state.state_dict())

    def on_divergence(self, state: LoopState, error: Exception) -> bool:
        term = getattr(error, "term", str(error))
        self.divergences += 1
        if self.divergences > self.config.max_divergences or self._last_good is None:
            raise DnasError(f"the search diverged again at epoch {state.epoch + 1} ({term}); {diverged_advice(state.epoch)}")
        state.load_state_dict(self._last_good)
        state.optimizers.scale_lr(self.config.lr_factor)
        state.events.append(f"diverged ({term}): restarted epoch {state.epoch + 1} with learning rates × {self.config.lr_factor}")
        if state.run is not None:
            state.run.log(f"[yellow]warning:[/] {state.events[-1]}")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"divergences": self.divergences}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.divergences = int(state.get("divergences", 0))


def _needs_cells(name: str, space: "SearchSpace") -> None:
    from dnas.engine.distance import has_cells

    if not has_cells(space):
        raise DnasError(
            f"callback '{name}' needs the distance M, defined on spaces of CNN cells over the ops of S_o "
            f"(darts, ddarts); space '{space.name}' has none"
        )


@dataclass
class DistanceConfig:
    norm: Literal["positions", "weights"] = "positions"  # D-DARTS thesis: divide by K = 12; weights: by Σ s_k (the authors' code)


@register_callback("distance")
class Distance(Callback):
    """D-DARTS: the distance M (thesis eq. 4.8) of each epoch's genotype to the previous epoch's
    (``distance_prev``) and to the genotype the search started from (``distance_start``), added to
    every history record. On by default for every gradient strategy on a space of cells."""

    Config = DistanceConfig

    def on_search_start(self, state: LoopState) -> None:
        _needs_cells(self.key, state.supernet.space)

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        from dnas.engine.distance import distance

        start = state.start_genotype
        if start is None or "genotype" not in record:
            return
        space = state.supernet.space
        prev = state.history[-1].get("genotype", start) if state.history else start
        now = space.genotype(record["genotype"])
        record["distance_prev"] = round(distance(now, space.genotype(prev), self.config.norm), 6)  # D-DARTS eq. (4.8)
        record["distance_start"] = round(distance(now, space.genotype(start), self.config.norm), 6)


@dataclass
class DistanceStopConfig:
    """Defaults: the D-DARTS thesis (M to the previous epoch = 0 for 5 epochs, from epoch 10); the
    authors' code: ``on: start, patience: 4, tol: 0.001``."""

    on: Literal["previous", "start"] = "previous"  # M to the previous epoch ≤ tol (thesis), or M to the start moving ≤ tol (code)
    patience: int = 5  # epochs the criterion must hold (thesis 5; the authors' code: 4)
    from_epoch: int = 10  # first epoch at which the search may stop (thesis: 10)
    tol: float = 0.0  # thesis: 0 (genotype unchanged); code: 0.001 on M to the start

    def check(self):
        if self.patience < 1 or self.from_epoch < 1 or self.tol < 0:
            return "patience and from_epoch must be >= 1 and tol >= 0"
        return None


@register_callback("distance_stop")
class DistanceStop(Callback):
    """D-DARTS early stop: from epoch ``from_epoch`` on, stop once the last ``patience`` epochs after
    the warm-up all had M to the previous epoch ≤ ``tol`` (``on: previous``, the thesis), or M to the
    start varying by ≤ ``tol`` across them (``on: start``, the authors' code). Reads the
    ``distance_prev``/``distance_start`` keys the ``distance`` callback writes."""

    Config = DistanceStopConfig

    def on_search_start(self, state: LoopState) -> None:
        _needs_cells(self.key, state.supernet.space)

    def should_stop(self, state: LoopState) -> str | None:
        c, history = self.config, state.history
        if not history:
            return None
        epoch, k = history[-1]["epoch"], c.patience
        warmup = getattr(state.strategy.config, "warmup_epochs", 0)
        window = [r for r in history if r["epoch"] > warmup][-k:]  # α frozen in warm-up: not evidence
        if epoch < c.from_epoch or len(window) < k or any("distance_prev" not in r for r in window):
            return None
        if c.on == "previous":
            worst = max(r["distance_prev"] for r in window)
            if worst <= c.tol:
                return f"distance M to the previous epoch ≤ {c.tol:g} for {k} epochs (max {worst:.6f})"
        else:
            values = [r["distance_start"] for r in window]
            if max(values) - min(values) <= c.tol:
                return f"distance M to the start changed by ≤ {c.tol:g} over {k} epochs ({min(values):.6f}–{max(values):.6f})"
        return None


#: FairDARTS calls an op "dominant" when σ(α) > 0.9
DOMINANT = 0.9


def dominant_ops(supernet: "Supernet", threshold: float = DOMINANT) -> dict[str, int]:
    """Count of ops with σ(α) > ``threshold`` per cell (``none`` left out: it never enters a sum)."""
    counts: dict[str, int] = {}
    for d in supernet.space.decisions():
        w = torch.sigmoid(supernet.decision_alpha(d.name).detach()).cpu()  # σ(α), whatever the relaxation
        n = sum(int(float(w[k]) > threshold) for k, o in enumerate(d.options) if o != "none")
        key = d.cell or "all"
        counts[key] = counts.get(key, 0) + n
    return counts


@dataclass
class DominantOpsConfig:
    threshold: float = DOMINANT  # FairDARTS: an op with σ(α) above this is dominant

    def check(self):
        if not 0 < self.threshold < 1:
            return "threshold must be in (0, 1)"
        return None


@register_callback("dominant_ops")
class DominantOps(Callback):
    """FairDARTS' monitor: the number of ops with σ(α) > ``threshold`` after each epoch, in total
    (``dominant_ops``) and per cell (``dominant_ops_by_cell``). On by default for fairdarts and shapley."""

    Config = DominantOpsConfig

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        by_cell = dominant_ops(state.supernet, self.config.threshold)
        record["dominant_ops"] = sum(by_cell.values())
        record["dominant_ops_by_cell"] = by_cell


@dataclass
class InitGenotypeConfig:
    genotype: str = ""  # a genotype file or a shipped name (resnet18, resnet50, xception)
    high: float = 3.0  # α of the chosen ops: σ(3) = 0.953, above the 0.85 threshold of the sparse/edge parsers
    low: float = -3.0  # α of the other ops: σ(−3) = 0.047

    def check(self):
        if not self.genotype:
            return "genotype is required (a genotype file or a shipped name such as resnet18)"
        if self.high <= self.low:
            return "high must be > low"
        from dnas.genotype import load_genotype

        try:
            load_genotype(self.genotype)
        except DnasError as e:
            return str(e)
        return None


@register_callback("init_genotype")
class InitGenotype(Callback):
    """DARTOpti (D-DARTS thesis): α start from a genotype (a hand-made network such as ``resnet18``)
    on a fresh run; a resumed run keeps its own α. See :mod:`dnas.engine.dartopti`."""

    Config = InitGenotypeConfig

    def on_search_start(self, state: LoopState) -> None:
        if state.resumed:
            return
        from dnas.engine.dartopti import init_alpha_from_genotype

        init_alpha_from_genotype(state.supernet, self.config.genotype, high=self.config.high, low=self.config.low)
