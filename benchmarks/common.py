"""Shared measurement helpers for the benchmarks: repeat timings and peak memory in a fresh process."""
from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def timings(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median/min/max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": repeats}


def maxrss_mb() -> float:
    """This process's peak resident memory so far, in MB (it never goes down)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def step_peak_memory(device) -> Iterator[dict[str, float]]:
    """Peak memory the block adds: RSS growth on CPU, allocator peak on CUDA. Fills
    ``before_mb`` (RSS on entry) and ``peak_mb`` in the yielded dict when the block ends."""
    import torch

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    mem = {"before_mb": maxrss_mb()}
    cuda_before = torch.cuda.memory_allocated() if cuda else 0
    yield mem
    mem["peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20 if cuda else maxrss_mb() - mem["before_mb"]


def _child(q, target, args):
    import torch

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = target(*args)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    q.put({"result": out, "peak_rss_mb": after / 1024, "rss_growth_mb": (after - before) / 1024, "cuda_peak_mb": cuda_peak / 2**20})


def in_fresh_process(target: Callable, *args) -> dict[str, Any]:
    """Run ``target(*args)`` in a new (spawned) process; return its result with its peak memory.

    Peak RSS is process-wide and never goes down, so each case to compare gets its own process.
    ``target`` must be a module-level function.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, target, args))
    p.start()
    out = q.get()
    p.join()
    return out
