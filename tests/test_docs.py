"""The documentation site builds with `mkdocs build --strict` (broken links, missing pages and bad
docstring references fail it). Skipped when the docs extra is not installed."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(nav):
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_pages(value)
        else:
            yield value


def test_mkdocs_build_strict(tmp_path):
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): pip install -e '.[docs]'")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    absent = [p for p in _nav_pages(nav) if not (ROOT / "docs" / p).is_file()]
    assert not absent, f"pages listed in mkdocs.yml's nav but not in docs/: {absent}"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert "dnas.api.search" in (tmp_path / "site" / "api" / "index.html").read_text()  # docstrings rendered
