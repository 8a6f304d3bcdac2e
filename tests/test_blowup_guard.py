"""The runtime's blow-up guard (`ActionSpec.blowup_factor`, `LRController.handed_back_at`).

Loss streams are fed by hand, so that each test knows which block blows up: blocks of K = 5
steps, a constant policy that always raises the LR (a = +1), the slow scale term on."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrctl.actions import ActionSpec, cosine_anchor
from lrctl.bench.plan import controller_digest
from lrctl.controller import LRController
from lrctl.errors import UsageError
from tests.helpers import constant_policy

K = 5
SPEC = ActionSpec(mode="anchored", residual=0.5, scale_time=0.25, interval=K, grad_norm_steps=2)
GUARDED = replace(SPEC, blowup_factor=2.0)
T = 60


def _make(spec: ActionSpec, action: float = 1.0, **kwargs) -> LRController:
    """An LRController on SGD (base LR 0.1) over one parameter, with a constant policy."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    return LRController(opt, T, controller=constant_policy(action, spec), **kwargs)


def _feed(sched: LRController, losses: list[float]) -> list[float]:
    """Step `sched` with `losses` (one optimizer step each); the LR of every step."""
    opt = sched.optimizer
    (p,) = opt.param_groups[0]["params"]
    lrs = []
    for loss in losses:
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        (p.sum() * 0.0).backward()
        opt.step()
        sched.step(loss)
    return lrs


def _run(spec: ActionSpec, losses: list[float], action: float = 1.0, **kwargs):
    """Step a fresh controller (`_make`) with `losses`: the LR of every step, the controller."""
    sched = _make(spec, action, **kwargs)
    return _feed(sched, losses), sched


def _blocks(*levels: float) -> list[float]:
    return [float(v) for v in levels for _ in range(K)]


# Block losses: start 4, down to 1, then 20 (above the start, 20x the best), then 1 again.
BLOW_UP = _blocks(4, 2, 1, 1, 20, 1, 1, 1)


def test_a_blow_up_hands_the_run_back_to_the_anchor() -> None:
    lrs, sched = _run(GUARDED, BLOW_UP)
    assert sched.handed_back_at == 5 * K  # the decision after the 20x block
    # Before: the policy's raises, the same LRs as without the guard.
    unguarded, plain = _run(SPEC, BLOW_UP)
    np.testing.assert_allclose(lrs[: 5 * K], unguarded[: 5 * K], rtol=1e-12)
    assert unguarded[5 * K - 1] > 1.5 * 0.1 * cosine_anchor(5 * K - 1, T)  # raised above it
    # After: the anchor itself (the factor was > 1, so it is capped at 1), although the policy
    # still says +1 and the loss is back at its best.
    expected = [0.1 * cosine_anchor(t, T) for t in range(5 * K, len(BLOW_UP))]
    np.testing.assert_allclose(lrs[5 * K :], expected, rtol=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.1 * cosine_anchor(len(BLOW_UP), T))
    assert plain.handed_back_at is None and sched.last_action == 0.0


def test_a_blow_up_while_the_policy_cuts_is_left_to_it() -> None:
    """With the factor at or below 1 (the base schedule is what is too high, as at x10 of a
    good LR) the guard does nothing: the policy's cuts are what keeps such a run finite."""
    lrs, sched = _run(GUARDED, BLOW_UP, action=-1.0)
    unguarded, _ = _run(SPEC, BLOW_UP, action=-1.0)
    assert unguarded[5 * K - 1] < 0.5 * 0.1 * cosine_anchor(5 * K - 1, T)  # cut below it
    assert sched.handed_back_at is None and lrs == unguarded


@pytest.mark.parametrize(
    "levels",
    [
        (4, 2, 1, 1, 3, 1, 1, 1),  # 3x its best, but below the start
        (4, 2, 1.5, 1.5, 3.9, 1, 1, 1),  # 2.6x its best, just below the start
        (4, 4, 4, 4, 5, 4, 4, 4),  # above the start, but 1.25x its best
    ],
)
def test_no_hand_back_without_both_signs(levels) -> None:
    losses = _blocks(*levels)
    lrs, sched = _run(GUARDED, losses)
    unguarded, _ = _run(SPEC, losses)
    assert sched.handed_back_at is None
    assert lrs == unguarded


def test_a_non_finite_loss_hands_back_with_the_guard_and_cuts_without() -> None:
    losses = [*_blocks(4, 2, 1, 1), 1.0, 1.0, math.nan, 1.0, 1.0, *_blocks(1, 1, 1)]
    lrs, sched = _run(GUARDED, losses)
    assert sched.handed_back_at == 5 * K
    np.testing.assert_allclose(
        lrs[5 * K :], [0.1 * cosine_anchor(t, T) for t in range(5 * K, len(losses))], rtol=1e-12
    )
    plain_lrs, plain = _run(SPEC, losses)  # no guard: the largest cut, then the hold
    assert plain.handed_back_at is None and plain.last_action == 0.0  # +1 held at 0
    assert plain_lrs[5 * K] < plain_lrs[5 * K - 1] * math.exp(-0.5)  # the cut: at least e^-alpha


def test_every_group_is_handed_back() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    sched = LRController(opt, T, controller=constant_policy(1.0, GUARDED), per_group=True)
    for loss in BLOW_UP:
        opt.zero_grad()
        ((a.sum() + b.sum()) * 0.0).backward()
        opt.step()
        sched.step(loss)
    c = cosine_anchor(len(BLOW_UP), T)
    assert sched.handed_back_at == 5 * K
    assert sched.get_last_lr() == pytest.approx([0.1 * c, 0.01 * c])


def test_state_round_trip_keeps_the_hand_back() -> None:
    whole, _ = _run(GUARDED, BLOW_UP)
    _, first = _run(GUARDED, BLOW_UP[: 6 * K + 2])
    state = first.state_dict()
    assert state["version"] == 5 and state["handed_back_at"] == 5 * K

    resumed = _make(GUARDED)
    resumed.load_state_dict(state)
    assert resumed.handed_back_at == 5 * K
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(whole[6 * K + 2], rel=1e-12)
    old = {k: v for k, v in state.items() if k != "handed_back_at"} | {"version": 4}
    resumed.load_state_dict(old)  # a state from before the guard: not handed back
    assert resumed.handed_back_at is None


def test_spec_checks_and_old_files() -> None:
    for bad in (1.0, 0.5, -2.0, math.inf, math.nan):
        with pytest.raises(
            UsageError, match=r"blowup_factor must be 0 \(no guard\) or a finite number > 1"
        ):
            replace(SPEC, blowup_factor=bad)
    with pytest.raises(UsageError, match="anchored"):
        ActionSpec(blowup_factor=2.0)  # recursive: no base schedule to hand back to
    old = GUARDED.to_dict()
    del old["blowup_factor"]  # a file from before the guard
    assert ActionSpec.from_dict(old) == SPEC
    assert ActionSpec.from_dict(GUARDED.to_dict()) == GUARDED


def test_digest_of_an_unguarded_file_is_unchanged() -> None:
    """Run hashes in the bench store carry the controller's digest: a file without the guard
    hashes as it did before the field existed, one with it differently."""
    plain, guarded = constant_policy(0.0, SPEC), constant_policy(0.0, GUARDED)
    before = plain.action_spec.to_dict()
    del before["blowup_factor"]
    import hashlib
    import json

    h = hashlib.sha256()
    tensors = [plain.obs_mean, plain.obs_var, *(t for pair in plain.layers for t in pair)]
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([plain.obs_clip, plain.obs_epsilon, before], sort_keys=True).encode())
    assert controller_digest(plain) == h.hexdigest()[:16]
    assert controller_digest(guarded) != controller_digest(plain)


def test_the_guard_set_in_the_constructor_overrides_the_file() -> None:
    lrs, sched = _run(SPEC, BLOW_UP, blowup_guard=2.0)
    guarded, _ = _run(GUARDED, BLOW_UP)
    assert sched.handed_back_at == 5 * K and lrs == guarded
    lrs, sched = _run(GUARDED, BLOW_UP, blowup_guard=0)  # off, whatever the file says
    unguarded, _ = _run(SPEC, BLOW_UP)
    assert sched.handed_back_at is None and lrs == unguarded
    for bad, message in [(1.0, "or a finite number > 1"), ("x", "could not convert")]:
        with pytest.raises(UsageError, match=rf"^blowup_guard: .*{message}"):
            _run(SPEC, BLOW_UP, blowup_guard=bad)
    with pytest.raises(UsageError, match=r"^blowup_guard: .*anchored"):
        _run(replace(SPEC, mode="recursive", scale_time=0.0), BLOW_UP, blowup_guard=2.0)


class _Scripted:
    """A policy that plays `actions` in order, one per decision (then 0)."""

    def __init__(self, actions: list[float]) -> None:
        self.actions = list(actions)

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = self.actions.pop(0) if self.actions else 0.0
        return np.full((obs.shape[0], 1), a, np.float32)


def test_the_hand_back_keeps_the_runs_average_factor_when_it_had_cut() -> None:
    """A policy that cut the LR for most of the run and raised it just before the blow-up:
    the run goes on at the geometric mean of its blocks' factors (below 1), not the anchor."""
    sched = _make(SPEC, 0.0, blowup_guard=2.0)
    sched.weights = _Scripted([-1.0, -1.0, 1.0, 1.0])
    lrs = _feed(sched, BLOW_UP)
    factors = [lrs[b * K] / (0.1 * cosine_anchor(b * K, T)) for b in range(5)]
    assert factors[0] == pytest.approx(1.0) and factors[4] > 1.0 > factors[2]  # raised last
    kept = math.exp(np.mean(np.log(factors)))
    assert sched.handed_back_at == 5 * K and kept < 1.0
    after = [lrs[t] / (0.1 * cosine_anchor(t, T)) for t in range(5 * K, len(BLOW_UP))]
    np.testing.assert_allclose(after, kept, rtol=1e-9)


def test_a_resumed_run_hands_back_to_the_same_average() -> None:
    """The guard's memory (blocks seen, their log factors) travels in the state: a run saved
    before the blow-up and resumed hands back to the same factor as the uninterrupted one."""
    actions, cut = [-1.0, -1.0, 1.0, 1.0], 3 * K + 2
    whole = _make(SPEC, 0.0, blowup_guard=2.0)
    whole.weights = _Scripted(actions)
    lrs = _feed(whole, BLOW_UP)
    first = _make(SPEC, 0.0, blowup_guard=2.0)
    first.weights = _Scripted(actions)
    _feed(first, BLOW_UP[:cut])
    state = first.state_dict()
    assert state["guard_blocks_seen"] == 3 and len(state["guard_log_factor_sums"]) == 1
    resumed = _make(SPEC, 0.0, blowup_guard=2.0)
    resumed.weights = _Scripted(actions[3:])
    resumed.load_state_dict(state)
    rest = _feed(resumed, BLOW_UP[cut:])
    assert resumed.handed_back_at == whole.handed_back_at == 5 * K
    np.testing.assert_allclose(rest, lrs[cut:], rtol=1e-12)
