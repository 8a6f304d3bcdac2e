"""A population of LRControl-v1 episodes as one SB3 `VecEnv`, trained as one tensor program."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from lrctl.actions import ActionSpec, cosine_anchor
from lrctl.episodes import (
    Episodes,
    TaskCache,
    resolve_action_spec,
    resolve_feature_version,
    spec_family,
    step_info,
)
from lrctl.errors import UsageError
from lrctl.features import CLIP, FEATURE_VERSION, FeatureTracker, obs_dim
from lrctl.runs import Block, Runs
from lrctl.shocks import check_probability, draw_shocks, shock_multipliers
from lrctl.tasks import FAMILIES, RunSpec, Suite, TaskFamily, load_suite


def supports_batched(family: str) -> bool:
    """Whether `BatchedLRControlEnv` can train the family of this name (`TaskFamily.batchable`;
    not char_gru: torch.vmap has no batching rule for nn.GRU)."""
    return family in FAMILIES and FAMILIES[family].batchable


def batched_family_names() -> list[str]:
    """Every family a population can train."""
    return sorted(name for name in FAMILIES if supports_batched(name))


def shared_key(spec: RunSpec) -> tuple:
    """What every member of one population shares: family, optimizer, batch size, architecture."""
    return (spec.family, spec.optimizer, spec.batch_size, tuple(sorted(spec.arch.items())))


def member_spec(family: TaskFamily, shared: RunSpec, rng: np.random.Generator) -> RunSpec:
    """A draw of `family` given the population's shared architecture, batch size and optimizer.

    `TaskFamily.sample` draws the LR factor (base LR / reference LR), horizon and seed
    independently of those, so a full draw with them replaced by the shared ones (base LR
    rescaled to the shared optimizer's reference) follows the family's conditional distribution.
    """
    drawn = family.sample(rng)
    reference = family.reference_lr(shared.optimizer)
    return replace(
        drawn,
        optimizer=shared.optimizer,
        batch_size=shared.batch_size,
        arch=dict(shared.arch),
        reference_lr=reference,
        base_lr=reference * drawn.lr_factor,
    )


def split_suite(suite: Suite) -> tuple[Suite | None, Suite | None]:
    """The suite's families that support batching, and the others, as two suites (None where
    a part has no family); each family keeps its configuration and weight."""
    parts = (
        [f for f in suite.families if supports_batched(f.name)],
        [f for f in suite.families if not supports_batched(f.name)],
    )
    return tuple(replace(suite, families=tuple(p)) if p else None for p in parts)  # type: ignore[return-value]


def _batched_suite(suite: Suite, families: Sequence[str] | None) -> Suite:
    """The suite restricted to `families` (default: all it has) that support batching."""
    names = [n for n in (families or suite.family_names) if supports_batched(n)]
    if not names:
        raise UsageError(
            f"no family of suite {suite.name!r} (or of {list(families or [])}) supports batched "
            f"populations; supported: {', '.join(batched_family_names())}. Use LRControlEnv "
            "(SubprocVecEnv) for the others"
        )
    return replace(suite, families=tuple(suite.family(n) for n in names))


class BatchedLRControlEnv(VecEnv):
    """N episodes of LRControl-v1 at once, their inner runs trained as one tensor program.

    ## Description

    Every member is an `LRControlEnv` episode: same observation (`lrctl.features.FeatureTracker`
    on the block's losses and last G gradient norms), same action mapping
    (`ActionSpec.next_lr`), same reward and divergence rules (`lrctl.env.clipped_log_loss`,
    `DIVERGENCE_RETURN`), same task build (`lrctl.env.TaskCache`), same initialisation and batch
    order for a seed. Member i with run spec s yields the observations and rewards
    `LRControlEnv` yields on s (tests/test_batched_env.py, to float32 rounding). What the
    members share is the tensor program (`lrctl.population.Population`): one family,
    architecture, batch size and optimizer kind, the *shared spec*. Each member draws its own
    base LR, horizon and seed (`member_spec`), so episodes end at different times.

    The shared spec is drawn from the suite (restricted to `families` that
    `supports_batched`), or pinned with `spec`. With `redraw_after` = R > 0, once every member
    has finished R episodes of the population, the shared spec is drawn anew: episodes still
    running are cut (truncated, `"TimeLimit.truncated"`, so PPO bootstraps them) and every
    member starts an episode of the new population.

    ## Action Space

    `Box(-1, 1, (1,), float32)` per member, as `LRControlEnv`.

    ## Observation Space

    `Box(-10, 10, (D,), float32)` per member, as `LRControlEnv` (`lrctl.features`; D = 13
    with features v2, 15 with v3, 16 with v4 and 17 with v5, whose last-step statistics each
    member measures on its own block's last two steps).

    ## Rewards

    As `LRControlEnv`: r_t = l_{t-1} - l_t with l the clipped log validation loss; a diverged
    episode's return is exactly `DIVERGENCE_RETURN`.

    ## Starting State

    As `LRControlEnv`: a fresh run trained for K steps at its base LR.

    ## Episode End

    Per member, as `LRControlEnv` (termination on divergence, truncation at the horizon),
    plus the cut at a population redraw (a truncation). SB3's convention: a finished member is
    reset at once; `infos[i]["terminal_observation"]` holds its last observation,
    `infos[i]["TimeLimit.truncated"]` is True for truncations, and the new episode's reset
    info is in `reset_infos[i]`.

    ## Arguments

    - `n`: members (the VecEnv's `num_envs`).
    - `suite`, `action_spec` (or `interval`, `max_multiplier`, `lr_band`), `max_val_examples`,
      `device`: as `LRControlEnv`.
    - `families`: suite families populations may draw (default: every one that batches).
    - `spec`: pin the shared spec (family, architecture, batch size, optimizer) for good.
    - `redraw_after`: R above; 0 never redraws.
    - `seed`: seed of the population's draws (also `seed()` before `reset()`).
    - `generic`: train with the vmap forward even where the MLP fast path applies.
    - `feature_version`: as `LRControlEnv` (2 by default, or 3).
    - `lr_shock`: probability that an episode is shocked: from a random step on, the LRs its
      optimizer receives are multiplied by a hidden factor (`lrctl.shocks`; 0, the default:
      never). A training lever; `LRControlEnv` has no shocks.

    `set_options([{"spec": RunSpec}, ...])` before `reset()` pins members' first specs (they
    must share family, architecture, batch size and optimizer). `get_attr` returns the
    population's attribute for every index, except `run_spec`, `lr` and `base_lr` (each
    member's own); `set_attr` and `env_method` act on the population.

    ## Version History

    - v1: LRControl-v1 semantics (features v2); anchored actions with an anchored `action_spec`;
      features v3 with `feature_version=3` (v4 with 4, v5 with 5).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - SB3's convention
    _MEMBER_ATTRS = ("run_spec", "lr", "base_lr")

    def __init__(
        self,
        n: int,
        suite: str | Path | Suite = "train",
        action_spec: ActionSpec | None = None,
        *,
        interval: int | None = None,
        max_multiplier: float | None = None,
        lr_band: tuple[float, float] | None = None,
        families: Sequence[str] | None = None,
        spec: RunSpec | None = None,
        redraw_after: int = 1,
        max_val_examples: int | None = 256,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        generic: bool = False,
        relative: bool = False,
        feature_version: int = FEATURE_VERSION,
        lr_shock: float = 0.0,
    ) -> None:
        if n < 1:
            raise UsageError(f"n (members) must be >= 1, got {n}")
        if redraw_after < 0:
            raise UsageError(f"redraw_after must be >= 0, got {redraw_after}")
        self.render_mode = None
        self.suite = suite if isinstance(suite, Suite) else load_suite(suite)
        self.action_spec = resolve_action_spec(action_spec, interval, max_multiplier, lr_band)
        self.feature_version = resolve_feature_version(feature_version, self.action_spec)
        self.obs_dim = obs_dim(self.feature_version)
        self.fixed_spec = spec
        if spec is not None and not supports_batched(spec.family):
            raise UsageError(f"family {spec.family!r} does not support batched populations")
        self.draw_suite = None if spec is not None else _batched_suite(self.suite, families)
        self.redraw_after = int(redraw_after)
        self.device = torch.device(device)
        self.generic = generic
        self.relative = bool(relative)
        self.lr_shock = check_probability(lr_shock)
        # Runs per member: the member's own, and with the relative reward its reference run
        # (rows n..2n-1 of the population: the same spec and seed under cosine).
        self._copies = 2 if self.relative else 1
        self.rng = np.random.default_rng(seed)
        self._tasks = TaskCache(max_val_examples, self.device)
        super().__init__(
            n,
            spaces.Box(-CLIP, CLIP, (self.obs_dim,), np.float32),
            spaces.Box(-1.0, 1.0, (1,), np.float32),
        )
        self.shared: RunSpec | None = None
        self.family: TaskFamily | None = None
        self.runs: Runs | None = None
        self.tracker = FeatureTracker(n, self.feature_version)
        self.episodes = Episodes(n, relative=self.relative)
        self.specs: list[RunSpec | None] = [None] * n
        self._names: list[str] = [""] * n
        self._lr, self._base_lr = np.zeros(n), np.ones(n)
        self._factor, self._log_scale = np.ones(n), np.zeros(n)  # `ActionSpec.decide`
        self._shock_start, self._shock_factor = np.zeros(n, np.int64), np.ones(n)  # lrctl.shocks
        self._episodes = np.zeros(n, np.int64)  # finished in this population
        self._obs = np.zeros((n, self.obs_dim), np.float32)
        self._actions = np.zeros((n, 1), np.float32)

    # --- VecEnv ----------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self.rng = np.random.default_rng(self._seeds[0])
        pinned = [self._pinned(o) for o in self._options]
        first = next((s for s in pinned if s is not None), None)
        self._new_population(first)
        specs = [s or member_spec(self.family, self.shared, self.rng) for s in pinned]
        self._obs = self._start(np.arange(self.num_envs), specs)
        self._reset_seeds()
        self._reset_options()
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self.runs is None:
            raise RuntimeError("call reset() before step()")
        n, k = self.num_envs, self.action_spec.interval
        episodes = self.episodes
        acts = np.asarray(self._actions, dtype=np.float64).reshape(n, -1)[:, 0]
        dead = episodes.dead.copy()  # their block is trained with the others, then ignored
        lengths = np.minimum(k, episodes.horizon - episodes.t)
        spec = self.action_spec
        rows = np.arange(n)
        if spec.anchored:
            factor, log_scale = spec.decide(
                self._factor, self._log_scale, acts, episodes.horizon, episodes.t
            )
            self._factor = np.where(dead, self._factor, factor)
            self._log_scale = np.where(dead, self._log_scale, log_scale)
        else:
            self._lr = np.where(dead, self._lr, spec.next_lr(self._lr, self._base_lr, acts))
        block, ref_val = self._run(self.runs, rows, lengths, k)
        reward, diverged, truncated = episodes.step(
            block.lengths, block.val_loss, block.diverged, ref_val
        )
        obs = self._observe(rows, block)
        train_loss, val_loss = block.train_loss(), block.val_loss.copy()
        obs[dead] = self._obs[dead]
        train_loss[dead], val_loss[dead] = np.nan, np.inf
        done = diverged | truncated
        self._episodes += done
        infos = self._infos(rows, train_loss, val_loss, diverged)
        redraw = self.redraw_after > 0 and bool((self._episodes >= self.redraw_after).all())
        if redraw:  # the population's turn is over: cut running episodes (truncated)
            truncated |= ~done
            done[:] = True
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = obs[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i])
        if redraw:
            self._new_population(None)
            specs = [member_spec(self.family, self.shared, self.rng) for _ in range(n)]
            obs = self._start(rows, specs)
        elif done.any():
            ended = np.flatnonzero(done)
            specs = [member_spec(self.family, self.shared, self.rng) for _ in ended]
            obs[ended] = self._start(ended, specs)
        self._obs = obs
        return obs.copy(), reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.runs = None

    @property
    def pop(self):
        """The population's tensor program (`lrctl.population.Population`), None before reset."""
        return None if self.runs is None else self.runs.pop

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        if attr_name == "run_spec":
            return [self.specs[i] for i in idx]
        if attr_name in ("lr", "base_lr"):
            values = self._lr if attr_name == "lr" else self._base_lr
            return [float(values[i]) for i in idx]
        return [getattr(self, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if attr_name in self._MEMBER_ATTRS:
            raise AttributeError(f"{attr_name!r} is a member's own state; it cannot be set")
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(list(self._get_indices(indices)))

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds for the next `reset()`: the population's draws restart from `seed`."""
        return super().seed(seed)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    # --- population ------------------------------------------------------------------------

    def _pinned(self, options: dict) -> RunSpec | None:
        unknown = sorted(set(options) - {"spec"})
        if unknown:
            raise UsageError(f"unknown reset option(s) {unknown}; allowed: 'spec'")
        spec = options.get("spec")
        if spec is not None and spec.steps <= self.action_spec.interval:
            raise UsageError(
                f"the run's horizon ({spec.steps} steps) must exceed the decision interval "
                f"K = {self.action_spec.interval}; use longer horizons or a smaller interval"
            )
        return spec

    def _new_population(self, pinned: RunSpec | None) -> None:
        """A population for a shared spec: the pinned one, the fixed one, or a suite draw."""
        shared = pinned or self.fixed_spec
        if shared is None:
            assert self.draw_suite is not None
            self.family, shared = self.draw_suite.sample(self.rng)
        else:
            self.family = spec_family(self.suite, shared)
        if not supports_batched(shared.family):
            raise UsageError(f"family {shared.family!r} does not support batched populations")
        keys = {shared_key(o["spec"]) for o in self._options if o.get("spec") is not None}
        if self.fixed_spec is not None:
            keys.add(shared_key(self.fixed_spec))
        if keys - {shared_key(shared)}:
            raise UsageError(
                "the specs pinned with set_options() (and `spec`) must share family, optimizer, "
                "batch size and architecture (one population); use one BatchedLRControlEnv per "
                "such group"
            )
        self.shared = shared
        task = self._tasks.get(self.family, shared)
        self.runs = Runs.population(
            task, shared.optimizer, self._copies * self.num_envs, self.action_spec.interval,
            self.device, generic=self.generic,
        )  # fmt: skip
        self.tracker = FeatureTracker(self.num_envs, self.feature_version)
        self._episodes[:] = 0

    def _start(self, rows: np.ndarray, specs: list[RunSpec]) -> np.ndarray:
        """Start episodes `specs` in members `rows`: fresh runs trained K steps at their base LR
        (a sub-population when only some members restart). Returns their first observations."""
        assert self.runs is not None
        whole = len(rows) == self.num_envs
        k = self.action_spec.interval
        runs = self.runs
        own_rows = rows if whole else np.arange(len(rows))  # the members' rows in `runs`
        if not whole:
            pop = runs.pop
            runs = Runs.population(
                pop.task, pop.optimizer.name, self._copies * len(rows), k, self.device,
                self.generic,
            )  # fmt: skip
        offset = self.num_envs if whole else len(rows)
        run_rows = np.concatenate([own_rows + c * offset for c in range(self._copies)])
        runs.start(run_rows, [s.seed for s in specs] * self._copies)
        for r, s in zip(rows, specs, strict=True):
            self.specs[r], self._names[r] = s, s.describe()
        base = np.array([s.base_lr for s in specs], dtype=np.float64)
        self._lr[rows], self._base_lr[rows] = base, base
        self._factor[rows], self._log_scale[rows] = 1.0, 0.0
        self.tracker.reset(np.isin(np.arange(self.num_envs), rows))
        horizons = [s.steps for s in specs]
        self.episodes.t[rows], self.episodes.horizon[rows] = 0, horizons
        self._shock_start[rows], self._shock_factor[rows] = draw_shocks(
            self.rng, np.asarray(horizons), self.lr_shock
        )
        block, ref_val = self._run(runs, rows, np.full(len(rows), k), k)
        self.episodes.start(rows, horizons, k, block.val_loss, block.diverged, ref_val)
        obs = self._observe(rows, block)
        if not whole:
            every = np.concatenate([rows + c * self.num_envs for c in range(self._copies)])
            self.runs.copy_rows(every, runs)
        infos = self._infos(rows, block.train_loss(), block.val_loss, block.diverged)
        for r, info in zip(rows, infos, strict=True):
            self.reset_infos[r] = info
        return obs

    def _run(
        self, runs: Runs, rows: np.ndarray, lengths: np.ndarray, k: int
    ) -> tuple[Block, np.ndarray | None]:
        """Members `rows` (all of `runs`' members, in order) train their next block at their
        LRs; with the relative reward their reference runs too, under cosine. Returns the
        members' block and the references' validation losses (None without references)."""
        spec = self.action_spec
        v3 = self.feature_version >= 3
        episodes = self.episodes
        t = episodes.t[rows, None] + np.arange(k)[None, :]
        shock = None  # the hidden LR multipliers of shocked episodes (`lrctl.shocks`)
        if self.lr_shock > 0:
            shock = shock_multipliers(t, self._shock_start[rows], self._shock_factor[rows])
        if spec.anchored:
            own = self._anchored_lrs(rows, k)
            self._lr[rows] = own[np.arange(len(rows)), np.maximum(lengths, 1) - 1]
        elif not self.relative and shock is None:  # one LR per member for the block
            lrs = self._lr[rows]
            return runs.run_block(lengths, lrs, spec.grad_norm_steps, step_stats=v3), None
        else:
            own = np.repeat(self._lr[rows, None], k, axis=1)
        if shock is not None:  # applied to what the optimizer gets; `_lr` stays the command
            own = own * shock
        if not self.relative:
            block = runs.run_block(lengths, None, spec.grad_norm_steps, step_lrs=own, step_stats=v3)
            return block, None
        ref = self._base_lr[rows, None] * cosine_anchor(t, episodes.horizon[rows, None])
        if shock is not None:
            ref = ref * shock
        both = runs.run_block(
            np.concatenate([lengths, lengths]), None, spec.grad_norm_steps,
            step_lrs=np.concatenate([own, ref]), step_stats=v3,
        )  # fmt: skip
        m = len(rows)
        return both.rows(np.arange(m)), both.val_loss[m:]

    def _anchored_lrs(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Members `rows`' LRs at the next k steps, [len(rows), k]: base * anchor(t) * factor."""
        episodes = self.episodes
        t = episodes.t[rows, None] + np.arange(k)[None, :]
        anchor = self.action_spec.anchor(t, episodes.horizon[rows, None])
        return self._base_lr[rows, None] * anchor * self._factor[rows, None]

    def _log_lr_ratio(self, members: np.ndarray) -> np.ndarray:
        """The observation's log_lr_ratio: log(factor) (`lrctl.actions`)."""
        if self.action_spec.anchored:
            return np.log(self._factor[members])
        return np.log(self._lr[members] / self._base_lr[members])

    def _observe(self, rows: np.ndarray, block: Block) -> np.ndarray:
        """Observations of members `rows` (block row j is member rows[j]) after a block."""
        g_steps = self.action_spec.grad_norm_steps
        obs = np.empty((len(rows), self.obs_dim), np.float32)
        episodes = self.episodes
        for length in np.unique(block.lengths):
            sel = np.flatnonzero(block.lengths == length)
            members = rows[sel]
            obs[sel] = self._track(
                members,
                *block.observed(sel, g_steps),
                self._log_lr_ratio(members),
                episodes.t[members] / episodes.horizon[members],
                None if block.step_stats is None else block.step_stats[sel],
            )
        return obs

    def _track(self, members: np.ndarray, *block: np.ndarray | None) -> np.ndarray:
        """`FeatureTracker.update` for some members (all: the tracker itself; else a tracker
        holding their rows of its state, written back after)."""
        n = self.num_envs
        if len(members) == n and (members == np.arange(n)).all():
            return self.tracker.update(*block)
        state = self.tracker.state_dict()
        sub = FeatureTracker(len(members), self.feature_version)
        sub.load_state_dict({key: value[members] for key, value in state.items()})
        obs = sub.update(*block)
        for key, value in sub.state_dict().items():
            state[key][members] = value
        self.tracker.load_state_dict(state)
        return obs

    def _infos(
        self, rows: np.ndarray, train_loss: np.ndarray, val_loss: np.ndarray, diverged: np.ndarray
    ) -> list[dict]:
        columns = zip(
            rows.tolist(),
            self._base_lr[rows].tolist(),
            self._lr[rows].tolist(),
            train_loss.tolist(),
            val_loss.tolist(),
            self.episodes.t[rows].tolist(),
            diverged.tolist(),
            strict=True,
        )
        return [
            step_info(self.specs[r], base, lr, tl, vl, t, d, task=self._names[r])
            for r, base, lr, tl, vl, t, d in columns
        ]
