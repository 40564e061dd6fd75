import argparse
import importlib
import json
import pkgutil
import platform
import sys
from pathlib import Path

import benchmarks


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    p.add_argument("names", nargs="*", help="bench_<name> modules to run (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smaller configs, fewer repeats")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/<machine>.json")
    args = p.parse_args()
    mods = sorted(m.name[6:] for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    results = []
    for name in args.names or mods:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        for rec in mod.run(device=args.device, quick=args.quick):
            rec = {"benchmark": rec.pop("benchmark", name), **rec}
            print(json.dumps(rec), flush=True)
            results.append(rec)
    if args.save:
        out = Path(__file__).parent / "results" / f"{platform.node() or 'machine'}-{args.device}.json"
        ran = {r["benchmark"] for r in results}  # keep the other benchmarks' last results
        old = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r.get("benchmark") not in ran]
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(old + results, indent=1))
        print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
