"""``dnas deepen``: derive an N-cell genotype from a searched n-cell one."""
from __future__ import annotations


def add(sub) -> None:
    dp = sub.add_parser("deepen", help="derive an N-cell genotype from a searched n-cell one (D-DARTS Algorithm 2)")
    dp.add_argument("genotype", help="genotype YAML/JSON (darts or ddarts)")
    dp.add_argument("--cells", type=int, required=True, help="number of cells N of the new genotype")
    dp.add_argument("--mapping", choices=("algorithm", "per_third"), default="algorithm",
                    help="algorithm: Algorithm 2 as written (absolute position i mod k); per_third: the cycle restarts in each third")
    dp.add_argument("--out", help="write it here (default: print the YAML)")
    dp.set_defaults(fn=run)


def run(args) -> int:
    from pathlib import Path

    from dnas.errors import DnasError
    from dnas.genotype import load_genotype
    from dnas.tools.deepen import deepen

    if args.out and Path(args.out).exists():  # never written over: it may be the searched genotype itself
        raise DnasError(f"--out '{args.out}' exists; choose a new file name")
    g = deepen(load_genotype(args.genotype), args.cells, args.mapping)
    if args.out:
        print(g.save(args.out))
    else:
        print(g.to_yaml(), end="")
    return 0
