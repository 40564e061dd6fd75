"""Memory and time of one D-DARTS ``shapley`` α step against one ``fairdarts`` α step, same run.

Each case runs in its own process (peak RSS never goes down). ``step_peak_mb`` is the growth of
peak memory during the α steps over the memory held right before them (model, data, optimizers),
i.e. what the step itself needs: the autograd graphs. The paper's implementation needs up to 2x
FairDARTS (D-DARTS: 21.9 GB vs 11.1 GB); the target here is <= 1.2x. ``naive`` (the formula on one
graph holding all n + 1 passes, quick mode only) shows what holding every graph at once would cost.

    python -m benchmarks shapley --quick     # 5 cells, C = 8, batch 32, 16x16 (seconds)
    python -m benchmarks shapley             # 8 cells, C = 16, batch 32, 32x32 (minutes on 2 cores)
"""
from __future__ import annotations

from typing import Any

from benchmarks.common import in_fresh_process, step_peak_memory, timings

QUICK = dict(layers=5, C=8, nodes=4, batch=32, size=16, repeats=2)
# The DARTS search net (8 cells, C = 16, 32x32); batch 32 instead of 64 keeps one process near 5 GB
# and a shapley step near a minute on 2 shared CPU cores (batch 64: ~10 GB, FACTS.md).
FULL = dict(layers=8, C=16, nodes=4, batch=32, size=32, repeats=1)


def one_case(case: str, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    import dnas
    from dnas.space import Task
    from dnas.strategies.shapley import shapley_grads_naive

    torch.manual_seed(0)
    dev = torch.device(device)
    space = dnas.create_space("ddarts", C=cfg["C"], layers=cfg["layers"], nodes=cfg["nodes"])
    net = space.supernet(Task((3, cfg["size"], cfg["size"]), 10)).to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], generator=g).to(dev)
    y = torch.randint(0, 10, (cfg["batch"],), generator=g).to(dev)
    batch = (x, y)
    strategy = dnas.create_strategy("fairdarts" if case == "fairdarts" else "shapley")
    net.relaxation = strategy.relaxation
    net.train()
    state = strategy.init_state(net)

    def step():
        if case == "naive":
            grads = shapley_grads_naive(net, batch, strategy.config.w01, strategy.config.wAB)
            for (key, group), cell in zip(net.arch_groups().items(), grads):
                for a, gr in zip(group, cell):
                    a.grad = gr
                state.optimizers.arch[key].step()
        else:
            strategy.arch_step(net, batch, batch, state)

    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    with step_peak_memory(dev) as mem:
        t = timings(step, repeats=cfg["repeats"], warmup=0, sync=sync)
    return {"step_s": t["median_s"], "rss_before_mb": mem["before_mb"], "step_peak_mb": mem["peak_mb"], "process_peak_mb": mem["process_peak_mb"]}


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    cfg = QUICK if quick else FULL
    cases = ("fairdarts", "shapley", "naive") if quick else ("fairdarts", "shapley")  # naive: ~9 graphs, ~40 GB at full size
    res = {case: in_fresh_process(one_case, case, cfg, device) for case in cases}
    base = res["fairdarts"]["result"]
    records = []
    for case, r in res.items():
        m = r["result"]
        records.append(
            {
                "case": case,
                "config": {k: v for k, v in cfg.items() if k != "repeats"},
                "device": device,
                "step_s": round(m["step_s"], 3),
                "step_peak_mb": round(m["step_peak_mb"], 1),
                "process_peak_rss_mb": round(r["peak_rss_mb"], 1),
                "memory_ratio_vs_fairdarts": round(m["step_peak_mb"] / max(base["step_peak_mb"], 1e-9), 3),
                "process_peak_ratio_vs_fairdarts": round(r["peak_rss_mb"] / res["fairdarts"]["peak_rss_mb"], 3),
                "time_ratio_vs_fairdarts": round(m["step_s"] / base["step_s"], 2),
            }
        )
    return records
