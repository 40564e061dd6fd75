"""Space ``dario``: sigmoid gates on a pretrained vision transformer's blocks and heads (thesis §6.1).

Block gate (eq. 6.1): ``H̃_m = σ(α_m^B) H_m + (1 − σ(α_m^B)) H_{m−1}``; head gate (eq. 6.2):
``H̃_m = (σ(α_m^A) A_m) · V_m``, applied as a per-head scale of the attention output before the
output projection (``(cA)V = c(AV)``). Gates are forward hooks, so the wrapped model keeps its own
state-dict keys and, with every gate open (σ = 1), returns exactly the original outputs.

Models: ``mae-vit-base`` (timm ``vit_base_patch16_224.mae``), ``mobilevit-s`` (timm ``mobilevit_s``,
its 9 transformer blocks), any timm ViT/DeiT/EVA name, ``hf:LOCAL_DIR`` (a Hugging Face
``transformers`` model folder, the optional ``hf`` extra), or ``package.module:factory`` with
``blocks=dotted.path`` naming an ``nn.ModuleList``/``nn.Sequential`` of blocks mapping hidden states
to hidden states. The hub is never called unless ``pretrained=True``.

Weights for timm models load through timm's own pretrained path (the model's checkpoint filter), so
position embeddings are resampled to the model's size and release formats (MAE's ``{"model": ...}``,
DINOv2) are remapped. Text encoders take the data-free input through their embedding output: a
constant ``inputs_embeds`` of ``seq_len`` tokens, the analogue of the batch of ones.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os
import random
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from dnas._io import unreadable_because
from dnas.errors import DnasError, first_line
from dnas.registry import register_space
from dnas.space import Decision, SearchSpace, Task
from dnas.supernet import Supernet

KEEP = "keep"
ALIASES = {"mae-vit-base": "vit_base_patch16_224.mae", "mobilevit-s": "mobilevit_s"}


@dataclass
class DarioConfig:
    model: str = "mae-vit-base"  # alias, timm name, or "package.module:factory"
    model_kwargs: dict = field(default_factory=dict)  # passed to timm.create_model / the factory
    weights: str | None = None  # safetensors or a state dict (loaded with weights_only=True)
    weights_prefix: str | None = None  # the model's tensors in the file are under this prefix (e.g. teacher.backbone.); None: found
    pretrained: bool = False  # timm hub weights: only when asked (needs network or a cache)
    blocks: str | None = None  # dotted path of the blocks' ModuleList/Sequential (non-timm models)
    granularity: Literal["block", "head", "both"] = "block"
    input_size: list | None = None  # (C, H, W) of the batch of ones; None: from the model
    seq_len: int | None = None  # tokens of a text encoder's constant inputs_embeds; None: 128 (or the model's maximum)

    def check(self):
        if self.weights is not None and self.pretrained:
            return "give weights=FILE or pretrained=True, not both"
        if self.weights_prefix is not None and self.weights is None:
            return "weights_prefix (--weights-prefix) applies to a weights file: give weights=FILE (--weights)"
        if self.input_size is not None and len(self.input_size) != 3:
            return "input_size must be [C, H, W] (--input-size C,H,W)"
        if self.seq_len is not None and self.seq_len < 1:
            return "seq_len must be >= 1 (--seq-len)"
        return None


# -- building and loading the model ------------------------------------------------------------
def _timm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never a hub call the user did not ask for
    import timm

    return timm


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a ``torch.save``d dict (``weights_only=True``)."""
    from dnas._io import safe_torch_load

    if not os.path.isfile(path):
        raise DnasError(f"weights file '{path}' not found")
    if str(path).endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as e:  # safetensors' own errors: a header or a length that does not add up
            raise DnasError(f"weights file '{path}' cannot be loaded: {unreadable_because(path, e)}") from None
    sd = safe_torch_load(path, "weights file")
    for key in ("model", "state_dict", "module"):  # common checkpoint wrappers (MAE: {"model": ...})
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    sd = flat_tensors(sd) if isinstance(sd, dict) else {}
    if not sd:
        raise DnasError(f"weights file '{path}' holds no state dict of tensors")
    return sd


def flat_tensors(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a nested checkpoint dict under dotted names (DINO's ``{"teacher": {...}}`` gives
    ``teacher.backbone...``); other values (epoch, arguments) are left out."""
    out = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor):
            out[prefix + str(k)] = v
        elif isinstance(v, dict):
            out.update(flat_tensors(v, f"{prefix}{k}."))
    return out


def unwrap_prefix(sd: dict[str, torch.Tensor], own: list[str], path: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """``sd`` with the prefix around the model's tensor names removed: a training framework's wrapper
    (Lightning's ``model.``, a ``backbone.``, DINO's ``teacher.backbone.``). ``prefix`` names it; else
    it is the one under which the file holds the most of the model's tensor names, used where the
    names do not already fit (fewer than half of ``own`` in the file). Two equally good prefixes
    (DINO keeps a student and a teacher) are one line asking for ``--weights-prefix``."""
    if prefix is not None:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sub:
            raise DnasError(f"no tensor of weights '{path}' is under the prefix '{prefix}' (--weights-prefix); "
                            f"the file's names start like {next(iter(sd), '(none)')}")
        return sub
    names = set(own)
    if sum(k in names for k in sd) * 2 >= len(names):
        return sd
    counts: dict[str, int] = {}
    for k in sd:
        parts = k.split(".")
        for i in range(1, len(parts)):
            p = ".".join(parts[:i]) + "."
            if k[len(p):] in names:
                counts[p] = counts.get(p, 0) + 1
    best = max(counts.values(), default=0)
    if best * 2 < len(names):
        return sd
    tops = sorted(p for p, c in counts.items() if c == best)
    if len(tops) > 1:
        raise DnasError(f"weights '{path}' hold the model {len(tops)} times, under {', '.join(tops)}; pick one with "
                        f"--weights-prefix (space.weights_prefix)")
    return {k[len(tops[0]):]: v for k, v in sd.items() if k.startswith(tops[0])}


def _shape(t) -> str:
    return "[" + ", ".join(str(int(v)) for v in t) + "]"


def _mismatch(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(tensors of different shape, missing from the file, unexpected in it), each a short text."""
    own = model.state_dict()
    bad = [f"{k} {_shape(v.shape)} in the file vs {_shape(own[k].shape)} in the model"
           for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    return bad, [k for k in own if k not in sd], [k for k in sd if k not in own]


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _misfit_error(path: str, name: str, bad: list[str], missing: list[str], unexpected: list[str]) -> DnasError:
    parts = ([f"shapes differ: {_few(bad, 2)}"] if bad else []) + ([f"missing: {_few(missing)}"] if missing else []) \
        + ([f"not in the model: {_few(unexpected)}"] if unexpected else [])
    return DnasError(f"weights '{path}' do not fit model '{name}' ({'; '.join(parts)}); "
                     f"check the model name and its options (--model-arg)")


def _timm_load_error(path: str, name: str, error: BaseException) -> DnasError:
    if isinstance(error, RuntimeError):
        return _timm_error(path, name, error)
    return DnasError(f"cannot load weights '{path}' into '{name}': {unreadable_because(path, error)}")


def _timm_error(path: str, name: str, error: BaseException) -> DnasError:
    """One line from torch's multi-line load_state_dict error raised inside timm's loader."""
    msg = str(error)
    bad = [f"{k} {_shape(a.split(','))} in the file vs {_shape(b.split(','))} in the model"
           for k, a, b in re.findall(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                                     r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)", msg)]
    def keys(label):
        m = re.search(label + r" key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)", msg)
        return re.findall(r'"([^"]+)"', m.group(1)) if m else []

    if not (bad or keys("Missing") or keys("Unexpected")):
        return DnasError(f"cannot load weights '{path}' into model '{name}': {unreadable_because(path, error)}")
    return _misfit_error(path, name, bad, keys("Missing"), keys("Unexpected"))


def _load_into(model: nn.Module, path: str, name: str, prefix: str | None = None) -> None:
    """A weights file into a non-timm model: shapes that differ or no matching tensor are one line."""
    sd = unwrap_prefix(load_weights_file(path), list(model.state_dict()), path, prefix)
    bad, missing, unexpected = _mismatch(model, sd)
    tops = {k.split(".")[0] for k in model.state_dict()}
    # tensors of the model's own modules that it lacks (layers.5 for a 4-layer build): other options, not extras
    foreign = [k for k in unexpected if k.split(".")[0] in tops]
    if bad or foreign or len(missing) == len(model.state_dict()):
        raise _misfit_error(path, name, bad, missing, foreign or unexpected)
    model.load_state_dict(sd, strict=False)
    if missing:
        warnings.warn(f"{len(missing)} tensors of '{name}' are not in '{path}' (e.g. {missing[0]}); they stay random", stacklevel=3)


def _hf_model(folder: str, load: bool, kwargs: dict) -> nn.Module:
    """A ``transformers`` model from a local folder (its config; its weights when ``load``), on the CPU."""
    try:
        import transformers
    except ImportError:
        raise DnasError("hf:DIR models need the optional 'transformers' package: pip install 'dnas[hf]'") from None
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "config.json")):
        raise DnasError(f"hf:{folder} is not a folder with a config.json (save_pretrained writes one)")
    try:
        if load:
            return transformers.AutoModel.from_pretrained(folder, local_files_only=True, **kwargs)
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, **kwargs)
        return transformers.AutoModel.from_config(config)
    except (OSError, ValueError, TypeError) as e:
        raise DnasError(f"cannot build the transformers model in '{folder}' ({first_line(e, 160)})") from None


def is_timm(cfg: DarioConfig) -> bool:
    """Whether ``cfg.model`` names a timm model (alias or timm name), not hf:DIR or a factory."""
    return ":" not in ALIASES.get(cfg.model, cfg.model)


def model_skeleton(cfg: DarioConfig) -> nn.Module:
    """The model's structure without its weights: built on the meta device for timm (no memory), for
    real otherwise (user factories and transformers are never called under the meta device)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if is_timm(cfg):
            with torch.device("meta"):
                return build_model(cfg, load=False)
        return build_model(cfg, load=False)


def build_model(cfg: DarioConfig, load: bool = True) -> nn.Module:
    """The unpruned model of ``cfg``; with ``load`` its weights (file, hub) or a random-init warning.

    Args:
        cfg: the space's configuration.
        load: load the weights (``weights``, ``pretrained``, the hf folder's); else a random init.

    Returns:
        The model in eval mode.

    Raises:
        DnasError: unknown model, missing package, or weights that do not fit (one line).
    """
    name = ALIASES.get(cfg.model, cfg.model)
    if cfg.pretrained and not is_timm(cfg):
        raise DnasError("pretrained=True works for timm models only; give weights=FILE or hf:LOCAL_DIR")
    if name.startswith("hf:"):
        model = _hf_model(name[3:], load, cfg.model_kwargs)
        if load and cfg.weights:
            _load_into(model, cfg.weights, name, cfg.weights_prefix)
        return model.eval()
    if ":" in name:  # package.module:factory (imported like a plugin; never eval)
        mod, _, fn = name.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise DnasError(f"cannot import model factory '{name}' ({e}); give package.module:function") from None
        model = factory(**cfg.model_kwargs)
        if not isinstance(model, nn.Module):
            raise DnasError(f"model factory '{name}' returned a {type(model).__name__}, not an nn.Module")
    else:
        timm = _timm()
        if not timm.is_model(name.split(".")[0]):
            raise DnasError(f"unknown model '{cfg.model}'; use mae-vit-base, mobilevit-s, a timm name or package.module:factory")
        from_file = load and bool(cfg.weights)
        if from_file and not os.path.isfile(cfg.weights):
            raise DnasError(f"weights file '{cfg.weights}' not found")
        kw = dict(cfg.model_kwargs)
        if from_file:  # timm's own path: the model's checkpoint filter resamples pos_embed, remaps release formats
            overlay = {"file": str(cfg.weights)}
            if "num_classes" in kw:  # the file's head has the model's classes: keep it (timm drops it otherwise)
                overlay["num_classes"] = kw["num_classes"]
            kw["pretrained_cfg_overlay"] = {**kw.get("pretrained_cfg_overlay", {}), **overlay}
        if from_file and cfg.weights_prefix is not None:  # timm's loader, on the tensors under the prefix
            kw["pretrained_cfg_overlay"]["state_dict"] = _timm_state_dict(timm, name, cfg, kw)
        try:
            model = timm.create_model(name, pretrained=from_file or (load and cfg.pretrained), **kw)
        except TypeError as e:
            raise DnasError(f"model '{name}' does not take these model_kwargs ({e})") from None
        except Exception as e:
            if not from_file:
                if load and cfg.pretrained:
                    raise DnasError(f"cannot fetch pretrained weights for '{name}' ({first_line(e, 120)}); "
                                    f"download them and pass weights=FILE") from None
                raise
            # the names may sit under a wrapper's prefix (Lightning's model., a backbone.): timm's loader again on them
            sd = None if "state_dict" in kw["pretrained_cfg_overlay"] else _timm_state_dict(timm, name, cfg, kw)
            if sd is None:
                raise _timm_load_error(cfg.weights, name, e) from None
            kw["pretrained_cfg_overlay"]["state_dict"] = sd
            try:
                model = timm.create_model(name, pretrained=True, **kw)
            except Exception as e2:
                raise _timm_load_error(cfg.weights, name, e2) from None
    if load and cfg.weights and not is_timm(cfg):
        _load_into(model, cfg.weights, name, cfg.weights_prefix)
    elif load and not cfg.weights and not cfg.pretrained:
        warnings.warn(
            f"pruning a randomly initialised '{name}': no weights=FILE (--weights) and no pretrained=True; "
            f"the result says nothing about a trained model", stacklevel=2
        )
    return model.eval()


def _timm_state_dict(timm, name: str, cfg: DarioConfig, kw: dict) -> dict[str, torch.Tensor] | None:
    """The file's tensors as timm reads them (its checkpoint keys, ``module.`` dropped), under the
    prefix around the model's names removed; None where no prefix explains the names."""
    from timm.models import load_state_dict

    plain = {k: v for k, v in kw.items() if k != "pretrained_cfg_overlay"}
    with torch.device("meta"):
        own = list(timm.create_model(name, pretrained=False, **plain).state_dict())
    try:
        sd = load_state_dict(cfg.weights)
    except Exception as e:
        raise DnasError(f"cannot load weights '{cfg.weights}' into '{name}': {unreadable_because(cfg.weights, e)}") from None
    flat = flat_tensors(sd)
    out = unwrap_prefix(flat, own, cfg.weights, cfg.weights_prefix)
    return out if out is not flat or cfg.weights_prefix is not None else None


def find_blocks(model: nn.Module, path: str | None) -> list[tuple[str, nn.Module]]:
    """The containers holding the transformer blocks, as (dotted path, container), in forward order.
    ``path`` names one, or several separated by commas (a hierarchical model's stages)."""
    if path:
        found = []
        for one in (p.strip() for p in path.split(",")):
            try:
                c = model.get_submodule(one)
            except AttributeError:
                raise DnasError(f"model has no submodule '{one}' (blocks=...); give the dotted path of its blocks") from None
            if not isinstance(c, (nn.ModuleList, nn.Sequential)):
                raise DnasError(f"'{one}' is a {type(c).__name__}, not an nn.ModuleList/nn.Sequential of blocks")
            found.append((one, c))
        return found
    if isinstance(getattr(model, "blocks", None), (nn.ModuleList, nn.Sequential)):  # timm ViT, DeiT, EVA
        return [("blocks", model.blocks)]
    for known in ("encoder.layer", "encoder.layers", "layers"):  # transformers BERT/RoBERTa/ViT, decoder stacks
        try:
            c = model.get_submodule(known)
        except AttributeError:
            continue
        stages = all(isinstance(getattr(b, "blocks", None), (nn.ModuleList, nn.Sequential)) for b in c)
        if isinstance(c, nn.ModuleList) and len(c) and not stages:  # stages holding blocks: their blocks, below
            return [(known, c)]
    found = [(f"{n}.transformer", m.transformer) for n, m in model.named_modules()
             if type(m).__name__.startswith("MobileVit") and isinstance(getattr(m, "transformer", None), nn.Sequential)]
    if not found:  # ResNet-style stages (timm, torchvision): layer1, layer2, ...
        found = [(n, m) for n, m in model.named_children() if re.fullmatch(r"layer\d+", n) and isinstance(m, nn.Sequential)]
    if not found:  # a model in stages (Swin, ConvNeXt, LeViT, PiT, EfficientViT): every stage's `blocks`, outermost
        for n, m in model.named_modules():
            if n.rpartition(".")[2] == "blocks" and isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) \
                    and not any(n.startswith(f + ".") for f, _ in found):
                found.append((n, m))
    if not found:
        raise DnasError(f"cannot find the transformer blocks of {type(model).__name__}; pass blocks=dotted.path (--blocks)")
    return found


def _attention(block: nn.Module) -> nn.Module:
    a = getattr(block, "attn", None)
    if a is None or not isinstance(getattr(a, "proj", None), nn.Linear) or not hasattr(a, "num_heads"):
        raise DnasError(f"block {type(block).__name__} has no timm-style attention (attn.proj, attn.num_heads); use granularity=block")
    if not isinstance(getattr(a, "norm", nn.Identity()), nn.Identity):
        raise DnasError("head gates need attention without scale_norm (gating before a norm is not eq. 6.2); use granularity=block")
    return a


def _head_dim(a: nn.Module) -> int:
    return getattr(a, "head_dim", None) or a.proj.in_features // a.num_heads


def _forward_args(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def is_text_encoder(model: nn.Module) -> bool:
    """A model fed through ``inputs_embeds`` (a transformers text encoder), not images."""
    args = _forward_args(model)
    return "inputs_embeds" in args and "pixel_values" not in args and callable(getattr(model, "get_input_embeddings", None))


def call_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output tensor for ``x``: images, or a text encoder's ``inputs_embeds``; a
    transformers output gives its ``last_hidden_state``."""
    if is_text_encoder(model):
        out = model(inputs_embeds=x)
    elif "pixel_values" in _forward_args(model):
        out = model(pixel_values=x)
    else:
        out = model(x)
    if isinstance(out, torch.Tensor):
        return out
    h = getattr(out, "last_hidden_state", None)
    if h is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        h = out[0]
    if h is None:
        raise DnasError(f"{type(model).__name__} returns a {type(out).__name__}, not a tensor or last_hidden_state")
    return h


def model_input_shape(model: nn.Module, cfg: DarioConfig) -> tuple[int, ...]:
    """(C, H, W) the model takes: the config's input_size, else its patch embedding or pretrained cfg;
    (seq_len, hidden) of the constant ``inputs_embeds`` for a text encoder."""
    if is_text_encoder(model):
        hidden = model.get_input_embeddings().embedding_dim
        most = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if cfg.seq_len and most and cfg.seq_len > most:
            raise DnasError(f"--seq-len {cfg.seq_len} is more than the model's {most} positions (max_position_embeddings); "
                            f"give --seq-len {most} or less")
        n = cfg.seq_len or min(128, most or 128)
        return (int(n), int(hidden))
    if cfg.input_size:
        return tuple(int(v) for v in cfg.input_size)
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None):
        h, w = pe.img_size
        return (getattr(getattr(pe, "proj", None), "in_channels", 3), int(h), int(w))
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size:
        return tuple(int(v) for v in size)
    hf = getattr(model, "config", None)  # transformers vision models: ViT, DeiT, BEiT, Swin, ... configs
    if isinstance(getattr(hf, "image_size", None), int) and isinstance(getattr(hf, "num_channels", None), int):
        return (hf.num_channels, hf.image_size, hf.image_size)
    size = getattr(model, "image_size", None)  # torchvision's VisionTransformer, and others that keep it
    if isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        h, w = (size, size) if isinstance(size, int) else size
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        return (conv.in_channels if conv is not None else 3, int(h), int(w))
    raise DnasError("cannot tell this model's input size; set input_size=[C, H, W] (--input-size)")


def _reshaping_blocks(model: nn.Module, blocks: list[nn.Module], cfg: DarioConfig) -> frozenset[int]:
    """Indices of the blocks whose output shape differs from their input's, from one forward of ``model``
    (the meta-device skeleton for timm: no compute). Empty when that forward fails: the supernet's own
    check then names the block."""
    shapes: dict[int, bool] = {}

    def probe(i):
        def hook(module, args, kwargs, output):
            h_in, h = _block_io(args, kwargs, output)
            if isinstance(h_in, torch.Tensor) and isinstance(h, torch.Tensor):
                shapes.setdefault(i, h_in.shape != h.shape)
        return hook

    handles = [b.register_forward_hook(probe(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        ref = next(iter(model.parameters()), None)
        x = torch.ones(1, *model_input_shape(model, cfg), device=ref.device if ref is not None else "cpu")
        with torch.no_grad():
            call_model(model, x)
    except Exception:  # noqa: BLE001 - a model that cannot run here: the supernet's check decides
        return frozenset()
    finally:
        for h in handles:
            h.remove()
    return frozenset(i for i, changed in shapes.items() if changed)


def _inner_hint(model: nn.Module, path: str | None) -> str:
    """' (here: --blocks a.0.blocks,a.1.blocks)': the block containers inside the given blocks, if any."""
    inner = [f"{p}.{k}.{name}" for p, c in find_blocks(model, path) for k, blk in enumerate(c)
             for name, m in blk.named_children() if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1]
    return f" (here: --blocks {','.join(inner)})" if inner else ""


# -- the supernet ------------------------------------------------------------------------------
def _block_io(args: tuple, kwargs: dict, output):
    """(hidden state in, hidden state out) of a block's forward hook: the input positional or as
    ``hidden_states=``, the output alone or first of a tuple (transformers layers return tuples)."""
    h_in = args[0] if args else kwargs.get("hidden_states")
    return h_in, output[0] if isinstance(output, tuple) else output


class DarioSupernet(Supernet):
    """The model with gate hooks; α = one row per block (``blocks``) and per head (``heads``)."""

    def __init__(self, space: DarioSpace, task: Task, model: nn.Module | None = None):
        super().__init__(space, task)
        cfg = space.config
        self.model = model if model is not None else build_model(cfg)
        self.relaxation = "sigmoid"  # independent σ(α) per gate (eq. 6.1, 6.2)
        self.block_list = [b for _, c in find_blocks(self.model, cfg.blocks) for b in c]
        self._text = is_text_encoder(self.model)
        self._gates: dict[str, torch.Tensor] = {}
        self._hooks = []
        if cfg.granularity in ("block", "both"):
            self.add_alpha("blocks", space.block_decisions())
            for r, i in enumerate(space.gated_blocks()):  # α row r gates block i
                self._hooks.append(self.block_list[i].register_forward_hook(self._block_hook(r), with_kwargs=True))
        if cfg.granularity in ("head", "both"):
            self.add_alpha("heads", space.head_decisions())
            start = 0
            for b in self.block_list:
                a = _attention(b)
                self._hooks.append(a.proj.register_forward_pre_hook(self._head_hook(start, a.num_heads, _head_dim(a))))
                start += a.num_heads
        if cfg.granularity in ("block", "both"):
            self._check_blocks_keep_shape()

    def _check_blocks_keep_shape(self) -> None:
        """A block gate mixes a block's output with its input (eq. 6.1), so a gated block must keep the
        hidden state's shape. The space leaves the blocks that change it ungated; this catches a model whose
        skeleton could not run to tell them (one line naming the block)."""
        model = self.model
        fixed = set(_reshaping_blocks(model, self.block_list, self.space.config)) - set(self.space.fixed_blocks())
        if fixed:
            i = min(fixed)
            raise DnasError(f"block {i} ({type(self.block_list[i]).__name__}) changes the hidden state's shape, which a block gate "
                            f"cannot mix with its input; give --blocks the containers of shape-keeping blocks, comma-separated"
                            f"{_inner_hint(model, self.space.config.blocks)}")

    def _block_hook(self, r: int):
        def hook(module, args, kwargs, output):
            g = self._gates.get("blocks")
            if g is None:
                return output
            h_in, h = _block_io(args, kwargs, output)
            g = g[r, 0].to(h.dtype)
            mixed = g * h + (1 - g) * h_in  # DARIO eq. (6.1)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

        return hook

    def _head_hook(self, start: int, heads: int, head_dim: int):
        def hook(module, args):
            g = self._gates.get("heads")
            if g is None:
                return None
            scale = g[start:start + heads, 0].repeat_interleave(head_dim).to(args[0].dtype)
            return (args[0] * scale,)  # DARIO eq. (6.2): (σ(α) A) V = σ(α) (A V), per head

        return hook

    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the batch of ones; (seq_len, hidden) of a text encoder's inputs_embeds."""
        return model_input_shape(self.model, self.space.config)

    def data_free_input(self, batch_size: int = 1) -> torch.Tensor:
        """Algorithm 5's batch of ones; for a text encoder, a constant ``inputs_embeds`` of ones."""
        ref = next(iter(self.model.parameters()))
        return torch.ones(batch_size, *self.input_shape(), device=ref.device, dtype=ref.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated model's output (images, or a text encoder's ``inputs_embeds``)."""
        self._gates = {k: self.mixing_weights(k) for k in self.alphas}
        try:
            return call_model(self.model, x)
        finally:
            self._gates = {}

    def genotype(self, parser: str | None = None, **parser_kw: Any):
        """The gates kept by ``parser`` (default: threshold at 0.65, the thesis' final models)."""
        if (parser or self.space.default_parser) == "threshold":
            parser_kw.setdefault("threshold", self.space.default_threshold)
        return super().genotype(parser, **parser_kw)

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """Data-free: ``R_SF = Σ H`` on a batch of ones shaped like ``batch`` (DARIO eq. 6.5)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return {"loss": self(self.data_free_input(x.shape[0])).sum()}


# -- physical pruning --------------------------------------------------------------------------
class AttnBias(nn.Module):
    """An attention whose every head was pruned: ``proj(0) = proj.bias`` for each token."""

    def __init__(self, dim: int, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("bias", bias.detach().clone() if bias is not None else torch.zeros(dim))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.bias.to(x.dtype).expand(*x.shape[:-1], self.bias.shape[0])


def prune_heads_(attn: nn.Module, keep: list[int]) -> nn.Module:
    """Slice the kept heads out of ``attn.qkv`` (rows) and ``attn.proj`` (columns); returns the module."""
    h, d = attn.num_heads, _head_dim(attn)
    if len(keep) == h:
        return attn
    if not keep:
        return AttnBias(attn.proj.out_features, attn.proj.bias)
    qkv = getattr(attn, "qkv", None)
    if type(attn).__name__ != "Attention" or not isinstance(qkv, nn.Linear) or qkv.out_features != 3 * h * d:
        raise DnasError(f"slicing heads out needs timm's Attention with a fused qkv (ViT, DeiT, MobileViT), not "
                        f"{type(attn).__name__}; use granularity=block for this model")
    cols = torch.cat([torch.arange(k * d, (k + 1) * d) for k in keep])
    rows = torch.cat([cols + j * h * d for j in range(3)])
    new_qkv = nn.Linear(qkv.in_features, len(rows), bias=qkv.bias is not None)
    new_qkv.weight.data = qkv.weight.data[rows].clone()
    if qkv.bias is not None:
        new_qkv.bias.data = qkv.bias.data[rows].clone()
    proj = attn.proj
    new_proj = nn.Linear(len(cols), proj.out_features, bias=proj.bias is not None)
    new_proj.weight.data = proj.weight.data[:, cols].clone()
    if proj.bias is not None:
        new_proj.bias.data = proj.bias.data.clone()
    attn.qkv, attn.proj = new_qkv, new_proj
    attn.num_heads = len(keep)
    if hasattr(attn, "attn_dim"):
        attn.attn_dim = len(keep) * d
    if getattr(attn, "gate", None) is not None:
        g = attn.gate
        ng = nn.Linear(g.in_features, len(cols), bias=g.bias is not None)
        ng.weight.data = g.weight.data[cols].clone()
        if g.bias is not None:
            ng.bias.data = g.bias.data[cols].clone()
        attn.gate = ng
    return attn


def apply_pruning(model: nn.Module, blocks_path: str | None, keep_blocks: list[int], keep_heads: dict[int, list[int]]) -> nn.Module:
    """Remove the blocks not in ``keep_blocks`` (global indices) and slice heads, in place."""
    i = 0
    for path, container in find_blocks(model, blocks_path):
        kept = []
        for b in container:
            if i in keep_blocks:
                if i in keep_heads:
                    b.attn = prune_heads_(_attention(b), keep_heads[i])
                kept.append(b)
            i += 1
        new = type(container)(*kept) if isinstance(container, nn.Sequential) else nn.ModuleList(kept)
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    conf = getattr(model, "config", None)  # a transformers model: its config counts the layers left
    if getattr(conf, "num_hidden_layers", None) == i:
        conf.num_hidden_layers = sum(1 for b in keep_blocks if b < i)
    return model


@register_space("dario")
class DarioSpace(SearchSpace):
    """Gates on a pretrained ViT's blocks and/or attention heads (DARIO, thesis §6.1)."""

    Config = DarioConfig
    offers = frozenset({"alpha", "functional", "data_free"})  # data-free: no labels, no data
    default_parser = "threshold"
    default_threshold = 0.65  # thesis, final models
    evaluation = "pruned"  # dnas train: fine-tune the pruned model that `dnas prune` wrote next to the genotype
    tiny_config = {"model": "vit_tiny_patch16_224", "granularity": "both",
                   "model_kwargs": {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 24, "num_heads": 3, "num_classes": 10}}
    tiny_task = Task((3, 32, 32), 10)

    def __init__(self, **config: Any):
        super().__init__(**config)
        self._shape: list[int] | None = None  # heads per block
        self._fixed: frozenset[int] = frozenset()  # blocks that change the shape (no gate)

    def _heads(self) -> list[int]:
        if self._shape is None:
            model = model_skeleton(self.config)
            blocks = [b for _, c in find_blocks(model, self.config.blocks) for b in c]
            need = self.config.granularity != "block"
            self._shape = [_attention(b).num_heads if need else 0 for b in blocks]
            other = {type(_attention(b)).__name__ for b in blocks} - {"Attention"} if need else set()
            if other:  # fail before a search whose heads could not be sliced out
                raise DnasError(f"head gates need timm's Attention (ViT, DeiT, MobileViT), not {', '.join(sorted(other))}; "
                                f"use granularity=block for this model")
            self._fixed = _reshaping_blocks(model, blocks, self.config) if self.config.granularity != "head" else frozenset()
            if blocks and len(self._fixed) == len(blocks):
                raise DnasError(f"every block in {self.config.blocks or 'the blocks found'} changes the hidden state's shape, so none "
                                f"can be gated (a block gate mixes a block's output with its input); give --blocks the containers "
                                f"of the blocks inside, comma-separated{_inner_hint(model, self.config.blocks)}")
        return self._shape

    def num_blocks(self) -> int:
        """Blocks in the model's block containers, gated or not."""
        return len(self._heads())

    def fixed_blocks(self) -> frozenset[int]:
        """Blocks that change the hidden state's shape (a stage's downsampling block): always kept, no gate,
        since a block gate mixes a block's output with its input (eq. 6.1)."""
        self._heads()
        return self._fixed

    def gated_blocks(self) -> list[int]:
        """The blocks with a gate, in the order of their decisions (the rows of α ``blocks``)."""
        fixed = self.fixed_blocks()
        return [i for i in range(self.num_blocks()) if i not in fixed]

    def block_decisions(self) -> list[Decision]:
        return [Decision(f"block{i}", (KEEP,), min_options=0) for i in self.gated_blocks()]

    def head_decisions(self) -> list[Decision]:
        return [Decision(f"block{i}.head{j}", (KEEP,), cell=f"block{i}", min_options=0)
                for i, h in enumerate(self._heads()) for j in range(h)]

    def decisions(self) -> list[Decision]:
        g = self.config.granularity
        return (self.block_decisions() if g != "head" else []) + (self.head_decisions() if g != "block" else [])

    def supernet(self, task: Task) -> DarioSupernet:
        return DarioSupernet(self, task)

    def random_genotype(self, rng: random.Random):
        return self.genotype({d.name: [KEEP] if rng.random() < 0.5 else [] for d in self.decisions()})

    def space_size(self) -> float:
        return 2.0 ** len(self.decisions())  # every gate kept or dropped

    def kept(self, genotype) -> tuple[list[int], dict[int, list[int]]]:
        """(kept block indices, {block: kept heads}) of a genotype."""
        heads = self._heads()
        blocks = [i for i in range(len(heads)) if genotype.choices.get(f"block{i}", [KEEP])]
        keep_heads = {}
        if self.config.granularity != "block":
            for i in blocks:
                k = [j for j in range(heads[i]) if genotype.choices[f"block{i}.head{j}"]]
                if len(k) < heads[i]:
                    keep_heads[i] = k
        return blocks, keep_heads

    def build_network(self, genotype, task: Task | None = None, model: nn.Module | None = None) -> nn.Module:
        """The physically pruned model: pruned blocks removed, pruned heads sliced out (not masked)."""
        self.validate(genotype)
        blocks, heads = self.kept(genotype)
        model = copy.deepcopy(model) if model is not None else build_model(self.config)
        return apply_pruning(model, self.config.blocks, blocks, heads).eval()

    def describe(self, genotype) -> str:
        blocks, heads = self.kept(genotype)
        n = len(self._heads())
        s = f"{len(blocks)} of {n} blocks kept ({', '.join(map(str, blocks)) or 'none'})"
        if heads:
            s += "; heads pruned in blocks " + ", ".join(f"{b}: kept {v}" for b, v in heads.items())
        return s
