"""One evaluation entry (``dnas train`` / ``dnas.train``) and the one training loop (dnas/engine/fit.py)."""
import json

import pytest
import torch
from torch import nn

import dnas
from dnas import DnasError
from dnas.api import evaluation_of
from dnas.cli import main
from dnas.engine.fit import batch_size, fit
from dnas.registry import SPACES

NASIAM = dict(backbone="tiny", backbone_width=8, proj_layers=2, pred_layers=2, dim=16, pred_dim=8, queue_size=16)


# -- the fit loop -------------------------------------------------------------------------------------
def test_fit_is_plain_sgd_with_the_documented_hooks():
    """w ← w − lr · ∂/∂w (w·x − y)² on one sample per step, by hand: x = 1, y = 2, w0 = 0, lr = 0.1
    gives w = 0.4, 0.72 and losses 4, 2.56 (the loss is read before each step)."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    data = [(torch.ones(1, 1), torch.full((1, 1), 2.0))]
    calls = []

    def loss_fn(batch):
        x, y = batch
        return {"loss": ((model(x) - y) ** 2).mean(), "twice": 2 * ((model(x) - y) ** 2).mean().detach()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    model.eval()
    res = fit(model, data, loss_fn, opt, epochs=2, scheduler=sched,
              on_epoch_start=lambda e: calls.append(("start", e, model.training)),
              after_step=lambda b, out: calls.append(("step", round(float(model.weight), 6))),
              on_epoch_end=lambda e, rec: calls.append(("end", e, rec["loss"])))
    # epoch 1: lr 0.1, w 0 -> 0.4; epoch 2: lr 0.05, w 0.4 -> 0.4 + 0.05·2·1.6 = 0.56
    assert calls == [("start", 0, False), ("step", 0.4), ("end", 0, pytest.approx(4.0)),
                     ("start", 1, True), ("step", 0.56), ("end", 1, pytest.approx(2.56))]
    assert [h["epoch"] for h in res.history] == [1, 2] and res.history[1]["twice"] == pytest.approx(5.12)
    assert res.steps == 2 and res.mean() == pytest.approx((4.0 + 2.56) / 2)


def test_fit_max_steps_grad_clip_and_batches_per_epoch():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []

    def batches(epoch):
        seen.append(epoch)
        return [(torch.randn(3, 2), torch.randn(3, 1))] * 2

    res = fit(model, batches, lambda b: {"loss": ((model(b[0]) - b[1]) ** 2).mean()}, opt, epochs=3, max_steps=3)
    assert res.steps == 3 and seen == [0, 1, 2] and res.samples == 9
    assert "loss" not in res.history[2]  # no step left for epoch 3
    big = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        big.weight.fill_(0.0)
    opt = torch.optim.SGD(big.parameters(), lr=1.0)
    fit(big, [(torch.full((1, 1), 100.0), torch.zeros(1, 1))], lambda b: {"loss": -(big(b[0])).sum()}, opt, epochs=1, grad_clip=0.5)
    assert float(big.weight) == pytest.approx(0.5)  # gradient −100 clipped to norm 0.5
    assert batch_size(((torch.zeros(5, 1), torch.zeros(5, 1)), None)) == 5


def test_a_nan_loss_stops_the_training_in_one_line_and_keeps_the_finished_epochs(tmp_path, capsys):
    """fit stops at the first non-finite loss (not training on to a NaN model and a 'finished' folder);
    the error is a DnasError (one CLI line) and a Diverged (a trial counts it as NaN/inf)."""
    from dnas.engine.fit import TrainingDiverged
    from dnas.engine.loop import Diverged

    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = iter([1.0, 2.0, float("nan"), 3.0])
    with pytest.raises(TrainingDiverged, match=r"^the training loss is nan at epoch 2, step 3; lower the learning rate") as e:
        fit(model, [(torch.zeros(2, 2),)] * 2, lambda b: {"loss": model(b[0]).sum() * 0 + next(losses)}, opt, epochs=2)
    assert isinstance(e.value, Diverged) and isinstance(e.value, DnasError)
    g = dnas.create_space("darts", C=4, layers=3, nodes=2).random_genotype(__import__("random").Random(0))
    out = tmp_path / "t"
    g.save(tmp_path / "g.yaml")
    assert main(["train", "--genotype", str(tmp_path / "g.yaml"), "--data", "synthetic", "--epochs", "2", "--set", "train.lr=1e30",
                 "--set", "train.grad_clip=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lower the learning rate" in err[0], err
    assert (out / "config.yaml").is_file() and not (out / "metrics.json").exists()  # no finished-looking folder


# -- routing ------------------------------------------------------------------------------------------
def test_each_space_declares_its_evaluation():
    assert SPACES.get("darts").evaluation == "supervised" and SPACES.get("ddarts").evaluation == "supervised"
    assert SPACES.get("nasiam-mlp").evaluation == "ssl"
    assert SPACES.get("dario").evaluation == "pruned"
    assert all(cls.evaluation in dnas.api.EVALUATIONS for _, cls in SPACES.items())
    assert evaluation_of("simsiam") == "ssl" and evaluation_of("resnet18") == "supervised"


def test_train_routes_a_nasiam_genotype_to_ssl_and_refuses_a_wrong_override():
    logs = []
    r = dnas.train("simsiam", data="digits", space_config={"backbone": "tiny", "dim": 16, "pred_dim": 4}, log=logs.append,
                   train_config={"epochs": 1, "batch_size": 256, "linear_epochs": 1, "knn_k": 5})
    assert {"top1", "top5", "knn_top1", "std"} <= set(r) and len(r["history"]) == 1
    assert any(line.startswith("linear evaluation:") for line in logs)
    with pytest.raises(DnasError, match="evaluated by 'ssl', not by supervised training"):
        dnas.train("simsiam", data="digits", evaluation="supervised", train_config={"epochs": 0})
    with pytest.raises(DnasError, match="evaluated by 'supervised': drop --ssl"):
        dnas.train("resnet18", data="digits", evaluation="ssl", train_config={"epochs": 0})
    with pytest.raises(DnasError, match="unknown evaluation 'sl'.*did you mean 'ssl'"):
        dnas.train("simsiam", evaluation="sl")


def test_train_routes_a_pruning_genotype_to_finetuning(tmp_path):
    from dnas.tools.pruning import prune

    kw = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 24, "num_heads": 3, "num_classes": 10}
    prune("vit_tiny_patch16_224", model_kwargs=kw, keep_blocks=[0, 2], out=tmp_path / "p", bench_batch=1, bench_rounds=1, log=lambda s: None)
    assert evaluation_of(tmp_path / "p" / "genotype.yaml") == "pruned"
    r = dnas.train(tmp_path / "p" / "genotype.yaml", "synthetic", train_config={"epochs": 1, "batch_size": 64},
                   out=tmp_path / "f", log=lambda s: None)
    assert 0.0 <= r["top1"] <= 1.0 and r["epochs"] == 1 and (tmp_path / "f" / "pruned.yaml").is_file()
    with pytest.raises(DnasError, match="unknown option 'momentum' for the fine-tuning of a pruned model"):
        dnas.train(tmp_path / "p", "synthetic", train_config={"momentum": 0.9})
    lone = tmp_path / "lone.yaml"
    lone.write_text((tmp_path / "p" / "genotype.yaml").read_text())
    with pytest.raises(DnasError, match="without its pruned model"):
        dnas.train(lone, "synthetic")


def test_supervised_train_writes_its_folder(tmp_path):
    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    g = space.random_genotype(__import__("random").Random(0))
    r = dnas.train(g, "synthetic", train_config={"epochs": 1, "batch_size": 64}, out=tmp_path / "t", log=lambda s: None)
    assert set(r["history"][0]) == {"epoch", "train_loss", "test_top1", "test_top5", "test_loss", "lr", "seconds"}
    assert r["history"][0]["lr"] == 0.025  # the rate epoch 1 trained with (DARTS' default), not the next one
    assert {p.name for p in (tmp_path / "t").iterdir()} == {"model.safetensors", "metrics.json", "genotype.yaml", "config.yaml",
                                                            "history.jsonl"}  # the checkpoints go once it finished
    assert [json.loads(line) for line in (tmp_path / "t" / "history.jsonl").read_text().splitlines()] == r["history"]
    first = (tmp_path / "t" / "metrics.json").read_text()
    dnas.train(g, "synthetic", train_config={"epochs": 2, "batch_size": 64}, out=tmp_path / "t", log=lambda s: None)
    assert (tmp_path / "t" / "metrics.json.previous").read_text() == first  # an API call into a used folder loses nothing
    assert [json.loads(line)["epoch"] for line in (tmp_path / "t" / "history.jsonl").read_text().splitlines()] == [1, 2]
    search = tmp_path / "search"  # a search's folder: its checkpoint is no training to resume, and stays untouched
    search.mkdir()
    for name in ("checkpoint.pt", "alphas.pt", "genotype.yaml"):
        (search / name).write_bytes(b"x")
    with pytest.raises(DnasError, match="holds a search's checkpoint, which this training would overwrite"):
        dnas.train(g, "synthetic", train_config={"epochs": 1}, out=search, log=lambda s: None)
    assert (search / "checkpoint.pt").read_bytes() == b"x"


class _Stop(Exception):
    pass


def _whole_and_stopped_in_epoch_3(g, cfg, tmp_path):
    """Train ``g`` uninterrupted into ``whole`` (returns its metrics), then into ``cut``, stopped during epoch 3
    (after the checkpoint of epoch 2), with a csv logger."""
    whole = dnas.train(g, "digits", train_config=cfg, out=tmp_path / "whole", log=lambda s: None)

    def stop_in_epoch_3(line):
        if line.startswith("epoch 3/"):
            raise _Stop

    with pytest.raises(_Stop):
        dnas.train(g, "digits", train_config=cfg, out=tmp_path / "cut", log=stop_in_epoch_3, loggers=["csv"])
    return whole


def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, capsys):
    """Killed during epoch 3 of 4: --resume runs epochs 3 and 4 again from the checkpoint of epoch 2 (weights, SGD
    momentum, cosine schedule, shuffling and cutout generator, torch's RNG for drop path) and ends bitwise where one
    uninterrupted training ends; the loggers and history.jsonl hold each epoch once."""
    from safetensors.torch import load_file

    from dnas.tools.show import show

    space = dnas.create_space("darts", C=4, layers=3, nodes=2)
    g = space.random_genotype(__import__("random").Random(0))
    cfg = {"epochs": 4, "batch_size": 128, "drop_path": 0.3, "cutout": 3}
    whole = _whole_and_stopped_in_epoch_3(g, cfg, tmp_path)
    assert not (tmp_path / "cut" / "metrics.json").exists() and (tmp_path / "cut" / "checkpoint.pt").exists()
    assert main(["train", "--genotype", str(tmp_path / "cut"), "--out", str(tmp_path / "cut")]) == 2
    assert "holds an unfinished training; continue it with dnas train --resume" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "cut")]) == 0
    assert f"training: 2 epochs; last train_loss {whole['history'][1]['train_loss']:.4g}" in capsys.readouterr().out
    assert f"unfinished (dnas train --resume {tmp_path / 'cut'})" in show(str(tmp_path / "cut"))
    assert main(["train", "--resume", str(tmp_path / "cut"), "--epochs", "9"]) == 2
    assert "--epochs cannot change it" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert "resuming after epoch 2/4" in capsys.readouterr().out
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["top1"] == whole["top1"] and [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    steps = [line.split(",")[0] for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:] if ",train_loss," in line]
    assert steps == ["1", "2", "3", "4"]  # epoch 3's record was never written before the stop
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 2
    assert "finished its training (metrics.json); nothing to resume" in capsys.readouterr().err
    assert f"training: 4 epochs; last train_loss {whole['history'][-1]['train_loss']:.4g}" in show(str(tmp_path / "cut"))
    assert f"finished: top1 {whole['top1']:.4g}" in show(str(tmp_path / "cut"))


def test_load_trained_gives_back_the_network_that_scored_the_reported_accuracy(tmp_path):
    from torch.utils.data import DataLoader

    from dnas.engine.data import DataConfig, load_datasets
    from dnas.evaluate.supervised import evaluate

    r = dnas.train("resnet18", "digits", train_config={"epochs": 1}, space_config={"C": 4}, out=tmp_path / "t", log=lambda s: None)
    net = dnas.load_trained(tmp_path / "t")  # C = 4 from config.yaml, not the genotype's 32; the digits task from metrics.json
    assert sum(p.numel() for p in net.stem.parameters()) < 1000 and not net.training
    test = load_datasets(DataConfig(name="digits")).test
    assert evaluate(net, DataLoader(test, batch_size=128), torch.device("cpu"))["top1"] == pytest.approx(r["top1"], abs=1e-9)
    ssl = dnas.train("simsiam", data="digits", space_config={"backbone": "tiny", "dim": 16, "pred_dim": 4}, out=tmp_path / "s",
                     train_config={"epochs": 1, "batch_size": 256, "linear_epochs": 1, "knn_k": 5}, log=lambda s: None)
    model = dnas.load_trained(tmp_path / "s")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ssl["params"]
    with pytest.raises(DnasError, match="is not a dnas train folder \\(missing genotype.yaml, model.safetensors, metrics.json\\)"):
        dnas.load_trained(tmp_path)


@pytest.mark.slow
def test_cli_train_of_a_nasiam_search_runs_ssl_without_the_flag(tmp_path, capsys):
    """dnas search on nasiam-mlp, then dnas train --genotype <its genotype.yaml> --data digits: SSL + linear eval."""
    run = tmp_path / "search"
    args = ["search", "--space", "nasiam-mlp", "--strategy", "darts", "--data", "digits", "--epochs", "1", "--no-progress",
            "--set", "data.batch_size=256", "--out", str(run)] + [x for k, v in NASIAM.items() for x in ("--set", f"space.{k}={v}")]
    assert main(args) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["train", "--genotype", str(run / "genotype.yaml"), "--data", "digits", "--epochs", "1",
                 "--set", "train.batch_size=256", "--set", "train.linear_epochs=1", "--set", "train.knn_k=5", "--out", str(out)]) == 0
    printed = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))
    assert {"top1", "knn_top1", "std"} <= set(printed)
    assert (out / "model.safetensors").is_file() and (out / "genotype.yaml").is_file()


def test_an_interrupted_ssl_pretraining_resumes_to_the_same_weights_and_queue(tmp_path, capsys):
    """MoCo v2 (a momentum target and a queue in the buffers) stopped during epoch 3 of 3: --resume gives the
    weights, the queue and the linear evaluation of an uninterrupted run; the history holds each epoch once."""
    from safetensors.torch import load_file

    g = dnas.create_space("nasiam-mlp", framework="mocov2", **NASIAM).random_genotype(__import__("random").Random(0))
    cfg = {"epochs": 3, "batch_size": 256, "linear_epochs": 2, "knn_k": 5, "knn_every": 2}
    whole = _whole_and_stopped_in_epoch_3(g, cfg, tmp_path)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    assert "resuming after epoch 2/3" in capsys.readouterr().out
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert any("queue" in k for k in a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert (resumed["top1"], resumed["knn_top1"]) == (whole["top1"], whole["knn_top1"])
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert dnas.load_trained(tmp_path / "cut")(torch.zeros(2, 1, 8, 8)).shape[0] == 2


def test_a_training_stopped_before_its_first_epoch_starts_over_in_its_folder(tmp_path, capsys):
    """Killed before its first checkpoint, a training leaves config.yaml alone: --resume has nothing to
    continue, so the same --out starts over (the old config kept as *.previous); a search's folder stays refused."""
    g = dnas.create_space("darts", C=4, layers=3, nodes=2).random_genotype(__import__("random").Random(0))
    g.save(tmp_path / "g.yaml")
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.yaml").write_text("train: {epochs: 5}\nseed: 0\n")
    g.save(out / "genotype.yaml")
    args = ["train", "--genotype", str(tmp_path / "g.yaml"), "--data", "synthetic", "--epochs", "0", "--out", str(out)]
    assert main(args) == 0 and (out / "config.yaml.previous").is_file() and (out / "metrics.json").is_file()
    search = tmp_path / "s"
    search.mkdir()
    (search / "config.yaml").write_text("strategy: {name: darts}\ntrain: {}\n")
    capsys.readouterr()
    assert main(args[:-1] + [str(search)]) == 2 and "already holds the results of a run" in capsys.readouterr().err
