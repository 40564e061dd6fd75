"""``dnas list``: the registered spaces, strategies, parsers and shipped genotypes."""
from __future__ import annotations


def add(sub) -> None:
    sub.add_parser("list", help="registered spaces, strategies, parsers and shipped genotypes").set_defaults(fn=run)


def run(args) -> int:
    from dnas.genotypes import builtin_genotypes
    from dnas.registry import list_parsers, list_spaces, list_strategies

    print("spaces:     " + ", ".join(list_spaces()))
    print("strategies: " + ", ".join(list_strategies()))
    print("parsers:    " + ", ".join(list_parsers()))
    print("genotypes:  " + ", ".join(builtin_genotypes()))
    return 0
