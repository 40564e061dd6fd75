"""NASiam (Heuillet et al.): search the projector and predictor MLP heads of a siamese SSL framework.

A head is a cell of up to n (projector, default 6) or m (predictor, default 4) layers; each layer is a
mixed op over the 7-op MLP space S (``dnas.spaces.ops.MLP_OPS``; S' drops the two pools), eq. (5.3), and the
result keeps the argmax per layer. The framework (simsiam, simclr, mocov2, byol) is a space option;
frameworks without a predictor search the projector only.

Layout (a choice where the thesis is silent): every head ends in a fixed output linear layer, as
SimSiam's own heads do (projector: linear + BN to ``dim``; predictor: linear to ``dim`` with no BN, the
"predictor's last layer" without BN), so the searched layers all carry their BN. The projector's layers
run at ``proj_hidden`` (default: the backbone's feature width, SimSiam's ``prev_dim``), the predictor's
at ``pred_dim`` (bottleneck). Where a layer changes width, identity and the pools resize the features
by parameter-free 1-D adaptive average pooling.

Example:
    >>> import dnas
    >>> dnas.search(space="nasiam-mlp", strategy="darts", data="digits",
    ...             space_config={"backbone": "tiny", "dim": 64, "pred_dim": 16})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import nn

from dnas.genotype import Genotype
from dnas.registry import register_space
from dnas.space import Decision, SearchSpace, Task
from dnas.spaces.ops import MLP_OP_SETS
from dnas.spaces.siamese import FRAMEWORKS, Siamese, build_backbone
from dnas.supernet import Supernet

HEADS = ("projector", "predictor")


@dataclass
class NASiamConfig:
    """Defaults: SimSiam on CIFAR (dim 2048, pred_dim 512, ResNet18 with a CIFAR stem), NASiam's
    6-layer projector and 4-layer predictor cells."""

    framework: Literal["simsiam", "simclr", "mocov2", "byol"] = "simsiam"
    backbone: str = "resnet18-cifar"  # tiny, resnet18-cifar, resnet18, resnet50, timm:NAME
    backbone_width: int = 32  # feature width of the ``tiny`` backbone
    pretrained: bool = False  # timm backbones only
    proj_layers: int = 6
    pred_layers: int = 4
    ops: Literal["S", "S'"] = "S"  # S' = no pools (ablation)
    proj_hidden: int = 0  # 0: the backbone's feature width
    dim: int = 2048  # projector output (MoCo code: 128)
    pred_dim: int = 512  # predictor bottleneck
    temperature: float | None = None  # None: SimCLR 0.5, MoCo v2 0.1 (NASiam code)
    momentum: float | None = None  # None: MoCo v2 0.999, BYOL 0.996
    queue_size: int = 4096  # MoCo v2 K
    alpha_std: float = field(default=1e-3, metadata={"code": 0.0})  # α start as N(0, std²) (DARTS); the NASiam code: zeros

    def check(self):
        if self.proj_layers < 1 or self.pred_layers < 1:
            return "proj_layers and pred_layers must be >= 1"
        if min(self.dim, self.pred_dim, self.backbone_width) < 1 or self.proj_hidden < 0:
            return "dim, pred_dim and backbone_width must be >= 1 (proj_hidden >= 0)"
        if self.momentum is not None and not 0 <= self.momentum < 1:
            return "momentum must be in [0, 1)"
        if self.queue_size < 1:
            return "queue_size must be >= 1"
        if self.alpha_std < 0:
            return "alpha_std must be >= 0"
        if self.backbone not in ("tiny", "resnet18-cifar", "resnet18", "resnet50") and not self.backbone.startswith("timm:"):
            return f"unknown backbone '{self.backbone}'; choose tiny, resnet18-cifar, resnet18, resnet50 or timm:NAME"
        return None


class MLPHead(nn.Module):
    """Searched layers then a fixed output linear. ``choices=None``: every layer mixes all ops
    (supernet, eq. 5.3); else one op per layer (identity layers that keep the width are dropped)."""

    def __init__(self, widths: Sequence[int], table, out_dim: int, out_bn: bool, choices: Sequence[str] | None = None):
        super().__init__()
        self.mixed = choices is None
        layers = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            if self.mixed:
                layers.append(nn.ModuleList(f(d_in, d_out, True) for f in table.values()))
            elif not (choices[i] == "identity" and d_in == d_out):
                layers.append(table[choices[i]](d_in, d_out, True))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Sequential(nn.Linear(widths[-1], out_dim, bias=not out_bn), *([nn.BatchNorm1d(out_dim)] if out_bn else []))

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if self.mixed:
                x = sum(w * op(x) for w, op in zip(weights[i], layer))  # NASiam eq. (5.3)
            else:
                x = layer(x)
        return self.out(x)


def _defaults(cfg: NASiamConfig) -> tuple[float, float]:
    t = cfg.temperature if cfg.temperature is not None else (0.1 if cfg.framework == "mocov2" else 0.5)
    m = cfg.momentum if cfg.momentum is not None else (0.999 if cfg.framework == "mocov2" else 0.996)
    return t, m


class _Model(nn.Module, Siamese):
    """Backbone + heads + framework; ``forward(x)`` gives the backbone features (the representation)."""

    def _build(self, space: "NASiamSpace", task: Task, choices: dict[str, Sequence[str]] | None) -> None:
        cfg = space.config
        table = MLP_OP_SETS[cfg.ops]
        self.backbone, feat = build_backbone(cfg.backbone, task.input_shape[0], cfg.backbone_width, cfg.pretrained)
        hidden = cfg.proj_hidden or feat
        self.projector = MLPHead([feat] + [hidden] * cfg.proj_layers, table, cfg.dim, True,
                                 None if choices is None else [choices[f"projector.layer{i}"][0] for i in range(cfg.proj_layers)])
        self.predictor = None
        if FRAMEWORKS[cfg.framework][0]:
            self.predictor = MLPHead([cfg.dim] + [cfg.pred_dim] * cfg.pred_layers, table, cfg.dim, False,
                                     None if choices is None else [choices[f"predictor.layer{i}"][0] for i in range(cfg.pred_layers)])
        self.init_siamese(cfg.framework, cfg.dim, *_defaults(cfg), cfg.queue_size)
        self.feature_dim = feat

    def forward(self, x):
        return self.backbone(x)

    def loss(self, batch):
        return self.ssl_loss(batch)


class NASiamSupernet(Supernet, _Model):
    def __init__(self, space: "NASiamSpace", task: Task):
        Supernet.__init__(self, space, task)
        self._build(space, task, None)
        for head in self.space.heads():
            self.add_alpha(head, [d for d in space.decisions() if d.cell == head], init_std=space.config.alpha_std)

    def head_weights(self, head: str) -> torch.Tensor | None:
        return self.mixing_weights(head) if head in self.alphas else None

    def forward(self, x):
        return self.backbone(x)

    def data_free_forward(self, x):
        """Through the searched heads (``forward`` stops at the backbone), so α reach the output."""
        z = self.embed(x)
        return self.predictor(z, self.head_weights("predictor")) if self.predictor is not None else z

    def loss(self, batch):
        return self.ssl_loss(batch)


class NASiamNetwork(_Model):
    """The discrete heads of a genotype on the backbone, with the framework's loss."""

    def __init__(self, space: "NASiamSpace", genotype: Genotype, task: Task):
        super().__init__()
        self._build(space, task, genotype.choices)


@register_space("nasiam-mlp")
class NASiamSpace(SearchSpace):
    Config = NASiamConfig
    inputs = "images"
    offers = frozenset({"data", "alpha", "two_views", "functional", "data_free"})  # no "labels": self-supervised
    default_parser = "argmax"
    evaluation = "ssl"  # dnas train: SSL pretraining of the derived heads, then linear evaluation
    tiny_config = dict(backbone="tiny", backbone_width=8, proj_layers=2, pred_layers=2, dim=16, pred_dim=8, queue_size=16)
    tiny_task = Task((1, 8, 8), 0, two_views=True)

    def heads(self) -> tuple[str, ...]:
        return HEADS if FRAMEWORKS[self.config.framework][0] else HEADS[:1]

    def decisions(self) -> list[Decision]:
        ops = tuple(MLP_OP_SETS[self.config.ops])
        n = {"projector": self.config.proj_layers, "predictor": self.config.pred_layers}
        return [Decision(f"{h}.layer{i}", ops, cell=h) for h in self.heads() for i in range(n[h])]

    def supernet(self, task: Task) -> NASiamSupernet:
        return NASiamSupernet(self, task)

    def build_network(self, genotype: Genotype, task: Task) -> NASiamNetwork:
        self.validate(genotype)
        return NASiamNetwork(self, genotype, task)
