"""D-DARTS (Heuillet et al.): the DARTS cell stack with every cell individualised.

Each of the n cells has its own α (normal or reduction by its position) and its own α optimizer
(one ``arch_groups()`` entry per cell). The space grows by 10^((n−2)·9) over DARTS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dnas.registry import register_space
from dnas.spaces.darts import DartsConfig, DartsSpace


@dataclass
class DDartsConfig(DartsConfig):
    C: int = field(default=16, metadata={"code": 32})  # initial channels (the authors' README: 16, their code: 32)
    individual: bool = True


@register_space("ddarts")
class DDartsSpace(DartsSpace):
    Config = DDartsConfig
