"""``dnas retrieve``: retrieval mAP of a self-supervised model."""
from __future__ import annotations


def add(sub) -> None:
    rt = sub.add_parser("retrieve", help="retrieval mAP of a 'train --ssl' model: test split queries, train split gallery")
    rt.add_argument("run", help="the --out folder of 'dnas train --ssl' (genotype.yaml + model.safetensors)")
    rt.add_argument("--data", default="digits", help="the labelled data it was trained on")
    rt.add_argument("--data-dir")
    rt.add_argument("--threshold", type=float, help="retrieve only gallery items with cosine similarity > τ (default: all)")
    rt.add_argument("--device")
    rt.set_defaults(fn=run)


def run(args) -> int:
    import json

    from dnas.evaluate.ssl import retrieve

    dcfg = {"data_dir": args.data_dir} if args.data_dir else None
    print(json.dumps(retrieve(args.run, data=args.data, data_config=dcfg, threshold=args.threshold, device=args.device or "cpu")))
    return 0
