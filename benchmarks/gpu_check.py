"""Helpers of ``benchmarks/gpu.sh`` (the GPU check): synthetic CIFAR-shaped data, the nccl smoke
test run under ``torchrun``, and one JSON summary per search run.

    python -m benchmarks.gpu_check images DIR [--classes 10 --per-class 64]
    torchrun --nproc_per_node 1 -m benchmarks.gpu_check nccl --out FILE [--backend nccl]
    python -m benchmarks.gpu_check summarize RUN_DIR --name NAME --seconds S --out FILE
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def make_images(root: Path, classes: int = 10, per_class: int = 64, size: int = 32, seed: int = 0) -> int:
    """An image folder of ``classes`` sub-folders of random ``size``x``size`` RGB PNGs around one
    prototype per class (learnable), CIFAR-shaped for ``--data imagefolder:DIR``. Returns the count."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = 0
    for c in range(classes):
        proto = rng.uniform(0, 255, (size, size, 3))
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(proto + rng.normal(0, 40, proto.shape), 0, 255).astype("uint8")
            Image.fromarray(img).save(d / f"{i:04d}.png")
            n += 1
    return n


def nccl_smoke(out: Path, backend: str = "nccl") -> dict:
    """Join the process group torchrun describes with ``backend``, all-reduce a tensor through
    dnas' gradient averaging, and take one DARTS search step of a tiny supernet on this rank's
    device. Writes (rank 0) and returns a JSON record."""
    import torch
    import torch.distributed as dist

    import dnas
    from dnas.engine.distributed import rank_and_size

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    t = time.perf_counter()
    dist.init_process_group(backend)
    x = torch.full((4,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    world = rank_and_size()[1]
    expected = world * (world + 1) / 2
    torch.manual_seed(0)
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    net = space.supernet(space.tiny_task).to(dev)
    strategy = dnas.create_strategy("darts")
    net.relaxation = strategy.relaxation
    state = strategy.init_state(net)
    batch = (torch.randn(8, *space.tiny_task.input_shape, device=dev), torch.randint(0, space.tiny_task.num_classes, (8,), device=dev))
    metrics = strategy.step(net, batch, batch, state)
    rec = {
        "check": "torchrun",
        "backend": dist.get_backend(),
        "world_size": world,
        "device": str(dev),
        "all_reduce_ok": bool(torch.allclose(x.cpu(), torch.full((4,), expected))),
        "step_finite": all(bool(torch.isfinite(v).all()) for v in metrics.values()),
        "seconds": round(time.perf_counter() - t, 2),
    }
    dist.destroy_process_group()
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec, indent=1))
    return rec


def summarize(run_dir: Path, name: str, seconds: float, out: Path) -> dict:
    """One JSON record of a finished search run (its last history entry and genotype)."""
    hist = run_dir / "history.jsonl"
    last = json.loads(hist.read_text().splitlines()[-1]) if hist.is_file() else {}
    rec = {
        "check": name,
        "run_dir": str(run_dir),
        "seconds": round(seconds, 1),
        "finished": (run_dir / "genotype.yaml").is_file(),
        "epochs": last.get("epoch"),
        "last": {k: v for k, v in last.items() if isinstance(v, (int, float))},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1))
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    sub = p.add_subparsers(dest="cmd", required=True)
    im = sub.add_parser("images", help="write a synthetic CIFAR-shaped image folder")
    im.add_argument("dir")
    im.add_argument("--classes", type=int, default=10)
    im.add_argument("--per-class", type=int, default=64)
    nc = sub.add_parser("nccl", help="the torchrun smoke test (run under torchrun)")
    nc.add_argument("--out", required=True)
    nc.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    sm = sub.add_parser("summarize", help="one JSON record of a search run")
    sm.add_argument("run_dir")
    sm.add_argument("--name", required=True)
    sm.add_argument("--seconds", type=float, required=True)
    sm.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "images":
        print(make_images(Path(args.dir), args.classes, args.per_class))
    elif args.cmd == "nccl":
        print(json.dumps(nccl_smoke(Path(args.out), args.backend)))
    else:
        print(json.dumps(summarize(Path(args.run_dir), args.name, args.seconds, Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
