"""Episodes of LR control: the reward and end-of-episode rules, once for both envs.

`LRControlEnv` (one episode at a time) and `BatchedLRControlEnv` (N at once) are thin faces of
the same rules, written here over arrays of N episodes:

- **Reward.** With V the validation loss after each block (test data never enters it) and
  l = clip(log V, log V_0 - B, log V_0 + B), B = `REWARD_BOUND`: r_t = l_{t-1} - l_t, so the
  return telescopes to log V_0 - l_T, in [-B, B].
- **Divergence** (decided by the inner-run core, `lrctl.runs`) ends the episode (terminated);
  its last reward makes the return exactly `DIVERGENCE_RETURN` = -(B + 1), below any normal
  return. An episode whose first block (at reset) already diverged is *dead*: its next step
  terminates it without training.
- **Truncation** at the run spec's horizon T.
- **Relative reward** (`relative=True`): each episode has a *reference run*, the same run
  spec and seed under cosine annealing from the same base LR, trained alongside, and the
  reward is the episode's improvement minus the reference's over the same block:
  r_t = (l_{t-1} - l_t) - (l'_{t-1} - l'_t). The return telescopes to
  (log V_0 - l_T) - (log V'_0 - l'_T) ≈ log(V'_T / V_T): how much better than cosine at the
  same LR the run ended, a number that means the same on every task. Its normal range is
  [-2B, 2B], so a diverged episode then returns `RELATIVE_DIVERGENCE_RETURN` = -(2B + 1).

Also shared by both envs: the run-spec and task plumbing (`spec_family`, `TaskCache` with its
fixed validation subsets), the `info` dict (`step_info`) and the action-spec overrides.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import numpy as np
import torch

from lrctl.actions import ActionSpec
from lrctl.errors import UsageError
from lrctl.features import check_version, min_grad_norm_steps
from lrctl.tasks import FAMILIES, RunSpec, Split, Suite, Task, TaskFamily

REWARD_BOUND = 7.0
"""B: log validation losses are clipped to [log V_0 - B, log V_0 + B], so a normal episode's
return lies in [-B, B]; a diverged episode's return is exactly -(B + 1)."""

DIVERGENCE_RETURN = -(REWARD_BOUND + 1.0)
"""The return of every diverged episode: below any normal return."""

RELATIVE_DIVERGENCE_RETURN = -(2.0 * REWARD_BOUND + 1.0)
"""With the relative reward, the return of every diverged episode: below any normal return."""

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


def resolve_feature_version(version: int, spec: ActionSpec) -> int:
    """The feature version an env observes: 2 or 3 (`lrctl.features`), with the gradient
    norms it needs (version 3: G >= 2); a UsageError that names the fix otherwise."""
    try:
        version = check_version(version)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if version < 2:
        raise UsageError("envs observe feature version 2 or 3 (version 1 is retired)")
    least = min_grad_norm_steps(version)
    if spec.grad_norm_steps < least:
        raise UsageError(
            f"feature version {version} needs grad_norm_steps >= {least} (its gradient cosine "
            f"reads a block's last two gradient norms), got {spec.grad_norm_steps}"
        )
    return version


def spec_family(suite: Suite, spec: RunSpec) -> TaskFamily:
    """The family that builds `spec`: the suite's (with its configuration) if it has it, else
    the family of that name with default ranges."""
    if spec.family in suite.family_names:
        return suite.family(spec.family)
    if spec.family not in FAMILIES:
        raise UsageError(
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


class Episodes:
    """The reward and end rules of N episodes (N = 1 for `LRControlEnv`).

    `start(rows, ...)` begins episodes after their first block; `step(...)` scores the next
    block of every episode and says which ended. `t` counts each episode's inner steps (a dead
    episode's do not advance), `horizon` its T. With `relative`, both also take the reference
    runs' validation losses (module docstring)."""

    def __init__(self, n: int, relative: bool = False) -> None:
        self.n = n
        self.relative = relative
        self.divergence_return = RELATIVE_DIVERGENCE_RETURN if relative else DIVERGENCE_RETURN
        self.ref_log_v0 = np.zeros(n)
        self.ref_log_v = np.zeros(n)  # the reference runs' clipped log validation loss
        self.t = np.zeros(n, np.int64)
        self.horizon = np.ones(n, np.int64)
        self.log_v0 = np.zeros(n)
        self.log_v = np.zeros(n)  # clipped log validation loss at the last decision
        self.returns = np.zeros(n)
        self.dead = np.zeros(n, bool)  # the first block diverged: the next step terminates

    def start(
        self,
        rows: np.ndarray | list[int],
        horizon: np.ndarray | list[int],
        steps: np.ndarray | int,
        val_loss: np.ndarray,
        diverged: np.ndarray,
        ref_val_loss: np.ndarray | None = None,
    ) -> None:
        """Episodes in `rows` begin: their first block ran `steps`, ended with `val_loss`
        (V_0) or diverged (the episode is dead); `ref_val_loss`: the reference runs' V'_0."""
        self.t[rows], self.horizon[rows], self.returns[rows] = steps, horizon, 0.0
        self.dead[rows] = diverged
        with np.errstate(invalid="ignore"):
            log_v0 = np.where(diverged, 0.0, log_loss(np.asarray(val_loss, dtype=np.float64)))
        self.log_v0[rows], self.log_v[rows] = log_v0, log_v0
        if self.relative:
            if ref_val_loss is None:
                raise ValueError("relative episodes need the reference runs' validation loss")
            ref = np.asarray(ref_val_loss, dtype=np.float64)
            with np.errstate(invalid="ignore"):  # a diverged reference reads as the bound
                ref_log = clipped_log_loss(np.where(np.isfinite(ref), ref, np.inf), log_v0)
            self.ref_log_v0[rows], self.ref_log_v[rows] = ref_log, ref_log

    def step(
        self,
        steps: np.ndarray,
        val_loss: np.ndarray,
        diverged: np.ndarray,
        ref_val_loss: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score one block of every episode (a dead one's block is ignored): each ran `steps`,
        ended with `val_loss`, or `diverged` (`ref_val_loss`: the reference runs', relative
        episodes only). Returns (reward, terminated, truncated), [N]."""
        dead = self.dead.copy()
        self.t += np.where(dead, 0, np.asarray(steps, np.int64))
        with np.errstate(invalid="ignore"):
            log_v = clipped_log_loss(np.asarray(val_loss, dtype=np.float64), self.log_v0)
        diverged = np.asarray(diverged, bool)
        improvement = self.log_v - log_v
        if self.relative:
            if ref_val_loss is None:
                raise ValueError("relative episodes need the reference runs' validation loss")
            ref = np.asarray(ref_val_loss, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                ref_log_v = clipped_log_loss(np.where(np.isfinite(ref), ref, np.inf), self.log_v0)
            improvement = improvement - (self.ref_log_v - ref_log_v)
            self.ref_log_v = ref_log_v
        lost = self.divergence_return - self.returns
        reward = np.where(diverged, lost, improvement)
        self.log_v = np.where(diverged, self.log_v, log_v)
        # Episodes whose first block diverged end now, without training.
        reward[dead] = lost[dead]
        terminated = diverged | dead
        self.returns += reward
        truncated = ~terminated & (self.t >= self.horizon)
        return reward, terminated, truncated
