"""`lrctl train` / `lrctl export` end to end on a tiny suite: config, logs, checkpoints,
resume, evaluation on the held-out suite, and a controller that runs in a plain loop."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrctl import ppo
from lrctl.cli import main
from lrctl.controller import LRController
from lrctl.controller_file import load_controller
from lrctl.errors import ConfigError
from lrctl.export import export_run as ppo_export
from lrctl.ppo import CONFIG_VERSION, MIGRATIONS, TrainConfig, latest_checkpoint, train

TINY_SUITE = """
version = 1
name = "tiny-train"
[[family]]
name = "breast_cancer_logreg"
steps = [40, 60]
batch_sizes = [32]
[[family]]
name = "noisy_quadratic"
steps = [40, 60]
widths = [10]
"""
TINY_EVAL = """
version = 1
name = "tiny-eval"
[[family]]
name = "wine_mlp"
steps = [40, 50]
widths = [16]
depths = [1]
"""


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> TrainConfig:
    (tmp_path / "train.toml").write_text(TINY_SUITE)
    (tmp_path / "eval.toml").write_text(TINY_EVAL)
    return TrainConfig(
        suite=str(tmp_path / "train.toml"),
        eval_suite=str(tmp_path / "eval.toml"),
        total_timesteps=256,
        n_envs=1,
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        checkpoint_every=128,
        eval_every=128,
        eval_episodes=2,
    )


def test_train_writes_config_logs_checkpoints_and_eval(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    final = train(tiny_cfg, run, progress_bar=False)
    saved = TrainConfig.load(run / "config.json")
    assert saved == tiny_cfg
    assert json.loads((final / "state.json").read_text())["num_timesteps"] == 256
    assert (final / "model.zip").is_file() and (final / "vecnormalize.pkl").is_file()
    assert latest_checkpoint(run).name == "step-000000256"
    progress = pd.read_csv(run / "logs" / "progress.csv")
    assert {
        "train/approx_kl",
        "rollout/ep_rew_mean",
        "ctrl/lr_ratio_geomean",
        "eval/mean_return",
    } <= set(progress.columns)
    ev = pd.read_csv(run / "eval.csv")
    assert list(ev["step"]) == [128, 256]
    assert ev["diverge_rate"].between(0, 1).all()
    assert list(run.glob("**/.tmp-*")) == []  # no half-written checkpoint folders


def test_sde_training_explores_by_state_and_exports_its_mean_policy(tiny_cfg, tmp_path):
    """gSDE (`use_sde`): the model explores with a state-dependent noise matrix, and the
    exported controller acts as SB3's deterministic policy (the mean action)."""
    from stable_baselines3 import PPO

    cfg = TrainConfig(**{**tiny_cfg.__dict__, "use_sde": True, "log_std_init": -3.0})
    run = tmp_path / "run"
    final = train(cfg, run, progress_bar=False)
    model = PPO.load(final / "model.zip", device="cpu")
    assert model.use_sde and model.policy.log_std.shape == (64, 1)  # a matrix on the latent
    out = ppo_export(run, tmp_path / "c.safetensors")
    weights = load_controller(out)
    with open(final / "vecnormalize.pkl", "rb") as f:
        norm = pickle.load(f)
    obs = np.random.default_rng(0).normal(size=(5, weights.obs_mean.shape[0])).astype(np.float32)
    sb3, _ = model.predict(norm.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(weights.act(obs), sb3, atol=1e-5)


def _obs_count(folder: Path) -> float:
    with open(folder / "vecnormalize.pkl", "rb") as f:
        return pickle.load(f).obs_rms.count


def test_resume_continues_from_the_last_checkpoint(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    half = TrainConfig(**{**tiny_cfg.__dict__, "total_timesteps": 128})
    train(half, run, progress_bar=False)
    # Pretend the run was meant to be longer and got killed after its 128-step checkpoint.
    cfg = json.loads((run / "config.json").read_text())
    cfg["total_timesteps"] = 256
    (run / "config.json").write_text(json.dumps(cfg))
    stats_before = _obs_count(latest_checkpoint(run))
    final = train(tiny_cfg, run, resume=True, progress_bar=False)
    state = json.loads((final / "state.json").read_text())
    assert state["num_timesteps"] == 256
    stats_after = _obs_count(final)
    assert stats_after > stats_before  # normalisation statistics carried over, then extended


def test_resume_with_timesteps_extends_a_finished_run(tiny_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    short = TrainConfig(**{**tiny_cfg.__dict__, "total_timesteps": 128, "eval_every": 0})
    train(short, run, progress_bar=False)
    assert main(["train", "--resume", "--run-dir", str(run), "--timesteps", "64"]) == 2
    assert "cannot shorten it" in capsys.readouterr().err
    assert main(["train", "--resume", "--run-dir", str(run), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "--seed cannot change it" in err and len(err.strip().splitlines()) == 1
    assert TrainConfig.load(run / "config.json").total_timesteps == 128  # refusals wrote nothing
    assert (
        main(["train", "--resume", "--run-dir", str(run), "--timesteps", "256", "--no-progress"])
        == 0
    )
    assert "done: 256 timesteps" in capsys.readouterr().out
    assert TrainConfig.load(run / "config.json") == TrainConfig(
        **{**short.__dict__, "total_timesteps": 256}
    )
    assert json.loads((run / "final" / "state.json").read_text())["num_timesteps"] == 256
    assert latest_checkpoint(run).name == "step-000000256"
    assert (run / "logs" / "progress-before-step-000000128.csv").is_file()


def test_milestone_checkpoints_stay_and_export_reads_one(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(ppo, "MILESTONE_EVERY", 128)
    run = tmp_path / "run"
    cfg = TrainConfig(
        **{**tiny_cfg.__dict__, "total_timesteps": 320, "checkpoint_every": 64, "eval_every": 0}
    )
    train(cfg, run, progress_bar=False)
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    # the last two, plus the milestone at 128 that pruning would have removed
    assert kept == ["step-000000128", "step-000000256", "step-000000320"]
    out = tmp_path / "ctl128.safetensors"
    assert main(["export", str(run / "checkpoints" / "step-000000128"), "-o", str(out)]) == 0
    prov = load_controller(out).provenance
    assert prov["timesteps"] == 128 and prov["checkpoint"] == "step-000000128"
    assert (
        load_controller(out).layers[0][0].shape
        == load_controller(ppo_export(run, tmp_path / "final.safetensors")).layers[0][0].shape
    )
    assert main(["export", str(run / "checkpoints"), "-o", str(tmp_path / "no.safetensors")]) == 2


def test_train_refuses_to_overwrite_and_resume_needs_a_run(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_cfg, run, resume=True, progress_bar=False)
    train(
        TrainConfig(**{**tiny_cfg.__dict__, "total_timesteps": 64, "eval_every": 0}),
        run,
        progress_bar=False,
    )
    with pytest.raises(ValueError, match="already exists"):
        train(tiny_cfg, run, progress_bar=False)


def test_cli_train_export_and_use(tiny_cfg, tmp_path, capsys):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(TrainConfig(**{**tiny_cfg.__dict__, "eval_every": 0}).to_json())
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--run-dir", str(run), "--no-progress"]) == 0
    out_file = tmp_path / "c.safetensors"
    assert main(["export", str(run), "-o", str(out_file)]) == 0
    weights = load_controller(out_file)
    assert weights.provenance["timesteps"] == 256
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LRController(opt, total_steps=50, controller=out_file)
    for _ in range(50):
        opt.zero_grad()
        loss = model(torch.ones(8, 4)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step(loss)
    lo, hi = weights.action_spec.lr_band
    assert 0.1 * lo <= opt.param_groups[0]["lr"] <= 0.1 * hi


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("total_timesteps", 0, "total_timesteps must be positive"),
        ("gamma", 1.5, "gamma"),
        ("max_multiplier", 0.5, "max_multiplier"),
        ("sde_sample_freq", 0, "sde_sample_freq must be -1"),
        ("sde_sample_freq", -2, "sde_sample_freq must be -1"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({field: value})


def test_config_unknown_field_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown config field 'n_env'.*allowed fields: .*n_envs"):
        TrainConfig.from_dict({"n_env": 2})


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert (
        main(["train", "--suite", str(tmp_path / "missing.toml"), "--run-dir", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("lrctl: error:")
        and "suite file not found" in err
        and len(err.strip().splitlines()) == 1
    )
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "not an lrctl training run" in capsys.readouterr().err
    assert main(["train", "--timesteps", "-5", "--run-dir", str(tmp_path / "r2")]) == 2
    assert "total_timesteps must be positive" in capsys.readouterr().err
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err


# Config files migrate by their version number, one function per version bump.

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "agents" / "default" / "config.json"
V1_CONFIG = Path(__file__).resolve().parent / "data" / "config_v3_recursive.json"
"""The config of controller v3 (shipped until the anchored controllers), a version-1 file."""


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    return path


def test_shipped_config_loads_as_written() -> None:
    raw = json.loads(SHIPPED_CONFIG.read_text())
    loaded = json.loads(TrainConfig.load(SHIPPED_CONFIG).to_json())
    raw.pop("version")
    assert raw == {k: loaded[k] for k in raw}  # every field it states, as stated


def test_version_1_config_loads_with_its_own_values() -> None:
    raw = json.loads(V1_CONFIG.read_text())
    loaded = json.loads(TrainConfig.load(V1_CONFIG).to_json())
    assert raw.pop("version") == 1 and loaded.pop("version") == CONFIG_VERSION
    added = {k: loaded.pop(k) for k in set(loaded) - set(raw)}  # fields of later versions
    assert loaded == raw
    assert added == {
        "action_mode": "recursive",
        "residual": 1.0,
        "scale_time": 0.0,
        "scale_band": [0.1, 10.0],
        "scale_min_decisions": 1,
        "dither": 0.0,
        "hidden_features": [],
        "reward_norm": "global",
        "lr_schedule": "constant",
        "obs_noise": 0.0,
        "relative_reward": False,
        "feature_version": 2,
        "lr_shock": 0.0,
        "use_sde": False,
        "sde_sample_freq": -1,
    }


def test_one_migration_per_version_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(MIGRATIONS) == CONFIG_VERSION
    seen: list[int] = []

    def recorded(n: int, migrate):
        def step(data: dict) -> dict:
            seen.append(n)
            return migrate(data)

        return step

    monkeypatch.setattr(ppo, "MIGRATIONS", tuple(recorded(n, f) for n, f in enumerate(MIGRATIONS)))
    TrainConfig.from_dict({"version": 1})
    assert seen == list(range(1, CONFIG_VERSION))
    seen.clear()
    TrainConfig.from_dict({}, default_version=0)
    assert seen == list(range(CONFIG_VERSION))
    seen.clear()
    TrainConfig.from_dict({"version": CONFIG_VERSION})
    assert seen == []


@pytest.mark.parametrize(
    ("data", "grad_norm_steps", "batched"),
    [
        ({"interval": 5}, 5, False),  # no version: 0, the oldest format
        ({"version": 1, "interval": 5}, 5, False),  # before G and populations: G = K, processes
        ({"version": 1, "interval": 5, "grad_norm_steps": 3}, 3, False),  # before populations
        ({"version": 1, "interval": 5, "grad_norm_steps": 3, "batched": True}, 3, True),
        ({"version": 2, "interval": 5}, 2, True),  # G and populations: today's defaults
    ],
)
def test_config_files_migrate_by_version(
    tmp_path: Path, data: dict, grad_norm_steps: int, batched: bool
) -> None:
    cfg = TrainConfig.load(_write(tmp_path, data))
    assert (cfg.interval, cfg.grad_norm_steps, cfg.batched) == (5, grad_norm_steps, batched)
    assert cfg.version == CONFIG_VERSION and cfg.total_timesteps == TrainConfig.total_timesteps


def test_fields_in_code_are_todays_format() -> None:
    """A dict without a version is read like keyword arguments: today's defaults."""
    cfg = TrainConfig.from_dict({"interval": 5})
    assert (cfg.grad_norm_steps, cfg.batched) == (2, True)
    assert cfg == TrainConfig(interval=5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": CONFIG_VERSION + 1}, f"config version {CONFIG_VERSION + 1} is newer than"),
        ({"version": "2"}, "config version must be a whole number >= 0, got '2'"),
        ({"version": -1}, "config version must be a whole number >= 0, got -1"),
        ({"total_timesteps": "many"}, "config field total_timesteps must be int-valued"),
        ({"batched": 1}, "config field batched must be bool-valued"),
        ({"lr_band": [0.001, "x"]}, "config field lr_band must be tuple-valued"),
    ],
)
def test_bad_config_files_are_config_errors(tmp_path: Path, data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.load(_write(tmp_path, data))


def test_cli_refuses_a_config_from_a_newer_lrctl(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, {"version": CONFIG_VERSION + 1})
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrctl: error: {path}: config version {CONFIG_VERSION + 1} is newer")
    assert "upgrade lrctl" in err and len(err.splitlines()) == 1


def test_linear_lr_schedule_decays_ppo_learning_rate_to_zero(tiny_cfg, tmp_path) -> None:
    """`lr_schedule = "linear"`: PPO's Adam LR falls from `learning_rate` toward 0 over the
    run (SB3 logs the LR of each update); configs before version 11 stay constant."""
    assert TrainConfig.from_dict({"version": 10}).lr_schedule == "constant"
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, linear"):
        TrainConfig.from_dict({"lr_schedule": "cosine"})
    cfg = TrainConfig(**{**tiny_cfg.__dict__, "lr_schedule": "linear", "eval_every": 0})
    run = tmp_path / "run"
    train(cfg, run, progress_bar=False)
    lrs = pd.read_csv(run / "logs" / "progress.csv")["train/learning_rate"].dropna().tolist()
    # 256 decisions in rollouts of 64: updates after 64, 128, 192 and 256 decisions (SB3
    # writes a row per rollout, before that rollout's update is logged: the last goes unlogged)
    assert lrs == pytest.approx([3e-4 * (1 - k / 4) for k in range(1, 4)], abs=1e-9)
