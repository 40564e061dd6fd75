"""Does DARTS beat random cells on the embedded digits data? The `dnas compare` protocol at a budget
of about 15 minutes on 2 free CPU cores: 3 searches (seeds 0-2), 3 random cells per searched cell
with its parameter count within ±10 %, every cell trained with 2 seeds under one recipe.

    python experiments/compare_digits.py [--search-seeds 3] [--random 3] [--train-seeds 2] [--workers 2]

It prints the verdict and writes ``experiments/results/demo.json`` (the figures the documentation
quotes, with the date, machine, commit and command). A killed run continues where it stopped when
started again with the same ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import dnas
from dnas._io import atomic_write_text
from dnas.tools.compare import run_metadata

ROOT = Path(__file__).resolve().parent.parent


def config(args) -> dict:
    """The search config and training recipe of the demo."""
    return {
        "space": {"name": "darts", "C": args.C, "layers": args.layers},
        # digits gives ~11 α steps per epoch, CIFAR-10 ~390: at DARTS' α lr (3e-4) α would barely leave
        # uniform in a few epochs, so the demo scales both learning rates to its step budget
        "strategy": {"name": "darts", "epochs": args.search_epochs, "order": 1, "a_lr": args.a_lr, "w_lr": args.w_lr},
        "data": {"name": "digits", "batch_size": 64},
        "train": {"epochs": args.train_epochs, "batch_size": 64, "lr": 0.05},
        "seed": args.seed,
    }


def doc_markdown(record: dict, file: str = "experiments/results/demo.json") -> str:
    """The demo's figures as Markdown, each followed by the marker that ties it to ``file``
    (``tests/test_doc_figures.py`` checks them): paste it into a page when the results change."""

    def fig(key: str, spec: str) -> str:
        value = record
        for part in key.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        return f"{format(round(value, 3) + 0.0, spec)} <!-- result: {file}#{key} -->"  # + 0.0: no "-0.00"

    n_s = sum(g["arm"] == "searched" for g in record["genotypes"])
    n_r = len(record["genotypes"]) - n_s
    conclusion = record["verdict"].rsplit(": ", 1)[-1]
    lines = [
        f"searched cells **{fig('searched.mean', '.2f')} %** (std {fig('searched.std', '.2f')}, {n_s} cells × "
        f"{record['protocol']['train_seeds']} seeds) vs size-matched random cells **{fig('random.mean', '.2f')} %** "
        f"(std {fig('random.std', '.2f')}, {n_r} cells); searched − random = **{fig('difference.mean', '+.2f')} pts**, "
        f"95 % CI [{fig('difference.ci95.0', '+.2f')}, {fig('difference.ci95.1', '+.2f')}], "
        f"Welch p = {fig('difference.welch_p', '.3f')}, Mann–Whitney p = {fig('difference.mannwhitney_p', '.3f')}: "
        f"{conclusion}. Ranks of the searched cells among their random ones: "
        + ", ".join(f"{x['in_group']['rank']} of {x['in_group']['of']}" for x in record["ranks"])
        + f"; {fig('timing.wall_s', '.0f')} s wall ({record['machine']}, commit {str(record['commit'])[:7]}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--search-seeds", type=int, default=3)
    p.add_argument("--random", type=int, default=3, help="random cells per searched cell")
    p.add_argument("--train-seeds", type=int, default=2)
    p.add_argument("--search-epochs", type=int, default=6)
    p.add_argument("--train-epochs", type=int, default=12)
    p.add_argument("--a-lr", type=float, default=0.01)
    p.add_argument("--w-lr", type=float, default=0.05)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="parallel processes (one torch thread each, so results do not depend on the CPU count)")
    p.add_argument("--out", default="runs/compare-digits")
    p.add_argument("--results", default=str(ROOT / "experiments" / "results" / "demo.json"), help="results file ('' = none)")
    p.add_argument("--doc", action="store_true", help="print the figures of the results file as marked Markdown, run nothing")
    args = p.parse_args(argv)
    if args.doc:
        print(doc_markdown(json.loads(Path(args.results).read_text()), str(Path(args.results).resolve().relative_to(ROOT))))
        return {}

    out = Path(args.out)
    command = "python experiments/compare_digits.py" + ("" if argv is None and len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    meta = run_metadata(command)  # at the start: the commit the run measured
    options = dict(search_seeds=args.search_seeds, random=args.random, train_seeds=args.train_seeds, workers=args.workers, threads=1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    if (out / "compare.yaml").is_file():
        log(f"continuing the compare in {out}")
        results = dnas.compare(resume=out, log=log, workers=args.workers, threads=1)
    else:
        results = dnas.compare(config(args), out=out, log=log, **options)
    if args.results:
        keep = ("protocol", "accuracy", "unit", "searched", "random", "difference", "ranks", "genotypes", "verdict", "timing")
        record = {**meta, "finished": run_metadata()["date"], **{k: results[k] for k in keep}}
        for g in record["genotypes"]:  # paths inside the run folder mean nothing in the repository
            g.pop("file", None)
        atomic_write_text(Path(args.results), json.dumps(record, indent=1) + "\n")
        log(f"results written to {args.results}")
    print(Path(out / "results.md").read_text())
    print(results["verdict"])
    return results


if __name__ == "__main__":
    main()
