"""The learning-rate range test (Smith 2017, fastai's `lr_find`): where to start the LR.

The LR rises exponentially from `min_lr` to `max_lr`, one optimizer step each, while the
training loss is recorded; the test stops once the loss has clearly diverged. The model and
optimizer are then put back as they were, so training starts from the same point with the
suggested LR.

`find_lr` works on any user loop; `range_test_task` runs it on an lrctl task (the benchmark's
LR tuner calls it); `suggest_lr` is the suggestion rule, a pure function of the recorded curve.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.lr_scheduler import LambdaLR

from lrctl.errors import UsageError
from lrctl.plotting import pyplot, save_png
from lrctl.tasks.base import RunSpec, TaskFamily

MIN_STEPS = 10
"""Fewest steps a range test may take: the suggestion rule needs a burn-in and a window."""
REFERENCE_SPAN = (1e-4, 1e2)
"""`range_test_task` sweeps the family's reference LR × 1e-4 .. × 1e2 (six decades)."""
MIN_DROP = math.log(1.1)
"""The descent the rule must see to trust it: the loss falls by 10% or more (in log-loss)."""
UNSTABLE_FACTOR = 2.0
"""A loss this many times the lowest window level before it marks the onset of instability."""


def burn_in(steps: int) -> int:
    """Points the rule and the divergence check skip at the start: 10% of the test, at least 2.

    The first minibatches of a fresh model can spike; after the burn-in they no longer count.
    """
    return max(2, math.ceil(0.1 * steps))


def window_size(steps: int) -> int:
    """Points in each least-squares slope window: 10% of the test, at least 5."""
    return max(5, round(0.1 * steps))


def exponential_lr(step: int, min_lr: float, max_lr: float, steps: int) -> float:
    """The range test's LR at `step` (0-based): min_lr at 0, max_lr at steps - 1, a constant
    ratio between neighbours."""
    return min_lr * (max_lr / min_lr) ** (step / (steps - 1))


def _check_steps(steps: int) -> None:
    if steps < MIN_STEPS:
        raise UsageError(
            f"steps must be at least {MIN_STEPS} (the suggestion needs a burn-in and a slope "
            f"window), got {steps}; 100 is usual"
        )


def _check_settings(
    min_lr: float, max_lr: float, steps: int, smoothing: float, factor: float
) -> None:
    if not 0 < min_lr < max_lr or not math.isfinite(max_lr):
        raise UsageError(f"need 0 < min_lr < max_lr (finite), got {min_lr:g} .. {max_lr:g}")
    _check_steps(steps)
    if not 0 < smoothing <= 1:
        raise UsageError(f"smoothing must be in (0, 1], got {smoothing:g}")
    if not factor > 1:
        raise UsageError(f"diverge_factor must be above 1, got {factor:g}")


def _window_fits(x: np.ndarray, y: np.ndarray, w: int) -> tuple[np.ndarray, ...]:
    """Least-squares lines of y on x over every run of `w` consecutive points: each window's
    centre (mean x), level (mean y) and slope."""
    xw = np.lib.stride_tricks.sliding_window_view(x, w)
    yw = np.lib.stride_tricks.sliding_window_view(y, w)
    centres, levels = xw.mean(1), yw.mean(1)
    dx = xw - centres[:, None]
    slopes = (dx * (yw - levels[:, None])).sum(1) / (dx * dx).sum(1)
    return centres, levels, slopes


def _first_jump(y: np.ndarray, levels: np.ndarray, w: int) -> int:
    """Index of the first log-loss more than log(UNSTABLE_FACTOR) above the lowest level of
    the windows wholly before it; len(y) when there is none."""
    lowest_before = np.minimum.accumulate(levels)[: len(y) - w]  # [i - w] serves point i
    jumps = np.flatnonzero(y[w:] > lowest_before + math.log(UNSTABLE_FACTOR))
    return w + int(jumps[0]) if len(jumps) else len(y)


def suggest_lr(
    lrs: np.ndarray, losses: np.ndarray, burn: int | None = None, window: int | None = None
) -> tuple[float, str]:
    """The suggested LR of a recorded range test, and the rule that chose it.

    Rule (steepest descent before instability):

    1. Points: after the burn-in (`burn_in`: 10% of the test, so an early spike never
       counts) and before the first non-finite loss.
    2. Windows: every run of `window_size` points (10% of the test) gets a least-squares
       line of log-loss against log-LR: its slope says how fast the loss falls there, its
       level (mean log-loss) how low it is.
    3. Instability: the points end at the first loss above twice the lowest window level
       before it (`UNSTABLE_FACTOR`): past there the LR makes the loss jump about, and a
       window that starts on a jump looks steep without the LR being good.
    4. Suggestion: of the windows wholly before that point and not after the lowest one,
       the steepest; its centre LR is inside the descent, below the LR of the minimum.
       Used when the loss fell on the way by 10% or more (`MIN_DROP`).

    Fallback (no descent: a loss that only rises or stays flat): the centre LR of the
    lowest window / 10 (fastai's "minimum / 10"), kept inside the LRs tested. A flat curve
    means the range held no useful LR; a rising one that even the smallest was too large.

    Why raw losses and not their moving average: the EMA lags by β/(1-β) points (19 at the
    default smoothing: over a decade of LR when 100 steps span six decades), which would push
    the steepest point to larger LRs, and an early spike lives on in it for dozens of points.
    A window fit is centred (no lag) and averages minibatch noise, which point-to-point
    differences do not. Losses must not be negative (they are compared as ratios).
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    n = len(lrs)
    burn = burn_in(n) if burn is None else burn
    bad = np.flatnonzero(~np.isfinite(losses))
    end = int(bad[0]) if len(bad) else n
    if (losses[:end] < 0).any():
        raise UsageError(
            "the range test compares losses as ratios, so they must not be negative; "
            f"got {losses[:end].min():.3g} (shift the loss by a constant)"
        )
    usable = end - burn
    if usable < 3:
        return float(lrs[0]), (
            f"too few usable points ({max(usable, 0)} after a {burn}-point burn-in before the "
            "loss went non-finite): the smallest LR tested; lower min_lr"
        )
    w = min(window_size(n) if window is None else window, usable)
    x = np.log(lrs[burn:end])
    y = np.log(np.maximum(losses[burn:end], 1e-30))
    centres, levels, slopes = _window_fits(x, y, w)
    jump = _first_jump(y, levels, w)
    kept = max(1, jump - w + 1)  # windows wholly before the jump
    lowest = int(np.argmin(levels[:kept]))
    steepest = int(np.argmin(slopes[: lowest + 1]))
    drop = levels[: lowest + 1].max() - levels[lowest]
    lr_low = math.exp(centres[lowest])
    if slopes[steepest] < 0 and drop >= MIN_DROP:
        unstable = f", first jump at {lrs[burn + jump]:.3g}" if jump < len(y) else ""
        return math.exp(centres[steepest]), (
            f"steepest descent: least-squares slope of log-loss over log-LR in {w}-point "
            f"windows after a {burn}-point burn-in is steepest ({slopes[steepest]:.2f}) in the "
            f"window centred on the suggestion; loss minimum at {lr_low:.3g}{unstable}"
        )
    suggestion = float(np.clip(lr_low / 10, lrs[0], lrs[end - 1]))
    return suggestion, (
        f"fallback, no descent of 10% or more: LR of the lowest {w}-point window "
        f"({lr_low:.3g}) / 10, kept inside the LRs tested; widen the range"
    )


@dataclass
class RangeTestResult:
    """What a range test recorded and suggests.

    `lrs[i]` is the LR of optimizer step i and `losses[i]` the training loss that step's
    gradient came from; `smoothed` is their bias-corrected exponential moving average.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    rule: str
    """How `suggestion` was chosen (see `suggest_lr`)."""
    steps: int
    """Optimizer steps actually taken (the inner-step budget the test used)."""
    stopped_early: bool
    """True when the loss diverged before max_lr was reached."""
    stop_reason: str = ""
    """Where and why the test ended, in words."""

    def to_frame(self) -> pd.DataFrame:
        """One row per step: step, lr, loss, smoothed."""
        return pd.DataFrame(
            {
                "step": np.arange(self.steps),
                "lr": self.lrs,
                "loss": self.losses,
                "smoothed": self.smoothed,
            }
        )

    def plot(self, path: str | Path, reference_lr: float | None = None, title: str = "") -> Path:
        """Write a PNG of raw and smoothed loss against LR (log axis), the suggestion marked
        (and `reference_lr` if given). Written atomically: a temp file, then a rename."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7.0, 4.5))
        raw = np.where(np.isfinite(self.losses), self.losses, np.nan)
        smooth = np.where(np.isfinite(self.smoothed), self.smoothed, np.nan)
        ax.plot(self.lrs, raw, color="0.6", lw=0.8, label="training loss")
        ax.plot(self.lrs, smooth, color="tab:blue", lw=2.0, label="smoothed (EMA)")
        ax.axvline(self.suggestion, color="crimson", ls="--", lw=1.5,
                   label=f"suggestion {self.suggestion:.3g}")  # fmt: skip
        if reference_lr is not None:
            ax.axvline(reference_lr, color="black", ls=":", lw=1.2,
                       label=f"reference LR {reference_lr:.3g}")  # fmt: skip
        values = np.concatenate([raw, smooth])
        values = values[np.isfinite(values)]
        if len(values) and (values > 0).all():
            ax.set_yscale("log")
            top = np.nanmax(smooth) if np.isfinite(smooth).any() else values.max()
            ax.set_ylim(values.min() * 0.8, min(values.max(), top * 1.25) * 1.05)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(title or f"LR range test ({self.steps} steps)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return save_png(fig, Path(path))


def find_lr(
    optimizer: torch.optim.Optimizer,
    train_step: Callable[[], torch.Tensor | float],
    *,
    model: torch.nn.Module | None = None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.05,
    diverge_factor: float = 4.0,
) -> RangeTestResult:
    """Run the LR range test on a user's loop and restore its state afterwards.

    Contract: `train_step()` draws a minibatch, runs forward and `loss.backward()`, and
    returns the loss (a 0-d tensor or a number). `find_lr` zeroes the gradients before each
    call and calls `optimizer.step()` after it, so `train_step` must do neither.

    Every param group's LR follows `exponential_lr` from `min_lr` to `max_lr` over `steps`
    steps, set by torch's `LambdaLR` with that closed form (`ExponentialLR` multiplies the LR
    step by step, so rounding drifts it away from max_lr). `smoothing` is the weight of the
    newest loss in the bias-corrected moving average (1 - β). The test stops early at a
    non-finite loss, or once, after the burn-in, both the smoothed and the raw loss exceed
    `diverge_factor` × the best smoothed loss (the raw condition keeps an early spike that
    still lingers in the average from ending the test).

    Afterwards parameters, gradients, the optimizer's state and LRs, and (if `model` is
    given) the model's buffers are as before: pass `model` when it has buffers such as
    BatchNorm statistics. The loss is read once per step (a host sync on a GPU).
    """
    _check_settings(min_lr, max_lr, steps, smoothing, diverge_factor)
    beta = 1.0 - smoothing
    burn = burn_in(steps)
    saved = _Snapshot(optimizer, model)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stop_reason, stopped_early = f"reached max_lr {max_lr:.3g}", True
    try:
        for group in optimizer.param_groups:  # LambdaLR scales each group's initial_lr
            group["lr"] = group["initial_lr"] = min_lr
        schedule = LambdaLR(
            optimizer, lambda i: exponential_lr(min(i, steps - 1), 1.0, max_lr / min_lr, steps)
        )
        avg, best = 0.0, math.inf
        for i in range(steps):
            optimizer.zero_grad(set_to_none=True)
            out = train_step()
            if out is None:
                raise TypeError("train_step must return the loss (a 0-d tensor or a number)")
            loss = float(out.detach() if isinstance(out, torch.Tensor) else out)
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            schedule.step()
            avg = beta * avg + smoothing * loss
            smooth = avg / (1.0 - beta ** (i + 1))
            losses.append(loss)
            smoothed.append(smooth)
            if not math.isfinite(smooth):
                stop_reason = f"stopped early at lr {lrs[-1]:.3g}: the loss is not finite"
                break
            if i >= burn and min(smooth, loss) > diverge_factor * best:
                stop_reason = (
                    f"stopped early at lr {lrs[-1]:.3g}: smoothed loss {smooth:.3g} > "
                    f"{diverge_factor:g} × its best {best:.3g}"
                )
                break
            best = min(best, smooth)
        else:
            stopped_early = False
    finally:
        saved.restore()
    suggestion, rule = suggest_lr(np.asarray(lrs), np.asarray(losses), burn)
    return RangeTestResult(
        lrs=np.asarray(lrs, dtype=np.float64),
        losses=np.asarray(losses, dtype=np.float64),
        smoothed=np.asarray(smoothed, dtype=np.float64),
        suggestion=suggestion,
        rule=rule,
        steps=len(lrs),
        stopped_early=stopped_early,
        stop_reason=stop_reason,
    )


class _Snapshot:
    """Copies of what a range test changes, put back by `restore()`."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> None:
        self.optimizer = optimizer
        self.model = model
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.values = [p.detach().clone() for p in self.params]
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        self.opt_state = copy.deepcopy(optimizer.state_dict())  # its tensors alias the live ones
        self.model_state = None if model is None else copy.deepcopy(model.state_dict())

    @torch.no_grad()
    def restore(self) -> None:
        if self.model is not None:
            self.model.load_state_dict(self.model_state)
        for p, value, grad in zip(self.params, self.values, self.grads, strict=True):
            p.copy_(value)
            p.grad = grad
        # Replaces the state and the param groups (LRs, and the initial_lr LambdaLR added).
        self.optimizer.load_state_dict(self.opt_state)


def range_test_task(
    family: TaskFamily, spec: RunSpec, optimizer: str, seed: int, steps: int = 100
) -> RangeTestResult:
    """Range-test one lrctl task: the model and batch order under `seed` exactly as
    `lrctl.training.train` makes them, `optimizer` from `lrctl.optimizers`, the TRAIN split only
    (validation and test data are never read), LRs from the family's reference LR for that
    optimizer × 1e-4 up to × 1e2 (`REFERENCE_SPAN`). `result.steps` is the inner-step budget
    the test used."""
    from lrctl.inner_run import InnerRun

    _check_steps(steps)  # before building the task
    task = family.build(spec)
    # InnerRun checks the optimizer name; find_lr replaces the LR it starts with.
    run = InnerRun(task, optimizer, spec.base_lr, capacity=steps, seed=seed)
    reference = family.reference_lr(optimizer)
    lo, hi = (reference * f for f in REFERENCE_SPAN)

    def train_step() -> torch.Tensor:
        x, y = run.batches.next()
        loss = task.loss_fn(run.model(x), y)
        loss.backward()
        return loss.detach()

    return find_lr(run.optimizer, train_step, model=run.model, min_lr=lo, max_lr=hi, steps=steps)
