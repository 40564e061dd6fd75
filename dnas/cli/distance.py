"""``dnas distance``: the D-DARTS architecture distance M between two genotypes."""
from __future__ import annotations


def add(sub) -> None:
    ds = sub.add_parser("distance", help="architecture distance M between two genotypes (D-DARTS eqs. 4.6-4.8)")
    ds.add_argument("a", help="genotype YAML/JSON or a shipped genotype name")
    ds.add_argument("b")
    ds.add_argument("--norm", choices=("positions", "weights"), default="positions",
                    help="divide the weighted Hamming sum by 12 (thesis, default) or by the sum of op scores (authors' code)")
    ds.add_argument("--cells", action="store_true", help="also print the Hausdorff distance of every cell")
    ds.set_defaults(fn=run)


def run(args) -> int:
    from dnas.engine.distance import cell_distances
    from dnas.genotype import load_genotype

    d = cell_distances(load_genotype(args.a), load_genotype(args.b), norm=args.norm)
    print(f"{sum(d) / len(d):.6f}")
    if args.cells:
        print("\n".join(f"cell {i}: {x:.6f}" for i, x in enumerate(d)))
    return 0
