"""Hidden features (`TrainConfig.hidden_features`, `lrctl.hidden_features`): the policy never
sees them in training, and the exported controller ignores them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from lrctl.cli import main
from lrctl.controller_file import load_controller
from lrctl.errors import ConfigError, UsageError
from lrctl.export import export_run
from lrctl.features import feature_names
from lrctl.hidden_features import HideFeatures, feature_indices, hide
from lrctl.ppo import TrainConfig, train
from tests.test_ppo import tiny_cfg  # noqa: F401  (the fixture)

PROGRESS = feature_names(3).index("progress")


def test_feature_indices_names_and_errors() -> None:
    assert feature_indices(["progress"], 3) == [PROGRESS]
    assert feature_indices(["grad_cosine", "loss_vs_start"], 3) == [0, 14]
    with pytest.raises(UsageError, match="'grad_cosine' is not a feature of version 2"):
        feature_indices(["grad_cosine"], 2)
    with pytest.raises(UsageError, match="once"):
        feature_indices(["progress", "progress"], 3)


def test_hide_zeroes_only_the_named_entries_of_a_copy() -> None:
    obs = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    out = hide(obs, [1])
    assert out.tolist() == [[1.0, 0.0, 3.0], [4.0, 0.0, 6.0]]
    assert obs[0, 1] == 2.0  # the input is untouched


def test_vec_wrapper_masks_reset_step_and_terminal_observations() -> None:
    import gymnasium as gym

    class Ones(gym.Env):
        observation_space = gym.spaces.Box(-5, 5, (3,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, seed=None, options=None):
            return np.ones(3, np.float32), {}

        def step(self, action):
            return np.full(3, 2.0, np.float32), 0.0, True, False, {}

    venv = HideFeatures(DummyVecEnv([Ones, Ones]), [2])
    assert venv.reset().tolist() == [[1, 1, 0], [1, 1, 0]]
    obs, _, dones, infos = venv.step(np.zeros((2, 1), np.float32))
    assert dones.all() and obs.tolist() == [[1, 1, 0], [1, 1, 0]]  # auto-reset's observation
    assert infos[0]["terminal_observation"].tolist() == [2, 2, 0]


def test_config_validates_migrates_and_round_trips(tmp_path) -> None:
    cfg = TrainConfig.from_dict({"feature_version": 3, "hidden_features": ["progress"]})
    assert cfg.hidden_features == ("progress",)
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    old = {"version": 8, "feature_version": 3}
    assert TrainConfig.from_dict(old).hidden_features == ()
    with pytest.raises(ConfigError, match=r"hidden_features.*'speed' is not a feature"):
        TrainConfig.from_dict({"hidden_features": ["speed"]})
    with pytest.raises(ConfigError, match="hidden_features must be"):
        TrainConfig.from_dict({"hidden_features": [3]})


def test_trained_with_progress_hidden_the_file_ignores_progress(tiny_cfg, tmp_path) -> None:  # noqa: F811
    """The run's observation statistics read progress as exactly 0, the evaluation ran, and
    the exported policy gives the same action whatever progress the runtime reports."""
    cfg = TrainConfig(
        **{**tiny_cfg.__dict__, "feature_version": 3, "hidden_features": ("progress",)}
    )
    run = tmp_path / "run"
    final = train(cfg, run, progress_bar=False)
    with open(final / "vecnormalize.pkl", "rb") as f:
        rms = pickle.load(f).obs_rms
    assert rms.mean[PROGRESS] == 0.0 and rms.var[PROGRESS] < 1e-3
    assert rms.mean[feature_names(3).index("loss_vs_start")] != 0.0  # others are seen
    assert (run / "eval.csv").is_file()
    weights = load_controller(export_run(run, tmp_path / "c.safetensors"))
    assert float(weights.layers[0][0][:, PROGRESS].abs().max()) == 0.0
    obs = np.random.default_rng(0).normal(size=(6, 15)).astype(np.float32)
    other = obs.copy()
    other[:, PROGRESS] = np.linspace(-3, 3, 6)
    np.testing.assert_array_equal(weights.act(obs), weights.act(other))
    assert weights.provenance["config"]["hidden_features"] == ["progress"]


def test_cli_hide_features_flag(tmp_path, monkeypatch, capsys) -> None:
    """A bad name is one line naming the allowed ones, rc 2, and no run folder."""
    run_dir = tmp_path / "run"
    argv = ["train", "--feature-version", "3", "--hide-features", "progres"]
    assert main([*argv, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "'progres' is not a feature" in err and "progress" in err
    assert len(err.strip().splitlines()) == 1 and not run_dir.exists()
