"""Crash safety, divergence, corrupt and malicious files, fuzzed loaders (issue: reliability)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dnas
from dnas import DnasError
from dnas.api import load_config_file, resolve
from dnas.genotype import parse_genotype_text
from dnas._io import MAGIC, read_checked, safe_torch_load
from dnas.engine.run import Run

PLUGINS = str(Path(__file__).parent / "plugins")
ENV = {**os.environ, "PYTHONPATH": PLUGINS, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SEARCH = ["search", "--space", "darts", "--strategy", "darts", "--data", "synthetic", "--epochs", "3", "--no-progress",
          "--set", "space.C=4", "--set", "space.layers=3", "--set", "space.nodes=2", "--set", "data.batch_size=32"]


def cli(args, kill_at=None, timeout=300):
    env = dict(ENV)
    mod = ["-m", "dnas"]
    if kill_at:
        env["DNAS_KILL_AT"] = kill_at
        mod = ["-m", "killer"]
    return subprocess.run([sys.executable, *mod, *args], env=env, capture_output=True, text=True, timeout=timeout)


def outcome(run):
    h = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    for r in h:
        r.pop("seconds")
    return safe_torch_load(run / "alphas.pt"), (run / "genotype.yaml").read_text(), h


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert cli(SEARCH + ["--out", str(run)]).returncode == 0
    return outcome(run)


def assert_same(run, reference):
    alphas, genotype, history = outcome(run)
    ra, rg, rh = reference
    assert all(torch.equal(alphas[k], ra[k]) for k in ra)
    assert genotype == rg and history == rh


@pytest.mark.parametrize("kill_at", ["midwrite:2", "rename:2"])
def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, reference, kill_at):
    run = tmp_path / "run"
    proc = cli(SEARCH + ["--out", str(run)], kill_at=kill_at)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "genotype.yaml").exists()
    resumed = cli(["search", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from epoch 1" in resumed.stderr
    assert_same(run, reference)


def test_sigkill_mid_epoch_then_resume(tmp_path, reference):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dnas", *SEARCH, "--out", str(run)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = cli(["search", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same(run, reference)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    with Run(tmp_path) as run:
        run.save_checkpoint({"epoch": 1, "x": torch.ones(3)})
        run.save_checkpoint({"epoch": 2, "x": torch.ones(3) * 2})
        data = bytearray((tmp_path / "checkpoint.pt").read_bytes())
        data[-5] ^= 0xFF  # one flipped byte
        (tmp_path / "checkpoint.pt").write_bytes(bytes(data))
        with pytest.warns(UserWarning, match="checksum mismatch"):
            assert run.load_checkpoint()["epoch"] == 1
        (tmp_path / "checkpoint.prev.pt").write_bytes(b"garbage")
        with pytest.raises(DnasError, match="truncated or corrupt"):
            run.load_checkpoint()


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"epoch": 1, "evil": Evil(marker)})
    import hashlib

    plain = tmp_path / "alphas.pt"
    torch.save({"evil": Evil(marker)}, plain)
    checked = tmp_path / "checkpoint.pt"
    raw = torch.save  # a checksummed file whose payload is a well-formed but malicious torch pickle
    import io

    buf = io.BytesIO()
    raw({"evil": Evil(marker)}, buf)
    checked.write_bytes(MAGIC + hashlib.sha256(buf.getvalue()).digest() + buf.getvalue())
    for load, path in ((safe_torch_load, plain), (read_checked, checked)):
        with pytest.raises(DnasError, match="cannot be loaded safely"):
            load(path)
    (tmp_path / "raw.pkl").write_bytes(payload)
    with pytest.raises(DnasError):
        safe_torch_load(tmp_path / "raw.pkl")
    assert not marker.exists()
    # a run whose checkpoint is malicious refuses to resume
    run = tmp_path / "run"
    assert cli(SEARCH[:-2] + ["--epochs", "1", "--out", str(run)]).returncode == 0
    (run / "checkpoint.pt").write_bytes(checked.read_bytes())
    (run / "checkpoint.prev.pt").unlink(missing_ok=True)
    res = cli(["search", "--resume", str(run), "--no-progress"])
    assert res.returncode == 2 and "cannot be loaded safely" in res.stderr and not marker.exists()


def _nan_after(net, calls):
    """Make the supernet's loss NaN on the given call numbers."""
    real = net.loss
    count = {"n": 0}

    def loss(batch):
        count["n"] += 1
        out = real(batch)
        if count["n"] in calls:
            out["loss"] = out["loss"] * float("nan")
        return out

    net.loss = loss
    return count


def _tiny_search(tmp_path, nan_calls, callbacks=None, **strategy):
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    from dnas.engine.data import DataConfig, SearchData, synthetic_dataset

    data = SearchData(synthetic_dataset(), DataConfig(name="synthetic", batch_size=64), seed=0)
    torch.manual_seed(0)
    net = space.supernet(data.task)
    _nan_after(net, nan_calls)
    strat = dnas.create_strategy("darts", epochs=2, **strategy)
    with Run(tmp_path, progress=False) as run:
        return strat.search(net, data, run, callbacks), run.history()


def test_divergence_rolls_back_and_lowers_the_learning_rate_once(tmp_path):
    _, clean = _tiny_search(tmp_path / "clean", set())
    g, hist = _tiny_search(tmp_path / "nan", {3})  # the 3rd loss call (epoch 1, second step) is NaN
    assert len(hist) == 2 and "diverged (val_loss = nan)" in hist[0]["events"][0]
    assert hist[0]["w_lr"] == pytest.approx(clean[0]["w_lr"] * 0.1)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in hist[-1]["alphas"].values())


def test_second_divergence_stops_with_a_clear_message_and_keeps_the_files(tmp_path):
    # 2 steps per epoch, 2 loss calls per step: call 5 opens epoch 2, call 9 opens its replay
    with pytest.raises(DnasError, match=r"diverged again at epoch 2 \(val_loss = nan\); the run folder keeps its 1 finished epoch\(s\); start it again with lower"):
        _tiny_search(tmp_path, {5, 9}, [dnas.registry.create_callback("rollback", lr_factor=0.5)])
    assert (tmp_path / "checkpoint.pt").exists() and len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_fuzzed_genotype_files_raise_only_dnas_errors(data):
    for text, name in ((yaml.safe_dump(data), "g.yaml"), (json.dumps(data), "g.json")):
        try:
            g = parse_genotype_text(text, name)
            from dnas.genotype import validate_genotype

            validate_genotype(g)
        except DnasError as e:
            assert "\n" not in str(e)


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["space", "version", "config", "choices"]), value=json_values, drop=st.booleans())
def test_mutated_genotypes_raise_only_dnas_errors(key, value, drop):
    import random

    d = dnas.create_space("darts", C=4, layers=3, nodes=2).random_genotype(random.Random(0)).to_dict()
    if drop:
        d.pop(key)
    else:
        d[key] = value
    try:
        g = parse_genotype_text(yaml.safe_dump(d), "g.yaml")
        from dnas.genotype import validate_genotype

        validate_genotype(g)
    except DnasError as e:
        assert "\n" not in str(e)


@settings(max_examples=150, deadline=None)
@given(section=st.sampled_from(["space", "strategy", "data", "seed", "device", "train", "bogus"]), value=json_values)
def test_fuzzed_configs_raise_only_dnas_errors(tmp_path_factory, section, value):
    p = tmp_path_factory.mktemp("cfg") / "run.yaml"
    p.write_text(yaml.safe_dump({section: value}))
    try:
        resolve(load_config_file(p))
    except DnasError as e:
        assert "\n" not in str(e)


def test_nothing_is_written_outside_the_run_folder(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dnas", *SEARCH[:-2], "--epochs", "1", "--out", str(out)],
                          env=ENV, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["alphas.pt", "checkpoint.pt", "config.yaml", "genotype.yaml", "history.jsonl"]


def test_config_file_errors_name_the_file_the_key_and_the_choices(tmp_path, capsys):
    from dnas.cli import main

    p = tmp_path / "run.yaml"
    p.write_text("space: {name: darts, ops: dartz}\n")
    assert main(["search", "--config", str(p), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(p) in err and "'ops'" in err and "'darts', 'darts-o'" in err
    p.write_text("strategy: {name: darts, epocs: 3}\n")
    assert main(["search", "--config", str(p), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(p) in err and "unknown option 'epocs'" in err and "did you mean 'epochs'" in err
