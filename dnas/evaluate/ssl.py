"""Evaluation of self-supervised (NASiam) genotypes: pretraining with the derived heads, a kNN monitor,
a collapse monitor, linear evaluation on frozen features, and retrieval mean average precision.

Example:
    >>> import dnas
    >>> r = dnas.ssl_train("simsiam", data="digits", space_config={"backbone": "tiny", "dim": 64},
    ...                    train_config={"epochs": 5, "batch_size": 128})
    >>> r["top1"], r["knn_top1"]
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dnas.engine.fit import fit
from dnas.errors import DnasError


@dataclass
class SSLTrainConfig:
    """Defaults: SimSiam on CIFAR (800 epochs, batch 512, SGD lr 0.06 cosine, wd 5e-4, predictor at a
    fixed lr), NASiam's 100-epoch linear evaluation and a weighted kNN monitor (k 200, τ 0.1)."""

    epochs: int = 800
    batch_size: int = 512
    lr: float = 0.06
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    fix_pred_lr: bool = True  # SimSiam: the predictor keeps the base lr (no cosine decay)
    knn_k: int = 200
    knn_t: float = 0.1
    knn_every: int = 1  # kNN monitor every N epochs (0: off)
    linear_epochs: int = 100
    linear_lr: float = 0.1
    linear_batch_size: int = 256

    def check(self):
        if self.epochs < 0 or self.batch_size < 2 or self.lr <= 0 or self.linear_epochs < 0:
            return "epochs >= 0, batch_size >= 2 (batch statistics), lr > 0 and linear_epochs >= 0 are required"
        return None


# -- monitors and metrics -----------------------------------------------------------------------------
@torch.no_grad()
def extract_features(model: nn.Module, dataset, device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features ``model(x)`` (the backbone's representation) and labels of a plain dataset."""
    was = model.training
    model.eval()
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        feats.append(model(x.to(device)).float().cpu())
        labels.append(y)
    model.train(was)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_f, train_y, test_f, test_y, k: int = 200, t: float = 0.1) -> float:
    """Weighted kNN top-1 (Wu et al., 2018; the SimSiam/MoCo CIFAR monitor): the k most cosine-similar
    training features vote for their label with weight exp(sim / t)."""
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    sim = F.normalize(test_f, dim=1) @ F.normalize(train_f, dim=1).t()
    w, idx = sim.topk(min(k, train_f.shape[0]), dim=1)
    votes = torch.zeros(test_f.shape[0], n_cls).scatter_add_(1, train_y[idx], (w / t).exp())
    return float((votes.argmax(1) == test_y).float().mean())


def linear_eval(train_f, train_y, test_f, test_y, epochs: int = 100, lr: float = 0.1, batch_size: int = 256,
                seed: int = 0) -> dict[str, float]:
    """Linear evaluation on frozen features: a linear classifier on features standardised with the
    training statistics, SGD (momentum 0.9) with a cosine lr over ``epochs``; top-1/top-5 on the test set."""
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    a, b = (train_f - mean) / std, (test_f - mean) / std
    g = torch.Generator().manual_seed(seed)
    clf = nn.Linear(a.shape[1], n_cls)
    with torch.no_grad():
        clf.weight.normal_(0, 0.01, generator=g)
        clf.bias.zero_()
    opt = torch.optim.SGD(clf.parameters(), lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    fit(clf, lambda epoch: torch.randperm(a.shape[0], generator=g).split(batch_size),
        lambda idx: {"loss": F.cross_entropy(clf(a[idx]), train_y[idx])}, opt, epochs=epochs, scheduler=sched)
    with torch.no_grad():
        top = clf(b).topk(min(5, n_cls), dim=1).indices
    return {"top1": float((top[:, 0] == test_y).float().mean()), "top5": float((top == test_y[:, None]).any(1).float().mean())}


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sim(x1, x2) = x1·x2 / max(‖x1‖‖x2‖, 1e-8)`` for every pair of rows (NASiam eq. 5.5)."""
    return (a @ b.t()) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1)[None, :]).clamp_min(1e-8)  # eq. (5.5)


def mean_average_precision(query_f, query_y, gallery_f, gallery_y, threshold: float | None = None) -> float:
    """Mean over queries of the average precision of the gallery ranked by eq. (5.5) similarity.

    A gallery item is relevant when it has the query's label; with ``threshold`` τ only items with
    similarity > τ are retrieved. AP = (1/R) Σ_k P@k · rel_k over the retrieved list, R = the number
    of relevant items in the gallery; queries without any relevant item are skipped.
    """
    sim = cosine_matrix(query_f.float(), gallery_f.float())
    order = sim.argsort(dim=1, descending=True)
    aps = []
    for i in range(sim.shape[0]):
        rel = (gallery_y[order[i]] == query_y[i]).float()
        R = float(rel.sum())
        if R == 0:
            continue
        if threshold is not None:
            rel = rel * (sim[i, order[i]] > threshold).float()
        prec = rel.cumsum(0) / torch.arange(1, rel.numel() + 1)
        aps.append(float((prec * rel).sum()) / R)
    if not aps:
        raise DnasError("no query has a relevant gallery item (same label); check the labels of the query set")
    return sum(aps) / len(aps)


# -- pretraining ------------------------------------------------------------------------------------
def pretrain(model: nn.Module, train, plain, test, cfg: SSLTrainConfig, device: torch.device, log=print,
             seed: int = 0, num_workers: int = 0, run=None) -> list[dict[str, Any]]:
    """Self-supervised pretraining of ``model`` (a ``nasiam-mlp`` network) on ``train``, whose items are
    ``((v1, v2), y)``; ``plain`` (the un-augmented train set) and ``test`` feed the kNN monitor.
    With a ``run`` (:class:`dnas.engine.run.Run`) each epoch goes to its history and a checkpoint,
    and a run that holds one continues from it."""
    from dnas.spaces.siamese import std_warning

    model.to(device)
    pred = {id(p) for p in (model.predictor.parameters() if model.predictor is not None else [])}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in pred], "fix": False},
              {"params": [p for p in params if id(p) in pred], "fix": cfg.fix_pred_lr}]
    opt = torch.optim.SGD([g for g in groups if g["params"]], cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=len(train) > cfg.batch_size,
                        num_workers=num_workers)
    start, spent = run.restore_training(model, opt, g) if run is not None else (0, 0.0)
    if start:
        log(f"resuming after epoch {start}/{cfg.epochs}")
    clock = {"spent": spent}

    def schedule(epoch: int) -> None:
        clock["lr"] = cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))  # cosine schedule
        for group in opt.param_groups:
            group["lr"] = cfg.lr if group["fix"] else clock["lr"]
        clock["t0"] = time.perf_counter()

    def loss_fn(batch) -> dict[str, torch.Tensor]:
        (x1, x2), _ = batch
        out = model.loss(((x1.to(device), x2.to(device)), None))
        return {"loss": out["loss"], "std": out["std"]}

    def monitors(epoch: int, rec: dict[str, Any]) -> None:  # the kNN and collapse monitors
        rec.update(loss=rec.get("loss", 0.0), std=rec.get("std", 0.0), lr=clock["lr"], seconds=round(time.perf_counter() - clock["t0"], 3))
        if cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs):
            tf, ty = extract_features(model, plain, device)
            ef, ey = extract_features(model, test, device)
            rec["knn_top1"] = knn_accuracy(tf, ty, ef, ey, cfg.knn_k, cfg.knn_t)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} std {rec['std']:.4f}"
            + (f" knn_top1 {rec['knn_top1']:.4f}" if "knn_top1" in rec else ""))
        warn = std_warning(rec["std"], model.projector.out[0].out_features)
        if warn:
            log(f"warning: {warn}")
        if run is not None:
            clock["spent"] += rec["seconds"]
            run.append_history(rec)
            run.save_training(epoch + 1, clock["spent"], model, opt, g)

    history = fit(model, loader, loss_fn, opt, epochs=cfg.epochs, on_epoch_start=schedule, on_epoch_end=monitors,
                  start_epoch=start).history
    return run.history() if run is not None else history


def ssl_train(
    genotype,
    data: str = "digits",
    *,
    train_config: dict[str, Any] | None = None,
    space_config: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    log=print,
    loggers: list[Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Pretrain ``genotype``'s heads self-supervised on ``data`` (two augmented views, cosine lr, kNN and
    collapse monitors each epoch), then linear evaluation on the frozen backbone features: top-1/top-5.

    ``out`` receives ``genotype.yaml`` (with the space options used, so ``dnas retrieve OUT``
    rebuilds it) and ``config.yaml`` first, ``history.jsonl`` and a checkpoint every pretraining
    epoch (mirrored to ``loggers``), ``model.safetensors`` and ``metrics.json`` at the end;
    ``resume`` continues the pretraining whose checkpoint is in ``out``.
    """
    from dnas.config import make_config
    from dnas.engine.data import given_datasets, load_datasets, two_view_datasets
    from dnas.engine.distributed import resolve_device
    from dnas.engine.loggers import check_loggers
    from dnas.evaluate import finish_training, genotype_space_data, task_dict, training_run

    cfg = make_config(SSLTrainConfig, dict(train_config or {}), "train (--ssl)")
    g, space, dcfg = genotype_space_data(genotype, data, space_config, data_config)
    if space.evaluation != "ssl":
        raise DnasError(f"--ssl trains self-supervised spaces (nasiam-mlp); genotype space '{g.space}' is evaluated by "
                        f"'{space.evaluation}': drop --ssl")
    check_loggers(loggers)
    given = given_datasets(data)  # torch datasets given in Python: their own transforms, both times
    plain_sets = load_datasets(dataclasses.replace(dcfg, augment=False), given)
    space.check_task(plain_sets.task)
    plain = plain_sets.train  # features for kNN / linear evaluation
    datasets = two_view_datasets(load_datasets(dcfg, given), dcfg)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = space.build_network(g, datasets.task)
    t0 = time.perf_counter()
    with training_run(out, g.replace(config=space.config_dict()), space, dcfg, cfg, seed, device, loggers, resume) as run:
        history = pretrain(model, datasets.train, plain, datasets.test, cfg, dev, log=log, seed=seed,
                           num_workers=dcfg.num_workers, run=run)
    tf, ty = extract_features(model, plain, dev)
    ef, ey = extract_features(model, datasets.test, dev)
    lin = linear_eval(tf, ty, ef, ey, cfg.linear_epochs, cfg.linear_lr, cfg.linear_batch_size, seed)
    result = {
        "top1": lin["top1"], "top5": lin["top5"],
        "knn_top1": knn_accuracy(tf, ty, ef, ey, cfg.knn_k, cfg.knn_t),
        "std": history[-1]["std"] if history else None,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "seconds": round(time.perf_counter() - t0, 2),
        "task": task_dict(datasets.task),  # what load_trained rebuilds the network for
        "history": history,
    }
    log(f"linear evaluation: top1 {result['top1']:.4f} top5 {result['top5']:.4f} (knn top1 {result['knn_top1']:.4f})")
    if out is not None:
        finish_training(out, model.state_dict(), result)
    return result


def retrieve(run_dir: str | Path, data: str = "digits", *, data_config: dict[str, Any] | None = None,
             threshold: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Retrieval with a pretrained network: queries = the test split, gallery = the training split
    (un-augmented), ranked by eq. (5.5) on the backbone features; relevant = same label; mean AP.

    ``run_dir`` is the output folder of :func:`ssl_train` (``genotype.yaml`` + ``model.safetensors``).
    """
    from safetensors.torch import load_file

    from dnas.config import make_config
    from dnas.engine.data import DataConfig, load_datasets
    from dnas.engine.distributed import resolve_device
    from dnas.genotype import load_genotype
    from dnas.registry import create_space

    run = Path(run_dir)
    if not (run / "genotype.yaml").is_file() or not (run / "model.safetensors").is_file():
        raise DnasError(f"'{run}' holds no genotype.yaml + model.safetensors; pass the --out folder of 'dnas train --ssl'")
    g = load_genotype(run / "genotype.yaml")
    space = create_space(g.space, **dict(g.config))
    if space.evaluation != "ssl":
        raise DnasError(f"'{run}' holds a network of space '{g.space}' ({space.evaluation} evaluation); retrieval ranks "
                        f"the features of a self-supervised one: pass the --out of dnas train on a nasiam-mlp genotype")
    dcfg = make_config(DataConfig, {"name": data, "augment": False, **(data_config or {})}, "data")
    datasets = load_datasets(dcfg)
    model = space.build_network(g, datasets.task)
    try:
        model.load_state_dict(load_file(str(run / "model.safetensors")))
    except RuntimeError:
        raise DnasError(f"the weights in '{run}' do not fit its genotype on data '{data}'; retrieve on the data it was trained on") from None
    dev = resolve_device(device)
    model.to(dev)
    gf, gy = extract_features(model, datasets.train, dev)
    qf, qy = extract_features(model, datasets.test, dev)
    return {"mAP": mean_average_precision(qf, qy, gf, gy, threshold), "queries": len(qy), "gallery": len(gy), "threshold": threshold}
