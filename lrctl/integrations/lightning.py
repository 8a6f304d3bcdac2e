"""`LRControllerCallback`: the learned controller in a Lightning `Trainer`, as one callback.

    trainer = pl.Trainer(max_epochs=3, callbacks=[LRControllerCallback()])
    trainer.fit(model, data)        # configure_optimizers: the optimizer (and a scheduler, optional)

What it does, with nothing else changed in the LightningModule or the Trainer:

- **Optimizer and horizon.** At `on_fit_start` it takes the module's one optimizer
  (`trainer.optimizers`) and the number of optimizer steps the fit will take
  (`trainer.estimated_stepping_batches`, which accounts for `accumulate_grad_batches`, several
  devices and `max_steps`) and builds an `LRController` on them.
- **Loss.** Each optimizer step's loss is the loss `training_step` returned (a tensor, or the
  "loss" of a dict): under `accumulate_grad_batches` the mean over the step's micro-batches.
  Lightning hands `on_train_batch_end` that loss divided by `accumulate_grad_batches`, so the
  callback sums those and rescales a shorter last window of an epoch. The sum stays a tensor
  on the device: no host sync per step.
- **Steps.** The controller is stepped only on batches that end an accumulation window
  (`on_before_optimizer_step` fired during the batch); a step that a GradScaler then skipped
  (16-bit AMP) is left out by the controller itself (no optimizer step ran).
- **Logging.** The LR of every param group is logged at the start of every training batch,
  under LearningRateMonitor's names (`lr-SGD`, `lr-AdamW/pg1`, ..., or the group's "name"),
  through `LightningModule.log`: it reaches the Trainer's loggers every `log_every_n_steps` and
  `trainer.callback_metrics`.
- **Checkpoints.** `state_dict` / `load_state_dict` carry the controller's state (and an
  unfinished accumulation window) in Lightning checkpoints: `trainer.fit(..., ckpt_path=...)`
  continues the identical LR trajectory.
- **Several devices.** Under DDP or FSDP every rank's controller combines its block with the
  other ranks' (`lrctl.distributed`), so all ranks write the same LR.

- **The module's own scheduler.** If `configure_optimizers` also returns an LR scheduler
  stepped every optimizer step (`{"scheduler": s, "interval": "step"}`), it becomes the
  controller's base schedule (`LRController(..., base=s)`: the controller's LR is a bounded
  factor around it) and the controller steps it from then on, in place of Lightning; its state
  travels in the callback's checkpoint state. Without one, the base schedule is cosine from the
  optimizer's LR over the fit.

A module with a scheduler stepped per epoch (or every n > 1 steps), several schedulers or
optimizers, manual optimization, or a controller file that cannot take a base schedule, gets a
`MisconfigurationException` that says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lrctl.controller import LRController
from lrctl.controller_file import ControllerWeights, controller_weights
from lrctl.errors import UsageError


def lr_log_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """LearningRateMonitor's metric name for each param group of one optimizer without a
    scheduler: `lr-<Optimizer>`, with `/<group name>` or `/pg<i>` when there are several groups
    (or the group has a "name")."""
    base = f"lr-{type(optimizer).__name__}"
    groups = optimizer.param_groups
    if len(groups) == 1:
        name = groups[0].get("name")
        return [f"{base}/{name}" if name else base]
    return [f"{base}/{g.get('name', f'pg{i + 1}')}" for i, g in enumerate(groups)]


class LRControllerCallback(pl.Callback):
    """The learned LR controller as a Lightning callback (see the module's docstring).

    Args:
        controller: a controller file, loaded weights, or None for the shipped default.
        total_steps: optimizer steps of the fit; None (default): the Trainer's
            `estimated_stepping_batches`.
        hold, per_group, process_group: as for `LRController`.
        log_lr: log every param group's LR at each training batch (LearningRateMonitor's
            names).
    """

    def __init__(
        self,
        controller: str | Path | ControllerWeights | None = None,
        *,
        total_steps: int | None = None,
        hold: int = 3,
        per_group: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
        log_lr: bool = True,
    ) -> None:
        self._source = controller
        self._total_steps = total_steps
        self._kwargs = {"hold": hold, "per_group": per_group, "process_group": process_group}
        self.log_lr = log_lr
        self.controller: LRController | None = None
        self._pending: dict[str, Any] | None = None  # a state loaded before the fit started
        self._loss_sum: torch.Tensor | None = None  # this window's losses / accumulate
        self._micro_batches = 0
        self._window_end = False
        self._names: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # a new fit, also with this callback reused: a new controller
            self.controller, self._pending = None, None
            self._loss_sum, self._micro_batches = None, 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise MisconfigurationException(
                "LRControllerCallback needs automatic optimization; with manual optimization, "
                "create an lrctl.LRController in the module and call sched.step(loss) after each "
                "optimizer step"
            )
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException(
                f"LRControllerCallback controls one optimizer, configure_optimizers returned "
                f"{len(trainer.optimizers)}; use one optimizer (with param groups if needed)"
            )
        optimizer = trainer.optimizers[0]
        base = _base_schedule(trainer)
        total = self._total_steps
        if total is None:
            estimated = trainer.estimated_stepping_batches
            if not (isinstance(estimated, int) or float(estimated).is_integer()):
                raise MisconfigurationException(
                    "LRControllerCallback needs a finite number of optimizer steps: set "
                    "max_steps or max_epochs on the Trainer, or pass total_steps="
                )
            total = int(estimated)
        weights = controller_weights(self._source)
        if base is not None and not weights.action_spec.anchored:
            raise MisconfigurationException(
                f"LRControllerCallback would make the module's LR scheduler "
                f"({type(base).__name__}) its base schedule, but this controller file uses "
                f"recursive actions (it moves the LR itself, around no schedule). Return only the "
                f"optimizer from configure_optimizers, or use an anchored controller file (the "
                f"shipped default is one; `lrctl info FILE` says which)"
            )
        try:
            self.controller = LRController(
                optimizer, max(total, 1), weights, base=base, **self._kwargs
            )
        except UsageError as exc:  # e.g. base= on another optimizer, a plateau scheduler
            raise MisconfigurationException(f"LRControllerCallback: {exc}") from None
        if base is not None:
            # The controller steps the scheduler once per optimizer step from now on; left in
            # the Trainer's configs, Lightning would step it a second time.
            trainer.strategy.lr_scheduler_configs = []
        self._names = lr_log_names(optimizer)
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._window_end = False
        if self.log_lr and self.controller is not None:
            lrs = self.controller.get_last_lr()
            stats = dict(zip(self._names, lrs, strict=True))
            pl_module.log_dict(stats, on_step=True, on_epoch=False, batch_size=1)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._window_end = True  # this batch ends an accumulation window

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._micro_batches += 1
        if not self._window_end:
            return
        if self._loss_sum is not None and self.controller is not None:
            step_loss = self._loss_sum  # the mean over the window, if it had all its batches
            accumulate = trainer.accumulate_grad_batches
            if self._micro_batches != accumulate:
                step_loss = step_loss * (accumulate / self._micro_batches)
            self.controller.step(step_loss)
        self._loss_sum, self._micro_batches = None, 0

    def state_dict(self) -> dict[str, Any]:
        if self.controller is None:
            return dict(self._pending or {})
        # With the module's scheduler as base=, the controller's state carries it (Lightning
        # no longer steps or saves it).
        state: dict[str, Any] = {"controller": self.controller.state_dict()}
        if self._loss_sum is not None:  # a checkpoint inside an accumulation window
            state["loss_sum"] = self._loss_sum.detach().cpu()
            state["micro_batches"] = self._micro_batches
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.controller is None:  # restored before on_fit_start (most strategies)
            self._pending = dict(state_dict)
        else:
            self._restore(state_dict)

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.controller is not None
        controller_state = dict(state.get("controller", {}))
        if "base_schedule" in state:  # files written before the controller's state carried it
            controller_state["base_schedule"] = state["base_schedule"]
        base_state = controller_state.get("base_schedule")
        if controller_state and (base_state is None) != (self.controller.base is None):
            raise MisconfigurationException(
                "LRControllerCallback: the checkpoint was saved "
                + ("with" if base_state is not None else "without")
                + " an LR scheduler from configure_optimizers and this module returns "
                + ("none" if base_state is not None else "one")
                + "; resume with the configure_optimizers the checkpoint was trained with"
            )
        if controller_state:
            self.controller.load_state_dict(controller_state)
        loss_sum = state.get("loss_sum")
        self._loss_sum = None if loss_sum is None else loss_sum.to(self.controller.device)
        self._micro_batches = int(state.get("micro_batches", 0))


def _base_schedule(trainer: pl.Trainer) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The LR scheduler `configure_optimizers` returned, to become the controller's base
    schedule; None without one. The controller re-anchors its LR every optimizer step, so the
    scheduler must be one Lightning would step every optimizer step too."""
    configs = trainer.lr_scheduler_configs
    if not configs:
        return None
    names = ", ".join(type(c.scheduler).__name__ for c in configs)
    if len(configs) > 1:
        raise MisconfigurationException(
            f"LRControllerCallback anchors the LR around one schedule, but configure_optimizers "
            f"returned {len(configs)} LR schedulers ({names}); return at most one (or chain "
            f"them into one with torch.optim.lr_scheduler.SequentialLR)"
        )
    config = configs[0]
    if config.interval != "step" or config.frequency != 1:
        every = (
            config.interval if config.frequency == 1 else f"{config.frequency} {config.interval}s"
        )
        raise MisconfigurationException(
            f"LRControllerCallback makes the module's LR scheduler ({names}) its base schedule "
            f"and steps it once per optimizer step, but configure_optimizers has Lightning step "
            f"it every {every}. Return it as "
            f'{{"optimizer": opt, "lr_scheduler": {{"scheduler": s, "interval": "step"}}}} '
            f"with its length in optimizer steps, or return only the optimizer (the base "
            f"schedule is then cosine from the optimizer's LR)"
        )
    return config.scheduler
