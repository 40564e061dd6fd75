"""Memory and time of one D-DARTS ``shapley`` α step against one ``fairdarts`` α step, same run.

Cases: ``shapley`` (the pass tree: the ablated passes start at the dropped cell from the full
network's cached inputs), ``shapley-separate`` (n + 1 separate forward/backward passes, one graph
at a time), ``naive`` (the formula on one graph holding all n + 1 passes, quick mode only: memory).

Memory: each case in its own process (peak RSS never goes down); ``step_peak_mb`` is the growth of
peak memory during the α steps over the memory held right before them (model, data, optimizers),
i.e. what the step itself needs: the autograd graphs. The paper's implementation needs up to 2x
FairDARTS (D-DARTS: 21.9 GB vs 11.1 GB); the target here is <= 1.2x. Time: all cases in one
process, one step of each per round (after a warm-up round), so a change in the machine's load
hits every case alike; ``time_ratio_vs_fairdarts`` is the median over rounds of t_case / t_fairdarts.
``pass_floor_time_ratio``: what that ratio would be if each step cost only its passes, from each
cell's forward and pull-back timed alone in the same run (``cell_costs``, ``pass_floor``): the
exact pass tree cannot go below it, and the measured ratio over it is the step's own overhead.

    python -m benchmarks shapley --quick     # 5 cells, C = 8, batch 32, 16x16 (seconds)
    python -m benchmarks shapley             # 8 cells, C = 16, batch 32, 32x32 (minutes on 2 cores)
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.common import in_fresh_process, step_peak_memory, step_timer

QUICK = dict(layers=5, C=8, nodes=4, batch=32, size=16, repeats=5)
# The DARTS search net (8 cells, C = 16, 32x32); batch 32 instead of 64 keeps one process near 5 GB
# and a shapley step near a minute on 2 shared CPU cores (batch 64: ~10 GB, FACTS.md).
FULL = dict(layers=8, C=16, nodes=4, batch=32, size=32, repeats=2)
TIMED = ("fairdarts", "shapley", "shapley-separate")


def _net_and_batch(cfg: dict[str, Any], device: str, relaxation: str):
    """The seeded ddarts supernet of ``cfg`` in train mode and one seeded batch ``(x, y)``."""
    import torch

    import dnas
    from dnas.space import Task

    torch.manual_seed(0)
    dev = torch.device(device)
    space = dnas.create_space("ddarts", C=cfg["C"], layers=cfg["layers"], nodes=cfg["nodes"])
    net = space.supernet(Task((3, cfg["size"], cfg["size"]), 10)).to(dev)
    net.relaxation = relaxation
    net.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], generator=g).to(dev)
    y = torch.randint(0, 10, (cfg["batch"],), generator=g).to(dev)
    return net, (x, y)


def _build(case: str, cfg: dict[str, Any], device: str):
    import dnas
    from dnas.strategies.shapley import shapley_grads, shapley_grads_naive

    strategy = dnas.create_strategy("fairdarts" if case == "fairdarts" else "shapley")
    net, batch = _net_and_batch(cfg, device, strategy.relaxation)
    state = strategy.init_state(net)
    c = strategy.config

    def step():
        if case in ("naive", "shapley-separate"):
            with net.grad_only(net.arch_parameters()):
                if case == "naive":
                    grads = shapley_grads_naive(net, batch, c.w01, c.wAB)
                else:
                    grads = shapley_grads(net, batch, c.w01, c.wAB, cached=False)[0]
            for (key, group), cell in zip(net.arch_groups().items(), grads):
                for a, gr in zip(group, cell):
                    a.grad = gr
                state.optimizers.arch[key].step()
        else:
            strategy.arch_step(net, batch, batch, state)

    return step


def memory_case(case: str, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """Peak memory of two α steps of ``case`` (and their wall time), in a fresh process."""
    import torch

    step = _build(case, cfg, device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    with step_peak_memory(device) as mem:
        t = time.perf_counter()
        step()
        step()
        sync()
        t = (time.perf_counter() - t) / 2
    return {"step_s": t, "rss_before_mb": mem["before_mb"], "step_peak_mb": mem["peak_mb"], "process_peak_mb": mem["process_peak_mb"]}


def time_cases(cases: tuple[str, ...], cfg: dict[str, Any], device: str) -> dict[str, dict[str, float]]:
    """Seconds per α step of every case, one step of each per round, in one process (see module doc)."""
    steps = {case: _build(case, cfg, device) for case in cases}
    measure = step_timer(device)  # CUDA events on a GPU
    wall: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(cfg["repeats"] + 1):
        for case, step in steps.items():
            t = measure(step)
            if r:  # round 0 warms up
                wall[case].append(t)
    base = wall[cases[0]]
    return {
        case: {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "ratio": statistics.median(t / b for t, b in zip(ts, base)),
            "repeats": cfg["repeats"],
        }
        for case, ts in wall.items()
    }


def cell_costs(cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """Seconds of each piece the α steps are made of, timed one by one on the full network's states:
    cell k's forward ``f[k]`` (with graph), one pull-back of a cotangent through it to α_k and its
    inputs ``b[k]``, the stem's forward and the head's forward + backward; medians over rounds."""
    import torch
    import torch.nn.functional as F

    net, (x, y) = _net_and_batch(cfg, device, "sigmoid")  # the relaxation of both steps
    dev = x.device
    groups = [list(v) for v in net.arch_groups().values()]
    n = len(groups)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def timed(fn, *args, **kw):
        sync()
        t = time.perf_counter()
        out = fn(*args, **kw)
        sync()
        return out, time.perf_counter() - t

    rounds: dict[str, list[list[float]]] = {"f": [], "b": [], "stem": [], "head": []}
    with net.grad_only(net.arch_parameters()):
        for r in range(cfg["repeats"] + 1):
            s, stem = timed(net.stem_forward, x)
            st = [s.detach()]
            f, b = [], []
            for i in range(n):
                ins = [st[max(i - 1, 0)], st[i]]
                leaves = [t.detach().requires_grad_() if i >= 1 else t for t in ins]
                (_, out), tf = timed(net.cells_forward, i, i + 1, *leaves)
                wrt = groups[i] + [t for t in leaves if t.requires_grad]
                _, tb = timed(torch.autograd.grad, out, wrt, torch.randn_like(out), allow_unused=True)
                f.append(tf)
                b.append(tb)
                st.append(out.detach())
            top = st[n].requires_grad_()
            _, head = timed(lambda t: torch.autograd.grad(F.cross_entropy(net.head(t), y), t), top)
            if r:  # round 0 warms up
                for key, v in (("f", f), ("b", b), ("stem", [stem]), ("head", [head])):
                    rounds[key].append(v)
    med = {key: [statistics.median(col) for col in zip(*v)] for key, v in rounds.items()}
    return {"f": med["f"], "b": med["b"], "stem": med["stem"][0], "head": med["head"][0]}


def pass_floor(c: dict[str, Any]) -> float:
    """The pass tree's time over a FairDARTS α step if both were only their passes (module
    ``dnas.strategies.shapley``): FairDARTS runs the stem, every cell forward and back once and the
    head; the tree pulls two cotangents (u from L, v from the L_j) back through every trunk cell but
    the last, and branch j runs cells j + 1 … n − 1 forward and back and the head."""
    f, b, n = c["f"], c["b"], len(c["f"])
    fair = c["stem"] + sum(f) + sum(b) + c["head"]
    tree = c["stem"] + sum(f) + 2 * sum(b[:-1]) + b[-1] + c["head"]
    tree += sum(sum(f[k] + b[k] for k in range(j + 1, n)) + c["head"] for j in range(n))
    return tree / fair


def run(device: str = "cpu", quick: bool = False, cfg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``cfg`` overrides the QUICK/FULL config (keys as in FULL)."""
    import torch

    cfg = cfg or (QUICK if quick else FULL)
    cases = TIMED + (("naive",) if quick else ())  # naive: ~9 graphs at once, ~40 GB at full size
    res = {case: in_fresh_process(memory_case, case, cfg, device) for case in cases}
    times = in_fresh_process(time_cases, TIMED, cfg, device)["result"]
    floor = round(pass_floor(in_fresh_process(cell_costs, cfg, device)["result"]), 2)
    base = res["fairdarts"]["result"]
    records = []
    for case, r in res.items():
        m, t = r["result"], times.get(case)
        records.append(
            {
                "case": case,
                "config": {k: v for k, v in cfg.items() if k != "repeats"},
                "device": device,
                "threads": torch.get_num_threads(),
                "repeats": t["repeats"] if t else 2,
                "step_s": round(t["median_s"] if t else m["step_s"], 3),
                "min_s": round(t["min_s"], 3) if t else None,
                "step_peak_mb": round(m["step_peak_mb"], 1),
                "process_peak_rss_mb": round(r["peak_rss_mb"], 1),
                "memory_ratio_vs_fairdarts": round(m["step_peak_mb"] / max(base["step_peak_mb"], 1e-9), 3),
                "process_peak_ratio_vs_fairdarts": round(r["peak_rss_mb"] / res["fairdarts"]["peak_rss_mb"], 3),
                # interleaved rounds (median of per-round ratios); naive: its own process's two steps
                "time_ratio_vs_fairdarts": round(t["ratio"] if t else m["step_s"] / base["step_s"], 2),
                "target_time_ratio": 3.0 if case == "shapley" else None,
                # the same ratio if the tree's passes cost only their cells' measured times (no overhead)
                "pass_floor_time_ratio": floor if case == "shapley" else None,
            }
        )
    return records
