"""``dnas prune-correlation``: the thesis' proxy-quality protocol (§6.1) on random pruned models."""
from __future__ import annotations


def add(sub) -> None:
    c = sub.add_parser("prune-correlation", help="DARIO: Spearman/Pearson correlation of a proxy with accuracy over random prunings")
    c.add_argument("--model", default="mae-vit-base", help="as dnas prune --model")
    c.add_argument("--weights", help="safetensors or state-dict file (else a random init, with a warning)")
    c.add_argument("--weights-prefix", metavar="PREFIX", help="the model's tensors in --weights are under this prefix, "
                   "e.g. teacher.backbone. (default: found where the names do not fit)")
    c.add_argument("--pretrained", action="store_true", help="timm hub weights (needs the hub or its cache)")
    c.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor option (repeatable)")
    c.add_argument("--blocks", metavar="DOTTED.PATH", help="the ModuleList/Sequential of blocks (non-timm models)")
    c.add_argument("--granularity", choices=("block", "head", "both"), default="block")
    c.add_argument("--proxy", default="var", help="the proxy to judge (var, l1, synflow, ...; as dnas prune)")
    c.add_argument("--data", default="digits", help="labelled dataset for the accuracies (digits, synthetic, imagefolder:PATH, ...)")
    c.add_argument("-n", "--n", type=int, default=20, help="random pruned models (default 20; the thesis used 100)")
    c.add_argument("--keep", type=int, metavar="K", help="draw prunings keeping exactly K blocks (default: each gate kept with probability 1/2)")
    c.add_argument("--calibration", metavar="D", help="also judge the data-aware calibration term on D")
    c.add_argument("--calibration-size", type=int, default=16, metavar="N")
    c.add_argument("--eval-size", type=int, default=1000, metavar="N", help="at most N train and N test images (default 1000)")
    c.add_argument("--ci", choices=("fisher", "bootstrap"), default="fisher", help="confidence intervals: Fisher z (default) or bootstrap")
    c.add_argument("--confidence", type=float, default=0.95)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", help="folder for correlation.json and correlation.png")
    c.set_defaults(fn=run)


def run(args) -> int:
    import json

    from dnas.api import parse_set
    from dnas.tools.prune_quality import proxy_correlation

    kwargs = {k: v for item in args.model_arg or [] for k, v in parse_set([f"m.{item}"])["m"].items()}
    space = {"model_kwargs": kwargs, "weights": args.weights, "weights_prefix": args.weights_prefix, "pretrained": args.pretrained,
             "blocks": args.blocks, "granularity": args.granularity}
    strat = {"proxy": args.proxy}
    if args.calibration:
        strat["terms"] = {"calibration": {"data": args.calibration, "size": args.calibration_size}}
    res = proxy_correlation(args.model, data=args.data, n=args.n, keep=args.keep, space_config=space, strategy_config=strat,
                            quality_config={"eval_size": args.eval_size, "seed": args.seed}, method=args.ci,
                            confidence=args.confidence, out=args.out, seed=args.seed)
    print(json.dumps({k: v for k, v in res.items() if k != "models"}))
    return 0
