"""Gaussian noise on the normalised observations PPO trains on, a regulariser for unseen tasks.

The policy sees five train families, and on the val suite's tasks its features take values
and combinations it never saw; PPO seeds of one configuration then disagree there by as much
as any lever moves the result (agents/default/iterations.md, L32 and L40). With
`TrainConfig.obs_noise = s`, every observation of the training rollouts gets independent
N(0, s^2) noise per feature, in units of the feature's running standard deviation (noise
added above `VecNormalize`, so the statistics the exported controller carries are those of
the clean features), then the same clip as before. The policy learns actions that hold over
a neighbourhood of each observation instead of an edge drawn between the few points the
train families visit. The periodic evaluation on the held-out suite and the exported
controller see clean observations.

`ObsNoise` is a `VecEnvWrapper` over the normaliser; every other attribute (`obs_rms`,
`save`, `training`) reaches the normaliser through SB3's wrapper lookup, and `normaliser(venv)`
finds it under the wrapper (for the resume, which reloads the normaliser's statistics).
SB3 has action noise (for its off-policy algorithms) but no observation noise, hence
this wrapper.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn


class ObsNoise(VecEnvWrapper):
    """Adds N(0, std^2) to each coordinate of the normalised observations, clipped at
    +-`clip` afterwards (the normaliser's own clip), with its own seeded generator."""

    def __init__(self, venv: VecNormalize, std: float, clip: float, seed: int = 0) -> None:
        if not isinstance(venv, VecNormalize):
            raise TypeError("ObsNoise wraps the VecNormalize (noise in normalised units)")
        if not std > 0:
            raise ValueError(f"ObsNoise std must be > 0, got {std}")
        super().__init__(venv)
        self.std, self.clip = float(std), float(clip)
        self.rng = np.random.default_rng(seed)

    def _noisy(self, obs: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0.0, self.std, size=obs.shape).astype(obs.dtype)
        return np.clip(obs + noise, -self.clip, self.clip)

    def reset(self) -> np.ndarray:
        return self._noisy(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        # infos' terminal_observation stays clean: SB3 normalises it for the value bootstrap
        # (VecNormalize did), and the critic is trained on noisy inputs around it anyway.
        return self._noisy(obs), rewards, dones, infos


def with_obs_noise(venv: VecNormalize, std: float, clip: float, seed: int) -> VecEnv:
    """`venv` itself when `std` is 0, else `venv` under `ObsNoise`."""
    return ObsNoise(venv, std, clip, seed) if std else venv


def normaliser(venv: VecEnv) -> VecNormalize:
    """The `VecNormalize` at the top of a training stack, under `ObsNoise` if there is one."""
    return venv.venv if isinstance(venv, ObsNoise) else venv
