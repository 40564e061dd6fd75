"""Proxy term ``calibration``: a data-aware addition to DARIO's data-free proxies (beyond the thesis).

On N unlabeled images of a dataset, the term keeps the gated model's pooled features close to the
unpruned model's: ``D = 1 − mean_i cos(f̃_i(α), f_i)`` (``distance: cosine``, the default) or
``D = Σ_i ‖f̃_i(α) − f_i‖² / Σ_i ‖f_i‖²`` (``distance: mse``), where ``f_i`` are the features of the
model with no gate (computed once) and ``f̃_i(α)`` those of the gated model with its own weights θ.
The proxy strategy minimises ``S(θ̃(α)) + weight · c · D``; ∂D/∂α flows through the gates (eq. 6.1, 6.2).
With ``scale: grad`` (the default) ``c = ‖∂S/∂α‖ / ‖∂D/∂α‖`` at the starting α, so ``weight`` is relative:
1 gives the term as strong a pull on α as the proxy's (S and D differ by orders of magnitude, and
their ratio changes with the model and the proxy); ``scale: none`` keeps ``c = 1``.

Enable it in a ``proxy`` strategy config: ``terms: {calibration: {data: digits, size: 16}}``, or with
``dnas prune --calibration D --calibration-size N``. The data-free proxies stay the default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dnas.errors import DnasError
from dnas.strategies.proxy import register_proxy_term


@dataclass
class CalibrationConfig:
    data: str = "digits"  # any dnas dataset (labels unused): digits, synthetic, imagefolder:PATH, ...
    size: int = 16  # N calibration images, a seeded sample of the training split
    weight: float = 1.0  # the term's weight next to the data-free proxy
    distance: Literal["cosine", "mse"] = "cosine"
    scale: Literal["grad", "none"] = "grad"  # grad: weight relative to the proxy's α-gradient at the start
    data_dir: str = "data"
    download: bool = False  # fetch a torchvision dataset missing under data_dir
    seed: int = 0

    def check(self):
        if self.size < 1 or self.weight < 0:
            return "calibration size must be >= 1 and weight >= 0"
        return None


def model_images(data: str, data_dir: str, shape, model: nn.Module | None = None, download: bool = False):
    """The datasets of ``data`` for a pretrained image model taking ``shape`` = (C, H, W): an
    ``imagefolder:PATH`` is read at the model's side (not 32 px then upsampled) and normalised with the
    model's mean and std (timm's ``pretrained_cfg``), as the model saw its training images; the built-in
    datasets come as they are (already normalised, fitted later by :func:`fit_input`)."""
    from dnas.engine.data import DataConfig, load_datasets

    own = data.startswith("imagefolder:")
    ds = load_datasets(DataConfig(name=data, data_dir=data_dir, download=download, augment=False, image_size=int(shape[-1]) if own else 32))
    norm = (getattr(model, "pretrained_cfg", None) or {}) if own and model is not None else {}
    if norm.get("mean") and norm.get("std"):
        from torchvision import transforms as T

        for split in (ds.train, ds.test):
            base = getattr(split, "dataset", split)  # a Subset of one ImageFolder: both splits share its transform
            if isinstance(getattr(base, "transform", None), T.Compose) and not any(isinstance(t, T.Normalize) for t in base.transform.transforms):
                base.transform = T.Compose([*base.transform.transforms, T.Normalize(norm["mean"], norm["std"])])
    return ds


def fit_input(x: torch.Tensor, shape) -> torch.Tensor:
    """Images ``x`` (B, C, H, W) made to fit a model taking ``shape`` = (C, H, W): grey channels
    repeated (or colour averaged to grey), then bilinear resize."""
    c, h, w = (int(v) for v in shape)
    if x.shape[1] != c:
        x = x.repeat(1, c, 1, 1) if x.shape[1] == 1 else x.mean(1, keepdim=True).expand(-1, c, -1, -1)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x


def pooled_features(model: nn.Module, x: torch.Tensor, call=None) -> torch.Tensor:
    """The pooled, pre-classifier features of ``model`` on ``x`` (B, D): the input of timm's classifier
    (``get_classifier()``), else the flattened output. ``call(x)`` runs the forward (default ``model``),
    so a gated supernet can stand in for its model."""
    seen: list[torch.Tensor] = []
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    hook = head.register_forward_pre_hook(lambda m, args: seen.append(args[0])) if isinstance(head, nn.Module) else None
    try:
        out = (call or model)(x)
    finally:
        if hook is not None:
            hook.remove()
    f = seen[-1] if seen else out
    if not isinstance(f, torch.Tensor):
        raise DnasError(f"the model returns a {type(f).__name__}, not a tensor of features; calibration needs an image model")
    return f.reshape(f.shape[0], -1)


def calibration_images(cfg: CalibrationConfig, shape, model: nn.Module | None = None) -> torch.Tensor:
    """``cfg.size`` images of ``cfg.data``'s training split (a seeded sample), fitted to ``shape``."""
    ds = model_images(cfg.data, cfg.data_dir, shape, model, cfg.download).train
    if len(ds) == 0:
        raise DnasError(f"calibration dataset '{cfg.data}' is empty")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.size].tolist()
    x = torch.stack([torch.as_tensor(ds[i][0], dtype=torch.float32) for i in idx])
    if x.dim() != 4:
        raise DnasError(f"calibration needs images (C, H, W); '{cfg.data}' gives items of shape {tuple(x.shape[1:])}")
    return fit_input(x, shape)


def feature_distance(f: torch.Tensor, ref: torch.Tensor, distance: str) -> torch.Tensor:
    """``1 − mean cos(f_i, ref_i)`` or ``Σ‖f − ref‖² / Σ‖ref‖²`` (0 when the features are the reference's)."""
    if distance == "cosine":
        return 1 - F.cosine_similarity(f, ref, dim=1, eps=1e-8).mean()
    return (f - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-12)


def _norm(grads) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None) + 0.0))


@register_proxy_term("calibration")
def calibration_term(supernet, options: dict, alpha_grad=None):
    """Build ``α ↦ weight · c · D(f̃(α), f)`` for ``supernet`` (a dario supernet) on the calibration images.

    Args:
        supernet: the gated model (its ``model`` gives the reference features with no gate).
        options: :class:`CalibrationConfig` fields.
        alpha_grad: ``∂S/∂α`` at the current α, for ``scale: grad`` (without it ``c = 1``).

    Returns:
        ``term(supernet) -> scalar``, differentiable w.r.t. α; its ``scale`` attribute is ``c``.
    """
    from dnas.config import make_config

    cfg = make_config(CalibrationConfig, options, "calibration term")
    p = next(supernet.model.parameters())
    x = calibration_images(cfg, supernet.input_shape(), supernet.model).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        ref = pooled_features(supernet.model, x)  # no gate: the unpruned model's features

    def distance(net) -> torch.Tensor:
        return feature_distance(pooled_features(net.model, x, call=net), ref, cfg.distance)

    c = 1.0
    if cfg.scale == "grad" and alpha_grad is not None and cfg.weight > 0:
        with torch.enable_grad():
            gd = _norm(torch.autograd.grad(distance(supernet), supernet.arch_parameters(), allow_unused=True))
            gs = _norm(alpha_grad())
        c = gs / gd if gd > 0 and gs > 0 else 1.0

    def term(net) -> torch.Tensor:
        return (cfg.weight * c) * distance(net)

    term.scale = c
    return term
