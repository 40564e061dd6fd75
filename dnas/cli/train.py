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
                   help="also log every epoch to tensorboard, mlflow or csv (repeatable; supervised and SSL)")
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
    if args.pruned:  # explicit override: fine-tune this pruned-model folder
        return run_finetune_pruned(args)
    if not args.genotype:
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
    # the genotype's space picks the evaluation (supervised, ssl, pruned); --ssl forces SSL
    kind = "ssl" if args.ssl else ("pruned" if is_file(Path(args.genotype) / "pruned.yaml") else evaluation_of(args.genotype))
    if kind == "pruned":
        folder = Path(args.genotype) if is_dir(args.genotype) else Path(args.genotype).parent
        out = _out(args.out, folder.with_name(folder.name + "-finetuned"))
    else:
        out = _out(args.out, Path("runs") / (("ssl-" if kind == "ssl" else "train-") + genotype_label(args.genotype)))
    if args.logger and kind == "pruned":
        raise DnasError("--logger follows a supervised training or an SSL pretraining; the fine-tuning of a pruned model has none")
    result = train(
        args.genotype, data=args.data, train_config=tcfg, space_config=sets.get("space"), data_config=dcfg,
        seed=args.seed or 0, device=args.device or "cpu", out=out, evaluation=kind, loggers=args.logger,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    print(f"weights and metrics written to {out}")
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


def run_finetune_pruned(args) -> int:
    import json

    from dnas.tools.pruning import finetune_pruned

    out = _out(args.out, Path(args.pruned).with_name(Path(args.pruned).name + "-finetuned"))
    dcfg = {"data_dir": args.data_dir, "download": True} if args.download else ({"data_dir": args.data_dir} if args.data_dir else None)
    if args.random_baseline:
        from dnas.tools.prune_quality import finetune_random_baseline

        result = finetune_random_baseline(args.pruned, args.random_baseline, args.data, epochs=args.epochs or 1, data_config=dcfg,
                                          seed=args.seed or 0, out=out, device=args.device or "cpu")
        print(json.dumps(result))
        return 0
    result = finetune_pruned(args.pruned, args.data, epochs=args.epochs or 1, out=out, device=args.device or "cpu", data_config=dcfg)
    print(json.dumps(result))
    return 0


#: what a finished training leaves in its folder, and what a search or a pruning does (never overwritten)
_RESULTS = ("metrics.json", "finetune.json", "baseline.json", "model.safetensors", "config.yaml", "checkpoint.pt",
            "history.jsonl", "pruned.yaml")


def _out(given: str | None, default: Path) -> str:
    """The training's folder: ``--out`` unless it holds a run's results (refused: they would be
    overwritten), else the default name, or default-2, -3, ... where that one holds some."""
    def taken(p: Path) -> str | None:
        return next((name for name in _RESULTS if (p / name).exists()), None)

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
