"""Shared measurement helpers for the benchmarks: repeat timings and peak memory in a fresh process."""
from __future__ import annotations

import multiprocessing as mp
import queue
import resource
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def step_timer(device) -> Callable[[Callable[[], Any]], float]:
    """``measure(fn) -> seconds`` for one call of ``fn``: CUDA events on a GPU (the kernels' time on
    the device's stream, synchronised before and after), ``time.perf_counter`` on the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        def measure(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return measure

    def measure_cuda(fn):
        torch.cuda.synchronize(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    return measure_cuda


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


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def maxrss_mb() -> float:
    """This process's peak resident memory, in MB. VmHWM where there is /proc: getrusage's maxrss
    of a spawned child starts at the RSS of the parent it was forked from (Linux keeps it across
    exec), which hid every step's memory once the parent had loaded a big model."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def step_peak_memory(device) -> Iterator[dict[str, float]]:
    """Peak memory the block adds over what is held when it starts: allocator peak on CUDA; on
    the CPU the peak RSS during the block (reset on entry where Linux allows) minus the RSS on
    entry. Fills ``before_mb``, ``peak_mb`` and ``process_peak_mb`` in the yielded dict."""
    import torch

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    peak_before = maxrss_mb()
    rss = _status_mb("VmRSS")
    reset = rss is not None and _reset_peak_rss()
    mem = {"before_mb": rss if reset else peak_before}
    cuda_before = torch.cuda.memory_allocated() if cuda else 0
    yield mem
    peak = maxrss_mb()
    mem["process_peak_mb"] = max(peak, peak_before)
    mem["peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20 if cuda else peak - mem["before_mb"]


def _child(q, target, args):
    import torch

    out = target(*args)
    peak = max(maxrss_mb(), out.get("process_peak_mb", 0.0) if isinstance(out, dict) else 0.0)
    cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    q.put({"result": out, "peak_rss_mb": peak, "cuda_peak_mb": cuda_peak / 2**20})


def in_fresh_process(target: Callable, *args) -> dict[str, Any]:
    """Run ``target(*args)`` in a new (spawned) process; return its result with its peak memory.

    Peak RSS is process-wide and never goes down, so each case to compare gets its own process.
    ``target`` must be a module-level function.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, target, args))
    p.start()
    while True:  # a child that dies (an error, the OOM killer) must not leave the suite waiting forever
        try:
            out = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"{getattr(target, '__name__', target)} died in its own process "
                                   f"(exit code {p.exitcode}); its error is printed above") from None
    p.join()
    return out
