"""A non-timm model for the dario space: two bias-free linear blocks in ``layers`` (width → width)."""
import torch
from torch import nn


class Toy(nn.Module):
    def __init__(self, width: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(2))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def toy(width: int = 2) -> Toy:
    torch.manual_seed(1)
    return Toy(width)


def real_tensors_only(width: int = 2) -> Toy:
    """A factory that, like transformers' from_pretrained, refuses the meta device."""
    if torch.empty(1).device.type == "meta":
        raise RuntimeError("called under the meta device")
    return toy(width)


class _Blind(Toy):
    def forward(self, x):
        return super().forward(x) * 0  # the output, hence every proxy, ignores the blocks


def blind(width: int = 2) -> Toy:
    """A model whose output does not depend on its blocks: no proxy can rank its gates."""
    torch.manual_seed(1)
    return _Blind(width)


class _Stage(nn.Module):
    """Two width-keeping blocks, then a downsample that doubles the width (a Swin or CNN stage)."""

    def __init__(self, width: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(2))
        self.down = nn.Linear(width, 2 * width)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.down(x)


class Staged(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.layers = nn.ModuleList([_Stage(width), _Stage(2 * width)])

    def forward(self, x):
        for s in self.layers:
            x = s(x)
        return x


def staged(width: int = 4) -> Staged:
    """A hierarchical model: its stages change the hidden width, the blocks inside them keep it."""
    torch.manual_seed(1)
    return Staged(width)


class _Residual(nn.Module):
    """x + relu(W x), or a projection to another width when it has one (a ResNet stage's first block)."""

    def __init__(self, width: int, out: int | None = None):
        super().__init__()
        self.fc = nn.Linear(width, out or width)
        self.proj = nn.Linear(width, out, bias=False) if out else None

    def forward(self, x):
        return (x if self.proj is None else self.proj(x)) + torch.relu(self.fc(x))


class ResNetish(nn.Module):
    """ResNet's layout: ``layer1``, ``layer2`` of residual blocks, the first of ``layer2`` widening."""

    def __init__(self, width: int = 4, depth: int = 2):
        super().__init__()
        self.layer1 = nn.Sequential(*(_Residual(width) for _ in range(depth)))
        self.layer2 = nn.Sequential(_Residual(width, 2 * width), *(_Residual(2 * width) for _ in range(depth - 1)))

    def forward(self, x):
        return self.layer2(self.layer1(x))


def resnetish(width: int = 4, depth: int = 2) -> ResNetish:
    torch.manual_seed(2)
    return ResNetish(width, depth)


class _NanOnAbs(Toy):
    """sqrt(−Σh): finite for the signed weights −0.5·I then 0.5·I where the first block's gate is open, NaN on |θ|
    (an attention whose normaliser turns negative, as EfficientViT's does on |θ|)."""

    def forward(self, x):
        return torch.sqrt(-super().forward(x).sum(-1, keepdim=True))  # its gradient is NaN too where −Σh < 0


def nan_on_abs(width: int = 2) -> Toy:
    m = _NanOnAbs(width)
    with torch.no_grad():
        m.layers[0].weight.copy_(-0.5 * torch.eye(width))
        m.layers[1].weight.copy_(0.5 * torch.eye(width))
    return m
