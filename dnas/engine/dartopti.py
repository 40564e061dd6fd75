"""DARTOpti (D-DARTS thesis): start the search from a hand-made network encoded as a genotype.

The shipped genotypes ``resnet18``, ``resnet50`` and ``xception`` (``dnas/genotypes/``) encode those
nets as DARTS cells over S_o (space ``ddarts`` with ``ops: darts-o``); their YAML comments say how.
The ``init_genotype`` callback (``callbacks: {init_genotype: {genotype: resnet18}}``, CLI
``--init-genotype``; :class:`dnas.engine.callbacks.InitGenotype`) loads one into α before the first
epoch of a fresh run: the chosen ops get α = +3, the others −3, so σ(α) = 0.953 / 0.047 (above and below the
0.85 threshold of the sparse/edge/threshold parsers) and softmax ranks the chosen ops first; the
parser then returns the same genotype until the search moves α. Identical cells share α through
the space option ``share``; ``warmup_epochs`` train the weights with α frozen first (DARTOpti: 5).

Example:
    >>> dnas.search(config=yaml.safe_load(open("experiments/dartopti_resnet18.yaml")))
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dnas.errors import DnasError
from dnas.genotype import Genotype, load_genotype

if TYPE_CHECKING:
    from dnas.supernet import Supernet

#: α of the chosen / other ops after initialisation from a genotype
INIT_HIGH, INIT_LOW = 3.0, -3.0
#: space options that change the decisions (the rest, e.g. C, may differ between genotype and search)
STRUCTURAL = ("layers", "nodes", "ops", "individual", "reductions", "share")


def init_alpha_from_genotype(supernet: "Supernet", genotype: Genotype | str, high: float = INIT_HIGH, low: float = INIT_LOW) -> Genotype:
    """Set the supernet's α from ``genotype`` (a Genotype, a file or a shipped name); returns it.

    Fails in one line, naming the options to set, when the genotype does not fit the searched space.
    """
    g = genotype if isinstance(genotype, Genotype) else load_genotype(genotype)
    space = supernet.space
    if g.space != space.name:
        raise DnasError(f"init genotype is for space '{g.space}', but the search space is '{space.name}'; use --space {g.space}")
    ours = space.config_dict()
    differ = [k for k in STRUCTURAL if k in g.config and k in ours and g.config[k] != ours[k]]
    if differ:
        sets = " ".join(f"--set space.{k}={_flag(g.config[k])}" for k in differ)
        raise DnasError(f"init genotype does not fit the search space ({', '.join(differ)} differ); add {sets}")
    space.validate(g)
    supernet.set_alpha_from_genotype(g, high=high, low=low)
    return g


def _flag(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)
