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
    #: capabilities the strategy needs from a space (names from ``dnas.space.CAPABILITIES``)
    needs: ClassVar[frozenset[str]] = frozenset()
    #: whether :meth:`search` runs callbacks (the epoch loop of the gradient strategies does)
    uses_callbacks: ClassVar[bool] = False

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"strategy '{self.name}'")

    def requirements(self) -> frozenset[str]:
        """What this configured strategy needs from a space: :attr:`needs` unless an option adds to it."""
        return frozenset(self.needs)

    def check_compatible(self, space: "SearchSpace", device: str | None = None) -> None:
        """Refuse an impossible pair in one line, before any data are loaded or a model is built.

        Args:
            space: the configured space.
            device: the run's device type (``cpu``, ``cuda``, ...), where a pair works on some
                devices only; None where it is not known yet.

        Raises:
            DnasError: naming each capability ``space`` lacks and the spaces or options offering it.
        """
        missing = missing_capabilities(self, space)
        if missing:
            raise DnasError(incompatibility(self.name, space, missing))

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


def missing_capabilities(strategy: "Strategy", space: "SearchSpace") -> list[str]:
    """The capabilities ``strategy`` needs that ``space`` (as configured) does not offer, sorted."""
    return sorted(strategy.requirements() - space.capabilities())


def default_capabilities() -> dict[str, tuple[frozenset[str], dict[str, str]]]:
    """Registered space name -> (capabilities of its default config, its ``offers_with`` options)."""
    from dnas.registry import SPACES

    out = {}
    for name, cls in SPACES.items():
        try:
            caps = cls().capabilities()
        except (DnasError, TypeError, ValueError):  # a plugin space that needs options: its class-level offers
            caps = frozenset(getattr(cls, "offers", frozenset()))
        out[name] = (caps, dict(getattr(cls, "offers_with", {})))
    return out


def incompatibility(strategy: str, space: "SearchSpace", missing: list[str]) -> str:
    """The one-line refusal: what is missing, whether an option of ``space`` gives it, and which
    registered spaces (or options of them) offer it all.

    Example: ``strategy 'shapley' needs one α per cell (alpha_per_cell); space 'darts' offers it with
    space.individual=true; spaces that offer it: ddarts``.
    """
    from dnas.space import CAPABILITY_WORDS

    it = "it" if len(missing) == 1 else "them"
    what = " and ".join(f"{CAPABILITY_WORDS.get(c, c)} ({c})" for c in missing)
    own = getattr(space, "offers_with", {})
    if all(c in own for c in missing):
        head = f"; space '{space.name}' offers {it} with {' and '.join(dict.fromkeys(own[c] for c in missing))}"
    else:
        head = f", which space '{space.name}' does not offer"
    givers = []
    for name, (caps, opts) in default_capabilities().items():
        if name == space.name or not all(c in caps or c in opts for c in missing):
            continue
        need = list(dict.fromkeys(opts[c] for c in missing if c not in caps))
        givers.append(f"{name} (with {' and '.join(need)})" if need else name)
    givers.sort(key=lambda g: "(" in g)  # spaces that offer it as they are first
    tail = f"; spaces that offer {it}: {', '.join(givers)}" if givers else f"; no registered space offers {it}"
    return f"strategy '{strategy}' needs {what}{head}{tail}"
