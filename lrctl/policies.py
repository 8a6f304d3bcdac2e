"""Scripted LR policies for the env, and `rollout`, which plays one episode with any policy.

A policy maps an observation (and the env's `info`) to an action in [-1, 1]. The scripted
ones read only the observation, so they would act the same on the runtime controller's
features. They are the sanity references of the reward and of the benchmark:

| name        | action                                                                  |
| ----------- | ----------------------------------------------------------------------- |
| constant    | 0: keep the base LR                                                     |
| cosine      | follow base * 0.5 * (1 + cos(pi * t / T)) as closely as m_max allows    |
| always_up   | +1: multiply by m_max every decision (until the band's top)             |
| always_down | -1: divide by m_max every decision (until the band's bottom)            |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from lrctl.actions import ActionSpec
from lrctl.errors import UsageError
from lrctl.features import FEATURE_NAMES

_LOG_LR = FEATURE_NAMES.index("log_lr_ratio")
_PROGRESS = FEATURE_NAMES.index("progress")


class ScriptedPolicy:
    """A policy with `act(obs, info) -> action` (shape (1,), float32) and `reset()`; calling
    it is `act`, so it also serves where a plain callable is expected."""

    def reset(self) -> None:
        """Forget any per-episode state (the scripted policies here have none)."""

    def act(self, obs: np.ndarray, info: dict | None = None) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, obs: np.ndarray, info: dict | None = None) -> np.ndarray:
        return self.act(obs, info)


@dataclass
class FixedAction(ScriptedPolicy):
    """The same action at every decision."""

    value: float = 0.0

    def act(self, obs: np.ndarray, info: dict | None = None) -> np.ndarray:
        return np.array([self.value], dtype=np.float32)


@dataclass
class CosineDecay(ScriptedPolicy):
    """Cosine annealing expressed as multipliers: at progress p = t / T, the action that moves
    the LR to base * 0.5 * (1 + cos(pi * p)) (kept inside the band), clipped to [-1, 1] when
    one decision cannot get there. The block after the decision runs at that LR, as
    `CosineAnnealingLR` would at its first step."""

    action_spec: ActionSpec = field(default_factory=ActionSpec)

    def target_ratio(self, progress: float) -> float:
        """lr / base lr that the cosine schedule prescribes at `progress`, within the band."""
        lo, hi = self.action_spec.lr_band
        p = min(max(progress, 0.0), 1.0)
        return min(max(0.5 * (1.0 + math.cos(math.pi * p)), lo), hi)

    def act(self, obs: np.ndarray, info: dict | None = None) -> np.ndarray:
        ratio = math.exp(float(obs[_LOG_LR]))  # the observation's log(lr / base lr)
        target = self.target_ratio(float(obs[_PROGRESS]))
        return np.array([self.action_spec.action_for(target / ratio)], dtype=np.float32)


def constant() -> FixedAction:
    return FixedAction(0.0)


def always_up() -> FixedAction:
    return FixedAction(1.0)


def always_down() -> FixedAction:
    return FixedAction(-1.0)


def cosine(action_spec: ActionSpec | None = None) -> CosineDecay:
    return CosineDecay(action_spec or ActionSpec())


SCRIPTED: dict[str, Callable[..., ScriptedPolicy]] = {
    "constant": constant,
    "cosine": cosine,
    "always_up": always_up,
    "always_down": always_down,
}
"""The scripted policies by name; `make_policy(name, action_spec)` builds one."""


def make_policy(name: str, action_spec: ActionSpec | None = None) -> ScriptedPolicy:
    """A scripted policy by name; `action_spec` matters for 'cosine' (use the env's)."""
    if name not in SCRIPTED:
        raise UsageError(f"unknown scripted policy {name!r}; choose one of: {', '.join(SCRIPTED)}")
    return cosine(action_spec) if name == "cosine" else SCRIPTED[name]()


Policy = ScriptedPolicy | Callable[[np.ndarray, dict], np.ndarray]


@dataclass
class EpisodeResult:
    """One played episode. `lrs`, `observations` and `infos` start with the reset's (so they
    have one entry more than `rewards`)."""

    episode_return: float
    diverged: bool
    lrs: list[float]
    rewards: list[float]
    observations: list[np.ndarray]
    infos: list[dict]

    @property
    def length(self) -> int:
        """Number of decisions (steps of the env)."""
        return len(self.rewards)


def rollout(
    env: gym.Env, policy: Policy, seed: int | None = None, options: dict | None = None
) -> EpisodeResult:
    """Play one episode of `env` from `reset(seed=seed, options=options)` with `policy`: a
    callable `(obs, info) -> action`, or any object with `act(obs, info)` (and optionally
    `reset()`, called first)."""
    if hasattr(policy, "reset"):
        policy.reset()
    act = policy.act if hasattr(policy, "act") else policy
    obs, info = env.reset(seed=seed, options=options)
    observations, infos, rewards = [obs], [info], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(act(obs, info))
        observations.append(obs)
        infos.append(info)
        rewards.append(float(reward))
        done = terminated or truncated
    return EpisodeResult(
        episode_return=float(math.fsum(rewards)),
        diverged=bool(infos[-1]["diverged"]),
        lrs=[float(i["lr"]) for i in infos],
        rewards=rewards,
        observations=observations,
        infos=infos,
    )
