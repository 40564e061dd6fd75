"""``dnas``: a thin command line over the Python API (one function per subcommand)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dnas.errors import DnasError


def _search_overlay(args) -> dict:
    from dnas.api import load_config_file, merge_config, parse_set, DEFAULTS

    cfg = load_config_file(args.config) if args.config else dict(DEFAULTS)
    flags: dict = {}
    for section, value in (("space", args.space), ("strategy", args.strategy)):
        if value:
            flags[section] = {"name": value}
    data = {}
    if args.data:
        data["name"] = args.data
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.download:
        data["download"] = True
    if args.batch_size:
        data["batch_size"] = args.batch_size
    if args.target:
        data["target"] = args.target
    if data:
        flags["data"] = data
    if args.seed is not None:
        flags["seed"] = args.seed
    if args.device:
        flags["device"] = args.device
    cfg = merge_config(cfg, flags)
    sets = parse_set(args.set or [])
    if args.epochs is not None:
        sets.setdefault("strategy", {})["epochs"] = args.epochs
    return merge_config(cfg, sets, source="--set")


def cmd_list(args) -> int:
    from dnas.genotypes import builtin_genotypes
    from dnas.registry import list_parsers, list_spaces, list_strategies

    print("spaces:     " + ", ".join(list_spaces()))
    print("strategies: " + ", ".join(list_strategies()))
    print("parsers:    " + ", ".join(list_parsers()))
    print("genotypes:  " + ", ".join(builtin_genotypes()))
    return 0


def cmd_search(args) -> int:
    from dnas.api import search

    if args.resume:
        result = search(resume=args.resume, progress=not args.no_progress)
    else:
        result = search(config=_search_overlay(args), out=args.out, progress=not args.no_progress)
    print(f"{result.run_dir / 'genotype.yaml'}")
    return 0


def cmd_train(args) -> int:
    import json

    from dnas.api import parse_set, train

    sets = parse_set(args.set or [])
    unknown = set(sets) - {"train", "space", "data"}
    if unknown:
        raise DnasError(f"--set for train takes train.*, space.* or data.* keys, not {', '.join(sorted(unknown))}")
    tcfg = dict(sets.get("train", {}))
    if args.epochs is not None:
        tcfg["epochs"] = args.epochs
    dcfg = dict(sets.get("data", {}))
    if args.data_dir:
        dcfg["data_dir"] = args.data_dir
    if args.download:
        dcfg["download"] = True
    if args.target:
        dcfg["target"] = args.target
    out = args.out or str(Path("runs") / ("train-" + Path(args.genotype).stem))
    result = train(
        args.genotype, data=args.data, train_config=tcfg, space_config=sets.get("space"), data_config=dcfg,
        seed=args.seed or 0, device=args.device or "cpu", out=out,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    print(f"weights and metrics written to {out}")
    return 0


def cmd_deepen(args) -> int:
    from dnas.deepen import deepen
    from dnas.genotype import load_genotype

    g = deepen(load_genotype(args.genotype), args.cells)
    if args.out:
        print(g.save(args.out))
    else:
        print(g.to_yaml(), end="")
    return 0


def cmd_show(args) -> int:
    from dnas.show import show

    print(show(args.target, plot=args.plot))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnas", description="Differentiable neural architecture search.")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first (registers user spaces/strategies)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered spaces, strategies, parsers and shipped genotypes").set_defaults(fn=cmd_list)

    s = sub.add_parser("search", help="search a space with a strategy")
    s.add_argument("--config", help="run YAML (sections space, strategy, data, seed, device)")
    s.add_argument("--space")
    s.add_argument("--strategy")
    s.add_argument("--data", help="digits (default), synthetic, cifar10, cifar100, fashion-mnist, imagefolder:PATH, csv:PATH, synthetic-regression")
    s.add_argument("--data-dir")
    s.add_argument("--download", action="store_true", help="download the dataset if missing")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--target", metavar="COLS", help="regression (--data csv:PATH): target column names or indices, a,b")
    s.add_argument("--epochs", type=int)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. space.C=8, strategy.order=2 (repeatable)")
    s.add_argument("--out", help="run folder (default runs/<space>-<strategy>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_search)

    t = sub.add_parser("train", help="train a genotype's network from scratch (evaluation phase)")
    t.add_argument("--genotype", required=True, help="genotype YAML/JSON or a shipped genotype name")
    t.add_argument("--data", default="digits")
    t.add_argument("--data-dir")
    t.add_argument("--download", action="store_true")
    t.add_argument("--target", metavar="COLS", help="regression (--data csv:PATH): target columns")
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="train.lr=0.05, space.C=36, space.layers=20, ...")
    t.add_argument("--out")
    t.add_argument("--seed", type=int)
    t.add_argument("--device")
    t.set_defaults(fn=cmd_train)

    sh = sub.add_parser("show", help="print a genotype (file, shipped name, or run folder)")
    sh.add_argument("target")
    sh.add_argument("--plot", metavar="PNG", help="draw the cells to this PNG")
    sh.set_defaults(fn=cmd_show)

    dp = sub.add_parser("deepen", help="derive an N-cell genotype from a searched n-cell one (D-DARTS Algorithm 2)")
    dp.add_argument("genotype", help="genotype YAML/JSON (darts or ddarts)")
    dp.add_argument("--cells", type=int, required=True, help="number of cells N of the new genotype")
    dp.add_argument("--out", help="write it here (default: print the YAML)")
    dp.set_defaults(fn=cmd_deepen)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from dnas.registry import load_plugin

        for module in args.plugin:
            load_plugin(module)
        import dnas  # noqa: F401  (registers the built-ins)

        return args.fn(args)
    except DnasError as e:
        print(f"dnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dnas: interrupted; the last checkpoint is kept (resume with --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
