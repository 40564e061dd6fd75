"""Decision and SearchSpace: what can be chosen, and how to build supernets and networks from it."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from dnas.config import config_dict, make_config
from dnas.errors import DnasError
from dnas.genotype import Genotype
from dnas.registry import did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from dnas.supernet import Supernet


#: The capability vocabulary: what a space may offer and a strategy may need, with its meaning.
#: A strategy uses only the base :class:`SearchSpace`/:class:`~dnas.supernet.Supernet` methods and
#: what these names promise.
CAPABILITIES: dict[str, str] = {
    "alpha": "architecture parameters α: the supernet's arch_parameters() and arch_groups()",
    "data": "searches on a dataset (batches through supernet.loss); data-free spaces leave it out",
    "labels": "the task's loss reads labels (cross-entropy or regression targets)",
    "two_views": "self-supervised: batches are ((view1, view2), y) and the loss compares the views",
    "cells": "decisions live in cells (Decision.cell): supernet.num_cells() > 0 and the distance M",
    "alpha_per_cell": "one α group per cell: arch_groups() has one entry per cell, in cell order",
    "ablation": "supernet.ablated(cell, mode) switches one cell off (modes 'input' and 'random')",
    "functional": "a forward with substitute parameters: supernet.functional_forward(x, params) (torch.func)",
    "data_free": "an input made without data: supernet.data_free_input() (a batch of ones, or constant embeddings)",
}

#: how a refusal names a capability (a few words; the key follows in brackets)
CAPABILITY_WORDS: dict[str, str] = {
    "alpha": "architecture parameters",
    "data": "a dataset to search on",
    "labels": "labelled data",
    "two_views": "two-view batches",
    "cells": "cells",
    "alpha_per_cell": "one α per cell",
    "ablation": "cell ablation",
    "functional": "a forward with substitute parameters",
    "data_free": "an input made without data",
}


@dataclass(frozen=True)
class Decision:
    """One choice point with a stable name.

    Attributes:
        name: stable id, e.g. ``normal.node2.edge1``, ``projector.layer3``, ``block7``.
        options: the op names it chooses among.
        group: decisions that compete (a node's incoming edges, for "keep top-k edges").
        cell: the cell it lives in (for the distance metric and per-cell α groups).
        max_options: most options a discrete choice may keep (an edge may keep several ops).
        min_options: fewest (0 = the decision may be dropped, as an edge not kept).
    """

    name: str
    options: tuple[str, ...]
    group: str | None = None
    cell: str | None = None
    max_options: int = 1
    min_options: int = 1


@dataclass(frozen=True)
class Task:
    """What the data looks like: enough to size a network. ``num_classes = 0`` for unlabelled data;
    a regression task has ``num_classes = 0`` and ``out_dim`` target columns."""

    input_shape: tuple[int, ...]
    num_classes: int = 0
    two_views: bool = False
    out_dim: int = 0


class SearchSpace:
    """Base class of a registered space (``@register_space("name")``).

    A subclass defines ``Config`` (a dataclass of its hyper-parameters), :meth:`decisions`,
    :meth:`supernet` and :meth:`build_network`; it may override :meth:`validate` and
    :meth:`random_genotype` when its decisions are constrained (e.g. two edges per node).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: the capabilities every configuration of the space offers (names from :data:`CAPABILITIES`);
    #: :meth:`capabilities` adds those that depend on the config
    offers: ClassVar[frozenset[str]] = frozenset({"labels", "data", "alpha", "functional", "data_free"})
    #: capability -> the options that give it, where only some configurations offer it
    #: (e.g. ``{"alpha_per_cell": "space.individual=true"}``); used in the hint of a refused pair
    offers_with: ClassVar[dict[str, str]] = {}
    default_parser: ClassVar[str] = "argmax"
    #: how ``dnas train`` evaluates a genotype of this space: "supervised" (train from scratch, top-1),
    #: "ssl" (self-supervised pretraining + linear evaluation) or "pruned" (fine-tune a pruned model)
    evaluation: ClassVar[str] = "supervised"
    #: what its networks take: "any" input (flattened where needed) or "images" (C, H, W)
    inputs: ClassVar[str] = "any"
    #: a tiny configuration for tests and the conformance suite
    tiny_config: ClassVar[dict[str, Any]] = {}
    tiny_task: ClassVar[Task] = Task((1, 8, 8), 4)

    def __init__(self, **config: Any):
        self.config = make_config(self.Config, config, f"space '{self.name}'")

    def check_task(self, task: Task) -> None:
        """Refuse, in one line, data this space builds no network for (``inputs``); search and
        train call it once the data is loaded, before any work."""
        if self.inputs == "images" and len(task.input_shape) != 3:
            raise DnasError(f"space '{self.name}' builds networks on images (C, H, W); this data gives inputs of shape "
                            f"{tuple(task.input_shape)}: use an image dataset, or a space for vectors (mlp-depth, activation)")

    # -- to implement -------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        """The decisions of this space, in a stable order (the rows of its α).

        Returns:
            One :class:`Decision` per choice point.
        """
        raise NotImplementedError

    def supernet(self, task: Task) -> "Supernet":
        """Build the supernet that mixes every option of every decision.

        Args:
            task: the shape of the data (input shape, classes, views).

        Returns:
            A :class:`~dnas.supernet.Supernet` with its α registered.
        """
        raise NotImplementedError

    def build_network(self, genotype: Genotype, task: Task) -> "nn.Module":
        """Build the discrete network of ``genotype`` (what ``dnas train`` trains).

        Args:
            genotype: a genotype of this space.
            task: the shape of the data.

        Returns:
            An ordinary ``torch.nn.Module``.

        Raises:
            DnasError: the genotype does not fit this space.
        """
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------------
    def capabilities(self) -> frozenset[str]:
        """What this configured space offers a strategy (names from :data:`CAPABILITIES`).

        The default is the class's :attr:`offers`; a space whose capabilities depend on its config
        overrides this (DARTS offers ``alpha_per_cell`` with ``individual=True``).
        """
        return frozenset(self.offers)

    def config_dict(self) -> dict[str, Any]:
        """The space's options as plain data (what ``config.yaml`` and a genotype record)."""
        return config_dict(self.config)

    def genotype(self, choices: dict[str, Sequence[str]]) -> Genotype:
        """A genotype of this space with its current options.

        Args:
            choices: decision name -> the options kept.

        Returns:
            The :class:`~dnas.genotype.Genotype` (not validated; see :meth:`validate`).
        """
        return Genotype(space=self.name, choices=choices, config=self.config_dict())

    def validate(self, genotype: Genotype) -> None:
        """Fail in one line if ``genotype`` does not fit this space.

        Args:
            genotype: the genotype to check.

        Raises:
            DnasError: another space, an unknown or missing decision, an unknown op, or too many
                or too few options kept at a decision.
        """
        if genotype.space != self.name:
            raise DnasError(f"genotype is for space '{genotype.space}', not '{self.name}'")
        decisions = {d.name: d for d in self.decisions()}
        for name in genotype.choices:
            if name not in decisions:
                raise DnasError(f"decision {name!r} does not exist in space '{self.name}'{did_you_mean(name, decisions)}")
        for name, d in decisions.items():
            if name not in genotype.choices:
                raise DnasError(f"decision '{name}' is missing; every decision of space '{self.name}' needs a choice")
            chosen = genotype.choices[name]
            for op in chosen:
                if op not in d.options:
                    raise DnasError(
                        f"op {op!r} at {name!r} is not in space '{self.name}'{did_you_mean(op, d.options)}; "
                        f"options: {', '.join(d.options)}"
                    )
            if not d.min_options <= len(chosen) <= d.max_options:
                raise DnasError(
                    f"'{name}' keeps {len(chosen)} option(s); space '{self.name}' allows "
                    f"{d.min_options} to {d.max_options}"
                )

    def random_genotype(self, rng: random.Random) -> Genotype:
        """A uniformly random valid genotype (one option per decision); constrained spaces override.

        Args:
            rng: the random source.

        Returns:
            A valid genotype of this space.
        """
        return self.genotype({d.name: [rng.choice(d.options)] for d in self.decisions()})

    # -- the space as categorical parameters (TPE, random search) ----------------------------
    #: the categorical value meaning "keep no option" for a decision with ``min_options = 0``
    DROP: ClassVar[str] = "<drop>"

    def categorical(self) -> dict[str, tuple[str, ...]]:
        """The space as named categorical parameters: by default one per decision (its options,
        plus :attr:`DROP` where the decision may keep none). Constrained spaces override this and
        :meth:`from_categorical` with an encoding in which every sample is valid (DARTS)."""
        return {d.name: tuple(d.options) + ((self.DROP,) if d.min_options == 0 else ()) for d in self.decisions()}

    def from_categorical(self, sample: dict[str, str]) -> Genotype:
        """The genotype of one sample of :meth:`categorical`; DnasError if it breaks a constraint."""
        g = self.genotype({name: [] if v == self.DROP else [v] for name, v in sample.items()})
        self.validate(g)
        return g

    def example_batch(self, task: Task, batch_size: int = 4, generator: torch.Generator | None = None):
        """A batch shaped like this space's data, for the conformance suite."""
        x = torch.randn(batch_size, *task.input_shape, generator=generator)
        if task.two_views:
            x2 = x + 0.1 * torch.randn(x.shape, generator=generator)
            return (x, x2), torch.zeros(batch_size, dtype=torch.long)
        if task.num_classes == 0 and task.out_dim:  # regression targets
            return x, torch.randn(batch_size, task.out_dim, generator=generator)
        y = torch.randint(0, max(task.num_classes, 1), (batch_size,), generator=generator)
        return x, y

    def describe(self, genotype: Genotype) -> str | None:
        """A short human reading of ``genotype`` for ``dnas show`` (e.g. a formula); None = none."""
        return None

    def space_size(self) -> float:
        """Number of discrete architectures, counting one option per decision (log-scale friendly)."""
        n = 1.0
        for d in self.decisions():
            n *= len(d.options)
        return n
