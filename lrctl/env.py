"""The Gymnasium environment: control the learning rate of a sampled inner training run."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lrctl.actions import ActionSpec
from lrctl.features import CLIP, OBS_DIM, FeatureTracker, observation_table, read_block
from lrctl.tasks import FAMILIES, RunSpec, Split, Suite, Task, TaskFamily, load_suite
from lrctl.training import InnerRun

REWARD_BOUND = 7.0
"""B: log validation losses are clipped to [log V_0 - B, log V_0 + B], so a normal episode's
return lies in [-B, B]; a diverged episode's return is exactly -(B + 1)."""

DIVERGENCE_RETURN = -(REWARD_BOUND + 1.0)
"""The return of every diverged episode: below any normal return."""

VAL_SUBSET_SEED = 20_241_125
"""Seed of the fixed validation subset drawn once per task when the split is larger than
`max_val_examples` (never an episode seed: every episode of a task sees the same subset)."""

_TASK_CACHE_SIZE = 32


def log_loss(v: float | np.ndarray) -> float | np.ndarray:
    """log of a non-negative loss (an exact 0 reads as 1e-30, never -inf); a float or an array
    (this env and `lrctl.batched_env` both measure with it)."""
    out = np.log(np.maximum(v, 1e-30))
    return float(out) if np.ndim(out) == 0 else out


def clipped_log_loss(v: float | np.ndarray, log_v0: float | np.ndarray) -> float | np.ndarray:
    """The reward's measure l = clip(log V, log V_0 - B, log V_0 + B) (see Rewards below):
    r_t = l_{t-1} - l_t. A float or an array (one entry per run)."""
    out = np.clip(log_loss(v), np.subtract(log_v0, REWARD_BOUND), np.add(log_v0, REWARD_BOUND))
    return float(out) if np.ndim(out) == 0 else out


def step_info(
    spec: RunSpec, base_lr: float, lr: float, train_loss: float, val_loss: float, step: int,
    diverged: bool, task: str | None = None,
) -> dict:  # fmt: skip
    """The `info` of one step or reset (keys in LRControlEnv's docstring); `task` is
    `spec.describe()` when the caller has it already."""
    return {
        "task": task or spec.describe(),
        "family": spec.family,
        "optimizer": spec.optimizer,
        "base_lr": base_lr,
        "lr": lr,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "step": step,
        "horizon": spec.steps,
        "diverged": diverged,
    }


def resolve_action_spec(
    action_spec: ActionSpec | None,
    interval: int | None = None,
    max_multiplier: float | None = None,
    lr_band: tuple[float, float] | None = None,
) -> ActionSpec:
    """`action_spec` (default `ActionSpec()`) with the fields given here overriding its own."""
    spec = action_spec or ActionSpec()
    overrides = {
        k: v
        for k, v in {
            "interval": interval,
            "max_multiplier": max_multiplier,
            "lr_band": None if lr_band is None else tuple(map(float, lr_band)),
        }.items()
        if v is not None
    }
    return replace(spec, **overrides) if overrides else spec


def spec_family(suite: Suite, spec: RunSpec) -> TaskFamily:
    """The family that builds `spec`: the suite's (with its configuration) if it has it, else
    the family of that name with default ranges."""
    if spec.family in suite.family_names:
        return suite.family(spec.family)
    if spec.family not in FAMILIES:
        raise ValueError(
            f"spec.family {spec.family!r} is unknown; choose one of: {', '.join(FAMILIES)}"
        )
    return FAMILIES[spec.family]()


class TaskCache:
    """Built tasks with their validation subsets, shared by the episodes of an env.

    A build depends only on the family, architecture and batch size (the seed, optimizer and LR
    act in the training loop), so tasks are cached by those, the `size` most recent kept.
    Validation splits larger than `max_val_examples` are replaced by a fixed subset of that
    size, drawn once per task with `VAL_SUBSET_SEED`."""

    def __init__(
        self, max_val_examples: int | None, device: torch.device, size: int = _TASK_CACHE_SIZE
    ) -> None:
        self.max_val_examples, self.device, self.size = max_val_examples, device, size
        self._tasks: OrderedDict[tuple, Task] = OrderedDict()

    def get(self, family: TaskFamily, spec: RunSpec) -> Task:
        """The task for `spec` (named by it), with its validation subset."""
        key = (family.name, spec.batch_size, tuple(sorted(spec.arch.items())))
        task = self._tasks.get(key)
        if task is None:
            task = family.build(spec).to(self.device)  # data moves to the device once
            n = self.max_val_examples
            if n is not None and len(task.val) > n:
                gen = torch.Generator().manual_seed(VAL_SUBSET_SEED)
                idx = torch.randperm(len(task.val), generator=gen)[:n].sort().values
                idx = idx.to(task.val.x.device)
                task = replace(task, val=Split(task.val.x[idx], task.val.y[idx]))
            self._tasks[key] = task
            if len(self._tasks) > self.size:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(key)
        return replace(task, name=spec.describe())


class LRControlEnv(gym.Env[np.ndarray, np.ndarray]):
    """Learning-rate control of a small training run, one decision every K optimizer steps.

    ## Description

    Each episode samples a task family and a run spec (architecture, batch size, optimizer,
    base LR, horizon T, seed) from a task suite (`envs/train.toml` by default), builds a fresh
    model and optimizer, and trains it. Every K inner steps the agent picks a bounded
    log-multiplier for the learning rate, which is written to every param group. Observations
    are the scale-free features of `lrctl.features` (DESIGN rule 3), computed by the same
    `FeatureTracker` the runtime `LRController` uses, so a policy trained here reads the same
    inputs in a user's loop.

    ## Action Space

    `Box(-1, 1, (1,), float32)`: a in [-1, 1] maps to lr <- lr * m_max ** a (m_max = 2 by
    default), then the LR is clipped to `lr_band` times the base LR (see
    `lrctl.actions.ActionSpec`; NaN reads as 0, values outside [-1, 1] are clipped).

    ## Observation Space

    `Box(-10, 10, (13,), float32)`, the features of the block of K steps just run
    (`lrctl.features.FEATURE_NAMES`, version 1). "loss" of a block is the mean of its per-step
    log training losses.

    {observation_table}

    ## Rewards

    With V the validation loss (measured after every decision's block; test data never enters
    the reward) and l = clip(log V, log V_0 - B, log V_0 + B), B = 7 (`REWARD_BOUND`):
    r_t = l_{t-1} - l_t. The return telescopes to log V_0 - l_T, in [-B, B]. On divergence the
    last reward is chosen so that the episode's return is exactly -(B + 1)
    (`DIVERGENCE_RETURN`), below any normal return.

    ## Starting State

    A fresh run of the sampled spec (initialisation and batch order fixed by the spec's seed),
    trained for K steps at its base LR. V_0 is measured after that block, and the first
    observation holds its features: exactly what the runtime controller sees at its first
    decision.

    ## Episode End

    The episode ends if either happens:

    1. Termination: the run diverged: a non-finite training loss in the block, any non-finite
       parameter element (a single NaN counts), or a non-finite validation loss. The returned
       observation is still finite and inside the space; `info["diverged"]` is True. If the
       first block (at reset) already diverged, the first `step` terminates without training.
    2. Truncation: the horizon T of the run spec is reached (the last block may be shorter
       than K).

    ## Arguments

    ```python
    import gymnasium as gym
    import lrctl

    env = gym.make("lrctl/LRControl-v0", suite="train", interval=10, max_multiplier=2.0)
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

    ## Per-group (layer-wise) mode

    With `per_group=True` the inner run's optimizer has one param group per layer
    (`lrctl.param_groups.layer_param_groups`: each module owning parameters, e.g. a Linear,
    conv, GRU or embedding), all at the base LR, and every group gets its own decision. The
    observation is `[n_groups, 13]`: row g holds the features above with the gradient-norm
    features (7-9) computed from group g's parameters only and log_lr_ratio its own; the loss
    features are the same in every row (there is one loss). The action is `[n_groups]` (or
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

    - v0: first version (features v1, K = 10, m_max = 2, band [1e-3, 30], B = 7); with
      features v2 the gradient norms of the last G = `action_spec.grad_norm_steps` steps of
      each block only (default 2). `per_group=True`: layer-wise control (evaluation only).
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
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"LRControlEnv has no render modes; got render_mode={render_mode!r}")
        self.suite = suite if isinstance(suite, Suite) else load_suite(suite)
        self.action_spec = resolve_action_spec(action_spec, interval, max_multiplier, lr_band)
        if max_val_examples is not None and max_val_examples < 1:
            raise ValueError(f"max_val_examples must be >= 1 or None, got {max_val_examples}")
        self.max_val_examples = max_val_examples
        self.device = torch.device(device)
        self.render_mode = render_mode
        self.per_group = bool(per_group)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        obs_shape = (1, OBS_DIM) if self.per_group else (OBS_DIM,)  # per group: set by reset
        self.observation_space = spaces.Box(-CLIP, CLIP, obs_shape, np.float32)

        self._tasks = TaskCache(max_val_examples, self.device)
        self.family: TaskFamily | None = None
        self.run_spec: RunSpec | None = None
        self.run: InnerRun | None = None
        self.tracker = FeatureTracker(1)
        self._log_v0 = 0.0
        self._log_v = 0.0  # clipped log validation loss at the last decision
        self._return = 0.0
        self._diverged = False
        self._done = True
        self._obs = np.zeros(OBS_DIM, np.float32)

    # --- episode -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.family, spec = self._draw(options or {})
        if spec.steps <= self.action_spec.interval:
            raise ValueError(
                f"the run's horizon ({spec.steps} steps) must exceed the decision interval "
                f"K = {self.action_spec.interval}; use longer horizons or a smaller interval"
            )
        self.run_spec = spec
        task = self._task(self.family, spec)
        self.run = InnerRun(
            task, spec.optimizer, spec.base_lr, capacity=spec.steps, seed=spec.seed,
            device=self.device, param_groups="layer" if self.per_group else "single",
        )  # fmt: skip
        if self.per_group:  # this model's number of layers: the spaces' shapes
            n = len(self.run.group_sizes)
            self.tracker = FeatureTracker(n)
            self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
            self.observation_space = spaces.Box(-CLIP, CLIP, (n, OBS_DIM), np.float32)
        else:
            self.tracker.reset()
        self._return = 0.0
        self._done = False
        # The first block runs at the base LR, as in the runtime controller.
        obs, train_loss, val_loss, diverged = self._block()
        self._diverged = diverged
        self._log_v0 = log_loss(val_loss) if not diverged else 0.0
        self._log_v = self._log_v0
        self._obs = obs
        return obs, self._info(train_loss, val_loss)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.run is None or self.run_spec is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        if self._diverged:  # the first block, at reset, already diverged
            self._done = True
            reward = DIVERGENCE_RETURN - self._return
            self._return = DIVERGENCE_RETURN
            return self._obs.copy(), float(reward), True, False, self._info(math.nan, math.inf)

        run = self.run
        if self.per_group:
            run.set_lr(self._group_lrs(action))
        else:
            a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            run.set_lr(self.action_spec.next_lr(run.lr, run.base_lr, a))
        obs, train_loss, val_loss, diverged = self._block()
        self._obs = obs
        if diverged:
            self._diverged = True
            reward = DIVERGENCE_RETURN - self._return
        else:
            log_v = clipped_log_loss(val_loss, self._log_v0)
            reward = self._log_v - log_v
            self._log_v = log_v
        self._return += reward
        truncated = not diverged and run.t >= self.run_spec.steps
        self._done = diverged or truncated
        return obs, float(reward), diverged, truncated, self._info(train_loss, val_loss)

    # --- internals -----------------------------------------------------------------------

    def _group_lrs(self, action: np.ndarray) -> list[float]:
        """Per-group mode: each group's next LR, from its own action (or one for all)."""
        assert self.run is not None
        groups = self.run.optimizer.param_groups
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size not in (1, len(groups)):
            raise ValueError(
                f"per-group mode takes one action per param group ({len(groups)} here) or one "
                f"for all, got shape {np.shape(action)}"
            )
        a = np.broadcast_to(a, (len(groups),))
        base = self.run.base_lr
        return [
            self.action_spec.next_lr(float(g["lr"]), base, float(ai))
            for g, ai in zip(groups, a, strict=True)
        ]

    def _block(self) -> tuple[np.ndarray, float, float, bool]:
        """Run K steps at the current LR; return (observation, block train loss, val loss,
        diverged). One host read for the block's stats, one for the validation loss."""
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        start = run.t
        losses, gnorms = run.advance(
            self.action_spec.interval, grad_norm_steps=self.action_spec.grad_norm_steps
        )
        diverged = run.check_block(start)
        if self.per_group:  # the one loss for every group; each group's own gradient norms
            gnorms = run.group_grad_norms(run.t - len(gnorms), run.t)
            losses = losses.expand(len(run.group_sizes), -1)
            ratios = [math.log(g["lr"] / run.base_lr) for g in run.optimizer.param_groups]
            log_lr_ratio = ratios[0] if len(ratios) == 1 else ratios  # as the controller's
        else:
            log_lr_ratio = math.log(run.lr / run.base_lr)
        block_losses, block_gnorms = read_block(losses, gnorms)  # the block's one host read
        obs = self.tracker.update(block_losses, block_gnorms, log_lr_ratio, run.t / spec.steps)
        obs = obs if self.per_group else obs[0]
        train_loss = float(block_losses[0].mean())
        if diverged:
            return obs, train_loss, math.inf, True
        val_loss, _ = run.evaluate("val", accuracy=False)
        if not math.isfinite(val_loss):
            run.diverged_at = run.t - 1
            return obs, train_loss, val_loss, True
        return obs, train_loss, val_loss, False

    def _draw(self, options: dict) -> tuple[TaskFamily, RunSpec]:
        unknown = sorted(set(options) - {"spec", "family"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; allowed: 'spec', 'family'")
        spec: RunSpec | None = options.get("spec")
        name: str | None = options.get("family")
        if spec is not None:
            if name is not None and name != spec.family:
                raise ValueError(
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

    def _info(self, train_loss: float, val_loss: float) -> dict:
        run, spec = self.run, self.run_spec
        assert run is not None and spec is not None
        info = step_info(spec, run.base_lr, run.lr, train_loss, val_loss, run.t, self._diverged)
        if self.per_group:
            info["lrs"] = [float(g["lr"]) for g in run.optimizer.param_groups]
        return info


# The observation table is written once, in lrctl.features; the env's docstring shows it.
LRControlEnv.__doc__ = (LRControlEnv.__doc__ or "").replace(
    "{observation_table}", observation_table(indent="    ")
)
