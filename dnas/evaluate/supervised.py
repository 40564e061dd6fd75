"""The evaluation phase: train a genotype's network from scratch and report top-1/top-5."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dnas.engine.data import Datasets
from dnas.engine.fit import fit
from dnas.engine.run import Run
from dnas.evaluate import finish_training, task_dict, training_run


@dataclass
class TrainConfig:
    """Defaults: DARTS CIFAR-10 evaluation (Liu et al., "DARTS", ICLR 2019: the CIFAR-10 evaluation settings)."""

    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    drop_path: float = 0.2  # raised linearly from 0 over the epochs (DARTS)
    aux_weight: float = 0.4
    cutout: int | None = None  # None: 16 px for images of 32 px and more, else off

    def check(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            return "epochs >= 0, batch_size >= 1 and lr > 0 are required"
        if self.grad_clip < 0:
            return f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip:g}"
        return None


def cutout(x: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random length x length square per image (DeVries & Taylor), clipped at the border."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    half = length // 2
    inside = ((ys >= (cy - half).view(n, 1, 1)) & (ys < (cy - half + length).view(n, 1, 1))) & (
        (xs >= (cx - half).view(n, 1, 1)) & (xs < (cx - half + length).view(n, 1, 1))
    )
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean cross-entropy of a classifier; the MSE of a regressor (float targets)."""
    model.eval()
    n = correct1 = correct5 = 0
    loss, regression = 0.0, False
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        if y.is_floating_point():  # regression
            loss += float(F.mse_loss(logits, y.reshape(logits.shape), reduction="sum")) / logits[0].numel()
            n, regression = n + len(y), True
            continue
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(1).sum())
        n += len(y)
    if regression:
        return {"mse": loss / max(n, 1), "loss": loss / max(n, 1)}
    return {"top1": correct1 / max(n, 1), "top5": correct5 / max(n, 1), "loss": loss / max(n, 1)}


def _criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class labels, mean squared error for float (regression) targets."""
    return F.mse_loss(logits, y.reshape(logits.shape)) if y.is_floating_point() else F.cross_entropy(logits, y)


def train_network(
    model: nn.Module, data: Datasets, cfg: TrainConfig, device: torch.device, log=print, seed: int = 0, run: Run | None = None,
) -> dict[str, Any]:
    """Train ``model`` (logits, or (logits, aux) in training mode) on ``data.train``; evaluate on ``data.test``.

    With a ``run`` (the training's folder), every epoch's record goes to its ``history.jsonl`` and
    loggers, and a checkpoint (weights, optimizer, schedule, random states) is written after every
    epoch; a run that holds one continues from it, to the same weights as an uninterrupted training.
    The finished weights and metrics go into the run's folder too."""
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1), eta_min=cfg.lr_min)
    g = torch.Generator().manual_seed(seed)
    start, spent = run.restore_training(model, opt, g, sched) if run is not None else (0, 0.0)
    if start:
        log(f"resuming after epoch {start}/{cfg.epochs}")
    train = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=len(data.train) > cfg.batch_size)
    test = DataLoader(data.test, batch_size=max(cfg.batch_size, 256))
    size = data.task.input_shape[-1]
    cut = cfg.cutout if cfg.cutout is not None else (16 if size >= 32 else 0)
    t0 = time.perf_counter() - spent

    lr = {}

    def epoch_start(epoch: int) -> None:
        lr["now"] = opt.param_groups[0]["lr"]  # this epoch's, for its record
        if hasattr(model, "drop_path_prob"):  # DARTS: raised linearly from 0 over the epochs
            model.drop_path_prob = cfg.drop_path * epoch / max(cfg.epochs, 1)

    def loss_fn(batch) -> dict[str, torch.Tensor]:
        x, y = batch
        if cut:
            x = cutout(x, cut, g)
        x, y = x.to(device), y.to(device)
        out_ = model(x)
        logits, aux = out_ if isinstance(out_, tuple) else (out_, None)
        loss = _criterion(logits, y)
        if aux is not None and cfg.aux_weight:
            loss = loss + cfg.aux_weight * _criterion(aux, y)
        return {"loss": loss}

    def evaluator(epoch: int, metrics: dict[str, Any]) -> None:
        metrics["train_loss"] = metrics.pop("loss", 0.0)
        metrics.update({f"test_{k}": v for k, v in evaluate(model, test, device).items()})
        metrics["lr"] = lr["now"]
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        shown = "test_top1" if "test_top1" in metrics else "test_mse"
        log(f"epoch {epoch + 1}/{cfg.epochs} train_loss {metrics['train_loss']:.4f} {shown} {metrics[shown]:.4f}")
        if run is not None:
            run.append_history(metrics)
            run.save_training(epoch + 1, metrics["seconds"], model, opt, g, sched)

    history = fit(model, train, loss_fn, opt, epochs=cfg.epochs, scheduler=sched, grad_clip=cfg.grad_clip,
                  on_epoch_start=epoch_start, on_epoch_end=evaluator, start_epoch=start).history
    if run is not None:
        history = run.history()  # the epochs before a resume too
    final = evaluate(model, test, device) if cfg.epochs == 0 else {k[5:]: v for k, v in history[-1].items() if k.startswith("test_")}
    result = {
        **{k: final[k] for k in ("top1", "top5", "mse") if k in final},
        "params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux.")),  # as DARTS reports
        "seconds": round(time.perf_counter() - t0, 2),
        "task": task_dict(data.task),  # what load_trained rebuilds the network for
        "history": history,
    }
    if run is not None:
        finish_training(run.dir, model.state_dict(), result)
    return result


def train_genotype(
    genotype,
    data: str = "digits",
    *,
    train_config: dict[str, Any] | None = None,
    space_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    log=print,
    loggers: list[Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Supervised evaluation: build ``genotype``'s network (space options overridable, e.g. ``{"C": 36,
    "layers": 20}``), train it from scratch on ``data`` and report top-1/top-5 on its test split.
    ``out`` receives ``genotype.yaml`` and ``config.yaml`` first, then ``history.jsonl`` and a
    checkpoint every epoch (mirrored to ``loggers``), and ``model.safetensors`` and ``metrics.json``
    at the end; ``resume`` continues the training whose checkpoint is in ``out``."""
    from dnas.config import make_config
    from dnas.engine.data import given_datasets, load_datasets
    from dnas.engine.distributed import resolve_device
    from dnas.engine.loggers import check_loggers
    from dnas.errors import DnasError
    from dnas.evaluate import genotype_space_data

    tcfg = make_config(TrainConfig, dict(train_config or {}), "train")
    g, space, dcfg = genotype_space_data(genotype, data, space_config, data_config)
    if space.evaluation != "supervised":
        raise DnasError(f"genotype space '{g.space}' is evaluated by '{space.evaluation}', not by supervised training; "
                        f"drop the override (dnas train picks it)")
    check_loggers(loggers)
    datasets = load_datasets(dcfg, given_datasets(data))
    space.check_task(datasets.task)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = space.build_network(g, datasets.task)
    with training_run(out, g, space, dcfg, tcfg, seed, device, loggers, resume) as run:
        return train_network(model, datasets, tcfg, dev, log=log, seed=seed, run=run)
