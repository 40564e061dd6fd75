"""DARIO: inference speed-up of block-pruned MAE-ViT-base, and the cost of one prune iteration.

One process, one run, ratios only (machine noise is up to ~20 %):

* ``speedup``: images/s of MAE-ViT-base with 6 of its 12 blocks removed over the unpruned model
  (eval, no grad, fused attention, same batch, interleaved rounds). ``ideal_speedup`` = 2.0 (half
  the blocks, if the blocks were all the cost); ``of_ideal`` = speedup / ideal. Target: ≥ 1.69
  (the thesis' +69 %).
* ``iter_over_forward``: one ``proxy`` iteration as the search runs it (default ``alpha_grad: fd``:
  R_SF forward + backward to θ and α, variance of θ̃ and its gradient u, a second forward at θ + εu
  + backward to α, AdamW step) over one forward pass of the unpruned model on the same one-sample
  batch (no grad, fused attention; target ≤ 5×), and over one forward of the code's batch of 32
  ones, which the one-sample step replaces exactly (``iter_over_forward_b32``).
  ``exact_over_forward``: the same with ``alpha_grad: exact`` (create_graph double backward,
  unfused attention), measured in the same run. ``passes_over_forward``: the iteration's two
  passes alone (forward + backward to θ and α, forward + backward to α), without the passes over
  the weights between them: the floor of the default iteration.

    python -m benchmarks dario --quick   # MAE-ViT-base at 64x64 (seconds)
    python -m benchmarks dario           # MAE-ViT-base at 224x224 (about a minute on 2 cores)
"""
from __future__ import annotations

import os
import statistics
import time
import warnings
from typing import Any

from benchmarks.common import timings

QUICK = dict(img_size=64, bench_batch=8, rounds=3, repeats=5)  # 5 rounds: at 64 px a forward reads 344 MB of weights and varies ±30 % run to run
FULL = dict(img_size=224, bench_batch=8, rounds=3, repeats=3)


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import dnas
    from dnas.spaces.dario import apply_pruning, build_model
    from dnas.strategies.proxy import ProxyConfig, _theta, proxy_step, unfused_attention
    from dnas.tools.pruning import count_params, throughput

    cfg = QUICK if quick else FULL
    torch.manual_seed(0)
    dev = torch.device(device)
    space = dnas.create_space("dario", model="mae-vit-base", model_kwargs={"img_size": cfg["img_size"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init: timing only
        full = build_model(space.config, load=False).to(dev)
        half = build_model(space.config, load=False).to(dev)
    half.load_state_dict(full.state_dict())
    apply_pruning(half, None, [0, 2, 4, 6, 8, 10], {})
    shape = (3, cfg["img_size"], cfg["img_size"])
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    speed = throughput({"full": full, "half": half}, shape, batch=cfg["bench_batch"], rounds=cfg["rounds"])
    records = [{
        "case": "block-pruned 6/12", "img_size": cfg["img_size"], "batch": cfg["bench_batch"],
        "params_before_m": round(count_params(full) / 1e6, 2), "params_after_m": round(count_params(half) / 1e6, 2),
        "images_per_s_before": round(speed["full"], 2), "images_per_s_after": round(speed["half"], 2),
        "speedup": round(speed["half"] / speed["full"], 3), "ideal_speedup": 2.0,
        "of_ideal": round(speed["half"] / speed["full"] / 2.0, 3),
    }]
    del half

    from dnas.spaces.dario import DarioSupernet

    net = DarioSupernet(space, space.tiny_task, model=full).to(dev).eval()
    alphas = net.arch_parameters()
    opt = torch.optim.AdamW(alphas, lr=0.1, weight_decay=0.01)

    def iteration(pcfg=None):
        _, grads = proxy_step(net, pcfg or ProxyConfig())
        for a, g in zip(alphas, grads):
            a.grad = g
        opt.step()

    def exact():
        with unfused_attention(net):
            iteration(ProxyConfig(alpha_grad="exact"))

    ones1, ones32 = torch.ones(1, *shape, device=dev), torch.ones(32, *shape, device=dev)
    names, theta = _theta(net, ProxyConfig())
    params = dict(zip(names, theta))

    def passes():  # the iteration's two passes and nothing else: its floor
        r = net.functional_forward(ones1, params).sum()
        torch.autograd.grad(r, theta + alphas, allow_unused=True)  # R_SF to θ and α
        r = net.functional_forward(ones1, params).sum()
        torch.autograd.grad(r, alphas, allow_unused=True)  # R_SF at θ + εu to α (same cost at θ)

    def forward(x):
        with torch.no_grad():
            full(x)

    iteration(), forward(ones1), exact(), passes()  # warm-up
    rounds: dict[str, list[float]] = {"iter": [], "f1": [], "exact": [], "passes": []}
    for _ in range(cfg["repeats"]):  # interleaved: the machine's load drifts alike for all of them
        for key, fn in (("iter", iteration), ("f1", lambda: forward(ones1)), ("exact", exact), ("passes", passes)):
            t = time.perf_counter()
            fn()
            if sync:
                sync()
            rounds[key].append(time.perf_counter() - t)
    t_iter, t_f1, t_exact, t_passes = (statistics.median(rounds[k]) for k in ("iter", "f1", "exact", "passes"))
    t_f32 = timings(lambda: forward(ones32), repeats=max(1, cfg["repeats"] - 1), warmup=0, sync=sync)["median_s"]
    records.append({
        "case": "prune iteration", "img_size": cfg["img_size"], "iter_s": round(t_iter, 4), "forward_b1_s": round(t_f1, 4),
        "forward_b32_s": round(t_f32, 4), "iter_over_forward": round(t_iter / t_f1, 2),
        "iter_over_forward_b32": round(t_iter / t_f32, 3), "passes_over_forward": round(t_passes / t_f1, 2), "exact_s": round(t_exact, 4),
        "exact_over_forward": round(t_exact / t_f1, 2), "threads": torch.get_num_threads(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    })
    return records
