"""THE training loop of every evaluation: a network, its batches, a loss and an optimizer.

Supervised training from scratch (``dnas.evaluate.supervised``), SSL pretraining and the linear
evaluation on frozen features (``dnas.evaluate.ssl``), the short training of a trial's network
(``dnas.engine.fitness``) and the fine-tuning of a pruned model (``dnas.tools.pruning``) all call
:func:`fit`; each plugs in what differs: how a batch becomes a loss, the schedule, and the
evaluator that runs after each epoch. Per epoch::

    on_epoch_start(epoch)                  e.g. a learning-rate or drop-path schedule
    model.train()
    for batch in batches:                  at most max_steps steps over all epochs
        out = loss_fn(batch)               {"loss": scalar tensor, other numbers to average}
        optimizer.zero_grad(); out["loss"].backward(); clip to grad_clip; optimizer.step()
        after_step(batch, out)             e.g. a memory bank's moving average
    scheduler.step()
    record = {"epoch", "loss", ...}        sample-weighted means of loss_fn's numbers
    on_epoch_end(epoch, record)            the evaluator: adds its metrics to the record, logs
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dnas.engine.loop import Diverged
from dnas.errors import DnasError


class TrainingDiverged(Diverged, DnasError):
    """The loss of a :func:`fit` step is NaN/inf: one line for a user, a NaN/inf failure for a trial."""


def batch_size(batch: Any) -> int:
    """The number of samples in a batch: the length of its first tensor, however nested."""
    x = batch
    while isinstance(x, (tuple, list)):
        x = x[0]
    return int(x.shape[0]) if isinstance(x, torch.Tensor) else 1


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    steps: int = 0  # optimizer steps taken
    sums: dict[str, float] = field(default_factory=dict)  # loss_fn's numbers summed over all samples of all epochs
    samples: int = 0  # samples seen over all epochs

    def mean(self, key: str = "loss") -> float:
        """The mean of ``key`` over every sample of every epoch (0 if none was seen)."""
        return self.sums.get(key, 0.0) / max(self.samples, 1)


def fit(
    model: nn.Module | None,
    batches: Iterable | Callable[[int], Iterable],
    loss_fn: Callable[[Any], dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    scheduler: Any = None,
    grad_clip: float = 0.0,
    max_steps: int | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    after_step: Callable[[Any, dict[str, Any]], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    start_epoch: int = 0,
) -> FitResult:
    """Train for ``epochs`` passes over ``batches`` (see the module docstring for the call order).

    Args:
        model: put in training mode at the start of every epoch (None: left as it is).
        batches: an iterable re-read every epoch (a DataLoader), or ``f(epoch) -> iterable``.
        loss_fn: ``batch -> {"loss": tensor, name: number, ...}``; every entry (a number or a
            one-element tensor) is averaged over the epoch's samples into the record.
        optimizer: stepped after every backward.
        epochs: passes over ``batches``.
        scheduler: stepped once after every epoch (None: no schedule).
        grad_clip: clip the gradient norm of the optimizer's parameters to this (0: off).
        max_steps: stop after this many steps over all epochs (None: no limit).
        on_epoch_start, after_step, on_epoch_end: the hooks of the module docstring.
        start_epoch: the first epoch to run (a resumed training: the model, optimizer and scheduler
            already hold the state after ``start_epoch`` epochs).

    Returns:
        The per-epoch records (``epoch``, the means of ``loss_fn``'s numbers, what ``on_epoch_end``
        added) and the number of steps taken.
    """
    if grad_clip < 0:  # clip_grad_norm_ with a negative norm flips the gradient: gradient ascent
        raise DnasError(f"grad_clip must be >= 0 (0: no clipping), got {grad_clip:g}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    result = FitResult()
    for epoch in range(start_epoch, epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        if model is not None:
            model.train()
        sums: dict[str, float] = {}
        seen = 0
        for batch in (batches(epoch) if callable(batches) else batches):
            if max_steps is not None and result.steps >= max_steps:
                break
            out = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if after_step is not None:
                after_step(batch, out)
            n = batch_size(batch)
            for k, v in out.items():
                x = float(v.detach() if isinstance(v, torch.Tensor) else v) * n
                if k == "loss" and not math.isfinite(x):  # read anyway for the epoch's mean: no extra sync
                    raise TrainingDiverged(f"the training loss is {x / n} at epoch {epoch + 1}, step {result.steps + 1}; lower the learning "
                                    f"rate (--set train.lr=...); what the run wrote before this epoch is kept")
                sums[k] = sums.get(k, 0.0) + x
                result.sums[k] = result.sums.get(k, 0.0) + x
            seen += n
            result.samples += n
            result.steps += 1
        if scheduler is not None:
            scheduler.step()
        record = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()}}
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        result.history.append(record)
    return result
