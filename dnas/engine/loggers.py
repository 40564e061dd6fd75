"""Loggers: mirror the run's history records into TensorBoard, MLflow or a CSV file.

``history.jsonl`` stays the source of truth. Every record a strategy appends to it (an epoch of a
gradient search, an iteration of DARIO's proxy search, a finished trial of TPE/random search) is
passed to each logger of the run, so every strategy is logged the same way. ``dnas log`` replays a
finished run's history into a logger.

What a logger receives from a record:

- scalars: every numeric key (nested mappings of numbers become ``key/sub``), at step
  ``record["epoch"]`` (or ``record["trial"]`` for a trial);
- ``alphas`` (decision -> relaxed weights): a histogram and a heat map per α group (the decisions
  sharing the prefix before the first dot, e.g. a cell), and, for one-option decisions such as
  DARIO's gates, one scalar ``sigma/<decision>`` each;
- ``genotype`` (and ``events``, ``state``, ``phase``, trial ``parameters``) as text.

A new logger is a class with ``log(record)`` and ``close()``, registered with
``@register_logger("name")``.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnas.errors import DnasError
from dnas.registry import Registry

LOGGERS: Registry[type] = Registry("logger")
#: keys that are the step of a record, not a scalar of it
STEP_KEYS = ("epoch", "trial")
#: keys rendered as text
TEXT_KEYS = ("genotype", "events", "state", "phase", "parameters", "note")


def register_logger(name: str) -> Callable[[type], type]:
    """Register a :class:`Logger` subclass under ``name`` (``--logger name``).

    Args:
        name: the name used on the command line and in the ``loggers:`` config list.

    Returns:
        The class decorator.
    """
    return LOGGERS.register(name)


def record_step(record: dict[str, Any]) -> int:
    """The step of a history record: its ``epoch``, else its ``trial`` number, else 0."""
    for k in STEP_KEYS:
        if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool):
            return int(record[k])
    return 0


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Every finite numeric value of ``record`` (nested mappings flattened as ``key/sub``), without
    the step keys, plus ``sigma/<decision>`` for the one-option decisions of ``alphas`` (gates).

    Args:
        record: one line of ``history.jsonl``.

    Returns:
        Scalar name -> value, in the record's order.
    """
    out: dict[str, float] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                out[prefix] = float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}/{k}", v)

    for k, v in record.items():
        if k in STEP_KEYS or k in TEXT_KEYS or k == "alphas":
            continue
        add(k, v)
    for name, w in (record.get("alphas") or {}).items():
        if isinstance(w, list) and len(w) == 1 and isinstance(w[0], (int, float)):
            out[f"sigma/{name}"] = float(w[0])  # a gate (DARIO): its σ(α)
    return out


def alpha_groups(alphas: dict[str, list[float]]) -> dict[str, tuple[list[str], list[list[float]]]]:
    """Decisions grouped by the prefix before their first dot (a cell, a head, ``gates``): group ->
    (decision names, rows of weights). Gates (one-option decisions) form one group ``gates``."""
    groups: dict[str, tuple[list[str], list[list[float]]]] = {}
    for name, w in alphas.items():
        if not isinstance(w, list) or not w:
            continue
        key = "gates" if len(w) == 1 else (name.split(".", 1)[0] if "." in name else "alphas")
        names, rows = groups.setdefault(key, ([], []))
        names.append(name)
        rows.append([float(x) for x in w])
    return groups


def heatmap_figure(title: str, names: list[str], rows: list[list[float]]):
    """A matplotlib figure of one α group: decisions × options, the values printed."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure state, any backend

    width = max(len(r) for r in rows)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = r
    fig = Figure(figsize=(1.0 + 0.5 * width, 0.8 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), [n.split(".", 1)[-1] for n in names], fontsize=6)
    ax.set_xticks(range(width), [str(i) for i in range(width)], fontsize=6)
    ax.set_title(title, fontsize=8)
    if grid.size <= 400:
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w")
    fig.tight_layout()
    return fig


def record_texts(record: dict[str, Any]) -> dict[str, str]:
    """The text parts of a record (genotype as YAML-like lines, events, state, trial parameters)."""
    out = {}
    for k in TEXT_KEYS:
        if k not in record or record[k] in (None, [], {}):
            continue
        v = record[k]
        if isinstance(v, dict):
            out[k] = "\n".join(f"{d}: {', '.join(map(str, o)) if isinstance(o, list) else o}" for d, o in v.items())
        elif isinstance(v, list):
            out[k] = "\n".join(map(str, v))
        else:
            out[k] = str(v)
    return out


class Logger:
    """Receives each history record of a run. Subclasses implement :meth:`log` and :meth:`close`.

    Args:
        dest: where to write (a folder, a file or a tracking URI); ``None`` for the default in
            ``run_dir``.
        run_dir: the run folder (defaults are placed in it).
        config: the run's resolved config (loggers that keep parameters record it once).
    """

    name = "logger"

    def __init__(self, dest: str | None, run_dir: str | Path, config: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.dest = dest
        self.config = config or {}

    def log(self, record: dict[str, Any]) -> None:
        """Log one history record."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what the logger holds."""


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DnasError(f"logger '{extra}' needs the {extra} package; install it with pip install 'dnas[{extra}]'") from None


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"space": {"C": 8}}`` -> ``{"space.C": "8"}`` (the run's parameters for MLflow/TensorBoard)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if not isinstance(v, str) else v
    return out


@register_logger("tensorboard")
class TensorBoardLogger(Logger):
    """TensorBoard event files (default folder ``RUN_DIR/tensorboard``): scalars, α histograms and
    heat-map images per α group, the genotype and events as text."""

    def __init__(self, dest, run_dir, config=None):
        super().__init__(dest, run_dir, config)
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(dest) if dest else self.run_dir / "tensorboard"))
        if self.config:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat_config(self.config).items()), 0)

    def log(self, record):
        import numpy as np

        step = record_step(record)
        for k, v in record_scalars(record).items():
            self.writer.add_scalar(k, v, step)
        for group, (names, rows) in alpha_groups(record.get("alphas") or {}).items():
            self.writer.add_histogram(f"alpha/{group}", np.array([x for r in rows for x in r]), step)
            fig = heatmap_figure(f"{group} (step {step})", names, rows)
            self.writer.add_figure(f"alpha/{group}", fig, step, close=False)
        for k, text in record_texts(record).items():
            self.writer.add_text(k, "\n".join(f"    {line}" for line in text.splitlines()), step)

    def close(self):
        self.writer.close()


@register_logger("mlflow")
class MlflowLogger(Logger):
    """An MLflow run (default store: ``sqlite:///RUN_DIR/mlflow.db``, artifacts in
    ``RUN_DIR/mlartifacts``; experiment ``dnas``, run name = the spec's ``run``, else the run
    folder's name): the config as parameters, scalars as metrics, α heat maps and the genotype as
    artifacts."""

    def __init__(self, dest, run_dir, config=None, experiment: str = "dnas", run_name: str | None = None):
        super().__init__(dest, run_dir, config)
        _need("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        uri = dest or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # artifacts beside a local store; a server's store keeps its own artifact root
            local = uri.startswith("sqlite:///") or "://" not in uri
            root = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else self.run_dir
            exp_id = self.client.create_experiment(experiment, artifact_location=(root / "mlartifacts").resolve().as_uri() if local else None)
        self.run_id = self.client.create_run(exp_id, run_name=run_name or self.run_dir.name).info.run_id
        params = flat_config(self.config)
        if params:
            from mlflow.entities import Param

            items = [Param(k, v[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, record):
        import time

        from mlflow.entities import Metric

        step = record_step(record)
        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, now, step) for k, v in record_scalars(record).items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])
        kind = "trial" if "trial" in record and "epoch" not in record else "step"
        for group, (names, rows) in alpha_groups(record.get("alphas") or {}).items():
            fig = heatmap_figure(f"{group} (step {step})", names, rows)
            self.client.log_figure(self.run_id, fig, f"alpha/{group}/{kind}_{step:05d}.png")
        texts = record_texts(record)
        if texts:
            self.client.log_text(self.run_id, "\n\n".join(f"# {k}\n{t}" for k, t in texts.items()), f"text/{kind}_{step:05d}.txt")

    def close(self):
        self.client.set_terminated(self.run_id)


def _mlflow_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / :`` and spaces; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in key)


@register_logger("csv")
class CsvLogger(Logger):
    """One CSV file in long form, ``step,name,value`` (default ``RUN_DIR/metrics.csv``): every
    scalar of every record, appended as it comes."""

    def __init__(self, dest, run_dir, config=None):
        super().__init__(dest, run_dir, config)
        self.path = Path(dest) if dest else self.run_dir / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["step", "name", "value"])

    def log(self, record):
        step = record_step(record)
        for k, v in record_scalars(record).items():
            self._w.writerow([step, k, repr(v)])
        self._f.flush()

    def close(self):
        self._f.close()


def parse_logger_spec(spec: Any) -> tuple[str, str | None, str | None]:
    """``"tensorboard"``, ``"mlflow=URI"`` or ``{"name": "csv", "dest": FILE, "run": NAME}`` -> (name, dest, run):
    ``run`` names the run where the logger shows names (MLflow; default: the run folder's name)."""
    if isinstance(spec, str):
        name, _, dest = spec.partition("=")
        return name.strip(), (dest.strip() or None), None
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        extra = set(spec) - {"name", "dest", "run"}
        if extra:
            raise DnasError(f"logger {spec['name']!r}: unknown key(s) {', '.join(sorted(extra))}; a logger takes name, dest and run")
        return spec["name"], spec.get("dest"), spec.get("run")
    raise DnasError(f"a logger is a name (tensorboard, mlflow, csv), NAME=DEST or {{name: ..., dest: ...}}; got {spec!r}")


def check_loggers(specs: Any) -> list[Any]:
    """Validate the ``loggers:`` config list (names known, specs well formed) without opening any."""
    if specs is None:
        return []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if not isinstance(specs, list):
        raise DnasError(f"loggers must be a list of logger names (tensorboard, mlflow, csv), got {specs!r}")
    for s in specs:
        LOGGERS.get(parse_logger_spec(s)[0])
    return list(specs)


def make_loggers(specs: Any, run_dir: str | Path, config: dict[str, Any] | None = None) -> list[Logger]:
    """Open the loggers of the ``loggers:`` config list for ``run_dir``.

    Args:
        specs: a list of names, ``NAME=DEST`` strings or ``{name, dest}`` mappings (or ``None``).
        run_dir: the run folder; loggers without a destination write into it.
        config: the run's resolved config (recorded as the run's parameters).

    Returns:
        The opened loggers, in order.

    Raises:
        DnasError: an unknown logger name, or its package is not installed.
    """
    out = []
    for s in check_loggers(specs):
        name, dest, run = parse_logger_spec(s)
        out.append(open_logger(name, dest, run_dir, config, run))
    return out


def open_logger(name: str, dest: str | None, run_dir: str | Path, config: dict[str, Any] | None = None,
                run: str | None = None) -> Logger:
    """Open the registered logger ``name``; a failure to start is one :class:`DnasError` line. ``run``
    goes to loggers that take a ``run_name`` (MLflow)."""
    import inspect

    cls = LOGGERS.get(name)
    kw = {"run_name": run} if run and "run_name" in inspect.signature(cls).parameters else {}
    try:
        return cls(dest, run_dir, config, **kw)
    except DnasError:
        raise
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise DnasError(f"logger '{name}' could not start at {dest or run_dir}: {first}") from None


def replay(run_dir: str | Path, name: str, dest: str | None = None) -> int:
    """Log a finished run's ``history.jsonl`` (and, for a trial search whose history has no trial
    records, its ``trials.jsonl``) into the logger ``name`` at ``dest``.

    Args:
        run_dir: the run folder.
        name: ``tensorboard``, ``mlflow``, ``csv`` or a registered logger.
        dest: the logger's destination (a folder, a tracking URI, a file).

    Returns:
        The number of records logged.

    Raises:
        DnasError: ``run_dir`` holds no history, or the logger is unknown or not installed.
    """
    import yaml

    from dnas.engine.run import read_history

    run_dir = Path(run_dir)
    records = read_history(run_dir)
    trials = run_dir / "trials.jsonl"
    if not any("trial" in r for r in records) and trials.is_file():
        records += [json.loads(line) for line in trials.read_text().splitlines() if line.strip()]
    if not records:
        raise DnasError(f"'{run_dir}' holds no history.jsonl (or it is empty); is it a dnas run folder?")
    if dest and ((name == "csv" and Path(dest).is_file() and Path(dest).stat().st_size)
                 or (name == "tensorboard" and Path(dest).is_dir() and any(Path(dest).glob("events.out.tfevents.*")))):
        raise DnasError(f"'{dest}' holds logged records already; a replay would add every record a second time: "
                        f"remove it or give another {'file' if name == 'csv' else 'folder'}")
    cfg_path = run_dir / "config.yaml"
    config = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
    logger = open_logger(name, dest, run_dir, config)
    try:
        for r in records:
            logger.log(r)
    finally:
        logger.close()
    return len(records)
