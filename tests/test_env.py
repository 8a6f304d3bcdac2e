"""LRControl-v1: API conformance, determinism, reward bookkeeping, divergence, actions."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import lrctl
from lrctl import features
from lrctl.actions import ActionSpec
from lrctl.env import DIVERGENCE_RETURN, REWARD_BOUND, LRControlEnv
from lrctl.policies import EpisodeResult, make_policy, rollout
from lrctl.tasks import FAMILIES, RunSpec, Split, Suite, Task, TaskFamily, load_suite

B = REWARD_BOUND
TRAIN_FAMILIES = load_suite("train_v1").family_names  # the families these tests pin


# Reference LRs pinned here (the values these tests were written against), so that a
# recalibration of the families' reference LRs cannot move the tests' episodes.
PINNED_REFERENCE_LRS = {
    "digits_mlp": "sgd = 0.3, momentum = 0.03, nesterov = 0.03, adagrad = 0.03, rmsprop = 1e-3, adam = 3e-3, adamw = 3e-3",
    "breast_cancer_logreg": "sgd = 0.3, momentum = 0.03, nesterov = 0.03, adagrad = 0.1, rmsprop = 3e-3, adam = 1e-2, adamw = 1e-2",
    "diabetes_mlp": "sgd = 0.03, momentum = 3e-3, nesterov = 3e-3, adagrad = 0.03, rmsprop = 1e-3, adam = 3e-3, adamw = 3e-3",
    "char_mlp": "sgd = 0.3, momentum = 0.03, nesterov = 0.03, adagrad = 0.03, rmsprop = 1e-3, adam = 3e-3, adamw = 3e-3",
    "noisy_quadratic": "sgd = 1.0, momentum = 0.1, nesterov = 0.1, adagrad = 0.3, rmsprop = 0.01, adam = 0.03, adamw = 0.03",
}
BATCH_SIZES = {
    "digits_mlp": "[32, 64, 128]",
    "breast_cancer_logreg": "[16, 32, 64]",
    "diabetes_mlp": "[16, 32, 64]",
    "char_mlp": "[32, 64]",
    "noisy_quadratic": "[8, 32, 128]",
}


def write_suite(path: Path, lr_range: tuple[float, float] | None = None) -> Path:
    """The train suite's families with short horizons, pinned reference LRs and batch sizes
    (and optionally another LR range)."""
    lines = ["version = 1", 'name = "tiny"']
    for name in TRAIN_FAMILIES:
        lines += ["[[family]]", f'name = "{name}"', "steps = [60, 120]"]
        if name in PINNED_REFERENCE_LRS:
            lines.append(f"reference_lr = {{ {PINNED_REFERENCE_LRS[name]} }}")
            lines.append(f"batch_sizes = {BATCH_SIZES[name]}")
        if lr_range is not None:
            lines.append(f"lr_range = [{lr_range[0]}, {lr_range[1]}]")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "tiny.toml")


@pytest.fixture(scope="module")
def high_lr_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base LRs 3-10x the reference: too high to keep, so decaying them should pay."""
    return write_suite(tmp_path_factory.mktemp("suite") / "high_lr.toml", (3.0, 10.0))


@pytest.fixture
def env(tiny_suite: Path) -> LRControlEnv:
    return LRControlEnv(tiny_suite)


def digits_spec(base_lr: float = 0.03, **kw: object) -> RunSpec:
    """A digits MLP run (width 32, depth 1, SGD with momentum) at an explicit base LR."""
    defaults = {"optimizer": "momentum", "steps": 60, "batch_size": 64, "width": 32, "depth": 1}
    return replace(FAMILIES["digits_mlp"]().spec(**{**defaults, **kw}), base_lr=base_lr)


def quadratic_spec(base_lr: float, steps: int) -> RunSpec:
    """A 100-d noisy quadratic under plain SGD at an explicit base LR."""
    spec = FAMILIES["noisy_quadratic"]().spec("sgd", steps=steps, batch_size=32, width=100)
    return replace(spec, base_lr=base_lr)


def assert_valid_obs(env: gym.Env, obs: np.ndarray) -> None:
    assert isinstance(obs, np.ndarray)
    assert obs.dtype == np.float32 and obs.shape == (features.OBS_DIM,)
    assert np.isfinite(obs).all()
    assert env.observation_space.contains(obs)


def clipped_log(v: float, log_v0: float) -> float:
    return min(max(math.log(v), log_v0 - B), log_v0 + B)


# --- API ---------------------------------------------------------------------------------


def test_gymnasium_env_checker(env: LRControlEnv) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(env.unwrapped, skip_render_check=True)


def test_sb3_env_checker(env: LRControlEnv) -> None:
    from stable_baselines3.common.env_checker import check_env

    check_env(env, warn=True)


def test_make_after_import(tiny_suite: Path) -> None:
    assert lrctl.ENV_ID in gym.registry
    env = gym.make(lrctl.ENV_ID, suite=tiny_suite, interval=5, max_multiplier=3.0)
    assert isinstance(env.unwrapped, LRControlEnv)
    assert env.unwrapped.action_spec == ActionSpec(interval=5, max_multiplier=3.0)
    obs, info = env.reset(seed=0)
    assert_valid_obs(env, obs)
    assert info["step"] == 5
    obs, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert_valid_obs(env, obs)
    assert isinstance(reward, float) and not terminated and not truncated
    assert info["step"] == 10


def test_make_defaults_to_train_suite() -> None:
    env = gym.make(lrctl.ENV_ID)
    assert env.unwrapped.suite.family_names == load_suite("train").family_names
    assert env.unwrapped.action_spec == ActionSpec()
    assert env.observation_space == gym.spaces.Box(
        -features.CLIP, features.CLIP, (features.OBS_DIM,), np.float32
    )
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


def test_info_keys_and_first_observation(env: LRControlEnv) -> None:
    spec = digits_spec(steps=60)
    obs, info = env.reset(seed=3, options={"spec": spec})
    assert set(info) == {
        "task", "family", "optimizer", "base_lr", "lr", "train_loss", "val_loss", "step",
        "horizon", "diverged",
    }  # fmt: skip
    assert (info["task"], info["family"], info["optimizer"]) == (
        spec.describe(),
        "digits_mlp",
        "momentum",
    )
    assert info["base_lr"] == info["lr"] == spec.base_lr
    assert (info["step"], info["horizon"], info["diverged"]) == (10, 60, False)
    # Untrained 10-class digits MLP: both losses near log(10).
    assert 1.5 < info["val_loss"] < 2.5 and 1.5 < info["train_loss"] < 2.5
    names = features.FEATURE_NAMES
    assert obs[names.index("progress")] == pytest.approx(10 / 60)
    assert obs[names.index("log_lr_ratio")] == 0.0
    # First block: everything relative to the run's own start is zero.
    for name in ("loss_vs_start", "loss_vs_best", "loss_vs_slow", "loss_change", "gnorm_vs_start"):
        assert obs[names.index(name)] == 0.0


def test_first_observation_is_what_the_controller_sees(env: LRControlEnv) -> None:
    """reset = K steps at the base LR, then FeatureTracker(1).update on that block (also when
    the env's tracker has seen an episode before)."""
    from lrctl.inner_run import InnerRun

    spec = digits_spec()
    rollout(env, make_policy("always_up"), options={"spec": digits_spec(base_lr=0.015)})
    obs, _ = env.reset(options={"spec": spec})
    task = FAMILIES["digits_mlp"]().build(spec)
    run = InnerRun(task, spec.optimizer, spec.base_lr, capacity=spec.steps, seed=spec.seed)
    losses, gnorms = run.advance(10, grad_norm_steps=env.action_spec.grad_norm_steps)
    assert gnorms.shape == (2,)  # G = 2 by default: the block's last two steps
    expected = features.FeatureTracker(1).update(
        *features.read_block(losses, gnorms), 0.0, 10 / spec.steps
    )
    np.testing.assert_array_equal(obs, expected[0])


def test_observations_match_the_runtime_controller(
    env: LRControlEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One observation function: over a whole run at a constant LR, the env's observations are the
    features `LRController` computes in a plain loop on the same run."""
    from lrctl.controller import LRController
    from lrctl.inner_run import InnerRun
    from tests.helpers import constant_policy

    spec = digits_spec(steps=60)
    result = rollout(env, make_policy("constant"), options={"spec": spec})

    task = FAMILIES["digits_mlp"]().build(spec)
    run = InnerRun(task, spec.optimizer, spec.base_lr, capacity=spec.steps, seed=spec.seed)
    ctrl = LRController(run.optimizer, spec.steps, constant_policy(0.0, env.action_spec))
    seen: list[np.ndarray] = []
    update = ctrl._tracker.update_one  # the runtime's path for one run on the CPU

    def recording_update(*args: list[float] | float) -> np.ndarray:
        feats = update(*args)
        seen.append(feats[0].copy())
        return feats

    monkeypatch.setattr(ctrl._tracker, "update_one", recording_update)
    run.advance(spec.steps, policy=ctrl)
    assert run.lrs == [spec.base_lr] * spec.steps
    assert len(seen) == len(result.observations) == 6
    np.testing.assert_allclose(np.stack(seen), np.stack(result.observations), rtol=0, atol=1e-6)


def test_reset_options(env: LRControlEnv) -> None:
    _, info = env.reset(seed=1, options={"family": "noisy_quadratic"})
    assert info["family"] == "noisy_quadratic"
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"steps": 10})
    with pytest.raises(ValueError, match="disagree"):
        env.reset(options={"spec": digits_spec(), "family": "char_mlp"})
    with pytest.raises(KeyError, match="not in suite"):
        env.reset(options={"family": "wine_mlp"})
    with pytest.raises(ValueError, match="must exceed the decision interval"):
        env.reset(options={"spec": digits_spec(steps=10)})
    # A spec of a family outside the suite is built from the family registry.
    _, info = env.reset(options={"spec": FAMILIES["wine_mlp"]().spec(steps=30)})
    assert info["family"] == "wine_mlp"


def test_step_before_reset_and_after_end(env: LRControlEnv) -> None:
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))
    result = rollout(env, make_policy("constant"), options={"spec": digits_spec(steps=30)})
    assert result.length == 2
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, np.float32))


def test_docstring_table_matches_features() -> None:
    """The env's observation table lists every version's features (v3: v2's, then two more;
    v4 and v5: one more each) in order, rows as in features.py."""
    row = re.compile(r"^\s*\| (\d+)\s+\| (\w+)\s+\|(.*)\|$", re.MULTILINE)
    env_rows = row.findall(LRControlEnv.__doc__ or "")
    feature_rows = row.findall(features.__doc__ or "")
    assert [name for _, name, _ in env_rows] == list(features.feature_names(5))
    assert [int(i) for i, _, _ in env_rows] == list(range(features.obs_dim(5)))
    assert env_rows == feature_rows


# --- episodes ----------------------------------------------------------------------------


def test_same_seed_same_episode(tiny_suite: Path) -> None:
    a, b = LRControlEnv(tiny_suite), LRControlEnv(tiny_suite)
    policy = make_policy("cosine", a.action_spec)
    for seed in (0, 7):
        ra, rb = rollout(a, policy, seed), rollout(b, policy, seed)
        assert ra.infos[0]["task"] == rb.infos[0]["task"]
        assert ra.rewards == rb.rewards
        assert ra.lrs == rb.lrs
        for oa, ob in zip(ra.observations, rb.observations, strict=True):
            np.testing.assert_array_equal(oa, ob)
    # Different seeds draw different runs.
    assert rollout(a, policy, 0).infos[0]["task"] != rollout(a, policy, 1).infos[0]["task"]


def test_horizon_truncates(env: LRControlEnv) -> None:
    result = rollout(env, make_policy("constant"), options={"spec": digits_spec(steps=65)})
    # reset runs 10 steps; then 5 blocks of 10 and one of 5.
    assert [i["step"] for i in result.infos] == [10, 20, 30, 40, 50, 60, 65]
    assert result.observations[-1][features.FEATURE_NAMES.index("progress")] == 1.0
    assert not result.diverged
    env.reset(options={"spec": digits_spec(steps=20)})
    *_, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
    assert truncated and not terminated


@pytest.mark.parametrize(
    ("policy", "base_lr"), [("constant", 0.03), ("cosine", 0.09), ("always_down", 0.03)]
)
def test_return_telescopes(env: LRControlEnv, policy: str, base_lr: float) -> None:
    result = rollout(
        env,
        make_policy(policy, env.action_spec),
        options={"spec": digits_spec(base_lr=base_lr)},
    )
    assert not result.diverged
    v0, vt = result.infos[0]["val_loss"], result.infos[-1]["val_loss"]
    log_v0 = math.log(v0)
    assert result.episode_return == pytest.approx(log_v0 - clipped_log(vt, log_v0), abs=1e-9)
    assert result.episode_return == pytest.approx(math.log(v0 / vt), abs=1e-9)  # no clip here
    # Every reward is the step's clipped log-improvement.
    vals = [math.log(i["val_loss"]) for i in result.infos]
    assert result.rewards == pytest.approx(np.diff(vals) * -1, abs=1e-12)


def test_return_is_clipped_when_the_loss_explodes(env: LRControlEnv) -> None:
    """Always-up on a digits MLP with momentum: the val loss grows > e^B-fold but stays finite,
    so the return is clipped at exactly -B (and the episode is not a divergence)."""
    spec = digits_spec(base_lr=0.15, steps=64, batch_size=128)
    result = rollout(env, make_policy("always_up"), options={"spec": spec})
    assert not result.diverged
    assert result.infos[-1]["val_loss"] > result.infos[0]["val_loss"] * math.exp(B)
    assert result.episode_return == pytest.approx(-B, abs=1e-9)


def test_reward_ranks_scripted_policies(high_lr_suite: Path) -> None:
    """16 seeded episodes, base LRs 3-10x the reference: cosine decay beats a constant LR,
    always-up is worst and each of its divergences returns exactly -(B + 1)."""
    env = LRControlEnv(high_lr_suite)
    results: dict[str, list[EpisodeResult]] = {
        name: [rollout(env, make_policy(name, env.action_spec), seed) for seed in range(16)]
        for name in ("constant", "cosine", "always_up", "always_down")
    }
    mean = {k: float(np.mean([r.episode_return for r in v])) for k, v in results.items()}
    assert mean["cosine"] > mean["constant"] + 0.02
    assert mean["always_up"] < min(mean["constant"], mean["cosine"], mean["always_down"]) - 2.0
    for name in ("constant", "cosine", "always_down"):
        assert not any(r.diverged for r in results[name]), name
        assert all(-B <= r.episode_return <= B for r in results[name])
    diverged = [r for r in results["always_up"] if r.diverged]
    assert len(diverged) >= 3
    assert all(r.episode_return == pytest.approx(DIVERGENCE_RETURN, abs=1e-9) for r in diverged)
    assert all(r.episode_return >= -B for r in results["always_up"] if not r.diverged)
    for r in (r for v in results.values() for r in v):
        for obs in r.observations:
            assert_valid_obs(env, obs)


# --- divergence --------------------------------------------------------------------------


def test_always_up_diverges_with_penalty(env: LRControlEnv) -> None:
    spec = quadratic_spec(base_lr=1.0, steps=100)
    result = rollout(env, make_policy("always_up"), options={"spec": spec})
    assert result.diverged and result.infos[-1]["diverged"]
    assert result.episode_return == pytest.approx(DIVERGENCE_RETURN, abs=1e-9)
    assert result.infos[-1]["step"] < 100
    for obs in result.observations:
        assert_valid_obs(env, obs)
    assert result.observations[-1][features.FEATURE_NAMES.index("nonfinite_frac")] > 0


def test_single_nan_parameter_is_divergence(env: LRControlEnv) -> None:
    env.reset(options={"spec": digits_spec()})
    _, r1, *_ = env.step(np.zeros(1, np.float32))
    with torch.no_grad():
        env.run.params[0].view(-1)[7] = math.nan
    obs, r2, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert terminated and not truncated and info["diverged"]
    assert r1 + r2 == pytest.approx(DIVERGENCE_RETURN, abs=1e-9)
    assert_valid_obs(env, obs)


class _UnusedParamNet(nn.Module):
    """A linear model with one parameter the loss never reads: only a parameter check can see
    a NaN written there."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.unused = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class _ToyFamily(TaskFamily):
    name = "toy"
    description = "4-d two-class linear problem (test only)"
    reference_lrs = dict.fromkeys(("sgd", "momentum"), 0.1)

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        return {}

    def build(self, spec: RunSpec) -> Task:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        split = Split(x, (x[:, 0] > 0).long())
        return Task(
            spec.describe(), self.name, _UnusedParamNet, split, split, split,
            nn.functional.cross_entropy, spec.batch_size, True,
        )  # fmt: skip


def test_nan_in_an_unused_parameter_is_divergence() -> None:
    """The loss stays finite; the parameter check alone must end the episode."""
    env = LRControlEnv(Suite("toy", Path("toy.toml"), (_ToyFamily(),)))
    env.reset(seed=0, options={"spec": _ToyFamily().spec("sgd", steps=50, batch_size=32)})
    with torch.no_grad():
        env.run.model.unused[1] = math.nan
    obs, reward, terminated, _, info = env.step(np.zeros(1, np.float32))
    assert math.isfinite(info["train_loss"])
    assert terminated and info["diverged"]
    assert reward == pytest.approx(DIVERGENCE_RETURN, abs=1e-9)
    assert_valid_obs(env, obs)


def test_divergence_in_the_first_block(env: LRControlEnv) -> None:
    """A base LR that diverges before the first decision: the first step ends the episode."""
    spec = quadratic_spec(base_lr=1000.0, steps=50)
    obs, info = env.reset(options={"spec": spec})
    assert info["diverged"]
    assert_valid_obs(env, obs)
    obs2, reward, terminated, truncated, info = env.step(np.ones(1, np.float32))
    assert terminated and not truncated and info["step"] == 10
    assert reward == DIVERGENCE_RETURN
    assert_valid_obs(env, obs2)
    assert obs2 is not obs


# --- actions -----------------------------------------------------------------------------


def test_action_mapping_on_every_param_group(env: LRControlEnv) -> None:
    spec = digits_spec(steps=400)
    env.reset(options={"spec": spec})
    extra = nn.Parameter(torch.zeros(2))
    env.run.optimizer.add_param_group({"params": [extra], "lr": 123.0})
    base, m_max = spec.base_lr, env.action_spec.max_multiplier
    lo, hi = env.action_spec.lr_band

    def step_and_lrs(a: float) -> list[float]:
        *_, info = env.step(np.array([a], np.float32))
        lrs = [g["lr"] for g in env.run.optimizer.param_groups]
        assert info["lr"] == lrs[0]
        return lrs

    assert step_and_lrs(1.0) == pytest.approx([base * m_max] * 2)
    assert step_and_lrs(-1.0) == pytest.approx([base] * 2)
    assert step_and_lrs(-1.0) == pytest.approx([base / m_max] * 2)
    assert step_and_lrs(0.5) == pytest.approx([base / m_max * math.sqrt(m_max)] * 2)
    assert step_and_lrs(5.0) == pytest.approx([base * math.sqrt(m_max)] * 2)  # clipped to +1
    assert step_and_lrs(math.nan) == pytest.approx([base * math.sqrt(m_max)] * 2)  # NaN = 0
    for _ in range(12):
        lrs = step_and_lrs(-1.0)
    assert lrs == pytest.approx([base * lo] * 2)
    for _ in range(16):
        lrs = step_and_lrs(1.0)
    assert lrs == pytest.approx([base * hi] * 2)


def test_log_lr_ratio_observation_follows_the_lr(env: LRControlEnv) -> None:
    env.reset(options={"spec": digits_spec()})
    index = features.FEATURE_NAMES.index("log_lr_ratio")
    for a, expected in [(1.0, math.log(2)), (1.0, 2 * math.log(2)), (-0.5, 1.5 * math.log(2))]:
        obs, *_ = env.step(np.array([a], np.float32))
        assert obs[index] == pytest.approx(expected, rel=1e-6)


def test_action_spec_fields_override(tiny_suite: Path) -> None:
    env = LRControlEnv(tiny_suite, ActionSpec(interval=4), max_multiplier=1.5, lr_band=(0.1, 3))
    assert env.action_spec == ActionSpec(interval=4, max_multiplier=1.5, lr_band=(0.1, 3.0))
    _, info = env.reset(options={"spec": digits_spec()})
    assert info["step"] == 4
    *_, info = env.step(np.ones(1, np.float32))
    assert info["step"] == 8 and info["lr"] == pytest.approx(info["base_lr"] * 1.5)
