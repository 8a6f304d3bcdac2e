"""The learned controller as a Hugging Face `Trainer`'s LR scheduler, without subclassing it.

    trainer = Trainer(model=model, args=args, train_dataset=train_set)
    attach_controller(trainer)            # before trainer.train()
    trainer.train()

`attach_controller` makes an `LRControllerScheduler` the Trainer's `lr_scheduler` and one of its
callbacks. How it plugs into the Trainer's loop:

- **Scheduler.** The Trainer steps its scheduler once per optimizer step, after
  `optimizer.step()`, and not for a step an AMP GradScaler skipped; it logs
  `lr_scheduler.get_last_lr()[0]` as `learning_rate` and saves `state_dict()` as
  `scheduler.pt` in every checkpoint (loaded with `torch.load(weights_only=True)`, which
  `LRController.state_dict` supports), so `trainer.train(resume_from_checkpoint=...)`
  continues the identical LR trajectory. The `LRController` is built on the Trainer's
  optimizer (the torch optimizer inside Accelerate's wrapper) when training starts (or when a
  checkpoint's state is loaded), for `state.max_steps` optimizer steps.
- **Base schedule.** An anchored controller sets the LR as a bounded factor around a base
  schedule: by default (`base="cosine"`) cosine from `learning_rate` to 0, and the Trainer's
  `lr_scheduler_type` and warm-up settings no longer apply; with `base="trainer"` the schedule
  the Trainer would have built from its arguments (`lr_scheduler_type`, its warm-up,
  `lr_scheduler_kwargs`: `transformers.get_scheduler`), which the controller steps and saves
  with its own state.
- **Loss.** `trainer.training_step` (on this Trainer instance only) is wrapped to add up the
  loss it returns for each micro-batch; the callback clears the sum at each step's start
  (`on_step_begin`). That sum is the step's loss as the Trainer itself logs it (the mean over
  the accumulated micro-batches: the Trainer divides each by `gradient_accumulation_steps`, or
  the model normalises by the step's token count), kept as a tensor on the device (no host
  sync per step). Unlike the Trainer's logged loss (`logging_nan_inf_filter`), a NaN or inf
  loss reaches the controller, which cuts the LR.
- **Several processes.** Under DDP or FSDP each rank's controller combines its block with the
  others' (`lrctl.distributed`): every rank writes the same LR.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, get_scheduler

from lrctl.controller import LRController
from lrctl.controller_file import ControllerWeights

BASES = ("cosine", "trainer")
"""What `attach_controller(..., base=)` takes: the schedule an anchored controller works around."""


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's (or any) `.optimizer` wrapper."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class LRControllerScheduler(TrainerCallback):
    """An `LRController` with the interface a `Trainer` expects of its LR scheduler (`step()`,
    `get_last_lr()`, `state_dict()`, `load_state_dict()`), fed each optimizer step's training
    loss. Create it with `attach_controller`."""

    def __init__(
        self,
        trainer: Trainer,
        controller: str | Path | ControllerWeights | None = None,
        *,
        total_steps: int | None = None,
        hold: int = 3,
        per_group: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
        base: str = "cosine",
    ) -> None:
        if base not in BASES:
            raise ValueError(
                f"base must be one of {', '.join(map(repr, BASES))}, got {base!r}: 'cosine' "
                f"(from learning_rate to 0) or 'trainer' (the Trainer's lr_scheduler_type and "
                f"warm-up)"
            )
        scheduler_type = getattr(trainer.args.lr_scheduler_type, "value", None)
        if base == "trainer" and scheduler_type == "reduce_lr_on_plateau":
            raise ValueError(
                "base='trainer' needs a schedule of the step, and lr_scheduler_type is "
                "reduce_lr_on_plateau (it follows a metric); set lr_scheduler_type to e.g. "
                "'cosine' or 'linear', or use base='cosine'"
            )
        self.trainer = trainer
        self.base = base
        self._source = controller
        self._total_steps = total_steps
        self._kwargs = {"hold": hold, "per_group": per_group, "process_group": process_group}
        self.controller: LRController | None = None
        self._loss_sum: torch.Tensor | None = None  # this optimizer step's micro-batch losses

    def _ensure(self, total_steps: int | None = None) -> LRController:
        if self.controller is None:
            if self.trainer.optimizer is None:
                raise RuntimeError(
                    "the Trainer has no optimizer yet: the LR controller is built when "
                    "trainer.train() starts; call attach_controller(trainer) before train()"
                )
            total = int(total_steps or self._total_steps or self.trainer.state.max_steps)
            optimizer = _torch_optimizer(self.trainer.optimizer)
            base = None
            if self.base == "trainer":
                args = self.trainer.args
                base = get_scheduler(
                    args.lr_scheduler_type,
                    optimizer=optimizer,
                    num_warmup_steps=args.get_warmup_steps(total),
                    num_training_steps=total,
                    scheduler_specific_kwargs=args.lr_scheduler_kwargs,
                )
            self.controller = LRController(
                optimizer, total, self._source, base=base, **self._kwargs
            )
        return self.controller

    def add_loss(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss, as `Trainer.training_step` returns it."""
        loss = loss.detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss

    # --- the LR scheduler interface -----------------------------------------------------------

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._ensure().optimizer

    def step(self) -> None:
        """Called by the Trainer after each optimizer step that was not skipped."""
        if self._loss_sum is None:
            raise RuntimeError(
                "LRControllerScheduler.step() was called without a training loss: create it "
                "with attach_controller(trainer), which feeds it trainer.training_step's losses"
            )
        self._ensure().step(self._loss_sum)
        self._loss_sum = None

    def get_last_lr(self) -> list[float]:
        return self._ensure().get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        # base="trainer": the controller's state carries the schedule it steps.
        return self._ensure().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        base_state = state_dict.get("base_schedule")
        if (base_state is not None) != (self.base == "trainer"):
            raise ValueError(
                f"this checkpoint's LR controller was attached with "
                f"base={'trainer' if base_state is not None else 'cosine'!r} and this one with "
                f"base={self.base!r}; resume with the base it was trained with"
            )
        self._ensure(int(state_dict["total_steps"])).load_state_dict(state_dict)

    # --- the callback ------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._ensure()

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self._loss_sum = None  # also drops the losses of a step a GradScaler skipped


def attach_controller(
    trainer: Trainer,
    controller: str | Path | ControllerWeights | None = None,
    **kwargs: Any,
) -> LRControllerScheduler:
    """Make the learned controller `trainer`'s LR scheduler (call it before `trainer.train()`).

    Args:
        trainer: a `transformers.Trainer` created without an LR scheduler.
        controller: a controller file, loaded weights, or None for the shipped default.
        **kwargs: `total_steps` (default: the Trainer's `max_steps`), `hold`, `per_group`,
            `process_group`, as for `LRController`; `base`: "cosine" (default: cosine from
            the Trainer's `learning_rate` to 0) or "trainer" (the schedule the Trainer's
            arguments describe, warm-up included), the schedule the controller works around.
    """
    if trainer.lr_scheduler is not None:
        raise ValueError(
            f"this Trainer already has an LR scheduler ({type(trainer.lr_scheduler).__name__}, "
            f"passed as optimizers=(optimizer, scheduler)); the controller would be a second one. "
            f"Create the Trainer with optimizers=(optimizer, None) or without `optimizers`"
        )
    sched = LRControllerScheduler(trainer, controller, **kwargs)
    args = trainer.args
    if sched.base != "trainer" and (args.warmup_steps or getattr(args, "warmup_ratio", 0)):
        warnings.warn(
            "the Trainer's warm-up settings are ignored: the LR controller works around cosine "
            "from the first step; attach_controller(trainer, base='trainer') keeps the "
            "Trainer's schedule and warm-up as its base",
            UserWarning,
            stacklevel=2,
        )
    trainer.lr_scheduler = sched
    trainer.add_callback(sched)
    training_step = trainer.training_step

    def training_step_feeding_the_controller(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = training_step(*args, **kwargs)
        sched.add_loss(loss)
        return loss

    trainer.training_step = training_step_feeding_the_controller
    return sched
