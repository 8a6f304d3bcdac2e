"""BatchedLRControlEnv: member i behaves as LRControlEnv on the same run spec (observations and
rewards to float32 rounding), through auto-resets and divergence; VecEnv API; redraws."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from lrctl.batched_env import BatchedLRControlEnv, shared_key, supports_batched
from lrctl.env import DIVERGENCE_RETURN, LRControlEnv
from lrctl.features import CLIP, OBS_DIM
from lrctl.tasks import FAMILIES, RunSpec, load_suite

# Observations and rewards agree to this (absolute and relative) tolerance: the batched
# matmuls and vmap sum in another order than one model does, so float32 results differ in the
# last bits (measured: at most ~5e-6 over these episodes).
TOL = 5e-5


def member_specs(family: str, optimizer: str) -> list[RunSpec]:
    """Three runs of one population: other seeds, base LRs and horizons (one not a multiple of
    K, so its last block is short; one ending early, so it restarts while the others run)."""
    base = FAMILIES[family]().spec(optimizer, steps=60)
    return [
        replace(base, seed=1, steps=55),
        replace(base, seed=2, steps=23, base_lr=base.base_lr * 3.0),
        replace(base, seed=3, steps=40, base_lr=base.base_lr * 0.3),
    ]


Episode = tuple[list[np.ndarray], list[float], int | None]
"""Observations (the reset's first), rewards, and the step it ended at (None: still running)."""


def single_run(spec: RunSpec, actions: np.ndarray) -> Episode:
    """LRControlEnv on `spec` under actions[t], until it ends or the actions do."""
    env = LRControlEnv()
    obs, _ = env.reset(options={"spec": spec})
    observations, rewards = [obs], []
    for t, a in enumerate(actions):
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            return observations, rewards, t
    return observations, rewards, None


def batched_rollout(env: BatchedLRControlEnv, actions: np.ndarray) -> dict[str, list]:
    """Steps `env` with actions[t] (one row per member); records everything it returns."""
    out: dict[str, list] = {"obs": [env.reset()], "rewards": [], "dones": [], "infos": []}
    out["reset_infos"] = [list(env.reset_infos)]
    for a in actions:
        obs, rewards, dones, infos = env.step(a)
        for key, value in (("obs", obs), ("rewards", rewards), ("dones", dones), ("infos", infos)):
            out[key].append(value)
        out["reset_infos"].append(list(env.reset_infos))
    return out


def episode_of(rollout: dict[str, list], member: int, start: int) -> Episode:
    """The member's episode that started at step `start`, until it ends or the rollout does;
    its step numbers counted from `start`."""
    observations = [rollout["obs"][start][member]]
    rewards = []
    for t in range(start, len(rollout["rewards"])):
        done = rollout["dones"][t][member]
        info = rollout["infos"][t][member]
        observations.append(info["terminal_observation"] if done else rollout["obs"][t + 1][member])
        rewards.append(float(rollout["rewards"][t][member]))
        if done:
            return observations, rewards, t - start
    return observations, rewards, None


def assert_same_episode(single: Episode, batched: Episode) -> None:
    s_obs, s_rewards, s_end = single
    b_obs, b_rewards, b_end = batched
    assert b_end == s_end
    np.testing.assert_allclose(np.array(b_obs), np.array(s_obs), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(b_rewards, s_rewards, rtol=TOL, atol=TOL)


FAMILY_OPTIMIZERS = [  # (family, optimizer, generic): generic forces the vmap path on an MLP
    ("digits_mlp", "momentum", False),
    ("digits_mlp", "adamw", False),
    ("digits_mlp", "adamw", True),
    ("breast_cancer_logreg", "sgd", False),
    ("diabetes_mlp", "rmsprop", False),
    ("char_mlp", "adam", False),
    ("noisy_quadratic", "nesterov", False),
    ("wine_mlp", "adagrad", False),
    ("digits_cnn", "adam", False),
    ("teacher_mlp", "adam", False),
    ("friedman_mlp", "momentum", False),
    ("teacher_regression", "adagrad", False),
]


@pytest.mark.parametrize(("family", "optimizer", "generic"), FAMILY_OPTIMIZERS)
def test_members_match_the_single_env_through_an_auto_reset(family, optimizer, generic):
    specs = member_specs(family, optimizer)
    actions = np.random.default_rng(0).uniform(-1, 1, (7, 3, 1)).astype(np.float32)
    env = BatchedLRControlEnv(3, redraw_after=0, seed=5, generic=generic)
    env.set_options([{"spec": s} for s in specs])
    rollout = batched_rollout(env, actions)
    mlp = family not in ("char_mlp", "noisy_quadratic", "digits_cnn")
    assert env.pop.batched_matmul is (mlp and not generic)  # which path this case tests
    for m, spec in enumerate(specs):
        single = single_run(spec, actions[:, m])
        assert_same_episode(single, episode_of(rollout, m, 0))
    # Member 1 (23 steps) ended at its 2nd decision, truncated with a short last block, and
    # restarted on a fresh draw of the shared spec while the others ran on.
    assert rollout["dones"][1].tolist() == [False, True, False]
    assert rollout["infos"][1][1]["TimeLimit.truncated"] is True
    new = env.get_attr("run_spec", 1)[0]
    assert rollout["reset_infos"][2][1]["task"] == new.describe()
    assert shared_key(new) == shared_key(specs[0]) and new.seed != specs[1].seed
    assert_same_episode(single_run(new, actions[2:, 1]), episode_of(rollout, 1, 2))


def test_diverging_members_end_alone_with_the_divergence_return():
    """Member 1 diverges in its first block (LR 1000 on a quadratic), member 2 once its LR has
    been doubled a few times; each episode returns DIVERGENCE_RETURN; 0 and 3 run on as alone."""
    good = FAMILIES["noisy_quadratic"]().spec("sgd", steps=100, seed=1, width=10)
    specs = [good, replace(good, seed=2, base_lr=1e3), replace(good, seed=3), replace(good, seed=4)]
    actions = np.zeros((6, 4, 1), np.float32)
    actions[:, 2] = 1.0
    env = BatchedLRControlEnv(4, redraw_after=0)
    env.set_options([{"spec": s} for s in specs])
    rollout = batched_rollout(env, actions)
    assert rollout["reset_infos"][0][1]["diverged"] is True
    for m, ends_at in ((1, 0), (2, 3)):
        _, rewards, end = episode_of(rollout, m, 0)
        info = rollout["infos"][end][m]
        assert end == ends_at and info["diverged"] is True
        assert info["TimeLimit.truncated"] is False  # terminated
        assert sum(rewards) == pytest.approx(DIVERGENCE_RETURN, abs=1e-5)
    for m in (0, 3):
        assert not any(d[m] for d in rollout["dones"])
        assert_same_episode(single_run(specs[m], actions[:, m]), episode_of(rollout, m, 0))


def test_one_nan_parameter_terminates_that_member_only():
    spec = FAMILIES["digits_mlp"]().spec("adam", steps=60)
    env = BatchedLRControlEnv(3, redraw_after=0)
    env.set_options([{"spec": replace(spec, seed=s)} for s in range(3)])
    env.reset()
    env.step(np.zeros((3, 1), np.float32))
    with torch.no_grad():
        env.pop.params[0][1, 0, 0] = float("nan")  # one element of member 1's first layer
    obs, _, dones, infos = env.step(np.zeros((3, 1), np.float32))
    assert dones.tolist() == [False, True, False]
    assert infos[1]["diverged"] is True and "terminal_observation" in infos[1]
    assert np.isfinite(obs).all() and np.isfinite(infos[1]["terminal_observation"]).all()
    assert [i["diverged"] for i in (infos[0], infos[2])] == [False, False]


def test_vec_env_api_spaces_and_finite_observations_under_random_actions():
    env = BatchedLRControlEnv(4, suite=load_suite("train_v1"), families=["digits_mlp"], seed=0)
    assert env.num_envs == 4
    assert env.observation_space.shape == (OBS_DIM,) and env.action_space.shape == (1,)
    assert env.seed(3) == [3, 4, 5, 6]
    obs = env.reset()
    assert obs.shape == (4, OBS_DIM) and obs.dtype == np.float32
    assert env.get_attr("shared")[0].family == "digits_mlp"
    assert len({shared_key(s) for s in env.get_attr("run_spec")}) == 1  # one population
    assert len({s.seed for s in env.get_attr("run_spec")}) == 4
    assert env.get_attr("base_lr", [0, 2]) == [s.base_lr for s in env.get_attr("run_spec", [0, 2])]
    assert env.env_is_wrapped(VecMonitor) == [False] * 4
    env.set_attr("redraw_after", 0)
    assert env.get_attr("redraw_after", 1) == [0]
    assert env.env_method("get_images", indices=[0]) == [[None] * 4]
    rng = np.random.default_rng(1)
    for _ in range(6):
        action = rng.uniform(-3, 3, (4, 1)).astype(np.float32)  # outside [-1, 1]: clipped
        obs, rewards, dones, infos = env.step(action)
        assert obs.shape == (4, OBS_DIM) and rewards.dtype == np.float32 and dones.dtype == bool
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
        assert (np.abs(obs) <= CLIP).all() and all(env.observation_space.contains(o) for o in obs)
        lo, hi = env.action_spec.lr_band
        assert all(
            lo * i["base_lr"] <= i["lr"] * (1 + 1e-12) <= hi * i["base_lr"] * (1 + 1e-12)
            for i in infos
        )
    env.close()


def test_reseeding_reproduces_and_wrappers_work():
    def run(seed: int) -> np.ndarray:
        env = VecNormalize(VecMonitor(BatchedLRControlEnv(2, families=["noisy_quadratic"])))
        env.seed(seed)
        first = env.reset()
        obs, *_ = env.step(np.zeros((2, 1), np.float32))
        return np.concatenate([first, obs])

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_population_is_redrawn_after_every_member_finished():
    suite = load_suite("train_v1")
    env = BatchedLRControlEnv(2, suite=suite, families=["noisy_quadratic"], redraw_after=1, seed=0)
    env.reset()
    first_shared = env.shared
    finished = np.zeros(2, bool)
    for _ in range(200):
        _, _, dones, infos = env.step(np.zeros((2, 1), np.float32))
        natural = np.array([i["diverged"] or i["step"] >= i["horizon"] for i in infos])
        if (finished | natural).all():
            break
        assert (dones == natural).all()  # before the redraw: episodes end on their own
        finished |= natural
    else:
        raise AssertionError("the population was never redrawn")
    # Every member has finished an episode: whoever was still running is cut (truncated).
    cut = np.flatnonzero(~natural)
    assert dones.all() and len(cut) == 1
    assert infos[cut[0]]["TimeLimit.truncated"] is True
    assert all("terminal_observation" in i for i in infos)
    assert env.shared is not first_shared
    assert len({shared_key(s) for s in env.get_attr("run_spec")}) == 1
    assert all(s.family == "noisy_quadratic" for s in env.get_attr("run_spec"))


def test_supported_families_and_errors():
    assert all(supports_batched(f) for f in load_suite("train_v1").family_names)
    assert not supports_batched("char_gru")
    with pytest.raises(ValueError, match="supports batched"):
        BatchedLRControlEnv(2, suite="eval", families=["char_gru"])
    spec = FAMILIES["digits_mlp"]().spec("adam", steps=60)
    env = BatchedLRControlEnv(2, redraw_after=0)
    env.set_options([{"spec": spec}, {"spec": replace(spec, optimizer="sgd")}])
    with pytest.raises(ValueError, match="must share family, optimizer"):
        env.reset()
    env.set_options({"spec": replace(spec, steps=5)})
    with pytest.raises(ValueError, match="must exceed the decision interval"):
        env.reset()
