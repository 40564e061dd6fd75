"""``dnas bench``: the benchmark suite."""
from __future__ import annotations

import sys

from dnas.errors import DnasError


def add(sub) -> None:
    bn = sub.add_parser("bench", add_help=False, help="the benchmark suite (python -m benchmarks; `dnas bench --help`)")
    bn.set_defaults(fn=run)


def run(args) -> int:
    """``python -m benchmarks`` of the source checkout this dnas is installed from (editable)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise DnasError(f"no benchmarks/ next to {root / 'dnas'}: the suite lives in the source checkout; install it with `pip install -e .`")
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.args], cwd=root)
