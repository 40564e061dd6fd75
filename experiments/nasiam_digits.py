"""NASiam on the embedded digits data: search the SimSiam heads (darts on nasiam-mlp), then pretrain
the SimSiam baseline heads and the searched heads with the same backbone, recipe and seed, and compare
linear evaluation (frozen features), kNN and retrieval mAP.

    python experiments/nasiam_digits.py [--search-epochs 10] [--pretrain-epochs 30] [--seeds 1]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import dnas
from dnas.evaluate.ssl import retrieve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--linear-epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, default=1, help="pretraining seeds per heads (mean reported)")
    # digits gives ~11 α steps per search epoch (CIFAR: ~100 at batch 256): the demo raises the α lr
    p.add_argument("--a-lr", type=float, default=0.01)
    p.add_argument("--framework", default="simsiam", choices=("simsiam", "byol"))
    p.add_argument("--width", type=int, default=32, help="feature width of the tiny conv backbone")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--pred-dim", type=int, default=32)
    p.add_argument("--no-augment-search", action="store_true", help="NASiam's ablation: search without augmentation")
    p.add_argument("--out", default="runs/nasiam-digits")
    args = p.parse_args()

    out = Path(args.out)
    space_cfg = {"framework": args.framework, "backbone": "tiny", "backbone_width": args.width, "dim": args.dim, "pred_dim": args.pred_dim}
    t0 = time.perf_counter()
    run_dir = out / "search"
    if (run_dir / "genotype.yaml").exists():
        genotype = dnas.load_genotype(run_dir / "genotype.yaml")
        print(f"reusing the finished search in {run_dir}")
    else:
        kw = {"resume": run_dir} if (run_dir / "checkpoint.pt").exists() else {"out": run_dir}
        genotype = dnas.search(
            "nasiam-mlp", "darts", "digits", space_config=space_cfg,
            data_config={"batch_size": 64, "augment": not args.no_augment_search},
            strategy_config={"epochs": args.search_epochs, "a_lr": args.a_lr, "w_lr": 0.06, "w_weight_decay": 5e-4},
            progress=False, **kw,
        ).genotype
    search_s = time.perf_counter() - t0
    print("searched heads: " + ", ".join(f"{k}={v[0]}" for k, v in genotype.choices.items()))

    train_cfg = {"epochs": args.pretrain_epochs, "batch_size": 128, "lr": 0.06, "linear_epochs": args.linear_epochs, "knn_k": 20}
    baseline = dnas.load_genotype("simsiam")
    rows = []
    for name, g in (("SimSiam baseline heads", baseline), ("searched heads", genotype)):
        acc = {"top1": [], "top5": [], "knn_top1": [], "std": [], "mAP": []}
        t = time.perf_counter()
        for seed in range(args.seeds):
            d = out / f"{name.split()[0].lower()}-seed{seed}"
            m = dnas.ssl_train(g, data="digits", space_config=space_cfg, train_config=train_cfg, seed=seed, out=d, log=lambda *_: None)
            for k in ("top1", "top5", "knn_top1", "std"):
                acc[k].append(m[k])
            acc["mAP"].append(retrieve(d, data="digits")["mAP"])
            params = m["params"]
        rows.append({"heads": name, **{k: round(sum(v) / len(v), 4) for k, v in acc.items()}, "params": params,
                     "pretrain_s": round((time.perf_counter() - t) / args.seeds, 1)})

    total = time.perf_counter() - t0
    cols = ["heads", "top1", "top5", "knn_top1", "mAP", "std", "params", "pretrain_s"]
    print(f"\nSimSiam baseline heads vs searched heads (digits, tiny conv backbone, {args.pretrain_epochs} pretraining "
          f"epochs, linear evaluation {args.linear_epochs} epochs, {args.seeds} seed(s))")
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"\nsearch {search_s:.1f} s, total wall time {total:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"rows": rows, "search_s": round(search_s, 1), "total_s": round(total, 1),
                                                "genotype": {k: list(v) for k, v in genotype.choices.items()}}, indent=1))


if __name__ == "__main__":
    main()
