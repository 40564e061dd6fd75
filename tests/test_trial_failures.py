"""Trial search survives bad candidates: a candidate that diverges, raises NonFinite or runs out of
memory is a FAILED trial with its reason (trials table, history), and the study goes on."""
from __future__ import annotations

import json

import pytest
import torch

import dnas
from dnas.cli import main
from dnas.engine import trials
from dnas.errors import DnasError
from dnas.spaces.activation import NonFinite

TINY = {"space_config": {"width": 8, "max_layers": 2}, "data_config": {"batch_size": 16}}


def _rows(run_dir, name="trials.jsonl"):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def test_failed_candidates_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    real = trials.train_and_score
    calls = iter(["nonfinite", "oom", "nan", "ok", "ok", "ok"])

    def flaky(*args, **kw):
        what = next(calls)
        if what == "nonfinite":
            raise NonFinite("activation: unary primitive 'exp' produced NaN/inf")
        if what == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = real(*args, **kw)
        return {**out, "fitness": float("nan")} if what == "nan" else out

    monkeypatch.setattr(trials, "train_and_score", flaky)
    r = dnas.search("mlp-depth", "random", "synthetic", strategy_config={"trials": 3, "epochs": 1, "max_steps": 1},
                    out=tmp_path / "r", progress=False, **TINY)
    rows = _rows(tmp_path / "r")
    assert [x["state"] for x in rows] == ["FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert [x["note"] for x in rows[:3]] == ["failed: NaN/inf", "failed: out of memory", "failed: non-finite fitness"]
    assert "exp" in rows[0]["error"] and "2.00 GiB" in rows[1]["error"] and "nan" in rows[2]["error"]
    history = _rows(tmp_path / "r", "history.jsonl")
    assert [h["trial"] for h in history] == [0, 1, 2, 3, 4, 5]  # one record per trial
    assert history[1]["error"] == rows[1]["error"]
    study = trials.open_study(f"sqlite:///{tmp_path / 'r' / 'study.db'}", "dnas", dnas.create_strategy("random").config, None,
                              dnas.create_space("mlp-depth", width=8, max_layers=2))
    assert study.trials[0].user_attrs["error_kind"] == "NaN/inf"  # the reason is an optuna user attr too
    best = min(rows[3:], key=lambda x: x["fitness"])
    assert {k: list(v) for k, v in r.genotype.choices.items()} == best["genotype"]


def test_a_search_whose_every_trial_fails_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    def always(*args, **kw):
        raise NonFinite("unary primitive 'square' (x^2) produced NaN/inf")

    monkeypatch.setattr(trials, "train_and_score", always)
    with pytest.raises(DnasError, match=r"^every trial of study 'dnas' failed: 10 NaN/inf \(e.g. unary primitive 'square'"):
        dnas.search("mlp-depth", "tpe", "synthetic", strategy_config={"trials": 2}, out=tmp_path / "r", progress=False, **TINY)
    assert len(_rows(tmp_path / "r")) == 10 and len(_rows(tmp_path / "r", "history.jsonl")) == 10
    assert "Traceback" not in capsys.readouterr().err  # optuna's own failure warning (with its traceback) is dropped


def test_activation_random_search_finishes_and_records_failed_trials(tmp_path, capsys):
    out = tmp_path / "act"
    code = main(["search", "--space", "activation", "--strategy", "random", "--data", "digits", "--trials", "4",
                 "--set", "strategy.epochs=1", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = _rows(out)
    assert sum(x["state"] == "COMPLETE" for x in rows) == 4
    assert all(x["error"] and x["note"].startswith("failed: ") for x in rows if x["state"] == "FAIL")
    assert len(_rows(out, "history.jsonl")) == len(rows)
    assert (out / "genotype.yaml").is_file()
