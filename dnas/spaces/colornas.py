"""Space ``colornas``: one DARTS-cell network per colour-channel group, fused by an MLP meta-learner.

The input image (3 channels, RGB) is split into groups of channels (thesis, ColorNAS):

- ``rgb``: R, G, B;
- ``rb``: RGB without green: R, B;
- ``rgby``: R' = R − min(R, G), G' = G − min(R, G), B, Y = R' + G' (as the issue states it);
- ``r``, ``g``, ``b``: one channel each.

Each group feeds its own DARTS search network (the cells of ``dnas.spaces.darts``, reused) with its own
α, normal and reduce, and outputs class scores; the scores of all groups are concatenated and an MLP
meta-learner (one hidden layer) gives the logits. Decisions are the DARTS edges prefixed by the group:
``rgb_normal.node0.edge1``. Searched with ``darts`` or ``fairdarts`` (the thesis: β-DARTS, i.e.
``darts`` with ``beta_decay``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dnas.errors import DnasError
from dnas.genotype import Genotype
from dnas.registry import register_space
from dnas.space import SearchSpace, Task
from dnas.spaces.darts import DartsNetwork, DartsSpace, DartsSupernet
from dnas.supernet import Supernet


def _rgby(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    m = torch.minimum(r, g)
    r2, g2 = r - m, g - m  # R' = R − min(R, G), G' = G − min(R, G)
    return torch.cat([r2, g2, b, r2 + g2], 1)


#: group name -> (number of channels, x (B, 3, H, W) -> the group's channels)
GROUPS: dict[str, tuple[int, Any]] = {
    "rgb": (3, lambda x: x),
    "rb": (2, lambda x: x[:, [0, 2]]),
    "rgby": (4, _rgby),
    "r": (1, lambda x: x[:, 0:1]),
    "g": (1, lambda x: x[:, 1:2]),
    "b": (1, lambda x: x[:, 2:3]),
}


@dataclass
class ColorNasConfig:
    groups: list[str] = field(default_factory=lambda: ["rgb", "rb", "rgby"])
    C: int = 16  # initial channels of each group's network
    layers: int = 8  # cells per group network
    nodes: int = 4
    ops: Literal["darts", "darts-o"] = "darts"
    hidden: int = 64  # width of the meta-learner's hidden layer

    def check(self):
        bad = [g for g in self.groups if g not in GROUPS]
        if not self.groups or bad or len(set(self.groups)) != len(self.groups):
            return f"groups must be distinct names among {', '.join(GROUPS)}; got {self.groups}"
        if min(self.C, self.layers, self.nodes, self.hidden) < 1:
            return "C, layers, nodes and hidden must be positive"
        return None


class _GroupSpace(DartsSpace):
    """The DARTS space of one group: its cell keys (α keys, decision prefixes) carry the group name."""

    def __init__(self, group: str, **config: Any):
        super().__init__(**config)
        self.group = group

    def cell_key(self, i: int) -> str:
        return f"{self.group}_{super().cell_key(i)}"  # "." is not allowed in parameter names


class ColorNasSupernet(Supernet):
    def __init__(self, space: "ColorNasSpace", task: Task):
        super().__init__(space, task)
        space.check_task(task)
        n = task.num_classes
        self.branches = nn.ModuleList()
        for g, sub in space.group_spaces().items():
            net = DartsSupernet(sub, Task((GROUPS[g][0], *task.input_shape[1:]), n))
            self.branches.append(net)
            for key, alpha in net.alphas.items():  # the group's α are this supernet's α (same tensors)
                self.alphas[key] = alpha
            self._rows.update(net._rows)
        self.meta = nn.Sequential(nn.Linear(n * len(self.branches), space.config.hidden), nn.ReLU(), nn.Linear(space.config.hidden, n))

    @Supernet.relaxation.setter
    def relaxation(self, name: str) -> None:  # the strategy's relaxation reaches every group network
        Supernet.relaxation.fset(self, name)
        for net in self.branches:
            net.relaxation = name

    def forward(self, x):
        scores = [net(GROUPS[g][1](x)) for g, net in zip(self.space.config.groups, self.branches)]
        return self.meta(torch.cat(scores, 1))

    def arch_groups(self):
        return {k: ps for net in self.branches for k, ps in net.arch_groups().items()}


class ColorNasNetwork(nn.Module):
    """The evaluation network: each group's DARTS network of the genotype, then the meta-learner."""

    def __init__(self, space: "ColorNasSpace", genotype: Genotype, task: Task):
        super().__init__()
        n = task.num_classes
        self.groups = list(space.config.groups)
        self.branches = nn.ModuleList(
            DartsNetwork(sub, genotype, Task((GROUPS[g][0], *task.input_shape[1:]), n)) for g, sub in space.group_spaces().items()
        )
        self.meta = nn.Sequential(nn.Linear(n * len(self.branches), space.config.hidden), nn.ReLU(), nn.Linear(space.config.hidden, n))

    def forward(self, x):
        return self.meta(torch.cat([net(GROUPS[g][1](x)) for g, net in zip(self.groups, self.branches)], 1))


@register_space("colornas")
class ColorNasSpace(SearchSpace):
    """Per colour group a DARTS-cell network with its own normal and reduce α, fused by an MLP."""

    Config = ColorNasConfig
    default_parser = "darts"
    tiny_config = {"groups": ["rgb", "rb", "rgby"], "C": 4, "layers": 3, "nodes": 2, "hidden": 8}
    tiny_task = Task((3, 8, 8), 4)

    def group_spaces(self) -> dict[str, _GroupSpace]:
        c = self.config
        kw = dict(C=c.C, layers=c.layers, nodes=c.nodes, ops=c.ops, auxiliary=False)
        return {g: _GroupSpace(g, **kw) for g in c.groups}

    def check_task(self, task: Task) -> None:
        if len(task.input_shape) != 3 or task.input_shape[0] != 3 or task.num_classes < 1:
            raise DnasError(f"space 'colornas' needs labelled RGB images (3, H, W); got input {task.input_shape}, {task.num_classes} classes")

    def decisions(self):
        return [d for sub in self.group_spaces().values() for d in sub.decisions()]

    def supernet(self, task: Task) -> ColorNasSupernet:
        return ColorNasSupernet(self, task)

    def build_network(self, genotype: Genotype, task: Task) -> ColorNasNetwork:
        self.validate(genotype)
        self.check_task(task)
        return ColorNasNetwork(self, genotype, task)

    def _sub_genotype(self, sub: _GroupSpace, genotype: Genotype) -> Genotype:
        names = {d.name for d in sub.decisions()}
        return sub.genotype({k: v for k, v in genotype.choices.items() if k in names})

    def validate(self, genotype: Genotype) -> None:
        super().validate(genotype)
        for sub in self.group_spaces().values():  # DARTS' node rules, per group
            sub.validate(self._sub_genotype(sub, genotype))

    def random_genotype(self, rng: random.Random) -> Genotype:
        choices: dict[str, Any] = {}
        for sub in self.group_spaces().values():
            choices.update(sub.random_genotype(rng).choices)
        return self.genotype(choices)

    def space_size(self) -> float:
        n = 1.0
        for sub in self.group_spaces().values():
            n *= sub.space_size()
        return n
