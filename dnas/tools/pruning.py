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
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from dnas.errors import DnasError

FORMAT = "dnas-pruned/1"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def throughput(models: dict[str, nn.Module], input_shape, batch: int = 8, rounds: int = 3, min_seconds: float = 0.2) -> dict[str, float]:
    """Images/s of each model (eval, no grad, fused attention), interleaved rounds, median per model."""
    x = torch.randn(batch, *input_shape)
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.eval()(x)  # warm-up
    for _ in range(rounds):
        for k, m in models.items():
            n, t = 0, time.perf_counter()
            while True:
                m(x)
                n += 1
                if time.perf_counter() - t >= min_seconds:
                    break
            times[k].append((time.perf_counter() - t) / n)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def _save_model(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    from dnas._io import atomic_write_bytes

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()


def save_pruned(model: nn.Module, space_cfg: dict[str, Any], keep_blocks: list[int], keep_heads: dict[int, list[int]], out: Path) -> None:
    """Write ``model.safetensors`` and ``pruned.yaml`` (what :func:`load_pruned` needs)."""
    from dnas._io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in space_cfg.items() if k not in ("name", "weights", "pretrained")}
    meta = {"format": FORMAT, "space": cfg, "keep_blocks": list(keep_blocks),
            "keep_heads": {int(k): list(v) for k, v in keep_heads.items()}}
    if "weights" in space_cfg or "pretrained" in space_cfg:  # the unpruned model, for random baselines of the same budget
        w = space_cfg.get("weights")
        meta["source"] = {"weights": str(Path(w).resolve()) if w else None, "pretrained": bool(space_cfg.get("pretrained"))}
    _save_model(model, out / "model.safetensors")
    atomic_write_text(out / "pruned.yaml", yaml.safe_dump(meta, sort_keys=False))


def load_pruned(directory: str | Path) -> nn.Module:
    """Rebuild a model written by ``dnas prune`` (its structure from pruned.yaml, its weights from
    model.safetensors); no hub call, no pickled code."""
    from safetensors.torch import load_file

    from dnas.config import make_config
    from dnas.spaces.dario import DarioConfig, apply_pruning, build_model

    d = Path(directory)
    if not (d / "pruned.yaml").is_file() or not (d / "model.safetensors").is_file():
        raise DnasError(f"'{d}' is not a pruned-model folder (needs pruned.yaml and model.safetensors from dnas prune)")
    meta = yaml.safe_load((d / "pruned.yaml").read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DnasError(f"'{d / 'pruned.yaml'}' is not a {FORMAT} file")
    cfg = make_config(DarioConfig, meta["space"], "pruned.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random init, replaced by the file's weights below
        model = build_model(cfg, load=False)
    apply_pruning(model, cfg.blocks, meta["keep_blocks"], {int(k): v for k, v in meta["keep_heads"].items()})
    try:
        model.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    except RuntimeError as e:
        raise DnasError(f"weights in '{d}' do not fit its pruned.yaml ({str(e).splitlines()[0][:160]})") from None
    return model.eval()


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
    granularity: str = "block",
    proxy: str = "var",
    threshold: float = 0.65,
    iters: int = 500,
    warm_start: int = 100,
    keep_blocks: list[int] | None = None,
    strategy_config: dict[str, Any] | None = None,
    bench_batch: int = 8,
    bench_rounds: int = 3,
    seed: int = 0,
    progress: bool = True,
    eval_data: str | None = None,
    quality: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prune ``model`` without data and export the smaller model; returns the report (also report.json).

    With ``eval_data`` the report gets a ``quality`` section (:func:`dnas.tools.prune_quality.quality_report`,
    options in ``quality``: random, eval_size, ..., and ``compare_calibration``)."""
    from dnas.api import search
    from dnas.registry import create_space
    from dnas.spaces.dario import KEEP, build_model, model_input_shape

    out = Path(out)
    if (out / "model.safetensors").exists() or (out / "genotype.yaml").exists():
        raise DnasError(f"'{out}' already holds a pruned model; choose another --out")
    space_cfg = {"model": model, "model_kwargs": dict(model_kwargs or {}), "weights": weights, "pretrained": pretrained,
                 "blocks": blocks, "granularity": "block" if keep_blocks is not None else granularity}
    create_space("dario", **space_cfg).decisions()  # a bad model name or blocks path fails before any file is written
    t0 = time.perf_counter()
    alphas: dict[str, float] = {}
    if keep_blocks is None:
        strat = {"proxy": proxy, "threshold": threshold, "iters": iters, "warm_start": warm_start, **(strategy_config or {})}
        result = search(config={"space": {"name": "dario", **space_cfg}, "strategy": {"name": "proxy", **strat}, "seed": seed},
                        out=out, progress=progress)
        genotype = result.genotype
        space = create_space("dario", **space_cfg)
        if result.history:
            alphas = {k: v[0] for k, v in result.history[-1]["alphas"].items()}
    else:
        space = create_space("dario", **space_cfg)
        n = len(space.block_decisions())
        bad = [b for b in keep_blocks if not 0 <= b < n]
        if bad:
            raise DnasError(f"--keep-blocks {bad} out of range: the model has blocks 0..{n - 1}")
        genotype = space.genotype({f"block{i}": [KEEP] if i in keep_blocks else [] for i in range(n)})
        out.mkdir(parents=True, exist_ok=True)
        genotype.save(out / "genotype.yaml")
    search_s = time.perf_counter() - t0
    original = build_model(space.config)
    pruned = space.build_network(genotype, model=original)
    kept, heads = space.kept(genotype)
    save_pruned(pruned, space.config_dict(), kept, heads, out)
    from dnas._io import atomic_write_text

    if alphas:
        atomic_write_text(out / "alphas.json", json.dumps(alphas, indent=1))
        block_gates = {k: v for k, v in alphas.items() if "." not in k}
        if block_gates:
            plot_alphas(block_gates, threshold, out / "alphas.png")
    shape = model_input_shape(original, space.config)
    speed = throughput({"before": original, "after": pruned}, shape, batch=bench_batch, rounds=bench_rounds)
    report = {
        "model": model, "granularity": space.config.granularity, "blocks_total": len(space.block_decisions()),
        "blocks_kept": kept, "heads_pruned": {str(b): v for b, v in heads.items()},
        "params_before": count_params(original), "params_after": count_params(pruned),
        "images_per_s_before": round(speed["before"], 3), "images_per_s_after": round(speed["after"], 3),
        "speedup": round(speed["after"] / speed["before"], 3), "bench_batch": bench_batch, "search_seconds": round(search_s, 2),
        "weights": weights or ("timm pretrained" if pretrained else "random init (no --weights)"),
    }
    if eval_data is not None:
        from dnas.tools.prune_quality import evaluate_prune

        report["quality"] = evaluate_prune(space, original, kept, heads, eval_data, dict(quality or {}), out=out, seed=seed,
                                           strategy=None if keep_blocks is not None else strat, bench=(bench_batch, bench_rounds), log=log)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    log(f"kept {len(kept)}/{report['blocks_total']} blocks {kept}; params {report['params_before'] / 1e6:.2f} M -> "
        f"{report['params_after'] / 1e6:.2f} M; {report['images_per_s_before']:.1f} -> {report['images_per_s_after']:.1f} "
        f"images/s (x{report['speedup']:.2f}); search {search_s:.1f}s; written to {out}")
    return report


def finetune_pruned(
    directory: str | Path,
    data: str = "digits",
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 32,
    data_config: dict[str, Any] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tune the last kept block + the head of a pruned model on ``data`` (thesis §6.1) and report
    top-1 on its test split. Inputs are resized to the model's input size (channels repeated to 3)."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from dnas.api import resolve_device
    from dnas.config import make_config
    from dnas.engine.data import DataConfig, load_datasets
    from dnas.spaces.dario import find_blocks

    model = load_pruned(directory)
    meta = yaml.safe_load((Path(directory) / "pruned.yaml").read_text())
    ds = load_datasets(make_config(DataConfig, {"name": data, **(data_config or {})}, "data"))
    classes = ds.task.num_classes
    if classes < 2 or not hasattr(model, "reset_classifier"):
        raise DnasError("fine-tuning needs a labelled dataset and a timm model (reset_classifier)")
    model.reset_classifier(classes)
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = [b for _, c in find_blocks(model, meta["space"].get("blocks")) for b in c]
    tuned = [blocks[-1]] if blocks else []
    tuned += [getattr(model, n) for n in ("norm", "fc_norm", "head") if isinstance(getattr(model, n, None), nn.Module)]
    params = [p for m in tuned for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    dev = resolve_device(device)
    model.to(dev)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or model.pretrained_cfg["input_size"][1:]

    def prep(x):
        x = x.to(dev)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    opt = torch.optim.AdamW(params, lr=lr)
    for epoch in range(epochs):
        model.train()
        for x, y in DataLoader(ds.train, batch_size=batch_size, shuffle=True):
            loss = F.cross_entropy(model(prep(x)), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log(f"epoch {epoch + 1}/{epochs} loss {float(loss.detach()):.4f}")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in DataLoader(ds.test, batch_size=batch_size):
            correct += int((model(prep(x)).argmax(1).cpu() == y).sum())
            total += len(y)
    result = {"top1": correct / max(total, 1), "epochs": epochs, "tuned_params": sum(p.numel() for p in params)}
    if out is not None:
        meta["space"]["model_kwargs"] = {**meta["space"].get("model_kwargs", {}), "num_classes": classes}
        save_pruned(model.cpu(), meta["space"], meta["keep_blocks"], meta["keep_heads"], Path(out))
        (Path(out) / "finetune.json").write_text(json.dumps(result))
    log(f"top-1 {result['top1']:.4f} after fine-tuning the last kept block + head")
    return result
