"""Export: SB3 PPO + VecNormalize -> controller file, parity with model.predict, safe loading."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lrctl.actions import ActionSpec
from lrctl.controller_file import ControllerFileError, load_controller, save_controller
from lrctl.export import export_run
from lrctl.features import CLIP, OBS_DIM
from lrctl.ppo import TrainConfig, _atomic_dir_save
from tests.helpers import random_policy


class RandomObsEnv(gym.Env):
    """Same spaces as LRControl-v1; observations drawn at random, reward = -action^2."""

    observation_space = gym.spaces.Box(-CLIP, CLIP, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        scale = np.linspace(0.1, 3.0, OBS_DIM)
        return (
            (self.np_random.standard_normal(OBS_DIM) * scale + 1.0)
            .clip(-CLIP, CLIP)
            .astype(np.float32)
        )

    def step(self, action):
        self.t += 1
        return self._obs(), -float(action[0] ** 2), False, self.t >= 20, {}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(n_steps=64, batch_size=32, n_epochs=2, total_timesteps=128, n_envs=1)
    venv = VecNormalize(DummyVecEnv([RandomObsEnv]), clip_obs=cfg.clip_obs)
    model = PPO(
        "MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
    )  # fmt: skip
    model.learn(128)
    (run / "config.json").write_text(cfg.to_json())
    _atomic_dir_save(model, venv, run / "final")
    return run, model, venv


def test_export_parity_with_sb3_predict(trained_run, tmp_path):
    run, model, venv = trained_run
    path = export_run(run, tmp_path / "c.safetensors")
    weights = load_controller(path)
    rng = np.random.default_rng(0)
    obs = (rng.standard_normal((256, OBS_DIM)) * 3).clip(-CLIP, CLIP).astype(np.float32)
    sb3_actions, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    ours = weights.act(obs)
    np.testing.assert_allclose(ours, sb3_actions, atol=1e-5)
    assert weights.provenance["timesteps"] == model.num_timesteps
    assert weights.provenance["config"]["n_steps"] == 64


def test_round_trip_preserves_weights(tmp_path):
    w = random_policy(0)
    loaded = load_controller(save_controller(w, tmp_path / "w.safetensors"))
    obs = torch.randn(10, OBS_DIM)
    np.testing.assert_array_equal(w.act(obs), loaded.act(obs))
    assert loaded.action_spec == w.action_spec


def _rewrite_meta(src, dst, **changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(changes)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture
def good_file(tmp_path):
    return save_controller(random_policy(0), tmp_path / "good.safetensors")


def test_truncated_file(good_file, tmp_path):
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(good_file.read_bytes()[:100])
    with pytest.raises(ControllerFileError, match=r"trunc\.safetensors: not a readable"):
        load_controller(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "rand.safetensors"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ControllerFileError, match=r"rand\.safetensors"):
        load_controller(bad)


def test_wrong_format_version(good_file, tmp_path):
    bad = _rewrite_meta(good_file, tmp_path / "v9.safetensors", format_version="9")
    with pytest.raises(ControllerFileError, match="format version 9 is not supported"):
        load_controller(bad)


def test_wrong_feature_version(good_file, tmp_path):
    bad = _rewrite_meta(good_file, tmp_path / "f.safetensors", feature_version="0")
    with pytest.raises(ControllerFileError, match="feature version 0"):
        load_controller(bad)


def test_wrong_observation_size(tmp_path):
    w = random_policy(0)
    w.obs_mean, w.obs_var = torch.zeros(OBS_DIM + 2), torch.ones(OBS_DIM + 2)
    w.layers[0] = (torch.zeros(8, OBS_DIM + 2), torch.zeros(8))
    path = save_controller(w, tmp_path / "size.safetensors")
    with pytest.raises(ControllerFileError, match="observation size"):
        load_controller(path)


def test_missing_file(tmp_path):
    with pytest.raises(ControllerFileError, match="not found"):
        load_controller(tmp_path / "nope.safetensors")


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned-by-pickle",))


def test_pickle_payload_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ControllerFileError, match=r"evil\.safetensors"):
        load_controller(bad)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_export_needs_a_run(tmp_path):
    with pytest.raises(ValueError, match="not an lrctl training run"):
        export_run(tmp_path, tmp_path / "x.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="no trained model found"):
        export_run(tmp_path, tmp_path / "x.safetensors")


def test_feature_v1_files_read_every_steps_gradient_norm() -> None:
    """The shipped file predates `grad_norm_steps` (feature version 1): it loads with G = K,
    so the runtime reads every step's gradient norm, as the policy was trained."""
    from lrctl.resources import DEFAULT_CONTROLLER, data_path

    weights = load_controller(data_path(DEFAULT_CONTROLLER))
    spec = weights.action_spec
    if weights.feature_version == 1:
        assert spec.grad_norm_steps == spec.interval
    assert ActionSpec.from_dict({"interval": 7, "max_multiplier": 2, "lr_band": [0.1, 10]}) == (
        ActionSpec(7, 2.0, (0.1, 10.0), grad_norm_steps=7)
    )
    assert ActionSpec(interval=3, grad_norm_steps=5).grad_norm_steps == 3  # capped at K


def test_export_with_a_scale_floor(trained_run, tmp_path, capsys):
    """`export_run(..., scale_min_decisions=N)` (`lrctl export --scale-min-decisions N`): the
    file acts with the floor, the provenance and the card's action line say it was set at
    export; a controller without the scale term is refused in one line, and nothing is written."""
    import shutil

    from lrctl.card import _action_line_of_file
    from lrctl.cli import main

    run, _, _ = trained_run
    anchored = tmp_path / "anchored"
    shutil.copytree(run, anchored)
    cfg = TrainConfig(action_mode="anchored", scale_time=0.25)
    (anchored / "config.json").write_text(cfg.to_json())
    plain = export_run(anchored, tmp_path / "plain.safetensors")
    floored = export_run(anchored, tmp_path / "floored.safetensors", scale_min_decisions=10)
    a, b = load_controller(plain), load_controller(floored)
    assert a.action_spec.scale_min_decisions == 1 and b.action_spec.scale_min_decisions == 10
    assert b.action_spec.scale_step(40) == pytest.approx(np.log(100) / 10)
    pairs = zip(a.layers, b.layers, strict=True)
    assert all(torch.equal(x, y) for la, lb in pairs for x, y in zip(la, lb, strict=True))
    assert "after_training" not in a.provenance
    assert b.provenance["after_training"] == (
        "scale_min_decisions set to 10 at export; the policy trained with 1"
    )
    cfg_dict = json.loads(cfg.to_json())
    assert _action_line_of_file(cfg_dict, plain).endswith("x the cosine value,")
    assert _action_line_of_file(cfg_dict, floored).endswith(
        "in 25% of a run and in no fewer than 10 decisions, re-anchored every step and kept "
        "within [0.001, 30.0] x the cosine value (the floor of 10 decisions set at export; it "
        "trained with 1),"
    )

    out = tmp_path / "recursive.safetensors"
    code = main(["export", str(run), "-o", str(out), "--scale-min-decisions", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "no slow scale term" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code = main(["export", str(anchored), "-o", str(out), "--scale-min-decisions", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "scale_min_decisions must be a whole number >= 1" in err
    assert not out.exists()


def test_export_rewrites_a_controller_file_with_a_blowup_guard(trained_run, tmp_path, capsys):
    """`lrctl export FILE -o FILE2 --blowup-guard G`: the weights unchanged, the guard in the
    action and the provenance (after an earlier floor note), the card's action line says so;
    a recursive controller, a bad G, --card and a file with nothing to change are refused in
    one line each, and nothing is written."""
    import shutil

    from lrctl.card import _action_line_of_file
    from lrctl.cli import main

    run, _, _ = trained_run
    anchored = tmp_path / "anchored"
    shutil.copytree(run, anchored)
    cfg = TrainConfig(action_mode="anchored", scale_time=0.25)
    (anchored / "config.json").write_text(cfg.to_json())
    floored = export_run(anchored, tmp_path / "floored.safetensors", scale_min_decisions=10)
    guarded = tmp_path / "guarded.safetensors"
    assert main(["export", str(floored), "-o", str(guarded), "--blowup-guard", "2"]) == 0
    a, b = load_controller(floored), load_controller(guarded)
    assert a.action_spec.blowup_factor == 0.0 and b.action_spec.blowup_factor == 2.0
    assert b.action_spec == replace(a.action_spec, blowup_factor=2.0)
    pairs = zip(a.layers, b.layers, strict=True)
    assert all(torch.equal(x, y) for la, lb in pairs for x, y in zip(la, lb, strict=True))
    assert b.provenance["after_training"] == (
        "scale_min_decisions set to 10 at export; the policy trained with 1; "
        "blowup_factor set to 2 at export"
    )
    assert b.provenance["config"] == a.provenance["config"]
    line = _action_line_of_file(json.loads(cfg.to_json()), guarded)
    assert line.endswith(
        "(the floor of 10 decisions set at export; it trained with 1); if the loss turns "
        "non-finite, or climbs above the run's start and to more than 2x its best, while the LR "
        "is above the cosine value, the run is handed back to the cosine schedule at its "
        "average factor so far, capped at 1 (a runtime guard set at export),"
    )
    capsys.readouterr()

    out = tmp_path / "out.safetensors"
    recursive = export_run(run, tmp_path / "recursive.safetensors")
    for argv, message in [
        ([str(recursive), "--blowup-guard", "2"], "recursive actions"),
        ([str(floored), "--blowup-guard", "1"], "blowup_factor must be 0 (no guard) or a"),
        ([str(floored), "--blowup-guard", "2", "--card"], "drop --card"),
        ([str(floored)], "already a controller file"),
    ]:
        code = main(["export", *argv, "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
