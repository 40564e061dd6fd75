"""Fitness of one discrete network for trial-based search (TPE, random): train briefly, then score.

``supervised``: cross-entropy on held-out data after a few steps of SGD on a small subset.
``contrastive`` (CSNAS, Nguyen & Chang 2021, after PIRL, Misra & van der Maaten 2020): the NCE loss
of the network's features on two augmented views, with a memory bank of EMA representations; no
labels are read; data that already come as two views ``((v1, v2), y)`` (a self-supervised space such as
NASiam) are used as they are instead of this module's cheap augmentation. Lower is better for both.

Features for the contrastive loss are the input of the network's ``classifier`` module (captured by
a forward pre-hook: the pooled cell features of a DARTS network); a network without a
``classifier`` attribute is used as is (its flattened output is the representation).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dnas.engine.fit import fit

# -- contrastive loss (CSNAS eq. (1)-(3)) -------------------------------------------------------


def nce_loss(anchor: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over i of −log h(anchor_i, query_i), negatives n_i,k (rows of ``negatives[i]``).

    h = exp(s(a_i, q_i)/τ) / (exp(s(a_i, q_i)/τ) + Σ_k exp(s(q_i, n_ik)/τ)), s = cosine similarity.

    Args:
        anchor: (B, D) the memory-bank representations m_I of the batch.
        query: (B, D) the network's representations of one view.
        negatives: (B, K, D) the negatives of each sample.
        tau: temperature τ.
    """
    a, q, n = F.normalize(anchor, dim=-1), F.normalize(query, dim=-1), F.normalize(negatives, dim=-1)
    pos = (a * q).sum(-1, keepdim=True) / tau  # CSNAS eq. (1): s(m_I, v)/τ, τ-scaled cosine
    neg = torch.einsum("bd,bkd->bk", q, n) / tau  # CSNAS eq. (1): s(v, v_I')/τ for the negatives I'
    logits = torch.cat([pos, neg], dim=1)
    # CSNAS eq. (2): L_NCE = −log( exp(pos) / (exp(pos) + Σ exp(neg)) ), the positive at index 0
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def negatives_for(
    index: torch.Tensor, bank: torch.Tensor, views: torch.Tensor, k: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, K, D) negatives of each sample: the memory-bank rows of the other samples (detached)
    and the in-batch representations ``views`` of the other samples of the batch (with gradient).

    With ``k`` (and more than ``k`` rows outside the batch), ``k`` random bank rows outside the
    batch, the same for every sample, stand for the bank (the authors' code draws 1000).
    """
    B = len(index)
    others = ~torch.eye(B, dtype=torch.bool, device=views.device)
    in_batch = views.unsqueeze(0).expand(B, -1, -1)[others].view(B, B - 1, -1)
    outside = torch.ones(bank.shape[0], dtype=torch.bool)
    outside[index.cpu()] = False
    if k is not None and int(outside.sum()) > k:
        rows = outside.nonzero().flatten()
        pick = rows[torch.randperm(len(rows), generator=generator)[:k]].to(bank.device)
        from_bank = bank.detach()[pick].unsqueeze(0).expand(B, -1, -1)
    else:
        keep = torch.ones(B, bank.shape[0], dtype=torch.bool, device=bank.device)
        keep[torch.arange(B), index] = False
        from_bank = bank.detach().unsqueeze(0).expand(B, -1, -1)[keep].view(B, bank.shape[0] - 1, -1)
    return torch.cat([from_bank.to(views.dtype), in_batch], dim=1)


def csnas_loss(
    bank_rows: torch.Tensor, f_view: torch.Tensor, g_view: torch.Tensor, index: torch.Tensor, bank: torch.Tensor,
    tau: float, weight: float, k: int | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CSNAS eq. (3): L = λ L_NCE(m_I, g(v_{I^t})) + (1 − λ) L_NCE(m_I, f(v_I)).

    ``f_view``/``g_view``: representations of the two views; ``bank_rows`` = m_I of the batch.
    """
    l_t = nce_loss(bank_rows, g_view, negatives_for(index, bank, g_view, k, generator), tau)
    l_o = nce_loss(bank_rows, f_view, negatives_for(index, bank, f_view, k, generator), tau)
    return weight * l_t + (1 - weight) * l_o  # CSNAS eq. (3), λ = weight


def ema_update_(bank: torch.Tensor, index: torch.Tensor, values: torch.Tensor, momentum: float) -> None:
    """m_I ← momentum · m_I + (1 − momentum) · f(v_I) (the memory bank's exponential moving average)."""
    bank[index] = momentum * bank[index] + (1 - momentum) * values.detach().to(bank.dtype)


def augment(x: torch.Tensor, generator: torch.Generator, shift: float = 0.125, noise: float = 0.1) -> torch.Tensor:
    """A cheap random view of an image batch: a translation by up to ``shift`` of the size (zeros
    come in), a per-image brightness/contrast jitter of ±20 %, and Gaussian noise."""
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    sy, sx = max(1, int(h * shift)), max(1, int(w * shift))
    dy = torch.randint(-sy, sy + 1, (n,), generator=generator).tolist()
    dx = torch.randint(-sx, sx + 1, (n,), generator=generator).tolist()
    padded = F.pad(x, (sx, sx, sy, sy))
    for i in range(n):
        out[i] = padded[i, :, sy + dy[i]: sy + dy[i] + h, sx + dx[i]: sx + dx[i] + w]
    scale = 1 + 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    offset = 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    return out * scale.to(x) + offset.to(x) + noise * torch.randn(x.shape, generator=generator).to(x)


@contextmanager
def features_of(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the representation of each forward: the input of ``model.classifier`` if it exists."""
    seen: list[torch.Tensor] = []
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        yield seen
        return
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1)))
    try:
        yield seen
    finally:
        handle.remove()


def represent(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The representation of ``x``: classifier input (see :func:`features_of`), else the output."""
    with features_of(model) as seen:
        out = model(x)
    if seen:
        return seen[-1]
    out = out[0] if isinstance(out, tuple) else out
    return out.flatten(1)


# -- one trial ----------------------------------------------------------------------------------


@dataclass
class TrainSpec:
    """How a trial trains and scores its network (the strategy's options)."""

    fitness: str = "supervised"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    tau: float = 0.07
    nce_weight: float = 0.5
    bank_momentum: float = 0.5
    negatives: int | None = None


class Indexed(Dataset):
    """(x, y, i): a dataset's items with their index (the memory bank's row)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i][:2]
        return x, y, i


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def _init_bank(model: nn.Module, loader: DataLoader, n: int, device: torch.device) -> torch.Tensor:
    """Fill the memory bank with the network's representations of the un-augmented samples."""
    model.eval()
    bank = None
    for x, _, i in loader:
        x = x[0] if isinstance(x, (tuple, list)) else x  # two-view data: the bank starts from view 1
        r = represent(model, x.to(device))
        if bank is None:
            bank = torch.zeros(n, r.shape[1], device=device)
        bank[i.to(device)] = r
    return bank


def _contrastive_batch(model, batch, bank, spec: TrainSpec, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (3) on two augmented views of one batch ``(x, y, index)``: (loss, f(v_I), index)."""
    x, _, i = batch
    if isinstance(x, (tuple, list)):  # two-view data (NASiam): the data's own augmented views
        v1, v2 = x[0].to(device), x[1].to(device)
    else:
        v1, v2 = augment(x, g).to(device), augment(x, g).to(device)
    i = i.to(device)
    f, gv = represent(model, v1), represent(model, v2)
    return csnas_loss(bank[i], f, gv, i, bank, spec.tau, spec.nce_weight, spec.negatives, g), f, i


@torch.no_grad()
def _contrastive_score(model, loader, bank, spec: TrainSpec, g: torch.Generator, device) -> tuple[float, int]:
    """Eq. (3) over ``loader`` without training (the bank still follows). Returns (summed loss, samples)."""
    total, n = 0.0, 0
    for batch in loader:
        loss, f, i = _contrastive_batch(model, batch, bank, spec, g, device)
        ema_update_(bank, i, f, spec.bank_momentum)
        total += float(loss) * len(i)
        n += len(i)
    return total, n


def _supervised(out: torch.Tensor, y: torch.Tensor, classes: int, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for a classification task; mean squared error for regression (``classes = 0``)."""
    if classes:
        return F.cross_entropy(out, y, reduction=reduction)
    return F.mse_loss(out, y.reshape(out.shape).to(out.dtype), reduction=reduction)


def train_and_score(
    model: nn.Module, train: Dataset, held_out: Dataset, spec: TrainSpec, seed: int, device: torch.device, classes: int = 1
) -> dict[str, float]:
    """Train ``model`` briefly on ``train`` and score it on ``held_out`` (lower fitness is better).

    Returns ``{"fitness", "train_loss", "steps"}`` and, for supervised classification, ``"accuracy"``.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    bs = spec.batch_size
    train_loader = DataLoader(Indexed(train), batch_size=bs, shuffle=True, generator=g, drop_last=len(train) > bs)
    eval_loader = DataLoader(Indexed(held_out), batch_size=max(bs, 256))
    if spec.fitness == "contrastive":
        bank = _init_bank(model, DataLoader(Indexed(train), batch_size=max(bs, 256)), len(train), device)
        last: dict[str, torch.Tensor] = {}

        def contrastive(batch) -> dict[str, torch.Tensor]:
            loss, last["f"], last["i"] = _contrastive_batch(model, batch, bank, spec, g, device)
            return {"loss": loss}

        trained = fit(model, train_loader, contrastive, opt, epochs=spec.epochs, max_steps=spec.max_steps,
                      after_step=lambda batch, out: ema_update_(bank, last["i"], last["f"], spec.bank_momentum))
        # held out: a fresh bank of the trained network's representations, then eq. (3) on two views
        held_bank = _init_bank(model, eval_loader, len(held_out), device)
        model.eval()
        s, m = _contrastive_score(model, eval_loader, held_bank, spec, g, device)
        return {"fitness": s / max(m, 1), "train_loss": trained.mean(), "steps": trained.steps}

    def supervised(batch) -> dict[str, torch.Tensor]:
        x, y = batch[0].to(device), batch[1].to(device)
        return {"loss": _supervised(_logits(model(x)), y, classes)}

    trained = fit(model, train_loader, supervised, opt, epochs=spec.epochs, max_steps=spec.max_steps)
    steps = trained.steps
    model.eval()
    ce, correct, m = 0.0, 0, 0
    with torch.no_grad():
        for x, y, _ in eval_loader:
            x, y = x.to(device), y.to(device)
            logits = _logits(model(x))
            ce += float(_supervised(logits, y, classes, reduction="sum")) / (1 if classes else logits[0].numel())
            correct += int((logits.argmax(1) == y).sum()) if classes else 0
            m += len(y)
    out = {"fitness": ce / max(m, 1), "train_loss": trained.mean(), "steps": steps}
    return {**out, "accuracy": correct / max(m, 1)} if classes else out
