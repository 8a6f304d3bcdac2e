"""Scripted policies: the actions they pick and the LR trajectories they produce in the env."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrctl.actions import ActionSpec
from lrctl.env import LRControlEnv
from lrctl.features import FEATURE_NAMES, OBS_DIM
from lrctl.policies import SCRIPTED, CosineDecay, FixedAction, make_policy, rollout
from lrctl.tasks import FAMILIES


@pytest.fixture(scope="module")
def env() -> LRControlEnv:
    return LRControlEnv("train")


def digits_spec(steps: int):
    return FAMILIES["digits_mlp"]().spec("momentum", steps=steps, width=32, depth=1)


def obs_at(progress: float, lr_ratio: float) -> np.ndarray:
    obs = np.zeros(OBS_DIM, np.float32)
    obs[FEATURE_NAMES.index("progress")] = progress
    obs[FEATURE_NAMES.index("log_lr_ratio")] = math.log(lr_ratio)
    return obs


@pytest.mark.parametrize(
    ("name", "action"), [("constant", 0.0), ("always_up", 1.0), ("always_down", -1.0)]
)
def test_fixed_actions(name: str, action: float) -> None:
    policy = make_policy(name)
    out = policy(obs_at(0.5, 1.0), {})
    assert out.dtype == np.float32 and out.shape == (1,)
    assert out[0] == action
    assert policy.act(obs_at(0.9, 3.0)) == pytest.approx([action])


@pytest.mark.parametrize(
    ("progress", "lr_ratio", "expected"),
    [
        (0.0, 1.0, 0.0),  # cos schedule starts at the base LR
        (0.5, 1.0, -1.0),  # target 0.5: one halving
        (0.5, 0.5, 0.0),  # already there
        (1 / 3, 1.0, math.log2(0.75)),  # target 0.75
        (0.9, 1.0, -1.0),  # target 0.024: more than one halving away, clipped
        (0.5, 0.1, 1.0),  # LR far below the schedule: clipped up
        (1.0, 1.0, -1.0),  # target 0 -> the band's bottom
    ],
)
def test_cosine_action(progress: float, lr_ratio: float, expected: float) -> None:
    policy = CosineDecay(ActionSpec())
    assert policy(obs_at(progress, lr_ratio))[0] == pytest.approx(expected, abs=1e-6)


def test_cosine_target_stays_in_band() -> None:
    policy = CosineDecay(ActionSpec(lr_band=(0.05, 10.0)))
    assert policy.target_ratio(1.0) == 0.05
    assert policy.target_ratio(0.0) == 1.0
    assert policy.target_ratio(0.5) == pytest.approx(0.5)


def test_cosine_lr_trajectory(env: LRControlEnv) -> None:
    """T = 100, K = 10: lr / base at each decision follows 0.5 * (1 + cos(pi * t / T)) until
    the schedule falls faster than one halving per decision (the last two)."""
    spec = digits_spec(steps=100)
    result = rollout(env, make_policy("cosine", env.action_spec), options={"spec": spec})
    expected = [
        1.0,  # reset: the first block runs at the base LR
        0.975528,  # t = 10
        0.904508,  # t = 20
        0.793893,  # t = 30
        0.654508,  # t = 40
        0.5,  # t = 50
        0.345492,  # t = 60
        0.206107,  # t = 70
        0.103054,  # t = 80: the schedule wants 0.095492, one halving gets 0.103054
        0.051527,  # t = 90: wants 0.024472
    ]
    assert [lr / spec.base_lr for lr in result.lrs] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("always_up", [1, 2, 4, 8, 16, 30]),  # the band's top is 30x the base LR
        ("always_down", [1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32]),
    ],
)
def test_fixed_lr_trajectories(env: LRControlEnv, name: str, expected: list[float]) -> None:
    spec = digits_spec(steps=60)
    result = rollout(env, make_policy(name), options={"spec": spec})
    assert [lr / spec.base_lr for lr in result.lrs] == pytest.approx(expected)


def test_rollout_accepts_callables_and_act_objects(env: LRControlEnv) -> None:
    spec = digits_spec(steps=40)
    seen: list[int] = []

    def policy(obs: np.ndarray, info: dict) -> np.ndarray:
        seen.append(info["step"])
        return np.zeros(1, np.float32)

    result = rollout(env, policy, options={"spec": spec})
    assert seen == [10, 20, 30]
    assert result.length == 3 and len(result.observations) == len(result.infos) == 4
    assert result.episode_return == pytest.approx(sum(result.rewards))
    assert not result.diverged

    class Counter:
        def __init__(self) -> None:
            self.resets = 0

        def reset(self) -> None:
            self.resets += 1

        def act(self, obs: np.ndarray, info: dict) -> np.ndarray:
            return np.ones(1, np.float32)

    counter = Counter()
    result = rollout(env, counter, options={"spec": spec})
    assert counter.resets == 1
    assert [lr / spec.base_lr for lr in result.lrs] == pytest.approx([1, 2, 4, 8])


def test_make_policy() -> None:
    assert set(SCRIPTED) == {"constant", "cosine", "always_up", "always_down"}
    spec = ActionSpec(max_multiplier=3.0)
    assert make_policy("cosine", spec) == CosineDecay(spec)
    assert make_policy("always_up") == FixedAction(1.0)
    with pytest.raises(ValueError, match="choose one of"):
        make_policy("linear")


@pytest.mark.parametrize("m_max", [1.5, 2.0, 4.0])
def test_action_for_inverts_multiplier(m_max: float) -> None:
    spec = ActionSpec(max_multiplier=m_max)
    for a in (-1.0, -0.3, 0.0, 0.7, 1.0):
        assert spec.action_for(spec.multiplier(a)) == pytest.approx(a)
    assert spec.action_for(m_max**3) == 1.0
    assert spec.action_for(0.0) == -1.0
    assert spec.action_for(math.nan) == 0.0
