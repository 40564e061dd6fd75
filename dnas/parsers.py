"""Parsers: from relaxed weights per decision to discrete choices.

A parser is ``f(decisions, weights, **kw) -> {decision name: [options]}``, registered by name.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from dnas.registry import register_parser
from dnas.space import Decision

NONE = "none"


def _best_real_op(d: Decision, w: torch.Tensor) -> tuple[float, str | None]:
    """Best option that is not ``none``, and its weight."""
    best, arg = float("-inf"), None
    for i, op in enumerate(d.options):
        if op != NONE and float(w[i]) > best:
            best, arg = float(w[i]), op
    return best, arg


@register_parser("darts")
def darts_parser(decisions: Sequence[Decision], weights: dict[str, torch.Tensor], k: int = 2) -> dict[str, list[str]]:
    """DARTS: per node keep the k incoming edges whose best non-``none`` weight is highest;
    each kept edge keeps its best non-``none`` op. Ties go to the earlier edge."""
    groups: dict[str | None, list[Decision]] = defaultdict(list)
    for d in decisions:
        groups[d.group].append(d)
    out: dict[str, list[str]] = {}
    for group, ds in groups.items():
        scored = [(_best_real_op(d, weights[d.name]), i, d) for i, d in enumerate(ds)]
        if group is None:
            keep = {d.name for _, _, d in scored}
        else:
            ranked = sorted(scored, key=lambda s: (-s[0][0], s[1]))
            keep = {d.name for _, _, d in ranked[:k]}
        for (_, op), _, d in scored:
            out[d.name] = [op] if d.name in keep and op is not None else []
    return out


@register_parser("argmax")
def argmax_parser(decisions: Sequence[Decision], weights: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Each decision keeps its highest-weighted option (an edge whose best option is ``none`` is dropped)."""
    out = {}
    for d in decisions:
        op = d.options[int(torch.argmax(weights[d.name]))]
        out[d.name] = [] if op == NONE else [op]
    return out


def _keep_above(decisions, weights, threshold: float, per_decision: int) -> dict[str, list[str]]:
    """Options with weight ≥ threshold (best first, at most ``per_decision``, never ``none``).

    A group (node) left with nothing keeps its single best option, so a cell never loses a node;
    a decision that must keep ``min_options`` (an MLP layer, a gate) keeps its best ones anyway.
    """
    out: dict[str, list[str]] = {}
    groups: dict[str | None, list[Decision]] = defaultdict(list)
    for d in decisions:
        w = weights[d.name]
        ranked = sorted((i for i, o in enumerate(d.options) if o != NONE), key=lambda i: -float(w[i]))
        keep = [d.options[i] for i in ranked if float(w[i]) >= threshold]
        out[d.name] = keep[: min(per_decision, d.max_options)]
        if len(out[d.name]) < d.min_options:
            out[d.name] = [d.options[i] for i in ranked[: d.min_options]]
        groups[d.group].append(d)
    for group, ds in groups.items():
        if group is not None and not any(out[d.name] for d in ds):
            (_, op), _, best = max(((_best_real_op(d, weights[d.name]), -i, d) for i, d in enumerate(ds)), key=lambda s: (s[0][0], s[1]))
            out[best.name] = [op] if op is not None else []
    return out


@register_parser("sparse")
def sparse_parser(decisions, weights, threshold: float = 0.85) -> dict[str, list[str]]:
    """FairDARTS: at most 1 op per edge, kept if σ(α) ≥ threshold (0.85, D-DARTS)."""
    return _keep_above(decisions, weights, threshold, 1)


@register_parser("edge")
def edge_parser(decisions, weights, threshold: float = 0.85) -> dict[str, list[str]]:
    """FairDARTS: at most 2 ops per edge, kept if σ(α) ≥ threshold."""
    return _keep_above(decisions, weights, threshold, 2)


@register_parser("threshold")
def threshold_parser(decisions, weights, threshold: float = 0.85) -> dict[str, list[str]]:
    """Every option with weight ≥ threshold (up to the decision's ``max_options``); DARIO gates use it."""
    return _keep_above(decisions, weights, threshold, 10**9)
