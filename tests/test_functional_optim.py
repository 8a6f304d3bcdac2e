"""BatchedOptimizer against torch.optim: every optimizer kind lrctl samples, fed the same real
gradients, step for step (schedule_free-style equivalence tests)."""

from __future__ import annotations

import pytest
import torch

from lrctl.functional_optim import BatchedOptimizer
from lrctl.optimizers import SAMPLED_OPTIMIZERS, make_optimizer
from tests.helpers import tiny_regression

STEPS = 100
RTOL, ATOL = 1e-5, 1e-6


@pytest.mark.parametrize("name", SAMPLED_OPTIMIZERS)
@pytest.mark.parametrize("lrs", [(0.01,), (0.003, 0.01, 0.03)], ids=["N=1", "N=3"])
def test_matches_torch_optim_step_for_step(name, lrs):
    """Member i and its own torch optimizer, fed member i's real minibatch gradients (taken
    from the torch model, so that both sides see the same numbers), agree at every step."""
    models = [tiny_regression(seed)[0] for seed in range(len(lrs))]
    _, x, y = tiny_regression(0)
    params = [list(m.parameters()) for m in models]
    stacked = [torch.stack([p.detach() for p in ps]).clone() for ps in zip(*params, strict=True)]
    batched = BatchedOptimizer(name, stacked)
    batched.set_lr(lrs)
    refs = [make_optimizer(name, m.parameters(), lr) for m, lr in zip(models, lrs, strict=True)]
    g = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        idx = torch.randint(0, len(x), (16,), generator=g)
        for model, opt in zip(models, refs, strict=True):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
        grads = [torch.stack([p.grad for p in ps]) for ps in zip(*params, strict=True)]
        batched.step(grads)
        for opt in refs:
            opt.step()
        for i, (ps, opt) in enumerate(zip(params, refs, strict=True)):
            for j, p in enumerate(ps):
                where = f"{name}: member {i}, parameter {j}, step {step}"
                assert torch.allclose(stacked[j][i], p.detach(), rtol=RTOL, atol=ATOL), where
                for key, tensors in batched.state.items():
                    ref = opt.state[p][key]
                    assert torch.allclose(tensors[j][i], ref, rtol=RTOL, atol=ATOL), (
                        f"{key} {where}"
                    )
    assert batched.steps.tolist() == [float(STEPS)] * len(lrs)
    assert set(batched.state) == set(refs[0].state[params[0][0]]) - {"step"}


def test_reset_and_copy_rows_give_members_a_fresh_optimizer():
    params = [torch.ones(3, 2), torch.ones(3)]
    opt = BatchedOptimizer("adam", params)
    opt.set_lr([0.1, 0.2, 0.3])
    opt.step([torch.ones(3, 2), torch.ones(3)])
    opt.reset(torch.tensor([1]))
    assert opt.steps.tolist() == [1.0, 0.0, 1.0]
    assert opt.state["exp_avg"][0][:, 0].tolist() == pytest.approx([0.1, 0.0, 0.1])
    other = BatchedOptimizer("adam", [torch.zeros(1, 2), torch.zeros(1)])
    other.set_lr([0.7])
    opt.copy_rows(torch.tensor([2]), other)
    assert opt.steps.tolist() == [1.0, 0.0, 0.0]
    assert opt.lr.tolist() == pytest.approx([0.1, 0.2, 0.7])
    assert opt.state["exp_avg_sq"][1][2].item() == 0.0


def test_adagrad_reset_restores_its_initial_accumulator():
    opt = BatchedOptimizer("adagrad", [torch.zeros(2, 3)])
    opt.set_lr([0.1, 0.1])
    opt.step([torch.full((2, 3), 2.0)])
    assert opt.state["sum"][0].tolist() == [[4.0] * 3] * 2
    opt.reset()
    assert opt.state["sum"][0].abs().sum().item() == 0.0


def test_optimizers_without_a_batched_update_are_refused():
    with pytest.raises(ValueError, match="no batched update"):
        BatchedOptimizer("prodigy", [torch.zeros(2, 3)])
