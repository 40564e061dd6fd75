"""The architecture distance metric M of D-DARTS (Heuillet et al., thesis eqs. (4.6)–(4.8)).

An edge (a :class:`~dnas.space.Decision` of a cell) is a multi-hot vector over the 12 ops of S_o;
an empty edge (no op kept) is the zero vector and ops outside S_o (``none``) are ignored. Then

    d(u, v)    = (1/K) Σ_k s_k · [u_k ≠ v_k]                 weighted Hamming, Algorithm 3
    M_H(C, C') = max(max_{u∈C} min_{v∈C'} d(u, v),
                     max_{v∈C'} min_{u∈C} d(u, v))         symmetric Hausdorff, eq. (4.7)
    M(A, B)    = (1/n) Σ_i M_H(C_i^A, C_i^B)                 mean over the n cells, eq. (4.8)

with K = 12 and s_k the op scores of Table 4.1 **divided by 100** (82.76 % -> 0.8276), so an edge
distance lies in [0, 0.83] (all 12 positions differ) and so does M. ``norm="weights"`` divides by
Σ_k s_k instead of K (scipy's weighted ``hamming``, as the authors' code): the same metric scaled
by 1 / mean(s) ≈ 1.204, with values in [0, 1].

Cells are the network's n positions: in ``darts`` (shared cells) every normal position compares
the normal cells and every reduction position the reduction cells, so M weighs them 6:2 for 8
cells; in ``ddarts`` cell i is compared with cell i (with ``share``, through its α group).

M is a pseudometric on genotypes: symmetric, M(A, A) = 0 and the triangle inequality hold, but
the Hausdorff distance sees a cell as the *set* of its edge vectors, so two genotypes that only
permute ops among a cell's edges (or repeat an edge vector) are at distance 0 (tested).

Example:
    >>> from dnas.engine.distance import distance
    >>> distance(load_genotype("a.yaml"), load_genotype("b.yaml"))     # or: dnas distance a.yaml b.yaml
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Literal

from dnas.errors import DnasError

if TYPE_CHECKING:
    from dnas.genotype import Genotype
    from dnas.space import SearchSpace

#: D-DARTS Table 4.1: accuracy (%) of a small net with the op at every position; vector order = S_o
OP_SCORES: dict[str, float] = {
    "conv_3x1_1x3": 82.76,
    "conv_7x1_1x7": 82.72,
    "max_pool_3x3": 82.96,
    "avg_pool_3x3": 82.51,
    "skip_connect": 82.15,
    "simple_conv_1x1": 82.27,
    "simple_conv_3x3": 83.12,
    "sep_conv_3x3": 83.19,
    "sep_conv_5x5": 84.87,
    "dil_conv_3x3": 82.96,
    "dil_conv_5x5": 82.99,
    "bottleneck_1x3x1": 83.06,
}
OPS = tuple(OP_SCORES)
WEIGHTS = tuple(s / 100 for s in OP_SCORES.values())  # % / 100

Edge = frozenset  # the set of S_o ops kept on an edge: the support of its multi-hot vector


def edge_vector(ops: Iterable[str]) -> tuple[int, ...]:
    """The multi-hot vector of an edge over the 12 S_o ops (other ops, e.g. ``none``, ignored)."""
    kept = set(ops)
    return tuple(int(o in kept) for o in OPS)


def edge_distance(u: Iterable[str], v: Iterable[str], norm: Literal["positions", "weights"] = "positions") -> float:
    """Weighted Hamming distance between two edges given as op lists (D-DARTS Algorithm 3)."""
    a, b = edge_vector(u), edge_vector(v)
    diff = sum(w for w, x, y in zip(WEIGHTS, a, b) if x != y)  # Σ_k s_k [u_k ≠ v_k]
    return diff / (len(OPS) if norm == "positions" else sum(WEIGHTS))  # Algorithm 3: mean over positions


def hausdorff(A: Iterable[Iterable[str]], B: Iterable[Iterable[str]], norm: Literal["positions", "weights"] = "positions") -> float:
    """Symmetric Hausdorff distance between two cells given as lists of edges (eq. 4.7)."""
    A = {Edge(o for o in e if o in OP_SCORES) for e in A}
    B = {Edge(o for o in e if o in OP_SCORES) for e in B}
    if not A or not B:
        raise DnasError("a cell without edges has no Hausdorff distance; both cells need at least one decision")
    d = {(a, b): edge_distance(a, b, norm) for a in A for b in B}
    ab = max(min(d[a, b] for b in B) for a in A)
    ba = max(min(d[a, b] for a in A) for b in B)
    return max(ab, ba)  # eq. (4.7): the larger of the two directed distances


def cell_edges(genotype: "Genotype", space: "SearchSpace | None" = None) -> list[tuple[str, list[tuple[str, ...]]]]:
    """The genotype's cells in network order: ``[(cell key, [ops of each edge])]`` for each position.

    A space with ``cell_key(i)`` and ``layers`` (darts, ddarts) lists one entry per network
    position; any other space one entry per distinct ``Decision.cell``. Fails if the space has
    decisions outside cells (M is defined for cell spaces only).
    """
    from dnas.registry import create_space

    space = space or create_space(genotype.space, **dict(genotype.config))
    by_cell: dict[str, list[tuple[str, ...]]] = {}
    for d in space.decisions():
        if d.cell is None:
            raise DnasError(f"space '{space.name}' has decisions outside cells ({d.name}); the distance M needs a cell space")
        if d.name not in genotype.choices:
            raise DnasError(f"genotype has no choice for '{d.name}'; is it for this space configuration?")
        by_cell.setdefault(d.cell, []).append(tuple(genotype.choices[d.name]))
    layers = getattr(space.config, "layers", None)
    if hasattr(space, "cell_key") and isinstance(layers, int):
        keys = [space.cell_key(i) for i in range(layers)]
    else:
        keys = list(by_cell)
    return [(k, by_cell[k]) for k in keys]


def has_cells(space: "SearchSpace") -> bool:
    """Whether M means something on this space's genotypes: every decision lives in a cell and
    chooses among CNN ops of S_o (MLP heads or ViT gates have cells but none of these ops)."""
    ds = space.decisions()
    return bool(ds) and all(d.cell is not None for d in ds) and any(o in OP_SCORES for d in ds for o in d.options)


def cell_distances(a: "Genotype", b: "Genotype", norm: Literal["positions", "weights"] = "positions") -> list[float]:
    """M_H(C_i^A, C_i^B) for every cell position i."""
    if a.space != b.space:
        raise DnasError(f"cannot compare a '{a.space}' genotype with a '{b.space}' one; the distance needs the same space")
    ca, cb = cell_edges(a), cell_edges(b)
    if [k for k, _ in ca] != [k for k, _ in cb]:
        raise DnasError(
            f"the genotypes have different cells ({len(ca)} vs {len(cb)}: {', '.join(dict.fromkeys(k for k, _ in ca))} vs "
            f"{', '.join(dict.fromkeys(k for k, _ in cb))}); compare genotypes with the same number of cells"
        )
    if not ca:
        raise DnasError(f"space '{a.space}' genotypes have no cells; the distance M needs a cell space")
    cache: dict[str, float] = {}
    out = []
    for (key, ea), (_, eb) in zip(ca, cb):
        if key not in cache:
            cache[key] = hausdorff(ea, eb, norm)
        out.append(cache[key])
    return out


def distance(a: "Genotype", b: "Genotype", norm: Literal["positions", "weights"] = "positions") -> float:
    """M(A, B) = (1/n) Σ_i M_H(C_i^A, C_i^B) (D-DARTS eq. (4.8)); see the module docstring."""
    if norm not in ("positions", "weights"):
        raise DnasError(f"unknown norm '{norm}'; choose positions (the thesis) or weights (the authors' code)")
    d = cell_distances(a, b, norm)
    return sum(d) / len(d)  # eq. (4.8): mean over the n cells
