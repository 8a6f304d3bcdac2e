"""Reward normalisation per task family: each family's rewards divided by its own scale.

SB3's `VecNormalize` divides every reward by one running standard deviation of the
discounted return, pooled over all episodes. The train suite's families differ in how far a
run's log loss moves (on friedman_mlp or noisy_quadratic several times as far as on char_mlp,
`benchmarks/feature_trace.py`), so under the pooled scale the families with large moves make
most of PPO's advantages and the small-move families, whose runs look like the val suite's
language models, are nearly invisible in the gradient. With `TrainConfig.reward_norm =
"family"`, `FamilyVecNormalize` keeps one running variance of the discounted return per
family instead, so that a good decision counts about as much on every family.

Observations are normalised exactly as by `VecNormalize` (one pooled running mean and
variance: the statistics the exported controller carries), and so is anything else; only the
reward's divisor changes. The family of each env slot is read from the step's `info["family"]`
(both envs put it there, `lrctl.episodes.step_info`) by `FamilyTags`, a wrapper right under
the normaliser, since `VecNormalize` updates and divides the reward before it returns the
infos. SB3 has no grouped reward statistics, hence this subclass; it reuses SB3's
`RunningMeanStd` for each family.

Training-side only: the environment's reward, the periodic evaluation's returns and the
controller file are the same under either setting.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

REWARD_NORMS = ("global", "family")
"""`TrainConfig.reward_norm`'s values: one pooled reward scale (SB3's `VecNormalize`) or one
per task family (`FamilyVecNormalize`)."""

NO_FAMILY = ""
"""The key of a slot whose info names no family (its rewards get a scale of their own)."""


class FamilyTags(VecEnvWrapper):
    """Passes every call through and records, at each step, each slot's task family."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.families: list[str] = [NO_FAMILY] * venv.num_envs

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.families = [str(info.get("family") or NO_FAMILY) for info in infos]
        return obs, rewards, dones, infos


def _require_tags(venv: VecEnv) -> None:
    if not isinstance(venv, FamilyTags):
        raise TypeError("FamilyVecNormalize wraps a FamilyTags (which names each slot's family)")


class FamilyVecNormalize(VecNormalize):
    """`VecNormalize` whose reward divisor is the running standard deviation of the discounted
    return of the slot's own task family (the pooled one, `ret_rms`, is still kept).

    `venv` must be a `FamilyTags` (it says each slot's family); `lrctl.ppo.make_training_env`
    builds the stack. Pickled and loaded like `VecNormalize` (`save`, `VecNormalize.load`)."""

    def __init__(self, venv: FamilyTags, **kwargs) -> None:
        _require_tags(venv)
        super().__init__(venv, **kwargs)
        self.family_rms: dict[str, RunningMeanStd] = {}

    def set_venv(self, venv: VecEnv) -> None:
        _require_tags(venv)
        super().set_venv(venv)

    def _slot_families(self) -> np.ndarray:
        return np.asarray(self.venv.families, dtype=object)

    def _update_reward(self, reward: np.ndarray) -> None:
        super()._update_reward(reward)  # self.returns (discounted, per slot) and ret_rms
        families = self._slot_families()
        for family in set(families):
            rms = self.family_rms.setdefault(family, RunningMeanStd(shape=()))
            rms.update(self.returns[families == family])

    def family_std(self, family: str) -> float:
        """The divisor of `family`'s rewards (1 for a family not seen yet, as SB3 starts)."""
        rms = self.family_rms.get(family)
        return float(np.sqrt((1.0 if rms is None else rms.var) + self.epsilon))

    def normalize_reward(self, reward: np.ndarray) -> np.ndarray:
        if not self.norm_reward:
            return reward
        stds = np.array([self.family_std(f) for f in self._slot_families()])
        return np.clip(reward / stds, -self.clip_reward, self.clip_reward)

    def unnormalize_reward(self, reward: np.ndarray) -> np.ndarray:
        if not self.norm_reward:
            return reward
        return reward * np.array([self.family_std(f) for f in self._slot_families()])


def reward_normaliser(venv: VecEnv, reward_norm: str, **kwargs) -> VecNormalize:
    """The training env's normaliser over `venv`: `VecNormalize` ("global") or
    `FamilyVecNormalize` over `FamilyTags` ("family"); `kwargs` go to either."""
    if reward_norm == "global":
        return VecNormalize(venv, **kwargs)
    if reward_norm == "family":
        return FamilyVecNormalize(FamilyTags(venv), **kwargs)
    raise ValueError(f"reward_norm must be one of {REWARD_NORMS}, got {reward_norm!r}")
