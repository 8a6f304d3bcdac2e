"""LR shocks (lrctl/shocks.py): the draw, the multipliers, the batched env and the config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrctl.actions import ActionSpec
from lrctl.batched_env import BatchedLRControlEnv
from lrctl.errors import ConfigError, UsageError
from lrctl.ppo import TrainConfig, make_training_env
from lrctl.shocks import SHOCK_DECADES, SHOCK_WINDOW, draw_shocks, shock_multipliers
from lrctl.tasks import load_suite
from tests.helpers import config_from_cli

ANCHORED = ActionSpec(mode="anchored", scale_time=0.25)


def test_no_shocks_draw_nothing_and_keep_the_random_stream() -> None:
    rng = np.random.default_rng(0)
    start, factor = draw_shocks(rng, np.array([100, 250]), 0.0)
    assert start.tolist() == [100, 250] and factor.tolist() == [1.0, 1.0]
    assert rng.random() == np.random.default_rng(0).random()


def test_shocks_start_inside_the_window_with_factors_in_range() -> None:
    horizons = np.full(2000, 500)
    start, factor = draw_shocks(np.random.default_rng(1), horizons, 1.0)
    lo, hi = SHOCK_WINDOW
    assert start.min() >= lo * 500 and start.max() < hi * 500
    assert factor.min() >= 10**-SHOCK_DECADES and factor.max() <= 10**SHOCK_DECADES
    assert (factor < 1).mean() == pytest.approx(0.5, abs=0.05)  # log-uniform around 1
    start, factor = draw_shocks(np.random.default_rng(2), horizons, 0.3)
    shocked = factor != 1.0
    assert shocked.mean() == pytest.approx(0.3, abs=0.04)
    assert (start[~shocked] == 500).all()  # an unshocked episode never reaches its start


def test_multipliers_switch_at_the_start_step() -> None:
    t = np.array([[8, 9, 10, 11], [0, 1, 2, 3]])
    got = shock_multipliers(t, np.array([10, 50]), np.array([4.0, 0.5]))
    assert got.tolist() == [[1.0, 1.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]]


def _applied_lrs(lr_shock: float, relative: bool = False) -> tuple[BatchedLRControlEnv, list]:
    """A pinned 2-member population run for a whole episode at action 0; records the LRs its
    optimizer received (each block's step_lrs) and the commanded LRs (`lr`)."""
    suite = load_suite("train_v1")
    spec = suite.family("digits_mlp").spec("momentum", steps=60, seed=3)
    env = BatchedLRControlEnv(
        2, suite, ANCHORED, spec=spec, seed=4, redraw_after=0, feature_version=3,
        lr_shock=lr_shock, relative=relative,
    )  # fmt: skip
    env.set_options([{"spec": spec}] * 2)
    env.reset()
    if lr_shock:  # fix the shocks so the test knows them
        env._shock_start[:] = [25, 60]
        env._shock_factor[:] = [3.0, 1.0]
    seen: list = []
    real = env.runs.run_block

    def spy(lengths, lrs=None, grad_norm_steps=None, **kw):
        seen.append((np.array(kw["step_lrs"]), env.get_attr("lr")))
        return real(lengths, lrs, grad_norm_steps, **kw)

    env.runs.run_block = spy
    for _ in range(4):
        env.step(np.zeros((2, 1)))
    return env, seen


def test_a_shock_multiplies_what_the_optimizer_gets_not_the_command() -> None:
    _, plain = _applied_lrs(0.0)
    _, shocked = _applied_lrs(1.0)
    for (_, cmd0), (_, cmd1) in zip(plain, shocked, strict=True):
        assert cmd0 == pytest.approx(cmd1)  # the commanded LR (and log_lr_ratio) is blind to it
    # blocks cover steps 10-19, 20-29, 30-39, 40-49: member 0 is shocked x3 from step 25 on
    applied = np.concatenate([s[0] for s in shocked], axis=1)
    base = np.concatenate([s[0] for s in plain], axis=1)
    steps = np.arange(10, 50)
    np.testing.assert_allclose(applied[0], base[0] * np.where(steps >= 25, 3.0, 1.0))
    np.testing.assert_allclose(applied[1], base[1])  # start 60: never reached


def test_the_reference_run_is_shocked_alike() -> None:
    _, shocked = _applied_lrs(1.0, relative=True)
    _, plain = _applied_lrs(0.0, relative=True)
    for lrs, _ in shocked:
        assert lrs.shape == (4, 10)  # two members, then their two reference runs
    applied = np.concatenate([s[0] for s in shocked], axis=1)
    base = np.concatenate([s[0] for s in plain], axis=1)
    ratio = np.where(np.arange(10, 50) >= 25, 3.0, 1.0)
    np.testing.assert_allclose(applied[2], base[2] * ratio)  # member 0's reference
    np.testing.assert_allclose(applied[3], base[3])


def test_bad_probabilities_and_unbatched_training_are_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match=r"lr_shock is a probability in \[0, 1\], got 1.5"):
        BatchedLRControlEnv(2, "train_v1", ANCHORED, lr_shock=1.5)
    with pytest.raises(ConfigError, match="lr_shock is a probability"):
        TrainConfig(lr_shock=-0.1).validate()
    with pytest.raises(ConfigError, match=r"batched populations only.*drop --no-batched"):
        TrainConfig(lr_shock=0.5, batched=False).validate()
    cfg = TrainConfig(suite="train", lr_shock=0.5, n_envs=4)
    with pytest.raises(ConfigError, match=r"families that do not batch.*e\.g\. train_v1"):
        make_training_env(cfg, subprocess=False)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": 4, "suite": "train_v1"}))
    assert TrainConfig.load(path).lr_shock == 0.0  # version 4: no shocks


def test_cli_lr_shock_flag_and_card_line(tmp_path, monkeypatch, capsys) -> None:
    """`lrctl train --lr-shock P` reaches the config; with --resume it is refused in one line
    (the run keeps its own config); the model card says what fraction was shocked."""
    from lrctl.card import _shock_text
    from lrctl.cli import main

    argv = ["train", "--suite", "train_v1", "--lr-shock", "0.5", "--run-dir", str(tmp_path / "r")]
    assert config_from_cli(monkeypatch, argv).lr_shock == 0.5
    code = main(["train", "--resume", "--lr-shock", "0.5", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--lr-shock" in err and len(err.strip().splitlines()) == 1
    code = main(
        ["train", "--suite", "train", "--lr-shock", "0.5", "--run-dir", str(tmp_path / "v2")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "families that do not batch" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v2").exists()  # refused before the run folder is written
    assert _shock_text({"lr_shock": 0.0}) == ""
    assert _shock_text({"lr_shock": 0.5}) == (
        ", 50% of its episodes shocked (from a random step on, the LR off by a hidden factor "
        "in [1/10, 10])"
    )
