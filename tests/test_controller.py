"""LRController: trajectory tables, every param group, resume, non-finite losses, standalone."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lrctl.actions import ActionSpec
from lrctl.controller import LRController
from tests.helpers import constant_policy, random_policy, tiny_regression


def run_loop(
    optimizer_name: str,
    weights,
    steps: int,
    zero_after_step: bool = False,
    losses=None,
    host_floats: bool | None = None,
):
    """`steps` steps of the tiny regression under `LRController`: (LRs, scheduler, optimizer).
    `host_floats=False` runs the controller's device read path on the CPU."""
    model, x, y = tiny_regression()
    opt = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
        "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    }[optimizer_name](model.parameters())
    sched = LRController(opt, total_steps=steps, controller=weights)
    if host_floats is not None:
        sched._host_floats = host_floats
    lrs = []
    for t in range(steps):
        if not zero_after_step:
            opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if zero_after_step:
            opt.zero_grad()
        sched.step(loss if losses is None else losses[t])
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, sched, opt


def test_constant_up_policy_trajectory_table():
    # interval 4, m_max 2, band [0.25, 4] x base 0.1: doubles every 4 steps until 0.4.
    lrs, sched, _ = run_loop("sgd", constant_policy(1.0), steps=14)
    expected = [0.1] * 3 + [0.2] * 4 + [0.4] * 4 + [0.4] * 3
    assert lrs == pytest.approx(expected)
    assert sched.get_last_lr() == pytest.approx([0.4])


def test_half_down_policy_trajectory_table():
    # action -0.5 -> x 2**-0.5 per decision; floor 0.25 x base.
    lrs, _, _ = run_loop("sgd", constant_policy(-0.5), steps=20)
    r = 2**-0.5
    expected = (
        [0.1] * 3 + [0.1 * r] * 4 + [0.1 * r**2] * 4 + [0.1 * r**3] * 4 + [0.1 * r**4] * 4 + [0.025]
    )
    assert lrs == pytest.approx(expected)


def test_every_param_group_scaled_from_its_own_base():
    model, x, y = tiny_regression()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        momentum=0.9,
    )
    sched = LRController(opt, total_steps=8, controller=constant_policy(1.0))
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step(loss)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.4, 0.04])
    assert sched.get_last_lr() == pytest.approx([0.4, 0.04])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_runs_with_each_optimizer_and_lrs_stay_in_band(name):
    weights = random_policy(1)
    lrs, sched, _ = run_loop(name, weights, steps=60)
    base = sched.base_lrs[0]
    lo, hi = weights.action_spec.lr_band
    assert all(
        math.isfinite(v) and base * lo * (1 - 1e-9) <= v <= base * hi * (1 + 1e-9) for v in lrs
    )
    assert len(set(lrs)) > 1  # the random policy does change the LR


def test_grad_norm_captured_whether_or_not_grads_are_zeroed_after_step():
    weights = random_policy(2)
    lrs_a, sched_a, _ = run_loop("sgd", weights, steps=30, zero_after_step=False)
    lrs_b, _sched_b, _ = run_loop("sgd", weights, steps=30, zero_after_step=True)
    assert lrs_a == pytest.approx(lrs_b)
    assert len(sched_a._norm_parts) == 0  # 30 steps = 3 full blocks, all consumed


def test_gradient_norm_matches_clip_grad_norm():
    model, x, y = tiny_regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.25, 4.0), grad_norm_steps=4)
    sched = LRController(opt, total_steps=10, controller=constant_policy(0.0, spec))
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    expected = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    opt.step()
    sched.step(loss)
    _, gnorms = sched._block()
    assert float(gnorms[0]) == pytest.approx(float(expected), rel=1e-6)


def test_gradient_norms_read_on_the_last_g_steps_only():
    """G = 2 of K = 4: the hook is held for block steps 2 and 3 only, and the block's norms
    are exactly those steps' global norms."""
    model, x, y = tiny_regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.25, 4.0), grad_norm_steps=2)
    sched = LRController(opt, total_steps=100, controller=constant_policy(0.0, spec))
    held, expected = [], []
    for i in range(4):
        held.append(sched._hook is not None)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        if i >= 2:
            expected.append(float(norm))
        opt.step()
        if i < 3:
            sched.step(loss)
    assert held == [False, False, True, True]
    _, gnorms = sched._block()
    assert gnorms.tolist() == pytest.approx(expected, rel=1e-6)
    sched.step(loss)  # the decision empties the block and releases the hook
    assert sched._hook is None and sched._norm_parts == []


def test_state_dict_resume_gives_identical_trajectory():
    weights = random_policy(3)
    full, _, _ = run_loop("adam", weights, steps=50)

    model, x, y = tiny_regression()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = LRController(opt, total_steps=50, controller=weights)
    lrs = []
    for t in range(50):
        if t == 23:  # "kill" mid-block and resume into fresh objects
            saved_model, saved_opt, saved_sched = (
                {k: v.clone() for k, v in model.state_dict().items()},
                opt.state_dict(),
                sched.state_dict(),
            )
            model, x, y = tiny_regression()
            model.load_state_dict(saved_model)
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            opt.load_state_dict(saved_opt)
            sched = LRController(opt, total_steps=50, controller=weights)
            sched.load_state_dict(saved_sched)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx(full, rel=1e-6)


def test_nonfinite_loss_cuts_and_holds():
    # A policy that always wants to raise the LR; a NaN in the second block forces a cut,
    # then the LR may not rise for `hold` (3) decisions.
    spec = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.01, 100.0))
    losses = [1.0] * 4 + [1.0, float("nan"), 1.0, 1.0] + [1.0] * 20
    lrs, _sched, _ = run_loop("sgd", constant_policy(1.0, spec), steps=28, losses=losses)
    after_each_decision = lrs[3::4]  # lrs[t] is the LR in force after step t
    assert after_each_decision == pytest.approx([0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4])
    assert all(math.isfinite(v) for v in lrs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 0.0, -5.0, 1e30, 1e-30])
def test_bad_losses_never_give_a_bad_lr(bad):
    weights = random_policy(4)
    losses = [bad] * 40
    lrs, _sched, _ = run_loop("sgd", weights, steps=40, losses=losses)
    lo, hi = weights.action_spec.lr_band
    assert all(math.isfinite(v) and 0.1 * lo * 0.999 <= v <= 0.1 * hi * 1.001 for v in lrs)


def test_invalid_arguments_are_clear():
    model, _, _ = tiny_regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        LRController(opt, total_steps=0, controller=constant_policy(0.0))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        LRController(model, total_steps=10, controller=constant_policy(0.0))


def test_runtime_imports_without_gymnasium_or_sb3():
    code = (
        "import sys\n"
        "sys.modules['gymnasium'] = None\n"
        "sys.modules['stable_baselines3'] = None\n"
        "import torch\n"
        "from lrctl import LRController\n"
        "from tests.helpers import constant_policy\n"
        "m = torch.nn.Linear(3, 1)\n"
        "opt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "s = LRController(opt, total_steps=8, controller=constant_policy(1.0))\n"
        "for _ in range(8):\n"
        "    opt.zero_grad(); loss = m(torch.ones(2, 3)).pow(2).mean(); loss.backward(); opt.step(); s.step(loss)\n"
        "assert 'gymnasium' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "assert not any(k.startswith('stable_baselines3') and v is not None for k, v in sys.modules.items())\n"
        "print(round(opt.param_groups[0]['lr'], 6))\n"
    )
    repo_root = Path(__file__).resolve().parents[1]  # so that `tests.helpers` imports
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.4"


ANCHORED = ActionSpec(interval=5, mode="anchored", scale_time=0.25, scale_min_decisions=3)


@pytest.mark.parametrize("feature_version", [None, 2, 3, 5])
def test_device_read_path_decides_as_the_cpu_path(feature_version: int | None) -> None:
    """Global mode reads a block value by value on the CPU and in one `read_block` transfer on a
    GPU ([K] losses and [G] norms beside features v3's [1, 3] statistics: that mix once failed
    on CUDA at the first decision). Run on the CPU, both paths give the same LRs, step by step,
    for the shipped controller and for random anchored policies of each feature version."""
    weights = None if feature_version is None else random_policy(2, ANCHORED, feature_version)
    curves = [run_loop("adam", weights, 60, host_floats=host)[0] for host in (True, False)]
    assert len(set(curves[0])) > 5  # the policy moved the LR: decisions were taken and applied
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4)  # float32 on the device path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    ("feature_version", "spec", "optimizer"),
    [
        (2, None, "momentum"),
        (3, None, "momentum"),
        (5, ANCHORED, "momentum"),
        (5, ANCHORED, "adam"),
        (None, None, "adam"),  # the shipped controller file
    ],
)
@pytest.mark.parametrize("per_group", [False, True])
def test_cuda_no_host_sync_between_decisions(
    per_group: bool, feature_version: int | None, spec: ActionSpec | None, optimizer: str
):
    """On CUDA, the optimizer step (with the controller's grad-norm hook) and `sched.step` never
    synchronise with the host between decisions (torch's sync debug mode raises on any
    synchronising call); a decision step reads its block once, by design. Also per group, with
    features v3 and v5 (the last-step statistics are device tensors in the same read), the
    anchored action with its scale term, Adam, and the shipped controller."""
    from lrctl.param_groups import layer_param_groups

    device = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
    ).to(device)
    x, y = torch.randn(128, 32, device=device), torch.randn(128, 1, device=device)
    if optimizer == "adam":
        opt = torch.optim.Adam(layer_param_groups(model), lr=1e-3)
    else:
        opt = torch.optim.SGD(layer_param_groups(model), lr=1e-2, momentum=0.9)
    weights = None if feature_version is None else random_policy(5, spec, feature_version)
    sched = LRController(opt, total_steps=100, controller=weights, per_group=per_group)
    weights = sched.weights
    k = weights.action_spec.interval
    for t in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        decision = (t + 1) % k == 0
        torch.cuda.set_sync_debug_mode(0 if decision else "error")
        try:
            opt.step()
            sched.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert math.isfinite(opt.param_groups[0]["lr"])
