"""A user-defined space registered from outside the package: an MLP whose hidden layers each
choose an activation. Used by the tests (and as the README's example of a plugin)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from dnas import Decision, SearchSpace, Supernet, Task, register_space

ACTIVATIONS = {"tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus, "identity": nn.Identity}


@dataclass
class ToyConfig:
    width: int = 16
    layers: int = 2


class ToySupernet(Supernet):
    def __init__(self, space: "ToySpace", task: Task):
        super().__init__(space, task)
        w = space.config.width
        self.inp = nn.Linear(math.prod(task.input_shape), w)
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(space.config.layers))
        self.acts = [make() for make in ACTIVATIONS.values()]
        self.out = nn.Linear(w, task.num_classes)
        self.add_alpha("layers", space.decisions())

    def forward(self, x):
        h, W = self.inp(x.flatten(1)), self.mixing_weights("layers")
        for i, lin in enumerate(self.hidden):
            z = lin(h)
            h = sum(W[i, k] * act(z) for k, act in enumerate(self.acts))
        return self.out(h)


@register_space("toy-mlp")
class ToySpace(SearchSpace):
    Config = ToyConfig
    tiny_task = Task((3, 8, 8), 4)

    def decisions(self):
        return [Decision(f"layer{i}", tuple(ACTIVATIONS)) for i in range(self.config.layers)]

    def supernet(self, task):
        return ToySupernet(self, task)

    def build_network(self, genotype, task):
        self.validate(genotype)
        w = self.config.width
        layers = [nn.Flatten(), nn.Linear(math.prod(task.input_shape), w)]
        for i in range(self.config.layers):
            layers += [nn.Linear(w, w), ACTIVATIONS[genotype.choices[f"layer{i}"][0]]()]
        return nn.Sequential(*layers, nn.Linear(w, task.num_classes))
