"""dnas: differentiable neural architecture search behind one Supernet/Genotype interface.

The five nouns (Decision, Genotype, SearchSpace, Supernet, Strategy) are imported here at once; the
entry points (``search``, ``train``, ``prune``, ...) load their layer on first use, so importing a
noun never drags in the engine, the spaces or the tools.
"""
from __future__ import annotations

import importlib
from typing import Any

from dnas.errors import DnasError
from dnas.genotype import Genotype, load_genotype
from dnas.registry import (
    create_space,
    create_strategy,
    list_parsers,
    list_spaces,
    list_strategies,
    register_callback,
    register_parser,
    register_space,
    register_strategy,
)
from dnas.space import Decision, SearchSpace, Task
from dnas.strategy import Strategy
from dnas.supernet import Supernet

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "GradientStrategy": "dnas.engine.loop",
    "Callback": "dnas.engine.callbacks",
    "LoopState": "dnas.engine.callbacks",
    "search": "dnas.api",
    "train": "dnas.api",
    "compare": "dnas.tools.compare",
    "retrieve": "dnas.evaluate.ssl",
    "ssl_train": "dnas.evaluate.ssl",
    "prune": "dnas.tools.pruning",
    "finetune_pruned": "dnas.evaluate.pruned",
    "load_pruned": "dnas.evaluate.pruned",
    "load_trained": "dnas.evaluate",
    "register_dataset": "dnas.engine.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dnas' has no attribute {name!r}")


__all__ = [
    "Decision", "DnasError", "Genotype", "SearchSpace", "Strategy", "Supernet", "Task",
    "create_space", "create_strategy", "list_parsers", "list_spaces", "list_strategies", "load_genotype",
    "register_callback", "register_parser", "register_space", "register_strategy", *_LAZY,
]
