"""Fitness of one discrete network for trial-based search (TPE, random): train briefly, then score.

``supervised``: cross-entropy on held-out data after a few steps of SGD on a small subset.
``contrastive`` (CSNAS, Nguyen & Chang 2021, arXiv 2102.10557, after PIRL, Misra & van der Maaten
2020): the NCE loss of the network's projected features on augmented views, with a memory bank of
EMA representations; no labels are read; data that already come as two views ``((v1, v2), y)`` (a
self-supervised space such as NASiam) are used as they are instead of this module's augmentation.
Lower is better for both.

The network f's features are the input of its ``classifier`` module (captured by a forward
pre-hook: the pooled cell features of a DARTS network); a network without a ``classifier``
attribute is used as is (its flattened output is the representation). CSNAS projects them:
``z = g(f(x)) ∈ ℝ^p`` and ``z^t = l([g(f(x^{t_1})); …; g(f(x^{t_M}))]) ∈ ℝ^p`` (:class:`ContrastiveNet`).

The contrastive options and where they come from (paper = the default):

- ``nce``: ``paper`` = eq. (1)–(2), ``−log ℓ(z_i, z_i^t) − Σ_{x′∈X′} log[1 − ℓ(z_i, z′)]``, the
  negatives compared with the anchor z_i; ``code`` = the authors' code (PIRL's softmax
  cross-entropy, the negatives compared with the view).
- ``negatives``: ``batch`` = the paper's 2(K − 1) in-batch representations (both views of the
  K − 1 other samples); ``bank`` = the authors' code, ``bank_negatives`` random memory-bank rows
  (2(K − 1) if unset); ``bank+batch`` = dnas' earlier choice, the bank rows (all if
  ``bank_negatives`` is unset) plus the other samples' representations of the same view.
- ``projection``: ``mlp`` = the paper's projection MLPs g and l; ``linear`` = the authors' code (one
  linear layer each); ``none`` = no head (z = f(x), views averaged; dnas' earlier behaviour).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dnas.engine.fit import fit
from dnas.errors import DnasError

NCE_FORMS = ("paper", "code")
NEGATIVES = ("batch", "bank", "bank+batch")
PROJECTIONS = ("mlp", "linear", "none")

# -- contrastive loss (CSNAS eq. (1)-(3)) -------------------------------------------------------


def nce_loss(anchor: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor, tau: float,
             form: Literal["paper", "code"] = "paper") -> torch.Tensor:
    """L_NCE(anchor, query) with negatives, averaged over the batch.

    ``paper`` (CSNAS eq. (1), (2)), with z_i = ``anchor``, z_i^t = ``query`` and X′ = ``negatives``:
    ``ℓ(z_i, z) = exp(s(z_i, z)/τ) / Σ_{z″ ∈ {z_i^t} ∪ X′} exp(s(z_i, z″)/τ)`` and
    ``L_NCE = −log ℓ(z_i, z_i^t) − Σ_{z′∈X′} log[1 − ℓ(z_i, z′)]``; s = cosine similarity.

    ``code`` (the authors' code, PIRL's form): ``−log h``, ``h = exp(s(a_i, q_i)/τ) /
    (exp(s(a_i, q_i)/τ) + Σ_k exp(s(q_i, n_ik)/τ))``: one softmax cross-entropy term, the negatives
    compared with the query.

    Args:
        anchor: (B, D) the anchors (the memory-bank rows m_I in eq. (3)).
        query: (B, D) the positives, one per anchor.
        negatives: (B, K, D) the negatives of each sample.
        tau: temperature τ.
        form: ``"paper"`` or ``"code"``.

    Returns:
        The scalar mean of L_NCE over the B samples.
    """
    a, q, n = F.normalize(anchor, dim=-1), F.normalize(query, dim=-1), F.normalize(negatives, dim=-1)
    pos = (a * q).sum(-1, keepdim=True) / tau  # s(z_i, z_i^t)/τ, τ-scaled cosine
    if form == "paper":
        neg = torch.einsum("bd,bkd->bk", a, n) / tau  # CSNAS eq. (1): the negatives compared with z_i
        logp = F.log_softmax(torch.cat([pos, neg], dim=1), dim=1)  # log ℓ(z_i, ·) over {z_i^t} ∪ X′
        log_not = torch.log(-torch.expm1(logp[:, 1:].clamp(max=-1e-7)))  # log[1 − ℓ(z_i, z′)]
        return (-logp[:, 0] - log_not.sum(1)).mean()  # CSNAS eq. (2)
    if form != "code":
        raise DnasError(f"unknown NCE form '{form}'; use one of {', '.join(NCE_FORMS)}")
    neg = torch.einsum("bd,bkd->bk", q, n) / tau  # the authors' code: s(v, v_I')/τ for the negatives I'
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def in_batch_negatives(*views: torch.Tensor) -> torch.Tensor:
    """(B, V(B − 1), D): for each sample, the representations of the other B − 1 samples in each of
    the V ``views`` (with gradient). Two views give CSNAS' 2(K − 1) in-batch negatives."""
    B = len(views[0])
    others = ~torch.eye(B, dtype=torch.bool, device=views[0].device)
    return torch.cat([v.unsqueeze(0).expand(B, -1, -1)[others].view(B, B - 1, -1) for v in views], dim=1)


def bank_negatives(index: torch.Tensor, bank: torch.Tensor, k: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, K, D) detached memory-bank rows as negatives: ``k`` random rows outside the batch, the
    same for every sample (when more than ``k`` are outside it), else every row but the sample's own."""
    B = len(index)
    outside = torch.ones(bank.shape[0], dtype=torch.bool)
    outside[index.cpu()] = False
    if k is not None and int(outside.sum()) > k:
        rows = outside.nonzero().flatten()
        pick = rows[torch.randperm(len(rows), generator=generator)[:k]].to(bank.device)
        return bank.detach()[pick].unsqueeze(0).expand(B, -1, -1)
    keep = torch.ones(B, bank.shape[0], dtype=torch.bool, device=bank.device)
    keep[torch.arange(B), index] = False
    return bank.detach().unsqueeze(0).expand(B, -1, -1)[keep].view(B, bank.shape[0] - 1, -1)


def negatives_for(
    index: torch.Tensor, bank: torch.Tensor, views: torch.Tensor, k: int | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, K, D) negatives of each sample: the memory-bank rows of the other samples (detached)
    and the in-batch representations ``views`` of the other samples of the batch (with gradient).

    With ``k`` (and more than ``k`` rows outside the batch), ``k`` random bank rows outside the
    batch, the same for every sample, stand for the bank. (``negatives="bank+batch"``.)
    """
    return torch.cat([bank_negatives(index, bank, k, generator).to(views.dtype), in_batch_negatives(views)], dim=1)


def csnas_loss(
    bank_rows: torch.Tensor, f_view: torch.Tensor, g_view: torch.Tensor, index: torch.Tensor, bank: torch.Tensor,
    tau: float = 0.07, weight: float = 0.5, k: int | None = None, generator: torch.Generator | None = None,
    nce: Literal["paper", "code"] = "paper", negatives: Literal["batch", "bank", "bank+batch"] = "batch",
) -> torch.Tensor:
    """CSNAS eq. (3): L = λ L_NCE(m_I, z^t) + (1 − λ) L_NCE(m_I, z), λ = ``weight``.

    Args:
        bank_rows: (B, D) the memory-bank rows m_I of the batch (the anchors).
        f_view: (B, D) z = g(f(x)), the representation of the original view.
        g_view: (B, D) z^t = l(...), the representation of the transformed view(s).
        index: (B,) the samples' rows in ``bank``.
        bank: (N, D) the memory bank.
        tau: temperature τ (0.07).
        weight: λ (0.5).
        k: bank rows drawn as negatives (``bank`` and ``bank+batch``); None: 2(B − 1) for
            ``bank`` (the authors' code), the whole bank for ``bank+batch``.
        generator: draws the bank rows.
        nce: the form of L_NCE (see :func:`nce_loss`).
        negatives: ``batch`` (paper: both views of the other B − 1 samples, 2(B − 1)), ``bank``
            (the authors' code) or ``bank+batch`` (dnas' earlier choice).

    Returns:
        The scalar loss.
    """
    if negatives == "batch":
        negs = in_batch_negatives(f_view, g_view)  # CSNAS: 2(K − 1) in-batch negatives
        negs_t = negs_o = negs
    elif negatives == "bank":
        negs = bank_negatives(index, bank, 2 * (len(index) - 1) if k is None else k, generator).to(f_view.dtype)
        negs_t = negs_o = negs
    elif negatives == "bank+batch":
        negs_t = negatives_for(index, bank, g_view, k, generator)
        negs_o = negatives_for(index, bank, f_view, k, generator)
    else:
        raise DnasError(f"unknown negatives '{negatives}'; use one of {', '.join(NEGATIVES)}")
    l_t = nce_loss(bank_rows, g_view, negs_t, tau, nce)
    l_o = nce_loss(bank_rows, f_view, negs_o, tau, nce)
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


class ContrastiveNet(nn.Module):
    """The network f with CSNAS' projection heads: ``z = g(f(x)) ∈ ℝ^p`` for the original view and
    ``z^t = l([g(f(x^{t_1})); …; g(f(x^{t_M}))]) ∈ ℝ^p`` for the M transformed views.

    ``projection="mlp"`` (paper): g = Linear(d, d)–ReLU–Linear(d, p), l = Linear(Mp, p)–ReLU–Linear(p, p);
    ``"linear"`` (the authors' code): g = Linear(d, p), l = Linear(Mp, p); ``"none"``: z = f(x) and
    z^t the mean of the M views' f (dnas' earlier behaviour).

    Args:
        network: the trial's network f.
        feature_dim: d, the width of f's representation.
        proj_dim: p.
        views: M, the transformed views combined by l.
        projection: ``"mlp"``, ``"linear"`` or ``"none"``.
    """

    def __init__(self, network: nn.Module, feature_dim: int, proj_dim: int = 256, views: int = 1,
                 projection: Literal["mlp", "linear", "none"] = "mlp"):
        super().__init__()
        if projection not in PROJECTIONS:
            raise DnasError(f"unknown projection '{projection}'; use one of {', '.join(PROJECTIONS)}")
        if views < 1 or proj_dim < 1:
            raise DnasError(f"views and proj_dim must be >= 1 (got {views}, {proj_dim})")
        self.network, self.views, self.projection = network, views, projection
        d, p, m = feature_dim, proj_dim, views
        if projection == "mlp":
            self.g: nn.Module = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, p))
            self.l: nn.Module = nn.Sequential(nn.Linear(m * p, p), nn.ReLU(), nn.Linear(p, p))
        elif projection == "linear":
            self.g, self.l = nn.Linear(d, p), nn.Linear(m * p, p)
        else:
            self.g, self.l = nn.Identity(), nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """z = g(f(x)) (CSNAS' projection of the original view)."""
        return self.g(represent(self.network, x))

    def embed_views(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """z^t = l of the M projected transformed views, concatenated (``none``: their mean)."""
        if len(xs) != self.views:
            raise DnasError(f"this head combines {self.views} views, got {len(xs)}")
        zs = [self.embed(x) for x in xs]
        if self.projection == "none":
            return zs[0] if len(zs) == 1 else torch.stack(zs).mean(0)
        return self.l(torch.cat(zs, dim=1))


def contrastive_net(model: nn.Module, sample: torch.Tensor, spec: TrainSpec) -> ContrastiveNet:
    """Wrap ``model`` in the projection heads of ``spec``, sized by one forward of ``sample``."""
    was = model.training
    model.eval()
    with torch.no_grad():
        d = represent(model, sample[:2]).shape[1]
    model.train(was)
    param = next(model.parameters(), None)
    head = ContrastiveNet(model, d, spec.proj_dim, spec.views, spec.projection)
    return head.to(param.device) if param is not None else head


# -- one trial ----------------------------------------------------------------------------------


@dataclass
class TrainSpec:
    """How a trial trains and scores its network (the strategy's options; see ``TrialConfig``)."""

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
    bank_negatives: int | None = None
    nce: Literal["paper", "code"] = "paper"
    negatives: Literal["batch", "bank", "bank+batch"] = "batch"
    projection: Literal["mlp", "linear", "none"] = "mlp"
    proj_dim: int = 256
    views: int = 1

    @classmethod
    def from_config(cls, cfg: Any, batch_size: int) -> TrainSpec:
        """The spec of a strategy config: its fields of the same names, and ``batch_size``."""
        names = set(cls.__dataclass_fields__) - {"batch_size"}
        return cls(batch_size=batch_size, **{k: getattr(cfg, k) for k in names if hasattr(cfg, k)})


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
        r = model.embed(x.to(device))
        if bank is None:
            bank = torch.zeros(n, r.shape[1], device=device)
        bank[i.to(device)] = r
    return bank


def _views(x, g: torch.Generator, spec: TrainSpec, device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The anchor view and the transformed views of a batch: the data's own views where it comes as
    two views (NASiam), else ``spec.views`` augmentations of this module."""
    if isinstance(x, (tuple, list)):
        return x[0].to(device), [v.to(device) for v in x[1:]]
    return augment(x, g).to(device), [augment(x, g).to(device) for _ in range(spec.views)]


def _contrastive_batch(model: ContrastiveNet, batch, bank, spec: TrainSpec, g: torch.Generator, device):
    """CSNAS eq. (3) on one batch ``(x, y, index)``: (loss, f(v_I), index)."""
    x, _, i = batch
    v, vt = _views(x, g, spec, device)
    i = i.to(device)
    f, gv = model.embed(v), model.embed_views(vt)
    loss = csnas_loss(bank[i], f, gv, i, bank, spec.tau, spec.nce_weight, spec.bank_negatives, g,
                      nce=spec.nce, negatives=spec.negatives)
    return loss, f, i


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
    if spec.fitness == "contrastive":  # CSNAS' projection heads g and l train with the network
        first = next(iter(DataLoader(Indexed(train), batch_size=2)))[0]
        model = contrastive_net(model, (first[0] if isinstance(first, (tuple, list)) else first).to(device), spec)
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
