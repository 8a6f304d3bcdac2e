"""Hiding observation features from a policy: in training, and the same in its exported file.

A hidden feature reads 0 in every observation PPO sees: `HideFeatures` wraps the training
VecEnv, `hide` masks an observation the periodic evaluation reads. VecNormalize's running mean
for it then stays exactly 0, its normalised value is 0, and the policy's first layer never
receives anything there. At export `without_columns` zeroes the first layer's columns for
those features, so the controller file acts the same whatever the runtime computes there:
no change to the runtime (`lrctl.controller`) or to the controller file's format.

Why: a lever (agents/default/iterations.md, L37) asks whether a policy that cannot see the
fraction of the run done learns to read the run instead of a time-shaped prior.

SB3 has no VecEnv wrapper that masks entries of a box observation (`VecExtractDictObs`
selects keys of a dict observation), so this one is written here; it only sets entries to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from lrctl.controller_file import ControllerWeights
from lrctl.errors import UsageError
from lrctl.features import feature_names


def feature_indices(names: Sequence[str], feature_version: int) -> list[int]:
    """Observation indices of `names` under `feature_version`; a name the version does not
    have raises UsageError listing the ones it has."""
    known = feature_names(feature_version)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"hidden_features: {unknown[0]!r} is not a feature of version {feature_version}; "
            f"choose from: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"hidden_features: each feature may be named once, got {list(names)}")
    return sorted(known.index(n) for n in names)


def hide(obs: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """A copy of `obs` ([..., D]) with the entries at `indices` set to 0."""
    out = np.array(obs, copy=True)
    out[..., list(indices)] = 0
    return out


class HideFeatures(VecEnvWrapper):
    """A VecEnv whose observations read 0 at `indices` (reset and step alike)."""

    def __init__(self, venv: VecEnv, indices: Sequence[int]) -> None:
        super().__init__(venv)
        self.indices = list(indices)

    def reset(self) -> np.ndarray:
        return hide(self.venv.reset(), self.indices)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        # SB3 stores a finished episode's last observation in its info: mask it too, since
        # PPO bootstraps the value of a truncated episode from it.
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = hide(info["terminal_observation"], self.indices)
        return hide(obs, self.indices), rewards, dones, infos


def without_columns(weights: ControllerWeights, indices: Sequence[int]) -> ControllerWeights:
    """`weights` with the first layer's input columns at `indices` zeroed: the policy trained
    with those features reading 0, and now ignores whatever the runtime computes there."""
    if not indices:
        return weights
    (w0, b0), *rest = weights.layers
    w0 = w0.clone()
    w0[:, list(indices)] = 0.0
    return replace(weights, layers=[(w0, b0), *rest])
