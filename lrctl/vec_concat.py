"""ConcatVecEnv: several VecEnvs side by side as one, for one SB3 training run.

Hand-written because Stable-Baselines3 has none: its DummyVecEnv and SubprocVecEnv hold gym
envs, not VecEnvs, and `lrctl train` mixes batched populations (`BatchedLRControlEnv`, each a
VecEnv of N members) with a SubprocVecEnv of single envs for the families that do not batch.
It only routes: slot i of the whole is slot i - offset of the part holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)


class ConcatVecEnv(VecEnv):
    """The parts' slots in order, as one VecEnv (same observation and action spaces).

    `step_async` hands every part its actions before any `step_wait`, so parts that work in
    other processes (SubprocVecEnv) compute while in-process parts (a population) do theirs;
    put in-process parts first. Seeds: part p gets `seed + offset(p)`, so every slot's seed
    is `seed + i`, as for one VecEnv.
    """

    def __init__(self, parts: Sequence[VecEnv]) -> None:
        if not parts:
            raise ValueError("ConcatVecEnv needs at least one VecEnv")
        first = parts[0]
        for part in parts[1:]:
            if part.observation_space != first.observation_space:
                raise ValueError("the parts' observation spaces differ")
            if part.action_space != first.action_space:
                raise ValueError("the parts' action spaces differ")
        self.parts = list(parts)
        sizes = [p.num_envs for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.render_mode = None
        super().__init__(sum(sizes), first.observation_space, first.action_space)

    def _split(self, values: Sequence) -> list[Sequence]:
        return [values[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]

    def _route(self, indices: VecEnvIndices) -> list[tuple[VecEnv, list[int]]]:
        """(part, its local indices) for every part holding some of `indices`, in order."""
        wanted = list(self._get_indices(indices))
        routed = []
        for part, start in zip(self.parts, self.offsets[:-1], strict=True):
            local = [i - start for i in wanted if start <= i < start + part.num_envs]
            if local:
                routed.append((part, local))
        return routed

    def reset(self) -> VecEnvObs:
        for part, seeds, options in zip(
            self.parts, self._split(self._seeds), self._split(self._options), strict=True
        ):
            if seeds[0] is not None:
                part.seed(seeds[0])
            part.set_options(list(options))
        obs = np.concatenate([part.reset() for part in self.parts])
        self.reset_infos = [info for part in self.parts for info in part.reset_infos]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        for part, part_actions in zip(self.parts, self._split(actions), strict=True):
            part.step_async(part_actions)

    def step_wait(self) -> VecEnvStepReturn:
        results = [part.step_wait() for part in self.parts]
        self.reset_infos = [info for part in self.parts for info in part.reset_infos]
        obs, rewards, dones, infos = zip(*results, strict=True)
        return (
            np.concatenate(obs),
            np.concatenate(rewards),
            np.concatenate(dones),
            [info for part_infos in infos for info in part_infos],
        )

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [v for part, local in self._route(indices) for v in part.get_attr(attr_name, local)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for part, local in self._route(indices):
            part.set_attr(attr_name, value, local)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        return [
            v
            for part, local in self._route(indices)
            for v in part.env_method(method_name, *method_args, indices=local, **method_kwargs)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [
            v
            for part, local in self._route(indices)
            for v in part.env_is_wrapped(wrapper_class, local)
        ]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [image for part in self.parts for image in part.get_images()]
