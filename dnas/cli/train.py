"""``dnas train``: the evaluation phase of a genotype, picked from its space (``dnas.train``):
supervised training, SSL pretraining + linear evaluation, or the fine-tuning of a pruned model."""
from __future__ import annotations

from pathlib import Path

from dnas.errors import DnasError


def add(sub) -> None:
    t = sub.add_parser("train", help="evaluate a genotype: the evaluation its space declares (supervised, SSL, pruned fine-tuning)")
    t.add_argument("--genotype", help="genotype YAML/JSON, a shipped genotype name, or a DARTS-code Genotype(...) (FILE, FILE:NAME, FILE:last); its space picks the evaluation")
    t.add_argument("--pruned", metavar="DIR", help="fine-tune the last kept block + head of a `dnas prune` model (explicit)")
    t.add_argument("--random-baseline", type=int, metavar="R", help="with --pruned: fine-tune R random prunings of the same budget the same way and compare")
    t.add_argument("--data", default="digits")
    t.add_argument("--data-dir")
    t.add_argument("--download", action="store_true")
    t.add_argument("--target", metavar="COLS", help="--data csv:PATH: target column names or indices, a,b (default: the last)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="train.lr=0.05, space.C=36, space.layers=20, ...")
    t.add_argument("--out")
    t.add_argument("--seed", type=int)
    t.add_argument("--device")
    t.add_argument("--ssl", action="store_true", help="force SSL pretraining + linear evaluation (nasiam-mlp genotypes get it without)")
    t.add_argument("--logger", action="append", metavar="NAME[=DEST]",
                   help="also log every epoch to tensorboard, mlflow or csv (repeatable)")
    t.add_argument("--resume", metavar="DIR", help="continue an interrupted training (supervised or SSL) from its last epoch's checkpoint")
    t.set_defaults(fn=run)


#: the options that make a training's config (a resumed training keeps its own)
_CONFIG_FLAGS = ("genotype", "pruned", "random_baseline", "data_dir", "download", "target", "epochs", "set", "out", "seed", "ssl", "logger")


def run(args) -> int:
    import json

    from dnas._io import is_dir, is_file
    from dnas.api import evaluation_of, parse_set, train
    from dnas.genotype import genotype_label

    if args.resume:
        return run_resume(args)
    if args.pruned and args.genotype:
        raise DnasError("give --genotype FILE or --pruned DIR, not both")
    source = args.pruned or args.genotype
    if not source:
        raise DnasError("dnas train needs --genotype FILE (or --pruned DIR to fine-tune a pruned model)")
    sets = parse_set(args.set or [])
    unknown = set(sets) - {"train", "space", "data"}
    if unknown:
        raise DnasError(f"--set for train takes train.*, space.* or data.* keys, not {', '.join(sorted(unknown))}")
    tcfg = dict(sets.get("train", {}))
    if args.epochs is not None:
        tcfg["epochs"] = args.epochs
    from dnas.cli import data_flags

    dcfg = data_flags(args, sets.get("data", {}))
    # the genotype's space picks the evaluation (supervised, ssl, pruned); --ssl forces SSL, --pruned the fine-tuning
    if args.pruned or is_file(Path(source) / "pruned.yaml"):
        if args.ssl:
            raise DnasError("--ssl pretrains a searched network; a pruned model is fine-tuned (drop --ssl)")
        kind = "pruned"
    else:
        kind = "ssl" if args.ssl else evaluation_of(source)
    if args.random_baseline is not None and kind != "pruned":
        raise DnasError("--random-baseline compares a pruned model with random prunings: give --pruned DIR (a dnas prune --out folder)")
    if kind == "pruned":
        folder = Path(source) if is_dir(source) else Path(source).parent
        out = _out(args.out, folder.with_name(folder.name + "-finetuned"))
        if args.random_baseline:
            return run_random_baseline(args, folder, tcfg, sets, dcfg, out)
    else:
        out = _out(args.out, Path("runs") / (("ssl-" if kind == "ssl" else "train-") + genotype_label(source)))
    result = train(
        source, data=args.data, train_config=tcfg, space_config=sets.get("space"), data_config=dcfg,
        seed=args.seed or 0, device=args.device or "cpu", out=out, evaluation=kind, loggers=args.logger,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    print(f"{'the fine-tuned model' if kind == 'pruned' else 'weights'} and metrics written to {out}")
    return 0


def run_random_baseline(args, folder: Path, tcfg: dict, sets: dict, dcfg: dict | None, out: str) -> int:
    """``--pruned DIR --random-baseline R``: the pruned model and R random prunings of its budget, fine-tuned alike."""
    import json

    from dnas.config import config_dict, make_config
    from dnas.evaluate.pruned import FinetuneConfig
    from dnas.tools.prune_quality import finetune_random_baseline

    if args.random_baseline < 0:
        raise DnasError(f"--random-baseline takes a number of random prunings >= 0, got {args.random_baseline}")
    if sets.get("space"):
        raise DnasError("a pruned model keeps its structure; space options do not apply when fine-tuning it")
    tcfg = config_dict(make_config(FinetuneConfig, tcfg, "the fine-tuning of a pruned model"))
    result = finetune_random_baseline(folder, args.random_baseline, args.data, **tcfg, data_config=dcfg,
                                      seed=args.seed or 0, out=out, device=args.device or "cpu", loggers=args.logger)
    print(json.dumps(result))
    print(f"the fine-tuned model, baseline.json and metrics written to {out}")
    return 0


def run_resume(args) -> int:
    import json

    from dnas.api import train

    given = [f"--{k.replace('_', '-')}" for k in _CONFIG_FLAGS if getattr(args, k, None) not in (None, False, [])]
    if args.data != "digits":
        given.append("--data")
    if given:  # they would be ignored: a resumed training keeps the config it started with
        raise DnasError(f"--resume continues a training with the config it started with ({args.resume}/config.yaml); "
                        f"{', '.join(given)} cannot change it: drop {'it' if len(given) == 1 else 'them'} (--device may change)")
    result = train(resume=args.resume, device=args.device)  # no --device: the run's own
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    print(f"weights and metrics written to {args.resume}")
    return 0


#: what a finished training leaves in its folder, and what a search or a pruning does (never overwritten)
_RESULTS = ("metrics.json", "finetune.json", "baseline.json", "model.safetensors", "config.yaml", "checkpoint.pt",
            "history.jsonl", "pruned.yaml")


def _stopped_training(p: Path) -> bool:
    """``p`` holds the config of a dnas training (a ``train`` section) and nothing it finished."""
    from dnas._io import load_yaml

    try:
        cfg = load_yaml((p / "config.yaml").read_text())
    except Exception:  # noqa: BLE001  (unreadable: not ours to overwrite)
        return False
    return isinstance(cfg, dict) and "train" in cfg and "strategy" not in cfg


def _out(given: str | None, default: Path) -> str:
    """The training's folder: ``--out`` unless it holds a run's results (refused: they would be
    overwritten), else the default name, or default-2, -3, ... where that one holds some."""
    def taken(p: Path) -> str | None:
        found = [name for name in _RESULTS if (p / name).exists()]
        if found and set(found) <= {"config.yaml", "history.jsonl"} and _stopped_training(p):
            return None  # a training stopped before its first checkpoint: it starts over (its files kept as *.previous)
        return found[0] if found else None

    if given is not None:
        from dnas.evaluate import unfinished_training

        if unfinished_training(given):
            raise DnasError(f"'{given}' holds an unfinished training; continue it with dnas train --resume {given}, "
                            f"or choose another --out")
        found = taken(Path(given))
        if found:
            raise DnasError(f"'{given}' already holds the results of a run ({found}), which this training would overwrite; "
                            f"choose another --out")
        return given
    out, k = default, 1
    while taken(out):
        k += 1
        out = default.with_name(f"{default.name}-{k}")
    return str(out)
