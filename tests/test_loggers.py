"""Loggers: what a search writes to TensorBoard, MLflow and CSV equals its history.jsonl, read back
with the libraries' own readers; `dnas log` replays a finished run the same way."""
import csv
import json
import math

import numpy as np
import pytest

import dnas
from dnas.cli import main
from dnas.engine.loggers import alpha_groups, record_scalars, record_step, record_texts
from dnas.engine.run import Run, read_history
from dnas.errors import DnasError

SEARCH = ["search", "--space", "darts", "--strategy", "darts", "--data", "synthetic", "--set", "space.C=4",
          "--set", "space.layers=3", "--set", "space.nodes=2", "--set", "data.subset=0.05", "--epochs", "2", "--no-progress"]


def _expected(hist):
    """(name, step) -> value of every scalar of the history."""
    return {(k, record_step(r)): v for r in hist for k, v in record_scalars(r).items()}


def _tb_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc, {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def _assert_equal_f32(got, want):
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == pytest.approx(float(np.float32(v)), rel=1e-7, abs=0), key  # event files hold float32


def _csv_scalars(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {(r["name"], int(r["step"])): float(r["value"]) for r in rows}


# -- records --------------------------------------------------------------------------------------


def test_record_scalars_texts_and_alpha_groups_by_hand():
    rec = {"epoch": 3, "train_loss": 0.5, "ok": True, "w_lr": 0.01, "nan": float("nan"), "dominant_ops_by_cell": {"normal": 2, "reduce": 1},
           "alphas": {"normal.node0.edge0": [0.2, 0.8], "normal.node0.edge1": [0.5, 0.5], "block1": [0.9]},
           "genotype": {"normal.node0.edge0": ["skip"]}, "events": ["diverged"]}
    assert record_step(rec) == 3 and record_step({"trial": 7, "fitness": 1.0}) == 7
    assert record_scalars(rec) == {"train_loss": 0.5, "w_lr": 0.01, "dominant_ops_by_cell/normal": 2.0,
                                   "dominant_ops_by_cell/reduce": 1.0, "sigma/block1": 0.9}
    groups = alpha_groups(rec["alphas"])
    assert groups["normal"] == (["normal.node0.edge0", "normal.node0.edge1"], [[0.2, 0.8], [0.5, 0.5]])
    assert groups["gates"] == (["block1"], [[0.9]])
    assert record_texts(rec) == {"genotype": "normal.node0.edge0: skip", "events": "diverged"}


def test_unknown_logger_and_bad_spec_are_one_line(tmp_path):
    with pytest.raises(DnasError, match="unknown logger 'tensorbord'.*did you mean"):
        dnas.search("darts", "darts", "synthetic", loggers=["tensorbord"], out=tmp_path / "r", progress=False)
    with pytest.raises(DnasError, match="a logger is a name"):
        dnas.search("darts", "darts", "synthetic", loggers=[3], out=tmp_path / "r", progress=False)


def test_csv_logger_gets_every_record_of_the_history_any_strategy_appends(tmp_path):
    from dnas.engine.loggers import make_loggers

    with Run(tmp_path, progress=False, loggers=make_loggers(["csv"], tmp_path)) as run:
        run.append_history({"epoch": 1, "proxy": 2.5, "phase": "sample", "alphas": {"block0": [0.7], "block1": [0.2]}})
        run.append_history({"trial": 0, "state": "COMPLETE", "fitness": 1.25, "params": 100, "parameters": {"a": "x"}})
    got = _csv_scalars(tmp_path / "metrics.csv")
    assert got == _expected(read_history(tmp_path))
    assert got[("sigma/block0", 1)] == 0.7 and got[("fitness", 0)] == 1.25


# -- a real search --------------------------------------------------------------------------------


def test_search_with_tensorboard_and_csv_equals_history_and_dnas_log_replays_it(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'dnas[tensorboard]')")
    out = tmp_path / "run"
    assert main([*SEARCH, "--logger", "tensorboard", "--logger", "csv", "--out", str(out)]) == 0
    hist = read_history(out)
    want = _expected(hist)
    assert {"train_loss", "val_acc", "w_lr", "a_lr", "distance_prev"} <= {k for k, _ in want}
    acc, got = _tb_scalars(out / "tensorboard")
    _assert_equal_f32(got, want)
    assert _csv_scalars(out / "metrics.csv") == want
    tags = acc.Tags()
    assert {"alpha/normal", "alpha/reduce"} <= set(tags["images"]) and {"alpha/normal", "alpha/reduce"} <= set(tags["histograms"])
    assert [e.step for e in acc.Images("alpha/normal")] == [1, 2]
    assert "genotype/text_summary" in tags["tensors"]
    text = acc.Tensors("genotype/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert next(iter(hist[-1]["genotype"])) in text
    # the histogram holds every α weight of the group
    n = sum(len(w) for d, w in hist[-1]["alphas"].items() if d.startswith("normal."))
    assert acc.Histograms("alpha/normal")[-1].histogram_value.num == n
    # replay the finished run into a new folder: the same scalars
    assert main(["log", str(out), "--to", "tensorboard", str(tmp_path / "tb2"), "--to", "csv", str(tmp_path / "m.csv")]) == 0
    _assert_equal_f32(_tb_scalars(tmp_path / "tb2")[1], want)
    assert _csv_scalars(tmp_path / "m.csv") == want
    for dest in (["csv", str(tmp_path / "m.csv")], ["tensorboard", str(tmp_path / "tb2")]):  # again: refused, not doubled
        assert main(["log", str(out), "--to", *dest]) == 2
    assert _csv_scalars(tmp_path / "m.csv") == want
    # the loggers are part of the run's config: a resume keeps logging
    assert "loggers" in (out / "config.yaml").read_text()


@pytest.mark.slow  # ~30 s: creating an MLflow store runs its database migrations
def test_search_with_mlflow_equals_history_and_dnas_log_replays_it(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'dnas[mlflow]')")
    from mlflow.tracking import MlflowClient

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main([*SEARCH, "--logger", f"mlflow={uri}", "--out", str(out)]) == 0
    want = _expected(read_history(out))
    assert main(["log", str(out), "--to", "mlflow", uri]) == 0  # the replay: a second run in the same store
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dnas")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    for r in runs:
        got = {(k, m.step): m.value for k in r.data.metrics for m in client.get_metric_history(r.info.run_id, k)}
        assert got == want  # MLflow keeps doubles: exactly equal
        assert r.data.params["space.C"] == "4" and r.data.params["strategy.name"] == "darts"
        arts = {a.path for a in client.list_artifacts(r.info.run_id, "alpha")}
        assert {"alpha/normal", "alpha/reduce"} <= arts


def test_trial_search_logs_one_record_per_trial(tmp_path):
    out = tmp_path / "tpe"
    args = ["search", "--space", "darts", "--strategy", "random", "--data", "synthetic", "--set", "space.C=4", "--set", "space.layers=3",
            "--set", "space.nodes=2", "--set", "space.auxiliary=false", "--set", "data.batch_size=8", "--set", "strategy.subset=0.5",
            "--set", "strategy.epochs=1", "--set", "strategy.max_steps=2", "--trials", "2", "--logger", "csv", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    trials = [r for r in read_history(out) if "trial" in r]
    table = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    done = {r["trial"]: r["fitness"] for r in table if r["state"] == "COMPLETE"}
    assert len(done) == 2 and {r["trial"]: r["fitness"] for r in trials if r["state"] == "COMPLETE"} == done
    assert all(r["parameters"] for r in trials if r["state"] == "COMPLETE")
    got = _csv_scalars(out / "metrics.csv")
    for t, f in done.items():
        assert math.isclose(got[("fitness", t)], f)
    from dnas.tools.show import show

    assert "epochs; last" not in show(str(out))  # trial records are no epochs for `dnas show`


def test_dario_proxy_search_logs_the_proxy_and_sigma_of_every_gate(tmp_path):
    from dnas.engine.loggers import make_loggers

    space = dnas.create_space("dario", model="dario_toy:toy", blocks="layers", input_size=[1, 1, 2])
    net = space.supernet(space.tiny_task)
    strat = dnas.create_strategy("proxy", iters=2, warm_start=2, gamma=0.1)
    with Run(tmp_path, progress=False, loggers=make_loggers(["csv"], tmp_path)) as run:
        strat.search(net, None, run)
    hist = read_history(tmp_path)
    got = _csv_scalars(tmp_path / "metrics.csv")
    assert got == _expected(hist) and len(hist) == 4
    for r in hist:
        assert got[("proxy", r["epoch"])] == r["proxy"]
        for gate, (sigma,) in r["alphas"].items():
            assert got[(f"sigma/{gate}", r["epoch"])] == sigma


@pytest.mark.slow  # spawns a second worker process
def test_trials_of_other_workers_are_in_the_history_too(tmp_path):
    out = tmp_path / "tpe"
    args = ["search", "--space", "darts", "--strategy", "random", "--data", "synthetic", "--set", "space.C=4", "--set", "space.layers=3",
            "--set", "space.nodes=2", "--set", "space.auxiliary=false", "--set", "data.batch_size=8", "--set", "strategy.subset=0.5",
            "--set", "strategy.epochs=2", "--trials", "4", "--workers", "2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    table = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    hist = [r for r in read_history(out) if "trial" in r]
    done = {r["trial"]: r["fitness"] for r in table if r["state"] == "COMPLETE"}
    assert {r["trial"]: r["fitness"] for r in hist if r["state"] == "COMPLETE"} == done
    assert len({r["trial"] for r in hist}) == len(hist)  # each trial once
