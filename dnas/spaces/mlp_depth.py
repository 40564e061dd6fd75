"""Space ``mlp-depth``: depth search for an MLP (thesis §6.2, "depth search first").

A fixed input layer (Linear + ReLU), then up to ``max_layers`` searched layers, each choosing
{``linear_relu``, ``identity``} (identity = the layer is dropped), then a fixed output layer. The
supernet mixes both options per layer with softmax(α). Regression tasks (``num_classes = 0``,
``out_dim`` targets) use the mean squared error, classification tasks the cross-entropy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnas.errors import DnasError
from dnas.registry import register_space
from dnas.space import Decision, SearchSpace, Task
from dnas.supernet import Supernet

OPTIONS = ("linear_relu", "identity")


def output_dim(task: Task) -> int:
    """Width of an MLP's output layer: the classes, or the regression targets."""
    n = task.num_classes or task.out_dim
    if n < 1:
        raise DnasError("this MLP space needs labels: a classification task or a regression task (--target COLS)")
    return n


def task_loss(out: torch.Tensor, y: torch.Tensor, task: Task) -> dict[str, torch.Tensor]:
    """Cross-entropy (+ accuracy) for classes, mean squared error for regression targets."""
    if task.num_classes:
        return {"loss": F.cross_entropy(out, y), "acc": (out.argmax(1) == y).float().mean().detach()}
    return {"loss": F.mse_loss(out, y.reshape(out.shape).to(out.dtype))}


@dataclass
class MlpDepthConfig:
    width: int = 64
    max_layers: int = 4

    def check(self):
        if self.width < 1 or self.max_layers < 1:
            return "width and max_layers must be >= 1"
        return None


class MlpDepthSupernet(Supernet):
    def __init__(self, space: "MlpDepthSpace", task: Task):
        super().__init__(space, task)
        w = space.config.width
        self.inp = nn.Linear(math.prod(task.input_shape), w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(space.config.max_layers))
        self.out = nn.Linear(w, output_dim(task))
        self.add_alpha("layers", space.decisions())

    def forward(self, x):
        h, W = torch.relu(self.inp(x.flatten(1))), self.mixing_weights("layers")
        for i, lin in enumerate(self.hidden):
            h = W[i, 0] * torch.relu(lin(h)) + W[i, 1] * h  # DARTS eq. (2.7) over {linear+ReLU, identity}
        return self.out(h)

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return task_loss(self(x), y, self.task)


@register_space("mlp-depth")
class MlpDepthSpace(SearchSpace):
    """Up to ``max_layers`` hidden layers, each {linear+ReLU, identity}, between fixed input/output layers."""

    Config = MlpDepthConfig
    tiny_config = {"width": 8, "max_layers": 3}
    tiny_task = Task((5,), 0, out_dim=2)

    def decisions(self) -> list[Decision]:
        return [Decision(f"layer{i}", OPTIONS) for i in range(self.config.max_layers)]

    def supernet(self, task: Task) -> MlpDepthSupernet:
        return MlpDepthSupernet(self, task)

    def build_network(self, genotype, task: Task) -> nn.Module:
        self.validate(genotype)
        w = self.config.width
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(math.prod(task.input_shape), w), nn.ReLU()]
        for d in self.decisions():
            if genotype.choices[d.name][0] == "linear_relu":
                layers += [nn.Linear(w, w), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(w, output_dim(task)))

    def describe(self, genotype) -> str:
        kept = sum(genotype.choices[d.name][0] == "linear_relu" for d in self.decisions())
        return f"depth: {kept} of {self.config.max_layers} searched layers kept (+ input and output layers)"
