"""``dnas list``: the registered spaces, strategies, parsers and shipped genotypes; ``--pairs``: which
space × strategy pairs can search together."""
from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("list", help="registered spaces, strategies, parsers, shipped genotypes and datasets")
    p.add_argument("--pairs", action="store_true",
                   help="the space × strategy matrix: ✓ where the pair searches, else the capability the space lacks")
    p.set_defaults(fn=run)


def pair_matrix() -> tuple[list[str], list[str], dict[tuple[str, str], list[str]]]:
    """(spaces, strategies, {(space, strategy): missing capabilities}) for the registered spaces and
    strategies in their default configurations."""
    from dnas.registry import STRATEGIES, create_strategy
    from dnas.strategy import default_capabilities

    caps = default_capabilities()
    spaces, strategies = sorted(caps), STRATEGIES.names()
    needs = {s: create_strategy(s).requirements() for s in strategies}
    return spaces, strategies, {(sp, st): sorted(needs[st] - caps[sp][0]) for sp in spaces for st in strategies}


def format_pairs() -> str:
    """The pair matrix as text: space rows × strategy columns, ✓ or the missing capabilities."""
    from dnas.strategy import default_capabilities

    offers_with = {sp: opts for sp, (_, opts) in default_capabilities().items()}
    spaces, strategies, missing = pair_matrix()
    cells = {k: "✓" if not v else ", ".join(v) for k, v in missing.items()}
    first = max(len("space \\ strategy"), *(len(s) for s in spaces))
    widths = [max(len(st), *(len(cells[sp, st]) for sp in spaces)) for st in strategies]
    lines = ["  ".join(["space \\ strategy".ljust(first), *(st.ljust(w) for st, w in zip(strategies, widths))]).rstrip()]
    for sp in spaces:
        lines.append("  ".join([sp.ljust(first), *(cells[sp, st].ljust(w) for st, w in zip(strategies, widths))]).rstrip())
    notes = sorted({f"{sp} offers {cap} with {offers_with[sp][cap]}"
                    for (sp, _), caps in missing.items() for cap in caps if cap in offers_with[sp]})
    if notes:
        lines += ["", *(f"note: {n}" for n in notes)]
    return "\n".join(lines)


def run(args) -> int:
    if args.pairs:
        print(format_pairs())
        return 0
    from dnas.genotypes import builtin_genotypes
    from dnas.registry import list_parsers, list_spaces, list_strategies

    print("spaces:     " + ", ".join(list_spaces()))
    print("strategies: " + ", ".join(list_strategies()))
    print("parsers:    " + ", ".join(list_parsers()))
    print("genotypes:  " + ", ".join(builtin_genotypes()))
    from dnas.engine.data import BUILTIN_DATASETS, DATASETS

    print("datasets:   " + ", ".join([f"{n}PATH" if n.endswith(":") else n for n in BUILTIN_DATASETS] + DATASETS.names()))
    return 0
