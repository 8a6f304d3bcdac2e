"""lrctl.integrations.lightning: the controller as a Lightning callback (CPU, tiny models)."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # noqa: E402

from lrctl.actions import ActionSpec  # noqa: E402
from lrctl.controller import LRController  # noqa: E402
from lrctl.integrations.lightning import LRControllerCallback  # noqa: E402
from tests.helpers import random_policy  # noqa: E402
from tests.readme import readme_snippet  # noqa: E402
from tests.test_distributed import record_blocks  # noqa: E402

SPEC = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.1, 10.0), grad_norm_steps=2)
WEIGHTS = random_policy(8, SPEC)
ANCHORED = random_policy(
    8, ActionSpec(interval=4, mode="anchored", residual=0.5, grad_norm_steps=2)
)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available.*")
        warnings.filterwarnings("ignore", message=".*when using `ckpt_path`.*")
        yield


class Regression(pl.LightningModule):
    """A tiny MLP; remembers every training batch's loss (before Lightning divides it)."""

    def __init__(self, scheduler: str | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.scheduler = scheduler
        self.batch_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.batch_losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)
        if self.scheduler == "epoch":  # Lightning's default interval: stepped per epoch
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 5)}
        if self.scheduler == "step":  # a warm-up then a decay, in optimizer steps
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": warmup_decay(opt), "interval": "step"},
            }
        return opt


def warmup_decay(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min((t + 1) / 4, 0.9**t))


def loader(n_batches: int, batch_size: int = 8) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_batches * batch_size, 5, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0]]) + 0.1 * torch.randn(
        len(x), 1, generator=g
    )
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


class Spy(pl.Callback):
    """After the controller (it comes later in `callbacks`): the LR after each optimizer step,
    each step's accumulated gradient norm, the LR in force at each batch's start."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.lrs: list[float] = []
        self.norms: list[float] = []
        self.batch_lrs: list[float] = []
        self.stop_at = stop_at
        self._stepped = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.norms.append(float(torch.nn.utils.clip_grad_norm_(pl_module.parameters(), math.inf)))
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._stepped:
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
            self._stepped = False
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True


def fit(module, data, callbacks, **kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **kwargs,
    }
    trainer = pl.Trainer(callbacks=callbacks, **options)
    trainer.fit(module, data)
    return trainer


def test_lightning_steps_once_per_optimizer_step_with_the_mean_accumulated_loss(tmp_path):
    """5 batches per epoch, 2 per optimizer step: windows of 2, 2 and 1 batches."""
    ctrl, spy = LRControllerCallback(WEIGHTS), Spy()
    module = Regression()
    blocks: list = []
    original = LRControllerCallback.on_fit_start

    def on_fit_start(self, trainer, pl_module):
        original(self, trainer, pl_module)
        blocks.append(record_blocks(self.controller))

    ctrl.on_fit_start = on_fit_start.__get__(ctrl)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=4,
        accumulate_grad_batches=2,
        callbacks=[ctrl, spy],
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader(5))
    assert ctrl.controller.total_steps == trainer.estimated_stepping_batches == 12
    assert ctrl.controller.state_dict()["t"] == 12 and len(spy.lrs) == 12
    assert len(set(spy.lrs)) > 2  # the policy does move the LR
    # the loss of each step: the mean over its 2 (or, last in an epoch, 1) batches
    raw = module.batch_losses
    windows = [w for e in range(4) for w in ([0, 1], [2, 3], [4])]
    expected = [np.mean([raw[5 * (i // 3) + j] for j in w]) for i, w in enumerate(windows)]
    seen = [blk for blk in blocks[0]]
    np.testing.assert_allclose(np.concatenate([b[0] for b in seen]), expected, rtol=1e-6)
    # the gradient norms are those of the complete accumulated gradient (steps 3, 4 of 4)
    norms = np.concatenate([b[1] for b in seen])
    np.testing.assert_allclose(norms, [spy.norms[t] for t in (2, 3, 6, 7, 10, 11)], rtol=1e-5)
    # logged like LearningRateMonitor: "lr-SGD" at each batch's start, under the Trainer's
    # step (optimizer steps so far): one row per optimizer step, the LR that step used
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        logged = [float(row["lr-SGD"]) for row in csv.DictReader(f) if row.get("lr-SGD")]
    assert logged == pytest.approx([0.02, *spy.lrs[:-1]], rel=1e-7)
    assert spy.batch_lrs[:5] == [0.02, 0.02, spy.lrs[0], spy.lrs[0], spy.lrs[1]]
    assert float(trainer.callback_metrics["lr-SGD"]) == pytest.approx(spy.batch_lrs[-1])


def test_lightning_resume_from_checkpoint_continues_the_identical_lr_trajectory(tmp_path):
    """12 optimizer steps straight vs 6 steps, a checkpoint, a new Trainer resuming (with
    the same callback object, as a script that fits twice would)."""

    def trainer(spy: Spy, ckpt: ModelCheckpoint | None = None, ctrl=None) -> pl.Trainer:
        ctrl = ctrl or LRControllerCallback(WEIGHTS)
        return pl.Trainer(
            accelerator="cpu",
            max_steps=12,
            accumulate_grad_batches=2,
            callbacks=[ctrl, spy, *([ckpt] if ckpt else [])],
            logger=False,
            enable_checkpointing=ckpt is not None,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    straight = Spy()
    trainer(straight).fit(Regression(), loader(6))
    first, ctrl = Spy(stop_at=6), LRControllerCallback(WEIGHTS)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    trainer(first, ckpt, ctrl).fit(Regression(), loader(6))
    path = tmp_path / "epoch=1-step=6.ckpt"
    saved = torch.load(path, weights_only=True)["callbacks"]["LRControllerCallback"]
    assert saved["controller"]["t"] == 6 and "loss_sum" not in saved
    resumed = Spy()
    trainer(resumed, ctrl=ctrl).fit(Regression(), loader(6), ckpt_path=path)
    assert len(straight.lrs) == 12 and len(set(straight.lrs)) > 2
    assert first.lrs + resumed.lrs == straight.lrs


def test_lightning_module_scheduler_per_epoch_gets_a_clear_error():
    with pytest.raises(MisconfigurationException, match=r"\(StepLR\).*every epoch.*interval"):
        fit(Regression("epoch"), loader(2), [LRControllerCallback(ANCHORED)], max_steps=2)


def test_lightning_module_scheduler_with_a_recursive_controller_gets_a_clear_error():
    with pytest.raises(MisconfigurationException, match=r"\(LambdaLR\).*recursive.*Return only"):
        fit(Regression("step"), loader(2), [LRControllerCallback(WEIGHTS)], max_steps=2)


def test_lightning_module_scheduler_per_step_becomes_the_base_schedule():
    """The module's scheduler is the anchor: the same LRs as `LRController(..., base=s)` in a
    plain loop on the same batches; stepped once per optimizer step (by the controller, not
    by Lightning as well)."""
    ctrl, spy = LRControllerCallback(ANCHORED), Spy()
    module = Regression("step")
    trainer = fit(module, loader(6), [ctrl, spy], max_steps=12)
    base = ctrl.controller.base
    assert isinstance(base, torch.optim.lr_scheduler.LambdaLR)
    assert trainer.lr_scheduler_configs == [] and base.last_epoch == 12

    plain = Regression()
    opt = torch.optim.SGD(plain.parameters(), lr=0.02, momentum=0.9)
    sched = LRController(opt, 12, controller=ANCHORED, base=warmup_decay(opt))
    lrs = []
    for _epoch in range(2):
        for x, y in loader(6):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(plain.net(x), y)
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
    assert spy.lrs == pytest.approx(lrs, rel=1e-6)
    assert len(set(lrs)) > 6  # the warm-up, the decay and the policy's factors
    anchors = [min((t + 1) / 4, 0.9**t) * 0.02 for t in range(1, 13)]
    factors = [lr / a for lr, a in zip(lrs, anchors, strict=True)]
    assert all(math.exp(-0.5) - 1e-6 <= f <= math.exp(0.5) + 1e-6 for f in factors)


def test_lightning_resume_with_the_module_scheduler_continues_the_identical_trajectory(tmp_path):
    def trainer(spy: Spy, ckpt: ModelCheckpoint | None = None) -> pl.Trainer:
        return pl.Trainer(
            accelerator="cpu",
            max_steps=12,
            callbacks=[LRControllerCallback(ANCHORED), spy, *([ckpt] if ckpt else [])],
            logger=False,
            enable_checkpointing=ckpt is not None,
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    straight = Spy()
    trainer(straight).fit(Regression("step"), loader(6))
    first = Spy(stop_at=6)  # an epoch's end, inside a block of 4 steps
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
    trainer(first, ckpt).fit(Regression("step"), loader(6))
    path = tmp_path / "epoch=0-step=6.ckpt"
    saved = torch.load(path, weights_only=False)
    assert saved["lr_schedulers"] == []  # the controller's, not Lightning's
    callback_state = saved["callbacks"]["LRControllerCallback"]
    assert callback_state["controller"]["base_schedule"]["last_epoch"] == 6
    resumed = Spy()
    trainer(resumed).fit(Regression("step"), loader(6), ckpt_path=path)
    assert first.lrs + resumed.lrs == straight.lrs
    # The layout of files written before the controller's state carried the base schedule.
    callback_state["base_schedule"] = callback_state["controller"].pop("base_schedule")
    old_layout = tmp_path / "old_layout.ckpt"
    torch.save(saved, old_layout)
    from_old = Spy()
    trainer(from_old).fit(Regression("step"), loader(6), ckpt_path=old_layout)
    assert first.lrs + from_old.lrs == straight.lrs
    with pytest.raises(MisconfigurationException, match="saved with an LR scheduler"):
        trainer(Spy()).fit(Regression(), loader(6), ckpt_path=path)


def test_readme_lightning_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default logger writes lightning_logs/ here
    used: list[float] = []  # the LR each optimizer step ran with (before the controller's step)
    original = LRController.step

    def recording_step(self, loss):
        used.append(self.get_last_lr()[0])
        return original(self, loss)

    monkeypatch.setattr(LRController, "step", recording_step)
    namespace: dict = {}
    exec(readme_snippet("PyTorch Lightning"), namespace)
    ctrl, trainer = namespace["controller"], namespace["trainer"]
    assert ctrl.controller.state_dict()["t"] == trainer.estimated_stepping_batches == 24
    # Logged at batch start, as LearningRateMonitor does: the LR the last step used.
    assert len(used) == 24
    assert float(trainer.callback_metrics["lr-SGD"]) == pytest.approx(used[-1])
