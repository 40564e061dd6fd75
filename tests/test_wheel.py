"""The wheel: what it holds, and `dnas bench` from an installed (non-editable) package."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds and installs a wheel (~20-40 s on 2 cores)
def test_dnas_bench_from_a_wheel_says_how_to_run_the_suite(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel needs setuptools in this environment")
    src = tmp_path / "src"  # build from a copy: the checkout gets no build/ or egg-info
    shutil.copytree(ROOT / "dnas", src / "dnas", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                   check=True, capture_output=True)
    (whl,) = wheels.glob("dnas-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert any(n.startswith("dnas/genotypes/") and n.endswith(".yaml") for n in names)
    assert not any(n.startswith(("benchmarks/", "tests/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(whl)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    code = "import sys, dnas; from dnas.cli import main; print(dnas.__file__); sys.exit(main(['bench']))"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.stdout.strip().startswith(str(target))  # the installed copy, not the checkout
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dnas: error:") and "python -m benchmarks" in err[0], p.stderr
