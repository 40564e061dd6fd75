"""Strategy ``random``: random search with the same budget, loop and fitness as ``tpe`` — the
baseline CSNAS (and every NAS result) is compared with.

Each categorical parameter is drawn uniformly (optuna's ``RandomSampler``). For spaces whose
encoding is a bijection onto the valid genotypes (DARTS: inputs pair + two ops per node) that is
uniform over valid genotypes; with the default one-parameter-per-decision encoding, samples that
break a constraint are rejected (pruned, not counted), which is uniform over the valid ones too.
"""
from __future__ import annotations

from dnas.engine.trials import TrialStrategy
from dnas.registry import register_strategy


@register_strategy("random")
class RandomStrategy(TrialStrategy):
    def sampler(self, seed: int):
        from dnas.engine.trials import _quiet_optuna

        return _quiet_optuna().samplers.RandomSampler(seed=seed)
