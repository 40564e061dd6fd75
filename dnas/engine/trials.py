"""Trial-based search (TPE, random search): the small loop shared by both, over an optuna study.

Each trial samples the space's categorical parameters (``SearchSpace.categorical``), maps them to
a genotype (``SearchSpace.from_categorical``), builds and briefly trains that network and reports
its fitness (``dnas.engine.fitness``; lower is better). Trials live in an optuna storage: an SQLite file
in the run folder by default, or any database URL optuna accepts, so several processes
(``workers``) and several machines (one ``dnas search`` each, same ``storage`` and ``study``)
fill one study. A worker's heartbeat marks it alive; the trial of a dead worker is failed and
re-queued once its heartbeat is older than two intervals (optuna's heartbeat and
``RetryHeartbeatStaleTrialCallback``). With the default storage, the run folder's lock proves no
other process uses it, so trials left RUNNING by a killed search are failed and re-queued at once.

The budget counts completed trials: the study stops when ``trials`` of them are COMPLETE. A trial
asked for when the trials before it already cover the budget is pruned (``over_budget``) and
counts for nothing, so concurrent workers never overshoot.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import Subset

from dnas.config import config_dict
from dnas.engine.fitness import TrainSpec, train_and_score
from dnas.errors import DnasError, first_line
from dnas.strategy import Strategy

if TYPE_CHECKING:
    from dnas.engine.data import SearchData
    from dnas.engine.run import Run
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace, Task
    from dnas.supernet import Supernet


@dataclass
class TrialConfig:
    """Defaults: CSNAS (Nguyen & Chang 2021, arXiv 2102.10557), the paper's values; a field's
    metadata holds the paper's and the authors' code's value where they differ."""

    trials: int = 120  # completed trials to reach (CSNAS code: 120 evaluations)
    timeout: float | None = None  # seconds this process keeps asking for new trials
    workers: int = 1  # processes on this machine filling the study
    storage: str | None = None  # optuna storage URL; None: sqlite:///RUN_DIR/study.db
    study: str | None = None  # study name; None: "dnas"
    heartbeat: int = 30  # seconds between worker heartbeats; silent for 2x this = dead
    retries: int = 1  # times a dead worker's trial is re-queued
    subset: float = 0.1  # fraction of the search split each trial trains and scores on (CSNAS: 10 %)
    # auto: contrastive where the task serves two views or has no labels, supervised otherwise
    fitness: Literal["auto", "supervised", "contrastive"] = "auto"
    epochs: int = 10  # training epochs per trial (CSNAS code: 10)
    max_steps: int | None = None  # cap on training steps per trial
    # K = 150 samples a batch, so 2(K − 1) = 298 in-batch negatives (CSNAS); None: the data's batch size
    batch_size: int | None = field(default=150, metadata={"paper": 150, "code": 256})
    lr: float = field(default=0.001, metadata={"paper": 0.001, "code": 0.001})  # SGD (CSNAS); DARTS' weight lr: 0.025
    momentum: float = field(default=0.9, metadata={"paper": 0.9, "code": 0.9})
    weight_decay: float = field(default=0.0, metadata={"code": 0.0})  # the authors' SGD has none
    tau: float = field(default=0.07, metadata={"paper": 0.07, "code": 0.07})  # τ of CSNAS eq. (1)
    nce_weight: float = field(default=0.5, metadata={"paper": 0.5, "code": 0.5})  # λ of CSNAS eq. (3)
    bank_momentum: float = 0.5  # EMA weight of the memory bank (CSNAS code: 0.5)
    # the form of L_NCE: paper = eq. (1)-(2); code = PIRL's softmax cross-entropy, negatives vs the view
    nce: Literal["paper", "code"] = field(default="paper", metadata={"paper": "paper", "code": "code"})
    # negatives: batch = the 2(K − 1) in-batch representations (paper); bank = random memory-bank rows
    # (code); bank+batch = the bank rows plus the other samples of the same view (dnas' earlier choice)
    negatives: Literal["batch", "bank", "bank+batch"] = field(default="batch", metadata={"paper": "batch", "code": "bank"})
    bank_negatives: int | None = None  # bank rows drawn for bank / bank+batch; None: 2(K − 1) / the whole bank
    # projection heads g and l to ℝ^p: MLPs (paper), one linear layer each (code), none (dnas' earlier)
    projection: Literal["mlp", "linear", "none"] = field(default="mlp", metadata={"paper": "mlp", "code": "linear"})
    proj_dim: int = field(default=256, metadata={"code": 256})  # p
    views: int = 1  # M transformed views combined by l (the authors' loader draws 1)

    def check(self):
        if self.trials < 1 or self.workers < 1 or self.epochs < 0 or self.heartbeat < 1 or self.retries < 0:
            return "trials, workers and heartbeat must be >= 1, epochs and retries >= 0"
        if not 0 < self.subset <= 1:
            return "subset must be in (0, 1]"
        if self.timeout is not None and self.timeout <= 0:
            return "timeout must be a positive number of seconds"
        if not 0 <= self.nce_weight <= 1 or not 0 <= self.bank_momentum < 1 or self.tau <= 0:
            return "nce_weight must be in [0, 1], bank_momentum in [0, 1) and tau > 0"
        if self.batch_size is not None and self.batch_size < 2:
            return "batch_size must be >= 2 (the other samples of a batch are the negatives), or null for the data's"
        if self.views < 1 or self.proj_dim < 1 or (self.bank_negatives is not None and self.bank_negatives < 1):
            return "views, proj_dim and bank_negatives must be >= 1"
        return None


class CandidateFailed(DnasError):
    """One candidate of a trial search failed (diverged, NaN/inf, out of memory, a per-candidate
    error); the trial is recorded as FAIL with this reason and the study goes on."""


#: what fails one candidate but not the study: dnas' own errors (NonFinite, Diverged, a network the
#: task cannot feed) and running out of memory
CANDIDATE_ERRORS: tuple[type[BaseException], ...] = (DnasError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def fitness_for(cfg: TrialConfig, task: "Task") -> str:
    """The fitness a trial trains for: ``cfg.fitness``, or with ``auto`` the contrastive one (CSNAS)
    where the task serves two views or has no labels, and the supervised one otherwise."""
    if cfg.fitness != "auto":
        return cfg.fitness
    labelled = bool(task.num_classes or task.out_dim)
    return "contrastive" if task.two_views or not labelled else "supervised"


class TrialStrategy(Strategy):
    """Base of ``tpe`` and ``random``: a subclass only says which optuna sampler proposes trials."""

    Config = TrialConfig
    needs = frozenset({"data"})

    def requirements(self) -> frozenset[str]:
        """``labels`` too when the fitness is asked to be supervised."""
        return self.needs | ({"labels"} if self.config.fitness == "supervised" else set())

    def check_compatible(self, space: "SearchSpace", device: str | None = None) -> None:
        try:
            super().check_compatible(space, device)
        except DnasError as e:
            if self.config.fitness == "supervised" and "labels" not in space.capabilities():
                raise DnasError(f"{e}; or score candidates without labels: strategy.fitness=contrastive") from None
            raise

    def sampler(self, seed: int):
        raise NotImplementedError

    def search(self, supernet: Supernet, data: SearchData, run: Run, callbacks=None) -> Genotype:
        self.refuse_callbacks(callbacks)
        device = next((p.device for p in supernet.parameters()), torch.device("cpu"))
        return run_study(self, supernet.space, supernet.task, data, run, device)


# -- storage ------------------------------------------------------------------------------------


def _drop_trial_failures(record) -> bool:
    """A logging filter: optuna's own "Trial N failed ..." warning (with its traceback) goes; dnas
    logs the failed trial itself, in one line with its reason."""
    return not str(record.msg).startswith("Trial ") or " failed " not in str(record.msg)


def _quiet_optuna():
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimize_log = logging.getLogger("optuna.study._optimize")
    if _drop_trial_failures not in optimize_log.filters:
        optimize_log.addFilter(_drop_trial_failures)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*SQLite.*")
    return optuna


def open_study(url: str, name: str, cfg: TrialConfig, sampler, space: SearchSpace):
    """Create or load study ``name`` in storage ``url`` (heartbeat on, dead trials re-queued)."""
    optuna = _quiet_optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kw = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # two processes creating the tables of a new SQLite file at once
        try:
            storage = RDBStorage(
                url, engine_kwargs=kw, heartbeat_interval=cfg.heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=cfg.retries),
            )
            study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, direction="minimize", load_if_exists=True)
            break
        except ImportError as e:
            raise DnasError(f"storage '{url}' needs a database driver that is not installed ({e})") from None
        except Exception as e:  # noqa: BLE001  (sqlalchemy errors: a race on a new file, or a bad URL)
            if attempt == 4 or "sqlite" not in url:
                raise DnasError(f"cannot open optuna storage '{url}' ({first_line(e, 160)})") from None
            time.sleep(0.5 + attempt)
    identity = {"space": space.name, "config": space.config_dict(), "params": {k: list(v) for k, v in space.categorical().items()}}
    known = study.user_attrs.get("dnas_space")
    if known is None:
        study.set_user_attr("dnas_space", identity)
    elif known != identity:
        raise DnasError(
            f"study '{name}' in '{url}' searches another space ({known['space']} {known['config']}); "
            f"use another --study name or the same space options"
        )
    return study


def requeue_orphans(study, retries: int, log: Callable[[str], None]) -> None:
    """Fail the trials left RUNNING by a search that was killed, and re-queue their parameters."""
    optuna = _quiet_optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        try:
            storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, storage.get_trial(t._trial_id))
        log(f"trial {t.number} was running when the last search stopped: failed and re-queued")


# -- one worker ---------------------------------------------------------------------------------


def _subset(ds, fraction: float, seed: int):
    n = max(2, math.ceil(len(ds) * fraction))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return Subset(ds, idx)


def make_objective(cfg: TrialConfig, space: SearchSpace, task: Task, data: SearchData, worker: int, device):
    """The optuna objective of one worker: sample, build, train briefly, return the fitness."""
    optuna = _quiet_optuna()
    states = optuna.trial.TrialState
    params = space.categorical()
    train, held_out = _subset(data.train, cfg.subset, data.seed), _subset(data.val, cfg.subset, data.seed + 1)
    spec = replace(TrainSpec.from_config(cfg, batch_size=cfg.batch_size or data.cfg.batch_size),
                               fitness=fitness_for(cfg, task))  # "auto" resolved for this task
    invalid = [0]

    def objective(trial) -> float:
        before = [t for t in trial.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.RUNNING)) if t.number < trial.number]
        if len(before) >= cfg.trials:
            trial.set_user_attr("over_budget", True)
            raise optuna.TrialPruned()
        sample = {name: trial.suggest_categorical(name, list(choices)) for name, choices in params.items()}
        try:
            g = space.from_categorical(sample)
        except DnasError as e:  # a sample breaking the space's constraints: not counted, retried
            invalid[0] += 1
            if invalid[0] > 1000:
                raise DnasError(
                    f"1000 samples in a row break space '{space.name}''s constraints; give it categorical() and "
                    f"from_categorical() methods whose samples are valid"
                ) from None
            trial.set_user_attr("invalid", str(e))
            raise optuna.TrialPruned() from None
        invalid[0] = 0
        t0 = time.perf_counter()
        trial.set_user_attr("genotype", {k: list(v) for k, v in g.choices.items()})
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("pid", os.getpid())
        torch.manual_seed(data.seed * 1_000_003 + trial.number)
        model = None
        try:
            model = space.build_network(g, task)
            trial.set_user_attr("params", sum(p.numel() for p in model.parameters()))
            result = train_and_score(model, train, held_out, spec, seed=data.seed * 1_000_003 + trial.number, device=device,
                                     classes=task.num_classes)
        except CANDIDATE_ERRORS as e:  # one bad candidate: a failed trial with its reason, the study goes on
            del model
            if isinstance(e, CANDIDATE_ERRORS[-1]) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            _fail_trial(trial, failure_kind(e), first_line(e), t0)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        for k in ("accuracy", "train_loss", "steps"):
            if k in result:
                trial.set_user_attr(k, result[k])
        if not math.isfinite(result["fitness"]):
            _fail_trial(trial, "non-finite fitness", f"the fitness is {result['fitness']} (the training diverged)", t0)
        return result["fitness"]

    return objective


def failure_kind(e: BaseException) -> str:
    """A short name of why a candidate failed (the reasons are counted by it)."""
    if isinstance(e, CANDIDATE_ERRORS[-1]):
        return "out of memory"
    from dnas.engine.loop import Diverged

    return "NaN/inf" if isinstance(e, Diverged) else type(e).__name__


def _fail_trial(trial, kind: str, reason: str, t0: float):
    """Record why ``trial`` failed (user attrs ``error`` and ``error_kind``) and fail it."""
    trial.set_user_attr("error_kind", kind)
    trial.set_user_attr("error", reason[:500])
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
    raise CandidateFailed(f"{kind}: {reason}")


def failure_summary(study) -> str:
    """The failed trials' reasons, counted: ``3 NaN/inf (e.g. ...), 1 out of memory (e.g. ...)``."""
    kinds: dict[str, list[str]] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "FAIL":
            u = t.user_attrs
            kinds.setdefault(u.get("error_kind", "worker lost"), []).append(u.get("error", "no reason recorded"))
    return ", ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1])))


def _counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def worker_loop(cfg: TrialConfig, study, objective, on_trial: Callable | None = None, poll: float = 1.0) -> None:
    """Run trials until the study holds ``cfg.trials`` completed ones (or ``cfg.timeout`` passes).

    When the running trials of other workers cover the rest of the budget, wait for them: one that
    dies is failed by the heartbeat and re-queued, and this worker takes it.
    """
    optuna = _quiet_optuna()
    t0 = time.monotonic()
    failures = 0
    while cfg.timeout is None or time.monotonic() - t0 < cfg.timeout:
        n = _counts(study)
        if n.get("COMPLETE", 0) >= cfg.trials:
            return
        if n.get("COMPLETE", 0) + n.get("RUNNING", 0) >= cfg.trials:
            optuna.storages.fail_stale_trials(study)
            time.sleep(poll)
            continue
        before = n.get("FAIL", 0)
        study.optimize(objective, n_trials=1, callbacks=[on_trial] if on_trial else None, gc_after_trial=False,
                       catch=(CandidateFailed,))
        if _counts(study).get("FAIL", 0) > before:
            failures += 1
            if failures >= max(10, cfg.trials):  # enough failures: stop asking; the caller keeps the best completed trial
                return


# -- several processes --------------------------------------------------------------------------


def _worker_main(spec: dict[str, Any]) -> None:
    """Entry point of a spawned worker process: rebuild everything from plain data, then loop."""
    from dnas.config import make_config
    from dnas.engine.data import DataConfig, SearchData, load_datasets
    from dnas.registry import create_space, create_strategy

    for module in spec["modules"]:
        importlib.import_module(module)
    torch.set_num_threads(spec["threads"])
    space = create_space(spec["space"], **spec["space_config"])
    strategy = create_strategy(spec["strategy"], **spec["strategy_config"])
    dcfg = make_config(DataConfig, spec["data_config"], "data")
    data = SearchData(load_datasets(dcfg), dcfg, seed=spec["seed"])
    cfg = strategy.config
    study = open_study(spec["url"], spec["study"], cfg, strategy.sampler(spec["seed"] + 7919 * spec["worker"]), space)
    worker_loop(cfg, study, make_objective(cfg, space, spec["task"], data, spec["worker"], torch.device(spec["device"])))


def _spawn_workers(strategy: TrialStrategy, space, task, data, url, name, device, n: int):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    base = {
        "modules": sorted({type(space).__module__, type(strategy).__module__}),
        "space": space.name, "space_config": space.config_dict(),
        "strategy": strategy.name, "strategy_config": config_dict(strategy.config),
        "data_config": config_dict(data.cfg), "seed": data.seed, "task": task,
        "url": url, "study": name, "device": str(device), "threads": max(1, torch.get_num_threads() // (n + 1)),
    }
    procs = []
    for w in range(1, n + 1):
        p = ctx.Process(target=_worker_main, args=({**base, "worker": w},), daemon=True)
        p.start()
        procs.append(p)
    return procs


# -- the study as a table -----------------------------------------------------------------------


def trial_records(study) -> list[dict[str, Any]]:
    """One plain record per trial: number, state, fitness, worker, params, seconds, genotype."""
    out = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        u = t.user_attrs
        out.append({
            "trial": t.number,
            "state": t.state.name,
            "fitness": t.value if t.value is not None and math.isfinite(t.value) else None,
            **{k: u[k] for k in ("accuracy", "params", "seconds", "worker", "steps") if k in u},
            **({"retry_of": t.system_attrs["failed_trial"]} if "failed_trial" in t.system_attrs else {}),
            **({"note": "over budget"} if u.get("over_budget") else {}),
            **({"note": f"invalid: {u['invalid']}"} if "invalid" in u else {}),
            **({"note": f"failed: {u['error_kind']}", "error": u["error"]} if "error" in u else {}),
            "start": t.datetime_start.isoformat() if t.datetime_start else None,
            "genotype": u.get("genotype"),
        })
    return out


def append_history(study, run: Run, recorded: set) -> None:
    """Append one ``history.jsonl`` record per finished trial not yet in ``recorded`` (updated)."""
    params = {t.number: dict(t.params) for t in study.get_trials(deepcopy=False)}
    for r in trial_records(study):
        if r["trial"] not in recorded and r["state"] in ("COMPLETE", "FAIL") and r.get("note") != "over budget":
            recorded.add(r["trial"])  # one record per finished trial (the loggers read it), with its parameters
            run.append_history({**{k: v for k, v in r.items() if k != "start"}, "parameters": params.get(r["trial"], {})})


def write_table(study, run: Run) -> Path:
    from dnas._io import atomic_write_text

    path = run.path("trials.jsonl")
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in trial_records(study)))
    return path


# -- the search ---------------------------------------------------------------------------------


def run_study(strategy: TrialStrategy, space: SearchSpace, task: Task, data: SearchData, run: Run, device) -> Genotype:
    """Fill the study to its budget with this process and ``workers - 1`` spawned ones; write the
    trial table; return the genotype of the best completed trial."""
    cfg = strategy.config
    fitness = fitness_for(cfg, task)
    if fitness == "supervised" and (task.two_views or not (task.num_classes or task.out_dim)):
        raise DnasError(
            f"strategy '{strategy.name}' scores candidates with labels (fitness supervised), but the data of space "
            f"'{space.name}' {'are two-view batches' if task.two_views else 'have no labels'}; use --fitness contrastive (or auto)"
        )
    if fitness == "contrastive" and not task.two_views and len(task.input_shape) != 3:
        raise DnasError(
            f"the contrastive fitness makes two views of images (C, H, W), and this data has inputs of shape "
            f"{tuple(task.input_shape)}; use --fitness supervised on labelled data"
        )
    url = cfg.storage or f"sqlite:///{(run.dir / 'study.db').resolve()}"
    name = cfg.study or "dnas"
    study = open_study(url, name, cfg, strategy.sampler(data.seed), space)
    if cfg.storage is None:  # our own file, and the run lock says nobody else is using it
        requeue_orphans(study, cfg.retries, run.log)
    run.log(f"study '{name}' in {url}: {_counts(study).get('COMPLETE', 0)}/{cfg.trials} trials done")
    procs = _spawn_workers(strategy, space, task, data, url, name, device, cfg.workers - 1) if cfg.workers > 1 else []

    recorded = {r.get("trial") for r in run.history()}

    def on_trial(study, t):
        if t.state.name == "COMPLETE":
            run.log(f"trial {t.number}: fitness {t.value:.4f} (best {study.best_value:.4f}) {t.user_attrs.get('seconds', 0):.1f}s")
        elif t.state.name == "FAIL" and "error" in t.user_attrs:
            run.log(f"[yellow]trial {t.number} failed[/] ({t.user_attrs['error_kind']}): {t.user_attrs['error']}; the search goes on")
        write_table(study, run)
        append_history(study, run, recorded)

    try:
        worker_loop(cfg, study, make_objective(cfg, space, task, data, 0, device), on_trial)
    finally:
        for p in procs:
            p.join(timeout=None if cfg.timeout is None else cfg.timeout + 60)
            if p.is_alive():
                p.terminate()
        write_table(study, run)
        append_history(study, run, recorded)
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        run.log(f"[yellow]warning:[/] {len(bad)} worker process(es) exited with an error (codes {bad}); their trials were re-queued")
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        failed = failure_summary(study)
        why = f"every trial of study '{name}' failed: {failed}" if failed else f"no trial of study '{name}' completed (timeout too short?)"
        raise DnasError(f"{why}; the trial table is in {run.path('trials.jsonl')}")
    n_failed = _counts(study).get("FAIL", 0)
    if n_failed:
        run.log(f"{n_failed} trial(s) failed and were recorded: {failure_summary(study)}")
    best = min(done, key=lambda t: t.value)
    run.log(f"best: trial {best.number}, fitness {best.value:.4f} ({len(done)} completed trials)")
    return space.genotype(best.user_attrs["genotype"])
