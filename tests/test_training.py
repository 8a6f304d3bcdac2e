"""The inner loop: divergence handling and what History records, checked against plain torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrctl.baselines import baseline_policy
from lrctl.grad_norms import grad_norm
from lrctl.inner_run import InnerRun, params_finite
from lrctl.optimizers import make_optimizer
from lrctl.runs import Runs
from lrctl.tasks import FAMILIES, Task
from lrctl.training import train

DIGITS = FAMILIES["digits_mlp"]()
DIGITS_TASK = DIGITS.build(DIGITS.spec("sgd", width=32, depth=1, batch_size=32))
TINY = FAMILIES["breast_cancer_logreg"]()
TINY_TASK = TINY.build(TINY.spec("sgd", batch_size=16))


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1e6), ("momentum", 1e6), ("sgd", 1e3)])
def test_absurd_lr_ends_the_run_as_diverged(optimizer: str, lr: float) -> None:
    history = train(DIGITS_TASK, optimizer, lr, steps=200, seed=0, val_every=25)
    assert history.diverged
    assert history.diverged_at is not None and history.diverged_at < 25
    assert history.final_val_loss == math.inf
    assert history.final_val_accuracy == 0.0
    steps = history.steps
    # The step table ends at the divergence step, the only row holding a non-finite value.
    assert len(steps) == history.diverged_at + 1
    assert steps.step.iloc[-1] == history.diverged_at
    values = steps[["train_loss", "grad_norm", "lr"]].to_numpy()
    assert np.isfinite(values[:-1]).all()
    assert not np.isfinite(values[-1]).all()
    assert list(history.evals.step) == [0]  # no validation after the divergent block


def test_divergence_step_is_the_first_nonfinite_step() -> None:
    # 1e6 with plain SGD on the small MLP: the loss explodes through huge finite values
    # (~1e11, ~1e22, ~1e34) and is NaN from step 4 on.
    history = train(DIGITS_TASK, "sgd", 1e6, steps=50, seed=0, val_every=10)
    assert history.diverged_at == 4
    losses = history.steps.train_loss.to_numpy()
    assert losses[0] == pytest.approx(math.log(10), rel=0.05)  # a fresh 10-class classifier
    assert (np.diff(np.log10(losses[:4])) > 5).all()
    assert math.isnan(losses[4])
    # The core, run on without stopping within one block, agrees on where the trouble starts.
    runs = Runs.single(DIGITS_TASK, "sgd", 1e6, capacity=8, seed=0)
    block = runs.run_block(8)
    assert torch.isfinite(runs.run.loss_buf).tolist() == [True] * 4 + [False] * 4
    assert bool(block.diverged[0]) and runs.diverged_at[0] == 4
    assert block.val_loss[0] == math.inf  # a diverged block is not validated
    assert runs.evals == []


def _corrupt_after_steps(monkeypatch: pytest.MonkeyPatch, runs: Runs, corrupt) -> None:
    """Make `corrupt(run)` happen after the next block's steps, before the core reads them."""
    advance = runs.run.advance

    def advance_then_corrupt(*args, **kwargs):
        out = advance(*args, **kwargs)
        corrupt(runs.run)
        return out

    monkeypatch.setattr(runs.run, "advance", advance_then_corrupt)


def test_one_nan_in_one_parameter_element_is_detected() -> None:
    runs = Runs.single(DIGITS_TASK, "sgd", 0.1, capacity=10, seed=0)
    block = runs.run_block(3)
    assert bool(params_finite(runs.run.params))
    assert not block.diverged[0] and runs.diverged_at[0] == -1
    assert [e[0] for e in runs.evals] == [3]  # validated and recorded
    # One element of one parameter (not the first, not the last) goes bad.
    with torch.no_grad():
        runs.run.params[1].view(-1)[7] = math.nan
    assert not bool(params_finite(runs.run.params))
    block = runs.run_block(2)
    assert bool(block.diverged[0])
    # This block's losses are already NaN (the bad weight feeds every output), so the first
    # bad step is the block's first.
    assert runs.diverged_at[0] == 3
    # A diverged run stays diverged: later blocks are neither validated nor recorded.
    block = runs.run_block(2)
    assert bool(block.diverged[0]) and runs.diverged_at[0] == 3 and len(runs.evals) == 1


def test_nan_parameter_with_finite_losses_is_still_divergence(monkeypatch) -> None:
    runs = Runs.single(DIGITS_TASK, "sgd", 0.1, capacity=10, seed=0)

    def break_a_weight(run: InnerRun) -> None:
        with torch.no_grad():
            run.params[-1].view(-1)[0] = math.inf  # after the block: its losses stay finite

    _corrupt_after_steps(monkeypatch, runs, break_a_weight)
    block = runs.run_block(4)
    assert np.isfinite(block.losses).all()
    assert bool(block.diverged[0])
    assert runs.diverged_at[0] == 3  # the block's last step, whose update broke the parameters


@pytest.mark.parametrize(("buffer", "position"), [("loss_buf", 2), ("gnorm_buf", 1)])
def test_first_nonfinite_loss_or_gradient_norm_marks_divergence(
    monkeypatch, buffer: str, position: int
) -> None:
    runs = Runs.single(DIGITS_TASK, "sgd", 0.1, capacity=10, seed=0)

    def corrupt(run: InnerRun) -> None:
        getattr(run, buffer)[position] = math.inf
        getattr(run, buffer)[4] = math.nan

    _corrupt_after_steps(monkeypatch, runs, corrupt)
    block = runs.run_block(5)
    assert bool(block.diverged[0])
    assert runs.diverged_at[0] == position


def test_a_nonfinite_validation_loss_is_divergence_at_the_blocks_last_step(monkeypatch) -> None:
    runs = Runs.single(DIGITS_TASK, "sgd", 0.1, capacity=10, seed=0)
    monkeypatch.setattr(runs.run, "evaluate", lambda split, accuracy=True: (math.nan, 0.0))
    block = runs.run_block(4)
    assert bool(block.diverged[0]) and runs.diverged_at[0] == 3
    assert math.isnan(block.val_loss[0])


def _plain_loop(task: Task, optimizer: str, lr: float, steps: int, seed: int) -> dict:
    """The same run written with plain torch: model seeded like InnerRun, the same shuffled
    batches, loss and gradient norm read from torch itself."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.model_fn()
    params = list(model.parameters())
    opt = make_optimizer(optimizer, params, lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    bs = task.batch_size
    record: dict[str, list[float]] = {"train_loss": [], "grad_norm": [], "lr": []}
    while len(record["lr"]) < steps:
        perm = torch.randperm(len(task.train), generator=gen)
        for i in range(len(perm) // bs):
            if len(record["lr"]) == steps:
                break
            idx = perm[i * bs : (i + 1) * bs]
            opt.zero_grad()
            loss = task.loss_fn(model(task.train.x[idx]), task.train.y[idx])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm=math.inf)  # reads, no clip
            record["lr"].append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
            record["train_loss"].append(loss.item())
            record["grad_norm"].append(norm.item())
    return record


@pytest.mark.parametrize(
    ("task", "optimizer"),
    [(TINY_TASK, "sgd"), (TINY_TASK, "adam"), (DIGITS_TASK, "momentum")],
    ids=["logreg-sgd", "logreg-adam", "digits-momentum"],
)
def test_history_matches_a_plain_torch_loop(task: Task, optimizer: str) -> None:
    steps, lr, seed = 40, 0.05, 3  # 40 steps: more than one epoch of the 16-row logreg batches
    history = train(
        task, optimizer, lr, steps, seed, policy_fn=baseline_policy("cosine", steps), val_every=8
    )
    plain = _plain_loop(task, optimizer, lr, steps, seed)
    table = history.steps
    assert table.step.tolist() == list(range(steps))
    # Same model, same batches, same optimizer: identical losses.
    np.testing.assert_array_equal(table.train_loss.to_numpy(), np.float32(plain["train_loss"]))
    # The gradient norm is torch.nn.utils.clip_grad_norm_'s (the same ops, so the same bits).
    assert table.grad_norm.tolist() == pytest.approx(plain["grad_norm"], rel=1e-6)
    # The lr column is the scheduler's trajectory.
    assert table.lr.tolist() == pytest.approx(plain["lr"], rel=1e-12)
    assert table.lr.iloc[0] == lr
    assert table.lr.iloc[-1] == pytest.approx(lr * (1 + math.cos(math.pi * 39 / 40)) / 2)


def test_grad_norm_equals_clip_grad_norm() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    model(torch.randn(11, 5)).pow(2).sum().backward()
    params = list(model.parameters())
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm=math.inf)
    assert grad_norm(params).item() == pytest.approx(expected.item(), rel=1e-7)
    by_hand = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))
    assert grad_norm(params).item() == pytest.approx(by_hand, rel=1e-5)
    out = torch.zeros(3)
    grad_norm(params, out=out[1])
    assert out.tolist() == pytest.approx([0.0, expected.item(), 0.0], rel=1e-7)


def test_grad_norm_skips_parameters_without_gradients() -> None:
    used, unused = torch.nn.Parameter(torch.tensor([3.0, 0.0])), torch.nn.Parameter(torch.ones(2))
    (used * torch.tensor([1.0, 4.0])).sum().backward()
    assert grad_norm([used, unused]).item() == pytest.approx(math.sqrt(17.0))
    assert grad_norm([unused]).item() == 0.0


def test_evaluations_and_final_values() -> None:
    history = train(TINY_TASK, "adam", 0.01, steps=30, seed=1, val_every=10)
    assert not history.diverged and history.diverged_at is None
    assert history.evals.step.tolist() == [0, 10, 20, 30]
    assert history.final_val_loss == history.evals.val_loss.iloc[-1]
    assert history.final_val_accuracy == history.evals.val_accuracy.iloc[-1]
    assert math.isnan(history.test_loss)  # the test split is read only when asked
    with_test = train(TINY_TASK, "adam", 0.01, steps=30, seed=1, val_every=10, evaluate_test=True)
    assert math.isfinite(with_test.test_loss) and 0.5 < with_test.test_accuracy <= 1.0
    assert with_test.final_val_loss == history.final_val_loss


def test_regression_accuracy_is_nan() -> None:
    family = FAMILIES["diabetes_mlp"]()
    task = family.build(family.spec("adam", width=32, depth=1))
    history = train(task, "adam", 3e-3, steps=5, seed=0, val_every=5)
    assert math.isnan(history.final_val_accuracy)


@pytest.mark.parametrize(("steps", "val_every"), [(0, 10), (-1, 10), (10, 0)])
def test_train_rejects_nonpositive_sizes(steps: int, val_every: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        train(TINY_TASK, "sgd", 0.1, steps, seed=0, val_every=val_every)


def test_advance_never_runs_past_capacity_and_set_lr_writes_every_group() -> None:
    run = InnerRun(TINY_TASK, "sgd", 0.1, capacity=5, seed=0)
    losses, gnorms = run.advance(3)
    assert losses.shape == gnorms.shape == (3,)
    losses, _ = run.advance(10)
    assert losses.shape == (2,) and run.t == 5
    assert run.advance(1)[0].shape == (0,)
    run.optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0})
    run.set_lr(0.25)
    assert [g["lr"] for g in run.optimizer.param_groups] == [0.25, 0.25]
    assert run.lr == 0.25
    assert run.lrs == [0.1] * 5
