"""Time and memory of one DARTS search step (first and second order) against a reference, same run.

The reference (``RefSupernet`` and ``ref_step`` below) is the DARTS math written the straightforward
way, as in the original DARTS code: every edge sums ALL its ops, ``none`` included (computed as a
zero tensor and multiplied by its weight), and each loss is ``backward()``-ed into every parameter.
It has the same parameter names as the dnas supernet, so both load the same weights, and the α
gradients of the two are compared on the same batch (they must agree to float rounding).

Memory: each case runs two steps in its own process; ``step_peak_mb`` is the peak RSS during them
over the RSS right before them (model and data; the freed graph of a first step would stay in the
RSS, so there is no warm-up outside): the autograd graphs and the optimizer states. Time: all cases in one process, one step of each per round, so a
change in the machine's load hits every case alike; speed-ups are medians of per-round ratios.

    python -m benchmarks darts --quick   # 5 cells, C = 8, batch 16, 16x16 (the CPU default; ~5 min on 2 cores)
    python -m benchmarks darts --full    # 8 cells, C = 16, batch 64, 32x32: the DARTS CIFAR search config
                                         # (the GPU default; on 2 CPU cores ~7.5 GB and ~40 min)
"""
from __future__ import annotations

import copy
import time
from functools import partial
from typing import Any

from benchmarks.common import in_fresh_process, step_peak_memory, step_timer

QUICK = dict(layers=5, C=8, nodes=4, batch=16, size=16, repeats=5)
FULL = dict(layers=8, C=16, nodes=4, batch=64, size=32, repeats=3)  # DARTS CIFAR-10 search (Liu et al., ICLR 2019)
#: case -> darts space options of the dnas supernet (None: the reference). ``dnas`` is the default:
#: channels-last on the CPU. ``reference-channels-last`` and ``dnas-nchw`` separate what the layout
#: gives from what the implementation gives (the same layout on both sides).
CASES: dict[str, dict[str, Any] | None] = {
    "reference": None,
    "reference-channels-last": None,
    "dnas": {},
    "dnas-nchw": {"channels_last": False},
    "dnas-checkpoint-cells": {"checkpoint_cells": True},
}


def _reference_classes():
    """Built inside a function so ``import benchmarks.bench_darts`` stays light (spawned children)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dnas.spaces.ops import CNN_OP_SETS, POOLS
    from dnas.spaces.darts import _preprocess

    class RefMixedOp(nn.Module):
        def __init__(self, C, stride, table):
            super().__init__()
            self.ops = nn.ModuleList()
            for name, make in table.items():
                op = make(C, stride, False)
                if name in POOLS:  # torch's own pools, as the DARTS code (dnas' max pool keeps no indices)
                    pool = nn.MaxPool2d if name.startswith("max") else partial(nn.AvgPool2d, count_include_pad=False)
                    op = nn.Sequential(pool(3, stride=stride, padding=1), nn.BatchNorm2d(C, affine=False))
                self.ops.append(op)

        def forward(self, x, weights):
            return sum(w * op(x) for w, op in zip(weights, self.ops))  # every op, `none` (zeros) included

    class RefCell(nn.Module):
        def __init__(self, nodes, C_pp, C_p, C, reduction, reduction_prev, table):
            super().__init__()
            self.nodes = nodes
            self.pre0, self.pre1 = _preprocess(C_pp, C_p, C, reduction_prev, affine=False)
            self.edges = nn.ModuleList(
                RefMixedOp(C, 2 if reduction and j < 2 else 1, table) for i in range(nodes) for j in range(2 + i)
            )

        def forward(self, s0, s1, weights):
            states, e = [self.pre0(s0), self.pre1(s1)], 0
            for _ in range(self.nodes):
                s = sum(self.edges[e + j](h, weights[e + j]) for j, h in enumerate(states))
                e += len(states)
                states.append(s)
            return torch.cat(states[2:], dim=1)

    class RefSupernet(nn.Module):
        """The DARTS search network (shared normal/reduce α), parameter names as in dnas."""

        def __init__(self, space, task):
            super().__init__()
            cfg, table = space.config, CNN_OP_SETS[space.config.ops]
            C_curr = cfg.stem_multiplier * cfg.C
            self.stem = nn.Sequential(nn.Conv2d(task.input_shape[0], C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
            C_pp, C_p, C_curr = C_curr, C_curr, cfg.C
            self.cells, reduction_prev, self.keys = nn.ModuleList(), False, []
            for i in range(cfg.layers):
                reduction = i in space.reduction_layers()
                C_curr = C_curr * 2 if reduction else C_curr
                self.cells.append(RefCell(cfg.nodes, C_pp, C_p, C_curr, reduction, reduction_prev, table))
                self.keys.append("reduce" if reduction else "normal")
                reduction_prev = reduction
                C_pp, C_p = C_p, cfg.nodes * C_curr
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(C_p, task.num_classes)
            n_edges, n_ops = sum(2 + i for i in range(cfg.nodes)), len(table)
            self.alphas = nn.ParameterDict({k: nn.Parameter(torch.zeros(n_edges, n_ops)) for k in ("normal", "reduce")})
            for m in self.modules():  # torch's own convolution and batch norm backward (see dnas.spaces.ops)
                if hasattr(m, "lean"):
                    m.lean = False

        def forward(self, x):
            s0 = s1 = self.stem(x)
            for cell, key in zip(self.cells, self.keys):
                s0, s1 = s1, cell(s0, s1, F.softmax(self.alphas[key], dim=-1))
            return self.classifier(self.gap(s1).flatten(1))

        def loss(self, batch):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def weights(self):
            return [p for n, p in self.named_parameters() if not n.startswith("alphas.")]

    return RefSupernet


def ref_alpha_grads(net, train_batch, val_batch, order: int, xi: float):
    """The α gradient of one DARTS step, written plainly (eq. (2.9) for order 2)."""
    import torch

    alphas = list(net.alphas.values())
    for p in net.parameters():
        p.grad = None
    if order == 1:
        net.loss(val_batch).backward()  # as the DARTS code: one backward into everything
        return [a.grad for a in alphas]
    grads = torch.autograd.grad(net.loss(train_batch), net.weights())
    unrolled = copy.deepcopy(net)  # the DARTS code builds a new model holding w' = w − ξ ∇_w L_train
    with torch.no_grad():
        for w, g in zip(unrolled.weights(), grads):
            w.sub_(xi * g)
    unrolled.loss(val_batch).backward()
    d_alpha = [a.grad for a in unrolled.alphas.values()]
    vector = [w.grad for w in unrolled.weights()]
    eps = 0.01 / torch.sqrt(sum((v * v).sum() for v in vector))
    backup = [w.detach().clone() for w in net.weights()]
    hvp = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for w, b, v in zip(net.weights(), backup, vector):
                w.copy_(b + sign * eps * v)
        hvp.append(torch.autograd.grad(net.loss(train_batch), alphas))
    with torch.no_grad():
        for w, b in zip(net.weights(), backup):
            w.copy_(b)
    return [da - xi * (p - m) / (2 * eps) for da, p, m in zip(d_alpha, *hvp)]


def ref_step(net, w_opt, a_opt, train_batch, val_batch, order: int, xi: float, grad_clip: float = 5.0):
    """One DARTS search step the straightforward way: α step, then a weight step (backward into all)."""
    import torch

    for a, g in zip(net.alphas.values(), ref_alpha_grads(net, train_batch, val_batch, order, xi)):
        a.grad = g
    a_opt.step()
    w_opt.zero_grad()
    net.loss(train_batch).backward()
    torch.nn.utils.clip_grad_norm_(net.weights(), grad_clip)
    w_opt.step()


def _build(case: str, order: int, cfg: dict[str, Any], device: str):
    """The net, its two batches and a ``step()`` doing one search step, for ``case``."""
    import torch

    import dnas
    from dnas.space import Task

    torch.manual_seed(0)
    dev = torch.device(device)
    options = CASES[case]
    space = dnas.create_space("darts", C=cfg["C"], layers=cfg["layers"], nodes=cfg["nodes"], **(options or {}))
    task = Task((3, cfg["size"], cfg["size"]), 10)
    net = space.supernet(task)  # built in every case: the reference loads its weights
    strategy = dnas.create_strategy("darts", order=order)
    layout = torch.channels_last if case == "reference-channels-last" else torch.contiguous_format
    if options is None:
        ref = _reference_classes()(space, task)
        ref.load_state_dict(net.state_dict())
        del net
        net = ref.to(memory_format=layout)
    net = net.to(dev).train()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], generator=g), torch.randint(0, 10, (cfg["batch"],), generator=g)) for _ in range(2)]
    train_batch, val_batch = [(x.to(dev).contiguous(memory_format=layout), y.to(dev)) for x, y in data]
    xi = strategy.config.w_lr
    if options is None:
        c = strategy.config
        w_opt = torch.optim.SGD(net.weights(), c.w_lr, momentum=c.w_momentum, weight_decay=c.w_weight_decay)
        a_opt = torch.optim.Adam(net.alphas.values(), lr=c.a_lr, betas=tuple(c.a_betas), weight_decay=c.a_weight_decay)

        def step():
            ref_step(net, w_opt, a_opt, train_batch, val_batch, order, xi, c.grad_clip)
    else:
        net.relaxation = strategy.relaxation
        state = strategy.init_state(net)

        def step():
            strategy.step(net, train_batch, val_batch, state)

    return net, strategy, (train_batch, val_batch), xi, step


def memory_case(case: str, order: int, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    """Peak memory of two steps and the float64 α gradient, in a fresh process."""
    import torch

    from dnas.strategies.darts import unrolled_arch_grads

    net, strategy, (train_batch, val_batch), xi, step = _build(case, order, cfg, device)
    state = copy.deepcopy(net.state_dict())
    with step_peak_memory(device) as mem:  # two steps: the first makes the optimizer states
        step()
        step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    # the α gradient at the initial weights and BN statistics, for the identity check (after the
    # measured step, so its graph does not hide in the memory measured before it). In float64: in
    # float32 the finite-difference Hessian term of order 2 amplifies rounding (summation order) to
    # ~1e-2 relative in this very config, for either implementation; in float64 they agree to ~1e-14.
    net.load_state_dict(state)
    net = net.double()
    train_batch, val_batch = [(x.double(), y) for x, y in (train_batch, val_batch)]
    if CASES[case] is None:
        grads = ref_alpha_grads(net, train_batch, val_batch, order, xi)
    elif order == 1:
        grads = torch.autograd.grad(net.loss(val_batch)["loss"], net.arch_parameters())
    else:
        grads = unrolled_arch_grads(strategy, net, train_batch, val_batch, xi, strategy.init_state(net))[0]
    grads = [gr.detach().cpu().tolist() for gr in grads]  # plain lists: tensors do not outlive the child
    return {"step_peak_mb": mem["peak_mb"], "rss_before_mb": mem["before_mb"], "process_peak_mb": mem["process_peak_mb"], "alpha_grads": grads}


def time_cases(cases: tuple[str, ...], order: int, cfg: dict[str, Any], device: str) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per step of every case, measured in rounds (one step of each case per
    round, after a warm-up round) in one process, so that a change in the machine's load hits
    every case alike; the ratio of each round's times to the reference's is the robust figure."""
    import statistics


    steps = {case: _build(case, order, cfg, device)[-1] for case in cases}
    measure = step_timer(device)  # CUDA events on a GPU
    wall: dict[str, list[float]] = {c: [] for c in cases}
    cpu: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(cfg["repeats"] + 1):
        for case, step in steps.items():
            c = time.process_time()
            t = measure(step)
            if r:  # round 0 warms up
                wall[case].append(t)
                cpu[case].append(time.process_time() - c)
    ref = cases[0]
    return {
        case: {
            "median_s": statistics.median(wall[case]),
            "min_s": min(wall[case]),
            "max_s": max(wall[case]),
            "cpu_s": statistics.median(cpu[case]),
            "speedup": statistics.median(a / b for a, b in zip(wall[ref], wall[case])),
            "cpu_speedup": statistics.median(a / b for a, b in zip(cpu[ref], cpu[case])),
            "repeats": cfg["repeats"],
        }
        for case in cases
    }


def run(device: str = "cpu", quick: bool = False, cfg: dict[str, Any] | None = None, cases=tuple(CASES), orders=(1, 2)) -> list[dict[str, Any]]:
    """``cfg`` overrides the QUICK/FULL config (keys as in FULL); ``cases[0]`` is the baseline."""
    import torch

    cfg = cfg or (QUICK if quick else FULL)
    records = []
    for order in orders:
        res = {case: in_fresh_process(memory_case, case, order, cfg, device) for case in cases}
        times = in_fresh_process(time_cases, tuple(cases), order, cfg, device)["result"]
        base = res[cases[0]]["result"]
        for case, r in res.items():
            m, t = r["result"], times[case]
            mine, ref = [torch.tensor(x) for x in m["alpha_grads"]], [torch.tensor(x) for x in base["alpha_grads"]]
            diff = max(float((a - b).abs().max()) for a, b in zip(mine, ref))
            scale = max(float(b.abs().max()) for b in ref)
            records.append(
                {
                    "benchmark": "darts",
                    "case": case,
                    "order": order,
                    "options": CASES[case],
                    "config": {k: v for k, v in cfg.items() if k != "repeats"},
                    "device": device,
                    "threads": torch.get_num_threads(),
                    "repeats": t["repeats"],
                    "median_s": round(t["median_s"], 3),
                    "min_s": round(t["min_s"], 3),
                    "max_s": round(t["max_s"], 3),
                    "cpu_s_per_step": round(t["cpu_s"], 3),
                    "speedup_vs_reference": round(t["speedup"], 3),  # median over rounds of t_ref / t_case
                    "cpu_speedup_vs_reference": round(t["cpu_speedup"], 3),
                    "step_peak_mb": round(m["step_peak_mb"], 1),
                    "process_peak_rss_mb": round(r["peak_rss_mb"], 1),
                    "memory_ratio_vs_reference": round(m["step_peak_mb"] / max(base["step_peak_mb"], 1e-9), 3),
                    "alpha_grad_max_abs_diff_float64": diff,
                    "alpha_grad_max_abs": scale,
                    "alpha_grads_match": diff <= 1e-9 * max(scale, 1e-12),  # float64 (see memory_case)
                }
            )
    return records
