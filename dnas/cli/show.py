"""``dnas show``: a genotype or run folder as text and pictures."""
from __future__ import annotations


def add(sub) -> None:
    sh = sub.add_parser("show", help="print a genotype (file, shipped name, or run folder)")
    sh.add_argument("target")
    sh.add_argument("--plot", metavar="PNG", help="draw the cells to this PNG")
    sh.set_defaults(fn=run)


def run(args) -> int:
    from dnas.tools.show import show

    print(show(args.target, plot=args.plot))
    return 0
