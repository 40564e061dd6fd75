"""Evaluation of a pruned model (``dnas prune``'s output): its file format, loading, and the thesis'
fine-tuning of the last kept block and the head (§6.1)."""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from dnas.errors import DnasError, first_line

#: the version tag of ``pruned.yaml``
FORMAT = "dnas-pruned/1"


@dataclass
class FinetuneConfig:
    """The fine-tuning of a pruned model (``dnas train --pruned DIR --set train.lr=...``)."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32

    def check(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:  # NaN/inf: refused by make_config already
            return "epochs >= 0, batch_size >= 1 and lr > 0 are required"
        return None


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
    cfg = {k: v for k, v in space_cfg.items() if k not in ("name", "weights", "weights_prefix", "pretrained")}
    meta = {"format": FORMAT, "space": cfg, "keep_blocks": list(keep_blocks),
            "keep_heads": {int(k): list(v) for k, v in keep_heads.items()}}
    if "weights" in space_cfg or "pretrained" in space_cfg:  # the unpruned model, for random baselines of the same budget
        w = space_cfg.get("weights")
        meta["source"] = {"weights": str(Path(w).resolve()) if w else None, "pretrained": bool(space_cfg.get("pretrained"))}
        if w and space_cfg.get("weights_prefix"):
            meta["source"]["weights_prefix"] = space_cfg["weights_prefix"]
    _save_model(model, out / "model.safetensors")
    atomic_write_text(out / "pruned.yaml", yaml.safe_dump(meta, sort_keys=False))


@contextmanager
def _finetune_run(out, meta: dict[str, Any], data: Any, epochs: int, lr: float, batch_size: int, loggers) -> Iterator[Any]:
    """The fine-tuning's folder as a Run whose loggers mirror its history.jsonl (None without ``out``)."""
    if out is None:
        yield None
        return
    from dnas.engine.loggers import make_loggers
    from dnas.engine.run import Run

    config = {"pruned": meta, "data": data if isinstance(data, str) else "python", "finetune": {"epochs": epochs, "lr": lr, "batch_size": batch_size}}
    with Run(out, progress=False) as run:
        run.start_over()  # an earlier fine-tuning's history.jsonl: kept as *.previous
        run.loggers = make_loggers(loggers, out, config)
        yield run


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
        raise DnasError(f"weights in '{d}' do not fit its pruned.yaml ({first_line(e, 160)})") from None
    return model.eval()


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
    loggers: list[Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune the last kept block + the head of a pruned model on ``data`` (thesis §6.1) and report
    top-1 on its test split. Inputs are resized to the model's input size (channels repeated to 3).

    Each epoch's train loss and test top-1 go to ``out/history.jsonl`` and to ``loggers`` (as for
    ``dnas train``); the fine-tuned model goes to ``out`` at the end."""
    import time

    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from dnas.config import make_config
    from dnas.engine.data import DataConfig, data_name, given_datasets, load_datasets
    from dnas.engine.distributed import resolve_device
    from dnas.engine.fit import fit
    from dnas.engine.loggers import check_loggers
    from dnas.spaces.dario import find_blocks

    check_loggers(loggers)
    if loggers and out is None:
        raise DnasError("loggers follow a fine-tuning written to a folder; give out")
    model = load_pruned(directory)
    meta = yaml.safe_load((Path(directory) / "pruned.yaml").read_text())
    ds = load_datasets(make_config(DataConfig, {"name": data_name(data), **(data_config or {})}, "data"), given_datasets(data))
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

    def top1() -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in DataLoader(ds.test, batch_size=batch_size):
                correct += int((model(prep(x)).argmax(1).cpu() == y).sum())
                total += len(y)
        return correct / max(total, 1)

    def loss_fn(batch) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(model(prep(batch[0])), batch[1].to(dev))}  # fit stops on a NaN/inf loss

    opt = torch.optim.AdamW(params, lr=lr)
    t0 = time.perf_counter()
    with _finetune_run(out, meta, data, epochs, lr, batch_size, loggers) as run:
        def epoch_end(epoch: int, rec: dict[str, Any]) -> None:
            rec = {"epoch": epoch + 1, "train_loss": rec.get("loss", 0.0), "test_top1": top1(),
                   "seconds": round(time.perf_counter() - t0, 2)}
            log(f"epoch {epoch + 1}/{epochs} train_loss {rec['train_loss']:.4f} test_top1 {rec['test_top1']:.4f}")
            if run is not None:
                run.append_history(rec)
            last.update(rec)

        last: dict[str, Any] = {}
        fit(model, DataLoader(ds.train, batch_size=batch_size, shuffle=True), loss_fn, opt, epochs=epochs, on_epoch_end=epoch_end)
        result = {"top1": last["test_top1"] if last else top1(), "epochs": epochs, "tuned_params": sum(p.numel() for p in params)}
        if out is not None:
            meta["space"]["model_kwargs"] = {**meta["space"].get("model_kwargs", {}), "num_classes": classes}
            save_pruned(model.cpu(), meta["space"], meta["keep_blocks"], meta["keep_heads"], Path(out))
            (Path(out) / "finetune.json").write_text(json.dumps(result))
    log(f"top-1 {result['top1']:.4f} after fine-tuning {'the last kept block + head' if blocks else 'the head (no block kept)'}")
    return result
