"""Space ``colornas``: ColorNAS (Heuillet 2023, thesis App. A): one searched DARTS network per
colour channel, their feature maps fused by an MLP meta-learner.

The colour ``model`` decides the channels (thesis Algorithm 7):

- ``rgb``: R, G, B (3 networks); ``rb``: R, B (2 networks);
- ``rgby``: R' = R − min(R, G), G' = G − min(R, G), B, Y = R' + G' (4 networks);
- ``r``, ``g``, ``b``: that channel alone (1 network).

Each channel feeds its own DARTS search network (the cells of ``dnas.spaces.darts``, reused) with
its own normal and reduce α; each network's final feature map, globally average-pooled, is
concatenated with the others' and an MLP meta-learner (one hidden layer) gives the logits.
Decisions are the DARTS edges prefixed by the model and channel: ``rgby_y_normal.node0.edge1``.
The default parser keeps, per edge, the best op whose weight is ≥ 0.7 (thesis App. A; a node left
with nothing keeps its best op). The thesis searches with β-DARTS' hyper-parameters: ``darts`` with
``beta_decay`` (see ``experiments/colornas_*.yaml``).

Options beside the thesis' design: ``per_channel: false`` builds one multi-channel network per
name in ``groups`` (``rgb`` = a 3-channel network, ``rb``, ``rgby``, ...; dnas' earlier design), and
``fusion: scores`` concatenates the networks' class scores instead of their features.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dnas.errors import DnasError
from dnas.genotype import Genotype
from dnas.parsers import _keep_above
from dnas.registry import register_parser, register_space
from dnas.space import SearchSpace, Task
from dnas.spaces.darts import DartsNetwork, DartsSpace, DartsSupernet
from dnas.supernet import Supernet

Channel = Callable[[torch.Tensor], torch.Tensor]


def _rgby(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    m = torch.minimum(r, g)
    r2, g2 = r - m, g - m  # R' = R − min(R, G), G' = G − min(R, G)
    return torch.cat([r2, g2, b, r2 + g2], 1)


def _plane(i: int) -> Channel:
    return lambda x: x[:, i : i + 1]


def _rgby_plane(i: int) -> Channel:
    return lambda x: _rgby(x)[:, i : i + 1]


#: colour model -> its channels, in order: name -> x (B, 3, H, W) -> (B, 1, H, W) (thesis Algorithm 7)
CHANNELS: dict[str, dict[str, Channel]] = {
    "rgb": {"r": _plane(0), "g": _plane(1), "b": _plane(2)},
    "rb": {"r": _plane(0), "b": _plane(2)},
    "rgby": {"r": _rgby_plane(0), "g": _rgby_plane(1), "b": _rgby_plane(2), "y": _rgby_plane(3)},
    "r": {"r": _plane(0)},
    "g": {"g": _plane(1)},
    "b": {"b": _plane(2)},
}

#: group name -> (number of channels, x (B, 3, H, W) -> the group's channels) (``per_channel: false``)
GROUPS: dict[str, tuple[int, Any]] = {
    "rgb": (3, lambda x: x),
    "rb": (2, lambda x: x[:, [0, 2]]),
    "rgby": (4, _rgby),
    "r": (1, lambda x: x[:, 0:1]),
    "g": (1, lambda x: x[:, 1:2]),
    "b": (1, lambda x: x[:, 2:3]),
}

THRESHOLD = 0.7  # ColorNAS' operation threshold (thesis App. A)


@register_parser("colornas")
def colornas_parser(decisions, weights, threshold: float = THRESHOLD) -> dict[str, list[str]]:
    """ColorNAS: per edge the best op whose weight is ≥ ``threshold`` (0.7); a node left with none
    keeps its single best op."""
    return _keep_above(decisions, weights, threshold, 1)


@dataclass
class ColorNasConfig:
    model: Literal["rgb", "rb", "rgby", "r", "g", "b"] = "rgb"  # colour model: one network per channel
    per_channel: bool = True  # thesis: a network per channel of `model`; false: a network per name in `groups`
    groups: list[str] = field(default_factory=lambda: ["rgb", "rb", "rgby"])  # only with per_channel: false
    fusion: Literal["features", "scores"] = "features"  # what the meta-learner reads (thesis: feature maps)
    C: int = 16  # initial channels of each network
    layers: int = 8  # cells per network
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


class _BranchSpace(DartsSpace):
    """The DARTS space of one branch: its cell keys (α keys, decision prefixes) carry the branch name."""

    def __init__(self, branch: str, **config: Any):
        super().__init__(**config)
        self.branch = branch

    def cell_key(self, i: int) -> str:
        return f"{self.branch}_{super().cell_key(i)}"  # "." is not allowed in parameter names


def _meta(width: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def _fuse_features(nets: list[nn.Module]) -> int:
    """Make each network return its pooled feature map instead of class scores; the total width."""
    width = 0
    for net in nets:
        width += net.classifier.in_features
        net.classifier = nn.Identity()
    return width


class ColorNasSupernet(Supernet):
    def __init__(self, space: ColorNasSpace, task: Task):
        super().__init__(space, task)
        space.check_task(task)
        n = task.num_classes
        self.names = list(space.branches())
        self.branches = nn.ModuleList()
        for name, sub in space.branch_spaces().items():
            net = DartsSupernet(sub, Task((space.branches()[name][0], *task.input_shape[1:]), n))
            self.branches.append(net)
            for key, alpha in net.alphas.items():  # the branch's α are this supernet's α (same tensors)
                self.alphas[key] = alpha
            self._rows.update(net._rows)
        width = _fuse_features(list(self.branches)) if space.config.fusion == "features" else n * len(self.branches)
        self.meta = _meta(width, space.config.hidden, n)

    @Supernet.relaxation.setter
    def relaxation(self, name: str) -> None:  # the strategy's relaxation reaches every branch network
        Supernet.relaxation.fset(self, name)
        for net in self.branches:
            net.relaxation = name

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What each network hands the meta-learner: its pooled features (or class scores)."""
        split = self.space.branches()
        return [net(split[name][1](x)) for name, net in zip(self.names, self.branches)]

    def forward(self, x):
        return self.meta(torch.cat(self.branch_outputs(x), 1))

    def arch_groups(self):
        return {k: ps for net in self.branches for k, ps in net.arch_groups().items()}


class ColorNasNetwork(nn.Module):
    """The evaluation network: each branch's DARTS network of the genotype, then the meta-learner."""

    def __init__(self, space: ColorNasSpace, genotype: Genotype, task: Task):
        super().__init__()
        n = task.num_classes
        self.split = space.branches()
        self.names = list(self.split)
        self.branches = nn.ModuleList(
            DartsNetwork(sub, genotype, Task((self.split[name][0], *task.input_shape[1:]), n))
            for name, sub in space.branch_spaces().items()
        )
        width = _fuse_features(list(self.branches)) if space.config.fusion == "features" else n * len(self.branches)
        self.meta = _meta(width, space.config.hidden, n)

    def forward(self, x):
        return self.meta(torch.cat([net(self.split[name][1](x)) for name, net in zip(self.names, self.branches)], 1))


@register_space("colornas")
class ColorNasSpace(SearchSpace):
    """Per colour channel (or channel group) a DARTS-cell network with its own normal and reduce α,
    fused by an MLP meta-learner."""

    Config = ColorNasConfig
    default_parser = "colornas"
    tiny_config = {"model": "rgby", "C": 4, "layers": 3, "nodes": 2, "hidden": 8}
    tiny_task = Task((3, 8, 8), 4)

    def branches(self) -> dict[str, tuple[int, Channel]]:
        """Branch name -> (input channels, x -> its input): ``{model}_{channel}`` per channel of the
        colour model (thesis), or the ``groups`` with ``per_channel: false``."""
        c = self.config
        if c.per_channel:
            return {f"{c.model}_{ch}": (1, fn) for ch, fn in CHANNELS[c.model].items()}
        return {g: GROUPS[g] for g in c.groups}

    def branch_spaces(self) -> dict[str, _BranchSpace]:
        c = self.config
        kw = {"C": c.C, "layers": c.layers, "nodes": c.nodes, "ops": c.ops, "auxiliary": False}
        return {name: _BranchSpace(name, **kw) for name in self.branches()}

    def check_task(self, task: Task) -> None:
        if len(task.input_shape) != 3 or task.input_shape[0] != 3 or task.num_classes < 1:
            raise DnasError(f"space 'colornas' needs labelled RGB images (3, H, W); got input {task.input_shape}, {task.num_classes} classes")

    def decisions(self):
        return [d for sub in self.branch_spaces().values() for d in sub.decisions()]

    def supernet(self, task: Task) -> ColorNasSupernet:
        return ColorNasSupernet(self, task)

    def build_network(self, genotype: Genotype, task: Task) -> ColorNasNetwork:
        self.validate(genotype)
        self.check_task(task)
        return ColorNasNetwork(self, genotype, task)

    def _sub_genotype(self, sub: _BranchSpace, genotype: Genotype) -> Genotype:
        names = {d.name for d in sub.decisions()}
        return sub.genotype({k: v for k, v in genotype.choices.items() if k in names})

    def validate(self, genotype: Genotype) -> None:
        super().validate(genotype)
        for sub in self.branch_spaces().values():  # DARTS' node rules, per branch
            sub.validate(self._sub_genotype(sub, genotype))

    def random_genotype(self, rng: random.Random) -> Genotype:
        choices: dict[str, Any] = {}
        for sub in self.branch_spaces().values():
            choices.update(sub.random_genotype(rng).choices)
        return self.genotype(choices)

    def categorical(self) -> dict[str, tuple[str, ...]]:
        """Each branch's DARTS cell encoding (a node's input pair and its two ops): every sample is a
        valid genotype, so TPE and random search waste no trial on the 'none' op or a node without input."""
        return {k: v for sub in self.branch_spaces().values() for k, v in sub.categorical().items()}

    def from_categorical(self, sample: dict[str, str]) -> Genotype:
        choices: dict[str, Any] = {}
        for sub in self.branch_spaces().values():
            names = sub.categorical()
            choices.update(sub.from_categorical({k: sample[k] for k in names}).choices)  # validated per branch
        return self.genotype(choices)

    def space_size(self) -> float:
        n = 1.0
        for sub in self.branch_spaces().values():
            n *= sub.space_size()
        return n
