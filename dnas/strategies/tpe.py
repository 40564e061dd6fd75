"""Strategy ``tpe``: CSNAS' sequential model-based optimisation with a Tree-structured Parzen
Estimator (Nguyen & Chang 2021), over any space's categorical parameters.

optuna's ``TPESampler`` proposes each trial (expected improvement over ``n_ei_candidates``
candidates after ``n_startup_trials`` random ones); the loop, fitness, storage and workers are
shared with ``random`` (``dnas/trials.py``). The authors' code used hyperopt's TPE.
"""
from __future__ import annotations

from dataclasses import dataclass

from dnas.registry import register_strategy
from dnas.engine.trials import TrialConfig, TrialStrategy


@dataclass
class TPEConfig(TrialConfig):
    n_startup_trials: int = 10  # optuna default: random trials before the TPE model is used
    n_ei_candidates: int = 24  # optuna default: candidates scored by expected improvement
    multivariate: bool = False  # optuna's multivariate TPE (joint densities)

    def check(self):
        if self.n_startup_trials < 0 or self.n_ei_candidates < 1:
            return "n_startup_trials must be >= 0 and n_ei_candidates >= 1"
        return super().check()


@register_strategy("tpe")
class TPEStrategy(TrialStrategy):
    """TPE over the space's categorical encoding (see ``SearchSpace.categorical``)."""

    Config = TPEConfig

    def sampler(self, seed: int):
        from dnas.engine.trials import _quiet_optuna

        optuna = _quiet_optuna()
        c = self.config
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=c.n_startup_trials, n_ei_candidates=c.n_ei_candidates, multivariate=c.multivariate
        )
