"""Reliability: killed training resumes from its last checkpoint, hostile numbers through the
env, unwritable outputs, and bench reproducibility from scratch."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrctl.actions import ActionSpec
from lrctl.bench import BenchConfig, run_bench
from lrctl.cli import main
from lrctl.controller_file import save_controller
from lrctl.env import DIVERGENCE_RETURN, LRControlEnv
from lrctl.features import CLIP
from lrctl.inner_run import InnerRun
from lrctl.ppo import TrainConfig, latest_checkpoint
from tests.helpers import random_policy
from tests.test_bench import TINY_SUITE
from tests.test_ppo import TINY_EVAL
from tests.test_ppo import TINY_SUITE as TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]


def _obs_count(folder: Path) -> float:
    with open(folder / "vecnormalize.pkl", "rb") as f:
        return float(pickle.load(f).obs_rms.count)


def test_sigkilled_train_resumes_from_last_checkpoint(tmp_path):
    (tmp_path / "train.toml").write_text(TINY_TRAIN)
    (tmp_path / "eval.toml").write_text(TINY_EVAL)
    cfg = TrainConfig(
        suite=str(tmp_path / "train.toml"), eval_suite=str(tmp_path / "eval.toml"),
        total_timesteps=100_000, n_envs=1, n_steps=64, batch_size=32, n_epochs=1,
        checkpoint_every=64, eval_every=0,
    )  # fmt: skip
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.to_json())
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lrctl.cli", "train", "--config", str(cfg_path), "--run-dir", str(run), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            ckpt = latest_checkpoint(run)
            if (
                ckpt is not None
                and json.loads((ckpt / "state.json").read_text())["num_timesteps"] >= 256
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail("training made no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Every checkpoint the pointer or the folder names is complete and loadable.
    ckpt = latest_checkpoint(run)
    step = json.loads((ckpt / "state.json").read_text())["num_timesteps"]
    for folder in (run / "checkpoints").glob("step-*"):
        assert {p.name for p in folder.iterdir()} == {"model.zip", "vecnormalize.pkl", "state.json"}
        _obs_count(folder)
    count_at_kill = _obs_count(ckpt)

    # Resume with a shorter total so the test ends: it continues from the checkpoint's step.
    saved = json.loads((run / "config.json").read_text())
    saved["total_timesteps"] = step + 128
    (run / "config.json").write_text(json.dumps(saved))
    out = subprocess.run(
        [sys.executable, "-m", "lrctl.cli", "train", "--resume", "--run-dir", str(run), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    final = json.loads((run / "final" / "state.json").read_text())
    assert final["num_timesteps"] == step + 128
    log = pd.read_csv(run / "logs" / "progress.csv")
    assert log["time/total_timesteps"].iloc[0] == step + 64  # first rollout after the checkpoint
    assert list((run / "logs").glob("progress-before-step-*.csv"))  # the pre-kill log is kept
    assert _obs_count(run / "final") > count_at_kill  # normalisation statistics carried on
    assert not list((run / "checkpoints").glob(".tmp-*"))


nasty = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-30, 1e30]),
    st.floats(min_value=1e-3, max_value=10.0),
)


@pytest.fixture(scope="module")
def hostile_env():
    return LRControlEnv(suite="train", action_spec=ActionSpec(interval=3))


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.lists(nasty, min_size=3, max_size=3), min_size=1, max_size=5),
    st.lists(nasty, min_size=6, max_size=6),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5, max_size=5),
)
def test_env_survives_hostile_streams(hostile_env, blocks, val_losses, actions):
    """Loss / grad-norm blocks and validation losses drawn from NaN, +-inf, 0, negatives,
    1e-30, 1e30 (the training itself is replaced): observations stay finite and in the space,
    rewards finite, the LR finite and in its band, and a non-finite block ends the episode
    with the divergence return."""
    env = hostile_env
    stream = iter(blocks)
    vals = iter(val_losses)

    def advance(self, n, policy=None, grad_norm_steps=None, step_lrs=None, step_stats=False):
        block = torch.tensor(next(stream, [1.0] * n), dtype=torch.float32)
        start = self.t
        self.t += n
        self.loss_buf[start : self.t] = block
        self.gnorm_buf[start : self.t] = block.flip(0)
        g = n if grad_norm_steps is None else grad_norm_steps
        return self.loss_buf[start : self.t], self.gnorm_buf[self.t - g : self.t]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(InnerRun, "advance", advance)
        mp.setattr(
            InnerRun,
            "evaluate",
            lambda self, split="val", accuracy=True: (next(vals, 1.0), math.nan),
        )
        obs, _ = env.reset(seed=0, options={"family": "breast_cancer_logreg"})
        total = 0.0
        for a in actions:
            assert np.isfinite(obs).all() and env.observation_space.contains(obs)
            obs, reward, terminated, truncated, _info = env.step(np.array([a], dtype=np.float32))
            assert math.isfinite(reward)
            total += reward
            lr = env.run.lr
            lo, hi = env.action_spec.lr_band
            assert (
                math.isfinite(lr)
                and env.run.base_lr * lo * 0.999 <= lr <= env.run.base_lr * hi * 1.001
            )
            if terminated:
                assert total == pytest.approx(DIVERGENCE_RETURN)
                break
            if truncated:
                break
        assert np.isfinite(obs).all() and (np.abs(obs) <= CLIP).all()


def test_unwritable_outputs_are_one_line_errors(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(blocker / "run"), "--timesteps", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrctl: error: cannot write {blocker / 'run'}: Not a directory")
    assert len(err.strip().splitlines()) == 1
    assert main(["bench", "--quick", "--tasks", "wine_mlp", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrctl: error: cannot write {blocker / 'out'}/")
    assert f"(--out {blocker / 'out'})" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_bench_is_reproducible_from_scratch(tmp_path):
    """Two fresh sweeps with the same seeds give identical numbers on CPU (wall time aside)."""
    (tmp_path / "s.toml").write_text(TINY_SUITE)
    ctrl = save_controller(random_policy(0, ActionSpec()), tmp_path / "c.safetensors")
    config = BenchConfig(
        suite=str(tmp_path / "s.toml"),
        methods=("controller_adam", "momentum_cosine"),
        seeds=2,
        tune_seeds=1,
        grid=(0.1, 1.0),
    )
    tables = []
    for out in ("a", "b"):
        run_bench(config, out=tmp_path / out, controller=ctrl, workers=1, progress=False)
        tables.append(pd.read_csv(tmp_path / out / "tiny" / "runs.csv").drop(columns="wall_time_s"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert os.path.getsize(tmp_path / "a" / "tiny" / "steps.csv.gz") == os.path.getsize(
        tmp_path / "b" / "tiny" / "steps.csv.gz"
    )
