"""DARTS+ early stopping (Liang et al., "DARTS+", 2019; thesis §3.2) and the parameter-free-op monitor.

DARTS collapses towards parameter-free operations (skip connections, pools) when it searches too
long. DARTS+ stops the search before that happens, by one of two criteria:

* ``darts_plus_skip`` (criterion 1): stop once a normal cell of the derived genotype holds two or
  more skip connections;
* ``darts_plus_rank`` (criterion 2): stop once the ranking of the learnable operations' α on every
  edge has not changed for ``patience`` epochs (DARTS+ used 10).

``param_free_ops`` adds ``param_free_ops`` (and ``param_free_ops_by_cell``) to every epoch's history
record: the number of parameter-free operations in the derived genotype, the known sign of the
collapse (``dnas show RUN`` plots it). Enable any of them in a search config::

    callbacks:
      darts_plus_skip: {max_skips: 2}
      darts_plus_rank: {patience: 10}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnas.engine.callbacks import Callback, LoopState
from dnas.registry import register_callback

#: op names without parameters (``none`` is never kept in a genotype)
PARAM_FREE = frozenset({"none", "skip_connect", "identity", "max_pool_3x3", "avg_pool_3x3", "max_pool_3", "avg_pool_3"})

#: callbacks a gradient search runs unless its config switches them off (the monitor only)
DEFAULT_GRADIENT_CALLBACKS = ("param_free_ops",)


def is_param_free(op: str) -> bool:
    """True for skip connections, identities, pools and ``none``."""
    return op in PARAM_FREE or "pool" in op or op.startswith("skip")


def _cell_of(name: str, cells: dict[str, str | None]) -> str:
    cell = cells.get(name)
    if cell:
        return cell
    return name.split(".", 1)[0] if "." in name else "all"


def count_param_free(choices: dict[str, Any], cells: dict[str, str | None] | None = None) -> tuple[int, dict[str, int]]:
    """Parameter-free ops kept by a genotype's ``choices``, in all and per cell.

    Args:
        choices: decision name -> kept op names (a genotype's ``choices`` or a history record's ``genotype``).
        cells: decision name -> its cell (``Decision.cell``); default: the name's first dotted part.

    Returns:
        ``(total, {cell: count})``.
    """
    by_cell: dict[str, int] = {}
    for name, ops in choices.items():
        cell = _cell_of(name, cells or {})
        by_cell[cell] = by_cell.get(cell, 0) + sum(is_param_free(op) for op in ops)
    return sum(by_cell.values()), by_cell


def normal_cells(space) -> set[str] | None:
    """The α keys of normal cells (``normal``; per-cell spaces: the cells not at reduction
    positions); None when the space has no notion of reduction cells (every cell counts)."""
    if not (hasattr(space, "reduction_layers") and hasattr(space, "cell_key")):
        return None
    red = space.reduction_layers()
    layers = space.config.layers
    normal = {space.cell_key(i) for i in range(layers) if i not in red}
    return normal - {space.cell_key(i) for i in red}


def _decision_cells(state: LoopState) -> dict[str, str | None]:
    return {d.name: d.cell for d in state.supernet.space.decisions()}


def _choices(state: LoopState, record: dict[str, Any]) -> dict[str, list[str]]:
    """The epoch's derived genotype: the record's, else derived from the supernet now."""
    if "genotype" in record:
        return record["genotype"]
    s = state.strategy
    g = state.supernet.genotype(getattr(s.config, "parser", None), **(s.parser_args() if hasattr(s, "parser_args") else {}))
    return {k: list(v) for k, v in g.choices.items()}


def _epoch(state: LoopState, record: dict[str, Any]) -> int:
    return int(record.get("epoch", state.epoch))


@dataclass
class ParamFreeConfig:
    by_cell: bool = True  # also record the count per cell


@register_callback("param_free_ops")
class ParamFreeOps(Callback):
    """Records ``param_free_ops``: parameter-free ops (skip, pools) in each epoch's derived genotype."""

    Config = ParamFreeConfig

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        total, by_cell = count_param_free(_choices(state, record), _decision_cells(state))
        record["param_free_ops"] = total
        if self.config.by_cell and len(by_cell) > 1:
            record["param_free_ops_by_cell"] = by_cell


@dataclass
class SkipConfig:
    max_skips: int = 2  # DARTS+ criterion 1: two or more skip connections in a normal cell
    op: str = "skip_connect"
    cells: str = "normal"  # "normal": normal cells only (DARTS+); "all": any cell
    from_epoch: int = 1  # first epoch at which the search may stop

    def check(self):
        if self.max_skips < 1 or self.from_epoch < 1:
            return "max_skips and from_epoch must be >= 1"
        if self.cells not in ("normal", "all"):
            return "cells must be 'normal' or 'all'"
        return None


@register_callback("darts_plus_skip")
class DartsPlusSkip(Callback):
    """DARTS+ criterion 1: stop when a normal cell of the derived genotype holds ``max_skips`` or
    more skip connections (DARTS+ §3.2; thesis §3.2)."""

    Config = SkipConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._reason: str | None = None

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        c = self.config
        self._reason = None
        if _epoch(state, record) < c.from_epoch:
            return
        cells = _decision_cells(state)
        watched = normal_cells(state.supernet.space) if c.cells == "normal" else None
        counts: dict[str, int] = {}
        for name, ops in _choices(state, record).items():
            cell = _cell_of(name, cells)
            if watched is None or cell in watched:
                counts[cell] = counts.get(cell, 0) + sum(op == c.op for op in ops)
        worst = max(counts, key=counts.get, default=None)
        if worst is not None and counts[worst] >= c.max_skips:
            self._reason = f"cell '{worst}' holds {counts[worst]} {c.op} (≥ {c.max_skips}; DARTS+ criterion 1)"

    def should_stop(self, state: LoopState) -> str | None:
        return self._reason


@dataclass
class RankConfig:
    patience: int = 10  # DARTS+ criterion 2: epochs the ranking must stay unchanged (DARTS+: 10)
    from_epoch: int = 1  # first epoch at which the search may stop

    def check(self):
        if self.patience < 1 or self.from_epoch < 1:
            return "patience and from_epoch must be >= 1"
        return None


def learnable_ranking(weights: dict[str, Any], options: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Per decision, its learnable (non-parameter-free) ops ordered by relaxed α, highest first
    (ties: the space's op order)."""
    out = {}
    for name, w in weights.items():
        ops = options.get(name) or tuple(str(i) for i in range(len(w)))
        idx = [i for i, op in enumerate(ops) if not is_param_free(op)]
        out[name] = tuple(ops[i] for i in sorted(idx, key=lambda i: -float(w[i])))
    return out


@register_callback("darts_plus_rank")
class DartsPlusRank(Callback):
    """DARTS+ criterion 2: stop when the ranking of the learnable operations' α on every decision
    has been the same for ``patience`` epochs in a row (epochs with α frozen by a warm-up do not count)."""

    Config = RankConfig

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._previous: dict[str, tuple[str, ...]] | None = None
        self._stable = 0
        self._epoch = 0

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        self._epoch = _epoch(state, record)
        if self._epoch <= getattr(state.strategy.config, "warmup_epochs", 0):
            return  # α frozen: an unchanged ranking is no evidence
        weights = record.get("alphas") or {k: v.tolist() for k, v in state.supernet.decision_weights().items()}
        options = {d.name: tuple(d.options) for d in state.supernet.space.decisions()}
        ranking = learnable_ranking(weights, options)
        self._stable = self._stable + 1 if ranking == self._previous else 0
        self._previous = ranking
        record["rank_stable_epochs"] = self._stable

    def should_stop(self, state: LoopState) -> str | None:
        k = self.config.patience
        if self._epoch >= self.config.from_epoch and self._stable >= k:
            return f"the ranking of the learnable ops' α has not changed for {k} epochs (DARTS+ criterion 2)"
        return None

    def state_dict(self) -> dict[str, Any]:
        prev = None if self._previous is None else {k: list(v) for k, v in self._previous.items()}
        return {"previous": prev, "stable": self._stable, "epoch": self._epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        prev = state.get("previous")
        self._previous = None if prev is None else {k: tuple(v) for k, v in prev.items()}
        self._stable = int(state.get("stable", 0))
        self._epoch = int(state.get("epoch", 0))
