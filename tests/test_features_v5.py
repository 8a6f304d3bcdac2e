"""Features v5: version 4 plus `lr_response`, the slow average of the LR's moves signed by the
loss's answer.

Rows 0-15 are version 4's, with the same arithmetic; row 16 is checked against a hand-computed
average on both tracker paths, across a reset and a state dict, on hand-made runs whose
answer is known; tests/test_features_v4.py checks the env and `LRController` agree on all
17 rows, and tests/test_features_v3.py runs its batched-env, checkpoint, hostile-input and
controller-file checks on versions 3, 4 and 5.
"""

from __future__ import annotations

import numpy as np
import pytest

from lrctl.features import SLOW, FeatureTracker, feature_names, obs_dim
from tests.test_features_v4 import blocks

CHANGE, LR, RESPONSE = 4, 10, 16  # loss_change, log_lr_ratio, lr_response


def expected_response(log_lrs: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Row 16 by its definition, from the rows it reads: [blocks, runs] -> [blocks, runs]."""
    out, response = [], np.zeros(log_lrs.shape[1])
    for b in range(len(log_lrs)):
        if b:
            moved = (log_lrs[b] - log_lrs[b - 1]) * np.sign(changes[b] - changes[b - 1])
            response = response + SLOW * (moved - response)
        out.append(response)
    return np.array(out)


def test_version_5_is_version_4_plus_the_response() -> None:
    assert feature_names(5) == (*feature_names(4), "lr_response")
    assert obs_dim(5) == 17


@pytest.mark.parametrize("rows", [1, 3])
def test_rows_0_15_are_v4_and_row_16_follows_its_definition(rows: int) -> None:
    v4, v5 = FeatureTracker(rows, 4), FeatureTracker(rows, 5)
    rng = np.random.default_rng(0)
    outs = []
    for losses, gnorms, stats in blocks(0, n=8, rows=rows):
        log_lr = rng.uniform(-1, 1, rows)
        args = (losses, gnorms, log_lr, np.full(rows, 0.5), stats)
        if rows == 1:  # the one-run path (Python floats)
            args = (losses, gnorms, float(log_lr[0]), 0.5, stats)
        a, b = v4.update(*args), v5.update(*args)
        assert a.shape == (rows, 16) and b.shape == (rows, 17)
        np.testing.assert_array_equal(a, b[:, :16])
        outs.append(b.astype(np.float64))
    outs = np.array(outs)
    expected = expected_response(outs[:, :, LR], outs[:, :, CHANGE])
    np.testing.assert_allclose(outs[:, :, RESPONSE], expected, rtol=0, atol=1e-6)
    assert outs[0, :, RESPONSE].tolist() == [0.0] * rows  # starts at 0
    assert np.abs(expected).max() > 0.01  # a live average


def _run(log_lrs: list[float], losses: list[float]) -> np.ndarray:
    """Row 16 after each block of a one-run tracker fed blocks of constant loss."""
    tracker = FeatureTracker(1, 5)
    stats = [0.0, 1e-4, 1.0]
    return np.array(
        [tracker.update([[loss] * 4], [[1.0, 1.0]], lr, 0.5, [stats])[0, RESPONSE]
         for lr, loss in zip(log_lrs, losses, strict=True)]
    )  # fmt: skip


def test_the_sign_says_which_way_the_lr_should_go() -> None:
    # The LR doubles at block 2 and the loss falls faster after it (0.9 -> 0.8 of the block
    # before): a higher LR helped, the response turns negative.
    helped = _run([0.0, 0.0, np.log(2)], [1.0, 0.9, 0.72])
    assert helped[:2].tolist() == [0.0, 0.0]
    assert helped[2] == pytest.approx(-SLOW * np.log(2), rel=1e-6)
    # The same move after which the loss falls slower (0.9 -> 0.99): too high, positive.
    hurt = _run([0.0, 0.0, np.log(2)], [1.0, 0.9, 0.891])
    assert hurt[2] == pytest.approx(SLOW * np.log(2), rel=1e-6)
    # An LR that stands still says nothing, however the loss moves.
    assert _run([0.3] * 5, [1.0, 0.5, 0.45, 0.6, 0.2]).tolist() == [0.0] * 5


def test_reset_restarts_the_response_of_the_masked_runs_only() -> None:
    tracker = FeatureTracker(2, 5)
    lrs = ([0.0, 0.0], [0.5, 0.5], [1.0, 1.0])
    for (losses, gnorms, stats), lr in zip(blocks(1, n=3, rows=2), lrs, strict=True):
        out = tracker.update(losses, gnorms, lr, [0.5, 0.5], stats)
    kept = tracker.response[1]
    assert kept != 0.0
    tracker.reset(np.array([True, False]))
    losses, gnorms, stats = blocks(2, n=1, rows=2)[0]
    before_change = tracker.change_prev[1]
    out = tracker.update(losses, gnorms, [2.0, 2.0], [0.5, 0.5], stats)
    assert out[0, RESPONSE] == 0.0  # restarted: no move yet
    moved = (2.0 - 1.0) * np.sign(float(out[1, CHANGE]) - before_change)
    assert out[1, RESPONSE] == pytest.approx(kept + SLOW * (moved - kept), abs=1e-6)


def test_state_dict_carries_the_response_and_v4_state_dicts_stay_as_they_were() -> None:
    b0, b1, b2 = blocks(3, n=3)
    a = FeatureTracker(1, 5)
    a.update(b0[0], b0[1], 0.0, 0.2, b0[2])
    a.update(b1[0], b1[1], 0.7, 0.3, b1[2])
    state = a.state_dict()
    assert {"lr_prev", "change_prev", "response"} <= set(state)
    assert "response" not in FeatureTracker(1, 4).state_dict()
    b = FeatureTracker(1, 5)
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.update(*b2[:2], -0.2, 0.4, b2[2]),
                                  b.update(*b2[:2], -0.2, 0.4, b2[2]))  # fmt: skip
