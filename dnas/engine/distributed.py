"""Data-parallel search across processes and machines (``torchrun ... -m dnas search``).

Every rank holds the whole supernet and a shard of each batch; the gradients of the weights AND of
α are averaged over ranks after every backward, so all ranks take identical steps (the math of
DistributedDataParallel). The averaging is explicit because strategies take gradients with
``torch.autograd.grad`` (which DDP's reducer does not see) and α need it as much as the weights.
Rank 0 alone writes the run folder.
"""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from dnas.errors import DnasError


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 (also before the process group is joined, from torchrun's RANK variable)."""
    return rank_and_size()[0] == 0 and int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def average_(tensors: Iterable[torch.Tensor]) -> None:
    """In place: replace each tensor by its mean over ranks (one flat all-reduce)."""
    tensors = [t for t in tensors if t is not None]
    _, size = rank_and_size()
    if size == 1 or not tensors:
        return
    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= size
    for t, f in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(f)


def broadcast_module_(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if rank_and_size()[1] > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the checkpoint it read)."""
    if rank_and_size()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def shard(batch_indices: list[int]) -> list[int]:
    """This rank's part of a global batch: every size-th index from position rank."""
    rank, size = rank_and_size()
    return batch_indices[rank::size]


def resolve_device(name: str) -> torch.device:
    """The device a run config names: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (a GPU if one is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DnasError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DnasError(f"device {name!r} was asked for but no GPU is visible; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DnasError(f"device {name!r} was asked for but only {torch.cuda.device_count()} GPU(s) are visible "
                        f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DnasError(f"device {name!r} was asked for but this torch has no usable MPS (Apple GPU); use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DnasError(f"device {name!r} is not one dnas runs on; use cpu, cuda, cuda:N, mps or auto")
    return dev
