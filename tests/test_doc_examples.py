"""The manual's code runs as written: the plugin examples of docs/extending.md, callbacks.md and
loggers.md are written to files and used as a reader would (check_space/check_strategy, then the
CLI with --plugin); the API quickstart of the README and getting-started.md runs as printed (slow).
Each in its own process: a plugin registers names for the whole process."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def blocks(page: str, lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / page).read_text(), re.S)


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{cwd}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "2"}
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def dnas(*args: str) -> list[str]:
    return [sys.executable, "-m", "dnas", *args]


def history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def test_extending_space_and_strategy_examples_pass_their_checks_and_search(tmp_path):
    space, check_space, strategy, check_strategy = blocks("docs/extending.md")
    (tmp_path / "widths.py").write_text(space)
    (tmp_path / "alpha_l2.py").write_text(strategy)
    run([sys.executable, "-c", check_space + "\n" + check_strategy], tmp_path)
    # the page's commands, at one epoch on a small supernet
    run(dnas("--plugin", "widths", "search", "--space", "mlp-width", "--strategy", "darts", "--data", "digits",
             "--epochs", "1", "--out", "w", "--no-progress"), tmp_path)
    g = yaml.safe_load((tmp_path / "w" / "genotype.yaml").read_text())
    assert g["space"] == "mlp-width" and set(g["choices"]) == {"layer0", "layer1"}
    run(dnas("--plugin", "alpha_l2", "search", "--space", "darts", "--strategy", "alpha-l2", "--set", "strategy.l2=0.01",
             "--data", "digits", "--epochs", "1", "--set", "space.C=4", "--set", "space.layers=3", "--out", "l2",
             "--no-progress"), tmp_path)
    rec = history(tmp_path / "l2")[-1]
    assert rec["alpha_l2"] > 0  # the documented term reached the α loss and the history


def test_callback_example_stops_on_a_plateau_and_records_its_counter(tmp_path):
    (code,) = blocks("docs/callbacks.md")
    (tmp_path / "mymodule.py").write_text(code)
    # the page's config section; a min_delta no epoch beats, so the plateau starts at once
    section = blocks("docs/callbacks.md", "yaml")[-1].replace("patience: 3", "patience: 2, min_delta: 10.0")
    (tmp_path / "run.yaml").write_text("space: {name: mlp-depth}\nstrategy: {name: darts, epochs: 10}\n" + section)
    p = run(dnas("--plugin", "mymodule", "search", "--config", "run.yaml", "--data", "digits", "--out", "cb",
                 "--no-progress"), tmp_path)
    assert [r["plateau_epochs"] for r in history(tmp_path / "cb")] == [0, 1, 2]  # epoch 1 sets the best; then 2 waits
    assert "val_loss did not improve for 2 epochs" in p.stdout + p.stderr


def test_logger_example_prints_every_record(tmp_path):
    code = blocks("docs/loggers.md")[-1]
    (tmp_path / "printlog.py").write_text(code)
    p = run(dnas("--plugin", "printlog", "search", "--space", "mlp-depth", "--strategy", "darts", "--data", "digits",
                 "--epochs", "2", "--logger", "print", "--out", "lg", "--no-progress"), tmp_path)
    lines = [ln for ln in p.stdout.splitlines() if "'train_loss'" in ln]
    assert len(lines) == 2 and lines[0].startswith("1 ") and lines[1].startswith("2 ")


@pytest.mark.slow
@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_api_quickstart_runs_as_printed(tmp_path, page):
    code = blocks(page)[0]
    p = run([sys.executable, "-c", code], tmp_path, timeout=900)
    assert "space: darts" in p.stdout and (tmp_path / "runs" / "api" / "genotype.yaml").is_file()
    assert float(p.stdout.strip().splitlines()[-1].split()[0]) > 0.5  # digits after 5 epochs: well above chance


def doc_commands() -> list[tuple[str, str]]:
    """Every ``dnas ...`` line of a code block in the README and docs/ (continuations joined, comments cut)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                m = re.match(r"^\s*(?:PYTHONPATH=\S+ )?(dnas .*)$", line)
                if m:
                    found.append((str(page.relative_to(ROOT)), m.group(1).split(" #")[0].strip()))
    return found


def test_every_command_in_the_manual_parses_and_names_registered_spaces_and_strategies():
    import shlex

    from dnas.cli import build_parser
    from dnas.registry import SPACES, STRATEGIES

    checked = 0
    for page, cmd in doc_commands():
        argv = shlex.split(cmd)[1:]
        if any("..." in a or "…" in a or a.startswith("[") for a in argv) or "--plugin" in argv:
            continue  # a sketch (`dnas search ...`, `[--download]`) or a user's plugin
        try:
            args, rest = build_parser().parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `{cmd}` does not parse (dnas {argv[0]} --help)")
        assert not rest or args.command == "bench", f"{page}: `{cmd}`: unknown arguments {rest}"
        for flag, registry in (("space", SPACES), ("strategy", STRATEGIES)):
            value = getattr(args, flag, None)
            assert value is None or value in registry.names(), f"{page}: `{cmd}`: no {flag} named {value!r}"
        checked += 1
    assert checked >= 50  # the manual is full of commands: an extraction that finds few has broken


def test_own_data_example_searches_and_trains_as_printed(tmp_path):
    code = next(b for b in blocks("docs/getting-started.md") if "register_dataset" in b)
    (tmp_path / "my_data.py").write_text(code)
    commands = [line for line in blocks("docs/getting-started.md", "bash")[-1].splitlines() if "--plugin my_data" in line]
    assert len(commands) == 2
    search, train = (line.split("dnas ", 1)[1].split() for line in commands)
    run(dnas(*[a if a != "2" else "1" for a in search], "--set", "space.C=4", "--set", "space.layers=3", "--no-progress"), tmp_path)
    assert yaml.safe_load((tmp_path / "runs" / "mine" / "config.yaml").read_text())["data"]["name"] == "my-data"
    run(dnas(*[a if a != "10" else "1" for a in train], "--set", "space.C=4", "--set", "space.layers=3", "--out", "t"), tmp_path)
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["task"]["input_shape"] == [1, 16, 16] and metrics["task"]["num_classes"] == 3
