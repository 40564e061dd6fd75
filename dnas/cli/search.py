"""``dnas search``: search a space with a strategy (flags and ``--set`` make one config dict for ``dnas.search``)."""
from __future__ import annotations

import argparse

from dnas.errors import DnasError


def add(sub) -> None:
    s = sub.add_parser("search", help="search a space with a strategy")
    s.add_argument("--config", help="run YAML (sections space, strategy, data, callbacks, seed, device)")
    s.add_argument("--space")
    s.add_argument("--strategy")
    s.add_argument("--data", help="digits (default), synthetic, cifar10, cifar100, fashion-mnist, imagefolder:PATH, csv:PATH, synthetic-regression")
    s.add_argument("--data-dir")
    s.add_argument("--download", action="store_true", help="download the dataset if missing")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--target", metavar="COLS", help="--data csv:PATH: target column names or indices, a,b (default: the last)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--beta-decay", type=float, metavar="W", help="β-DARTS Beta-Decay weight (darts, fairdarts)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. space.C=8, strategy.order=2, callbacks.distance_stop.patience=4 (repeatable)")
    s.add_argument("--early-stop", choices=("none", "distance"), help="distance: stop when the distance M is stable (D-DARTS)")
    s.add_argument("--init-genotype", metavar="GENOTYPE", help="DARTOpti: start α from this genotype (file or shipped name, e.g. resnet18)")
    s.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast the search steps (gradient strategies)")
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the supernet forward (darts, ddarts)")
    s.add_argument("--checkpoint-cells", action="store_true", default=None, help="recompute cells in backward: same gradients, less memory")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC activations (default: on for the CPU, off on a GPU)")
    s.add_argument("--partial-channels", type=int, metavar="K", help="PC-DARTS: 1/K of the channels through the mixed ops (+ edge normalisation)")
    s.add_argument("--trials", type=int, help="tpe/random: completed trials to reach (the budget)")
    s.add_argument("--timeout", type=float, metavar="SECONDS", help="tpe/random: stop asking for new trials after this")
    s.add_argument("--workers", type=int, help="tpe/random: processes on this machine filling the study")
    s.add_argument("--storage", metavar="URL", help="tpe/random: optuna storage shared by workers (default sqlite in the run folder)")
    s.add_argument("--study", metavar="NAME", help="tpe/random: study name in the storage (default dnas)")
    s.add_argument("--logger", action="append", metavar="NAME[=DEST]",
                   help="also log to tensorboard, mlflow or csv (repeatable; e.g. --logger tensorboard --logger mlflow=URI)")
    s.add_argument("--fitness", choices=("auto", "supervised", "contrastive"),
                   help="tpe/random: held-out cross-entropy or CSNAS' NCE loss (auto: NCE where the data have two views or no labels)")
    s.add_argument("--out", help="run folder (default runs/<space>-<strategy>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--options", action="store_true",
                   help="list every option of the chosen --space and --strategy (name, type, default, paper default) and exit")
    s.set_defaults(fn=run)


def _search_overlay(args) -> dict:
    from dnas.api import DEFAULTS, apply_preset, load_config_file, merge_config, parse_set

    cfg = load_config_file(args.config) if args.config else dict(DEFAULTS)
    sets = parse_set(args.set or [])
    if "preset" in sets:  # --set preset=small: the experiment's small scale; explicit options still win
        cfg = apply_preset(cfg, {"preset": sets.pop("preset")})
    flags: dict = {}
    for section, value in (("space", args.space), ("strategy", args.strategy)):
        if value:
            flags[section] = {"name": value}
    from dnas.cli import data_flags

    data = data_flags(args, {"name": args.data} if args.data else {})
    if data:
        flags["data"] = data
    if args.seed is not None:
        flags["seed"] = args.seed
    if args.device:
        flags["device"] = args.device
    if getattr(args, "logger", None):
        flags["loggers"] = list(cfg.get("loggers") or []) + [x for x in args.logger if x not in (cfg.get("loggers") or [])]
    cfg = merge_config(cfg, flags)
    if args.epochs is not None:
        sets.setdefault("strategy", {})["epochs"] = args.epochs
    if args.beta_decay is not None:
        sets.setdefault("strategy", {})["beta_decay"] = args.beta_decay
    callbacks = sets.setdefault("callbacks", {})
    if args.init_genotype:  # the init_genotype callback (DARTOpti)
        callbacks["init_genotype"] = {**(callbacks.get("init_genotype") or {}), "genotype": args.init_genotype}
    if args.early_stop == "distance":  # the distance_stop callback (D-DARTS)
        callbacks["distance_stop"] = callbacks.get("distance_stop") or {}
    elif args.early_stop == "none":  # switches one from --config off
        callbacks["distance_stop"] = False
    if args.amp:
        sets.setdefault("strategy", {})["amp"] = args.amp
    for key in ("compile", "checkpoint_cells", "channels_last", "partial_channels"):  # darts/ddarts supernet options
        if getattr(args, key) is not None:
            sets.setdefault("space", {})[key] = getattr(args, key)
    for flag in ("trials", "timeout", "workers", "storage", "study", "fitness"):  # trial strategies (tpe, random)
        if getattr(args, flag, None) is not None:
            sets.setdefault("strategy", {})[flag] = getattr(args, flag)
    return merge_config(cfg, sets, source="--set")


def _plain(v) -> str:
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    return str(v)


def print_options(args) -> int:
    """``dnas search --space S --strategy T --options``: every option of the space, the strategy
    and the data section, with its type, its default, and the paper's and the authors' code's
    defaults where they differ (from the fields' metadata)."""
    from dnas.api import DEFAULTS, load_config_file
    from dnas.config import describe_options
    from dnas.engine.data import DataConfig
    from dnas.registry import SPACES, STRATEGIES

    cfg = load_config_file(args.config) if args.config else DEFAULTS
    space = args.space or cfg["space"]["name"]
    strategy = args.strategy or cfg["strategy"]["name"]
    for title, section, cls in (
        (f"space '{space}'", "space", SPACES.get(space).Config),
        (f"strategy '{strategy}'", "strategy", STRATEGIES.get(strategy).Config),
        ("data", "data", DataConfig),
    ):
        rows = describe_options(cls)
        table = [(f"{section}.{r['name']}", r["type"], _plain(r["default"]),
                  _plain(r["paper"]) if "paper" in r and r["paper"] != r["default"] else "",
                  _plain(r["code"]) if "code" in r and r["code"] != r["default"] else "") for r in rows]
        head = ("option", "type", "default", "paper", "authors' code")
        keep = [i for i in range(5) if i < 3 or any(row[i] for row in table)]  # paper/code columns only when used
        table = [tuple(row[i] for i in keep) for row in table]
        head = tuple(head[i] for i in keep)
        widths = [max(len(x) for x in col) for col in zip(head, *table)]
        print(f"{title} ({cls.__name__}); set with --set {section}.NAME=VALUE")
        for row in (head, *table):
            print("  " + "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
        print()
    return 0


#: the options that make a search's config (a resumed run keeps its own)
_CONFIG_FLAGS = ("config", "space", "strategy", "data", "data_dir", "download", "batch_size", "target", "seed", "device",
                 "logger", "set", "epochs", "beta_decay", "init_genotype", "early_stop", "amp", "compile", "checkpoint_cells",
                 "channels_last", "partial_channels", "trials", "timeout", "workers", "storage", "study", "fitness", "out")


def run(args) -> int:
    from dnas.api import search
    from dnas.errors import ConfigError

    if args.options:
        return print_options(args)
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _CONFIG_FLAGS if getattr(args, k, None) not in (None, False, [])]
        if given:  # they would be ignored: a resumed run keeps the config it started with
            raise DnasError(f"--resume continues a run with the config it started with ({args.resume}/config.yaml); "
                            f"{', '.join(given)} cannot change it: drop {'it' if len(given) == 1 else 'them'}, or start a new "
                            f"search with --out")
        result = search(resume=args.resume, progress=not args.no_progress)
    else:
        try:  # dnas.search resolves and checks the config once, before any work
            result = search(config=_search_overlay(args), out=args.out, progress=not args.no_progress)
        except ConfigError as e:
            if not args.config:
                raise
            raise DnasError(f"{args.config} (with the command-line options): {e}") from None
    from dnas.engine.distributed import is_main

    if is_main():
        print(f"{result.run_dir / 'genotype.yaml'}")
    return 0
