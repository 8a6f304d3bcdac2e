"""LRController in plain loops: AMP (GradScaler), gradient accumulation, gradient clipping,
torch.compile, and the README's AMP / accumulation snippet."""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import torch

from lrctl.actions import ActionSpec
from lrctl.controller import LRController
from tests.helpers import constant_policy, random_policy
from tests.readme import readme_snippet
from tests.test_distributed import record_blocks

SPEC = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.1, 10.0), grad_norm_steps=2)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def batch(step: int, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(n, 5, generator=g)
    return x, 4.0 * x.sum(1, keepdim=True) + torch.randn(n, 1, generator=g)


def amp_run(steps: int, skip: set[int] | None = None):
    """AMP with a GradScaler whose scale overflows the gradients now and then (a huge initial
    scale, growing back every 3 steps). With `skip` given instead: no scaler, and the
    optimizer (and the controller) leave out those steps: what the AMP run should equal."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = LRController(opt, steps, controller=random_policy(4, SPEC))
    blocks = record_blocks(sched)
    scaler = None if skip is not None else torch.amp.GradScaler("cpu", 2.0**126, growth_interval=3)
    stepped, lrs = [], []
    counter = opt.register_step_post_hook(lambda *args: stepped.append(len(lrs)))
    for t in range(steps):
        x, y = batch(t)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step(loss)
        elif t not in skip:
            loss.backward()
            opt.step()
            sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    counter.remove()
    return sched, blocks, lrs, set(range(steps)) - set(stepped), list(model.parameters())


def test_amp_skipped_steps_are_not_steps_and_never_reach_the_features():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped step is expected: no warning
        sched, blocks, lrs, skipped, params = amp_run(60)
    assert len(skipped) >= 8 and max(skipped) > 20  # at the start and again mid-run
    assert sched.state_dict()["t"] == 60 - len(skipped)
    assert all(np.isfinite(g).all() for _, g in blocks)
    # ... and the run is the run without a scaler that leaves those steps out, bit for bit.
    _, ref_blocks, ref_lrs, _, ref_params = amp_run(60, skip=skipped)
    assert lrs == ref_lrs and len(set(lrs)) > 3
    for (la, ga), (lb, gb) in zip(blocks, ref_blocks, strict=True):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ga, gb)
    assert all(torch.equal(p, q) for p, q in zip(params, ref_params, strict=True))


def accumulate_run(micro_steps: bool, steps: int = 12, accumulate: int = 4):
    """`steps` optimizer steps of `accumulate` micro-batches each; the controller stepped once
    per optimizer step with the micro-batches' mean loss, or (the mistake) once per
    micro-batch with each micro-batch's loss."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LRController(opt, steps, controller=constant_policy(1.0, SPEC))
    blocks = record_blocks(sched)
    lrs, step_losses, step_norms = [], [], []
    for t in range(steps):
        opt.zero_grad()
        total = torch.zeros(())
        for m in range(accumulate):
            x, y = batch(100 * t + m, n=8)
            loss = torch.nn.functional.mse_loss(model(x), y) / 1000.0
            (loss / accumulate).backward()
            total += loss.detach() / accumulate
            if micro_steps and m < accumulate - 1:
                sched.step(loss)
        step_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
        opt.step()
        sched.step(loss if micro_steps else total)
        step_losses.append(float(total))
        lrs.append(opt.param_groups[0]["lr"])
    return sched, blocks, lrs, step_losses, step_norms


ACCUMULATE_TABLE = [0.1] * 3 + [0.2] * 4 + [0.4] * 4 + [0.8]  # by optimizer step: K = 4


def test_gradient_accumulation_one_step_per_optimizer_step():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched, blocks, lrs, step_losses, step_norms = accumulate_run(micro_steps=False)
    assert lrs == pytest.approx(ACCUMULATE_TABLE)
    assert sched.state_dict()["t"] == 12
    np.testing.assert_allclose(np.concatenate([b[0] for b in blocks]), step_losses, rtol=1e-6)
    # the norm of the accumulated gradient, on the last G = 2 steps of each block
    expected = [n for t, n in enumerate(step_norms) if t % 4 >= 2 and t < 12]
    np.testing.assert_allclose(np.concatenate([b[1] for b in blocks]), expected, rtol=1e-6)


def test_gradient_accumulation_step_per_micro_batch_warns_and_is_not_counted():
    with pytest.warns(UserWarning, match="once per optimizer step") as caught:
        sched, _, lrs, _, _ = accumulate_run(micro_steps=True)
    assert len(caught) == 1  # once, not every micro-batch
    assert lrs == pytest.approx(ACCUMULATE_TABLE)  # the extra calls changed nothing
    assert sched.state_dict()["t"] == 12


def test_gradient_clipping_the_controller_sees_the_clipped_norm():
    """clip_grad_norm_ before optimizer.step(): the controller reads the gradients the
    optimizer applies, so the norms it sees are the clipped ones, min(norm, max_norm)."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    sched = LRController(opt, 8, controller=constant_policy(0.0, SPEC))
    blocks = record_blocks(sched)
    before = []
    for t in range(8):
        x, y = batch(t)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        before.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)))
        opt.step()
        sched.step(1.0)
    seen = np.concatenate([b[1] for b in blocks])
    unclipped = [before[t] for t in (2, 3, 6, 7)]
    assert min(unclipped) > 1.0
    np.testing.assert_allclose(seen, 1.0, rtol=1e-5)


def test_skipped_step_with_gradients_already_cleared_is_silent():
    """A loop that zeroes gradients right after a step a GradScaler skipped: nothing left to
    check, the call is not counted and not warned about."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = LRController(opt, 10, controller=constant_policy(1.0, SPEC))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step(1.0)  # no optimizer step yet, no gradients
    assert sched.state_dict()["t"] == 0
    param.grad = torch.ones(3)
    opt.step()
    sched.step(1.0)
    assert sched.state_dict()["t"] == 1


def test_step_with_a_closure_reads_the_gradients_the_closure_made():
    """`optimizer.step(closure)` (how Lightning steps): the pre-hook runs before the closure,
    so the controller reads the gradient norms right after the closure instead."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sched = LRController(opt, 8, controller=constant_policy(0.0, SPEC))
    blocks = record_blocks(sched)
    norms = []
    for t in range(8):
        x, y = batch(t)

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
            return loss

        loss = opt.step(closure)
        sched.step(loss)
    seen = np.concatenate([b[1] for b in blocks])
    np.testing.assert_allclose(seen, [norms[t] for t in (2, 3, 6, 7)], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's default (inductor) backend needs a C++ compiler")  # fmt: skip
def test_torch_compile_model_gives_the_eager_trajectory():
    def run(compiled: bool) -> tuple[list[float], list[torch.Tensor]]:
        model = make_model()
        forward = torch.compile(model) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        sched = LRController(opt, 40, controller=random_policy(6, SPEC))
        lrs = []
        for t in range(40):
            x, y = batch(t)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(forward(x), y)
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
        return lrs, list(model.parameters())

    eager_lrs, eager_params = run(False)
    compiled_lrs, compiled_params = run(True)
    assert len(set(eager_lrs)) > 3
    assert compiled_lrs == pytest.approx(eager_lrs, rel=1e-5)
    for p, q in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_readme_amp_and_accumulation_snippet_runs():
    namespace: dict = {}
    exec(readme_snippet("AMP, gradient accumulation, clipping"), namespace)
    sched = namespace["sched"]
    assert sched.state_dict()["t"] == 100  # every optimizer step counted once
    lr = sched.get_last_lr()[0]
    assert math.isfinite(lr) and lr != 1e-3
