"""``dnas``: a thin command line over the Python API, one module per subcommand.

Each module ``dnas.cli.<command>`` has ``add(subparsers)`` and a ``run(args)`` it sets as ``fn``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from dnas.errors import DnasError

#: subcommand modules, in the order ``dnas --help`` lists them
COMMANDS = ("list", "search", "train", "compare", "retrieve", "show", "distance", "prune", "prune-correlation", "bench", "deepen", "log")


def data_flags(args, section: dict | None = None) -> dict:
    """The data section from the data flags a subcommand has (--data-dir, --download, --batch-size,
    --target) over ``section``; flags a subcommand lacks are skipped."""
    out = dict(section or {})
    for flag, key in (("data_dir", "data_dir"), ("batch_size", "batch_size"), ("target", "target")):
        if getattr(args, flag, None) is not None:  # --batch-size 0 reaches the config's check, not the default
            out[key] = getattr(args, flag)
    if getattr(args, "download", False):
        out["download"] = True
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnas", description="Differentiable neural architecture search.")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first (registers user spaces/strategies)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"dnas.cli.{name.replace('-', '_')}").add(sub)  # prune-correlation -> prune_correlation
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

        with warnings.catch_warnings():  # restores showwarning on exit
            warnings.showwarning = _show_warning
            for module in args.plugin:
                load_plugin(module)
            return args.fn(args)
    except DnasError as e:
        print(f"dnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dnas: interrupted; the last checkpoint is kept (resume with --resume RUN_DIR)", file=sys.stderr)
        return 130


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """dnas' own warnings as one line for the user ("dnas: warning: ..."); others (torch, timm) as Python prints them."""
    if os.path.abspath(filename).startswith(_PACKAGE + os.sep) or category.__module__.startswith("dnas"):
        print(f"dnas: warning: {message}", file=sys.stderr if file is None else file)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


if __name__ == "__main__":
    sys.exit(main())
