"""DARTS on the embedded digits data: search, then train the derived network and random genotypes
of the same size (same C, layers, training recipe and seed), and compare test accuracy.

    python experiments/darts_digits.py [--search-epochs 10] [--train-epochs 20] [--randoms 2] [--order 1]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import dnas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--search-epochs", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--randoms", type=int, default=3, help="random genotypes to train as the baseline")
    p.add_argument("--order", type=int, default=1, choices=(1, 2))
    # digits gives ~11 α steps per epoch, CIFAR-10 ~390: at DARTS' α lr (3e-4) α would barely leave
    # uniform in a few epochs, so the demo scales both learning rates to its step budget
    p.add_argument("--a-lr", type=float, default=0.01)
    p.add_argument("--w-lr", type=float, default=0.05)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--out", default="runs/darts-digits")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    out = Path(args.out)
    space_cfg = {"C": args.C, "layers": args.layers}
    train_cfg = {"epochs": args.train_epochs, "batch_size": 64, "lr": 0.05}
    t0 = time.perf_counter()
    run_dir = out / "search"
    if (run_dir / "genotype.yaml").exists():
        genotype = dnas.load_genotype(run_dir / "genotype.yaml")
        print(f"reusing the finished search in {run_dir}")
    else:
        kw = {"resume": run_dir} if (run_dir / "checkpoint.pt").exists() else {"out": run_dir}
        genotype = dnas.search(
            "darts", "darts", "digits", space_config=space_cfg, data_config={"batch_size": 64},
            strategy_config={"epochs": args.search_epochs, "order": args.order, "a_lr": args.a_lr, "w_lr": args.w_lr}, seed=args.seed, **kw,
        ).genotype
    search_s = time.perf_counter() - t0
    from dnas.tools.show import describe

    print(describe(genotype))

    space = dnas.create_space("darts", **dict(genotype.config))
    rows = []
    candidates = [("searched", genotype)] + [
        (f"random-{i}", space.random_genotype(random.Random(1000 + i))) for i in range(args.randoms)
    ]
    for name, g in candidates:
        t = time.perf_counter()
        m = dnas.train(g, data="digits", train_config=train_cfg, seed=args.seed, out=out / name, log=lambda *_: None)
        rows.append({"genotype": name, "test_top1": round(m["top1"], 4), "params": m["params"], "train_s": round(time.perf_counter() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    best_random = max(r["test_top1"] for r in rows[1:]) if rows[1:] else float("nan")
    mean_random = sum(r["test_top1"] for r in rows[1:]) / max(len(rows) - 1, 1)
    summary = {"search_s": round(search_s, 1), "searched_top1": rows[0]["test_top1"], "random_mean_top1": round(mean_random, 4),
               "random_best_top1": best_random, "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps({"rows": rows, **summary}, indent=1))
    print("\n| genotype | test top-1 | params |\n|---|---|---|")
    for r in rows:
        print(f"| {r['genotype']} | {r['test_top1']:.4f} | {r['params']} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
