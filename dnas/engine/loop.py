"""THE search loop shared by every gradient strategy, and the gradient strategy base.

A gradient strategy contributes its α step, its weight step and its named loss terms; the loop
owns epochs, progress, history, checkpoints and resume (as timm's one ``train.py``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from dnas.engine.distributed import average_, broadcast_object
from dnas.errors import DnasError
from dnas.strategy import Strategy

if TYPE_CHECKING:
    from dnas.engine.data import SearchData
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.supernet import Supernet


@dataclass
class GradientConfig:
    """Defaults: DARTS CIFAR-10 search (Liu et al., "DARTS", ICLR 2019: the CIFAR-10 search settings)."""

    epochs: int = 50
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    warmup_epochs: int = 0  # epochs in which only the weights train (α frozen)
    divergence_lr_factor: float = 0.1  # a NaN/inf rolls back to the epoch start and scales every lr by this
    max_divergences: int = 1  # rollbacks allowed before the run stops
    parser: str | None = None  # None: the space's default parser
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast the forward of the α and weight steps; fp16 adds a GradScaler
    init_genotype: str | None = None  # DARTOpti: α start from this genotype (file or shipped name); fresh runs only
    early_stop: Literal["none", "distance"] = "none"  # D-DARTS: stop when the distance M is stable (dnas/distance.py)
    early_stop_on: Literal["previous", "start"] = "previous"  # M to the previous epoch ≤ tol (thesis), or M to the start moving ≤ tol (code)
    early_stop_patience: int = 5  # epochs the criterion must hold (thesis 5; the authors' code: 4)
    early_stop_from: int = 10  # first epoch at which the search may stop (thesis: 10)
    early_stop_tol: float = 0.0  # thesis: M to the previous epoch = 0 (genotype unchanged); code: 0.001 on M to the start

    def check(self):
        if self.epochs < 0 or self.warmup_epochs < 0:
            return "epochs and warmup_epochs must be >= 0"
        if self.early_stop_patience < 1 or self.early_stop_from < 1 or self.early_stop_tol < 0:
            return "early_stop_patience and early_stop_from must be >= 1 and early_stop_tol >= 0"
        if self.w_lr <= 0 or self.a_lr < 0:
            return "learning rates must be positive"
        if self.amp == "fp16" and getattr(self, "order", 1) == 2:
            return "amp fp16 needs loss scaling, which the second-order finite differences do not use; use amp bf16 or order 1"
        return None


@dataclass
class Optimizers:
    weights: torch.optim.Optimizer
    arch: dict[str, torch.optim.Optimizer]
    schedule: torch.optim.lr_scheduler.LRScheduler

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.state_dict(),
            "arch": {k: o.state_dict() for k, o in self.arch.items()},
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights.load_state_dict(state["weights"])
        for k, o in self.arch.items():
            o.load_state_dict(state["arch"][k])
        self.schedule.load_state_dict(state["schedule"])


def _batch_size(batch: Any) -> int:
    x = batch[0]
    while isinstance(x, (tuple, list)):
        x = x[0]
    return int(x.shape[0])


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


class GradientStrategy(Strategy):
    """Bilevel first-order search by default: an α step on a val batch, then a weight step on a
    train batch. Subclasses override :meth:`arch_step`, :meth:`loss_terms`, or :attr:`relaxation`."""

    Config = GradientConfig
    needs = frozenset({"alpha", "data"})
    relaxation: ClassVar[str] = "softmax"

    # -- hooks --------------------------------------------------------------------------------
    def optimizers(self, supernet: "Supernet") -> Optimizers:
        c = self.config
        w = torch.optim.SGD(supernet.weight_parameters(), c.w_lr, momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        arch = {
            k: torch.optim.Adam(ps, lr=c.a_lr, betas=tuple(c.a_betas), weight_decay=c.a_weight_decay)
            for k, ps in supernet.arch_groups().items()
        }
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w, max(c.epochs, 1), eta_min=c.w_lr_min)
        self._start_choices = self._distance_genotype(supernet)  # the epoch-0 genotype (a resume restores it)
        return Optimizers(w, arch, sched)

    def loss_terms(self, supernet: "Supernet") -> dict[str, torch.Tensor]:
        """Named regularisers added to the α loss (e.g. FairDARTS' zero-one loss). None here."""
        return {}

    def autocast(self, supernet: "Supernet"):
        """The ``amp`` autocast context for a step's forward (disabled for ``amp="none"``)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        device = next(supernet.parameters()).device.type
        return torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def grad_scaler(self, which: str, supernet: "Supernet") -> "torch.amp.GradScaler | None":
        """With ``amp="fp16"``, the loss scaler of the ``which`` step ("arch" or "weights"); else None."""
        if self.config.amp != "fp16":
            return None
        scalers = self.__dict__.setdefault("_scalers", {})
        if which not in scalers:
            scalers[which] = torch.amp.GradScaler(next(supernet.parameters()).device.type)
            saved = self.__dict__.get("_scaler_states", {}).get(which)
            if saved:  # from a checkpoint: the loss scale goes on where the run left it
                scalers[which].load_state_dict(saved)
        return scalers[which]

    def arch_loss(self, supernet: "Supernet", batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.autocast(supernet):
            out = supernet.loss(batch)
        terms = self.loss_terms(supernet)
        total = out["loss"] + sum(terms.values()) if terms else out["loss"]
        metrics = {f"val_{k}": v.detach() for k, v in out.items()}
        metrics.update({k: v.detach() for k, v in terms.items()})
        return total, metrics

    def arch_step(self, supernet: "Supernet", train_batch: Any, val_batch: Any, opt: Optimizers) -> dict[str, torch.Tensor]:
        """First order: ∇_α L_val(w, α) at the current w (DARTS, first-order approximation)."""
        scaler = self.grad_scaler("arch", supernet)
        alphas = supernet.arch_parameters()
        with supernet.grad_only(alphas):
            total, metrics = self.arch_loss(supernet, val_batch)
            total = scaler.scale(total) if scaler else total
            grads = torch.autograd.grad(total, alphas, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        average_(grads)  # data-parallel: the mean over ranks
        for a, g in zip(alphas, grads):
            a.grad = g
        for o in opt.arch.values():
            scaler.step(o) if scaler else o.step()  # fp16: unscales, skips the step on inf/NaN
        if scaler:
            scaler.update()
        return metrics

    def weight_step(self, supernet: "Supernet", batch: Any, opt: Optimizers) -> dict[str, torch.Tensor]:
        """∇_w L_train(w, α), clipped, one SGD step; α receive no gradient."""
        opt.weights.zero_grad(set_to_none=True)
        scaler = self.grad_scaler("weights", supernet)
        weights = [p for p in supernet.weight_parameters() if p.requires_grad]
        with supernet.grad_only(weights):
            with self.autocast(supernet):
                out = supernet.loss(batch)
            (scaler.scale(out["loss"]) if scaler else out["loss"]).backward(inputs=weights)
        average_(p.grad for p in weights)  # data-parallel: the mean over ranks
        if scaler:
            scaler.unscale_(opt.weights)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(weights, self.config.grad_clip)
        if scaler:
            scaler.step(opt.weights)
            scaler.update()
        else:
            opt.weights.step()
        return {f"train_{k}": v.detach() for k, v in out.items()}

    def step(self, supernet, train_batch, val_batch, epoch: int, opt: Optimizers) -> dict[str, torch.Tensor]:
        metrics = {}
        if epoch >= self.config.warmup_epochs:
            metrics.update(self.arch_step(supernet, train_batch, val_batch, opt))
        metrics.update(self.weight_step(supernet, train_batch, opt))
        return metrics

    def parser_args(self) -> dict[str, Any]:
        """Keyword arguments for the parser that derives the genotype (e.g. FairDARTS' threshold)."""
        return {}

    def _distance_genotype(self, supernet: "Supernet") -> dict[str, list[str]] | None:
        """The genotype the loop derives, as plain choices; None where the distance M is undefined."""
        from dnas.engine.distance import has_cells

        if not has_cells(supernet.space):
            return None
        g = supernet.genotype(self.config.parser, **self.parser_args())
        return {k: list(v) for k, v in g.choices.items()}

    def epoch_metrics(self, supernet: "Supernet", history: list[dict[str, Any]]) -> dict[str, Any]:
        """Extra per-epoch numbers for the history: the D-DARTS distance M (eq. 4.8) of this epoch's
        genotype to the previous epoch's and to the start (epoch 0), on spaces with cells.
        Subclasses adding their own numbers merge ``super().epoch_metrics(...)``."""
        from dnas.engine.distance import distance

        now = self._distance_genotype(supernet)
        start = getattr(self, "_start_choices", None)
        if now is None or start is None:
            return {}
        space = supernet.space
        prev = history[-1].get("genotype", start) if history else start
        g = space.genotype(now)
        return {
            "distance_prev": round(distance(g, space.genotype(prev)), 6),  # D-DARTS eq. (4.8)
            "distance_start": round(distance(g, space.genotype(start)), 6),
        }

    def state_dict(self) -> dict[str, Any]:
        start = getattr(self, "_start_choices", None)
        state = {} if start is None else {"start_genotype": start}
        scalers = {k: s.state_dict() for k, s in self.__dict__.get("_scalers", {}).items()}
        if scalers:  # fp16: the loss scale and its growth tracker (plain numbers)
            state["grad_scalers"] = scalers
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "start_genotype" in state:
            self._start_choices = state["start_genotype"]
        self._scaler_states = state.get("grad_scalers", {})
        for k in self._scaler_states:  # a scaler with a saved state is remade from it by grad_scaler()
            self.__dict__.get("_scalers", {}).pop(k, None)

    def should_stop(self, history: list[dict[str, Any]]) -> str | None:
        """A reason to stop early, or None. ``early_stop: distance`` (D-DARTS): from epoch
        ``early_stop_from`` on, stop once the last ``early_stop_patience`` epochs after the warm-up
        all had M to the previous epoch ≤ tol (``early_stop_on: previous``, the thesis), or M to the
        start varying by ≤ tol across them (``start``, the authors' code: 0.001 over 4 epochs)."""
        c = self.config
        if c.early_stop != "distance" or not history:
            return None
        epoch, k = history[-1]["epoch"], c.early_stop_patience
        window = [r for r in history if r["epoch"] > c.warmup_epochs][-k:]  # α frozen in warm-up: not evidence
        if epoch < c.early_stop_from or len(window) < k or any("distance_prev" not in r for r in window):
            return None
        if c.early_stop_on == "previous":
            worst = max(r["distance_prev"] for r in window)
            if worst <= c.early_stop_tol:
                return f"distance M to the previous epoch ≤ {c.early_stop_tol:g} for {k} epochs (max {worst:.6f})"
        else:
            values = [r["distance_start"] for r in window]
            if max(values) - min(values) <= c.early_stop_tol:
                return f"distance M to the start changed by ≤ {c.early_stop_tol:g} over {k} epochs ({min(values):.6f}–{max(values):.6f})"
        return None

    # -- the loop -----------------------------------------------------------------------------
    def search(self, supernet: "Supernet", data: "SearchData", run: "Run") -> "Genotype":
        return search_loop(self, supernet, data, run)


def alpha_snapshot(supernet: "Supernet") -> dict[str, list]:
    w = supernet.decision_weights()
    return {k: [round(float(x), 6) for x in v] for k, v in w.items()}


class Diverged(Exception):
    """A loss term or α became NaN/inf during a step."""

    def __init__(self, term: str):
        super().__init__(term)
        self.term = term


def _check_finite(metrics: dict[str, torch.Tensor], supernet: "Supernet") -> None:
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and not torch.isfinite(v).all():
            raise Diverged(f"{k} = {float(v)}")
    for name, a in supernet.named_arch_parameters():
        if not torch.isfinite(a).all():
            raise Diverged(f"α '{name}' non-finite")


def _snapshot(supernet: "Supernet", opt: Optimizers, strategy: "GradientStrategy") -> dict[str, Any]:
    """The last good state (the start of the epoch), kept in memory to roll back a divergence."""
    return copy.deepcopy(
        {"supernet": supernet.state_dict(), "optimizers": opt.state_dict(), "strategy": strategy.state_dict(), "rng": torch.get_rng_state()}
    )


def _restore(state: dict[str, Any], supernet: "Supernet", opt: Optimizers, strategy: "GradientStrategy") -> None:
    supernet.load_state_dict(state["supernet"])
    opt.load_state_dict(state["optimizers"])
    strategy.load_state_dict(state["strategy"])
    torch.set_rng_state(state["rng"])


def _scale_lr(opt: Optimizers, factor: float) -> None:
    for o in [opt.weights, *opt.arch.values()]:
        for group in o.param_groups:
            group["lr"] *= factor
    opt.schedule.base_lrs = [lr * factor for lr in opt.schedule.base_lrs]
    opt.schedule.eta_min *= factor


def _epoch(strategy, supernet, data, opt, epoch, device, progress, bar, show) -> tuple[dict, dict]:
    """One pass over the (train, val) pairs; returns the summed metrics and their counts."""
    supernet.train()
    progress.reset(bar, total=data.steps_per_epoch(), epoch=f"{epoch + 1}/{strategy.config.epochs}", info="")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for train_batch, val_batch in data.epoch(epoch):
        train_batch, val_batch = to_device(train_batch, device), to_device(val_batch, device)
        m = strategy.step(supernet, train_batch, val_batch, epoch, opt)
        average_(m.values())
        _check_finite(m, supernet)
        n = _batch_size(train_batch)
        for k, v in m.items():
            sums[k] = sums.get(k, 0) + v.float() * n
            counts[k] = counts.get(k, 0) + n
        if show:
            info = " ".join(f"{k[6:]} {float(m[k]):.3f}" for k in ("train_loss", "train_acc") if k in m)
            progress.update(bar, advance=1, info=info)
    return sums, counts


def search_loop(strategy: GradientStrategy, supernet: "Supernet", data: "SearchData", run: "Run") -> "Genotype":
    """Epochs of ``strategy.step`` over (train, val) batch pairs, with history, checkpoints, resume."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cfg = strategy.config
    supernet.relaxation = strategy.relaxation
    device = next(supernet.parameters()).device
    opt = strategy.optimizers(supernet)
    start, divergences = 0, 0
    ckpt = broadcast_object(run.load_checkpoint())
    if ckpt is not None:
        supernet.load_state_dict(ckpt["supernet"])
        opt.load_state_dict(ckpt["optimizers"])
        strategy.load_state_dict(ckpt.get("strategy", {}))
        torch.set_rng_state(ckpt["rng"])
        start = ckpt["epoch"]
        divergences = ckpt.get("divergences", 0)
        run.truncate_history(start)
        run.log(f"resuming from epoch {start} in {run.dir}")
    history = broadcast_object(run.history())
    steps = data.steps_per_epoch()
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=run.console,
        disable=not run.progress,
        transient=True,
    )
    stop_reason = None
    with progress:
        bar = progress.add_task("search", total=steps, epoch="", info="")
        for epoch in range(start, cfg.epochs):
            last_good = _snapshot(supernet, opt, strategy)
            events = []
            t0 = time.perf_counter()
            while True:
                try:
                    sums, counts = _epoch(strategy, supernet, data, opt, epoch, device, progress, bar, run.progress)
                    break
                except Diverged as d:
                    divergences += 1
                    if divergences > cfg.max_divergences:
                        raise DnasError(
                            f"the search diverged again at epoch {epoch + 1} ({d.term}); the run folder keeps every "
                            f"finished epoch (last checkpoint: epoch {epoch}); lower the learning rates and --resume"
                        ) from None
                    _restore(last_good, supernet, opt, strategy)
                    _scale_lr(opt, cfg.divergence_lr_factor)
                    events.append(f"diverged ({d.term}): restarted epoch {epoch + 1} with learning rates × {cfg.divergence_lr_factor}")
                    run.log(f"[yellow]warning:[/] {events[-1]}")
            opt.schedule.step()
            genotype = supernet.genotype(cfg.parser, **strategy.parser_args())
            record = {
                "epoch": epoch + 1,
                **{k: round(float(v) / counts[k], 6) for k, v in sums.items()},
                "w_lr": opt.weights.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - t0, 3),
                "alphas": alpha_snapshot(supernet),
                "genotype": {k: list(v) for k, v in genotype.choices.items()},
                **({"events": events} if events else {}),
            }
            record.update(strategy.epoch_metrics(supernet, history))
            history.append(record)
            run.append_history(record)
            run.save_checkpoint(
                {
                    "epoch": epoch + 1,
                    "supernet": supernet.state_dict(),
                    "optimizers": opt.state_dict(),
                    "strategy": strategy.state_dict(),
                    "rng": torch.get_rng_state(),
                    "divergences": divergences,
                }
            )
            shown = {k: record[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in record}
            run.log(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k} {v:.4f}" for k, v in shown.items()) + f" ({record['seconds']:.1f}s)")
            stop_reason = strategy.should_stop(history)
            if stop_reason:
                run.log(f"early stop after epoch {epoch + 1}: {stop_reason}")
                break
    genotype = supernet.genotype(cfg.parser, **strategy.parser_args())
    return genotype
