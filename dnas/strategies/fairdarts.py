"""FairDARTS (Chu et al., ECCV 2020): DARTS with a sigmoid relaxation and a zero-one loss.

Every op of an edge gets an independent weight σ(α) (no softmax competition), and the zero-one loss
pushes each σ(α) away from 0.5, so the search ends near a binary choice the ``sparse`` (or ``edge``,
``threshold``) parser reads with a threshold (0.85, as D-DARTS). Bilevel, first or second order
exactly as :class:`~dnas.strategies.darts.Darts`; works on every space that offers α.

Example:
    >>> import dnas
    >>> dnas.search("ddarts", "fairdarts", "digits", space_config={"C": 8, "layers": 5},
    ...             strategy_config={"epochs": 5, "w01": 10}, out="runs/fair")
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from dnas.engine.callbacks import DOMINANT, dominant_ops  # noqa: F401  (re-exported: FairDARTS' monitor)
from dnas.registry import PARSERS, register_strategy
from dnas.strategies.darts import Darts, DartsConfig


def zero_one_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """FairDARTS eq. (3.1): L01 = −(1/N) Σ_i (σ(α_i) − 0.5)², N = number of α entries."""
    s = torch.cat([a.flatten() for a in alphas])
    return -((torch.sigmoid(s) - 0.5) ** 2).mean()  # FairDARTS eq. (3.1)

@dataclass
class FairDartsConfig(DartsConfig):
    """DARTS defaults plus w01 = 10 (FairDARTS) and the sparse parser at threshold 0.85 (D-DARTS)."""

    w01: float = 10.0  # weight of the zero-one loss, eq. (3.2)
    parser: str | None = "sparse"
    threshold: float = 0.85  # passed to parsers that take one (sparse, edge, threshold)

    def check(self):
        if self.w01 < 0:
            return "w01 must be >= 0"
        if not 0 < self.threshold < 1:
            return "threshold must be in (0, 1)"
        return super().check()


class FairLossMixin:
    """The parts FairDARTS and D-DARTS' ``shapley`` share: parser threshold and the dominant-op callback."""

    def parser_args(self) -> dict[str, Any]:
        name = self.config.parser
        if name is None:
            return {}
        takes = inspect.signature(PARSERS.get(name)).parameters
        return {"threshold": self.config.threshold} if "threshold" in takes else {}

    def default_callbacks(self, space) -> dict[str, dict[str, Any]]:
        """The gradient defaults plus FairDARTS' count of dominant ops (σ(α) > 0.9) per epoch."""
        return {**super().default_callbacks(space), "dominant_ops": {}}


@register_strategy("fairdarts")
class FairDarts(FairLossMixin, Darts):
    """FairDARTS: sigmoid relaxation, α loss L_F = L_val + w01 · L01 (eq. 3.2), sparse parser."""

    Config = FairDartsConfig
    relaxation = "sigmoid"

    def loss_terms(self, supernet, state) -> dict[str, torch.Tensor]:
        terms = super().loss_terms(supernet, state)  # β-DARTS' beta_decay when set
        return {**terms, "zero_one": self.config.w01 * zero_one_loss(supernet.arch_parameters())}  # FairDARTS eq. (3.2)
