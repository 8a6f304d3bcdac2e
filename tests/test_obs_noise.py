"""Observation noise while training (`TrainConfig.obs_noise`, `lrctl.obs_noise`): noise on the
normalised observations of the rollouts only; the statistics, the periodic evaluation and the
exported controller see clean observations."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lrctl.errors import ConfigError
from lrctl.export import export_run
from lrctl.obs_noise import ObsNoise, normaliser, with_obs_noise
from lrctl.ppo import TrainConfig, latest_checkpoint, make_training_env, train
from tests.test_ppo import tiny_cfg  # noqa: F401  (the fixture)


class _Ramp(gym.Env):
    """Observations 0, 1, 2, ... in both coordinates (so the normalised ones are known)."""

    observation_space = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.float32), 0.0, self.t == 500, False, {}


def test_noise_has_the_asked_std_in_normalised_units_and_the_clip() -> None:
    clean = VecNormalize(DummyVecEnv([_Ramp] * 4), norm_reward=False, clip_obs=10.0)
    noisy = ObsNoise(clean, std=0.5, clip=10.0, seed=0)
    assert normaliser(noisy) is clean and normaliser(clean) is clean
    assert noisy.obs_rms is clean.obs_rms  # other attributes reach the normaliser
    noisy.reset()
    diffs = []
    for _ in range(400):
        obs, _, _, _ = noisy.step(np.zeros((4, 1), np.float32))
        clean.training = False  # the same observation again, without updating the statistics
        raw = clean.get_original_obs()
        diffs.append(obs - clean.normalize_obs(raw))
        clean.training = True
    diffs = np.concatenate(diffs)
    assert diffs.std() == pytest.approx(0.5, rel=0.05) and abs(diffs.mean()) < 0.03
    tight = ObsNoise(VecNormalize(DummyVecEnv([_Ramp]), clip_obs=10.0), std=50.0, clip=10.0)
    assert np.abs(tight.reset()).max() <= 10.0  # clipped as VecNormalize clips
    assert with_obs_noise(clean, 0.0, 10.0, 0) is clean
    with pytest.raises(TypeError, match="wraps the VecNormalize"):
        ObsNoise(DummyVecEnv([_Ramp]), std=0.1, clip=10.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        ObsNoise(clean, std=-0.1, clip=10.0)


def test_config_field_and_its_migration() -> None:
    assert TrainConfig.from_dict({"version": 11}).obs_noise == 0.0
    assert TrainConfig.from_dict({"obs_noise": 0.3}).obs_noise == 0.3
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="obs_noise must be a finite number >= 0"):
            TrainConfig.from_dict({"obs_noise": bad})


def test_training_with_noise_saves_clean_statistics_resumes_and_exports(
    tiny_cfg,  # noqa: F811
    tmp_path,
) -> None:
    cfg = TrainConfig(**{**tiny_cfg.__dict__, "obs_noise": 0.5, "total_timesteps": 128})
    venv = make_training_env(cfg, subprocess=False)
    assert isinstance(venv, ObsNoise) and venv.std == 0.5
    venv.close()
    run = tmp_path / "run"
    train(cfg, run, progress_bar=False)
    with open(latest_checkpoint(run) / "vecnormalize.pkl", "rb") as f:
        saved = pickle.load(f)
    assert type(saved) is VecNormalize and saved.obs_rms.count > 1
    final = train(cfg, run, resume=True, progress_bar=False, extend_to=256)
    with open(final / "vecnormalize.pkl", "rb") as f:
        assert pickle.load(f).obs_rms.count > saved.obs_rms.count  # carried over, then extended
    model = PPO.load(final / "model.zip", device="cpu")
    assert model.num_timesteps == 256
    assert (run / "eval.csv").read_text().count("\n") == 3  # header + evaluations at 128, 256
    export_run(run, tmp_path / "c.safetensors")
    assert (tmp_path / "c.safetensors").stat().st_size > 0


def test_cli_flag_reaches_the_config_and_is_refused_on_resume(tmp_path, monkeypatch, capsys):
    from lrctl.cli import main
    from tests.helpers import config_from_cli

    argv = ["train", "--obs-noise", "0.3", "--run-dir", str(tmp_path / "r")]
    assert config_from_cli(monkeypatch, argv).obs_noise == 0.3
    assert main(["train", "--obs-noise", "-1", "--run-dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "obs_noise must be a finite number >= 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    assert main(["train", "--resume", "--obs-noise", "0.3", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--obs-noise" in err and len(err.strip().splitlines()) == 1
