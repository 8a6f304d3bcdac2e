"""`train()`: one whole inner run under an LR policy, with its history (baselines, the bench).

A thin driver of `lrctl.runs.Runs`: blocks of `val_every` steps, each read, checked, validated
and recorded by the core; `ReduceLROnPlateau` is stepped here with each validation loss.
"""

from __future__ import annotations

import time

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lrctl.errors import UsageError
from lrctl.param_groups import ParamGrouping
from lrctl.runs import History, Runs
from lrctl.tasks.base import Task

__all__ = ["History", "train"]


def train(
    task: Task,
    optimizer: str,
    lr: float,
    steps: int,
    seed: int,
    policy_fn: object | None = None,
    val_every: int = 50,
    device: torch.device | str = "cpu",
    evaluate_test: bool = False,
    param_groups: ParamGrouping = "single",
) -> History:
    """Train `task` for `steps` steps and record its history.

    `policy_fn(optimizer) -> policy` builds the LR policy on the run's optimizer: a torch
    scheduler (stepped each step; ReduceLROnPlateau is stepped with the validation loss), or
    a loss-driven policy such as `LRController` (stepped with the training loss). `None` keeps
    the LR constant. The test split is only read when `evaluate_test` is set (benchmark only).
    `param_groups="layer"`: one optimizer param group per layer (the `lr` column is group 0's).
    """
    if steps <= 0:
        raise UsageError(f"steps must be positive, got {steps}")
    if val_every <= 0:
        raise UsageError(f"val_every must be positive, got {val_every}")
    start_time = time.perf_counter()
    runs = Runs.single(task, optimizer, lr, steps, seed, device, param_groups)
    policy = policy_fn(runs.run.optimizer) if callable(policy_fn) else None
    runs.validate_start()
    while runs.t[0] < steps:
        block = runs.run_block(val_every, policy=policy, accuracy=True)
        if block.diverged[0]:
            break
        if isinstance(policy, ReduceLROnPlateau):
            policy.step(float(block.val_loss[0]))
    return runs.history(time.perf_counter() - start_time, evaluate_test)
