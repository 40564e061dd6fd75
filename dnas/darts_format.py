"""Cell genotypes written the way the DARTS code writes them, read into dnas genotypes.

The DARTS code (Liu et al., 2019, ``cnn/genotypes.py``) and its forks print and store a cell as::

    Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

two ``(op, input)`` pairs per intermediate node, node after node; input 0 and 1 are the two cell
inputs, input 2 + k is node k. FairDARTS' sparse cells list ``(op, to, input)`` triples instead, any
number per node, ``to`` = 2 + k for node k. That text is parsed with :mod:`ast`, never executed: only lists and
tuples of literals and ``range(a, b)`` are accepted. It becomes a genotype of the ``darts`` space
(with ``ops: darts-o``, D-DARTS' S_o, if an op is only there) with one decision per edge,
``normal.node{k}.edge{input}``, listing the ops kept on it.
"""
from __future__ import annotations

import ast
import re
from typing import Any

from dnas.errors import DnasError
from dnas.genotype import Genotype

FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_ASSIGNED = re.compile(r"([A-Za-z_][A-Za-z_0-9]*)\s*=\s*$")


def looks_like_darts(text: str) -> bool:
    """Whether ``text`` holds a ``Genotype(...)`` call of the DARTS code's form."""
    return "Genotype(" in text


def find_genotypes(text: str) -> list[tuple[str | None, str]]:
    """Every ``Genotype(...)`` call in ``text`` (a Python file, a training log, a pasted line) as
    ``(name, call text)``; ``name`` is the variable it is assigned to (``DARTS_V2 = Genotype(...)``)."""
    found = []
    for m in re.finditer(r"\bGenotype\s*\(", text):
        depth, end = 0, None
        for i in range(m.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            continue  # unbalanced: a truncated log line
        name = _ASSIGNED.search(text[: m.start()].rsplit("\n", 1)[-1])
        found.append((name.group(1) if name else None, text[m.start():end]))
    return found


def _literal(node: ast.AST, what: str, source: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("range", "list") and not node.keywords:
        args = [_literal(a, what, source) for a in node.args]
        if node.func.id == "list" and len(args) == 1:
            return list(args[0])
        if node.func.id == "range" and all(isinstance(a, int) for a in args) and 1 <= len(args) <= 3:
            return list(range(*args))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise DnasError(f"{source}: {what} is not a literal (lists of ('op', input) pairs and range(a, b) only)") from None


def parse_darts_call(call: str, source: str) -> dict[str, Any]:
    """``{"normal": [(op, input), ...], "normal_concat": [...], "reduce": ..., "reduce_concat": ...}``."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError as e:
        raise DnasError(f"{source}: not a readable Genotype(...) ({e.msg})") from None
    if not isinstance(node, ast.Call):
        raise DnasError(f"{source}: expected Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)")
    if len(node.args) > len(FIELDS):
        raise DnasError(f"{source}: Genotype(...) takes at most {len(FIELDS)} fields ({', '.join(FIELDS)})")
    values = {f: _literal(a, f, source) for f, a in zip(FIELDS, node.args)}
    for kw in node.keywords:
        if kw.arg not in FIELDS:
            raise DnasError(f"{source}: unknown Genotype field {kw.arg!r}; the DARTS fields are {', '.join(FIELDS)}")
        values[kw.arg] = _literal(kw.value, kw.arg, source)
    missing = [f for f in FIELDS if f not in values]
    if missing:
        raise DnasError(f"{source}: Genotype(...) lacks {', '.join(missing)}")
    return values


def _edges(entries: Any, key: str, source: str) -> list[tuple[tuple, tuple[str, int, int]]]:
    """(entry as written, (op, node, input)) for DARTS pairs (two per node, in order) or FairDARTS triples."""
    ok = isinstance(entries, (list, tuple)) and all(
        isinstance(e, (list, tuple)) and len(e) in (2, 3) and isinstance(e[0], str) and all(isinstance(v, int) for v in e[1:])
        for e in entries)
    if not ok or len({len(e) for e in entries}) > 1:
        raise DnasError(f"{source}: {key} must list ('op', input) pairs, e.g. [('sep_conv_3x3', 0), ...], "
                        f"or FairDARTS' ('op', to, input) triples")
    if entries and len(entries[0]) == 3:
        return [(tuple(e), (e[0], e[1] - 2, e[2])) for e in entries]
    return [(tuple(e), (e[0], i // 2, e[1])) for i, e in enumerate(entries)]


def to_genotype(values: dict[str, Any], source: str) -> Genotype:
    """The dnas ``darts`` genotype of a parsed DARTS ``Genotype``."""
    from dnas.registry import create_space

    op_sets = {name: set(create_space("darts", ops=name).op_names) for name in ("darts", "darts-o")}

    choices: dict[str, list[str]] = {}
    used: set[str] = set()
    edges = {key: _edges(values[key], key, source) for key in ("normal", "reduce")}
    if all(len(e[0]) == 3 for e in edges["normal"] + edges["reduce"]):  # FairDARTS: nodes from the concat
        concat = values["normal_concat"]
        nodes = len(concat) if isinstance(concat, (list, tuple)) else 0
    else:
        for key, e in edges.items():
            if not e or len(e) % 2:
                raise DnasError(f"{source}: {key} has {len(e)} pairs; a DARTS cell has two per node")
        nodes = len(edges["normal"]) // 2
        if len(edges["reduce"]) // 2 != nodes:
            raise DnasError(f"{source}: normal has {nodes} nodes and reduce {len(edges['reduce']) // 2}; both cells need the same number")
    for key in ("normal", "reduce"):
        concat = values[f"{key}_concat"]
        if not isinstance(concat, (list, tuple)) or list(concat) != list(range(2, 2 + nodes)):
            raise DnasError(f"{source}: {key}_concat is {concat!r}, but a dnas cell outputs every node "
                            f"({list(range(2, 2 + nodes))}); this genotype is not in the DARTS cell space")
        for k in range(nodes):
            for j in range(2 + k):
                choices.setdefault(f"{key}.node{k}.edge{j}", [])
        for entry, (op, k, j) in edges[key]:
            if not 0 <= k < nodes or not 0 <= j < 2 + k:
                raise DnasError(f"{source}: {key} entry {entry} feeds node {k} from input {j}; a cell of {nodes} nodes "
                                f"has nodes 0 to {nodes - 1}, and node k takes inputs 0 to k + 1")
            edge = choices[f"{key}.node{k}.edge{j}"]
            if op not in edge:
                edge.append(op)
            used.add(op)
    ops = next((name for name, names in op_sets.items() if used <= names), None)
    if ops is None:
        unknown = sorted(used - op_sets["darts-o"])
        raise DnasError(f"{source}: op(s) {', '.join(unknown)} are not in the DARTS op sets; dnas has "
                        f"{', '.join(sorted(op_sets['darts-o'] - {'none'}))}")
    return Genotype(space="darts", choices=choices, config={"nodes": nodes, "ops": ops})


def read_darts_text(text: str, source: str, select: str | None = None) -> Genotype:
    """The genotype in ``text`` (see module doc); ``select`` picks one of several: the variable
    name, a 1-based position, or ``last`` (a search log prints one per epoch)."""
    found = find_genotypes(text)
    if not found:
        raise DnasError(f"{source}: no complete Genotype(...) in it")
    counts = {n: sum(m == n for m, _ in found) for n, _ in found}
    names = [n if counts[n] == 1 else None for n, _ in found]  # a log repeats "genotype = ...": by position then
    if select is None:
        if len(found) > 1:
            label = ", ".join(n or f"#{i + 1}" for i, n in enumerate(names[:8])) + (", ..." if len(found) > 8 else "")
            named = f"{source}:NAME, " if any(names) else ""
            raise DnasError(f"{source}: holds {len(found)} genotypes ({label}); pick one as {named}{source}:N (1-based) "
                            f"or {source}:last")
        pick = found[0]
    elif select == "last":
        pick = found[-1]
    elif select.isdigit() and 1 <= int(select) <= len(found):
        pick = found[int(select) - 1]
    elif select in names:
        pick = found[names.index(select)]
    else:
        known = ", ".join(n for n in names if n) or "none named"
        raise DnasError(f"{source}: no genotype {select!r} (named: {known}; or a position 1 to {len(found)}, or last)")
    label = f"{source}:{select}" if select else source
    return to_genotype(parse_darts_call(pick[1], label), label)
