"""Callbacks: what a search does besides its steps (early stops, warm starts, monitors, loggers).

The gradient loop (:func:`dnas.engine.loop.search_loop`) knows no method; everything a method adds
around the steps is a :class:`Callback` (as Lightning's ``Callback`` hooks). The loop calls, in order::

    on_search_start(state)              once: optimizers built, a checkpoint (if any) restored
    for each epoch:
        on_epoch_start(state)
        ... the strategy's steps ...
        on_epoch_end(state, record)     the epoch's history record; a callback may add keys to it
        should_stop(state) -> str|None  a reason to stop after this epoch, or None
    on_search_end(state, genotype)      once, with the final genotype

``state`` is a :class:`LoopState`; a callback keeps what it must carry across a ``--resume`` in
``state_dict()`` / ``load_state_dict()`` (plain data, saved in the checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dnas.config import make_config

if TYPE_CHECKING:
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.strategy import Strategy
    from dnas.supernet import Supernet


@dataclass
class LoopState:
    """What the loop hands its callbacks: the live objects and where the search is."""

    supernet: "Supernet"
    strategy: "Strategy"
    run: "Run"
    epoch: int = 0  # epochs finished so far
    epochs: int = 0  # epochs planned
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizers: Any = None
    resumed: bool = False  # the search continues from a checkpoint


@dataclass
class NoOptions:
    """A callback without options."""


class Callback:
    """Base of every callback; each hook does nothing unless overridden.

    A registered callback (``@register_callback("name")``) has a ``Config`` dataclass of its options,
    checked like a space's or a strategy's, and is switched on by a search config's ``callbacks``
    section (``callbacks: {name: {option: value}}``).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"callback '{self.name or type(self).__name__}'")

    def on_search_start(self, state: LoopState) -> None: ...

    def on_epoch_start(self, state: LoopState) -> None: ...

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None: ...

    def should_stop(self, state: LoopState) -> str | None:
        return None

    def on_search_end(self, state: LoopState, genotype: "Genotype") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
