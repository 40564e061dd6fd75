"""``python -m benchmarks [NAME ...]`` (or ``dnas bench``): one JSON object per measurement on stdout.

The configs default to the CPU-sized ones on the CPU (the whole suite in minutes on 2 cores) and to
the paper-sized ones on a GPU; ``--quick`` / ``--full`` choose explicitly.
"""
import argparse
import importlib
import inspect
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

import benchmarks


def _opt_in(name: str) -> bool:
    """A benchmark with ``OPT_IN = True`` runs on the CPU only when named (e.g. ``compile``)."""
    return bool(getattr(importlib.import_module(f"benchmarks.bench_{name}"), "OPT_IN", False))


def _machine(device: str) -> str:
    """A short description of where the suite runs: host, CPU cores / GPU name, torch version."""
    import os

    import torch

    where = f"{platform.node() or 'machine'}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(torch.device(device))}"
    return f"{where}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("names", nargs="*", help="bench_<name> modules to run (default: all; on the CPU all but compile)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small configs, few repeats (default on the CPU)")
    size.add_argument("--full", action="store_true", help="the papers' configs (default on a GPU)")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/<machine>-<device>[-full].json")
    p.add_argument("--out", metavar="FILE", help="with --save: write this JSON file instead")
    p.add_argument("--cases", metavar="A,B", help="only these cases, where the benchmark takes a case list (darts: the first is the baseline)")
    p.add_argument("--dry-run", action="store_true", help="print what would run (one JSON object per benchmark) and stop")
    args = p.parse_args(argv)
    mods = sorted(m.name[6:] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    unknown = [n for n in args.names if n not in mods]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(mods)}")
    quick = args.quick or (not args.full and not args.device.startswith("cuda"))
    names = args.names or [n for n in mods if args.device.startswith("cuda") or not _opt_in(n)]
    if args.dry_run:  # no torch work: argument parsing and the plan, e.g. for benchmarks/gpu.sh --dry-run
        for name in names:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
            cfg = getattr(mod, "QUICK" if quick else "FULL", None)
            print(json.dumps({"benchmark": name, "device": args.device, "quick": quick, "config": cfg, "dry_run": True}), flush=True)
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: no CUDA device is visible here (torch.cuda.is_available() is False)")
    results, t0 = [], time.perf_counter()
    machine = _machine(args.device)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name in names:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t = time.perf_counter()
        kw = {"cases": tuple(args.cases.split(","))} if args.cases and "cases" in inspect.signature(mod.run).parameters else {}
        for rec in mod.run(device=args.device, quick=quick, **kw):
            rec = {"benchmark": rec.pop("benchmark", name), **rec, "quick": quick, "machine": machine, "when": when}
            print(json.dumps(rec), flush=True)
            results.append(rec)
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print(f"suite: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.save:
        size = "" if quick else "-full"
        out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"{platform.node() or 'machine'}-{args.device.replace(':', '')}{size}.json"
        ran = {r["benchmark"] for r in results}  # keep the other benchmarks' last results
        old = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r.get("benchmark") not in ran]
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(old + results, indent=1))
        print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
