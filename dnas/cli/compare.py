"""``dnas compare``: do searched genotypes beat size-matched random ones? (seeds, CIs, p-values)."""
from __future__ import annotations

import argparse
import sys

from dnas.errors import DnasError

#: ``dnas search`` options ``_search_overlay`` reads that compare does not offer (left unset)
_SEARCH_ONLY = ("target", "beta_decay", "early_stop", "init_genotype", "amp", "compile", "checkpoint_cells",
                "channels_last", "partial_channels", "trials", "timeout", "storage", "study", "fitness")


def add(sub) -> None:
    c = sub.add_parser(
        "compare", help="searched vs size-matched random genotypes over seeds (mean, CI, Welch and Mann–Whitney p)",
        description="Search (or take genotype files), sample random genotypes of the same space within ±tolerance of "
        "each searched genotype's parameter count, train every genotype with several seeds under one recipe "
        "(the config's train section), and report the difference with its 95 % CI and p-values.",
    )
    c.add_argument("--config", help="search YAML (sections space, strategy, data, train = the training recipe, seed, device)")
    c.add_argument("--genotype", action="append", metavar="FILE", help="compare these genotypes instead of searching (repeatable)")
    c.add_argument("--space")
    c.add_argument("--strategy")
    c.add_argument("--data", help="digits (default), synthetic, cifar10, ...")
    c.add_argument("--data-dir")
    c.add_argument("--download", action="store_true")
    c.add_argument("--batch-size", type=int, help="search batch size")
    c.add_argument("--epochs", type=int, help="search epochs")
    c.add_argument("--train-epochs", type=int, help="training epochs of every genotype (train.epochs)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="space.C=8, strategy.a_lr=0.01, train.lr=0.05, ... (repeatable)")
    c.add_argument("--search-seeds", type=int, metavar="S", help="searches, seeds seed..seed+S-1 (default 2)")
    c.add_argument("--random", type=int, metavar="R", help="random genotypes per searched genotype (default 4)")
    c.add_argument("--train-seeds", type=int, metavar="T", help="trainings per genotype (default 2)")
    c.add_argument("--tolerance", type=float, help="parameter count of a random genotype within ± this fraction (default 0.1)")
    c.add_argument("--max-tries", type=int, help="random genotypes drawn per searched genotype before giving up (default 2000)")
    c.add_argument("--unit", choices=("training", "genotype"), help="an observation: one trained network (default) or a genotype's mean over seeds")
    c.add_argument("--sample-seed", type=int, help="seed of the random-genotype sampler (default 0)")
    c.add_argument("--eval-set", action="append", metavar="KEY=VALUE", help="space option for training, e.g. C=16 or space.C=16 (repeatable)")
    c.add_argument("--workers", type=int, help="parallel processes running the searches and trainings (default 1)")
    c.add_argument("--threads", type=int, help="torch threads per unit (default: CPUs / workers)")
    c.add_argument("--out", help="compare folder (default runs/compare-<time>)")
    c.add_argument("--resume", metavar="DIR", help="finish a killed compare (only missing units run)")
    c.add_argument("--logger", action="append", metavar="NAME[=DEST]",
                   help="follow every search and training in tensorboard, mlflow or csv, one run each (repeatable)")
    c.add_argument("--seed", type=int)
    c.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    c.set_defaults(fn=run)


def _eval_space(items: list[str]) -> dict:
    from dnas._io import load_yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise DnasError(f"--eval-set expects key=value (e.g. C=16), got '{item}'")
        k, v = item.split("=", 1)
        k = k.strip()
        out[k[len("space."):] if k.startswith("space.") else k] = load_yaml(v)  # space.C=16 as with --set
    return out


def run(args) -> int:
    from dnas.cli.search import _search_overlay
    from dnas.tools.compare import compare

    options = {
        "search_seeds": args.search_seeds, "random": args.random, "train_seeds": args.train_seeds, "tolerance": args.tolerance,
        "max_tries": args.max_tries, "unit": args.unit, "sample_seed": args.sample_seed, "workers": args.workers,
        "threads": args.threads, "eval_space": _eval_space(args.eval_set) if args.eval_set else None,
    }
    plugins = getattr(args, "plugin", [])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if args.resume:
        result = compare(resume=args.resume, plugins=plugins, log=log, **options)
    else:
        ns = argparse.Namespace(**vars(args), **{k: None for k in _SEARCH_ONLY})
        ns.workers = None  # dnas search's --workers (trial processes) is not compare's
        if args.train_epochs is not None:
            ns.set = [*(args.set or []), f"train.epochs={args.train_epochs}"]
        cfg = _search_overlay(ns)
        result = compare(cfg, args.genotype, out=args.out, plugins=plugins, log=log, **options)
    print(result["verdict"])
    return 0
