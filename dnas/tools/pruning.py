"""``dnas prune``: DARIO end to end — gate search, physically smaller model, report (thesis §6.1).

``prune`` searches the ``dario`` space with the ``proxy`` strategy (or takes ``keep_blocks``), builds
the pruned model (blocks removed, heads sliced out of qkv/proj), and writes to ``out``:
``model.safetensors`` + ``pruned.yaml`` (rebuilt by :func:`load_pruned`), ``alphas.json`` and
``alphas.png`` (σ(α) per block against the threshold), ``report.json`` (parameters and inference
throughput before/after, measured in the same process on the same batch).
:func:`finetune_pruned` fine-tunes the last kept block + head on a dataset (the thesis' recipe).
"""
from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnas.errors import DnasError
from dnas.evaluate.pruned import FORMAT, _save_model, finetune_pruned, load_pruned, save_pruned  # noqa: F401  (re-exported)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def throughput(models: dict[str, nn.Module], input_shape, batch: int = 8, rounds: int = 3, min_seconds: float = 0.2) -> dict[str, float]:
    """Images (or sequences) per second of each model (eval, no grad, fused attention), interleaved
    rounds, median per model. A text encoder gets random ``inputs_embeds`` of ``input_shape``."""
    from dnas.spaces.dario import call_model

    x = torch.randn(batch, *input_shape)
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        call_model(m.eval(), x)  # warm-up
    for _ in range(rounds):
        for k, m in models.items():
            n, t = 0, time.perf_counter()
            while True:
                call_model(m, x)
                n += 1
                if time.perf_counter() - t >= min_seconds:
                    break
            times[k].append((time.perf_counter() - t) / n)
    return {k: batch / statistics.median(v) for k, v in times.items()}


# -- budgets -----------------------------------------------------------------------------------
BUDGETS = ("blocks", "heads", "params", "speedup")


def parse_budget(budget: str | dict[str, float] | None) -> dict[str, float]:
    """``"blocks=6"``, ``"params=0.5"``, ``"speedup=2"``, ``"heads=K"`` (or a dict of them;
    ``blocks`` and ``heads`` may be combined: ``"blocks=8,heads=40"``) as a checked dict.

    Raises:
        DnasError: an unknown kind or a value out of range (one line).
    """
    if budget is None or budget == {}:
        return {}
    if isinstance(budget, str):
        out = {}
        for part in budget.split(","):
            k, sep, v = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[k.strip()] = float(v)
            except ValueError:
                raise DnasError(f"budget '{budget}' is not KIND=VALUE; use blocks=6, params=0.5, speedup=2 or heads=K") from None
        budget = out
    bad = [k for k in budget if k not in BUDGETS]
    if bad:
        raise DnasError(f"unknown budget '{bad[0]}'; use blocks=K, heads=K, params=FRACTION or speedup=FACTOR")
    b = {k: float(v) for k, v in budget.items()}
    if len(b) > 1 and set(b) - {"blocks", "heads"}:
        raise DnasError("only blocks= and heads= combine; params= and speedup= stand alone")
    for k in ("blocks", "heads"):
        if k in b and (b[k] < 0 or b[k] != int(b[k])):
            raise DnasError(f"budget {k}={budget[k]} must be a whole number >= 0")
    if "params" in b and not 0 < b["params"] <= 1:
        raise DnasError(f"budget params={b['params']} is the fraction of parameters kept: in (0, 1]")
    if "speedup" in b and b["speedup"] < 1:
        raise DnasError(f"budget speedup={b['speedup']} is a factor >= 1")
    return b


@dataclass
class ModelInfo:
    """What a budget needs to know of a model: its parameters, each gate's, its blocks' cost.

    ``gate_params[g]`` = parameters removed with gate ``g`` alone (a block: all of it; a head: its
    qkv rows and proj columns); ``block_cost[b]`` = share of the inference time in block ``b``
    (measured, or estimated from its parameters); ``other_cost`` the rest (stem, head)."""

    total_params: int
    gate_params: dict[str, int]
    heads_of: dict[str, list[str]] = field(default_factory=dict)  # block gate -> its head gates
    attn_extra: dict[str, int] = field(default_factory=dict)  # block gate -> params gone with its last head
    block_cost: dict[str, float] = field(default_factory=dict)
    other_cost: float = 0.0
    fixed_blocks: int = 0  # blocks without a gate (they change the shape): always kept

    def params_kept(self, drop: set[str]) -> int:
        """Parameters of the model with the gates in ``drop`` closed (all others open)."""
        n = self.total_params
        for b, p in self.gate_params.items():
            if "." not in b:  # block gate
                if b in drop:
                    n -= p
                    continue
                heads = self.heads_of.get(b, [])
                dropped = [h for h in heads if h in drop]
                n -= sum(self.gate_params[h] for h in dropped)
                if heads and len(dropped) == len(heads):
                    n -= self.attn_extra.get(b, 0)
        return n

    def speedup(self, drop: set[str]) -> float:
        """Predicted inference speed-up of closing the block gates in ``drop``."""
        full = self.other_cost + sum(self.block_cost.values())
        kept = self.other_cost + sum(c for b, c in self.block_cost.items() if b not in drop)
        return full / kept if kept > 0 else float("inf")


def model_info(space, model: nn.Module, block_cost: dict[str, float] | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of ``model`` (unpruned) in the ``dario`` space ``space``."""
    from dnas.spaces.dario import _attention, _head_dim, find_blocks

    blocks = [b for _, c in find_blocks(model, space.config.blocks) for b in c]
    total = count_params(model)
    gp, heads_of, extra = {}, {}, {}
    gran = space.config.granularity
    for i, b in enumerate(blocks):
        gp[f"block{i}"] = count_params(b)
        if gran != "block":
            a = _attention(b)
            d = _head_dim(a)
            per = a.qkv.in_features * 3 * d + (3 * d if a.qkv.bias is not None else 0) + a.proj.out_features * d
            names = [f"block{i}.head{j}" for j in range(a.num_heads)]
            heads_of[f"block{i}"] = names
            gp.update({n: per for n in names})
            extra[f"block{i}"] = count_params(a) - per * a.num_heads  # proj bias, q/k norms: gone with the last head
    if block_cost is None:  # a block's cost ∝ its parameters (same tokens in every block of a ViT)
        block_cost = {f"block{i}": float(gp[f"block{i}"]) for i in range(len(blocks))}
        other = float(total - sum(block_cost.values()))
    else:
        other = block_cost.pop("other", 0.0)
    return ModelInfo(total, gp, heads_of, extra, dict(block_cost), other, len(space.fixed_blocks()))


def _ranked(scores: dict[str, float], names) -> list[str]:
    """Gate names best first (score, then position: stable for ties)."""
    order = {n: i for i, n in enumerate(scores)}
    return sorted(names, key=lambda n: (-scores[n], order[n]))


def keep_for_budget(scores: dict[str, float], budget: str | dict[str, float], info: ModelInfo,
                    threshold: float = 0.65) -> dict[str, list[str]]:
    """The gates kept under ``budget``, ranked by ``scores`` (σ(α), or a random ranking for a baseline).

    ``blocks=K`` leaves K blocks (the K best block gates, less the ungated blocks), ``heads=K`` the K best head gates; ``params=f`` drops
    the worst gates (blocks and heads ranked together) until at most a fraction f of the parameters
    is left; ``speedup=s`` drops the worst blocks until the predicted speed-up is at least s.
    Gates the budget does not rule are kept when their score is ≥ ``threshold``. A single budget's
    result is what one threshold on the scores would give (see :func:`equivalent_threshold`);
    ``blocks`` and ``heads`` together rank blocks and heads apart, so there may be none.

    Args:
        scores: gate name (``block3``, ``block3.head1``) -> score; higher is kept first.
        budget: see :func:`parse_budget`.
        info: from :func:`model_info`.
        threshold: for the gates the budget leaves free.

    Returns:
        The choices of a ``dario`` genotype: ``{gate: ["keep"] or []}``.

    Raises:
        DnasError: a budget the model cannot meet (more blocks than it has, a head budget
        without head gates).
    """
    from dnas.spaces.dario import KEEP

    b = parse_budget(budget)
    blocks = [n for n in scores if "." not in n]
    heads = [n for n in scores if "." in n]
    keep = {n for n, v in scores.items() if v >= threshold}
    if "blocks" in b:  # K blocks left in the model, the ungated ones among them
        k = int(b["blocks"])
        if not blocks or k > len(blocks) + info.fixed_blocks:
            raise DnasError(f"budget blocks={k}: the model has {len(blocks)} gated blocks (granularity block or both)"
                            + (f" and {info.fixed_blocks} that change the shape" if info.fixed_blocks else ""))
        if k < info.fixed_blocks:
            raise DnasError(f"budget blocks={k}: {info.fixed_blocks} blocks change the shape and are always kept; ask at least "
                            f"blocks={info.fixed_blocks}")
        keep = (keep - set(blocks)) | set(_ranked(scores, blocks)[:k - info.fixed_blocks])
    if "heads" in b:  # K heads left in the model: ranked among the heads of the kept blocks
        k = int(b["heads"])
        live = [h for h in heads if not blocks or h.split(".")[0] in keep]
        if not heads:
            raise DnasError(f"budget heads={k} needs head gates; use granularity head or both (--granularity)")
        if k > len(live):
            raise DnasError(f"budget heads={k}: the kept blocks hold {len(live)} gated heads; keep more blocks or ask fewer heads")
        keep = (keep - set(heads)) | set(_ranked(scores, live)[:k])
    if "params" in b:
        keep = set(scores)
        limit = b["params"] * info.total_params
        for n in reversed(_ranked(scores, scores)):
            if info.params_kept(set(scores) - keep) <= limit:
                break
            keep.discard(n)
        if info.params_kept(set(scores) - keep) > limit:
            raise DnasError(f"budget params={b['params']}: even with every gate closed {info.params_kept(set(scores)) / info.total_params:.3f} "
                            f"of the parameters stay (stem and head); raise it")
    if "speedup" in b:
        if not blocks:
            raise DnasError("budget speedup= drops blocks; use granularity block or both")
        keep = (keep - set(blocks)) | set(blocks)
        for n in reversed(_ranked(scores, blocks)):
            if info.speedup(set(scores) - keep) >= b["speedup"]:
                break
            keep.discard(n)
    return {n: [KEEP] if n in keep else [] for n in scores}


def check_budget(space, budget: dict[str, float]) -> None:
    """Refuse, before any search, a budget that no ranking of the gates can meet.

    The gates are scored so that the budget is as easy as it can be (every gate open, the blocks
    with the most heads first); a budget refused here is refused whatever the search finds. The
    measured ``speedup`` is checked after the search, when the pruned model can be timed."""
    from dnas.spaces.dario import model_skeleton

    decisions = space.decisions()
    heads = {d.name.split(".")[0]: 0 for d in decisions}
    for d in decisions:
        if "." in d.name:
            heads[d.name.split(".")[0]] += 1
    scores = {d.name: 1.0 + heads.get(d.name, 0) if "." not in d.name else 1.0 for d in decisions}
    info = ModelInfo(0, {}, fixed_blocks=len(space.fixed_blocks()))
    if "params" in budget:  # parameter counts only
        info = model_info(space, model_skeleton(space.config))
    rest = {k: v for k, v in budget.items() if k != "speedup"}
    if rest:
        keep_for_budget(scores, rest, info, threshold=0.0)
    if "speedup" in budget and not any("." not in n for n in scores):
        raise DnasError("budget speedup= drops blocks; use granularity block or both")


def equivalent_threshold(scores: dict[str, float], choices: dict[str, list[str]]) -> dict[str, float | None]:
    """The threshold on ``scores`` that keeps exactly ``choices``: ``{"low", "high", "threshold"}``
    (any t with low < t ≤ high; ``threshold`` the midpoint), None where no single one does."""
    live = {n: c for n, c in choices.items() if "." not in n or choices.get(n.split(".")[0], [1])}  # heads of removed blocks do not count
    kept = [scores[n] for n, c in live.items() if c]
    dropped = [scores[n] for n, c in live.items() if not c]
    low = max(dropped) if dropped else 0.0
    high = min(kept) if kept else 1.0
    if kept and dropped and low >= high:
        return {"low": low, "high": high, "threshold": None}
    return {"low": round(low, 6), "high": round(high, 6), "threshold": round((low + high) / 2, 6)}


def plot_alphas(gates: dict[str, float], threshold: float, path: Path) -> None:
    """σ(α) per block against the threshold (the thesis' figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(gates)
    vals = [gates[n] for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names)), 3))
    ax.bar(range(len(names)), vals, color=["tab:blue" if v >= threshold else "tab:gray" for v in vals])
    ax.axhline(threshold, color="tab:red", ls="--", label=f"threshold {threshold}")
    ax.set_xticks(range(len(names)), [n.replace("block", "") for n in names])
    ax.set_xlabel("block")
    ax.set_ylabel("σ(α)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    from dnas.tools.report import save_figure

    save_figure(fig, path, dpi=100)


def prune(
    model: str = "mae-vit-base",
    *,
    out: str | Path,
    weights: str | None = None,
    pretrained: bool = False,
    blocks: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    weights_prefix: str | None = None,
    granularity: str = "block",
    proxy: str = "var",
    threshold: float = 0.65,
    iters: int = 500,
    warm_start: int = 100,
    keep_blocks: list[int] | None = None,
    budget: str | dict[str, float] | None = None,
    input_size: list[int] | None = None,
    seq_len: int | None = None,
    strategy_config: dict[str, Any] | None = None,
    space: Any = None,
    strategy: Any = "proxy",
    bench_batch: int = 8,
    bench_rounds: int = 3,
    seed: int = 0,
    progress: bool = True,
    eval_data: str | None = None,
    quality: dict[str, Any] | None = None,
    loggers: list[Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prune ``model`` without data and export the smaller model; returns the report (also report.json).

    Args:
        model: ``mae-vit-base``, ``mobilevit-s``, a timm name, ``hf:LOCAL_DIR`` or ``package.module:factory``.
        out: folder for the pruned model, α, plot and report.
        weights: a checkpoint (timm models: through timm's loader, position embeddings resampled).
        weights_prefix: the model's tensors in ``weights`` are under this prefix (``teacher.backbone.``);
            None: where the names do not fit, the prefix under which the file holds them.
        budget: ``blocks=K``, ``heads=K``, ``params=FRACTION`` or ``speedup=FACTOR`` (see
            :func:`keep_for_budget`); None keeps the gates with σ(α) ≥ ``threshold`` (0.65, the thesis').
        input_size: (C, H, W) of the batch of ones where the model does not tell.
        seq_len: tokens of a text encoder's constant ``inputs_embeds``.
        keep_blocks: skip the search and keep these blocks.
        space: a ``dario`` SearchSpace object; its configuration replaces model, weights, weights_prefix, blocks,
            granularity, input_size and seq_len.
        strategy: a registered strategy name or a Strategy object (its name and configuration are
            used; ``strategy_config`` entries override them).
        eval_data: a dataset to judge the pruning on: the report gets a ``quality`` section
            (:func:`dnas.tools.prune_quality.quality_report`; options in ``quality``: random,
            eval_size, ..., and ``compare_calibration``).
        loggers: mirror the search's history to these loggers (``tensorboard``, ``mlflow``, ``csv``,
            or ``NAME=DEST``), as ``dnas search --logger``.

    Returns:
        The report (also written to ``out/report.json``).

    Raises:
        DnasError: bad model, weights, budget or output folder (one line).
    """
    from dnas.api import search
    from dnas.registry import create_space
    from dnas.spaces.dario import KEEP, build_model, model_input_shape

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DnasError(f"--out '{out}' is a file; give a folder for the pruned model")
    if (out / "model.safetensors").exists():
        raise DnasError(f"'{out}' already holds a pruned model; choose another --out")
    if (out / "checkpoint.pt").exists():
        raise DnasError(f"'{out}' holds a search's checkpoint, which the pruning would overwrite; choose another --out")
    budget_d = parse_budget(budget)
    if budget_d and keep_blocks is not None:
        raise DnasError("give a budget or keep_blocks (--keep-blocks), not both")
    from dnas.config import config_dict

    if space is not None:
        if getattr(space, "name", None) != "dario":
            raise DnasError(f"prune needs a 'dario' space, not '{getattr(space, 'name', type(space).__name__)}'")
        space_cfg = config_dict(space.config)
        space_cfg.pop("name", None)
        model, weights, pretrained = space_cfg["model"], space_cfg.get("weights"), space_cfg.get("pretrained", False)
        if keep_blocks is not None:
            space_cfg["granularity"] = "block"
    else:
        space_cfg = {"model": model, "model_kwargs": dict(model_kwargs or {}), "weights": weights, "pretrained": pretrained,
                     "weights_prefix": weights_prefix,
                     "blocks": blocks, "granularity": "block" if keep_blocks is not None else granularity,
                     "input_size": list(input_size) if input_size else None, "seq_len": seq_len}
    if isinstance(strategy, str):
        strat_name, strat_base = strategy, {}
    else:
        strat_name, strat_base = strategy.name, {k: v for k, v in config_dict(strategy.config).items() if k != "name"}
    early = create_space("dario", **space_cfg)
    early.decisions()  # a bad model name or blocks path fails before any file is written
    if budget_d and keep_blocks is None:
        check_budget(early, budget_d)  # an impossible budget fails before the search, not after it
    _check_data(eval_data, quality, strategy_config)  # so does a dataset that is missing or unlabelled
    _set_aside(out, log)
    t0 = time.perf_counter()
    alphas: dict[str, float] = {}
    if keep_blocks is None:
        strat = strat_base or {"proxy": proxy, "threshold": threshold, "iters": iters, "warm_start": warm_start}
        strat = {**strat, **(strategy_config or {})}
        threshold = strat.get("threshold", threshold)
        result = search(config={"space": {"name": "dario", **space_cfg}, "strategy": {"name": strat_name, **strat}, "seed": seed},
                        out=out, progress=progress, loggers=loggers)
        genotype = result.genotype
        space = create_space("dario", **space_cfg)
        alphas = _final_gates(space, out / "alphas.pt")
    else:
        space = create_space("dario", **space_cfg)
        n = space.num_blocks()
        bad = [b for b in keep_blocks if not 0 <= b < n]
        if bad:
            raise DnasError(f"--keep-blocks {bad} out of range: the model has blocks 0..{n - 1}")
        genotype = space.genotype({f"block{i}": [KEEP] if i in keep_blocks else [] for i in space.gated_blocks()})
    search_s = time.perf_counter() - t0
    # weights that do not load stop here, before --keep-blocks writes a file
    original = build_model(space.config)
    if keep_blocks is not None:
        out.mkdir(parents=True, exist_ok=True)
        genotype.save(out / "genotype.yaml")
    shape = model_input_shape(original, space.config)
    budget_report: dict[str, Any] = {}
    if budget_d:
        if not alphas:
            raise DnasError("a budget ranks the searched gates: run a search (iters or warm_start > 0)")
        genotype, budget_report = _apply_budget(space, original, alphas, budget_d, threshold, shape, bench_batch, bench_rounds, log)
        genotype.save(out / "genotype.yaml")
    elif alphas:
        budget_report = {"equivalent_threshold": threshold}
    pruned = space.build_network(genotype, model=original)
    kept, heads = space.kept(genotype)
    if not kept and space.block_decisions() and not budget_d and keep_blocks is None:
        warnings.warn(f"every block's gate ended below the threshold ({threshold}): the pruned model is the stem and "
                      "head alone; choose the size with a budget (--budget blocks=K) or a lower --threshold", stacklevel=2)
    save_pruned(pruned, space.config_dict(), kept, heads, out)
    from dnas._io import atomic_write_text

    if alphas:
        atomic_write_text(out / "alphas.json", json.dumps(alphas, indent=1))
        block_gates = {k: v for k, v in alphas.items() if "." not in k}
        if block_gates:
            plot_alphas(block_gates, threshold, out / "alphas.png")
    speed = throughput({"before": original, "after": pruned}, shape, batch=bench_batch, rounds=bench_rounds)
    report = {
        "model": model, "granularity": space.config.granularity, "blocks_total": space.num_blocks(),
        **({"blocks_fixed": sorted(space.fixed_blocks())} if space.fixed_blocks() else {}),
        # {block: its kept heads}, for the kept blocks that lost heads (as keep_heads in pruned.yaml)
        "blocks_kept": kept, "heads_kept": {str(b): v for b, v in heads.items()}, **_head_counts(space, kept, heads),
        "params_before": count_params(original), "params_after": count_params(pruned),
        "images_per_s_before": round(speed["before"], 3), "images_per_s_after": round(speed["after"], 3),
        "speedup": round(speed["after"] / speed["before"], 3), "bench_batch": bench_batch, "search_seconds": round(search_s, 2),
        "weights": weights or ("timm pretrained" if pretrained else f"{model[3:]} (hf folder)" if str(model).startswith("hf:")
                               else "random init (no --weights)"),
        "input_shape": list(shape), **budget_report,
    }
    if eval_data is not None:
        from dnas.tools.prune_quality import evaluate_prune

        report["quality"] = evaluate_prune(space, original, kept, heads, eval_data, dict(quality or {}), out=out, seed=seed,
                                           strategy=None if keep_blocks is not None else strat, bench=(bench_batch, bench_rounds), log=log)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    eq = budget_report.get("equivalent_threshold")
    same = f"= threshold {eq}" if eq is not None else "no single threshold gives it: blocks and heads ranked apart"
    how = f"budget {budget_report['budget']} ({same}); " if budget_d else ""
    head_note = f", {report['heads_left']}/{report['heads_total']} heads" if "heads_total" in report else ""
    fixed = f" (blocks {report['blocks_fixed']} change the shape: kept, not gated)" if "blocks_fixed" in report else ""
    log(f"{how}kept {len(kept)}/{report['blocks_total']} blocks {kept}{fixed}{head_note}; params {report['params_before'] / 1e6:.2f} M -> "
        f"{report['params_after'] / 1e6:.2f} M; {report['images_per_s_before']:.1f} -> {report['images_per_s_after']:.1f} "
        f"images/s (x{report['speedup']:.2f}); search {search_s:.1f}s; written to {out}")
    return report


#: what a search writes into the prune folder before the export
_SEARCH_FILES = ("genotype.yaml", "alphas.pt", "alphas.json", "alphas.png", "config.yaml", "history.jsonl", "report.json")


def _set_aside(out: Path, log: Callable[[str], None]) -> None:
    """A folder where an earlier pruning stopped before its export (an unreachable budget, a crash):
    its files become ``*.previous`` and the pruning starts over there."""
    old = [n for n in _SEARCH_FILES if (out / n).exists()]
    if not old:
        return
    for n in old:
        os.replace(out / n, out / f"{n}.previous")
    log(f"'{out}' held a pruning that stopped before its export: its files are kept as *.previous")


def _check_data(eval_data: str | None, quality: dict[str, Any] | None, strategy_config: dict[str, Any] | None) -> None:
    """Load ``--eval-data`` and ``--calibration`` once before the search: a missing folder, an unknown
    name or a dataset with one class fails now, not after minutes of search."""
    from dnas.config import make_config
    from dnas.engine.data import DataConfig, load_datasets
    from dnas.strategies.calibration import CalibrationConfig
    from dnas.tools.prune_quality import QualityConfig, require_labels

    if eval_data is not None:
        q = make_config(QualityConfig, {k: v for k, v in (quality or {}).items() if k != "compare_calibration"}, "quality")
        ds = load_datasets(DataConfig(name=eval_data, data_dir=q.data_dir, download=q.download, augment=False))
        require_labels(eval_data, ds.task.num_classes)
    cal = ((strategy_config or {}).get("terms") or {}).get("calibration")
    if cal is not None:
        c = make_config(CalibrationConfig, dict(cal), "calibration")
        load_datasets(DataConfig(name=c.data, data_dir=c.data_dir, download=c.download, augment=False))


def _head_counts(space, kept: list[int], keep_heads: dict[int, list[int]]) -> dict[str, int]:
    """``heads_total`` (gated heads) and ``heads_left`` (in the pruned model), with head gates only."""
    from dnas.tools.prune_quality import budget_of, heads_per_block

    heads = heads_per_block(space)
    if not sum(heads):
        return {}
    return {"heads_total": sum(heads), "heads_left": budget_of(kept, keep_heads, heads)[1]}


def _final_gates(space, path: Path) -> dict[str, float]:
    """σ(α) per gate (``block3``, ``block3.head1``) from the search's final ``alphas.pt``."""
    from dnas._io import safe_torch_load

    if not path.is_file():
        return {}
    a = safe_torch_load(path, "alphas")
    gates: dict[str, float] = {}
    for key, decisions in (("blocks", space.block_decisions), ("heads", space.head_decisions)):
        if key in a:
            gates.update({d.name: float(torch.sigmoid(a[key][i, 0])) for i, d in enumerate(decisions())})  # eq. (6.1), (6.2)
    return gates


def _apply_budget(space, original, gates, budget, threshold, shape, bench_batch, bench_rounds, log):
    """The genotype meeting ``budget`` on the searched σ(α) ``gates``, and its report entries."""
    info = model_info(space, original)
    choices = keep_for_budget(gates, budget, info, threshold)
    rep: dict[str, Any] = {"budget": ",".join(f"{k}={v:g}" for k, v in budget.items())}
    if "speedup" in budget:  # measured: drop the next worst block until the measured speed-up reaches it
        order = _ranked(gates, [n for n in gates if "." not in n])
        while True:
            g = space.genotype(choices)
            speed = throughput({"before": original, "after": space.build_network(g, model=original)}, shape,
                               batch=bench_batch, rounds=bench_rounds)
            measured = speed["after"] / speed["before"]
            kept = [n for n in order if choices[n]]
            if measured >= budget["speedup"] or not kept:
                break
            log(f"measured speed-up x{measured:.2f} < {budget['speedup']:g}: dropping {kept[-1]} too")
            choices[kept[-1]] = []
        rep["speedup_measured_for_budget"] = round(measured, 3)
        if measured < budget["speedup"]:
            raise DnasError(f"budget speedup={budget['speedup']:g} not reached (x{measured:.2f} with every block removed)")
    eq = equivalent_threshold(gates, choices)
    rep.update({"equivalent_threshold": eq["threshold"], "threshold_range": [eq["low"], eq["high"]],
                "params_fraction": round(info.params_kept({n for n, c in choices.items() if not c}) / info.total_params, 4)})
    return space.genotype(choices), rep
