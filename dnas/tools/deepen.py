"""D-DARTS Algorithm 2: derive an N-cell genotype from n searched individual cells.

The two reduction cells sit at ⌊n/3⌋ and ⌊2n/3⌋ of the searched net and at ⌊N/3⌋ and ⌊2N/3⌋ of
the deeper one; they are copied over. Each normal position i of the deeper net takes a searched
normal cell of the same third. Two mappings:

- ``algorithm`` (default, D-DARTS Algorithm 2 as written): position i takes the searched cell
  ``S_t[i mod k]``, where S_t lists the k searched normal cells of the same third t and i is the
  absolute position in the deeper net.
- ``per_third`` (dnas' earlier mapping): the cycle restarts at the first position of each third,
  ``S_t[(i − first_t) mod k]``.

Example, 8 → 14 (source reductions 2 and 5, target reductions 4 and 9)::

    position     0 1 2 3 | 4 | 5 6 7 8 | 9 | 10 11 12 13
    algorithm    0 1 0 1 | 2 | 4 3 4 3 | 5 |  6  7  6  7
    per_third    0 1 0 1 | 2 | 3 4 3 4 | 5 |  6  7  6  7

As written, the algorithm also permutes a third that starts at an odd position when N = n
(8 → 8 gives 0 1 2 4 3 5 6 7); ``per_third`` leaves N = n unchanged.

Example:
    >>> from dnas.tools.deepen import deepen
    >>> g14 = deepen(load_genotype("runs/dd/genotype.yaml"), 14)     # or: dnas deepen G --cells 14
"""
from __future__ import annotations

from typing import Literal

from dnas.errors import DnasError
from dnas.genotype import Genotype

Mapping = Literal["algorithm", "per_third"]
MAPPINGS = ("algorithm", "per_third")


def _thirds(n: int) -> tuple[tuple[int, int], list[range]]:
    r1, r2 = n // 3, 2 * n // 3
    return (r1, r2), [range(r1), range(r1 + 1, r2), range(r2 + 1, n)]


def deepen_positions(n: int, N: int, mapping: Mapping = "algorithm") -> list[int]:
    """The searched cell that fills each of the N positions (D-DARTS Algorithm 2).

    Args:
        n: number of searched cells.
        N: number of cells of the deeper net.
        mapping: ``"algorithm"`` (Algorithm 2 as written: the absolute position i mod k) or
            ``"per_third"`` (the cycle restarts in each third).

    Returns:
        For each position 0..N−1, the index of the searched cell copied there.

    Raises:
        DnasError: fewer than 2 cells, an unknown mapping, or a third without a normal cell.
    """
    if mapping not in MAPPINGS:
        raise DnasError(f"unknown deepen mapping '{mapping}'; use one of {', '.join(MAPPINGS)}")
    if n < 2 or N < 2:
        raise DnasError(f"deepen needs at least 2 cells on both sides (two reductions), got {n} -> {N}")
    (r1, r2), src = _thirds(n)
    (R1, R2), dst = _thirds(N)
    out = [-1] * N
    out[R1], out[R2] = r1, r2  # reduction cells keep their searched cells
    for third, (s, t) in enumerate(zip(src, dst)):
        if len(t) and not len(s):
            raise DnasError(
                f"the {n}-cell genotype has no normal cell in third {third + 1} to fill {len(t)} position(s) "
                f"of a {N}-cell net; search with more cells"
            )
        for k, pos in enumerate(t):
            if mapping == "algorithm":
                out[pos] = s[pos % len(s)]  # D-DARTS Algorithm 2: the absolute position i mod k
            else:
                out[pos] = s[k % len(s)]  # the cycle restarted at the first position of the third
    return out


def deepen(genotype: Genotype, cells: int, mapping: Mapping = "algorithm") -> Genotype:
    """An N-cell genotype (N = ``cells``) of the same cell space from an n-cell one (Algorithm 2).

    Works on genotypes of the ``darts`` family: with one α per cell (``ddarts``) the cells are
    mapped as :func:`deepen_positions` says; with shared normal/reduce cells only ``layers`` changes.

    Args:
        genotype: the searched n-cell genotype.
        cells: N, the number of cells of the new genotype.
        mapping: ``"algorithm"`` (default) or ``"per_third"``; see :func:`deepen_positions`.

    Returns:
        The N-cell genotype, validated against its space.

    Raises:
        DnasError: not a DARTS-style genotype, custom reductions, or N not reachable from n.
    """
    from dnas.registry import create_space
    from dnas.spaces.darts import DartsSpace

    if cells < 1:
        raise DnasError(f"deepen takes the number of cells of the new genotype (--cells), >= 1; got {cells}")
    src = create_space(genotype.space, **dict(genotype.config))
    if not isinstance(src, DartsSpace):
        raise DnasError(f"deepen works on DARTS-style cell genotypes (darts, ddarts), not space '{genotype.space}'")
    src.validate(genotype)
    custom = [k for k in ("reductions", "share") if genotype.config.get(k) is not None]
    if custom:
        raise DnasError(
            f"deepen places reductions at N/3 and 2N/3 (Algorithm 2); this genotype sets {' and '.join(custom)} "
            f"(a DARTOpti encoding), so it cannot be deepened"
        )
    dst = create_space(genotype.space, **{**dict(genotype.config), "layers": cells})
    if not src.config.individual:
        return dst.genotype(dict(genotype.choices))
    choices = {}
    for pos, s in enumerate(deepen_positions(src.config.layers, cells, mapping)):
        key, new = src.cell_key(s), dst.cell_key(pos)
        for d in src.cell_decisions(key):
            choices[new + d.name[len(key) :]] = genotype.choices[d.name]
    out = dst.genotype(choices)
    dst.validate(out)
    return out
