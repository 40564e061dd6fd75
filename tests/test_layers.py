"""The package shows its layers: nouns <- engine <- spaces/strategies <- evaluate <- api <- tools/testing <- cli.

Each dnas module is imported in an interpreter that has imported no dnas module yet (a fresh
process forked from one that preloaded only the third-party libraries, so a hundred imports take
seconds, not minutes), and ``sys.modules`` is checked: nothing is pulled in from a layer above.
A second test reads every ``import`` statement, those inside functions too (a lazy import is
still a dependency), except the ones under ``if TYPE_CHECKING:``.
"""
from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dnas

ROOT = Path(dnas.__file__).resolve().parent.parent
NOUNS = ("errors", "registry", "config", "_io", "genotype", "darts_format", "space", "supernet", "strategy", "parsers", "genotypes")
UPPER = {
    "nouns": ("engine", "spaces", "strategies", "evaluate", "tools", "testing", "api", "cli"),
    "engine": ("spaces", "strategies", "evaluate", "tools", "testing", "api", "cli"),
    "spaces": ("evaluate", "tools", "testing", "api", "cli"),
    "strategies": ("evaluate", "tools", "testing", "api", "cli"),
    "evaluate": ("tools", "testing", "api", "cli"),
    "api": ("tools", "testing", "cli"),
    "tools": ("cli",),  # workflows over the api: prune = search + export, compare = searches + trainings
    "testing": ("cli",),
}
#: the layers in order; a module may import its own layer and those before it
RANK = {"nouns": 0, "engine": 1, "spaces": 2, "strategies": 2, "evaluate": 3, "api": 4, "tools": 5, "testing": 5, "cli": 6}

#: runs in a child interpreter: preload third-party libraries, then fork once per module
PROBE = r"""
import importlib, json, os, sys
for lib in ("torch", "numpy", "yaml", "optuna", "rich", "rich.progress", "timm", "torchvision", "safetensors"):
    try:
        importlib.import_module(lib)
    except Exception:
        pass
assert not [m for m in sys.modules if m == "dnas" or m.startswith("dnas.")], "dnas was imported before the probe"
out = {}
for name in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = sorted(m for m in sys.modules if m == "dnas" or m.startswith("dnas."))
        except BaseException as e:
            msg = f"import failed: {type(e).__name__}: {e}"
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    out[name] = json.loads(b"".join(chunks))
print(json.dumps(out))
"""


def _modules() -> list[str]:
    names = ["dnas"]
    for m in pkgutil.walk_packages(dnas.__path__, "dnas."):
        if m.name == "dnas.__main__":
            continue  # running it is the CLI
        names.append(m.name)
    return names


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if module == "dnas" or parts[1] in NOUNS:
        return "nouns"
    return parts[1] if parts[1] in UPPER else None


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str] | str]:
    if not hasattr(__import__("os"), "fork"):
        pytest.skip("needs os.fork")
    names = [m for m in _modules() if _layer(m) is not None]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names)], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_layer_imports_only_what_lies_below_it(imported):
    problems = []
    for module, pulled in imported.items():
        if isinstance(pulled, str):
            problems.append(f"{module}: {pulled}")
            continue
        layer = _layer(module)
        for bad in UPPER[layer]:
            hit = [m for m in pulled if m == f"dnas.{bad}" or m.startswith(f"dnas.{bad}.")]
            if hit:
                problems.append(f"{module} ({layer}) pulls in {hit[0]}")
    assert not problems, "\n".join(problems)


def test_the_probe_sees_what_a_module_imports(imported):
    """The check could fail: a module of the engine is seen with the nouns it imports."""
    assert "dnas.engine.loop" in imported["dnas.engine.loop"] and "dnas.strategy" in imported["dnas.engine.loop"]
    assert "dnas.api" in imported and "dnas.engine.run" in imported["dnas.api"]


def test_no_module_shares_its_name_with_an_exported_function():
    top = {m.name for m in pkgutil.iter_modules(dnas.__path__)}
    exported = {n for n in dnas.__all__ if callable(getattr(dnas, n)) and not isinstance(getattr(dnas, n), type)}
    assert "search" in exported and "train" in exported
    clash = sorted(top & exported)
    assert not clash, f"dnas.{clash[0]} is both a module and a function exported by dnas"


def _static_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dnas module) of every import in ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            typing_only |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "dnas":
            out += [(node.lineno, f"dnas.{a.name}") for a in node.names] if node.module == "dnas" else [(node.lineno, node.module)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dnas"]
    return out


def test_no_import_reaches_upward_not_even_inside_a_function():
    problems, seen = [], 0
    for path in sorted((ROOT / "dnas").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module in ("dnas", "dnas.__main__") or module.startswith("dnas.cli"):
            continue
        mine = _layer(module) or module.split(".")[1]
        for line, target in _static_imports(path):
            seen += 1
            theirs = _layer(target) if target != "dnas" else "nouns"
            if theirs is not None and RANK.get(theirs, 0) > RANK[mine]:
                problems.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target} ({theirs})")
    assert seen > 100  # the check reads the package's imports
    assert not problems, "\n".join(problems)
