"""Reward normalisation per task family (`TrainConfig.reward_norm`, `lrctl.family_reward_norm`):
each family's rewards divided by its own running scale; observations as before."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lrctl.cli import main
from lrctl.errors import ConfigError
from lrctl.family_reward_norm import FamilyTags, FamilyVecNormalize, reward_normaliser
from lrctl.ppo import TrainConfig, latest_checkpoint, train
from tests.test_ppo import tiny_cfg  # noqa: F401  (the fixture)


def _family_env(family: str, scale: float, seed: int) -> type[gym.Env]:
    """An env of one family whose rewards are `scale` times a standard normal draw."""

    class Env(gym.Env):
        observation_space = gym.spaces.Box(-5, 5, (2,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def __init__(self) -> None:
            self.rng = np.random.default_rng(seed)
            self.t = 0

        def reset(self, seed=None, options=None):
            self.t = 0
            return np.zeros(2, np.float32), {"family": family}

        def step(self, action):
            self.t += 1
            reward = scale * float(self.rng.normal())
            return np.ones(2, np.float32), reward, self.t == 20, False, {"family": family}

    return Env


def _normalised_stds(venv: VecNormalize, steps: int = 2000) -> np.ndarray:
    """The standard deviation of each slot's normalised rewards over `steps` steps."""
    venv.reset()
    rewards = []
    for _ in range(steps):
        _, r, _, _ = venv.step(np.zeros((venv.num_envs, 1), np.float32))
        rewards.append(r)
    return np.std(rewards[200:], axis=0)  # after the running scales settled


def test_each_family_is_scaled_by_its_own_return_std() -> None:
    """Two families whose rewards differ 10x in scale: pooled (VecNormalize), the small one's
    normalised rewards stay about 10x smaller; per family, both come out alike."""
    envs = [_family_env("small", 0.1, 0), _family_env("large", 1.0, 1)]
    pooled = _normalised_stds(reward_normaliser(DummyVecEnv(envs), "global", gamma=0.9))
    ratio_pooled = pooled[1] / pooled[0]
    per_family_venv = reward_normaliser(DummyVecEnv(envs), "family", gamma=0.9)
    assert isinstance(per_family_venv, FamilyVecNormalize)
    per_family = _normalised_stds(per_family_venv)
    ratio_family = per_family[1] / per_family[0]
    assert 8.0 < ratio_pooled < 12.5
    assert 0.8 < ratio_family < 1.25
    assert sorted(per_family_venv.family_rms) == ["large", "small"]
    # the divisor is the family's discounted-return std: about scale / sqrt(1 - gamma^2)
    expected = 0.1 / np.sqrt(1 - 0.81)
    assert per_family_venv.family_std("small") == pytest.approx(expected, rel=0.15)
    assert per_family_venv.family_std("unseen") == pytest.approx(1.0, abs=1e-3)
    # original rewards come back when unnormalised, and observations are pooled as before
    raw = per_family_venv.get_original_reward()
    np.testing.assert_allclose(
        per_family_venv.unnormalize_reward(per_family_venv.normalize_reward(raw)), raw, rtol=1e-6
    )
    assert per_family_venv.obs_rms.mean.shape == (2,)


def test_pickles_and_loads_like_vecnormalize(tmp_path) -> None:
    envs = [_family_env("a", 0.5, 0), _family_env("b", 2.0, 1)]
    venv = reward_normaliser(DummyVecEnv(envs), "family", gamma=0.9)
    _normalised_stds(venv, steps=300)
    venv.save(str(tmp_path / "norm.pkl"))
    loaded = VecNormalize.load(str(tmp_path / "norm.pkl"), FamilyTags(DummyVecEnv(envs)))
    assert isinstance(loaded, FamilyVecNormalize)
    assert loaded.family_std("b") == venv.family_std("b") > loaded.family_std("a")
    with pytest.raises(TypeError, match="wraps a FamilyTags"):
        VecNormalize.load(str(tmp_path / "norm.pkl"), DummyVecEnv(envs))
    with pytest.raises(ValueError, match="reward_norm must be one of"):
        reward_normaliser(DummyVecEnv(envs), "task")


def test_config_validates_and_migrates() -> None:
    assert TrainConfig.from_dict({"version": 9}).reward_norm == "global"
    assert TrainConfig.from_dict({"reward_norm": "family"}).reward_norm == "family"
    with pytest.raises(ConfigError, match="reward_norm must be one of global, family, got 'task'"):
        TrainConfig.from_dict({"reward_norm": "task"})


def test_training_keeps_a_scale_per_family_and_resumes(tiny_cfg, tmp_path) -> None:  # noqa: F811
    """The tiny suite has two families; the run's normaliser has a scale for each, a resumed
    run carries them on, and the controller exports as usual."""
    cfg = TrainConfig(**{**tiny_cfg.__dict__, "reward_norm": "family", "total_timesteps": 128})
    run = tmp_path / "run"
    train(cfg, run, progress_bar=False)
    with open(latest_checkpoint(run) / "vecnormalize.pkl", "rb") as f:
        norm = pickle.load(f)
    assert isinstance(norm, FamilyVecNormalize)
    assert sorted(norm.family_rms) == ["breast_cancer_logreg", "noisy_quadratic"]
    counts = {f: rms.count for f, rms in norm.family_rms.items()}
    assert (
        main(["train", "--resume", "--run-dir", str(run), "--timesteps", "256", "--no-progress"])
        == 0
    )
    with open(run / "final" / "vecnormalize.pkl", "rb") as f:
        resumed = pickle.load(f)
    assert sum(r.count for r in resumed.family_rms.values()) > sum(counts.values())
    assert main(["export", str(run), "-o", str(tmp_path / "c.safetensors")]) == 0


def test_cli_flag_sets_the_field_and_resume_refuses_it(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["train", "--reward-norm", "task", "--run-dir", str(run)])
    assert exit_info.value.code == 2 and not run.exists()
    assert "invalid choice: 'task' (choose from 'global', 'family')" in capsys.readouterr().err
    assert main(["train", "--resume", "--run-dir", str(run), "--reward-norm", "family"]) == 2
    assert "--reward-norm" in capsys.readouterr().err
