"""DARIO on a small trained ViT: is the searched pruning better than random prunings of the same budget?

1. trains a small timm ViT (6 blocks, width 48, 3 heads, 32 px, patch 8) on the embedded digits data;
2. prunes it with the data-free var proxy (``dnas prune --eval-data digits``): unpruned, searched and
   R random prunings of the same budget, by frozen-feature linear probe, kNN and feature cosine;
3. the same search with the calibration term, compared with the data-free one at the same budget;
4. the proxy-correlation protocol (thesis §6.1) over N random prunings;
5. fine-tuning (last kept block + head) of the searched pruning and of random prunings, same recipe.

    python experiments/dario_quality_digits.py [--epochs 15] [--iters 60] [--random 5] [--n 30]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

KW = {"img_size": 32, "patch_size": 8, "depth": 6, "embed_dim": 48, "num_heads": 3, "num_classes": 10}


def train_vit(path: Path, epochs: int, seed: int) -> float:
    """A small ViT trained on digits (8x8 grey, resized to 32 px, 3 channels); returns its test top-1."""
    import timm
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader

    from dnas.engine.data import DataConfig, load_datasets

    torch.manual_seed(seed)
    ds = load_datasets(DataConfig(name="digits"))
    model = timm.create_model("vit_tiny_patch16_224", **KW)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    prep = lambda x: F.interpolate(x.repeat(1, 3, 1, 1), size=(32, 32), mode="bilinear", align_corners=False)
    for _ in range(epochs):
        model.train()
        for x, y in DataLoader(ds.train, batch_size=64, shuffle=True):
            loss = F.cross_entropy(model(prep(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        x, y = ds.test.tensors
        top1 = float((model(prep(x)).argmax(1) == y).float().mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return top1


def same_budget(out: Path, weights: Path, qual: dict) -> dict:
    """The calibrated search's gates recast to the data-free search's budget, measured against it and
    the same random prunings (with a threshold alone the calibration term may keep every gate open)."""
    import dnas
    from dnas.spaces.dario import build_model
    from dnas.tools.prune_quality import budget_of, heads_per_block, quality_report, top_gates

    free = json.loads((out / "free" / "report.json").read_text())
    gates = json.loads((out / "calibrated" / "alphas.json").read_text())
    space = dnas.create_space("dario", model="vit_tiny_patch16_224", model_kwargs=KW, weights=str(weights))
    heads = heads_per_block(space)
    kept = free["blocks_kept"]
    n_blocks, n_heads = budget_of(kept, {}, heads)
    cal = top_gates(gates, heads, n_blocks, n_heads, space.config.granularity)
    return quality_report(space, build_model(space.config), kept, {}, "digits", qual, extra={"calibrated search": cal})


def main() -> None:
    import dnas
    from dnas.tools.prune_quality import finetune_random_baseline, proxy_correlation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15, help="training epochs of the small ViT")
    p.add_argument("--iters", type=int, default=60, help="gradient steps of the gate search")
    p.add_argument("--warm-start", type=int, default=20)
    p.add_argument("--random", type=int, default=5, help="random prunings in the quality report")
    p.add_argument("--n", type=int, default=30, help="random prunings of the correlation protocol")
    p.add_argument("--finetune-random", type=int, default=3)
    p.add_argument("--eval-size", type=int, default=1000, help="train and test images of the probes")
    p.add_argument("--linear-epochs", type=int, default=100)
    p.add_argument("--only-same-budget", action="store_true", help="reuse the runs in --out; only the same-budget comparison")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--out", default="runs/dario-quality")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    KW.update(depth=args.depth, embed_dim=args.width)
    res: dict = {"model": {"name": "vit_tiny_patch16_224", **KW}, "args": vars(args)}
    t0 = time.perf_counter()
    weights = out / "vit-digits.safetensors"
    if not weights.exists():
        res["trained_top1"] = train_vit(weights, args.epochs, args.seed)
        print(f"small ViT trained on digits: test top-1 {res['trained_top1']:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    qual = {"random": args.random, "seed": args.seed, "eval_size": args.eval_size, "linear_epochs": args.linear_epochs}

    def save(key, value):
        res[key] = value
        (out / "results.json").write_text(json.dumps(res, indent=1))
        print(f"{key} done ({time.perf_counter() - t0:.0f}s)", flush=True)

    common = {"model_kwargs": KW, "weights": str(weights), "iters": args.iters, "warm_start": args.warm_start, "seed": args.seed,
              "progress": False, "eval_data": "digits", "bench_batch": 16}
    if args.only_same_budget:
        res = json.loads((out / "results.json").read_text())
        save("calibrated_same_budget", same_budget(out, weights, qual))
        return
    for sub in ("free", "calibrated", "finetuned"):
        shutil.rmtree(out / sub, ignore_errors=True)
    free = dnas.prune("vit_tiny_patch16_224", out=out / "free", quality=qual, **common)
    save("data_free", free)
    cal = dnas.prune("vit_tiny_patch16_224", out=out / "calibrated",
                     strategy_config={"terms": {"calibration": {"data": "digits", "size": 16}}},
                     quality={**qual, "compare_calibration": True}, **common)
    save("calibrated", cal)
    save("correlation", proxy_correlation(
        "vit_tiny_patch16_224", data="digits", n=args.n, space_config={"model_kwargs": KW, "weights": str(weights)},
        strategy_config={"terms": {"calibration": {"data": "digits", "size": 16}}}, quality_config=qual,
        out=out / "correlation", seed=args.seed))
    save("calibrated_same_budget", same_budget(out, weights, qual))
    save("finetune", finetune_random_baseline(out / "free", args.finetune_random, "digits", epochs=1, seed=args.seed, out=out / "finetuned"))
    save("seconds", round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main()
