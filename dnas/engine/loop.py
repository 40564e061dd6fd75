"""THE search loop shared by every gradient strategy, and the gradient strategy base.

A gradient strategy contributes its α step, its weight step and its named loss terms; the loop
owns epochs, progress, history, checkpoints and resume (as timm's one ``train.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from dnas.engine.callbacks import LoopState, diverged_advice
from dnas.engine.distributed import average_, broadcast_object
from dnas.errors import DnasError
from dnas.strategy import Strategy

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dnas.engine.callbacks import Callback
    from dnas.engine.data import SearchData
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace
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
    parser: str | None = None  # None: the space's default parser
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast the forward of the α and weight steps; fp16 adds a GradScaler

    def check(self):
        if self.epochs < 0 or self.warmup_epochs < 0:
            return "epochs and warmup_epochs must be >= 0"
        if self.w_lr <= 0 or self.a_lr < 0:
            return "learning rates must be positive"
        if self.grad_clip < 0:
            return f"grad_clip must be >= 0 (0: no clipping), got {self.grad_clip:g}"
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

    def scale_lr(self, factor: float) -> None:
        """Multiply every learning rate, now and in the rest of the schedule, by ``factor``."""
        for o in [self.weights, *self.arch.values()]:
            for group in o.param_groups:
                group["lr"] *= factor
        self.schedule.base_lrs = [lr * factor for lr in self.schedule.base_lrs]
        self.schedule.eta_min *= factor


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
    train batch. Subclasses override :meth:`arch_step`, :meth:`loss_terms`, or :attr:`relaxation`.

    Call order inside :func:`search_loop` (on top of :class:`~dnas.strategy.Strategy`'s)::

        optimizers(supernet), grad_scalers(supernet)   via init_state(), once
        for each epoch, for each (train, val) batch pair:
            step(supernet, train_batch, val_batch, state)
                arch_step(...)   -> arch_loss(...) -> loss_terms(supernet, state)   (after the warm-up)
                weight_step(...)
        parser_args()                                   whenever a genotype is derived

    Every step receives the :class:`~dnas.engine.callbacks.LoopState`: ``state.epoch`` (the 0-based
    index of the running epoch), ``state.optimizers``, ``state.scalers``. What a method adds around
    the steps (distance, early stops, warm starts, rollback) is a callback (:meth:`default_callbacks`).
    """

    Config = GradientConfig
    needs = frozenset({"alpha", "data"})
    relaxation: ClassVar[str] = "softmax"
    uses_callbacks = True

    # -- hooks --------------------------------------------------------------------------------
    def optimizers(self, supernet: "Supernet") -> Optimizers:
        c = self.config
        w = torch.optim.SGD(supernet.weight_parameters(), c.w_lr, momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        arch = {
            k: torch.optim.Adam(ps, lr=c.a_lr, betas=tuple(c.a_betas), weight_decay=c.a_weight_decay)
            for k, ps in supernet.arch_groups().items()
        }
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w, max(c.epochs, 1), eta_min=c.w_lr_min)
        return Optimizers(w, arch, sched)

    def grad_scalers(self, supernet: "Supernet") -> dict[str, "torch.amp.GradScaler"]:
        """With ``amp="fp16"``, a loss scaler for the "arch" and the "weights" step; else none."""
        if self.config.amp != "fp16":
            return {}
        device = next(supernet.parameters()).device.type
        return {"arch": torch.amp.GradScaler(device), "weights": torch.amp.GradScaler(device)}

    def init_state(self, supernet: "Supernet", run: "Run | None" = None) -> LoopState:
        """A fresh :class:`LoopState` for ``supernet``: optimizers and loss scalers built, epoch 0."""
        return LoopState(supernet, self, run, epochs=self.config.epochs, optimizers=self.optimizers(supernet),
                         scalers=self.grad_scalers(supernet))

    def default_callbacks(self, space: "SearchSpace") -> dict[str, dict[str, Any]]:
        """``rollback`` of a divergence and the ``param_free_ops`` count (the sign of DARTS' collapse,
        thesis §3.2) always; the D-DARTS ``distance`` on spaces of cells."""
        from dnas.engine.distance import has_cells

        return {"rollback": {}, "param_free_ops": {}, **({"distance": {}} if has_cells(space) else {})}

    def loss_terms(self, supernet: "Supernet", state: LoopState) -> dict[str, torch.Tensor]:
        """Named regularisers added to the α loss (e.g. FairDARTS' zero-one loss). None here."""
        return {}

    def autocast(self, supernet: "Supernet"):
        """The ``amp`` autocast context for a step's forward (disabled for ``amp="none"``)."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        device = next(supernet.parameters()).device.type
        return torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def arch_loss(self, supernet: "Supernet", batch: Any, state: LoopState) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.autocast(supernet):
            out = supernet.loss(batch)
        terms = self.loss_terms(supernet, state)
        total = out["loss"] + sum(terms.values()) if terms else out["loss"]
        metrics = {f"val_{k}": v.detach() for k, v in out.items()}
        metrics.update({k: v.detach() for k, v in terms.items()})
        return total, metrics

    def arch_step(self, supernet: "Supernet", train_batch: Any, val_batch: Any, state: LoopState) -> dict[str, torch.Tensor]:
        """First order: ∇_α L_val(w, α) at the current w (DARTS, first-order approximation)."""
        scaler = state.scalers.get("arch")
        alphas = supernet.arch_parameters()
        with supernet.grad_only(alphas):
            total, metrics = self.arch_loss(supernet, val_batch, state)
            total = scaler.scale(total) if scaler else total
            grads = torch.autograd.grad(total, alphas, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        average_(grads)  # data-parallel: the mean over ranks
        for a, g in zip(alphas, grads):
            a.grad = g
        for o in state.optimizers.arch.values():
            scaler.step(o) if scaler else o.step()  # fp16: unscales, skips the step on inf/NaN
        if scaler:
            scaler.update()
        return metrics

    def weight_step(self, supernet: "Supernet", batch: Any, state: LoopState) -> dict[str, torch.Tensor]:
        """∇_w L_train(w, α), clipped, one SGD step; α receive no gradient."""
        opt = state.optimizers
        opt.weights.zero_grad(set_to_none=True)
        scaler = state.scalers.get("weights")
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

    def step(self, supernet: "Supernet", train_batch: Any, val_batch: Any, state: LoopState) -> dict[str, torch.Tensor]:
        """One search step: the α step (not during ``warmup_epochs``), then the weight step."""
        metrics = {}
        if state.epoch >= self.config.warmup_epochs:
            metrics.update(self.arch_step(supernet, train_batch, val_batch, state))
        metrics.update(self.weight_step(supernet, train_batch, state))
        return metrics

    def parser_args(self) -> dict[str, Any]:
        """Keyword arguments for the parser that derives the genotype (e.g. FairDARTS' threshold)."""
        return {}

    def derive(self, supernet: "Supernet") -> "Genotype":
        """The genotype of the supernet's current α (``parser`` with :meth:`parser_args`)."""
        return supernet.genotype(self.config.parser, **self.parser_args())

    # -- the loop -----------------------------------------------------------------------------
    def search(self, supernet: "Supernet", data: "SearchData", run: "Run", callbacks: "Sequence[Callback] | None" = None) -> "Genotype":
        return search_loop(self, supernet, data, run, callbacks)


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


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an older dnas (start genotype and loss scalers under "strategy", the divergence
    count at the top) in today's layout, so such a run folder resumes."""
    ckpt = dict(ckpt)
    strat = dict(ckpt.get("strategy", {}))
    for key in ("start_genotype", "grad_scalers"):
        if key in strat:
            ckpt.setdefault(key, strat.pop(key))
    ckpt["strategy"] = strat
    if "divergences" in ckpt:
        ckpt.setdefault("callbacks", {}).setdefault("rollback", {"divergences": ckpt.pop("divergences")})
    return ckpt


#: replays of one epoch that on_divergence callbacks may ask for before the search stops
MAX_REPLAYS = 10


def _epoch(state: LoopState, data, device, progress, bar, show) -> tuple[dict, dict]:
    """One pass over the (train, val) pairs; returns the summed metrics and their counts."""
    strategy, supernet = state.strategy, state.supernet
    supernet.train()
    progress.reset(bar, total=data.steps_per_epoch(), epoch=f"{state.epoch + 1}/{state.epochs}", info="")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for train_batch, val_batch in data.epoch(state.epoch):
        train_batch, val_batch = to_device(train_batch, device), to_device(val_batch, device)
        m = strategy.step(supernet, train_batch, val_batch, state)
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


def search_loop(strategy: GradientStrategy, supernet: "Supernet", data: "SearchData", run: "Run",
                callbacks: "Sequence[Callback] | None" = None) -> "Genotype":
    """Epochs of ``strategy.step`` over (train, val) batch pairs, with history, checkpoints, resume.

    ``callbacks`` (None: the strategy's :meth:`~GradientStrategy.default_callbacks`) are called in
    the order documented in :mod:`dnas.engine.callbacks`; their state goes into every checkpoint.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from dnas.engine.callbacks import default_callbacks

    cfg = strategy.config
    supernet.relaxation = strategy.relaxation
    device = next(supernet.parameters()).device
    state = strategy.init_state(supernet, run)
    cbs = list(callbacks) if callbacks is not None else default_callbacks(strategy, supernet.space)
    ckpt = broadcast_object(run.load_checkpoint())
    if ckpt is not None:
        ckpt = upgrade_checkpoint(ckpt)
        state.load_state_dict(ckpt)
        for cb in cbs:
            cb.load_state_dict(ckpt.get("callbacks", {}).get(cb.key, {}))
        state.resumed = True
        run.truncate_history(state.epoch)
        run.log(f"resuming from epoch {state.epoch} in {run.dir}")
    state.history = broadcast_object(run.history())
    for cb in cbs:
        cb.on_search_start(state)
    if not state.resumed:  # after the warm starts: the genotype the search starts from
        state.start_genotype = {k: list(v) for k, v in strategy.derive(supernet).choices.items()}
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
    opt = state.optimizers
    with progress:
        bar = progress.add_task("search", total=steps, epoch="", info="")
        for epoch in range(state.epoch, cfg.epochs):
            state.epoch, state.events = epoch, []
            for cb in cbs:
                cb.on_epoch_start(state)
            t0 = time.perf_counter()
            for replay in range(MAX_REPLAYS + 1):
                try:
                    sums, counts = _epoch(state, data, device, progress, bar, run.progress)
                    break
                except Diverged as d:
                    # the first callback that repairs the state wins; none, or too many replays: stop
                    if replay == MAX_REPLAYS or not any(cb.on_divergence(state, d) for cb in cbs):
                        again = f" after {replay} replays" if replay else ""
                        raise DnasError(f"the search diverged at epoch {epoch + 1} ({d.term}){again}; {diverged_advice(epoch)}") from None
            opt.schedule.step()
            genotype = strategy.derive(supernet)
            record = {
                "epoch": epoch + 1,
                **{k: round(float(v) / counts[k], 6) for k, v in sums.items()},
                "w_lr": opt.weights.param_groups[0]["lr"],
                **({"a_lr": next(iter(opt.arch.values())).param_groups[0]["lr"]} if opt.arch else {}),
                "seconds": round(time.perf_counter() - t0, 3),
                "alphas": alpha_snapshot(supernet),
                "genotype": {k: list(v) for k, v in genotype.choices.items()},
                **({"events": list(state.events)} if state.events else {}),
            }
            state.epoch = epoch + 1
            for cb in cbs:
                cb.on_epoch_end(state, record)
            state.history.append(record)
            run.append_history(record)
            run.save_checkpoint({**state.state_dict(), "callbacks": {cb.key: cb.state_dict() for cb in cbs}})
            shown = {k: record[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc") if k in record}
            run.log(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k} {v:.4f}" for k, v in shown.items()) + f" ({record['seconds']:.1f}s)")
            stop_reason = next(filter(None, (cb.should_stop(state) for cb in cbs)), None)
            if stop_reason:
                run.log(f"early stop after epoch {epoch + 1}: {stop_reason}")
                break
    genotype = strategy.derive(supernet)
    for cb in cbs:
        cb.on_search_end(state, genotype)
    return genotype
