"""dnas: differentiable neural architecture search behind one Supernet/Genotype interface."""
from dnas.errors import DnasError
from dnas.genotype import Genotype, load_genotype
from dnas.registry import (
    create_space,
    create_strategy,
    list_parsers,
    list_spaces,
    list_strategies,
    register_parser,
    register_space,
    register_strategy,
)
from dnas.space import Decision, SearchSpace, Task
from dnas.strategy import GradientStrategy, Strategy
from dnas.supernet import Supernet

from dnas import parsers as _parsers  # noqa: E402,F401  (registers the built-in parsers)
from dnas import spaces as _spaces  # noqa: E402,F401
from dnas import strategies as _strategies  # noqa: E402,F401
from dnas import train as _train_module  # noqa: E402,F401  (imported first: the function below must win)
from dnas.api import search, train  # noqa: E402
from dnas.ssl_eval import retrieve, ssl_train  # noqa: E402
from dnas.prune import finetune_pruned, load_pruned, prune  # noqa: E402  (the function wins over the module name)

__version__ = "0.1.0"

__all__ = [
    "Decision", "DnasError", "Genotype", "GradientStrategy", "SearchSpace", "Strategy", "Supernet", "Task",
    "create_space", "create_strategy", "list_parsers", "list_spaces", "list_strategies", "load_genotype",
    "register_parser", "register_space", "register_strategy", "retrieve", "search", "ssl_train", "train",
    "finetune_pruned", "load_pruned", "prune",
]
