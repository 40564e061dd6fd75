"""The public Python API: ``search`` and ``train``. The CLI is a thin shell over these.

Example:
    >>> import dnas
    >>> result = dnas.search(space="darts", strategy="darts", data="digits",
    ...                      space_config={"C": 8}, strategy_config={"epochs": 2}, out="runs/demo")
    >>> dnas.train(result.genotype, data="digits", train_config={"epochs": 5})
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dnas._io import atomic_torch_save, is_dir, is_file, load_yaml
from dnas.config import config_dict, make_config
from dnas.engine import distributed
from dnas.engine.data import IN_MEMORY, DataConfig, SearchData, data_name, given_datasets, load_datasets
from dnas.engine.distributed import resolve_device  # noqa: F401  (part of the api)
from dnas.engine.run import Run
from dnas.errors import ConfigError, DnasError, first_line
from dnas.evaluate import EVALUATIONS, genotype_space_data  # noqa: F401  (part of the api)
from dnas.genotype import Genotype, load_genotype
from dnas.registry import create_space, create_strategy, did_you_mean
from dnas.space import SearchSpace
from dnas.strategy import Strategy

TOP_KEYS = ("space", "strategy", "data", "train", "callbacks", "seed", "device", "preset", "presets", "loggers")
DEFAULTS: dict[str, Any] = {
    "space": {"name": "darts"},
    "strategy": {"name": "darts"},
    "data": {"name": "digits"},
    "train": {},
    "callbacks": {},
    "seed": 0,
    "device": "cpu",
}


def merge_config(base: dict[str, Any], update: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Overlay ``update`` on ``base`` (one level deep for the component sections)."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise DnasError(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    for k, v in update.items():
        if k not in TOP_KEYS:
            raise DnasError(f"{source}: unknown key {k!r}{did_you_mean(k, TOP_KEYS)}; valid keys: {', '.join(TOP_KEYS)}")
        if k in ("space", "strategy", "data", "train"):
            if isinstance(v, str):
                v = {"name": v}
            if not isinstance(v, dict):
                raise DnasError(f"{source}: '{k}' must be a mapping (or a name), got {v!r}")
            if "name" in v and k != "train" and v["name"] != out[k].get("name"):
                out[k] = {}  # another component: its options start from its defaults
            out[k].update(v)
        elif k == "callbacks":
            out[k] = _merge_callbacks(out.get(k) or {}, v, source)
        elif k == "presets" and not (isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())):
            raise DnasError(f"{source}: 'presets' must map preset names to config overlays")
        else:
            out[k] = v
    return out


def _merge_callbacks(base: dict[str, Any], update: Any, source: str) -> dict[str, Any]:
    """``callbacks: {name: options}`` overlaid per callback (``true``/``null``: on with its defaults, ``false``: off)."""
    if update is None:
        return base
    if not isinstance(update, dict):
        raise DnasError(f"{source}: 'callbacks' must map callback names to their options, got {update!r}")
    out = dict(base)
    for name, opts in update.items():
        if opts is None or opts is True:
            opts = {}
        if opts is False:
            out[name] = False
        elif isinstance(opts, dict):
            out[name] = {**(out[name] if isinstance(out.get(name), dict) else {}), **opts}
        else:
            raise DnasError(f"{source}: callbacks.{name} must be a mapping of options, true or false, got {opts!r}")
    return out


def apply_preset(cfg: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Overlay ``cfg["presets"][name]`` (e.g. an experiment's ``small`` scale), name taken from
    ``overrides["preset"]`` or ``cfg["preset"]``, then the rest of ``overrides``."""
    overrides = dict(overrides or {})
    name = overrides.get("preset", cfg.get("preset"))
    if name:
        cfg = merge_config(cfg, {**_preset(cfg, name), "preset": name}, source=f"preset {name!r}")
    return merge_config(cfg, overrides, source="--set")


def _preset(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The overlay of preset ``name`` in ``cfg["presets"]``; one error line if it has none such."""
    presets = cfg.get("presets") or {}
    if name not in presets:
        raise DnasError(f"unknown preset {name!r}{did_you_mean(name, presets)}; this config has: {', '.join(presets) or 'none'}")
    return presets[name]


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise DnasError(f"config file '{p}' is a folder; give a YAML file (a run's own is {p / 'config.yaml'})")
    if not p.is_file():
        raise DnasError(f"config file '{p}' not found")
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise DnasError(f"config file '{p}' is not valid YAML ({first_line(e)})") from None
    return merge_config(DEFAULTS, data, source=str(p))


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["space.C=8", "seed=1"]`` -> ``{"space": {"C": 8}, "seed": 1}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise DnasError(f"--set expects key=value (e.g. space.C=8), got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if len(parts) == 1:
            out[parts[0]] = value
        elif len(parts) == 2:
            out.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 3 and parts[0] == "callbacks":  # callbacks.distance_stop.patience=4
            section = out.setdefault("callbacks", {})
            if not isinstance(section.get(parts[1]), dict):
                section[parts[1]] = {}
            section[parts[1]][parts[2]] = value
        else:
            raise DnasError(f"--set key '{key}' has too many dots; use section.option (e.g. strategy.epochs=10)")
    return out


def check_seed(seed: Any) -> None:
    """A seed torch takes: an integer in [0, 2^63)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DnasError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2**63:
        raise DnasError(f"seed must be in [0, 2^63), got {seed}")


@dataclass
class Resolved:
    space: Any
    strategy: Any
    data: DataConfig
    config: dict[str, Any]
    callbacks: list = field(default_factory=list)


def _component(obj, kw: dict[str, Any], create, options):
    """``obj`` itself when ``kw`` are its options, else a new one of its class with ``kw``; by name
    through the registry when there is no object."""
    if obj is None:
        return create(**kw)
    if kw == options(obj):
        return obj
    return type(obj)(**{k: v for k, v in kw.items() if v is not None})


def resolve(config: dict[str, Any], space: SearchSpace | None = None, strategy: Strategy | None = None) -> Resolved:
    """Merge ``config`` over the defaults, validate every section, fill in all defaults (what is
    written to run/config.yaml) and check that the space and strategy fit, before any data or model.

    Args:
        config: the search config (sections space, strategy, data, train, seed, device, preset).
        space: a space object to use instead of building ``config["space"]["name"]`` (its options
            are the space section's).
        strategy: likewise a strategy object.

    Raises:
        ConfigError: in one line, for anything wrong in the config or an impossible pair.
    """
    try:
        return _resolve(config, space, strategy)
    except ConfigError:
        raise
    except DnasError as e:
        raise ConfigError(str(e)) from None


def _device_type(name: Any) -> str | None:
    """``cpu``/``cuda``/... for a device name, without requiring the device; None if it is no device name."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except (RuntimeError, TypeError):
        return None  # resolve_device says what is wrong, once the run starts


def _resolve(config: dict[str, Any], space_obj: SearchSpace | None, strategy_obj: Strategy | None) -> Resolved:
    from dnas.engine.callbacks import resolve_callbacks, upgrade_config

    cfg = upgrade_config(merge_config(DEFAULTS, config))  # older files: strategy.early_stop etc. -> callbacks
    space_kw = {k: v for k, v in cfg["space"].items() if k != "name"}
    strat_kw = {k: v for k, v in cfg["strategy"].items() if k != "name"}
    space = _component(space_obj, space_kw, lambda **kw: create_space(cfg["space"]["name"], **kw), SearchSpace.config_dict)
    strategy = _component(strategy_obj, strat_kw, lambda **kw: create_strategy(cfg["strategy"]["name"], **kw),
                          lambda s: config_dict(s.config))
    strategy.check_compatible(space, _device_type(cfg["device"]))  # an impossible pair stops here: no data, no model
    data = make_config(DataConfig, cfg["data"], "data")
    check_seed(cfg["seed"])
    if cfg.get("preset"):
        _preset(cfg, cfg["preset"])
    if cfg["callbacks"] and not strategy.uses_callbacks and any(v is not False for v in cfg["callbacks"].values()):
        raise DnasError(f"strategy '{strategy.name}' runs no epoch loop, so it takes no callbacks; "
                        f"drop the callbacks section ({', '.join(cfg['callbacks'])}) or use a gradient strategy")
    callbacks, cb_section = resolve_callbacks(strategy.default_callbacks(space), cfg["callbacks"]) if strategy.uses_callbacks else ([], {})
    resolved = {
        "space": {"name": space.name, **space.config_dict()},
        "strategy": {"name": strategy.name, **config_dict(strategy.config)},
        "data": config_dict(data),
        "train": cfg["train"],
        "callbacks": cb_section,
        "seed": cfg["seed"],
        "device": cfg["device"],
    }
    if cfg.get("loggers"):
        from dnas.engine.loggers import check_loggers

        resolved["loggers"] = check_loggers(cfg["loggers"])
    return Resolved(space, strategy, data, resolved, callbacks)


@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
        genotype: the architecture found (also in ``run_dir/genotype.yaml``).
        run_dir: the run folder.
        history: the records of ``run_dir/history.jsonl`` (epochs, iterations or trials).
    """

    genotype: Genotype
    run_dir: Path
    history: list[dict[str, Any]]


def _default_out(cfg: dict[str, Any]) -> Path:
    return Path("runs") / f"{cfg['space']['name']}-{cfg['strategy']['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def search(
    space: str | SearchSpace | None = None,
    strategy: str | Strategy | None = None,
    data: Any = None,
    *,
    config: dict[str, Any] | None = None,
    space_config: dict[str, Any] | None = None,
    strategy_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    callbacks: dict[str, Any] | None = None,
    seed: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    loggers: list[Any] | None = None,
) -> SearchResult:
    """Search ``space`` with ``strategy`` on ``data``; results land in the run folder ``out``.

    The arguments are merged into one config (``config`` first, then the named sections, then
    ``seed``/``device``/``loggers``), resolved and checked once, here, before any data are loaded,
    and written to ``out/config.yaml``; an impossible space × strategy pair is refused in one line.

    Args:
        space: a registered search space name (``dnas list``), e.g. ``"darts"``, or a
            :class:`~dnas.space.SearchSpace` object.
        strategy: a registered strategy name, e.g. ``"darts"``, ``"fairdarts"``, ``"tpe"``, or a
            :class:`~dnas.strategy.Strategy` object.
        data: a dataset name (``digits``, ``synthetic``, ``cifar10``, ``csv:PATH``, ...), or torch
            datasets of ``(x, y)`` tensors given as a pair ``(train, test)`` (the task is read from
            them; config.yaml records ``python:<class>``, and a resume takes them again).
        config: a whole config mapping (sections ``space``, ``strategy``, ``data``, ``train``,
            ``callbacks``, ``seed``, ``device``, ``loggers``), as in a ``--config`` YAML file.
            ``callbacks`` adds to the strategy's default callbacks (``{name: options}``;
            ``name: False`` switches a default off; see ``dnas.engine.callbacks``).
        space_config: options of the space's Config dataclass, e.g. ``{"C": 8}``.
        strategy_config: options of the strategy's Config dataclass, e.g. ``{"epochs": 10}``.
        data_config: options of :class:`dnas.engine.data.DataConfig`, e.g. ``{"batch_size": 32}``.
        seed: the random seed (default 0).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        out: the run folder (default ``runs/<space>-<strategy>-<time>``); it must not hold a
            search already.
        resume: a run folder to continue from its last intact checkpoint, with the config it was
            started with (every other argument is then ignored, but the datasets of a run given them
            in Python, which ``data`` gives again).
        progress: show progress bars on stderr.
        loggers: mirror the history into ``"tensorboard"``, ``"mlflow"`` or ``"csv"`` (names,
            ``"NAME=DEST"`` strings or ``{"name": ..., "dest": ...}`` mappings).

    Returns:
        The genotype found, the run folder and the history records.

    Raises:
        ConfigError: a config that does not resolve, or an impossible pair (before any work).
        DnasError: a run folder that already holds a search (or is in use), missing data, or a
            search that diverged twice.
    """
    space_obj = space if isinstance(space, SearchSpace) else None
    strategy_obj = strategy if isinstance(strategy, Strategy) else None
    if space_obj is not None:
        space, space_config = space_obj.name, {**space_obj.config_dict(), **(space_config or {})}
    if strategy_obj is not None:
        strategy, strategy_config = strategy_obj.name, {**config_dict(strategy_obj.config), **(strategy_config or {})}
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise DnasError(f"cannot resume: '{run_dir}' holds no config.yaml; is it a dnas run folder?")
        cfg = load_config_file(run_dir / "config.yaml")
    else:
        cfg = merge_config(DEFAULTS, config or {})
        overlay: dict[str, Any] = {}
        for key, name, kw in (("space", space, space_config), ("strategy", strategy, strategy_config),
                              ("data", data_name(data), data_config)):
            section = dict(kw or {})
            if name is not None:
                section["name"] = name
            if section:
                overlay[key] = section
        if callbacks is not None:
            overlay["callbacks"] = callbacks
        if seed is not None:
            overlay["seed"] = seed
        if device is not None:
            overlay["device"] = device
        if loggers is not None:
            overlay["loggers"] = list(loggers)
        cfg = merge_config(cfg, overlay)
        run_dir = Path(out) if out is not None else _default_out(cfg)
        if distributed.is_main() and ((run_dir / "checkpoint.pt").exists() or (run_dir / "genotype.yaml").exists()):
            raise DnasError(f"'{run_dir}' already holds a search; pass --resume {run_dir} to continue it, or choose another --out")
    r = resolve(cfg, space_obj, strategy_obj)
    dev = distributed.init_from_env(resolve_device(r.config["device"]))  # torchrun: join the group
    needs_data = "data" in r.strategy.requirements()
    # a data-free strategy on a space that has data (proxy on darts) still sizes the supernet from the data
    given = given_datasets(data)
    if resume is not None and given is not None and not r.data.name.startswith(IN_MEMORY):
        raise DnasError(f"'{resume}' searched {r.data.name!r}; resume it without data= (it reads the name from config.yaml)")
    datasets = load_datasets(r.data, given) if needs_data or "data" in r.space.capabilities() else None
    if datasets is not None:
        r.space.check_task(datasets.task)  # before the run folder: data the space cannot take is one line
    if datasets is not None and "two_views" in r.space.capabilities():  # self-supervised spaces: ((v1, v2), y)
        from dnas.engine.data import two_view_datasets

        datasets = two_view_datasets(datasets, r.data)
    with Run(run_dir, progress=progress, writer=distributed.is_main()) as run:
        if resume is None:
            moved = run.start_over()  # an earlier attempt that stopped without a checkpoint: kept aside
            if moved:
                run.log(f"an earlier run stopped in {run_dir}: its {' and '.join(moved)} are kept as *.previous")
            run.write_config(r.config)
        if run.writer and r.config.get("loggers"):  # TensorBoard/MLflow/CSV mirror history.jsonl
            from dnas.engine.loggers import make_loggers

            run.loggers = make_loggers(r.config["loggers"], run_dir, r.config)
        torch.manual_seed(r.config["seed"])
        task = datasets.task if datasets is not None else r.space.tiny_task
        supernet = r.space.supernet(task).to(dev)
        distributed.broadcast_module_(supernet)
        search_data = SearchData(datasets, r.data, seed=r.config["seed"]) if needs_data else None
        # seeded again: the strategy's draws (α samples, dropout) do not depend on how many random numbers
        # building the supernet took (a checkpoint read one way or another, a model from another library)
        torch.manual_seed(r.config["seed"])
        genotype = r.strategy.search(supernet, search_data, run, r.callbacks)
        if run.writer:
            genotype.save(run.path("genotype.yaml"))
            atomic_torch_save({k: v.detach().cpu() for k, v in supernet.named_arch_parameters()}, run.path("alphas.pt"))
            run.log(f"genotype written to {run.path('genotype.yaml')}")
        return SearchResult(genotype, run_dir, run.history())


def evaluation_of(genotype: Genotype | str | Path) -> str:
    """The evaluation a genotype's space declares (``SearchSpace.evaluation``): supervised, ssl or pruned."""
    from dnas.registry import SPACES

    g = genotype if isinstance(genotype, Genotype) else load_genotype(genotype)
    return SPACES.get(g.space).evaluation


def train(
    genotype: Genotype | str | Path | None = None,
    data: Any = "digits",
    *,
    train_config: dict[str, Any] | None = None,
    space_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | None = None,
    out: str | Path | None = None,
    log=print,
    evaluation: str | None = None,
    loggers: list[Any] | None = None,
    resume: str | Path | None = None,
) -> dict[str, Any]:
    """The evaluation phase of ``genotype``, picked from its space (``SearchSpace.evaluation``):

    - ``supervised``: build the network (space options overridable, e.g. ``{"C": 36, "layers": 20}``),
      train it from scratch on ``data``, report top-1/top-5 on its test split
      (:func:`dnas.evaluate.supervised.train_genotype`);
    - ``ssl`` (nasiam-mlp): self-supervised pretraining, then linear evaluation on frozen features
      (:func:`dnas.evaluate.ssl.ssl_train`; ``train_config`` holds its options);
    - ``pruned`` (dario): fine-tune the pruned model ``dnas prune`` wrote next to the genotype
      (:func:`dnas.evaluate.pruned.finetune_pruned`; ``train_config`` holds epochs, lr, batch_size).

    Args:
        genotype: a Genotype, a genotype file or a shipped name (a pruned model: its folder or its genotype.yaml).
        data: the dataset name (``digits``, ``cifar10``, ``csv:PATH``, ...), or torch datasets given
            as a pair ``(train, test)`` (with ``resume``: those of a run given them in Python).
        train_config: options of the evaluation, e.g. :class:`dnas.evaluate.supervised.TrainConfig`
            (``{"epochs": 30}``).
        space_config: overrides of the genotype's space options, e.g. ``{"C": 36, "layers": 20}``
            for DARTS' evaluation network.
        data_config: options of :class:`dnas.engine.data.DataConfig`.
        seed: the random seed.
        device: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``; with ``resume``, default: the run's own.
        out: a folder for the weights, ``genotype.yaml``, ``config.yaml`` and the metrics
            (nothing is written without it).
        log: called with one line of progress per epoch.
        evaluation: one of supervised, ssl, pruned to override the space's choice (``--ssl``, ``--pruned``).
        loggers: supervised training and SSL pretraining: ``tensorboard``, ``mlflow``, ``csv`` (or
            ``NAME=DEST``) receive every epoch's record, as ``out/history.jsonl`` does (needs ``out``).
        resume: the ``out`` folder of an interrupted supervised training or SSL pretraining, to
            continue from its last checkpoint (written after every epoch) with the config it started
            with; the other arguments but ``device`` and ``log`` are not given.

    Returns:
        The evaluation's metrics (``top1``/``top5`` on the test split, ``mse`` for regression,
        ``params``, ``seconds``), and its per-epoch ``history`` where it has one.

    Raises:
        DnasError: an unreadable genotype, an unknown option or evaluation, or missing data.

    Example:
        >>> dnas.train("runs/nasiam/genotype.yaml", data="digits", train_config={"epochs": 2})  # SSL + linear eval
    """
    if resume is not None:
        return _resume_training(resume, genotype, out, device, log, loggers, {"train_config": train_config, "space_config": space_config,
                                "data_config": data_config, "evaluation": evaluation, "seed": seed or None,
                                "data": data if isinstance(data, str) and data != "digits" else None}, given_datasets(data))
    if genotype is None:
        raise DnasError("train needs a genotype (a Genotype, a genotype file or a shipped name), or resume=RUN_DIR")
    check_seed(seed)
    device = device or "cpu"
    if loggers and out is None:
        raise DnasError("loggers mirror the training's out/history.jsonl: give out=DIR (--out) too")
    if evaluation is not None and evaluation not in EVALUATIONS:
        raise DnasError(f"unknown evaluation {evaluation!r}{did_you_mean(evaluation, EVALUATIONS)}; choose one of: {', '.join(EVALUATIONS)}")
    if evaluation == "pruned" or (evaluation is None and isinstance(genotype, (str, Path)) and is_file(Path(genotype) / "pruned.yaml")):
        return _finetune(genotype, data, train_config, space_config, data_config, seed, device, out, log, loggers)
    kind = evaluation or evaluation_of(genotype)
    kw = dict(train_config=train_config, space_config=space_config, data_config=data_config, seed=seed, device=device, out=out, log=log,
              loggers=loggers)
    if kind == "ssl":
        from dnas.evaluate.ssl import ssl_train

        return ssl_train(genotype, data, **kw)
    if kind == "pruned":
        return _finetune(genotype, data, train_config, space_config, data_config, seed, device, out, log, loggers)
    from dnas.evaluate.supervised import train_genotype

    return train_genotype(genotype, data, **kw)


def _resume_training(run_dir, genotype, out, device, log, loggers, others: dict[str, Any], datasets=None) -> dict[str, Any]:
    """``train(resume=DIR)``: the training in ``DIR`` (supervised, or SSL pretraining) continued from its checkpoint."""
    from dnas.evaluate.ssl import ssl_train
    from dnas.evaluate.supervised import train_genotype

    run_dir = Path(run_dir)
    given = [k for k, v in {"genotype": genotype, "out": out, "loggers": loggers, **others}.items() if v]
    if given:
        raise DnasError(f"resume continues a training with the config it started with ({run_dir}/config.yaml); "
                        f"{', '.join(given)} cannot change it")
    if not is_file(run_dir / "config.yaml") or not is_file(run_dir / "genotype.yaml"):
        raise DnasError(f"cannot resume: '{run_dir}' holds no config.yaml and genotype.yaml of a dnas training")
    if is_file(run_dir / "metrics.json"):
        raise DnasError(f"'{run_dir}' finished its training (metrics.json); nothing to resume")
    if not is_file(run_dir / "checkpoint.pt") and not is_file(run_dir / "checkpoint.prev.pt"):
        raise DnasError(f"cannot resume: '{run_dir}' has no checkpoint (it stopped before its first epoch ended); start it again")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    space_cfg = {k: v for k, v in (cfg.get("space") or {}).items() if k != "name"}
    data_cfg = dict(cfg.get("data") or {})
    kind = evaluation_of(run_dir / "genotype.yaml")
    if kind not in ("supervised", "ssl"):
        raise DnasError(f"cannot resume: '{run_dir}' is a {kind} evaluation, which keeps no checkpoint; start it again")
    name = data_cfg.pop("name", "digits")
    if datasets is not None and not str(name).startswith(IN_MEMORY):
        raise DnasError(f"'{run_dir}' trained on {name!r}; resume it without data= (it reads the name from config.yaml)")
    return (ssl_train if kind == "ssl" else train_genotype)(run_dir / "genotype.yaml", datasets or name, train_config=cfg.get("train"),
                          space_config=space_cfg, data_config=data_cfg, seed=cfg.get("seed", 0), device=device or cfg.get("device", "cpu"),
                          out=run_dir, log=log, loggers=cfg.get("loggers"), resume=True)


def _finetune(genotype, data, train_config, space_config, data_config, seed, device, out, log, loggers=None) -> dict[str, Any]:
    """``pruned``: fine-tune the model in the genotype's folder (``dnas prune``'s output)."""
    from dnas.config import config_dict, make_config
    from dnas.evaluate.pruned import FinetuneConfig, finetune_pruned

    if isinstance(genotype, Genotype):
        raise DnasError("fine-tuning a pruned model needs the folder dnas prune wrote; pass it (or its genotype.yaml), not a Genotype")
    folder = Path(genotype) if is_dir(genotype) else Path(genotype).parent
    if not is_file(folder / "pruned.yaml"):
        raise DnasError(f"'{genotype}' is a pruning genotype without its pruned model; pass the --out folder of dnas prune "
                        f"(pruned.yaml + model.safetensors) or export one with dnas prune --keep-blocks")
    if space_config:
        raise DnasError("a pruned model keeps its structure; space options do not apply when fine-tuning it")
    tcfg = config_dict(make_config(FinetuneConfig, dict(train_config or {}), "the fine-tuning of a pruned model"))
    torch.manual_seed(seed)
    return finetune_pruned(folder, data, **tcfg, data_config=data_config, out=out, device=device, log=log, loggers=loggers)
