"""`dnas compare`: its statistics against hand computation, size-matched sampling, resume, determinism."""
import importlib.util
import json
import math
import random

import pytest
import torch
import yaml
from torch import nn

import dnas
from dnas.cli import main
from dnas.errors import DnasError
from dnas.tools.compare import compare_arms, describe_arm, rank_among, sample_matched, summarize, verdict

S = [98.0, 99.0, 97.0]
R = [96.0, 97.0, 95.0, 96.0]


def test_arm_statistics_by_hand():
    a = describe_arm(S)
    assert a["n"] == 3 and a["mean"] == pytest.approx(98.0)
    assert a["std"] == pytest.approx(1.0)  # deviations 0, 1, -1: Σ² = 2, / (n-1) = 1
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} · s / √n
    assert a["ci95"] == pytest.approx([98 - half, 98 + half])
    one = describe_arm([97.5])
    assert one["std"] is None and one["ci95"] is None


def test_difference_welch_and_mann_whitney_by_hand():
    from scipy import stats

    d = compare_arms(S, R)["difference"]
    # random: mean 96, s² = 2/3; se = √(1/3 + (2/3)/4) = √0.5
    se = math.sqrt(0.5)
    assert d["mean"] == pytest.approx(2.0)
    assert d["welch_t"] == pytest.approx(2.0 / se)
    df = 0.5**2 / ((1 / 3) ** 2 / 2 + (1 / 6) ** 2 / 3)  # Welch–Satterthwaite
    assert d["df"] == pytest.approx(df)
    assert d["welch_p"] == pytest.approx(2 * stats.t.sf(2.0 / se, df))
    half = stats.t.ppf(0.975, df) * se
    assert d["ci95"] == pytest.approx([2 - half, 2 + half])
    # U of the searched arm: 98 and 99 beat all 4, 97 beats 3 and ties 1 → 4 + 4 + 3.5
    assert d["mannwhitney_u"] == pytest.approx(11.5)
    # normal approximation, tie-corrected σ² = n1·n2/12 · ((n+1) − Σ(t³−t)/(n(n−1))), continuity 0.5
    sigma = math.sqrt(3 * 4 / 12 * (8 - 12 / 42))
    z = (11.5 - 6 - 0.5) / sigma
    assert d["mannwhitney_p"] == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_undefined_statistics_are_none_and_the_verdict_says_why():
    d = compare_arms([97.0], [96.0, 95.0])["difference"]
    assert d["welch_p"] is None and d["ci95"] is None
    assert "no test possible" in verdict(d, 1, 2, "training")
    same = compare_arms([96.0, 96.0], [96.0, 96.0])["difference"]
    assert same["welch_p"] is None and same["mannwhitney_p"] is None
    assert "no variance" in verdict(same, 2, 2, "training")


def test_verdict_words():
    d = {"mean": 0.4, "ci95": [-0.6, 1.4], "welch_p": 0.41, "mannwhitney_p": 0.5}
    v = verdict(d, 4, 8, "training")
    assert v.startswith("searched − random = +0.40 pts, 95 % CI [-0.60, +1.40], Welch p = 0.41")
    assert v.endswith("no significant difference at this budget")
    assert "significantly worse" in verdict({**d, "mean": -2.0, "welch_p": 0.01}, 4, 8, "training")


def test_rank_and_summary_units():
    assert rank_among(97.0, [98.0, 97.0, 95.0]) == {"rank": 2, "of": 4, "beats": 1, "ties": 1}
    gs = [
        {"id": "searched-0", "arm": "searched", "group": 0, "top1": [98.0, 99.0]},
        {"id": "random-0-0", "arm": "random", "group": 0, "top1": [96.0, 97.0]},
        {"id": "random-0-1", "arm": "random", "group": 0, "top1": [99.0, 100.0]},
        {"id": "searched-1", "arm": "searched", "group": 1, "top1": [97.0, 97.0]},
        {"id": "random-1-0", "arm": "random", "group": 1, "top1": [95.0, 95.0]},
    ]
    by_training = summarize([dict(g) for g in gs], "training")
    assert by_training["searched"]["n"] == 4 and by_training["random"]["n"] == 6
    by_genotype = summarize([dict(g) for g in gs], "genotype")
    assert by_genotype["searched"]["n"] == 2 and by_genotype["searched"]["mean"] == pytest.approx((98.5 + 97.0) / 2)
    ranks = {r["genotype"]: r for r in by_genotype["ranks"]}
    assert ranks["searched-0"]["in_group"]["rank"] == 2  # random-0-1 (99.5) is better
    assert ranks["searched-1"]["in_group"]["rank"] == 1 and ranks["searched-1"]["overall"]["rank"] == 2  # only 99.5 of 96.5, 99.5, 95 is higher


class _Sized:
    """A fake space: genotype = a width; its network has width + 1 parameters."""

    name = "sized"

    def random_genotype(self, rng):
        return rng.randint(1, 1000)

    def build_network(self, g, task):
        return nn.Linear(g, 1)


def test_sample_matched_keeps_the_size_and_the_global_rng():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    found = sample_matched(_Sized(), None, 500, 5, random.Random(0), 0.1, 10_000, exclude=[499])
    assert torch.equal(torch.get_rng_state(), before)
    assert len(found) == 5 and len({g for g, _ in found}) == 5 and 499 not in [g for g, _ in found]
    assert all(450 <= p <= 550 and p == g + 1 for g, p in found)
    assert found == sample_matched(_Sized(), None, 500, 5, random.Random(0), 0.1, 10_000, exclude=[499])


def test_sample_matched_fails_in_one_line_with_the_tolerance_that_would_do():
    with pytest.raises(DnasError, match=r"only 0 of 3 random genotypes of space 'sized' came within ±10 % .* 5000 parameters in 50 draws") as e:
        sample_matched(_Sized(), None, 5000, 3, random.Random(0), 0.1, 50)
    tol = float(str(e.value).split("--tolerance ")[1].split()[0])
    assert len(sample_matched(_Sized(), None, 5000, 3, random.Random(0), tol, 50)) == 3  # the same draws, the tolerance it named


class _Tiny(_Sized):
    def random_genotype(self, rng):
        return rng.randint(1, 3)  # three genotypes in all


def test_sample_matched_says_when_the_space_has_too_few_genotypes():
    with pytest.raises(DnasError, match=r"the space gave only 2 other distinct genotypes; ask fewer \(--random\) or search a larger space"):
        sample_matched(_Tiny(), None, 2, 3, random.Random(0), 0.1, 200, exclude=[1])


TINY = {"space": {"name": "darts", "C": 4, "layers": 3, "nodes": 2}, "strategy": {"name": "darts", "epochs": 1},
        "data": {"name": "digits", "batch_size": 128}, "train": {"epochs": 1, "batch_size": 128, "lr": 0.05}}
OPTS = dict(search_seeds=1, random=2, train_seeds=2, threads=1)


def _numbers(results):
    """Everything but the timing and the paths of the run folder."""
    out = {k: v for k, v in results.items() if k != "timing"}
    out["genotypes"] = [{k: v for k, v in g.items() if k != "file"} for g in results["genotypes"]]
    return out


def test_compare_on_digits_resumes_and_repeats(tmp_path):
    lines = []
    a = dnas.compare({**TINY, "loggers": ["csv"]}, out=tmp_path / "a", log=lines.append, **OPTS)
    assert a["searched"]["n"] == 2 and a["random"]["n"] == 4  # 1 searched × 2 seeds, 2 random × 2 seeds
    search_csv = (tmp_path / "a" / "metrics" / "searches-seed-0.csv").read_text()  # the search unit followed too
    assert ",val_loss," in search_csv and ",train_loss," in (tmp_path / "a" / "metrics" / "trainings-searched-0-seed-1.csv").read_text()
    params = [g["params"] for g in a["genotypes"]]
    assert all(abs(p - params[0]) <= 0.1 * params[0] for p in params[1:])  # sizes matched within ±10 %
    for name in ("results.json", "results.md", "compare.png", "compare.yaml"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["verdict"] == a["verdict"]
    assert a["verdict"] in (tmp_path / "a" / "results.md").read_text()
    # a killed compare: one training's record is missing; --resume runs that one unit only
    (tmp_path / "a" / "units" / "train-random-0-1-seed1.json").unlink()
    lines.clear()
    b = dnas.compare(resume=tmp_path / "a", log=lines.append)
    assert [ln for ln in lines if ln.startswith("[")] == [next(ln for ln in lines if ln.startswith("[1/1] train-random-0-1-seed1"))]
    assert _numbers(b) == _numbers(a)
    # killed again, this time after the training's last epoch and before its weights were written: that unit's
    # training resumes from its checkpoint (no epoch left to run) instead of being refused as unfinished
    import dnas.evaluate.supervised as supervised

    (tmp_path / "a" / "units" / "train-random-0-1-seed1.json").unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(supervised, "finish_training", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            dnas.compare(resume=tmp_path / "a", log=lines.append)
    assert (tmp_path / "a" / "trainings" / "random-0-1" / "seed-1" / "checkpoint.pt").is_file()
    assert _numbers(dnas.compare(resume=tmp_path / "a", log=lines.append)) == _numbers(a)
    with pytest.raises(DnasError, match="already holds a compare"):
        dnas.compare(TINY, out=tmp_path / "a", log=lines.append, **OPTS)
    with pytest.raises(DnasError, match="only workers and threads may change"):
        dnas.compare(resume=tmp_path / "a", log=lines.append, random=3)
    # the same protocol again from scratch: the same numbers
    c = dnas.compare(TINY, out=tmp_path / "c", log=lines.append, **OPTS)
    assert _numbers(c) == _numbers(a)


def test_cli_compare_genotype_files_and_matching_error(tmp_path, capsys):
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    g = space.random_genotype(random.Random(5)).save(tmp_path / "g.yaml")
    mlflow = importlib.util.find_spec("mlflow") is not None
    args = ["compare", "--genotype", str(g), "--random", "2", "--train-seeds", "2", "--train-epochs", "2", "--set", "train.batch_size=128",
            "--threads", "1", "--out", str(tmp_path / "cmp"), "--logger", "csv", *(["--logger", "mlflow"] if mlflow else [])]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("searched − random = ")
    r = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert r["protocol"]["searched_from"] == "files" and len(r["genotypes"]) == 3
    units = [f"trainings/{e['id']}/seed-{s}" for e in r["genotypes"] for s in (0, 1)]  # every training its own run
    for unit in units:
        rows = (tmp_path / "cmp" / "metrics" / f"{unit.replace('/', '-')}.csv").read_text().splitlines()
        assert sorted({row.split(",")[0] for row in rows[1:] if ",train_loss," in row}) == ["1", "2"]
    if mlflow:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path / 'cmp' / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("dnas").experiment_id])
        assert sorted(run.info.run_name for run in runs) == sorted(units)
        assert all(len(client.get_metric_history(run.info.run_id, "train_loss")) == 2 for run in runs)
    assert main(["compare", "--genotype", str(g), "--tolerance", "0.0001", "--max-tries", "3", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("dnas: error:")]  # progress lines come before it
    assert len(errors) == 1 and errors[0].startswith("dnas: error: only ") and errors[0].endswith("raise --max-tries")


@pytest.mark.slow
def test_compare_with_two_worker_processes_gives_the_same_numbers(tmp_path):
    opts = {**OPTS, "train_seeds": 1}
    one = dnas.compare(TINY, out=tmp_path / "one", log=lambda *_: None, **opts)
    two = dnas.compare(TINY, out=tmp_path / "two", log=lambda *_: None, **{**opts, "workers": 2})
    assert _numbers(one) == _numbers(two)


@pytest.mark.slow
def test_the_demo_twice_gives_the_same_figures(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compare_digits", Path(__file__).parent.parent / "experiments" / "compare_digits.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    tiny = ["--search-seeds", "1", "--random", "2", "--train-seeds", "2", "--search-epochs", "1", "--train-epochs", "1",
            "--C", "4", "--layers", "3", "--workers", "1"]
    figures = []
    for name in ("one", "two"):
        demo.main([*tiny, "--out", str(tmp_path / name), "--results", str(tmp_path / f"{name}.json")])
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert all(record[k] for k in ("date", "machine", "commit", "command"))
        figures.append({k: record[k] for k in ("searched", "random", "difference", "ranks", "genotypes", "verdict")})
    assert figures[0] == figures[1]


def test_a_zero_difference_reads_plus_zero():
    assert verdict({"mean": -1e-14, "ci95": [-0.75, 0.75], "welch_p": 1.0, "mannwhitney_p": 1.0}, 4, 8, "training").startswith(
        "searched − random = +0.00 pts, 95 % CI [-0.75, +0.75]")


def test_eval_set_takes_the_space_prefix_that_set_takes():
    from dnas.cli.compare import _eval_space

    assert _eval_space(["space.C=16", "layers=3", "ops=darts-o"]) == {"C": 16, "layers": 3, "ops": "darts-o"}
    with pytest.raises(DnasError, match="--eval-set expects key=value"):
        _eval_space(["space.C"])


def test_compare_on_an_ssl_space_trains_with_its_ssl_recipe_and_refuses_a_pruning_space(tmp_path):
    """NASiam genotypes are judged by SSL pretraining + linear evaluation; the recipe takes its options."""
    from dnas.registry import create_space

    space = create_space("nasiam-mlp", **create_space("nasiam-mlp").tiny_config)
    g = space.random_genotype(random.Random(1))
    g.save(tmp_path / "g.yaml")
    cfg = {"data": {"name": "digits", "batch_size": 128}, "train": {"epochs": 1, "batch_size": 128, "linear_epochs": 2}}
    r = dnas.compare(cfg, genotypes=[tmp_path / "g.yaml"], out=tmp_path / "c", log=lambda *_: None,
                     random=1, train_seeds=1, threads=1, tolerance=0.5)
    saved = yaml.safe_load((tmp_path / "c" / "compare.yaml").read_text())
    assert saved["config"]["train"]["linear_epochs"] == 2 and "knn_k" in saved["config"]["train"]  # SSLTrainConfig
    metrics = json.loads((tmp_path / "c" / "trainings" / "searched-0" / "seed-0" / "metrics.json").read_text())
    assert "knn_top1" in metrics and r["genotypes"][0]["top1"] == [pytest.approx(100 * metrics["top1"], abs=1e-3)]
    with pytest.raises(DnasError, match="dnas compare trains genotypes from scratch; .* dnas prune --eval-data"):
        dnas.compare({"space": {"name": "dario"}, "strategy": {"name": "proxy"}}, out=tmp_path / "d", log=lambda *_: None)


def test_the_random_arm_never_holds_a_genotype_twice(tmp_path, monkeypatch):
    """Each searched genotype gets its own size-matched random ones; a genotype drawn for an earlier
    one is excluded, else it would be trained and counted twice in the random arm."""
    import dnas.tools.compare as cmp

    calls = []
    real = cmp.sample_matched

    def spy(*args, exclude=(), **kw):
        calls.append(list(exclude))
        return real(*args, exclude=exclude, **kw)

    monkeypatch.setattr(cmp, "sample_matched", spy)
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    files = [str(space.random_genotype(random.Random(s)).save(tmp_path / f"g{s}.yaml")) for s in (1, 2)]
    r = dnas.compare({**TINY, "train": {**TINY["train"], "epochs": 0}}, genotypes=files, out=tmp_path / "c", log=lambda s: None,
                     random=2, train_seeds=1, threads=1)
    randoms = [dnas.load_genotype(f) for f in sorted((tmp_path / "c" / "genotypes").glob("random-*.yaml"))]
    assert len(randoms) == 4 and len(set(randoms)) == 4 and r["random"]["n"] == 4
    assert set(calls[1][1:]) == set(randoms[:2])  # the second draw excluded the first one's genotypes
