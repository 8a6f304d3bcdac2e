"""lrctl.integrations.transformers: the controller as a Hugging Face Trainer's LR scheduler
(CPU, a tiny model defined here, in-memory data, nothing downloaded)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from lrctl.actions import ActionSpec  # noqa: E402
from lrctl.integrations.transformers import attach_controller  # noqa: E402
from tests.helpers import random_policy  # noqa: E402
from tests.readme import readme_snippet  # noqa: E402
from tests.test_distributed import record_blocks  # noqa: E402

SPEC = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.1, 10.0), grad_norm_steps=2)
WEIGHTS = random_policy(9, SPEC)
ANCHORED = random_policy(
    9, ActionSpec(interval=4, mode="anchored", residual=0.5, grad_norm_steps=2)
)


class Regression(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


def dataset(n: int = 64) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0]]) + 0.1 * torch.randn(
        n, 1, generator=g
    )
    return [{"x": xi, "labels": yi} for xi, yi in zip(x, y, strict=True)]


def arguments(out, **kwargs) -> TrainingArguments:
    options = {
        "max_steps": 16,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 0.02,
        "optim": "sgd",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        **kwargs,
    }
    return TrainingArguments(str(out), **options)


class Spy(TrainerCallback):
    """The LR in force for each optimizer step; stops training after `stop_at` steps."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.lrs: list[float] = []
        self.stop_at = stop_at

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self.lrs.append(lr_scheduler.get_last_lr()[0])

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_training_stop = True


def logged(trainer: Trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h and "train_runtime" not in h]


def test_transformers_trainer_logs_the_controllers_lr_and_feeds_it_each_steps_loss(tmp_path):
    spy = Spy()
    trainer = Trainer(
        model=Regression(), args=arguments(tmp_path), train_dataset=dataset(), callbacks=[spy]
    )
    sched = attach_controller(trainer, WEIGHTS)
    assert trainer.lr_scheduler is sched
    blocks: list = []
    original = sched._ensure

    def ensure(total_steps=None):
        first = sched.controller is None
        ctrl = original(total_steps)
        if first:
            blocks.append(record_blocks(ctrl))
        return ctrl

    sched._ensure = ensure
    trainer.train()
    ctrl = sched.controller
    assert ctrl.total_steps == 16 and ctrl.state_dict()["t"] == 16
    assert len(spy.lrs) == 16 and len(set(spy.lrs)) > 2
    # the Trainer's `learning_rate` at each step is the controller's LR for that step
    assert logged(trainer, "learning_rate") == spy.lrs
    assert ctrl.get_last_lr() == sched.get_last_lr()
    assert trainer.optimizer.param_groups[0]["lr"] == sched.get_last_lr()[0]
    # the loss of each step (mean over 2 micro-batches) is the one the Trainer logs
    seen = np.concatenate([b[0] for b in blocks[0]])
    np.testing.assert_allclose(seen, logged(trainer, "loss"), rtol=1e-6)


def test_transformers_resume_from_checkpoint_continues_the_identical_trajectory(tmp_path):
    straight = Spy()
    trainer = Trainer(
        model=Regression(),
        args=arguments(tmp_path / "a"),
        train_dataset=dataset(),
        callbacks=[straight],
    )
    attach_controller(trainer, WEIGHTS)
    trainer.train()

    first = Spy(stop_at=8)
    args = arguments(tmp_path / "b", save_strategy="steps", save_steps=8)
    trainer = Trainer(model=Regression(), args=args, train_dataset=dataset(), callbacks=[first])
    attach_controller(trainer, WEIGHTS)
    trainer.train()
    checkpoint = tmp_path / "b" / "checkpoint-8"
    assert (checkpoint / "scheduler.pt").exists()
    state = torch.load(checkpoint / "scheduler.pt", weights_only=True)
    assert state["t"] == 8 and state["total_steps"] == 16

    resumed = Spy()
    trainer = Trainer(model=Regression(), args=args, train_dataset=dataset(), callbacks=[resumed])
    sched = attach_controller(trainer, WEIGHTS)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert len(straight.lrs) == 16 and len(set(straight.lrs)) > 2
    assert first.lrs + resumed.lrs == straight.lrs
    assert sched.controller.state_dict()["t"] == 16


def test_transformers_trainer_with_its_own_scheduler_gets_a_clear_error(tmp_path):
    model = Regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=dataset(),
                      optimizers=(opt, sched))  # fmt: skip
    with pytest.raises(ValueError, match=r"already has an LR scheduler \(StepLR.*optimizer, None"):
        attach_controller(trainer)


def test_transformers_base_trainer_works_around_the_trainers_own_schedule(tmp_path):
    """base="trainer": the LR is a bounded factor around the schedule the arguments describe
    (here a 4-step warm-up, then cosine), which the controller steps once per step."""
    spy = Spy()
    args = arguments(tmp_path, lr_scheduler_type="cosine", warmup_steps=4)
    trainer = Trainer(model=Regression(), args=args, train_dataset=dataset(), callbacks=[spy])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "warm-up ignored" warning with base="trainer"
        sched = attach_controller(trainer, ANCHORED, base="trainer")
    trainer.train()
    base = sched.controller.base
    assert isinstance(base, torch.optim.lr_scheduler.LambdaLR) and base.last_epoch == 16
    warm_cosine = [
        0.02 * (t / 4 if t < 4 else 0.5 * (1 + math.cos(math.pi * (t - 4) / 12))) for t in range(16)
    ]
    assert spy.lrs[0] == 0.0  # the warm-up's first step, as without the controller
    factors = [lr / a for lr, a in zip(spy.lrs[1:], warm_cosine[1:], strict=True)]
    assert all(math.exp(-0.5) - 1e-6 <= f <= math.exp(0.5) + 1e-6 for f in factors)
    assert any(abs(f - 1) > 0.1 for f in factors)  # the policy moved the LR off the base


def test_transformers_base_trainer_resume_continues_the_identical_trajectory(tmp_path):
    def run(out, spy, **kwargs):
        args = arguments(out, lr_scheduler_type="linear", warmup_steps=0.25, **kwargs)
        trainer = Trainer(model=Regression(), args=args, train_dataset=dataset(), callbacks=[spy])
        return trainer, attach_controller(trainer, ANCHORED, base="trainer")

    straight = Spy()
    run(tmp_path / "a", straight)[0].train()
    first = Spy(stop_at=6)
    run(tmp_path / "b", first, save_strategy="steps", save_steps=6)[0].train()
    checkpoint = tmp_path / "b" / "checkpoint-6"
    state = torch.load(checkpoint / "scheduler.pt", weights_only=True)
    assert state["t"] == 6 and state["base_schedule"]["last_epoch"] == 6
    resumed = Spy()
    trainer, _ = run(tmp_path / "b", resumed, save_strategy="steps", save_steps=6)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert len(set(straight.lrs)) > 4 and first.lrs + resumed.lrs == straight.lrs
    other = Trainer(model=Regression(), args=arguments(tmp_path / "c"), train_dataset=dataset())
    attach_controller(other, ANCHORED)  # base="cosine": not what the checkpoint was saved with
    with pytest.raises(ValueError, match="attached with base='trainer'"):
        other.train(resume_from_checkpoint=str(checkpoint))


def test_transformers_bad_base_gets_a_clear_error(tmp_path):
    trainer = Trainer(model=Regression(), args=arguments(tmp_path), train_dataset=dataset())
    with pytest.raises(ValueError, match=r"base must be one of 'cosine', 'trainer', got 'linear'"):
        attach_controller(trainer, ANCHORED, base="linear")


def test_readme_transformers_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(readme_snippet("Hugging Face Trainer"), namespace)
    trainer, sched = namespace["trainer"], namespace["sched"]
    assert sched.controller.state_dict()["t"] == trainer.state.max_steps == 40
    lr = sched.get_last_lr()[0]
    assert math.isfinite(lr) and lr != 1e-3  # the controller moved the LR
    assert trainer.optimizer.param_groups[0]["lr"] == lr
