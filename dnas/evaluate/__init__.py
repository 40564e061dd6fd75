"""The evaluation phase: train a genotype's network (supervised, SSL + linear evaluation, or a pruned
model's fine-tuning)."""
from __future__ import annotations

from dnas.config import make_config
from dnas.engine.data import DataConfig
from dnas.genotype import Genotype, load_genotype
from dnas.registry import create_space


def genotype_space_data(genotype, data: str, space_config=None, data_config=None):
    """The genotype (loaded if a path or name), its space with ``space_config`` overrides, and the
    data config: the setup every evaluation phase (``train``, ``ssl_train``) starts from."""
    g = genotype if isinstance(genotype, Genotype) else load_genotype(genotype)
    dcfg = make_config(DataConfig, {"name": data, **(data_config or {})}, "data")
    space = create_space(g.space, **{**dict(g.config), **(space_config or {})})
    return g, space, dcfg


#: the evaluations ``train`` picks from (``SearchSpace.evaluation``)
EVALUATIONS = ("supervised", "ssl", "pruned")
