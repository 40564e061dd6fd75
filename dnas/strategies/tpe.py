"""Strategy ``tpe``: CSNAS' sequential model-based optimisation with a Tree-structured Parzen
Estimator (Nguyen & Chang 2021, arXiv 2102.10557), over any space's categorical parameters.

optuna's ``TPESampler`` proposes each trial: ``n_startup_trials`` random trials, then the candidate
with the best expected improvement among ``n_ei_candidates`` drawn from the "good" density, fitted
on the best ``gamma`` fraction of the trials so far. The defaults are the paper's (20 start-up
trials, 20,000 candidates, the best 20 %); optuna's own defaults (10, 24, min(⌈0.1 n⌉, 25)) are one
``--set`` away. The loop, fitness, storage and workers are shared with ``random``
(``dnas/engine/trials.py``).

The authors' code used hyperopt's TPE: its script builds ``tpe.suggest`` with the paper's values but
passes plain ``tpe.suggest`` to ``fmin``, so it ran hyperopt's defaults (20 start-up trials,
24 candidates, γ = 0.25 applied as ⌈0.25 √n⌉ good trials).

Cost: one suggestion scores every candidate under both densities; with 20,000 candidates over the
DARTS cell encoding that is the bulk of the sampler's time (see the CSNAS page of the manual for
a measurement). Tests override ``n_ei_candidates``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from dnas.engine.trials import TrialConfig, TrialStrategy
from dnas.registry import register_strategy


def good_trials(n: int, fraction: float) -> int:
    """How many of ``n`` finished trials form TPE's "good" density: ⌈fraction · n⌉ (CSNAS: the best 20 %)."""
    return math.ceil(fraction * n)


@dataclass
class TPEConfig(TrialConfig):
    # random trials before the TPE model is used (CSNAS: 20; optuna's default: 10)
    n_startup_trials: int = field(default=20, metadata={"paper": 20, "code": 20, "optuna": 10})
    # candidates scored by expected improvement (CSNAS: 20K; optuna's default: 24)
    n_ei_candidates: int = field(default=20000, metadata={"paper": 20000, "code": 24, "optuna": 24})
    # fraction of the trials forming the "good" density (CSNAS: the best 20 %); "optuna": optuna's
    # rule min(⌈0.1 n⌉, 25). The authors' code ran hyperopt's γ = 0.25 (⌈0.25 √n⌉ trials).
    gamma: float | Literal["optuna"] = field(default=0.2, metadata={"paper": 0.2, "code": "0.25 (hyperopt: ceil(0.25 sqrt(n)))",
                                                       "optuna": "min(ceil(0.1 n), 25)"})
    multivariate: bool = False  # optuna's multivariate TPE (joint densities)

    def check(self):
        if self.n_startup_trials < 0 or self.n_ei_candidates < 1:
            return "n_startup_trials must be >= 0 and n_ei_candidates >= 1"
        if self.gamma != "optuna" and not 0 < self.gamma <= 1:
            return "gamma must be in (0, 1] (the fraction of trials in the good density), or 'optuna' for optuna's rule"
        return super().check()


@register_strategy("tpe")
class TPEStrategy(TrialStrategy):
    """TPE over the space's categorical encoding (see ``SearchSpace.categorical``)."""

    Config = TPEConfig

    def sampler(self, seed: int):
        from dnas.engine.trials import _quiet_optuna

        optuna = _quiet_optuna()
        c = self.config
        kw: dict = {} if c.gamma == "optuna" else {"gamma": partial(good_trials, fraction=c.gamma)}
        if c.multivariate:
            kw["multivariate"] = True
        with warnings.catch_warnings():  # optuna >= 4.9 flags gamma/multivariate for removal in 6.0; both still work
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=c.n_startup_trials, n_ei_candidates=c.n_ei_candidates, **kw)
