"""The core of every inner run: N runs of one task, advanced one block at a time.

A *block* is the unit every driver works in: the env's decision interval K, `train()`'s
validation interval, a PBT member's perturbation interval. `Runs` owns what a block means, once
for all of them:

1. **advance** each run its number of steps (at the LRs given; a single run may instead be
   stepped by a per-step LR policy), recording loss and gradient norm per step on the device,
   and on request (features v3) the last-step statistics of its block's last two steps
   (`lrctl.last_steps`: `InnerRun` per parameter tensor, `Population` per flat row);
2. **read** the block to the host once: losses, gradient norms, whether every parameter is
   finite (and the last-step statistics);
3. **check** it: a run whose block holds a non-finite loss or gradient norm, or any non-finite
   parameter element (a single NaN counts), has diverged;
4. **validate** the runs that did not (the validation split; `accuracy` on request); a
   non-finite validation loss is divergence too;
5. **record** divergence: `diverged_at` is the first step whose loss or gradient norm is not
   finite (an infinite gradient is where a run breaks, even if that step's loss was still
   finite), else the block's last step (only the parameters, or the model's outputs, went bad,
   in that step's update);
6. **keep the history**: for a single run, every validation (step, loss, accuracy) next to the
   per-step record `InnerRun` keeps (train loss, gradient norm, LR), turned into a `History`.

`Runs.single` is one `lrctl.inner_run.InnerRun` (N = 1: `train()`, the bench, PBT members, the
env); `Runs.population` is a `lrctl.population.Population` (N > 1, one tensor program: the
batched env). Populations keep no per-step history (their only reader is meta-training, which
needs the block statistics only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lrctl.inner_run import InnerRun, params_finite
from lrctl.param_groups import ParamGrouping
from lrctl.population import Population
from lrctl.tasks.base import Task


@dataclass(frozen=True)
class Block:
    """One block of N runs, on the host (float64).

    `losses` and `grad_norms` are [N, k] (k = the longest block; row i holds `lengths[i]` real
    steps, gradient norms 0 on the steps that did not read one). `val_loss` is +inf for runs
    whose block diverged (the non-finite value itself where validation found it), and
    `val_accuracy` NaN where not measured. `diverged` is True for runs that diverged in this
    block or before it. `step_stats` [N, 3]: each run's last-step statistics
    (`lrctl.last_steps.STAT_NAMES`, features v3) where the block measured them, else None."""

    lengths: np.ndarray
    losses: np.ndarray
    grad_norms: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    diverged: np.ndarray
    step_stats: np.ndarray | None = None

    def observed(self, rows: np.ndarray, grad_norm_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """What the features read of runs `rows` (all of one block length L): their L losses
        and the gradient norms of their last min(G, L) steps, [len(rows), L] and [.., g]."""
        length = int(self.lengths[rows[0]])
        g = min(grad_norm_steps, length)
        return self.losses[rows, :length], self.grad_norms[rows, length - g : length]

    def rows(self, index: np.ndarray) -> Block:
        """The block of runs `index` only."""
        stats = None if self.step_stats is None else self.step_stats[index]
        return Block(
            self.lengths[index], self.losses[index], self.grad_norms[index],
            self.val_loss[index], self.val_accuracy[index], self.diverged[index], stats,
        )  # fmt: skip

    def train_loss(self) -> np.ndarray:
        """Each run's mean training loss over its block, [N] (NaN/inf pass through)."""
        out = np.empty(len(self.lengths))
        with np.errstate(invalid="ignore", over="ignore"):
            if len(out) == 1:
                out[0] = self.losses[0, : self.lengths[0]].mean()
                return out
            for length in np.unique(self.lengths):
                rows = np.flatnonzero(self.lengths == length)
                out[rows] = self.losses[rows, :length].mean(1)
        return out


@dataclass
class History:
    """What one run recorded.

    `steps`: one row per optimizer step (step, train_loss, grad_norm, lr). `evals`: one row per
    validation (step, val_loss, val_accuracy). On divergence, `steps` ends at the divergence
    step `diverged_at` (the first step whose loss or gradient norm is not finite): it is the
    only row that may hold a non-finite value.
    """

    steps: pd.DataFrame
    evals: pd.DataFrame
    diverged: bool
    diverged_at: int | None
    wall_time: float
    final_val_loss: float
    final_val_accuracy: float
    test_loss: float
    test_accuracy: float


def diverged_metrics(classification: bool) -> tuple[float, float]:
    """(loss, accuracy) of a diverged run on any split: (inf, 0 for classification else NaN)."""
    return math.inf, 0.0 if classification else math.nan


def make_history(
    train_loss: np.ndarray,
    grad_norm: np.ndarray,
    lrs: np.ndarray,
    evals: Sequence[tuple[float, float, float]],
    diverged_at: int | None,
    classification: bool,
    wall_time: float,
    test: tuple[float, float] | None = None,
) -> History:
    """A `History` from per-step records (as long as the run went) and its validations.

    Steps are cut after `diverged_at`; a diverged run's final validation is
    `diverged_metrics`. `test`: the test split's (loss, accuracy), None when not measured."""
    diverged = diverged_at is not None
    n = diverged_at + 1 if diverged else len(train_loss)
    steps = pd.DataFrame(
        {
            "step": np.arange(n),
            "train_loss": np.asarray(train_loss[:n]),
            "grad_norm": np.asarray(grad_norm[:n]),
            "lr": np.asarray(lrs[:n], dtype=np.float64),
        }
    )
    eval_frame = pd.DataFrame(list(evals), columns=["step", "val_loss", "val_accuracy"])
    if diverged:
        final = diverged_metrics(classification)
    else:
        final = (float(eval_frame.val_loss.iloc[-1]), float(eval_frame.val_accuracy.iloc[-1]))
    test = test or (math.nan, math.nan)
    return History(
        steps=steps,
        evals=eval_frame,
        diverged=diverged,
        diverged_at=diverged_at,
        wall_time=wall_time,
        final_val_loss=float(final[0]),
        final_val_accuracy=float(final[1]),
        test_loss=float(test[0]),
        test_accuracy=float(test[1]),
    )


class Runs:
    """N inner runs of one task, advanced one block at a time (see the module docstring).

    Build with `Runs.single(...)` (N = 1) or `Runs.population(...)` (N > 1). `t[i]` counts run
    i's steps since its start, `diverged_at[i]` its divergence step (-1: none); `evals` holds a
    single run's validations (the first, at step 0, when `validate_start` was asked for).
    """

    def __init__(self, engine: InnerRun | Population) -> None:
        self.engine = engine
        self.n = engine.n if isinstance(engine, Population) else 1
        self.t = np.zeros(self.n, np.int64)
        self.diverged_at = np.full(self.n, -1, np.int64)
        self.evals: list[tuple[float, float, float]] = []

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def single(
        cls,
        task: Task,
        optimizer: str,
        lr: float,
        capacity: int,
        seed: int,
        device: torch.device | str = "cpu",
        param_groups: ParamGrouping = "single",
    ) -> Runs:
        """One fresh run (`InnerRun`): `capacity` steps at most, initialisation and batch order
        fixed by `seed`."""
        return cls(InnerRun(task, optimizer, lr, capacity, seed, device, param_groups))

    @classmethod
    def population(
        cls,
        task: Task,
        optimizer: str,
        n: int,
        max_block: int,
        device: torch.device | str = "cpu",
        generic: bool = False,
    ) -> Runs:
        """N runs as one tensor program (`Population`); start members with `start`."""
        return cls(Population(task, optimizer, n, max_block, device, generic))

    @property
    def run(self) -> InnerRun:
        """The single run (N = 1)."""
        if not isinstance(self.engine, InnerRun):
            raise TypeError("a population has no single run; use Runs.single(...)")
        return self.engine

    @property
    def pop(self) -> Population:
        """The population (N > 1)."""
        if not isinstance(self.engine, Population):
            raise TypeError("a single run is not a population; use Runs.population(...)")
        return self.engine

    def start(self, rows: Sequence[int], seeds: Sequence[int]) -> None:
        """Population: fresh runs in `rows` from `seeds` (as `InnerRun` would start them)."""
        self.pop.init_members(rows, seeds)
        index = list(rows)
        self.t[index], self.diverged_at[index] = 0, -1

    def copy_rows(self, rows: Sequence[int], other: Runs) -> None:
        """Population: members `rows` take over `other`'s runs (same task and optimizer)."""
        self.pop.copy_rows(rows, other.pop)
        index = list(rows)
        self.t[index], self.diverged_at[index] = other.t, other.diverged_at

    # --- the block ------------------------------------------------------------------------

    def validate_start(self, accuracy: bool = True) -> tuple[float, float]:
        """A single run's validation before any step (recorded at step 0)."""
        loss, acc = self.run.evaluate("val", accuracy)
        self.evals.append((0, loss, acc))
        return loss, acc

    def run_block(
        self,
        lengths: int | Sequence[int] | np.ndarray,
        lrs: float | Sequence[float] | np.ndarray | None = None,
        grad_norm_steps: int | None = None,
        policy: object | None = None,
        accuracy: bool = False,
        step_lrs: np.ndarray | None = None,
        step_stats: bool = False,
    ) -> Block:
        """Advance run i `lengths[i]` steps (a single run: never past its capacity) at `lrs`
        (None: as they are; a single run: its LR, or one per param group; a population: [N]),
        or at `step_lrs` [N, k] (run i's LR at each step of the block), then read, check,
        validate and record the block (steps 1-6 of the module docstring).

        `grad_norm_steps` = G: only the last G steps of each run's block read their gradient
        norm (None: every step). `policy`: a single run's per-step LR policy (a torch scheduler
        or a loss-driven policy such as `LRController`). `step_stats`: also measure each run's
        last-step statistics (features v3; `Block.step_stats`)."""
        lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (self.n,)).copy()
        start = self.t.copy()
        stats: torch.Tensor | None = None
        if isinstance(self.engine, InnerRun):
            run = self.engine
            if lrs is not None:
                run.set_lr(lrs)  # type: ignore[arg-type]
            steps = None if step_lrs is None else np.asarray(step_lrs).reshape(-1)
            run.advance(int(lengths[0]), policy, grad_norm_steps, steps, step_stats)
            lengths[0] = run.t - start[0]
            losses = run.loss_buf[start[0] : run.t][None]
            gnorms = run.gnorm_buf[start[0] : run.t][None]
            finite = params_finite(run.params).reshape(1)
            if step_stats:
                stats = run.block_step_stats()
        else:
            if policy is not None:
                raise ValueError("a population is stepped at given LRs, not by a policy")
            lr = step_lrs if step_lrs is not None else lrs
            losses, gnorms, stats = self.engine.run_block(
                lr, lengths, grad_norm_steps or max(lengths), step_stats
            )
            losses, gnorms = losses.T, gnorms.T
            finite = self.engine.params_finite()
        # The block's one host read.
        k = losses.shape[1]
        parts = [losses, gnorms.to(losses.dtype), finite[:, None].to(losses.dtype)]
        if stats is not None:
            parts.append(stats.to(losses.dtype))
        host = torch.cat(parts, 1).detach().double().cpu().numpy()
        losses_h, gnorms_h, finite_h = host[:, :k], host[:, k : 2 * k], host[:, 2 * k] > 0.5
        stats_h = host[:, 2 * k + 1 :] if stats is not None else None
        in_block = np.arange(k)[None, :] < lengths[:, None]
        bad_step = in_block & ~(np.isfinite(losses_h) & np.isfinite(gnorms_h))
        # A run that diverged before stays diverged: it is neither validated nor recorded.
        ok = ~bad_step.any(1) & finite_h & (self.diverged_at < 0)
        val = np.full(self.n, math.inf)
        acc = np.full(self.n, math.nan)
        if ok.any():
            val_all, acc_all = self._validate(accuracy)
            val, acc = np.where(ok, val_all, math.inf), np.where(ok, acc_all, math.nan)
        diverged = ~(ok & np.isfinite(val))
        self.t += lengths
        for i in np.flatnonzero(diverged & (self.diverged_at < 0)):
            bad = np.flatnonzero(bad_step[i])
            step = int(bad[0]) if len(bad) else int(lengths[i]) - 1
            self.diverged_at[i] = start[i] + step
        if self.n == 1 and not diverged[0]:
            self.evals.append((int(self.t[0]), float(val[0]), float(acc[0])))
        return Block(lengths, losses_h, gnorms_h, val, acc, diverged, stats_h)

    def _validate(self, accuracy: bool) -> tuple[np.ndarray, np.ndarray]:
        """Every run's validation loss and accuracy (NaN where not asked or not classifying)."""
        if isinstance(self.engine, InnerRun):
            loss, acc = self.engine.evaluate("val", accuracy)
            return np.array([loss]), np.array([acc])
        return self.engine.val_losses().double().cpu().numpy(), np.full(self.n, math.nan)

    # --- history ------------------------------------------------------------------------

    def history(self, wall_time: float, evaluate_test: bool = False) -> History:
        """A single run's `History` so far; with `evaluate_test`, its test-split metrics (the
        only place lrctl reads a test split: the benchmark's final runs)."""
        run = self.run
        at = int(self.diverged_at[0])
        test = None
        if evaluate_test:
            diverged = at >= 0
            test = diverged_metrics(run.task.classification) if diverged else run.evaluate("test")
        return make_history(
            run.loss_buf[: run.t].cpu().numpy(),
            run.gnorm_buf[: run.t].cpu().numpy(),
            np.asarray(run.lrs, dtype=np.float64),
            self.evals,
            at if at >= 0 else None,
            run.task.classification,
            wall_time,
            test,
        )

    def state_dict(self) -> dict:
        """A single run's state to continue it elsewhere: `InnerRun.state_dict` (model,
        optimizer, batch order, per-step record) plus its validations and divergence step
        (tensors, numbers and lists only: loadable with `torch.load(weights_only=True)`)."""
        return {
            **self.run.state_dict(),
            "evals": torch.tensor(self.evals, dtype=torch.float64).reshape(-1, 3),
            "diverged_at": int(self.diverged_at[0]),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a `state_dict()` in this single run (same task, optimizer kind, capacity)."""
        self.run.load_state_dict(state)
        self.t[0] = self.run.t
        self.evals = [tuple(float(v) for v in row) for row in state["evals"]]
        self.diverged_at[0] = int(state["diverged_at"])

    @property
    def diverged(self) -> np.ndarray:
        """[N] bool: the run has diverged (at `diverged_at`)."""
        return self.diverged_at >= 0
