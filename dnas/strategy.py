"""Strategy: the noun that searches a space. Gradient strategies share one loop (``dnas.engine.loop``);
trial strategies (TPE, random) share one study loop (``dnas.engine.trials``)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from dnas.config import make_config
from dnas.errors import DnasError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dnas.engine.callbacks import Callback
    from dnas.engine.data import SearchData
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace
    from dnas.supernet import Supernet


class Strategy(ABC):
    """Base of a registered strategy (``@register_strategy("name")``): how a space is searched.

    A subclass sets ``Config`` (a dataclass of its options) and implements :meth:`search`. In the
    manner of optuna's ``BaseSampler``, this is the order in which ``dnas.search`` calls it:

    1. ``Strategy(**options)`` (``create_strategy(name, **options)``): options checked against ``Config``.
    2. :meth:`check_compatible` ``(space)``: an impossible pair is refused before any data are loaded.
    3. :meth:`default_callbacks` ``(space)``: the callbacks the search runs unless the config's
       ``callbacks`` section switches them off (only where :attr:`uses_callbacks` is true).
    4. :meth:`search` ``(supernet, data, run, callbacks)``: once; returns the Genotype. A gradient
       strategy hands this to the shared loop (``dnas.engine.loop``), a trial strategy to the study
       loop (``dnas.engine.trials``); the loop writes the history and checkpoints into ``run``.
    5. :meth:`state_dict` / :meth:`load_state_dict`: the strategy's own state in every checkpoint
       (plain data), restored before the first epoch of a ``--resume``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: what the strategy needs from a space (see ``SearchSpace.offers``)
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whether :meth:`search` runs callbacks (the epoch loop of the gradient strategies does)
    uses_callbacks: ClassVar[bool] = False

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"strategy '{self.name}'")

    def check_compatible(self, space: "SearchSpace") -> None:
        missing = sorted(self.needs - space.offers)
        if missing:
            raise DnasError(
                f"strategy '{self.name}' needs {', '.join(missing)}, which space '{space.name}' does not offer; "
                f"pick another strategy for this space"
            )

    def default_callbacks(self, space: "SearchSpace") -> dict[str, dict[str, Any]]:
        """``{callback name: options}`` this strategy runs on ``space`` by default (none here)."""
        return {}

    @abstractmethod
    def search(self, supernet: "Supernet", data: "SearchData | None", run: "Run",
               callbacks: "Sequence[Callback] | None" = None) -> "Genotype":
        """Search ``supernet`` (``data`` is None for data-free spaces) and return the genotype.

        Args:
            supernet: the space's supernet, on its device, relaxation not yet set.
            data: the (train, val) batch pairs, or None where the strategy needs no data.
            run: the run folder (history, checkpoints, log).
            callbacks: the callbacks to run, in order (None: :meth:`default_callbacks`); strategies
                whose :attr:`uses_callbacks` is false take none.
        """

    def refuse_callbacks(self, callbacks: "Sequence[Callback] | None") -> None:
        """For strategies with their own loop: fail in one line if callbacks were handed to them."""
        if callbacks:
            raise DnasError(
                f"strategy '{self.name}' runs no epoch loop, so it takes no callbacks "
                f"({', '.join(c.key for c in callbacks)}); use a gradient strategy (darts, fairdarts, shapley)"
            )

    def state_dict(self) -> dict[str, Any]:
        """The strategy's own state to checkpoint (plain data); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
