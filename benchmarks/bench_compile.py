"""``compile: true`` (each mixed op ``torch.compile``-d) against eager, same process, interleaved rounds.

Records the first two compiled steps (the compilation, each kind in a fresh process with an empty
inductor cache, so it is what a first run costs), the steady-state seconds per step of both,
their ratio, and dynamo's graph-break and recompile counts. Steps: the DARTS search step (α then
weights) at order 1 and 2, and the D-DARTS ``shapley`` α step.

    python -m benchmarks compile --quick   # 3 cells, C = 8, batch 16, 16x16
    python -m benchmarks compile --full    # 8 cells, C = 16, batch 64, 32x32
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

from benchmarks.common import in_fresh_process, step_timer

#: not in the default CPU suite (its compile may take many minutes on a small CPU); on a GPU it runs
OPT_IN = True
QUICK = dict(layers=3, C=8, nodes=4, batch=16, size=16, repeats=8)  # 8 rounds: on 2 shared cores 3 rounds spread 1.06-1.38x
FULL = dict(layers=8, C=16, nodes=4, batch=64, size=32, repeats=3)
STEPS = ("darts-order1", "darts-order2", "shapley-alpha")


def _step(kind: str, compiled: bool, cfg: dict[str, Any], device: str):
    import torch

    import dnas
    from dnas.space import Task

    torch.manual_seed(0)
    space = dnas.create_space("ddarts" if kind.startswith("shapley") else "darts", C=cfg["C"], layers=cfg["layers"],
                              nodes=cfg["nodes"], compile=compiled)
    net = space.supernet(Task((3, cfg["size"], cfg["size"]), 10)).to(device).train()
    strategy = dnas.create_strategy("shapley") if kind.startswith("shapley") else dnas.create_strategy("darts", order=int(kind[-1]))
    net.relaxation = strategy.relaxation
    state = strategy.init_state(net)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], generator=g).to(device),
                torch.randint(0, 10, (cfg["batch"],), generator=g).to(device)) for _ in range(2)]
    if kind.startswith("shapley"):
        return lambda: strategy.arch_step(net, batches[0], batches[1], state)
    return lambda: strategy.step(net, batches[0], batches[1], state)


def one_step_kind(kind: str, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """In a fresh process and an empty inductor cache: compile time, then interleaved eager/compiled rounds."""
    with tempfile.TemporaryDirectory(prefix="dnas-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # compile_s is a first compile, whatever the machine ran before
        return _measure(kind, cfg, device)


def _measure(kind: str, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    import torch
    import torch._dynamo.utils as du

    measure = step_timer(device)
    eager, comp = _step(kind, False, cfg, device), _step(kind, True, cfg, device)
    t = time.perf_counter()
    comp()  # the compilation (the first step of each kind of pass compiles)
    comp()
    compile_s = time.perf_counter() - t
    eager()
    te, tc = [], []
    for _ in range(cfg["repeats"]):
        te.append(measure(eager))
        tc.append(measure(comp))
    return {
        "eager_s": statistics.median(te),
        "compiled_s": statistics.median(tc),
        "speedup": statistics.median(a / b for a, b in zip(te, tc)),
        "compile_s": compile_s,
        "graph_breaks": sum(du.counters["graph_break"].values()),
        "break_reasons": sorted(du.counters["graph_break"])[:5],
        "recompiles": int(du.counters["stats"].get("unique_graphs", 0)),
        "threads": torch.get_num_threads(),
    }


def run(device: str = "cpu", quick: bool = False, cfg: dict[str, Any] | None = None, steps=STEPS) -> list[dict[str, Any]]:
    cfg = cfg or (QUICK if quick else FULL)
    records = []
    for kind in steps:
        r = in_fresh_process(one_step_kind, kind, cfg, device)["result"]
        records.append({
            "case": kind,
            "config": {k: v for k, v in cfg.items() if k != "repeats"},
            "device": device,
            "repeats": cfg["repeats"],
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
            "note": "recompiles counts every compiled graph (edges of one shape share one); compile_s: the first two "
                    "compiled steps, with an empty inductor cache",
        })
    return records
