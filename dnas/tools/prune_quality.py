"""Is a DARIO pruning any good on data? The searched pruning against random prunings of the same budget.

- :func:`quality_report` (``dnas prune --eval-data D``): the unpruned model, the pruned model and R
  random prunings with the same budget, each measured by frozen-feature kNN and linear-probe top-1,
  the feature cosine to the unpruned model, parameters and images/s; the searched pruning's rank
  among the random ones, and a verdict in words.
- :func:`finetune_random_baseline` (``dnas train --pruned DIR --random-baseline R``): the thesis'
  fine-tuning (last kept block + head) of the pruned model and of R random prunings, same recipe.
- :func:`proxy_correlation` (``dnas prune-correlation``): the thesis' proxy-quality protocol (§6.1):
  N random pruned models, the proxy value and the accuracy of each, Spearman and Pearson ρ with
  confidence intervals.

"Same budget" means the same number of kept blocks and, with head gates, the same total number of
kept heads (spread at random over the kept blocks).
"""
from __future__ import annotations

import copy
import json
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dnas.errors import DnasError

Pruning = tuple[list[int], dict[int, list[int]]]  # (kept blocks, {block: kept heads} where some were cut)
METRICS = ("linear_top1", "knn_top1", "cosine_to_unpruned")  # higher is better, the first decides the verdict


@dataclass
class QualityConfig:
    """Options of the quality report. kNN: k 20, τ 0.1 (a weighted kNN as the SimSiam monitor, with a
    smaller k for small evaluation sets); linear probe: NASiam's protocol with 100 epochs."""

    random: int = 5  # R random prunings with the same budget
    eval_size: int = 1000  # at most this many training images, and as many test images (a seeded sample)
    knn_k: int = 20
    knn_t: float = 0.1
    linear_epochs: int = 100
    linear_lr: float = 0.1
    batch_size: int = 64  # feature extraction
    data_dir: str = "data"
    download: bool = False  # fetch a torchvision dataset missing under data_dir
    seed: int = 0

    def check(self):
        if self.random < 0 or self.eval_size < 2 or self.knn_k < 1 or self.linear_epochs < 0 or self.batch_size < 1:
            return "random >= 0, eval_size >= 2, knn_k >= 1, linear_epochs >= 0 and batch_size >= 1 are required"
        return None


# -- budgets and random prunings --------------------------------------------------------------------
def heads_per_block(space) -> list[int]:
    """Heads of each block of a ``dario`` space (0 everywhere without head gates)."""
    counts = [0] * space.num_blocks()
    if space.config.granularity != "block":
        for d in space.head_decisions():
            counts[int(d.cell[len("block"):])] += 1
    return counts


def budget_of(kept: list[int], keep_heads: dict[int, list[int]], heads: list[int]) -> tuple[int, int]:
    """(kept blocks, kept heads in the kept blocks) of a pruning."""
    return len(kept), sum(len(keep_heads[i]) if i in keep_heads else heads[i] for i in kept)


def sample_same_budget(heads: list[int], kept: list[int], keep_heads: dict[int, list[int]], granularity: str,
                       r: int, seed: int = 0, fixed: frozenset[int] = frozenset()) -> list[Pruning]:
    """``r`` random prunings, distinct from each other and from ``(kept, keep_heads)``, with its budget.

    Blocks are drawn uniformly among the sets of the same size; with head gates, the same total of kept
    heads is drawn uniformly among the heads of the drawn blocks. Fewer than ``r`` come back when the
    budget allows fewer distinct prunings.

    Args:
        heads: heads per block (:func:`heads_per_block`).
        kept: the kept blocks of the reference pruning.
        keep_heads: its kept heads, for the blocks that lost some.
        granularity: ``block``, ``head`` or ``both`` (with ``head`` every block is kept).
        r: how many prunings.
        seed: of the draw.
        fixed: blocks without a gate (they change the shape), in every pruning.

    Returns:
        A list of ``(kept blocks, {block: kept heads})``.
    """
    rng = random.Random(seed)
    n = len(heads)
    n_blocks, n_heads = budget_of(kept, keep_heads, heads)

    def key(p: Pruning):
        return tuple(p[0]), tuple(sorted((b, tuple(h)) for b, h in p[1].items()))

    seen, out = {key((sorted(kept), keep_heads))}, []
    for _ in range(100 * max(r, 1)):
        if len(out) == r:
            break
        gated = [i for i in range(n) if i not in fixed]
        blocks = list(range(n)) if granularity == "head" else sorted([*fixed, *rng.sample(gated, n_blocks - len(fixed))])
        cut: dict[int, list[int]] = {}
        if granularity != "block":
            pool = [(b, j) for b in blocks for j in range(heads[b])]
            chosen = rng.sample(pool, min(n_heads, len(pool)))
            for b in blocks:
                js = sorted(j for bb, j in chosen if bb == b)
                if len(js) < heads[b]:
                    cut[b] = js
        if key((blocks, cut)) not in seen:
            seen.add(key((blocks, cut)))
            out.append((blocks, cut))
    return out


def top_gates(gates: dict[str, float], heads: list[int], n_blocks: int, n_heads: int, granularity: str,
              fixed: frozenset[int] = frozenset()) -> Pruning:
    """The pruning keeping the ``n_blocks`` largest block gates and, among their heads, the ``n_heads``
    largest head gates (a search result recast to another result's budget). ``gates``: σ(α) by decision."""
    n = len(heads)
    if granularity == "head":
        blocks = list(range(n))
    else:
        gated = sorted((i for i in range(n) if i not in fixed), key=lambda i: (-gates[f"block{i}"], i))
        blocks = sorted([*fixed, *gated[:n_blocks - len(fixed)]])
    cut: dict[int, list[int]] = {}
    if granularity != "block":
        pool = sorted(((b, j) for b in blocks for j in range(heads[b])), key=lambda bj: (-gates[f"block{bj[0]}.head{bj[1]}"], bj))
        chosen = set(pool[:n_heads])
        for b in blocks:
            js = [j for j in range(heads[b]) if (b, j) in chosen]
            if len(js) < heads[b]:
                cut[b] = js
    return blocks, cut


def pruned_copy(original: nn.Module, blocks_path: str | None, pruning: Pruning) -> nn.Module:
    """A physically pruned copy of ``original`` (the original is untouched)."""
    from dnas.spaces.dario import apply_pruning

    return apply_pruning(copy.deepcopy(original), blocks_path, pruning[0], pruning[1]).eval()


# -- measuring -------------------------------------------------------------------------------------------
def require_labels(data: str, classes: int) -> None:
    """The quality report's kNN and linear probe need at least two classes."""
    if classes < 2:
        raise DnasError(f"--eval-data {data} has {classes} class(es); the kNN and linear probe need labelled images "
                        f"of 2 classes or more")


def eval_tensors(data: str, cfg: QualityConfig, shape=(3, 32, 32), model: nn.Module | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, test x, test y) of a labelled image dataset, at most ``eval_size`` each (seeded);
    an image folder at the model's input ``shape`` and normalisation (:func:`model_images`)."""
    from dnas.strategies.calibration import model_images

    ds = model_images(data, cfg.data_dir, shape, model, cfg.download)
    require_labels(data, ds.task.num_classes)
    g = torch.Generator().manual_seed(cfg.seed)

    def take(split):
        idx = torch.randperm(len(split), generator=g)[: cfg.eval_size].tolist()
        items = [split[i] for i in idx]
        x = torch.stack([torch.as_tensor(it[0], dtype=torch.float32) for it in items])
        if x.dim() != 4:
            raise DnasError(f"the quality report needs images (C, H, W); '{data}' gives items of shape {tuple(x.shape[1:])}")
        return x, torch.tensor([int(it[1]) for it in items])

    return (*take(ds.train), *take(ds.test))


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, shape, batch_size: int = 64) -> torch.Tensor:
    """Frozen pooled features of ``model`` (eval mode) on images ``x``, fitted to its input ``shape``."""
    from dnas.strategies.calibration import fit_input, pooled_features

    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([pooled_features(model, fit_input(b, shape).to(dev)).float().cpu() for b in x.split(batch_size)])


def figures(model: nn.Module, data: tuple, shape, cfg: QualityConfig, ref: torch.Tensor | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """kNN and linear-probe top-1 of ``model``'s frozen features on ``data`` (:func:`eval_tensors`), their
    cosine to the reference test features ``ref``, and its parameters; also returns its test features."""
    import torch.nn.functional as F

    from dnas.evaluate.ssl import knn_accuracy, linear_eval
    from dnas.tools.pruning import count_params

    trx, try_, tex, tey = data
    ftr, fte = features(model, trx, shape, cfg.batch_size), features(model, tex, shape, cfg.batch_size)
    ref = fte if ref is None else ref
    lin = linear_eval(ftr, try_, fte, tey, cfg.linear_epochs, cfg.linear_lr, seed=cfg.seed)
    cos = float(F.cosine_similarity(fte, ref, dim=1, eps=1e-8).mean()) if fte.shape == ref.shape else None
    return {"linear_top1": round(lin["top1"], 4), "knn_top1": round(knn_accuracy(ftr, try_, fte, tey, min(cfg.knn_k, len(try_)), cfg.knn_t), 4),
            "cosine_to_unpruned": None if cos is None else round(cos, 4), "params": count_params(model)}, fte


def measure(models: dict[str, nn.Module], data: str, shape, cfg: QualityConfig, bench_batch: int = 8,
            bench_rounds: int = 3, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """:func:`figures` of each model (the first one, the unpruned model, is the cosine's reference) and
    their images/s, measured interleaved in one run."""
    from dnas.tools.pruning import throughput

    tensors = eval_tensors(data, cfg, shape, next(iter(models.values())))
    out: dict[str, dict[str, Any]] = {}
    ref = None
    t0 = time.perf_counter()
    for name, m in models.items():
        out[name], fte = figures(m, tensors, shape, cfg, ref)
        ref = fte if ref is None else ref
    speed = throughput(models, shape, batch=bench_batch, rounds=bench_rounds)
    for name in models:
        out[name]["images_per_s"] = round(speed[name], 3)
    log(f"quality: {len(models)} models measured on {data} ({len(tensors[1])} train / {len(tensors[3])} test images) "
        f"in {time.perf_counter() - t0:.1f}s")
    return out


def compare(value: float, randoms: list[float]) -> dict[str, Any]:
    """Rank of ``value`` among itself and ``randoms`` (1 = best, ties share the better rank), how many
    random values it beats, and the random values' mean and sample std."""
    return {"value": value, "rank": 1 + sum(v > value for v in randoms), "of": len(randoms) + 1,
            "beats": sum(v < value for v in randoms), "ties": sum(v == value for v in randoms),
            "random_mean": round(statistics.fmean(randoms), 4) if randoms else None,
            "random_std": round(statistics.stdev(randoms), 4) if len(randoms) > 1 else None}


def verdict(c: dict[str, Any], what: str = "searched pruning") -> str:
    """A sentence on whether ``what`` beat the random prunings, from a :func:`compare` result."""
    r = c["of"] - 1
    if r == 0:
        return f"no random pruning with this budget exists to compare the {what} with"
    if c["beats"] == r:
        return f"the {what} beat every random pruning with the same budget on this data"
    ties = c.get("ties", 0)
    if ties == r:
        return f"the {what} scored the same as all {r} random prunings on this data ({c['value']:.4g}): this measure cannot tell them apart"
    if c["value"] > c["random_mean"]:
        return f"the {what} beat the random prunings' mean on this data, but not all of them ({c['beats']} of {r})"
    tied = f", ties {ties}" if ties else ""
    where = "at their mean" if c["value"] == c["random_mean"] else "below their mean"
    return f"the {what} did NOT beat random prunings on this data: it beats {c['beats']} of {r}{tied}, {where}"


def quality_report(space, original: nn.Module, kept: list[int], keep_heads: dict[int, list[int]], data: str,
                   config: dict[str, Any] | None = None, *, extra: dict[str, Pruning] | None = None, bench_batch: int = 8,
                   bench_rounds: int = 3, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The quality section of ``report.json``: unpruned, searched, ``extra`` and R random prunings.

    Args:
        space: the ``dario`` space of the search.
        original: the unpruned model (with its weights).
        kept: the searched pruning's kept blocks.
        keep_heads: its kept heads, for the blocks that lost some.
        data: a labelled dnas image dataset (``digits``, ``synthetic``, ``imagefolder:PATH``, ...).
        config: :class:`QualityConfig` options.
        extra: more prunings to measure and rank, by name (e.g. another search at the same budget).
        bench_batch: batch of the images/s measurement.
        bench_rounds: its interleaved rounds.
        log: where the summary goes.

    Returns:
        ``{"data", "config", "budget", "arms": {name: figures}, "searched": {metric: rank...}, "summary"}``.
    """
    from dnas.config import config_dict, make_config
    from dnas.spaces.dario import model_input_shape

    cfg = make_config(QualityConfig, dict(config or {}), "quality")
    heads = heads_per_block(space)
    gran = space.config.granularity
    randoms = sample_same_budget(heads, kept, keep_heads, gran, cfg.random, cfg.seed, space.fixed_blocks())
    prunings: dict[str, Pruning] = {"searched": (kept, keep_heads), **(extra or {})}
    prunings.update({f"random{i + 1}": p for i, p in enumerate(randoms)})
    models = {"unpruned": original.eval(), **{k: pruned_copy(original, space.config.blocks, p) for k, p in prunings.items()}}
    arms = measure(models, data, model_input_shape(original, space.config), cfg, bench_batch, bench_rounds, log)
    for k, (b, h) in prunings.items():
        arms[k].update(blocks_kept=list(b), heads_kept={str(i): v for i, v in h.items()})
    n_blocks, n_heads = budget_of(kept, keep_heads, heads)
    q: dict[str, Any] = {"data": data, "config": config_dict(cfg),
                         "budget": {"blocks": n_blocks, **({"heads": n_heads} if gran != "block" else {})},
                         "arms": arms, "random": len(randoms)}
    rnd = [k for k in prunings if k.startswith("random")]
    for name in ["searched", *(extra or {})]:
        q[name if name == "searched" else f"{name}_vs_random"] = {
            m: compare(arms[name][m], [arms[k][m] for k in rnd]) for m in METRICS if arms[name][m] is not None}
    q["summary"] = summary(q, extra=list(extra or {}))
    log(q["summary"])
    return q


def _pm(c: dict[str, Any]) -> str:
    std = f" ± {c['random_std']:.3f}" if c["random_std"] is not None else ""
    return f"{c['value']:.3f} (random {c['random_mean']:.3f}{std}; rank {c['rank']} of {c['of']})"


def summary(q: dict[str, Any], extra: list[str] = ()) -> str:
    """The quality section in words (what ``dnas prune --eval-data`` prints)."""
    a, s = q["arms"], q["searched"]
    u = a["unpruned"]
    lines = [(f"quality on {q['data']}: unpruned linear-probe top-1 {u['linear_top1']:.3f}, kNN {u['knn_top1']:.3f}, "
              f"{u['params'] / 1e6:.2f} M params, {u['images_per_s']:.1f} images/s")]
    if q["random"] == 0:
        lines.append(f"searched: linear {a['searched']['linear_top1']:.3f}, kNN {a['searched']['knn_top1']:.3f}; "
                     + verdict(s["linear_top1"]))
        return "\n".join(lines)
    lines.append(f"searched vs {q['random']} random prunings with the same budget: linear-probe {_pm(s['linear_top1'])}, "
                 f"kNN {_pm(s['knn_top1'])}" + (f", feature cosine {_pm(s['cosine_to_unpruned'])}" if "cosine_to_unpruned" in s else ""))
    lines.append(f"verdict (linear probe): {verdict(s['linear_top1'])}")
    for name in extra:
        c = q[f"{name}_vs_random"]["linear_top1"]
        lines.append(f"{name}: linear-probe {_pm(c)}; {verdict(c, name)}")
    return "\n".join(lines)


def compare_search(space_cfg: dict[str, Any], strategy: dict[str, Any], seed: int, out: Path, heads: list[int],
                   n_blocks: int, n_heads: int, granularity: str, progress: bool = False,
                   fixed: frozenset[int] = frozenset()) -> Pruning:
    """Run the proxy search with ``strategy`` into ``out`` and recast its gates to the given budget."""
    from dnas.api import search

    res = search(config={"space": {"name": "dario", **space_cfg}, "strategy": {"name": "proxy", **strategy}, "seed": seed},
                 out=out, progress=progress)
    gates = {k: v[0] for k, v in res.history[-1]["alphas"].items()}
    return top_gates(gates, heads, n_blocks, n_heads, granularity, fixed)


def evaluate_prune(space, original: nn.Module, kept: list[int], keep_heads: dict[int, list[int]], data: str,
                   options: dict[str, Any], *, out: Path, seed: int = 0, strategy: dict[str, Any] | None = None,
                   bench: tuple[int, int] = (8, 3), log: Callable[[str], None] = print) -> dict[str, Any]:
    """The quality section of ``dnas prune --eval-data``: :func:`quality_report`, and with
    ``options['compare_calibration']`` the other search (data-free when the exported one used the
    calibration term) recast to the same budget as an extra arm.

    Args:
        space: the ``dario`` space.
        original: the unpruned model.
        kept: the exported pruning's blocks.
        keep_heads: its kept heads, for the blocks that lost some.
        data: the labelled evaluation dataset.
        options: :class:`QualityConfig` options, plus ``compare_calibration``.
        out: the prune folder (the comparison search runs in ``out/compare-data-free``).
        seed: the search seed.
        strategy: the ``proxy`` strategy options of the search (None: no search was run).
        bench: (batch, rounds) of the images/s measurement.
        log: where the summary goes.

    Returns:
        The quality section.
    """
    options = dict(options)
    compare_cal = options.pop("compare_calibration", False)
    terms = dict((strategy or {}).get("terms") or {})
    extra: dict[str, Pruning] = {}
    if compare_cal:
        if strategy is None or "calibration" not in terms:
            raise DnasError("--compare-calibration compares the calibrated search with the data-free one: give --calibration D and no --keep-blocks")
        heads = heads_per_block(space)
        n_blocks, n_heads = budget_of(kept, keep_heads, heads)
        log(f"comparison: the data-free search, recast to the same budget ({n_blocks} blocks)")
        space_cfg = {k: v for k, v in space.config_dict().items() if k != "name"}
        other = {**strategy, "terms": {k: v for k, v in terms.items() if k != "calibration"}}
        extra["data-free search"] = compare_search(space_cfg, other, seed, Path(out) / "compare-data-free", heads, n_blocks, n_heads,
                                                   space.config.granularity, fixed=space.fixed_blocks())
    q = quality_report(space, original, kept, keep_heads, data, options, extra=extra, bench_batch=bench[0], bench_rounds=bench[1], log=log)
    q["searched_with"] = ("given blocks (no search)" if strategy is None else
                          f"proxy {strategy.get('proxy', 'var')}" + (" + calibration term" if "calibration" in terms else " (data-free)"))
    return q


# -- fine-tuned baselines ----------------------------------------------------------------------------
def finetune_random_baseline(directory: str | Path, r: int = 5, data: str = "digits", *, epochs: int = 1, lr: float = 1e-3,
                             batch_size: int = 32, data_config: dict[str, Any] | None = None, seed: int = 0,
                             out: str | Path | None = None, device: str = "cpu", log: Callable[[str], None] = print,
                             loggers: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune the pruned model of ``directory`` and ``r`` random prunings of the same budget the same
    way (last kept block + head, same data, epochs, lr and seed: thesis §6.1) and compare their top-1.

    The random prunings are cut from the unpruned model that ``dnas prune`` recorded in pruned.yaml
    (``source``: its weights file or timm's pretrained weights). ``loggers`` follow the searched
    pruning's fine-tuning (its epochs in ``out/history.jsonl``).

    Returns:
        ``{"searched": top1, "random": [top1...], "searched_vs_random": compare(...), "verdict": str, ...}``;
        also written to ``out/baseline.json`` when ``out`` is given (the fine-tuned pruned model too).
    """
    import yaml

    from dnas.registry import create_space
    from dnas.spaces.dario import build_model
    from dnas.tools.pruning import finetune_pruned, save_pruned

    d = Path(directory)
    meta = yaml.safe_load((d / "pruned.yaml").read_text()) if (d / "pruned.yaml").is_file() else None
    if not isinstance(meta, dict) or "source" not in meta:
        raise DnasError(f"'{d}' does not record the unpruned model it was cut from (pruned.yaml: source); "
                        f"random baselines need a folder written by dnas prune")
    if not meta["source"].get("weights") and not meta["source"].get("pretrained"):
        raise DnasError(f"'{d}' was cut from a randomly initialised model, which cannot be rebuilt for random baselines; "
                        f"prune with --weights FILE or --pretrained")
    space = create_space("dario", **meta["space"], **meta["source"])
    heads = heads_per_block(space)
    kept, keep_heads = meta["keep_blocks"], {int(k): v for k, v in meta["keep_heads"].items()}
    randoms = sample_same_budget(heads, kept, keep_heads, space.config.granularity, r, seed, space.fixed_blocks())
    original = build_model(space.config)
    quiet = lambda s: None

    def tune(folder, save=None, loggers=None) -> float:
        torch.manual_seed(seed)  # same head init and batch order for every arm
        return finetune_pruned(folder, data, epochs=epochs, lr=lr, batch_size=batch_size, data_config=data_config,
                               out=save, device=device, log=quiet, loggers=loggers)["top1"]

    searched = tune(d, Path(out) if out is not None else None, loggers)  # the loggers follow the searched pruning
    tops = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(randoms):
            folder = Path(tmp) / f"random{i + 1}"
            save_pruned(pruned_copy(original, space.config.blocks, p), meta["space"], p[0], p[1], folder)
            tops.append(tune(folder))
            log(f"random pruning {i + 1}/{len(randoms)} (blocks {p[0]}): top-1 {tops[-1]:.4f}")
    c = compare(searched, tops)
    result = {"searched": searched, "random": tops, "random_prunings": [{"blocks_kept": b, "heads_kept": {str(k): v for k, v in h.items()}}
                                                                         for b, h in randoms],
              "searched_vs_random": c, "epochs": epochs, "data": data, "verdict": verdict(c)}
    if out is not None:
        from dnas._io import atomic_write_text

        atomic_write_text(Path(out) / "baseline.json", json.dumps(result, indent=1))
    std = f" ± {c['random_std']:.4f}" if c["random_std"] is not None else ""
    log(f"fine-tuned top-1: searched {searched:.4f}; {len(tops)} random prunings {c['random_mean'] if tops else float('nan'):.4f}{std}; "
        f"{result['verdict']}")
    return result


# -- the proxy-correlation protocol (thesis §6.1) ----------------------------------------------------------
def correlations(x, y, confidence: float = 0.95, method: Literal["fisher", "bootstrap"] = "fisher",
                 n_resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Pearson and Spearman ρ of ``x`` and ``y`` with p-values (scipy) and confidence intervals.

    ``fisher``: ``tanh(atanh(ρ) ± z·se)`` with se = 1/√(n−3) for Pearson and √(1.06/(n−3)) for Spearman
    (Fieller, Hartley & Pearson, 1957). ``bootstrap``: percentile interval over ``n_resamples`` paired
    resamples.

    Args:
        x: the proxy values.
        y: the accuracies.
        confidence: level of the intervals.
        method: ``fisher`` or ``bootstrap``.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        ``{"pearson": {"r", "p", "ci"}, "spearman": {"r", "p", "ci"}, "n"}``.
    """
    import numpy as np
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 4 or len(y) != n:
        raise DnasError("correlations need at least 4 paired values")
    out: dict[str, Any] = {"n": n, "method": method, "confidence": confidence}
    zq = stats.norm.ppf(0.5 + confidence / 2)
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, n, n) for _ in range(n_resamples)] if method == "bootstrap" else []
    for name, fn, se in (("pearson", stats.pearsonr, 1 / math.sqrt(n - 3)), ("spearman", stats.spearmanr, math.sqrt(1.06 / (n - 3)))):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out[name] = {"r": None, "p": None, "ci": None}
            continue
        res = fn(x, y)
        r, p = float(res[0]), float(res[1])
        if method == "fisher":
            z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
            ci = [math.tanh(z - zq * se), math.tanh(z + zq * se)]
        else:
            vals = [float(fn(x[i], y[i])[0]) for i in boots if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
            ci = [float(np.quantile(vals, 0.5 - confidence / 2)), float(np.quantile(vals, 0.5 + confidence / 2))]
        out[name] = {"r": r, "p": p, "ci": ci}
    return out


def proxy_value(supernet, pruning: Pruning, proxy_config, terms=()) -> float:
    """The proxy of the gated model with hard gates on ``pruning`` (σ = 1 kept, 0 pruned): what the search's
    objective gives that pruning, the gated model being then exactly the pruned one."""
    from dnas.strategies.proxy import add_terms, proxy_objective, unfused_attention

    blocks, cut = pruning
    with torch.no_grad():
        for key, a in supernet.alphas.items():
            if key == "blocks":
                v = [math.inf if i in blocks else -math.inf for i in supernet.space.gated_blocks()]
            else:
                v = []
                for i, d in enumerate(supernet.space.head_decisions()):
                    b, j = int(d.cell[len("block"):]), int(d.name.rsplit("head", 1)[1])
                    v.append(math.inf if b in blocks and (b not in cut or j in cut[b]) else -math.inf)
            a.copy_(torch.tensor(v, dtype=a.dtype).view(-1, 1))
    with unfused_attention(supernet), torch.enable_grad():
        return float(add_terms(supernet, terms, proxy_objective(supernet, proxy_config, create_graph=False).detach())[0])


def random_prunings(heads: list[int], granularity: str, n: int, keep: int | None, seed: int,
                    fixed: frozenset[int] = frozenset()) -> list[Pruning]:
    """``n`` distinct random prunings: each gate kept with probability 1/2 (the space's random genotype),
    or with ``keep`` blocks, the blocks drawn uniformly (and each head kept with probability 1/2). The
    ``fixed`` blocks (no gate) are in every pruning and count in ``keep``."""
    rng = random.Random(seed)
    seen, out = set(), []
    for _ in range(100 * n):
        if len(out) == n:
            break
        nb = len(heads)
        gated = [i for i in range(nb) if i not in fixed]
        if granularity == "head":
            blocks = list(range(nb))
        elif keep is not None:
            blocks = sorted([*fixed, *rng.sample(gated, min(max(keep - len(fixed), 0), len(gated)))])
        else:
            blocks = sorted([*fixed, *(i for i in gated if rng.random() < 0.5)])
        cut = {}
        if granularity != "block":
            for b in blocks:
                js = [j for j in range(heads[b]) if rng.random() < 0.5]
                if len(js) < heads[b]:
                    cut[b] = js
        k = (tuple(blocks), tuple(sorted((b, tuple(v)) for b, v in cut.items())))
        if k not in seen:
            seen.add(k)
            out.append((blocks, cut))
    return out


def proxy_correlation(model: str = "mae-vit-base", *, data: str = "digits", n: int = 20, keep: int | None = None,
                      space_config: dict[str, Any] | None = None, strategy_config: dict[str, Any] | None = None,
                      quality_config: dict[str, Any] | None = None, method: str = "fisher", confidence: float = 0.95,
                      out: str | Path | None = None, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The thesis' proxy-quality protocol (§6.1): ``n`` random pruned models, the proxy value of each (the
    search's objective with hard gates) and its frozen-feature accuracy (linear probe, kNN) on ``data``;
    Spearman and Pearson ρ with confidence intervals, for the proxy, for each extra term of
    ``strategy_config['terms']`` alone, and for the kept parameter count (a trivial baseline).

    The search minimises the proxy: a useful proxy correlates negatively with accuracy.

    Args:
        model: the model to prune (as ``dnas prune --model``).
        data: labelled dnas image dataset for the accuracies.
        n: number of random pruned models (the thesis used 100).
        keep: draw prunings with exactly this many blocks (default: each gate kept with probability 1/2).
        space_config: more ``dario`` space options (model_kwargs, weights, pretrained, blocks, granularity).
        strategy_config: ``proxy`` strategy options (proxy, gamma, coef, terms...).
        quality_config: :class:`QualityConfig` options (eval_size, linear_epochs, knn_k...).
        method: confidence intervals by ``fisher`` z or ``bootstrap``.
        confidence: their level.
        out: folder for correlation.json and correlation.png.
        seed: of the draws.
        log: progress lines.

    Returns:
        ``{"n", "proxy", "models": [...], "correlations": {score: {metric: correlations(...)}}, "summary"}``.
    """
    from dnas.config import config_dict, make_config
    from dnas.registry import create_space
    from dnas.spaces.dario import DarioSupernet, build_model, model_input_shape
    from dnas.strategies.proxy import PROXY_TERMS, ProxyConfig, float64_reason

    scfg = {"model": model, **(space_config or {})}
    space = create_space("dario", **scfg)
    pcfg = make_config(ProxyConfig, dict(strategy_config or {}), "strategy")
    qcfg = make_config(QualityConfig, dict(quality_config or {}), "quality")
    original = build_model(space.config)
    net = DarioSupernet(space, space.tiny_task, model=copy.deepcopy(original)).eval()
    reason = float64_reason(net, pcfg)  # as the search does (a CNN's eval-mode BatchNorm on |θ|)
    if reason is not None:
        net.double()
        log(f"correlation: proxies in float64 ({reason})")
    heads = heads_per_block(space)
    prunings = random_prunings(heads, space.config.granularity, n, keep, seed, space.fixed_blocks())
    if len(prunings) < 4:
        raise DnasError(f"only {len(prunings)} distinct prunings exist with these options; need at least 4")
    t0 = time.perf_counter()
    plain = ProxyConfig(**{**config_dict(pcfg), "terms": {}})
    terms = {name: PROXY_TERMS[name](net, {**dict(opts or {}), "scale": "none", "weight": 1.0}) for name, opts in pcfg.terms.items()}
    rows = []
    for p in prunings:
        row = {"blocks_kept": p[0], "heads_kept": {str(k): v for k, v in p[1].items()}, "proxy": proxy_value(net, p, plain)}
        for name, t in terms.items():
            with torch.no_grad():
                row[name] = float(t(net))  # the hard gates of proxy_value are still set
        rows.append(row)
    log(f"correlation: proxy of {len(prunings)} random prunings in {time.perf_counter() - t0:.1f}s")
    shape = model_input_shape(original, space.config)
    tensors = eval_tensors(data, qcfg, shape, original)
    base, ref = figures(original, tensors, shape, qcfg)
    for row, p in zip(rows, prunings):  # one pruned model in memory at a time
        fig, _ = figures(pruned_copy(original, space.config.blocks, p), tensors, shape, qcfg, ref)
        row.update({m: fig[m] for m in ("linear_top1", "knn_top1", "params")})
    log(f"correlation: {len(rows)} pruned models measured on {data} in {time.perf_counter() - t0:.1f}s")
    scores = ["proxy", *terms, "params"]
    corr = {s: {m: correlations([r[s] for r in rows], [r[m] for r in rows], confidence, method, seed=seed)
                for m in ("linear_top1", "knn_top1")} for s in scores}
    result = {"model": model, "data": data, "n": len(rows), "keep": keep, "proxy": pcfg.proxy, "granularity": space.config.granularity,
              "unpruned": {m: base[m] for m in ("linear_top1", "knn_top1", "params")},
              "models": rows, "correlations": corr, "quality": config_dict(qcfg)}
    result["summary"] = correlation_summary(result)
    log(result["summary"])
    if out is not None:
        from dnas._io import atomic_write_text

        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        atomic_write_text(o / "correlation.json", json.dumps(result, indent=1))
        plot_correlation(rows, scores, o / "correlation.png")
    return result


def correlation_summary(res: dict[str, Any]) -> str:
    """One line per score: Spearman and Pearson ρ with the linear-probe accuracy, and their intervals."""
    lines = [(f"proxy correlation over {res['n']} random prunings of {res['model']} on {res['data']} "
              f"(the search minimises the proxy: a useful proxy has ρ < 0)")]
    for s, by in res["correlations"].items():
        c = by["linear_top1"]
        parts = []
        for k in ("spearman", "pearson"):
            if c[k]["r"] is None:
                parts.append(f"{k} undefined (constant values)")
            else:
                parts.append(f"{k} {c[k]['r']:+.3f} [{c[k]['ci'][0]:+.3f}, {c[k]['ci'][1]:+.3f}] (p {c[k]['p']:.2g})")
        lines.append(f"  {s} vs linear-probe top-1: " + "; ".join(parts))
    return "\n".join(lines)


def plot_correlation(rows: list[dict[str, Any]], scores: list[str], path: Path) -> None:
    """Accuracy against each score, one panel per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnas.tools.report import save_figure

    fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores), 3), squeeze=False)
    for ax, s in zip(axes[0], scores):
        ax.scatter([r[s] for r in rows], [r["linear_top1"] for r in rows], s=12)
        ax.set_xlabel(s)
        ax.set_ylabel("linear-probe top-1")
    save_figure(fig, path, dpi=100)
