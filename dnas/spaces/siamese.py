"""Siamese self-supervised frameworks (SimSiam, SimCLR, MoCo v2, BYOL): losses, backbones, heads.

The framework is a parameter (``framework="simsiam"``), not a copy: :class:`Siamese` is mixed into the
``nasiam-mlp`` supernet and into its discrete network, so both compute the same loss. Sources:
SimSiam (Chen & He, 2021; NASiam eqs. 5.1, 5.2), SimCLR (Chen et al., 2020, NT-Xent), MoCo v2
(Chen et al., 2020, InfoNCE + momentum key encoder + queue), BYOL (Grill et al., 2020).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dnas.errors import DnasError, first_line

#: framework -> (has a predictor, has a momentum target)
FRAMEWORKS: dict[str, tuple[bool, bool]] = {
    "simsiam": (True, False),
    "simclr": (False, False),
    "mocov2": (False, True),
    "byol": (True, True),
}


# -- losses -----------------------------------------------------------------------------------------
def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``D(p, z) = −(p/‖p‖₂)·(z/‖z‖₂)``, averaged over the batch (NASiam eq. 5.2)."""
    return -F.cosine_similarity(p, z, dim=1).mean()  # eq. (5.2); = −(p/‖p‖)·(z/‖z‖) for nonzero p, z


def simsiam_loss(p1, p2, z1, z2) -> torch.Tensor:
    """``L = ½ D(p1, sg(z2)) + ½ D(p2, sg(z1))`` (NASiam eq. 5.1): no gradient reaches the z branch."""
    return 0.5 * neg_cosine(p1, z2.detach()) + 0.5 * neg_cosine(p2, z1.detach())  # eq. (5.1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the 2N views must pick its partner among the 2N − 1 others by
    cosine similarity / τ (cross-entropy), averaged over the 2N views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """MoCo's InfoNCE: logits ``[q·k₊, q·queue] / τ`` with the positive at index 0 (q, k, queue
    L2-normalised; k and the queue carry no gradient)."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.detach().t()], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def byol_loss(p1, p2, t1, t2) -> torch.Tensor:
    """BYOL's symmetrised normalised MSE ``‖p̄ − t̄‖² = 2 − 2 cos(p, t)`` against the momentum target
    of the other view (targets carry no gradient); summed over the two views as in BYOL."""
    def mse(p, t):
        return (F.normalize(p, dim=1) - F.normalize(t.detach(), dim=1)).pow(2).sum(1).mean()

    return mse(p1, t2) + mse(p2, t1)


@torch.no_grad()
def momentum_update(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], m: float) -> None:
    """``ξ ← m ξ + (1 − m) θ`` (MoCo / BYOL momentum target)."""
    for t, o in zip(target, online):
        t.mul_(m).add_(o.detach(), alpha=1 - m)


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """FIFO: write ``keys`` over the oldest rows of ``queue`` (wrapping around), advance ``ptr``."""
    K, n = queue.shape[0], keys.shape[0]
    keys = keys[-K:]  # a batch larger than the queue keeps its newest K keys
    idx = (int(ptr) + torch.arange(keys.shape[0], device=queue.device)) % K
    queue[idx] = F.normalize(keys, dim=1).to(queue.dtype)
    ptr.fill_((int(ptr) + n) % K)


def collapse_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor (SimSiam §4.1): mean over dimensions of the per-dimension std of z/‖z‖;
    about 1/√d for well-spread outputs, 0 when every output is the same vector."""
    return F.normalize(z.detach().float(), dim=1).std(0).mean()


# -- backbones --------------------------------------------------------------------------------------
class TinyConv(nn.Module):
    """Two 3x3 conv-BN-ReLU blocks and global average pooling (tests, digits)."""

    def __init__(self, in_ch: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = width

    def forward(self, x):
        return self.body(x)


def build_backbone(name: str, in_ch: int, width: int = 32, pretrained: bool = False) -> tuple[nn.Module, int]:
    """A feature extractor (classifier removed) and its feature width.

    ``tiny`` (:class:`TinyConv`), ``resnet18-cifar`` (torchvision ResNet18 with a 3x3 stride-1 stem and
    no max-pool, as SimSiam on CIFAR), ``resnet18``/``resnet50`` (torchvision), ``timm:NAME`` (any timm
    model, ``num_classes=0``).
    """
    if name == "tiny":
        m = TinyConv(in_ch, width)
        return m, m.num_features
    if name in ("resnet18", "resnet50", "resnet18-cifar"):
        import torchvision

        if pretrained:
            raise DnasError("pretrained torchvision backbones are not loaded by dnas; use backbone=timm:NAME with pretrained=true")
        m = getattr(torchvision.models, name.split("-")[0])(weights=None)
        if name == "resnet18-cifar":
            m.conv1 = nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        elif in_ch != 3:
            m.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        dim = m.fc.in_features
        m.fc = nn.Identity()
        return m, dim
    if name.startswith("timm:"):
        import timm

        try:
            m = timm.create_model(name[5:], pretrained=pretrained, num_classes=0, in_chans=in_ch)
        except RuntimeError as e:
            raise DnasError(f"timm could not build backbone '{name[5:]}' ({first_line(e, 160)})") from None
        return m, m.num_features
    raise DnasError(f"unknown backbone '{name}'; choose tiny, resnet18-cifar, resnet18, resnet50 or timm:NAME")


# -- the framework ----------------------------------------------------------------------------------
class Siamese:
    """Mixin of an ``nn.Module`` with ``backbone``, ``projector`` and optional ``predictor`` heads
    (called as ``head(x, weights)``); adds the framework's momentum target, queue and loss.

    The momentum target is updated and the queue filled at each training-mode :meth:`ssl_loss`, as
    MoCo does in its forward (once per call: an α step and a weight step are two calls).
    """

    framework: str
    temperature: float
    momentum: float

    def init_siamese(self, framework: str, dim: int, temperature: float, momentum: float, queue_size: int) -> None:
        if framework not in FRAMEWORKS:
            raise DnasError(f"unknown framework '{framework}'; choose one of: {', '.join(FRAMEWORKS)}")
        self.framework, self.temperature, self.momentum = framework, temperature, momentum
        self.target = None
        if FRAMEWORKS[framework][1]:
            self.target = nn.ModuleDict({"backbone": copy.deepcopy(self.backbone), "projector": copy.deepcopy(self.projector)})
            for p in self.target.parameters():
                p.requires_grad_(False)
        if framework == "mocov2":
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def head_weights(self, head: str) -> torch.Tensor | None:
        """Mixing weights of a searched head (the supernet's); None for a discrete network."""
        return None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projector output z = g(f(x))."""
        return self.projector(self.backbone(x), self.head_weights("projector"))

    def _target_embed(self, x: torch.Tensor) -> torch.Tensor:
        w = self.head_weights("projector")
        with torch.no_grad():
            return self.target["projector"](self.target["backbone"](x), None if w is None else w.detach())

    def online_parameters(self) -> list[torch.Tensor]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def ssl_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        (x1, x2), _ = batch
        z1, z2 = self.embed(x1), self.embed(x2)
        out: dict[str, torch.Tensor] = {"std": collapse_std(z1)}
        fw = self.framework
        if fw == "simsiam":
            w = self.head_weights("predictor")
            loss = simsiam_loss(self.predictor(z1, w), self.predictor(z2, w), z1, z2)
        elif fw == "simclr":
            loss = nt_xent(z1, z2, self.temperature)
        else:
            if self.training and torch.is_grad_enabled():
                momentum_update(self.target.parameters(), self.online_parameters(), self.momentum)
                for tb, ob in zip(self.target.buffers(), [*self.backbone.buffers(), *self.projector.buffers()]):
                    tb.copy_(ob)  # BN statistics follow the online network
            t1, t2 = self._target_embed(x1), self._target_embed(x2)
            if fw == "byol":
                w = self.head_weights("predictor")
                loss = byol_loss(self.predictor(z1, w), self.predictor(z2, w), t1, t2)
            else:  # mocov2: q = view 1, k = momentum key of view 2
                loss = info_nce(z1, t2, self.queue.clone(), self.temperature)  # the enqueue below is in place
                if self.training and torch.is_grad_enabled():
                    enqueue(self.queue, self.queue_ptr, t2)
        out["loss"] = loss
        return out


def std_warning(std: float, dim: int) -> str | None:
    """A warning when the collapse monitor falls toward 0 (below 0.1 of the healthy 1/√d)."""
    if std < 0.1 / math.sqrt(dim):
        return f"collapse: the std of the normalised outputs is {std:.2e} (about {1 / math.sqrt(dim):.2e} is healthy)"
    return None
