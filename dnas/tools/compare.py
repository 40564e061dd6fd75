"""Does the search beat random? Searched genotypes against size-matched random ones, over seeds.

The protocol (``dnas compare``, :func:`compare`):

1. ``search_seeds`` searches of one search config (or the given genotype files instead);
2. for each searched genotype, ``random`` genotypes of the same space drawn uniformly
   (``space.random_genotype``) and kept only if their network's parameter count lies within
   ``tolerance`` (±10 %) of the searched network's (rejection sampling);
3. every genotype trained ``train_seeds`` times under one training recipe (``dnas.train``);
4. per arm the mean, standard deviation and a t 95 % confidence interval of the test accuracy; the
   difference searched − random with its Welch confidence interval, the Welch t-test and the
   Mann–Whitney U p-values, and the rank of each searched genotype among its random ones.

The compare folder is a run folder: every search and every training is a unit of work whose result
is written atomically to ``units/<id>.json`` when it completes; ``resume`` redoes only the missing
units (a killed search continues from its checkpoint). ``workers`` runs units in parallel processes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random as _random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dnas.config import make_config
from dnas.errors import DnasError

#: accuracies in the results are test top-1 in percent; differences in percentage points
SIGNIFICANCE = 0.05


@dataclass
class CompareConfig:
    """The protocol's options (the search and training recipes live in the search config)."""

    search_seeds: int = 2  # searches (seeds seed, seed+1, ...); ignored when genotype files are given
    random: int = 4  # random genotypes per searched genotype
    train_seeds: int = 2  # trainings per genotype (seeds 0, 1, ...)
    tolerance: float = 0.10  # a random genotype's parameter count within ±tolerance of the searched one's
    max_tries: int = 2000  # random genotypes drawn per searched genotype before giving up
    unit: Literal["training", "genotype"] = "training"  # an observation: one trained network, or a genotype's mean over seeds
    sample_seed: int = 0  # seed of the random-genotype sampler
    workers: int = 1  # parallel processes running the units
    threads: int = 0  # torch threads per unit (0: the CPU count divided by workers)
    eval_space: dict[str, Any] = field(default_factory=dict)  # space options for training (e.g. C, layers); default: as searched

    def check(self):
        if self.search_seeds < 1 or self.random < 1 or self.train_seeds < 1:
            return "search_seeds, random and train_seeds must be >= 1"
        if not 0 < self.tolerance < 1:
            return "tolerance must be in (0, 1), e.g. 0.1 for ±10 %"
        if self.max_tries < 1 or self.workers < 1 or self.threads < 0:
            return "max_tries and workers must be >= 1, threads >= 0"
        return None


# -- statistics (pure) -----------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def describe_arm(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """n, mean, sample standard deviation (ddof 1) and the t confidence interval of the mean.

    Args:
        values: the observations (accuracies in %).
        level: confidence level of the interval.

    Returns:
        ``{"n", "mean", "std", "ci95": [lo, hi]}``; std and the interval are None for n < 2.
    """
    from scipy import stats

    n = len(values)
    if n == 0:
        raise DnasError("an arm of the comparison has no observations")
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)  # mean ± t_{n-1} s/√n
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def compare_arms(searched: Sequence[float], random: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """The statistics of searched vs random accuracies (a pure function of the two lists).

    Args:
        searched: observations of the searched arm (accuracies in %).
        random: observations of the random arm.
        level: confidence level.

    Returns:
        ``{"searched": arm, "random": arm, "difference": {...}}`` where an arm is
        :func:`describe_arm`'s dict and the difference holds ``mean`` (searched − random), ``ci95``
        (Welch: ± t_ν · √(s₁²/n₁ + s₂²/n₂), ν by Welch–Satterthwaite), ``df``, ``welch_t``,
        ``welch_p`` (two-sided), ``mannwhitney_u`` (U of the searched arm) and ``mannwhitney_p``
        (two-sided). Values that are undefined (n < 2, no variance) are None.
    """
    from scipy import stats

    a, b = describe_arm(searched, level), describe_arm(random, level)
    diff: dict[str, Any] = {"mean": a["mean"] - b["mean"], "ci95": None, "df": None, "welch_t": None, "welch_p": None,
                            "mannwhitney_u": None, "mannwhitney_p": None}
    if a["n"] >= 2 and b["n"] >= 2:
        va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
        se = math.sqrt(va + vb)
        if se > 0:
            df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))  # Welch–Satterthwaite
            half = stats.t.ppf(0.5 + level / 2, df) * se
            with warnings.catch_warnings():  # nearly equal accuracies: scipy warns of precision loss, the numbers stand
                warnings.simplefilter("ignore", RuntimeWarning)
                t = stats.ttest_ind(list(searched), list(random), equal_var=False)
            diff.update(ci95=[diff["mean"] - half, diff["mean"] + half], df=df, welch_t=_finite(t.statistic), welch_p=_finite(t.pvalue))
    if len(set(searched) | set(random)) > 1:  # all equal: U is defined but its p-value is not informative
        u = stats.mannwhitneyu(list(searched), list(random), alternative="two-sided")
        diff.update(mannwhitney_u=_finite(u.statistic), mannwhitney_p=_finite(u.pvalue))
    return {"searched": a, "random": b, "difference": diff}


def rank_among(value: float, others: Sequence[float]) -> dict[str, int]:
    """Rank of ``value`` among ``others`` (1 = best): 1 + how many are strictly higher.

    Returns:
        ``{"rank", "of", "beats", "ties"}`` with ``of = len(others) + 1``.
    """
    higher = sum(o > value for o in others)
    ties = sum(o == value for o in others)
    return {"rank": 1 + higher, "of": len(others) + 1, "beats": len(others) - higher - ties, "ties": ties}


def _signed(x: float) -> str:
    return f"{round(x, 2) + 0.0:+.2f}"  # + 0.0: a difference that rounds to zero reads +0.00, not -0.00


def verdict(diff: dict[str, Any], n_searched: int, n_random: int, unit: str, alpha: float = SIGNIFICANCE) -> str:
    """The result in words, e.g. ``searched − random = +0.4 pts, 95 % CI [−0.6, 1.4], p = 0.41: no
    significant difference at this budget``."""
    text = f"searched − random = {_signed(diff['mean'])} pts"
    if diff["ci95"] is not None:
        lo, hi = diff["ci95"]
        text += f", 95 % CI [{_signed(lo)}, {_signed(hi)}]"
    p = diff["welch_p"]
    if p is None:
        why = "fewer than 2 observations in an arm" if min(n_searched, n_random) < 2 else "no variance in either arm"
        return text + f" ({n_searched} vs {n_random} {unit}s): no test possible ({why})"
    text += f", Welch p = {p:.3g}"
    if diff["mannwhitney_p"] is not None:
        text += f", Mann–Whitney p = {diff['mannwhitney_p']:.3g}"
    text += f" ({n_searched} vs {n_random} {unit}s)"
    if p < alpha:
        better = "better" if diff["mean"] > 0 else "worse"
        return text + f": the searched genotypes are significantly {better} than random ones at this budget (p < {alpha:g})"
    return text + ": no significant difference at this budget"


def summarize(genotypes: list[dict[str, Any]], unit: str = "training") -> dict[str, Any]:
    """Statistics of a finished comparison from its genotype records.

    Args:
        genotypes: one dict per genotype with ``id``, ``arm`` ("searched"/"random"), ``group`` (the
            index of the searched genotype it belongs to) and ``top1`` (accuracies in %, one per seed).
        unit: "training" (each trained network is an observation) or "genotype" (a genotype's mean).

    Returns:
        :func:`compare_arms`'s dict plus ``ranks`` (each searched genotype's rank by mean accuracy
        among the random genotypes of its group and among all), ``unit`` and ``verdict``.
    """
    for g in genotypes:
        g["mean"] = sum(g["top1"]) / len(g["top1"])

    def obs(arm):
        gs = [g for g in genotypes if g["arm"] == arm]
        return [v for g in gs for v in g["top1"]] if unit == "training" else [g["mean"] for g in gs]

    out = compare_arms(obs("searched"), obs("random"))
    randoms = [g for g in genotypes if g["arm"] == "random"]
    out["ranks"] = [
        {"genotype": g["id"], "in_group": rank_among(g["mean"], [r["mean"] for r in randoms if r["group"] == g["group"]]),
         "overall": rank_among(g["mean"], [r["mean"] for r in randoms])}
        for g in genotypes if g["arm"] == "searched"
    ]
    out["unit"] = unit
    out["verdict"] = verdict(out["difference"], out["searched"]["n"], out["random"]["n"], unit)
    return out


# -- units of work ---------------------------------------------------------------------------------


def count_params(model) -> int:
    """Parameters of a network as DARTS reports them (the auxiliary head left out)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux."))


def sample_matched(space, task, target: int, n: int, rng: _random.Random, tolerance: float, max_tries: int,
                   exclude: Sequence = ()) -> list[tuple[Any, int]]:
    """``n`` distinct random genotypes whose network has ``target`` parameters within ±``tolerance``.

    Args:
        space: the search space (its ``random_genotype`` and ``build_network``).
        task: the task the networks are built for.
        target: the parameter count to match.
        n: how many genotypes to return.
        rng: the sampler's random generator.
        tolerance: relative tolerance, e.g. 0.1.
        max_tries: genotypes drawn before giving up.
        exclude: genotypes not to return (the searched one).

    Returns:
        ``[(genotype, params), ...]``.

    Raises:
        DnasError: when fewer than ``n`` matches turn up in ``max_tries`` draws.
    """
    found: list[tuple[Any, int]] = []
    seen = set(exclude)
    sizes: list[int] = []  # parameters of every distinct genotype drawn
    with _kept_rng():  # building a network draws its initial weights: leave the global generator as it was
        for _ in range(max_tries):
            g = space.random_genotype(rng)
            if g in seen:
                continue
            seen.add(g)
            p = count_params(space.build_network(g, task))
            sizes.append(p)
            if abs(p - target) <= tolerance * target:
                found.append((g, p))
                if len(found) == n:
                    return found
    head = (f"only {len(found)} of {n} random genotypes of space '{space.name}' came within ±{tolerance * 100:g} % of the searched "
            f"network's {target} parameters in {max_tries} draws")
    if len(sizes) < n and len(sizes) <= max_tries // 2:  # draws kept repeating: the space is that small
        raise DnasError(f"{head}: the space gave only {len(sizes)} other distinct genotypes; ask fewer (--random) or search a larger space")
    if len(sizes) < n:
        raise DnasError(f"{head}; raise --max-tries")
    need = sorted(abs(p - target) for p in sizes)[n - 1] / target
    side = ("; the searched network is smaller than any other drawn" if target < min(sizes) else
            "; the searched network is larger than any other drawn" if target > max(sizes) else "")
    raise DnasError(f"{head} (drawn: {min(sizes)}–{max(sizes)}{side}); --tolerance {math.ceil(need * 1000) / 1000:g} takes the "
                    f"{n} nearest drawn, or raise --max-tries")


@contextlib.contextmanager
def _kept_rng():
    import torch

    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)


def _unit_threads(threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    """Run one unit of work (a search or a training) and return its record. Top level, so that a
    spawned worker process can run it."""
    import torch

    _unit_threads(unit.get("threads", 0))
    if unit.get("plugins"):
        from dnas.registry import load_plugin

        for module in unit["plugins"]:
            load_plugin(module)
    t0 = time.perf_counter()
    folder = Path(unit["folder"])
    if unit["kind"] == "search":
        from dnas.api import search
        from dnas.engine.run import read_history

        if not (folder / "genotype.yaml").is_file():  # else: finished before the kill, only its record is missing
            if (folder / "checkpoint.pt").is_file():
                search(resume=folder, progress=False)  # a killed search goes on from its last epoch
            else:
                search(config=unit["config"], out=folder, progress=False)
        record = {"genotype_file": str(folder / "genotype.yaml"), "epochs": len(read_history(folder))}
    else:
        from dnas.api import train
        from dnas.evaluate import unfinished_training

        if unfinished_training(folder):  # a killed training goes on from its last epoch
            m = train(resume=folder, device=unit["device"], log=lambda *_: None)
        else:
            m = train(unit["genotype_file"], data=unit["data"]["name"], data_config={k: v for k, v in unit["data"].items() if k != "name"},
                      train_config=unit["train"], space_config=unit.get("eval_space") or None, seed=unit["seed"],
                      device=unit["device"], out=folder, log=lambda *_: None, loggers=unit.get("loggers") or None)
        record = {"top1": round(100 * m["top1"], 4), "params": m["params"]}
    record.update(id=unit["id"], kind=unit["kind"], seconds=round(time.perf_counter() - t0, 1), threads=torch.get_num_threads())
    return record


def unit_loggers(specs: Any, folder: Path, unit_dir: Path) -> list[dict[str, Any]]:
    """The compare's ``loggers`` for one unit (a search or a training), each unit its own run in one place:
    TensorBoard under ``DEST/<unit path>`` (default ``FOLDER/tensorboard``: ``tensorboard --logdir`` shows
    every unit as a run), CSV as ``DEST/<unit path with ->.csv`` (default ``FOLDER/metrics``), MLflow in one
    store (default ``sqlite:///FOLDER/mlflow.db``) with the unit path as run name; other loggers as given."""
    from dnas.engine.loggers import check_loggers, parse_logger_spec

    rel = Path(unit_dir).relative_to(folder).as_posix()
    out = []
    for s in check_loggers(specs):
        name, dest, _ = parse_logger_spec(s)
        if name == "tensorboard":
            dest = str(Path(dest or folder / "tensorboard") / rel)
        elif name == "csv":
            dest = str(Path(dest or folder / "metrics") / f"{rel.replace('/', '-')}.csv")
        elif name == "mlflow":
            dest = dest or f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"
        out.append({"name": name, "dest": dest, "run": rel})
    return out


def _run_units(units: list[dict[str, Any]], workers: int, done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``units`` in this process (workers = 1) or in ``workers`` spawned processes; ``done`` gets
    each record as soon as its unit finishes, so a kill loses only the units still running."""
    if not units:
        return
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for u in units:
                done(run_unit(u))
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(min(workers, len(units)), mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(run_unit, u) for u in units}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in finished:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise f.exception()
                done(f.result())


def run_metadata(command: str | None = None) -> dict[str, Any]:
    """Date, machine, commit and command of a run, for a results file."""
    import platform
    import subprocess
    import sys

    import torch

    commit = None
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=root, capture_output=True, text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs",
        "commit": commit,
        "command": command or " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def compare(
    config: dict[str, Any] | None = None,
    genotypes: Sequence[str | Path] | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    plugins: Sequence[str] = (),
    log: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """Searched genotypes against size-matched random ones, each trained over several seeds.

    Args:
        config: a search config (sections ``space``, ``strategy``, ``data``, ``train`` (the training
            recipe), ``seed``, ``device``), as ``dnas search --config`` takes.
        genotypes: genotype files to compare instead of searching (the config then gives data,
            training recipe and device).
        out: the compare folder (default ``runs/compare-<time>``).
        resume: a killed compare folder to finish; only missing units run (``workers`` and
            ``threads`` may change, nothing else).
        plugins: modules to import in worker processes (user spaces/strategies).
        log: where progress lines go.
        **options: :class:`CompareConfig` fields (``search_seeds``, ``random``, ``train_seeds``,
            ``tolerance``, ``max_tries``, ``unit``, ``sample_seed``, ``workers``, ``threads``,
            ``eval_space``).

    Returns:
        The results (also in ``out/results.json``, ``results.md`` and ``compare.png``): per
        genotype its accuracies (in %), per arm n/mean/std/ci95, the difference with its CI and
        p-values, the ranks and the verdict.

    Raises:
        DnasError: bad options, a folder already holding a compare, or a space whose random
            genotypes cannot match the searched size.

    Example:
        >>> import dnas
        >>> r = dnas.compare({"space": {"name": "darts", "C": 8, "layers": 5}, "strategy": {"name": "darts", "epochs": 4},
        ...                   "train": {"epochs": 10, "batch_size": 64}}, search_seeds=2, random=3, out="runs/cmp")
        >>> print(r["verdict"])
    """
    from dnas._io import atomic_write_text
    from dnas.api import DEFAULTS, merge_config, resolve
    from dnas.engine.run import Run

    if resume is not None:
        folder = Path(resume)
        if not (folder / "compare.yaml").is_file():
            raise DnasError(f"cannot resume: '{folder}' holds no compare.yaml; is it a dnas compare folder?")
        saved = yaml.safe_load((folder / "compare.yaml").read_text())
        changed = {k for k, v in options.items() if v is not None and k not in ("workers", "threads") and saved["options"].get(k) != v}
        if changed:
            raise DnasError(f"--resume keeps the protocol it started with; only workers and threads may change (not {', '.join(sorted(changed))})")
        opts = make_config(CompareConfig, {**saved["options"], **{k: v for k, v in options.items() if k in ("workers", "threads") and v is not None}}, "compare")
        cfg, given = saved["config"], saved["genotypes"]
    else:
        opts = make_config(CompareConfig, {k: v for k, v in options.items() if v is not None}, "compare")
        cfg = merge_config(DEFAULTS, config or {})
        folder = Path(out) if out is not None else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        if (folder / "compare.yaml").exists():
            raise DnasError(f"'{folder}' already holds a compare; pass --resume {folder} to continue it, or choose another --out")
        given = None
        if genotypes:
            from dnas.genotype import load_genotype

            loaded = [load_genotype(path) for path in genotypes]
            spaces = sorted({g.space for g in loaded})
            if len(spaces) > 1:  # one random arm is drawn from one space
                raise DnasError(f"the genotypes to compare come from {len(spaces)} spaces ({', '.join(spaces)}); compare "
                                f"genotypes of one space at a time")
            given = [str(g.save(folder / "genotypes" / f"searched-{i}.yaml")) for i, g in enumerate(loaded)]
            space_name = spaces[0]
        else:
            cfg = resolve(cfg).config  # validate now, and record every default
            space_name = cfg["space"]["name"]
        from dnas.config import config_dict
        from dnas.engine.data import DataConfig

        cfg["train"] = config_dict(make_config(_train_config_class(space_name), dict(cfg.get("train") or {}), "train"))
        cfg["data"] = config_dict(make_config(DataConfig, dict(cfg["data"]), "data"))
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "compare.yaml", yaml.safe_dump({"options": asdict(opts), "config": cfg, "genotypes": given}, sort_keys=False))
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.workers)
    t0 = time.perf_counter()
    with Run(folder, progress=False):  # the lock: two compares never interleave in one folder
        return _compare(folder, cfg, given, opts, threads, list(plugins), log, t0)


def _train_config_class(name: str):
    """The training recipe's options, by the evaluation space ``name`` declares: supervised training
    or SSL pretraining + linear evaluation (NASiam). A pruning space is refused: its genotypes are
    not trained from scratch."""
    from dnas.registry import SPACES

    evaluation = SPACES.get(name).evaluation
    if evaluation == "pruned":
        raise DnasError(f"dnas compare trains genotypes from scratch; a pruning of space '{name}' is compared with random "
                        f"prunings of the same budget by dnas prune --eval-data D --random R")
    if evaluation == "ssl":
        from dnas.evaluate.ssl import SSLTrainConfig

        return SSLTrainConfig
    from dnas.evaluate.supervised import TrainConfig

    return TrainConfig


def _compare(folder: Path, cfg: dict[str, Any], given: list[str] | None, opts: CompareConfig, threads: int,
             plugins: list[str], log: Callable[[str], None], t0: float) -> dict[str, Any]:
    from dnas._io import atomic_write_text
    from dnas.engine.data import DataConfig, load_datasets
    from dnas.genotype import load_genotype
    from dnas.registry import create_space

    units_dir = folder / "units"
    units_dir.mkdir(exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    for p in sorted(units_dir.glob("*.json")):
        records[p.stem] = json.loads(p.read_text())
    total = [0, 0]

    def done(rec: dict[str, Any]) -> None:
        atomic_write_text(units_dir / f"{rec['id']}.json", json.dumps(rec, indent=1))
        records[rec["id"]] = rec
        total[0] += 1
        what = f"top-1 {rec['top1']:.2f} %" if "top1" in rec else f"{rec['epochs']} epochs"
        log(f"[{total[0]}/{total[1]}] {rec['id']}: {what} ({rec['seconds']:.0f} s)")

    base = {"threads": threads, "plugins": plugins, "device": cfg.get("device", "cpu")}
    t = cfg["train"]
    log(f"training recipe: {t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']} (set train.* to change it)")
    # 1. searches
    if given is None:
        searches = []
        for i in range(opts.search_seeds):
            uid = f"search-{i}"
            unit_dir = folder / "searches" / f"seed-{cfg['seed'] + i}"
            searches.append({**base, "id": uid, "kind": "search", "folder": str(unit_dir),
                             "config": {**cfg, "seed": cfg["seed"] + i, "loggers": unit_loggers(cfg.get("loggers"), folder, unit_dir)}})
        todo = [u for u in searches if u["id"] not in records]
        total[1] = len(todo)
        if todo:
            log(f"{len(todo)} search(es) to run ({len(searches) - len(todo)} done), {opts.workers} worker(s) × {threads} thread(s)")
        _run_units(todo, opts.workers, done)
        searched = [records[u["id"]]["genotype_file"] for u in searches]
    else:
        searched = list(given)
    # 2. size-matched random genotypes (deterministic in sample_seed; files written once)
    data_cfg = make_config(DataConfig, dict(cfg["data"]), "data")
    task = load_datasets(data_cfg).task
    entries: list[dict[str, Any]] = []
    drawn: list = []  # every random genotype so far: the random arm holds each once (a repeat would be counted twice)
    for i, path in enumerate(searched):
        g = load_genotype(path)
        entries.append({"id": f"searched-{i}", "arm": "searched", "group": i, "file": str(path)})
        uid = f"sample-{i}"
        if uid not in records:
            space = create_space(g.space, **dict(g.config))
            build_space = create_space(g.space, **{**dict(g.config), **opts.eval_space}) if opts.eval_space else space
            with _kept_rng():  # building draws initial weights: leave the global generator as it was
                target = count_params(build_space.build_network(g, task))
            rng = _random.Random(opts.sample_seed * 1_000_003 + i)
            found = sample_matched(_EvalBuild(space, build_space), task, target, opts.random, rng, opts.tolerance, opts.max_tries,
                                   exclude=[g, *drawn])
            files = [str(rg.save(folder / "genotypes" / f"random-{i}-{j}.yaml")) for j, (rg, _) in enumerate(found)]
            rec = {"id": uid, "kind": "sample", "target_params": target, "params": [p for _, p in found], "files": files}
            atomic_write_text(units_dir / f"{uid}.json", json.dumps(rec, indent=1))
            records[uid] = rec
            log(f"searched-{i}: {target} parameters; random genotypes with " + ", ".join(map(str, rec["params"])))
        for j, f in enumerate(records[uid]["files"]):
            entries.append({"id": f"random-{i}-{j}", "arm": "random", "group": i, "file": f})
            drawn.append(load_genotype(f))
    # 3. trainings
    trainings = []
    for e in entries:
        for s in range(opts.train_seeds):
            seed = cfg["seed"] + s
            unit_dir = folder / "trainings" / e["id"] / f"seed-{seed}"
            trainings.append({**base, "id": f"train-{e['id']}-seed{seed}", "kind": "train", "folder": str(unit_dir),
                              "genotype_file": e["file"], "data": cfg["data"], "train": cfg["train"], "eval_space": opts.eval_space, "seed": seed,
                              "loggers": unit_loggers(cfg.get("loggers"), folder, unit_dir)})
    todo = [u for u in trainings if u["id"] not in records]
    total[0], total[1] = 0, len(todo)
    if todo:
        log(f"{len(todo)} training(s) to run ({len(trainings) - len(todo)} done), {opts.workers} worker(s) × {threads} thread(s)")
    _run_units(todo, opts.workers, done)
    # 4. statistics
    for e in entries:
        recs = [records[u["id"]] for u in trainings if u["genotype_file"] == e["file"]]
        e["params"] = recs[0]["params"]
        e["top1"] = [r["top1"] for r in recs]
    stats = summarize(entries, opts.unit)
    results = {
        "protocol": {**{k: v for k, v in asdict(opts).items() if k not in ("workers", "threads")},
                     "space": load_genotype(searched[0]).space, "strategy": None if given else cfg["strategy"],
                     "data": cfg["data"]["name"], "train": cfg["train"], "searched_from": "files" if given else "search",
                     "seed": cfg["seed"]},
        "accuracy": "test top-1, %",
        "genotypes": entries,
        **stats,
        "timing": {"wall_s": round(time.perf_counter() - t0, 1), "unit_s": round(sum(r.get("seconds", 0) for r in records.values()), 1),
                   "workers": opts.workers, "threads": threads},
    }
    atomic_write_text(folder / "results.json", json.dumps(results, indent=1))
    atomic_write_text(folder / "results.md", markdown(results))
    try:
        plot_compare(results, folder / "compare.png")
    except ImportError:  # matplotlib missing: the numbers are all there
        pass
    log(results["verdict"])
    return results


class _EvalBuild:
    """A space whose random genotypes come from ``space`` but whose networks are built by
    ``build_space`` (the evaluation options): size matching is done on the trained networks."""

    def __init__(self, space, build_space):
        self.space, self.build_space, self.name = space, build_space, space.name

    def random_genotype(self, rng):
        return self.space.random_genotype(rng)

    def build_network(self, g, task):
        return self.build_space.build_network(g, task)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def _ci(ci) -> str:
    return "–" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: the arms, the difference, and one row per genotype."""
    d = results["difference"]
    unit = results["unit"]
    lines = [
        f"Test top-1 accuracy (%), one observation per {unit}.",
        "",
        "| arm | genotypes | n | mean | std | 95 % CI |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("searched", "random"):
        a = results[arm]
        k = sum(g["arm"] == arm for g in results["genotypes"])
        lines.append(f"| {arm} | {k} | {a['n']} | {a['mean']:.2f} | {_fmt(a['std'])} | {_ci(a['ci95'])} |")
    lines += [
        "",
        "| searched − random | 95 % CI | Welch t | Welch p | Mann–Whitney U | Mann–Whitney p |",
        "|---|---|---|---|---|---|",
        (f"| {_signed(d['mean'])} | {_ci(d['ci95'])} | {_fmt(d['welch_t'])} | {_fmt(d['welch_p'], '.3g')} | "
         f"{_fmt(d['mannwhitney_u'], '.1f')} | {_fmt(d['mannwhitney_p'], '.3g')} |"),
        "",
        "| genotype | arm | params | top-1 per seed | mean | rank among its random genotypes |",
        "|---|---|---|---|---|---|",
    ]
    ranks = {r["genotype"]: r["in_group"] for r in results["ranks"]}
    for g in results["genotypes"]:
        r = ranks.get(g["id"])
        rank = f"{r['rank']} of {r['of']}" if r else ""
        lines.append(f"| {g['id']} | {g['arm']} | {g['params']} | {' / '.join(f'{v:.2f}' for v in g['top1'])} | {g['mean']:.2f} | {rank} |")
    lines += ["", f"**Verdict:** {results['verdict']}", ""]
    return "\n".join(lines)


def plot_compare(results: dict[str, Any], path: str | Path) -> Path:
    """Box plot per arm with every training as a point (one colour per group of a searched genotype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnas.tools.report import save_figure

    fig, ax = plt.subplots(figsize=(5, 4))
    arms = ("searched", "random")
    data = [[v for g in results["genotypes"] if g["arm"] == arm for v in g["top1"]] for arm in arms]
    ax.boxplot(data, positions=[1, 2], widths=0.5, showfliers=False)
    ax.set_xticks([1, 2], [f"{a}\n({sum(g['arm'] == a for g in results['genotypes'])} genotypes)" for a in arms])
    rng = _random.Random(0)  # jitter only; fixed so the figure is the same every time
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for x, arm in enumerate(arms, start=1):
        for g in results["genotypes"]:
            if g["arm"] == arm:
                xs = [x + rng.uniform(-0.15, 0.15) for _ in g["top1"]]
                ax.scatter(xs, g["top1"], s=22, color=colors[g["group"] % len(colors)], marker="o" if arm == "searched" else "x", zorder=3)
    ax.set_ylabel("test top-1 (%)")
    d = results["difference"]
    ax.set_title(f"searched − random = {_signed(d['mean'])} pts" + (f", p = {d['welch_p']:.2g}" if d["welch_p"] is not None else ""), fontsize=9)
    return save_figure(fig, path)
