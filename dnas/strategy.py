"""Strategy: the noun that searches a space. Gradient strategies share one loop (``dnas.engine.loop``);
trial strategies (TPE, random) share one study loop (``dnas.engine.trials``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from dnas.config import make_config
from dnas.errors import DnasError

if TYPE_CHECKING:
    from dnas.engine.data import SearchData
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace
    from dnas.supernet import Supernet


class Strategy:
    """Base of a registered strategy (``@register_strategy("name")``)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: what the strategy needs from a space (see ``SearchSpace.offers``)
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"strategy '{self.name}'")

    def check_compatible(self, space: "SearchSpace") -> None:
        missing = sorted(self.needs - space.offers)
        if missing:
            raise DnasError(
                f"strategy '{self.name}' needs {', '.join(missing)}, which space '{space.name}' does not offer; "
                f"pick another strategy for this space"
            )

    def search(self, supernet: "Supernet", data: "SearchData", run: "Run") -> "Genotype":
        raise NotImplementedError
