"""SGD-HD and Adam-HD: the paper's update rules checked on hand-computed trajectories.

Gradients are written into `.grad` by hand, so every number below follows from the rules in
lrctl/hypergradient.py's docstring with pen and paper (the arithmetic is in the comments).
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from lrctl.hypergradient import SGDHD, AdamHD
from lrctl.tasks import FAMILIES
from lrctl.training import train


def _steps(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[list[float]]]
) -> list[tuple[float, list[list[float]]]]:
    """Feed `grads[t][i]` to parameter i at step t; return (lr, parameters) after each step."""
    out = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g, dtype=p.dtype)
        opt.step()
        out.append((opt.param_groups[0]["lr"], [p.detach().tolist() for p in params]))
    return out


def _param(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_sgd_hd_trajectory_by_hand() -> None:
    # alpha_0 = 0.1, beta = rel_hypergrad_lr * alpha_0 = 2 * 0.1 = 0.2, floor = 1e-12 * 0.1.
    theta = _param([1.0, 2.0])
    opt = SGDHD([theta], lr=0.1, rel_hypergrad_lr=2.0)
    floor = 1e-13
    got = _steps(opt, [theta], [[[1.0, -1.0]], [[2.0, 1.0]], [[-1.0, -3.0]], [[1.0, 1.0]]])
    expected = [
        # t=1: no previous gradient, h = 0: alpha = 0.1; theta = [1, 2] - 0.1 [1, -1]
        (0.1, [0.9, 2.1]),
        # t=2: g2.g1 = 2 - 1 = 1: alpha = 0.1 + 0.2 * 1 = 0.3; theta = [0.9, 2.1] - 0.3 [2, 1]
        (0.3, [0.3, 1.8]),
        # t=3: g3.g2 = -2 - 3 = -5: 0.3 - 0.2 * 5 = -0.7 < 0, so alpha = the floor
        (floor, [0.3 + floor, 1.8 + 3 * floor]),
        # t=4: g4.g3 = -1 - 3 = -4: alpha stays at the floor
        (floor, [0.3, 1.8]),
    ]
    for (lr, (params,)), (want_lr, want_params) in zip(got, expected, strict=True):
        assert lr == pytest.approx(want_lr, rel=1e-9)
        assert params == pytest.approx(want_params, rel=1e-9)
    # t=5: g5.g4 = 1 + 1 = 2: alpha = floor + 0.2 * 2 = 0.4 (it recovers from the floor)
    (lr, _), *_ = _steps(opt, [theta], [[[1.0, 1.0]]])
    assert lr == pytest.approx(0.4, rel=1e-9)


def test_sgd_hd_one_step_is_sgd_and_two_steps_follow_the_rule() -> None:
    theta = _param([1.0, 2.0])
    opt = SGDHD([theta], lr=0.1, rel_hypergrad_lr=2.0)
    (lr1, (p1,)), (lr2, (p2,)) = _steps(opt, [theta], [[[1.0, -1.0]], [[2.0, 1.0]]])
    assert (lr1, p1) == (pytest.approx(0.1), pytest.approx([0.9, 2.1]))
    assert (lr2, p2) == (pytest.approx(0.3), pytest.approx([0.3, 1.8]))


def test_sgd_hd_weight_decay_enters_the_hypergradient() -> None:
    # wd = 0.5: g_eff = g + 0.5 theta.
    # t=1: g_eff = [1, -1] + 0.5 [1, 2] = [1.5, 0]; theta = [1, 2] - 0.1 [1.5, 0] = [0.85, 2]
    # t=2: g_eff = [2, 1] + 0.5 [0.85, 2] = [2.425, 2]; g_eff.prev = 2.425 * 1.5 = 3.6375
    #      alpha = 0.1 + 0.2 * 3.6375 = 0.8275; theta = [0.85, 2] - 0.8275 [2.425, 2]
    theta = _param([1.0, 2.0])
    opt = SGDHD([theta], lr=0.1, rel_hypergrad_lr=2.0, weight_decay=0.5)
    (_, (p1,)), (lr2, (p2,)) = _steps(opt, [theta], [[[1.0, -1.0]], [[2.0, 1.0]]])
    assert p1 == pytest.approx([0.85, 2.0])
    assert lr2 == pytest.approx(0.8275)
    assert p2 == pytest.approx([0.85 - 0.8275 * 2.425, 2.0 - 0.8275 * 2])


def test_sgd_hd_param_groups_adapt_separately() -> None:
    # Group a: alpha_0 = 0.1, beta = 0.1; group b: alpha_0 = 1, beta = 1 (rel_hypergrad_lr = 1).
    # t=1: no change of alpha; a = 1 - 0.1 * 1 = 0.9, b = 2 - 1 * 0.5 = 1.5.
    # t=2: a: g.g_prev = 2 * 1 = 2, alpha = 0.1 + 0.1 * 2 = 0.3, a = 0.9 - 0.3 * 2 = 0.3;
    #      b: g.g_prev = -1 * 0.5, alpha = 1 - 0.5 = 0.5, b = 1.5 + 0.5 * 1 = 2.0.
    # (One dot product over both groups, 2 - 0.5 = 1.5, would give alpha_a = 0.25.)
    a, b = _param([1.0]), _param([2.0])
    opt = SGDHD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}], rel_hypergrad_lr=1.0)
    _steps(opt, [a, b], [[[1.0], [0.5]], [[2.0], [-1.0]]])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 0.5])
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 1.0]
    assert (a.item(), b.item()) == pytest.approx((0.3, 2.0))


def test_adam_hd_two_steps_by_hand() -> None:
    # alpha_0 = 0.1, beta = 0.5 * 0.1 = 0.05, betas = (0.5, 0.75), eps = 1e-8 (negligible here).
    # t=1: h = 0, alpha = 0.1.  g1 = [2, -1]
    #   m1 = 0.5 g1 = [1, -0.5], v1 = 0.25 g1^2 = [1, 0.25]
    #   m^1 = m1 / 0.5 = [2, -1], v^1 = v1 / 0.25 = [4, 1], d1 = m^1 / sqrt(v^1) = [1, -1]
    #   theta1 = [1, -1] - 0.1 [1, -1] = [0.9, -0.9]
    # t=2: g2 = [2, 1]; g2.d1 = 2 - 1 = 1, h = -1, alpha = 0.1 + 0.05 * 1 = 0.15
    #   m2 = 0.5 m1 + 0.5 g2 = [1.5, 0.25], v2 = 0.75 v1 + 0.25 g2^2 = [1.75, 0.4375]
    #   m^2 = m2 / 0.75 = [2, 1/3], v^2 = v2 / 0.4375 = [4, 1], d2 = [1, 1/3]
    #   theta2 = [0.9, -0.9] - 0.15 [1, 1/3] = [0.75, -0.95]
    # t=3: g3 = [1, 3]; g3.d2 = 1 + 1 = 2, alpha = 0.15 + 0.05 * 2 = 0.25
    theta = _param([1.0, -1.0])
    opt = AdamHD([theta], lr=0.1, betas=(0.5, 0.75), rel_hypergrad_lr=0.5)
    got = _steps(opt, [theta], [[[2.0, -1.0]], [[2.0, 1.0]], [[1.0, 3.0]]])
    assert got[0][0] == pytest.approx(0.1, rel=1e-12)
    assert got[0][1][0] == pytest.approx([0.9, -0.9], rel=1e-7)
    assert got[1][0] == pytest.approx(0.15, rel=1e-7)
    assert got[1][1][0] == pytest.approx([0.75, -0.95], rel=1e-7)
    assert got[2][0] == pytest.approx(0.25, rel=1e-7)
    state = opt.state[theta]
    assert state["step"] == 3
    assert state["exp_avg"].tolist() == pytest.approx([1.25, 1.625])  # 0.5 m2 + 0.5 g3


@pytest.mark.parametrize(
    ("hd", "reference"),
    [
        (lambda p: SGDHD(p, lr=0.05, rel_hypergrad_lr=0.0), lambda p: torch.optim.SGD(p, lr=0.05)),
        (
            lambda p: AdamHD(p, lr=0.01, rel_hypergrad_lr=0.0, weight_decay=0.1),
            lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
        ),
    ],
    ids=["sgd", "adam"],
)
def test_zero_hypergradient_lr_is_the_base_optimizer(hd, reference) -> None:
    """With beta = 0 the LR never moves: the same trajectory as torch's optimizer."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=g) for _ in range(6)]
    start = torch.randn(3, 4, generator=g)
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    opts = hd([ours]), reference([theirs])
    for grad in grads:
        for p, opt in zip((ours, theirs), opts, strict=True):
            p.grad = grad.clone()
            opt.step()
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert opts[0].param_groups[0]["lr"] == opts[1].param_groups[0]["lr"]


@pytest.mark.parametrize("cls", [SGDHD, AdamHD])
def test_lr_stays_positive_under_adversarial_gradients(cls) -> None:
    """Gradients that flip sign every step (maximal disagreement), with a huge beta and huge
    gradients: the additive rule would drive alpha far below zero; it stays at the floor and
    finite."""
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = cls([theta], lr=0.01, rel_hypergrad_lr=100.0)
    lrs = []
    for t in range(40):
        sign = 1.0 if t % 2 == 0 else -1.0
        theta.grad = torch.full((5,), sign * 10.0 ** (t % 7), dtype=torch.float64)
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(math.isfinite(lr) and lr > 0 for lr in lrs)
    assert min(lrs) == pytest.approx(1e-12 * 0.01)
    assert torch.isfinite(theta).all()


def test_non_finite_hypergradient_leaves_lr_unchanged() -> None:
    theta = _param([1.0])
    opt = SGDHD([theta], lr=0.1)
    _steps(opt, [theta], [[[1.0]]])
    theta.grad = torch.tensor([math.inf], dtype=torch.float64)
    opt.step()
    assert opt.param_groups[0]["lr"] == 0.1


def test_external_lr_change_composes() -> None:
    """A scheduler or lrctl's controller that rescales group['lr'] moves alpha_{t-1}."""
    theta = _param([1.0, 2.0])
    opt = SGDHD([theta], lr=0.1, rel_hypergrad_lr=2.0)
    _steps(opt, [theta], [[[1.0, -1.0]]])
    opt.param_groups[0]["lr"] = 0.05  # e.g. LRController halves it
    (lr, _), *_ = _steps(opt, [theta], [[[2.0, 1.0]]])
    assert lr == pytest.approx(0.05 + 0.2 * 1)  # beta still relative to alpha_0 = 0.1


@pytest.mark.parametrize("cls", [SGDHD, AdamHD])
def test_state_dict_round_trip(cls) -> None:
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, generator=g) for _ in range(3)]
    a = torch.randn(4, generator=g).requires_grad_()
    opt_a = cls([a], lr=0.05, rel_hypergrad_lr=1.0)
    for grad in grads[:2]:
        a.grad = grad.clone()
        opt_a.step()
    b = a.detach().clone().requires_grad_()
    opt_b = cls([b], lr=1.0)  # other settings: all of them come back from the state dict
    buffer = io.BytesIO()  # through a file, as a checkpoint would (no shared tensors)
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    opt_b.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"] != 0.05
    assert opt_b.param_groups[0]["initial_lr"] == 0.05
    for p, opt in ((a, opt_a), (b, opt_b)):
        p.grad = grads[2].clone()
        opt.step()
    assert torch.equal(a, b)
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]


@pytest.mark.parametrize(
    "kwargs", [{"lr": 0.0}, {"rel_hypergrad_lr": -1.0}, {"lr_floor": 0.0}, {"weight_decay": -1}]
)
def test_bad_settings_raise(kwargs) -> None:
    with pytest.raises(ValueError):
        SGDHD([torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd_hd", "adam_hd"])
def test_trains_digits_mlp(optimizer: str) -> None:
    """Built by name through lrctl.training at the family's reference LR (its base optimizer's):
    the validation loss falls and the logged LR is the adapted one."""
    family = FAMILIES["digits_mlp"]()
    spec = family.spec(optimizer, steps=120, width=32, depth=1)
    assert spec.base_lr == family.reference_lr(optimizer.removesuffix("_hd"))
    history = train(family.build(spec), optimizer, spec.base_lr, 120, seed=0, val_every=40)
    assert not history.diverged
    assert history.final_val_loss < 0.5 * history.evals["val_loss"].iloc[0]
    lrs = history.steps["lr"]
    assert lrs.iloc[0] == spec.base_lr
    assert lrs.nunique() > 100  # it moved (nearly) every step
    assert (lrs > 0).all()
