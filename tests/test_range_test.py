"""The LR range test: its schedule, early stop, state restore, suggestion rule, task runner,
plot and command line."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lrctl.cli import main
from lrctl.inner_run import InnerRun
from lrctl.range_test import (
    REFERENCE_SPAN,
    RangeTestResult,
    find_lr,
    range_test_task,
    suggest_lr,
)
from lrctl.tasks import FAMILIES, RunSpec, Split, Task, load_suite
from lrctl.training import train
from tests.helpers import tiny_regression

# --- the schedule and the loop --------------------------------------------------------------


def _still_step(optimizer: torch.optim.Optimizer, losses: list[float], seen: list | None = None):
    """A train_step that leaves the weights alone (zero gradients) and returns scripted
    losses, recording every param group's LR at each call in `seen`."""
    calls: list[None] = []

    def train_step() -> torch.Tensor:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        if seen is not None:
            seen.append([g["lr"] for g in optimizer.param_groups])
        calls.append(None)
        return torch.tensor(losses[len(calls) - 1])

    return train_step


def test_lr_rises_exponentially_from_min_to_max_in_every_group() -> None:
    model, _, _ = tiny_regression()
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}], lr=0.1
    )
    seen: list = []
    result = find_lr(optimizer, _still_step(optimizer, [1.0] * 10, seen), min_lr=1e-4,
                     max_lr=1e5, steps=10)  # fmt: skip
    # Nine decades in nine steps: x10 per step, written out.
    table = [1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5]
    np.testing.assert_allclose(result.lrs, table, rtol=1e-12)
    np.testing.assert_allclose(np.array(seen), np.array([table, table]).T, rtol=1e-12)
    assert result.steps == 10 and not result.stopped_early
    assert result.stop_reason == "reached max_lr 1e+05"
    # The optimizer's own LRs are back, and LambdaLR's initial_lr is gone again.
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]
    assert all("initial_lr" not in g for g in optimizer.param_groups)


def test_smoothed_loss_is_the_bias_corrected_ema() -> None:
    model, _, _ = tiny_regression()
    losses = [2.0, 1.0, 4.0, 3.0] + [1.0] * 6
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = find_lr(optimizer, _still_step(optimizer, losses), steps=10, smoothing=0.5)
    # beta = 0.5: avg_t = 0.5 avg_{t-1} + 0.5 loss_t, divided by 1 - 0.5^(t+1).
    assert result.smoothed[:4].tolist() == pytest.approx([2.0, 4 / 3, 20 / 7, 2.9333333])
    np.testing.assert_array_equal(result.losses, losses)


def _quadratic(lr_limit: float = 2.0):
    """Plain SGD on 0.5 w^2: stable for lr < 2, then |w| grows by |1 - lr| per step."""
    w = torch.nn.Parameter(torch.tensor([1.0]))

    def train_step() -> torch.Tensor:
        loss = 0.5 * (w * w).sum()
        loss.backward()
        return loss

    return w, train_step


def test_stops_early_when_the_smoothed_loss_diverges() -> None:
    w, step = _quadratic()
    optimizer = torch.optim.SGD([w], lr=0.1)
    result = find_lr(optimizer, step, min_lr=1e-3, max_lr=1e3, steps=60)
    assert result.stopped_early and result.steps < 60
    assert result.lrs[-1] > 2.0  # only past the stability limit
    best = result.smoothed[:-1].min()
    assert result.smoothed[-1] > 4.0 * best and result.losses[-1] > 4.0 * best
    assert (result.smoothed[:-1] <= 4.0 * np.minimum.accumulate(result.smoothed[:-1])).all()
    assert "stopped early" in result.stop_reason and "4 × its best" in result.stop_reason
    assert result.suggestion < 2.0  # a stable LR
    assert w.item() == 1.0  # restored


def test_stops_at_the_first_non_finite_loss() -> None:
    model, _, _ = tiny_regression()
    losses = [1.0] * 7 + [math.nan] + [1.0] * 12
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = find_lr(optimizer, _still_step(optimizer, losses), steps=20)
    assert result.stopped_early and result.steps == 8
    assert math.isnan(result.losses[-1]) and np.isfinite(result.losses[:-1]).all()
    assert "not finite" in result.stop_reason


def test_an_early_spike_that_lingers_in_the_ema_does_not_stop_the_test() -> None:
    model, _, _ = tiny_regression()
    losses = [1.0, 1000.0] + [1.0] * 98
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = find_lr(optimizer, _still_step(optimizer, losses), steps=100)
    # After the 10-step burn-in the average still holds the spike (> 4x its best of 1) ...
    assert result.smoothed[10] > 4.0 and result.smoothed.min() == pytest.approx(1.0)
    # ... but the raw loss is back at 1, so the test runs to max_lr.
    assert not result.stopped_early and result.steps == 100


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [p.grad.clone() for p in model.parameters()],
        "state": {
            i: {k: v.clone() for k, v in s.items()}
            for i, s in optimizer.state_dict()["state"].items()
        },
        "groups": optimizer.state_dict()["param_groups"],
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert all(torch.equal(x, y) for x, y in zip(a["grads"], b["grads"], strict=True))
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k]), (i, k)
    assert a["groups"] == b["groups"]


@pytest.mark.parametrize("fail_at", [None, 5])
def test_model_and_optimizer_are_restored_exactly(fail_at: int | None) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
    )
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # some Adam state, BatchNorm statistics and gradients to keep
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    before = _snapshot(model, optimizer)
    calls = 0

    def train_step() -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise RuntimeError("the user's loop broke")
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    if fail_at is None:
        result = find_lr(optimizer, train_step, model=model, min_lr=1e-5, max_lr=10.0, steps=30)
        assert result.steps > 10  # the weights really moved in between
    else:
        with pytest.raises(RuntimeError, match="loop broke"):
            find_lr(optimizer, train_step, model=model, steps=30)
    _assert_same(before, _snapshot(model, optimizer))


def test_bad_settings_are_refused() -> None:
    w, step = _quadratic()
    optimizer = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="steps must be at least 10"):
        find_lr(optimizer, step, steps=5)
    with pytest.raises(ValueError, match="0 < min_lr < max_lr"):
        find_lr(optimizer, step, min_lr=1.0, max_lr=0.1)
    with pytest.raises(TypeError, match="must return the loss"):
        find_lr(optimizer, lambda: None)
    assert optimizer.param_groups[0]["lr"] == 0.1


# --- the suggestion rule on synthetic curves ------------------------------------------------

LRS = np.logspace(-6, 1, 100)


def _valley(noise: float = 0.03, seed: int = 0) -> np.ndarray:
    """Flat at 2.3, the fastest fall at lr 1e-2, lowest near 10^-0.8, then a steep rise."""
    z = np.log10(LRS)
    log_loss = (
        math.log(2.3) - 3.0 / (1 + np.exp(-(z + 2.0) / 0.25)) + 8 * np.maximum(z + 0.8, 0) ** 2
    )
    return np.exp(log_loss + np.random.default_rng(seed).normal(0, noise, len(z)))


def test_clean_valley_suggests_the_steepest_descent_below_the_minimum() -> None:
    losses = _valley()
    lr, rule = suggest_lr(LRS, losses)
    assert rule.startswith("steepest descent")
    assert 10**-2.2 < lr < 10**-1.8  # the true steepest point is 1e-2
    assert lr < LRS[np.argmin(losses)]
    before = losses[: np.searchsorted(LRS, lr, side="right")]
    assert before.min() > 2 * losses.min()  # inside the descent, well above the floor


@pytest.mark.parametrize("spike", [[50.0], [50.0, 20.0, 30.0], [0.01, 80.0]])
def test_an_early_spike_does_not_move_the_suggestion(spike: list[float]) -> None:
    clean = _valley()
    spiked = clean.copy()
    spiked[1 : 1 + len(spike)] = spike
    assert suggest_lr(LRS, spiked) == suggest_lr(LRS, clean)


def test_a_jumpy_region_past_the_descent_is_not_taken_for_a_descent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As digits_cnn under Adam: a clean fall, then the loss jumps (to 5x its level) and falls
    # again, over and over, dipping lower than before: those falls are steeper than the real
    # descent, but they are the LR being too large.
    losses = _valley(noise=0.01)
    jumpy = LRS > 10**-1.5
    losses[jumpy] = np.exp(-4.6 * (np.arange(jumpy.sum()) % 12) / 11)  # 1.0 down to 0.01
    lr, rule = suggest_lr(LRS, losses)
    assert 10**-2.2 < lr < 10**-1.8
    assert f"first jump at {LRS[jumpy][0]:.3g}" in rule
    # Without the cut at the first jump the rule would pick a fall of the jumpy part.
    monkeypatch.setattr("lrctl.range_test.UNSTABLE_FACTOR", 1e9)
    assert suggest_lr(LRS, losses)[0] > LRS[jumpy][0]


@pytest.mark.parametrize("shape", ["rising", "flat"])
def test_no_descent_falls_back_to_the_minimum_over_ten(shape: str) -> None:
    noise = np.random.default_rng(1).normal(0, 0.02, len(LRS))
    trend = np.linspace(0, 2, len(LRS)) if shape == "rising" else 0.0
    losses = np.exp(math.log(2.3) + trend + noise)
    lr, rule = suggest_lr(LRS, losses)
    assert rule.startswith("fallback, no descent of 10% or more")
    # Windows of 10 points after a 10-point burn-in: the lowest window's centre LR / 10.
    windows = np.lib.stride_tricks.sliding_window_view(np.log(losses[10:]), 10).mean(1)
    lowest = int(np.argmin(windows))
    expected = math.exp(np.log(LRS[10 + lowest : 20 + lowest]).mean()) / 10
    assert lr == pytest.approx(max(expected, LRS[0]))
    if shape == "rising":
        assert lowest == 0


def test_divergence_at_once_gives_the_smallest_lr() -> None:
    losses = np.full(12, 2.0)
    losses[4] = math.inf
    lr, rule = suggest_lr(LRS[:12], losses)
    assert lr == LRS[0] and "lower min_lr" in rule


def test_negative_losses_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        suggest_lr(LRS, -_valley())


# --- the task runner --------------------------------------------------------------------------

DIGITS = FAMILIES["digits_mlp"]()
SPEC = DIGITS.spec("momentum", width=32, depth=1, batch_size=32)


class _PoisonedDigits(type(DIGITS)):
    """digits_mlp whose validation and test splits hold only NaN."""

    def build(self, spec: RunSpec) -> Task:
        task = super().build(spec)
        poison = [Split(torch.full_like(s.x, math.nan), s.y) for s in (task.val, task.test)]
        return replace(task, val=poison[0], test=poison[1])


@pytest.fixture(scope="module")
def digits_result() -> RangeTestResult:
    return range_test_task(DIGITS, SPEC, "momentum", seed=0, steps=40)


def test_range_test_task_suggests_a_finite_lr_inside_the_range(
    digits_result: RangeTestResult,
) -> None:
    reference = DIGITS.reference_lr("momentum")
    lo, hi = (reference * f for f in REFERENCE_SPAN)
    assert digits_result.lrs[0] == pytest.approx(lo) and digits_result.lrs[-1] <= hi * (1 + 1e-9)
    assert 1 < digits_result.steps <= 40 and len(digits_result.losses) == digits_result.steps
    assert math.isfinite(digits_result.suggestion) and lo <= digits_result.suggestion <= hi
    assert digits_result.rule.startswith("steepest descent")
    # The model and the first batch are InnerRun's under the same seed: same first loss.
    first = train(DIGITS.build(SPEC), "momentum", lo, steps=1, seed=0, val_every=1)
    assert digits_result.losses[0] == first.steps.train_loss[0]
    assert digits_result.losses[0] == pytest.approx(math.log(10), rel=0.05)


def test_range_test_task_never_reads_validation_or_test_data(
    digits_result: RangeTestResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_eval(*_args, **_kwargs):
        raise AssertionError("the range test evaluated a split")

    monkeypatch.setattr(InnerRun, "evaluate", no_eval)
    poisoned = range_test_task(_PoisonedDigits(), SPEC, "momentum", seed=0, steps=40)
    np.testing.assert_array_equal(poisoned.losses, digits_result.losses)
    assert poisoned.suggestion == digits_result.suggestion


def test_plot_is_written_atomically_and_frame_has_one_row_per_step(
    digits_result: RangeTestResult, tmp_path: Path
) -> None:
    out = digits_result.plot(tmp_path / "plots" / "range.png", reference_lr=0.03)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["range.png"]  # no temp file left
    frame = digits_result.to_frame()
    assert list(frame.columns) == ["step", "lr", "loss", "smoothed"]
    assert len(frame) == digits_result.steps and frame.step.tolist() == list(range(len(frame)))
    np.testing.assert_array_equal(frame.lr, digits_result.lrs)


# --- the command line -------------------------------------------------------------------------


def test_cli_find_lr_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "wine.png"
    assert main(["find-lr", "--task", "wine_mlp", "--steps", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    family = load_suite("eval").family("wine_mlp")
    expected = range_test_task(family, family.spec("momentum"), "momentum", seed=0, steps=30)
    shown = float(re.search(r"suggested LR\s+(\S+)", text).group(1))
    assert shown == pytest.approx(expected.suggestion, rel=1e-2)
    assert re.search(r"reference LR\s+0\.1 ", text)
    assert f"steps used    {expected.steps} of 30" in text
    assert f"wrote {out}" in text and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "family 'nope' is not in suite 'eval'"),
        (["--task", "wine_mlp", "--optimizer", "nope"], "unknown optimizer 'nope'; choose one of"),
        (["--task", "wine_mlp", "--steps", "5"], "--steps must be at least 10"),
        (["--task", "wine_mlp", "--out", "{file}/x.png"], "cannot write"),
        (["--task", "wine_mlp", "--out", "{dir}"], "is a folder"),
    ],
)
def test_cli_find_lr_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "dir").mkdir()
    args = [a.format(file=tmp_path / "file", dir=tmp_path / "dir") for a in args]
    assert main(["find-lr", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrctl: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    if args[:2] == ["--task", "nope"]:
        assert "digits_cnn, wine_mlp, char_gru" in err  # the valid names
    assert not list(tmp_path.rglob("*.png"))
