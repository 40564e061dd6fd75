"""``dnas prune``: DARIO pruning of a pretrained model, and export of the smaller model."""
from __future__ import annotations

from dnas.errors import DnasError


def add(sub) -> None:
    pr = sub.add_parser("prune", help="DARIO: prune a pretrained ViT without data, export the smaller model")
    pr.add_argument("--model", default="mae-vit-base", help="mae-vit-base, mobilevit-s, a timm ViT/DeiT/EVA name, hf:LOCAL_DIR (transformers) or package.module:factory")
    pr.add_argument("--weights", help="safetensors or state-dict file (else a random init is pruned, with a warning)")
    pr.add_argument("--weights-prefix", metavar="PREFIX", help="the model's tensors in --weights are under this prefix, "
                    "e.g. teacher.backbone. (default: found where the names do not fit)")
    pr.add_argument("--pretrained", action="store_true", help="timm hub weights (needs the hub or its cache)")
    pr.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor option, e.g. img_size=224 (repeatable)")
    pr.add_argument("--blocks", metavar="DOTTED.PATH", help="the ModuleList/Sequential of blocks, where they are not found "
                    "(timm models, ResNet-style layerN, stages' blocks, transformers encoders are); several, comma-separated, "
                    "for a model in stages (encoder.layers.0.blocks,encoder.layers.1.blocks,...)")
    pr.add_argument("--granularity", choices=("block", "head", "both"), default="block")
    pr.add_argument("--proxy", default="var", help="var (default), l0, l1, l2, synflow, synflow_norm, l0-var, l1-var, l0+l1")
    pr.add_argument("--threshold", type=float, default=0.65, help="prune gates with σ(α) below it (default 0.65)")
    pr.add_argument("--signed-synflow", action="store_true", help="run the synflow step on the signed weights θ, as the "
                    "authors' code does (default: on |θ|, the thesis' eq. 6.5)")
    pr.add_argument("--iters", type=int, default=500, help="gradient steps on α (default 500)")
    pr.add_argument("--warm-start", type=int, default=100, help="best of K random α (default 100)")
    pr.add_argument("--budget", metavar="KIND=VALUE", help="instead of the threshold: blocks=6, params=0.5 (fraction kept), "
                    "speedup=2 (measured) or heads=K; the report gives the equivalent threshold")
    pr.add_argument("--input-size", metavar="C,H,W", help="shape of the batch of ones, where the model does not tell")
    pr.add_argument("--seq-len", type=int, help="tokens of a text encoder's constant inputs_embeds (default 128)")
    pr.add_argument("--keep-blocks", metavar="0,1,...", help="skip the search: keep exactly these blocks")
    pr.add_argument("--bench-batch", type=int, default=8, help="batch of the throughput measurement")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", required=True, help="folder for the pruned model, α, plot and report")
    pr.add_argument("--no-progress", action="store_true")
    pr.add_argument("--logger", action="append", metavar="NAME[=DEST]",
                    help="also log the search to tensorboard, mlflow or csv (repeatable)")
    q = pr.add_argument_group("quality on data (optional)")
    q.add_argument("--eval-data", metavar="D", help="measure unpruned, pruned and random prunings of the same budget on dataset D "
                   "(digits, synthetic, imagefolder:PATH, ...): kNN, linear probe, feature cosine, params, images/s")
    q.add_argument("--data-dir", default="data", metavar="DIR", help="where --eval-data and --calibration datasets live (default data)")
    q.add_argument("--download", action="store_true", help="fetch a torchvision dataset (cifar10, ...) missing under --data-dir")
    q.add_argument("--random", type=int, default=5, metavar="R", help="random prunings with the same budget (default 5)")
    q.add_argument("--eval-size", type=int, default=1000, metavar="N", help="at most N train and N test images (default 1000)")
    q.add_argument("--calibration", metavar="D", help="data-aware: add a term keeping features close to the unpruned model's on D")
    q.add_argument("--calibration-size", type=int, default=16, metavar="N", help="unlabeled calibration images (default 16)")
    q.add_argument("--calibration-weight", type=float, default=1.0, metavar="W", help="the term's weight, relative to the proxy's α-gradient (default 1)")
    q.add_argument("--compare-calibration", action="store_true", help="also run the data-free search and compare both on --eval-data at the same budget")
    pr.set_defaults(fn=run)


def run(args) -> int:
    import json

    from dnas.api import parse_set
    from dnas.tools.pruning import prune

    try:
        keep = [int(b) for b in args.keep_blocks.split(",") if b.strip()] if args.keep_blocks is not None else None
    except ValueError:
        raise DnasError(f"--keep-blocks takes block indices like 0,1,5, not {args.keep_blocks!r}") from None
    try:
        size = [int(v) for v in args.input_size.split(",")] if args.input_size else None
    except ValueError:
        raise DnasError(f"--input-size takes C,H,W like 3,224,224, not {args.input_size!r}") from None
    kwargs = {k: v for item in args.model_arg or [] for k, v in parse_set([f"m.{item}"])["m"].items()}
    strat = {"terms": {"calibration": {"data": args.calibration, "size": args.calibration_size, "weight": args.calibration_weight,
                                       "data_dir": args.data_dir, "download": args.download}}} if args.calibration else {}
    if args.signed_synflow:
        strat["abs_params"] = False
    if args.compare_calibration and not args.eval_data:
        raise DnasError("--compare-calibration compares on labelled data: add --eval-data D")
    quality = {"random": args.random, "eval_size": args.eval_size, "compare_calibration": args.compare_calibration, "seed": args.seed,
               "data_dir": args.data_dir, "download": args.download}
    report = prune(args.model, out=args.out, weights=args.weights, weights_prefix=args.weights_prefix, pretrained=args.pretrained, blocks=args.blocks, model_kwargs=kwargs,
                   granularity=args.granularity, proxy=args.proxy, threshold=args.threshold, iters=args.iters,
                   warm_start=args.warm_start, keep_blocks=keep, budget=args.budget, input_size=size, seq_len=args.seq_len,
                   bench_batch=args.bench_batch, seed=args.seed, progress=not args.no_progress, strategy_config=strat or None,
                   eval_data=args.eval_data, quality=quality, loggers=args.logger)
    print(json.dumps(report))
    return 0
