"""LR shocks: training episodes whose best LR changes during the run (a research lever).

A controller that only learned one good curve per task cannot beat the replay of that curve
(issue 14's G5): to gain from reacting, it has to read from its observation whether the LR it
applies is too high or too low *now*. In a shocked episode, at a random step inside
`SHOCK_WINDOW` of the run, every LR the inner optimizer receives from then on is multiplied by
a hidden factor c = 10 ** u, u uniform in [-1, 1] (`SHOCK_DECADES` = 1): from then on the base
LR the episode was anchored to is off by c, and only the run's response (loss, gradient norms,
the update's size and the gradients' agreement) says so. The observation's log_lr_ratio stays
the controller's own deviation, blind to c, exactly as a user's base LR being off would be.

Nothing else changes: the reward, the episode rules and the reference run of the relative
reward (shocked alike, so "better than cosine at this LR" keeps its meaning). Only the batched
env (`lrctl.batched_env.BatchedLRControlEnv`) draws shocks; `TrainConfig.lr_shock` is the
probability that an episode is shocked (0: never, the default and every shipped controller).
No torch scheduler, callback or SB3 wrapper provides a hidden, per-episode LR perturbation, so
this is written here.
"""

from __future__ import annotations

import numpy as np

from lrctl.errors import UsageError

SHOCK_WINDOW = (0.2, 0.7)
"""A shock starts at a step drawn uniformly in this fraction of the run's horizon."""
SHOCK_DECADES = 1.0
"""The hidden factor is 10 ** u with u uniform in [-SHOCK_DECADES, SHOCK_DECADES]."""


def check_probability(p: float) -> float:
    """`p` as a float in [0, 1], or a UsageError that names the allowed range."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise UsageError(f"lr_shock is a probability in [0, 1], got {p!r}")
    return float(p)


def draw_shocks(
    rng: np.random.Generator, horizons: np.ndarray, probability: float
) -> tuple[np.ndarray, np.ndarray]:
    """One draw per episode of horizon T: (start step, factor), each [N]. An unshocked episode
    (probability 1 - p) gets start T (never reached) and factor 1. Draws nothing from `rng`
    when p = 0, so an env without shocks keeps its random stream."""
    horizons = np.asarray(horizons, np.int64)
    n = len(horizons)
    if probability <= 0.0:
        return horizons.copy(), np.ones(n)
    shocked = rng.random(n) < probability
    lo, hi = SHOCK_WINDOW
    start = np.floor(horizons * rng.uniform(lo, hi, n)).astype(np.int64)
    factor = 10.0 ** rng.uniform(-SHOCK_DECADES, SHOCK_DECADES, n)
    return np.where(shocked, start, horizons), np.where(shocked, factor, 1.0)


def shock_multipliers(t: np.ndarray, start: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """The hidden multiplier of the LR at steps t [N, k] (0-based) of episodes with shocks
    (`start`, `factor`, each [N]): `factor` from step `start` on, else 1."""
    return np.where(t >= np.asarray(start)[:, None], np.asarray(factor)[:, None], 1.0)
