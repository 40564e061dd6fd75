"""End to end: search -> show -> train through the CLI, resume, run-folder safety."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import dnas
from dnas import DnasError
from dnas.cli import main
from dnas._io import read_checked, safe_torch_load
from dnas.engine.run import Run

TINY = ["--space", "darts", "--strategy", "darts", "--data", "synthetic", "--set", "space.C=4", "--set", "space.layers=3",
        "--set", "space.nodes=2", "--set", "data.batch_size=32", "--no-progress"]


def _search(out, epochs=2, extra=()):
    return main(["search", *TINY, "--epochs", str(epochs), "--out", str(out), *extra])


def test_cli_search_show_train(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _search(run) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    expected = {"name": "darts", "C": 4, "layers": 3, "nodes": 2, "stem_multiplier": 3, "ops": "darts",
                "individual": False, "auxiliary": True, "reductions": None, "share": None}
    assert expected.items() <= cfg["space"].items()  # every default resolved (later options add keys)
    assert cfg["strategy"]["name"] == "darts" and cfg["strategy"]["epochs"] == 2 and cfg["strategy"]["w_lr"] == 0.025
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    for h in hist:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "alphas", "genotype", "w_lr"} <= set(h)
        assert len(h["alphas"]["normal.node1.edge2"]) == 8 and abs(sum(h["alphas"]["normal.node1.edge2"]) - 1) < 1e-4
    assert hist[1]["w_lr"] < hist[0]["w_lr"]  # cosine schedule stepped per epoch
    g = dnas.load_genotype(run / "genotype.yaml")
    assert g.choices == {k: tuple(v) for k, v in hist[-1]["genotype"].items()}
    for node in range(2):  # the darts parser keeps exactly 2 edges per node
        assert sum(bool(g.choices[f"normal.node{node}.edge{j}"]) for j in range(2 + node)) == 2
    alphas = safe_torch_load(run / "alphas.pt")
    assert set(alphas) == {"normal", "reduce"} and alphas["normal"].shape == (5, 8)
    assert not (run / "run.lock").exists()

    capsys.readouterr()
    png = tmp_path / "cells.png"
    assert main(["show", str(run), "--plot", str(png)]) == 0
    shown = capsys.readouterr().out
    assert "normal:" in shown and "reduce:" in shown and "run: 2 epochs" in shown
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["show", str(run), "--plot", str(tmp_path / "noext")]) == 0  # the file it names is the file written
    assert f"plot written to {tmp_path / 'noext.png'}" in capsys.readouterr().out and (tmp_path / "noext.png").is_file()
    assert main(["search", "--config", str(tmp_path)]) == 2 and "is a folder; give a YAML file" in capsys.readouterr().err

    out = tmp_path / "trained"
    assert main(["train", "--genotype", str(run / "genotype.yaml"), "--data", "synthetic", "--epochs", "2",
                 "--set", "train.batch_size=32", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["params"] > 0 and len(metrics["history"]) == 2
    from safetensors.torch import load_file

    state = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("cells.0.") for k in state)
    assert dnas.load_genotype(out / "genotype.yaml") == g

    # a second training never overwrites the first: --out refuses, the default name moves on
    before = (out / "model.safetensors").read_bytes()
    again = ["train", "--genotype", str(run / "genotype.yaml"), "--data", "synthetic", "--epochs", "1", "--set", "train.batch_size=32"]
    assert main(again + ["--out", str(out)]) == 2
    assert main(again + ["--out", str(run)]) == 2  # nor into the search's folder (its config.yaml keeps --resume working)
    err = capsys.readouterr().err
    assert "'" + str(out) + "' already holds the results of a run (metrics.json), which this training would overwrite" in err
    assert "'" + str(run) + "' already holds the results of a run (config.yaml)" in err
    assert (out / "model.safetensors").read_bytes() == before
    monkeypatch.chdir(tmp_path)
    assert main(again) == 0 and main(again) == 0
    assert (tmp_path / "runs" / "train-genotype" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "train-genotype-2" / "metrics.json").is_file()
    assert "written to runs/train-genotype-2" in capsys.readouterr().out


def test_resume_is_bitwise_identical(tmp_path, monkeypatch):
    full = tmp_path / "full"
    assert _search(full) == 0

    part = tmp_path / "part"
    real_save = Run.save_checkpoint

    def crash_after_first(self, state):
        real_save(self, state)
        raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint

    monkeypatch.setattr(Run, "save_checkpoint", crash_after_first)
    assert _search(part) == 130
    monkeypatch.setattr(Run, "save_checkpoint", real_save)
    assert len((part / "history.jsonl").read_text().splitlines()) == 1
    assert main(["search", "--resume", str(part), "--no-progress"]) == 0

    a, b = safe_torch_load(full / "alphas.pt"), safe_torch_load(part / "alphas.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (full / "genotype.yaml").read_text() == (part / "genotype.yaml").read_text()
    ha = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (part / "history.jsonl").read_text().splitlines()]
    for x, y in zip(ha, hb):
        x.pop("seconds"), y.pop("seconds")
    assert ha == hb
    ca, cb = read_checked(full / "checkpoint.pt"), read_checked(part / "checkpoint.pt")
    assert all(torch.equal(ca["supernet"][k], cb["supernet"][k]) for k in ca["supernet"])


def test_run_folder_is_protected(tmp_path, capsys):
    run = tmp_path / "run"
    assert _search(run, epochs=1) == 0
    capsys.readouterr()
    # a second search into a finished run refuses instead of overwriting it
    assert _search(run, epochs=1) == 2
    assert "already holds a search; pass --resume" in capsys.readouterr().err
    # a live lock held by another process refuses too
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "run.lock").write_text(str(os.getppid()))
    with pytest.raises(DnasError, match="in use by process"):
        Run(tmp_path / "locked")
    # a stale lock (dead pid) is taken over
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "run.lock").write_text("999999999")
    Run(tmp_path / "stale").close()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["search", "--space", "nope"], "unknown space 'nope'"),
        (["search", "--strategy", "dart"], "did you mean 'darts'"),
        (["search", "--set", "space.chanels=3"], "unknown option 'chanels' for space 'darts'"),
        (["search", "--set", "sede=3"], "unknown key 'sede'"),
        (["search", "--data", "cifar10", "--data-dir", "/nonexistent"], "add --download"),
        (["search", "--data", "imagefolder:/nonexistent"], "image folder '/nonexistent' not found"),
        (["search", "--resume", "/nonexistent"], "holds no config.yaml"),
        (["search", "--resume", "/nonexistent", "--epochs", "5"], "--epochs cannot change it: drop it, or start a new search"),
        (["search", "--config", "/nonexistent.yaml"], "config file '/nonexistent.yaml' not found"),
        (["search", "--batch-size", "0"], "batch_size must be >= 1"),  # not the default batch, silently
        (["show", "/"], "'/' is not a dnas run folder"),
        (["train", "--genotype", "/nonexistent.yaml"], "not found"),
        (["search", "--device", "cuda:7"] if not torch.cuda.is_available() else ["search", "--device", "tpu"], "cuda"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, expected):
    code = main(argv + ["--out", str(tmp_path / "r")] if argv[0] == "search" and "--resume" not in argv else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dnas: error:")
    assert expected in err[0]
    assert not (tmp_path / "r").exists()  # refused before the run folder is made: nothing written


def test_plugin_space_from_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "plugins"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dnas", "--plugin", "toyspace", "search", "--space", "toy-mlp", "--strategy", "darts",
           "--data", "synthetic", "--epochs", "1", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    g = yaml.safe_load((out / "genotype.yaml").read_text())
    assert g["space"] == "toy-mlp" and set(g["choices"]) == {"layer0", "layer1"}
    bad = subprocess.run([sys.executable, "-m", "dnas", "--plugin", "no_such_module", "list"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot import plugin module 'no_such_module'" in bad.stderr


def test_python_api_matches_the_readme(tmp_path):
    result = dnas.search("darts", "darts", "synthetic", space_config={"C": 4, "layers": 3, "nodes": 2},
                         strategy_config={"epochs": 1}, data_config={"batch_size": 32}, out=tmp_path / "api", progress=False)
    assert result.genotype.space == "darts" and len(result.history) == 1
    metrics = dnas.train(result.genotype, data="synthetic", train_config={"epochs": 1, "batch_size": 64}, log=lambda *_: None)
    assert 0 <= metrics["top1"] <= 1
