"""``dnas``: a thin command line over the Python API (one function per subcommand)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dnas.errors import DnasError


def _search_overlay(args) -> dict:
    from dnas.api import DEFAULTS, apply_preset, load_config_file, merge_config, parse_set

    cfg = load_config_file(args.config) if args.config else dict(DEFAULTS)
    sets = parse_set(args.set or [])
    if "preset" in sets:  # --set preset=small: the experiment's small scale; explicit options still win
        cfg = apply_preset(cfg, {"preset": sets.pop("preset")})
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
    if args.epochs is not None:
        sets.setdefault("strategy", {})["epochs"] = args.epochs
    if args.beta_decay is not None:
        sets.setdefault("strategy", {})["beta_decay"] = args.beta_decay
    if args.init_genotype:
        sets.setdefault("strategy", {})["init_genotype"] = args.init_genotype
    if args.early_stop:
        sets.setdefault("strategy", {})["early_stop"] = args.early_stop
    if args.amp:
        sets.setdefault("strategy", {})["amp"] = args.amp
    for key in ("compile", "checkpoint_cells", "channels_last", "partial_channels"):  # darts/ddarts supernet options
        if getattr(args, key) is not None:
            sets.setdefault("space", {})[key] = getattr(args, key)
    for flag in ("trials", "timeout", "workers", "storage", "study", "fitness"):  # trial strategies (tpe, random)
        if getattr(args, flag, None) is not None:
            sets.setdefault("strategy", {})[flag] = getattr(args, flag)
    cfg = merge_config(cfg, sets, source="--set")
    if args.config:  # validate now, so an error names the file it came from
        from dnas.api import resolve

        try:
            resolve(cfg)
        except DnasError as e:
            raise DnasError(f"{args.config} (with the command-line options): {e}") from None
    return cfg


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
    from dnas.distributed import is_main

    if is_main():
        print(f"{result.run_dir / 'genotype.yaml'}")
    return 0


def cmd_train(args) -> int:
    import json

    from dnas.api import parse_set, train

    if args.pruned:
        return cmd_finetune_pruned(args)
    if not args.genotype:
        raise DnasError("dnas train needs --genotype FILE (or --pruned DIR to fine-tune a pruned model)")
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
    if args.ssl:  # self-supervised genotypes (nasiam-mlp): pretraining + linear evaluation
        from dnas.ssl_eval import ssl_train

        out = args.out or str(Path("runs") / ("ssl-" + Path(args.genotype).stem))
        result = ssl_train(args.genotype, data=args.data, train_config=tcfg, space_config=sets.get("space"), data_config=dcfg,
                           seed=args.seed or 0, device=args.device or "cpu", out=out)
        print(json.dumps({k: v for k, v in result.items() if k != "history"}))
        print(f"weights and metrics written to {out}")
        return 0
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


def cmd_distance(args) -> int:
    from dnas.distance import cell_distances
    from dnas.genotype import load_genotype

    d = cell_distances(load_genotype(args.a), load_genotype(args.b), norm=args.norm)
    print(f"{sum(d) / len(d):.6f}")
    if args.cells:
        print("\n".join(f"cell {i}: {x:.6f}" for i, x in enumerate(d)))
    return 0


def cmd_prune(args) -> int:
    import json

    from dnas.api import parse_set
    from dnas.prune import prune

    try:
        keep = [int(b) for b in args.keep_blocks.split(",") if b.strip()] if args.keep_blocks is not None else None
    except ValueError:
        raise DnasError(f"--keep-blocks takes block indices like 0,1,5, not {args.keep_blocks!r}") from None
    kwargs = {k: v for item in args.model_arg or [] for k, v in parse_set([f"m.{item}"])["m"].items()}
    report = prune(args.model, out=args.out, weights=args.weights, pretrained=args.pretrained, blocks=args.blocks, model_kwargs=kwargs,
                   granularity=args.granularity, proxy=args.proxy, threshold=args.threshold, iters=args.iters,
                   warm_start=args.warm_start, keep_blocks=keep, bench_batch=args.bench_batch, seed=args.seed,
                   progress=not args.no_progress)
    print(json.dumps(report))
    return 0


def cmd_finetune_pruned(args) -> int:
    import json

    from dnas.prune import finetune_pruned

    out = args.out or str(Path(args.pruned).with_name(Path(args.pruned).name + "-finetuned"))
    result = finetune_pruned(args.pruned, args.data, epochs=args.epochs or 1, out=out, device=args.device or "cpu",
                             data_config={"data_dir": args.data_dir, "download": True} if args.download else
                             ({"data_dir": args.data_dir} if args.data_dir else None))
    print(json.dumps(result))
    return 0


def cmd_retrieve(args) -> int:
    import json

    from dnas.ssl_eval import retrieve

    dcfg = {"data_dir": args.data_dir} if args.data_dir else None
    print(json.dumps(retrieve(args.run, data=args.data, data_config=dcfg, threshold=args.threshold, device=args.device or "cpu")))
    return 0


def cmd_show(args) -> int:
    from dnas.show import show

    print(show(args.target, plot=args.plot))
    return 0


def cmd_bench(args) -> int:
    """``python -m benchmarks`` of the source checkout this dnas is installed from (editable)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise DnasError(f"no benchmarks/ next to {root / 'dnas'}: the suite lives in the source checkout; install it with `pip install -e .`")
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.args], cwd=root)


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
    s.add_argument("--beta-decay", type=float, metavar="W", help="β-DARTS Beta-Decay weight (darts, fairdarts)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. space.C=8, strategy.order=2 (repeatable)")
    s.add_argument("--early-stop", choices=("none", "distance"), help="distance: stop when the distance M is stable (D-DARTS)")
    s.add_argument("--init-genotype", metavar="GENOTYPE", help="DARTOpti: start α from this genotype (file or shipped name, e.g. resnet18)")
    s.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast the search steps (gradient strategies)")
    s.add_argument("--compile", action="store_true", default=None, help="torch.compile the supernet forward (darts, ddarts)")
    s.add_argument("--checkpoint-cells", action="store_true", default=None, help="recompute cells in backward: same gradients, less memory")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC activations (default: on for the CPU, off on a GPU)")
    s.add_argument("--partial-channels", type=int, metavar="K", help="PC-DARTS: 1/K of the channels through the mixed ops (+ edge normalisation)")
    s.add_argument("--trials", type=int, help="tpe/random: completed trials to reach (the budget)")
    s.add_argument("--timeout", type=float, metavar="SECONDS", help="tpe/random: stop asking for new trials after this")
    s.add_argument("--workers", type=int, help="tpe/random: processes on this machine filling the study")
    s.add_argument("--storage", metavar="URL", help="tpe/random: optuna storage shared by workers (default sqlite in the run folder)")
    s.add_argument("--study", metavar="NAME", help="tpe/random: study name in the storage (default dnas)")
    s.add_argument("--fitness", choices=("supervised", "contrastive"), help="tpe/random: held-out cross-entropy or CSNAS' NCE loss")
    s.add_argument("--out", help="run folder (default runs/<space>-<strategy>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_search)

    t = sub.add_parser("train", help="train a genotype's network from scratch (evaluation phase)")
    t.add_argument("--genotype", help="genotype YAML/JSON or a shipped genotype name")
    t.add_argument("--pruned", metavar="DIR", help="fine-tune the last kept block + head of a `dnas prune` model instead")
    t.add_argument("--data", default="digits")
    t.add_argument("--data-dir")
    t.add_argument("--download", action="store_true")
    t.add_argument("--target", metavar="COLS", help="regression (--data csv:PATH): target columns")
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="train.lr=0.05, space.C=36, space.layers=20, ...")
    t.add_argument("--out")
    t.add_argument("--seed", type=int)
    t.add_argument("--device")
    t.add_argument("--ssl", action="store_true", help="self-supervised genotype (nasiam-mlp): pretrain, then linear evaluation")
    t.set_defaults(fn=cmd_train)

    rt = sub.add_parser("retrieve", help="retrieval mAP of a 'train --ssl' model: test split queries, train split gallery")
    rt.add_argument("run", help="the --out folder of 'dnas train --ssl' (genotype.yaml + model.safetensors)")
    rt.add_argument("--data", default="digits", help="the labelled data it was trained on")
    rt.add_argument("--data-dir")
    rt.add_argument("--threshold", type=float, help="retrieve only gallery items with cosine similarity > τ (default: all)")
    rt.add_argument("--device")
    rt.set_defaults(fn=cmd_retrieve)

    sh = sub.add_parser("show", help="print a genotype (file, shipped name, or run folder)")
    sh.add_argument("target")
    sh.add_argument("--plot", metavar="PNG", help="draw the cells to this PNG")
    sh.set_defaults(fn=cmd_show)

    ds = sub.add_parser("distance", help="architecture distance M between two genotypes (D-DARTS eqs. 4.6-4.8)")
    ds.add_argument("a", help="genotype YAML/JSON or a shipped genotype name")
    ds.add_argument("b")
    ds.add_argument("--norm", choices=("positions", "weights"), default="positions",
                    help="divide the weighted Hamming sum by 12 (thesis, default) or by the sum of op scores (authors' code)")
    ds.add_argument("--cells", action="store_true", help="also print the Hausdorff distance of every cell")
    ds.set_defaults(fn=cmd_distance)

    pr = sub.add_parser("prune", help="DARIO: prune a pretrained ViT without data, export the smaller model")
    pr.add_argument("--model", default="mae-vit-base", help="mae-vit-base, mobilevit-s, a timm ViT/DeiT/EVA name or package.module:factory")
    pr.add_argument("--weights", help="safetensors or state-dict file (else a random init is pruned, with a warning)")
    pr.add_argument("--pretrained", action="store_true", help="timm hub weights (needs the hub or its cache)")
    pr.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model constructor option, e.g. img_size=224 (repeatable)")
    pr.add_argument("--blocks", metavar="DOTTED.PATH", help="the ModuleList/Sequential of blocks (non-timm models)")
    pr.add_argument("--granularity", choices=("block", "head", "both"), default="block")
    pr.add_argument("--proxy", default="var", help="var (default), l0, l1, l2, synflow, synflow_norm, l0-var, l1-var, l0+l1")
    pr.add_argument("--threshold", type=float, default=0.65, help="prune gates with σ(α) below it (default 0.65)")
    pr.add_argument("--iters", type=int, default=500, help="gradient steps on α (default 500)")
    pr.add_argument("--warm-start", type=int, default=100, help="best of K random α (default 100)")
    pr.add_argument("--keep-blocks", metavar="0,1,...", help="skip the search: keep exactly these blocks")
    pr.add_argument("--bench-batch", type=int, default=8, help="batch of the throughput measurement")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", required=True, help="folder for the pruned model, α, plot and report")
    pr.add_argument("--no-progress", action="store_true")
    pr.set_defaults(fn=cmd_prune)

    bn = sub.add_parser("bench", add_help=False, help="the benchmark suite (python -m benchmarks; `dnas bench --help`)")
    bn.set_defaults(fn=cmd_bench)

    dp = sub.add_parser("deepen", help="derive an N-cell genotype from a searched n-cell one (D-DARTS Algorithm 2)")
    dp.add_argument("genotype", help="genotype YAML/JSON (darts or ddarts)")
    dp.add_argument("--cells", type=int, required=True, help="number of cells N of the new genotype")
    dp.add_argument("--out", help="write it here (default: print the YAML)")
    dp.set_defaults(fn=cmd_deepen)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.args = rest  # everything after `bench` goes to python -m benchmarks
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
