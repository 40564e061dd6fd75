"""Figures in the documentation come from results files, so a changed result cannot leave a stale claim.

A figure from a run is written with a marker right after it that names the results file and the
key, e.g. ``**98.61 %** <!-- result: experiments/results/demo.json#searched.mean -->``. The number
must equal the file's value rounded to the decimals written. List items are addressed by index
(``difference.ci95.0``). Every results file carries the date, machine, commit and command of its run.
"""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*result:\s*(?P<file>[^#\s]+)#(?P<key>[\w.\-]+)\s*-->")
# the number just before a marker: optional sign, digits, decimals, then a unit and/or bold marks
BEFORE = re.compile(r"(?P<num>[-+−]?\d+(?:\.\d+)?)\s*(?:%|pts|s|min)?\s*\**\s*$")
NUMBER = re.compile(r"(?<![\w.#-])[-+−]?\d+\.\d+\s*(?:%|pts)")
DEMO_LINE = re.compile(r"compare_digits|scripts/demo|results/demo\.json")


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "experiments" / "README.md"]
    pages += sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [p for p in pages if p.is_file()]


def _lookup(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def marked_figures(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line number, results file, key, the number written before the marker or None)."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        for m in MARKER.finditer(line):
            before = BEFORE.search(line[: m.start()])
            out.append((n, m["file"], m["key"], before["num"].replace("−", "-") if before else None))
    return out


def check_page(path: Path) -> list[str]:
    """Every problem with the marked figures of one Markdown page, as readable lines."""
    problems = []
    files: dict[str, dict] = {}
    for line, file, key, written in marked_figures(path.read_text()):
        where = f"{path.relative_to(ROOT)}:{line}"
        if written is None:
            problems.append(f"{where}: a result marker for {file}#{key} follows no number")
            continue
        if file not in files:
            p = ROOT / file
            if not p.is_file():
                problems.append(f"{where}: results file {file} does not exist")
                continue
            files[file] = json.loads(p.read_text())
        try:
            value = float(_lookup(files[file], key))
        except (KeyError, IndexError, ValueError, TypeError):
            problems.append(f"{where}: {file} has no number at key {key}")
            continue
        decimals = len(written.split(".")[1]) if "." in written else 0
        if abs(value - float(written)) > 0.5 * 10**-decimals + 1e-9:
            problems.append(f"{where}: the page says {written}, {file}#{key} is {value:.{decimals}f}")
    return problems


def unmarked_demo_figures(path: Path) -> list[str]:
    """Lines about the demo with a decimal figure (%, pts) that no result marker backs."""
    problems = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not DEMO_LINE.search(line):
            continue
        for m in NUMBER.finditer(line):
            tail = line[m.end():]
            if not re.match(r"\s*\**\s*<!--\s*result:", tail):
                problems.append(f"{path.relative_to(ROOT)}:{n}: '{m.group(0).strip()}' is a demo figure without a result marker")
    return problems


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_marked_figures_equal_their_results_files(page):
    assert check_page(page) == []


def test_demo_figures_are_marked():
    pages = [ROOT / "experiments" / "README.md", ROOT / "docs" / "compare.md"]
    for page in pages:  # the demo's verdict is on both pages, backed by its results file
        keys = {key for _, file, key, _ in marked_figures(page.read_text()) if file == "experiments/results/demo.json"}
        assert {"difference.mean", "difference.welch_p", "searched.mean", "random.mean"} <= keys, page
    problems = [p for page in pages if page.is_file() for p in unmarked_demo_figures(page)]
    assert problems == []


def test_results_files_say_where_they_come_from():
    files = sorted((ROOT / "experiments" / "results").glob("*.json"))
    assert files, "experiments/results/ holds no results file"
    for f in files:
        data = json.loads(f.read_text())
        missing = [k for k in ("date", "machine", "commit", "command") if not data.get(k)]
        assert not missing, f"{f.name} lacks {missing}"


def test_the_checker_catches_a_stale_figure(tmp_path, monkeypatch):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"a": {"mean": 98.6111}, "ci": [-0.51, 1.26]}))
    page = tmp_path / "page.md"
    page.write_text(
        f"searched **98.61 %** <!-- result: {results.name}#a.mean --> and CI [−0.51 <!-- result: {results.name}#ci.0 -->, 1.3 "
        f"<!-- result: {results.name}#ci.1 -->]\nstale: 99.72 % <!-- result: {results.name}#a.mean -->\n"
        f"none: <!-- result: {results.name}#a.mean -->\nmissing: 1.0 <!-- result: {results.name}#a.std -->\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = check_page(page)
    assert len(problems) == 3
    assert "says 99.72" in problems[0] and "follows no number" in problems[1] and "no number at key a.std" in problems[2]
    demo = tmp_path / "demo.md"
    demo.write_text("`scripts/demo`: searched 98.61 % <!-- result: r.json#a.mean --> vs random 97.50 %\n")
    flagged = unmarked_demo_figures(demo)
    assert len(flagged) == 1 and "'97.50 %'" in flagged[0]
