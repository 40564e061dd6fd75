"""Training-step time of the derived-heads SimSiam (``nasiam-mlp`` network of the shipped ``simsiam``
genotype) against a plain hand-written torch SimSiam of the same shapes, in the same process.

Both: the same backbone architecture, projector feat→feat→feat→dim (linear+BN+ReLU twice, linear+BN),
predictor dim→pred_dim→dim (linear+BN+ReLU, linear), the symmetric stop-grad negative cosine, one SGD
step. The two are timed in alternation (A, B, B, A, ...) so machine noise hits both alike; ``ratio`` is the
median over rounds of dnas / plain. Both start from the same weights; ``control_ratio`` times a copy
of the plain model against itself (the noise floor). Target: ``ratio <= 1.05`` (no framework overhead).

    python -m benchmarks nasiam --quick   # tiny conv backbone, 16x16, dim 2048: the heads dominate
    python -m benchmarks nasiam           # + ResNet18 (CIFAR stem), 32x32, dim 2048, pred_dim 512
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any

QUICK = [dict(backbone="tiny", width=64, size=16, batch=64, dim=2048, pred_dim=512, rounds=30)]
FULL = QUICK + [dict(backbone="resnet18-cifar", width=0, size=32, batch=32, dim=2048, pred_dim=512, rounds=10)]


def _plain_backbone(name: str, width: int):
    import torchvision
    from torch import nn

    if name == "tiny":
        return nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ), width
    m = torchvision.models.resnet18(weights=None)
    m.conv1, m.maxpool, m.fc = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity(), nn.Identity()
    return m, 512


def _plain_simsiam(cfg: dict[str, Any]):
    import torch.nn.functional as F
    from torch import nn

    class PlainSimSiam(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, f = _plain_backbone(cfg["backbone"], cfg["width"])
            d, h = cfg["dim"], cfg["pred_dim"]
            self.projector = nn.Sequential(
                nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(),
                nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(),
                nn.Linear(f, d, bias=False), nn.BatchNorm1d(d),
            )
            self.predictor = nn.Sequential(nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, d))

        def loss(self, x1, x2):
            z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
            p1, p2 = self.predictor(z1), self.predictor(z2)
            return -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())

    return PlainSimSiam()


def run(device: str = "cpu", quick: bool = False) -> list[dict[str, Any]]:
    import torch

    import dnas
    from dnas.space import Task

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = []
    for cfg in QUICK if quick else FULL:
        torch.manual_seed(0)
        g = dnas.load_genotype("simsiam")
        space = dnas.create_space("nasiam-mlp", **{**dict(g.config), "backbone": cfg["backbone"], "backbone_width": cfg["width"] or 32,
                                                   "dim": cfg["dim"], "pred_dim": cfg["pred_dim"]})
        task = Task((3, cfg["size"], cfg["size"]), 0, two_views=True)
        ours = space.build_network(g, task).to(dev).train()
        plain = _plain_simsiam(cfg).to(dev).train()
        n_ours = sum(p.numel() for p in ours.parameters())
        n_plain = sum(p.numel() for p in plain.parameters())
        assert n_ours == n_plain, (n_ours, n_plain)  # same shapes, same parameter count
        with torch.no_grad():  # the same weights too: value-dependent kernel speed (denormals) hits both alike
            for a, b in zip([*ours.parameters(), *ours.buffers()], [*plain.parameters(), *plain.buffers()]):
                assert a.shape == b.shape
                a.copy_(b)
        control = copy.deepcopy(plain)  # plain against itself: the noise floor of the ratio
        x1 = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=dev)
        x2 = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=dev)
        models = {"dnas": ours, "plain": plain, "control": control}
        opts = {k: torch.optim.SGD(m.parameters(), 0.05, momentum=0.9, weight_decay=5e-4) for k, m in models.items()}

        def step(name):
            opt = opts[name]
            opt.zero_grad(set_to_none=True)
            loss = ours.loss(((x1, x2), None))["loss"] if name == "dnas" else models[name].loss(x1, x2)
            loss.backward()
            opt.step()

        times: dict[str, list[float]] = {k: [] for k in models}
        for name in models:
            step(name)  # warm-up
        orders = [("dnas", "plain", "control"), ("plain", "control", "dnas"), ("control", "dnas", "plain")]
        for r in range(cfg["rounds"]):
            for name in orders[r % 3]:  # rotate who goes first
                sync()
                t = time.perf_counter()
                step(name)
                sync()
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        # the median of per-round ratios: both steps of a round see about the same machine load
        pair = statistics.median(a / b for a, b in zip(times["dnas"], times["plain"]))
        noise = statistics.median(a / b for a, b in zip(times["control"], times["plain"]))
        out.append({
            "case": f"{cfg['backbone']} {cfg['size']}px batch {cfg['batch']} dim {cfg['dim']} pred {cfg['pred_dim']}",
            "device": device, "params": n_ours,
            "dnas_step_ms": round(1000 * med["dnas"], 2), "plain_step_ms": round(1000 * med["plain"], 2),
            "ratio": round(pair, 3), "ratio_of_medians": round(med["dnas"] / med["plain"], 3),
            "ratio_of_minima": round(min(times["dnas"]) / min(times["plain"]), 3),  # the least loaded rounds
            "control_ratio": round(noise, 3), "target_ratio": 1.05,
            "rounds": cfg["rounds"],
        })
    return out
