"""``dnas bench``: the benchmark suite."""
from __future__ import annotations

import sys

from dnas.errors import DnasError


def add(sub) -> None:
    bn = sub.add_parser("bench", add_help=False, help="the benchmark suite (python -m benchmarks; `dnas bench --help`)")
    bn.set_defaults(fn=run)


def run(args) -> int:
    """Run ``python -m benchmarks`` of the source checkout this dnas is installed from (editable).

    Raises:
        DnasError: dnas is installed from a wheel (the suite is not in it); the line says how to run
            it from a checkout.
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise DnasError(
            "the benchmark suite ships with the source, not the installed package: in a checkout of dnas run "
            "`python -m benchmarks` (or `pip install -e .` there, then `dnas bench`)"
        )
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.args], cwd=root)
