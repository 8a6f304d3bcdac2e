"""The Gymnasium environment: control the learning rate of a sampled inner training run.

A thin face over two cores: the inner run advances, is checked, validated and recorded by
`lrctl.runs.Runs` (the same code `train()`, the bench and the batched env use), and rewards and
episode ends come from `lrctl.episodes.Episodes` (the batched env's rules too).
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lrctl.actions import ActionSpec, cosine_anchor
from lrctl.episodes import (
    DIVERGENCE_RETURN,
    REWARD_BOUND,
    Episodes,
    TaskCache,
    resolve_action_spec,
    resolve_feature_version,
    spec_family,
    step_info,
)
from lrctl.errors import UsageError
from lrctl.features import (
    CLIP,
    FEATURE_VERSION,
    FeatureTracker,
    obs_dim,
    observation_table,
    read_block,
)
from lrctl.runs import Runs
from lrctl.tasks import RunSpec, Suite, Task, TaskFamily, load_suite

__all__ = ["DIVERGENCE_RETURN", "REWARD_BOUND", "LRControlEnv"]


class LRControlEnv(gym.Env[np.ndarray, np.ndarray]):
    """Learning-rate control of a small training run, one decision every K optimizer steps.

    ## Description

    Each episode samples a task family and a run spec (architecture, batch size, optimizer,
    base LR, horizon T, seed) from a task suite (`envs/train.toml` by default), builds a fresh
    model and optimizer, and trains it. Every K inner steps the agent picks a bounded
    log-multiplier for the learning rate, which is written to every param group. Observations
    are the scale-free features of `lrctl.features`, computed by the same
    `FeatureTracker` the runtime `LRController` uses, so a policy trained here reads the same
    inputs in a user's loop.

    ## Action Space

    `Box(-1, 1, (1,), float32)`: a in [-1, 1] maps to lr <- lr * m_max ** a (m_max = 2 by
    default), then the LR is clipped to `lr_band` times the base LR (see
    `lrctl.actions.ActionSpec`; NaN reads as 0, values outside [-1, 1] are clipped).

    ## Observation Space

    `Box(-10, 10, (D,), float32)`, the features of the block of K steps just run
    (`lrctl.features.feature_names(feature_version)`): D = 13 with features version 2 (the
    default), rows 0-12 below; D = 15 with version 3, rows 0-14; D = 16 with version 4, rows
    0-15; D = 17 with version 5, all rows. "loss" of a block is the mean of its per-step log
    training losses.

    {observation_table}

    ## Rewards

    With V the validation loss (measured after every decision's block; test data never enters
    the reward) and l = clip(log V, log V_0 - B, log V_0 + B), B = 7 (`REWARD_BOUND`):
    r_t = l_{t-1} - l_t. The return telescopes to log V_0 - l_T, in [-B, B]. On divergence the
    last reward is chosen so that the episode's return is exactly -(B + 1)
    (`DIVERGENCE_RETURN`), below any normal return. These rules are `lrctl.episodes.Episodes`.

    ## Starting State

    A fresh run of the sampled spec (initialisation and batch order fixed by the spec's seed),
    trained for K steps at its base LR. V_0 is measured after that block, and the first
    observation holds its features: exactly what the runtime controller sees at its first
    decision.

    ## Episode End

    The episode ends if either happens:

    1. Termination: the run diverged (decided by `lrctl.runs.Runs`): a non-finite training loss
       or gradient norm in the block, any non-finite parameter element (a single NaN counts),
       or a non-finite validation loss. The returned
       observation is still finite and inside the space; `info["diverged"]` is True. If the
       first block (at reset) already diverged, the first `step` terminates without training.
    2. Truncation: the horizon T of the run spec is reached (the last block may be shorter
       than K).

    ## Arguments

    ```python
    import gymnasium as gym
    import lrctl

    env = gym.make("lrctl/LRControl-v1", suite="train", interval=10, max_multiplier=2.0)
    obs, info = env.reset(seed=0, options={"family": "digits_mlp"})
    ```

    - `suite`: a suite path, a name ('train', 'eval') or a loaded `Suite`.
    - `action_spec`: an `ActionSpec`; or its fields `interval` (K), `max_multiplier` (m_max),
      `lr_band`, which override the spec's (defaults: K = 10, m_max = 2, band [1e-3, 30]).
    - `max_val_examples`: validation splits larger than this (default 256) are replaced by a
      fixed subset of this size, drawn once per task with `VAL_SUBSET_SEED`, to keep the
      per-decision validation pass cheap; None keeps whole splits.
    - `device`: where the inner runs train.
    - `per_group`: layer-wise control (below); False by default.
    - `relative`: reward relative to a reference run, the same spec and seed under cosine
      annealing from the base LR (`lrctl.episodes`); a diverged episode then returns
      `RELATIVE_DIVERGENCE_RETURN`. False by default.
    - `feature_version`: the observation's feature version, 2 (default) or 3 (adds the last
      update's size and the last two gradients' cosine, measured on each block's last two
      steps; needs `action_spec.grad_norm_steps` >= 2).

    ## Per-group (layer-wise) mode

    With `per_group=True` the inner run's optimizer has one param group per layer
    (`lrctl.param_groups.layer_param_groups`: each module owning parameters, e.g. a Linear,
    conv, GRU or embedding), all at the base LR, and every group gets its own decision. The
    observation is `[n_groups, D]`: row g holds the features above with the gradient-norm
    features (7-9, and versions 3 and 4's 13-15) computed from group g's parameters only and
    log_lr_ratio its own; the loss features are the same in every row (there is one loss). The action is `[n_groups]` (or
    `(1,)`, applied to every group), each mapped as above onto its group's LR. Rewards,
    starting state and episode end are unchanged; `info` adds `lrs` (every group's LR).
    n_groups depends on the sampled model, so the spaces are re-declared at each `reset` to
    that episode's shape: this mode is for evaluating a policy shared across groups (e.g.
    `ControllerWeights.act` on the [n_groups, 13] observation, as `LRController(...,
    per_group=True)` does), not for SB3 training, which needs one fixed shape. With a single
    param group it equals the default mode (observation `[1, 13]`).

    `reset(options=...)` may pin `"spec"` (a `RunSpec`) and/or `"family"` (a family name).

    `info` holds: task, family, optimizer, base_lr, lr (for the block just run), train_loss
    (the block's mean), val_loss, step, horizon, diverged.

    ## Version History

    - v1: features v2: the gradient norms of the last G = `action_spec.grad_norm_steps` steps
      of each block only (default 2). `per_group=True`: layer-wise control (evaluation only).
      `feature_version=3`, `4` or `5`: features v3, v4 or v5 on request (the default
      observation is unchanged).
    - v0: first version (features v1, K = 10, m_max = 2, band [1e-3, 30], B = 7). Making
      `lrctl/LRControl-v0` now raises an error that points to v1.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        suite: str | Path | Suite = "train",
        action_spec: ActionSpec | None = None,
        *,
        interval: int | None = None,
        max_multiplier: float | None = None,
        lr_band: tuple[float, float] | None = None,
        max_val_examples: int | None = 256,
        device: torch.device | str = "cpu",
        render_mode: str | None = None,
        per_group: bool = False,
        relative: bool = False,
        feature_version: int = FEATURE_VERSION,
    ) -> None:
        if render_mode is not None:
            raise UsageError(f"LRControlEnv has no render modes; got render_mode={render_mode!r}")
        self.suite = suite if isinstance(suite, Suite) else load_suite(suite)
        self.action_spec = resolve_action_spec(action_spec, interval, max_multiplier, lr_band)
        if max_val_examples is not None and max_val_examples < 1:
            raise UsageError(f"max_val_examples must be >= 1 or None, got {max_val_examples}")
        self.max_val_examples = max_val_examples
        self.device = torch.device(device)
        self.render_mode = render_mode
        self.per_group = bool(per_group)
        self.feature_version = resolve_feature_version(feature_version, self.action_spec)
        self.obs_dim = obs_dim(self.feature_version)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        obs_shape = (1, self.obs_dim) if self.per_group else (self.obs_dim,)  # per group: reset
        self.observation_space = spaces.Box(-CLIP, CLIP, obs_shape, np.float32)

        self._tasks = TaskCache(max_val_examples, self.device)
        self.family: TaskFamily | None = None
        self.run_spec: RunSpec | None = None
        self.runs: Runs | None = None
        self.tracker = FeatureTracker(1, self.feature_version)
        self.relative = bool(relative)
        self.episode = Episodes(1, relative=self.relative)
        self.reference: Runs | None = None  # relative reward: the same run under cosine
        self._factor, self._log_scale = 1.0, 0.0  # the action state (`ActionSpec.decide`)
        self._done = True
        self._obs = np.zeros(self.obs_dim, np.float32)

    @property
    def run(self):
        """The episode's inner run (`lrctl.inner_run.InnerRun`), None before the first reset."""
        return None if self.runs is None else self.runs.run

    # --- episode -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.family, spec = self._draw(options or {})
        if spec.steps <= self.action_spec.interval:
            raise UsageError(
                f"the run's horizon ({spec.steps} steps) must exceed the decision interval "
                f"K = {self.action_spec.interval}; use longer horizons or a smaller interval"
            )
        self.run_spec = spec
        task = self._task(self.family, spec)
        self.runs = Runs.single(
            task, spec.optimizer, spec.base_lr, capacity=spec.steps, seed=spec.seed,
            device=self.device, param_groups="layer" if self.per_group else "single",
        )  # fmt: skip
        if self.per_group and self.action_spec.anchored:
            raise UsageError(
                "per-group mode supports recursive actions only; use per_group=False for an "
                "anchored action spec"
            )
        self._factor, self._log_scale = 1.0, 0.0
        if self.relative:
            self.reference = Runs.single(
                task, spec.optimizer, spec.base_lr, capacity=spec.steps, seed=spec.seed,
                device=self.device,
            )  # fmt: skip
        if self.per_group:  # this model's number of layers: the spaces' shapes
            n = len(self.run.group_sizes)
            self.tracker = FeatureTracker(n, self.feature_version)
            self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
            self.observation_space = spaces.Box(-CLIP, CLIP, (n, self.obs_dim), np.float32)
        else:
            self.tracker.reset()
        self._done = False
        # The first block runs at the base LR, as in the runtime controller.
        obs, block = self._block()
        self.episode.start(
            [0], [spec.steps], block.lengths, block.val_loss, block.diverged, self._reference()
        )
        self._obs = obs
        return obs, self._info(block)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.runs is None or self.run_spec is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        if self.episode.dead[0]:  # the first block, at reset, already diverged: no training
            inf = np.full(1, np.inf)
            reward, _, _ = self.episode.step(
                np.zeros(1, np.int64), inf, np.ones(1, bool), inf if self.relative else None
            )
            self._done = True
            return self._obs.copy(), float(reward[0]), True, False, self._info(None)
        run = self.run
        if self.per_group:
            run.set_lr(self._group_lrs(action))
        else:
            a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            if self.action_spec.anchored:
                self._factor, self._log_scale = self.action_spec.decide(
                    self._factor, self._log_scale, a, self.run_spec.steps, int(self.episode.t[0])
                )
            else:
                run.set_lr(self.action_spec.next_lr(run.lr, run.base_lr, a))
        obs, block = self._block()
        self._obs = obs
        reward, terminated, truncated = self.episode.step(
            block.lengths, block.val_loss, block.diverged, self._reference()
        )
        self._done = bool(terminated[0] or truncated[0])
        info = self._info(block)
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    # --- internals -----------------------------------------------------------------------

    def _group_lrs(self, action: np.ndarray) -> list[float]:
        """Per-group mode: each group's next LR, from its own action (or one for all)."""
        assert self.run is not None
        groups = self.run.optimizer.param_groups
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size not in (1, len(groups)):
            raise UsageError(
                f"per-group mode takes one action per param group ({len(groups)} here) or one "
                f"for all, got shape {np.shape(action)}"
            )
        a = np.broadcast_to(a, (len(groups),))
        base = self.run.base_lr
        return [
            self.action_spec.next_lr(float(g["lr"]), base, float(ai))
            for g, ai in zip(groups, a, strict=True)
        ]

    def _reference(self) -> np.ndarray | None:
        """Relative reward: advance the reference run (cosine from the base LR) as far as the
        episode's run went; its validation loss."""
        if self.reference is None:
            return None
        spec, ref = self.run_spec, self.reference
        start = int(ref.t[0])
        t = np.arange(start, self.run.t)
        lrs = spec.base_lr * cosine_anchor(t, spec.steps)
        return ref.run_block(len(t), grad_norm_steps=1, step_lrs=lrs).val_loss

    def _block(self):
        """Run K steps at the current LR through the core (`Runs.run_block`: one host read,
        divergence, validation) and return (observation, block)."""
        runs, spec = self.runs, self.run_spec
        assert runs is not None and spec is not None
        run = runs.run
        g_steps, k = self.action_spec.grad_norm_steps, self.action_spec.interval
        step_lrs = None
        if self.action_spec.anchored:  # re-anchored every step: base * anchor(t) * factor
            t = np.arange(run.t, min(run.t + k, spec.steps))
            step_lrs = run.base_lr * self.action_spec.anchor(t, spec.steps) * self._factor
        v3 = self.feature_version >= 3
        block = runs.run_block(k, grad_norm_steps=g_steps, step_lrs=step_lrs, step_stats=v3)
        length = int(block.lengths[0])
        stats = block.step_stats
        if self.per_group:  # the one loss for every group; each group's own gradient norms
            g = min(g_steps, length)
            gnorms = run.group_grad_norms(run.t - g, run.t)
            losses = torch.from_numpy(block.losses[:, :length]).expand(len(run.group_sizes), -1)
            if v3:  # and each group's own last-step statistics
                block_losses, block_gnorms, stats = read_block(
                    losses, gnorms, run.block_step_stats(by_group=True)
                )
            else:
                block_losses, block_gnorms = read_block(losses, gnorms)
            ratios = [math.log(pg["lr"] / run.base_lr) for pg in run.optimizer.param_groups]
            log_lr_ratio = ratios[0] if len(ratios) == 1 else ratios  # as the controller's
        else:
            block_losses, block_gnorms = block.observed(np.array([0]), g_steps)
            if self.action_spec.anchored:
                log_lr_ratio = math.log(self._factor)
            else:
                log_lr_ratio = math.log(run.lr / run.base_lr)
        obs = self.tracker.update(
            block_losses, block_gnorms, log_lr_ratio, run.t / spec.steps, stats
        )
        return (obs if self.per_group else obs[0]), block

    def _draw(self, options: dict) -> tuple[TaskFamily, RunSpec]:
        unknown = sorted(set(options) - {"spec", "family"})
        if unknown:
            raise UsageError(f"unknown reset option(s) {unknown}; allowed: 'spec', 'family'")
        spec: RunSpec | None = options.get("spec")
        name: str | None = options.get("family")
        if spec is not None:
            if name is not None and name != spec.family:
                raise UsageError(
                    f"options 'family'={name!r} and 'spec' (family {spec.family!r}) disagree; "
                    "pass one of them"
                )
            return spec_family(self.suite, spec), spec
        if name is not None:
            family = self.suite.family(name)
            return family, family.sample(self.np_random)
        return self.suite.sample(self.np_random)

    def _task(self, family: TaskFamily, spec: RunSpec) -> Task:
        """The task for `spec`, with its validation subset (`TaskCache`)."""
        return self._tasks.get(family, spec)

    def _info(self, block) -> dict:
        """`info` after a block (None: a dead episode's last step, which trains nothing)."""
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        train_loss, val_loss = (
            (math.nan, math.inf) if block is None else (block.train_loss()[0], block.val_loss[0])
        )
        info = step_info(
            spec, run.base_lr, run.lr, float(train_loss), float(val_loss),
            int(self.episode.t[0]), bool(self.episode.dead[0] or (block is not None and block.diverged[0])),
        )  # fmt: skip
        if self.per_group:
            info["lrs"] = [float(g["lr"]) for g in run.optimizer.param_groups]
        return info


# The observation table is written once, in lrctl.features; the env's docstring shows it.
LRControlEnv.__doc__ = (LRControlEnv.__doc__ or "").replace(
    "{observation_table}", observation_table(indent="    ")
)
