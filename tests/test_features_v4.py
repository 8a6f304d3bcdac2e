"""Features v4: version 3 plus a slow moving average of the last two gradients' cosine.

Rows 0-14 are version 3's, with the same arithmetic; row 15 is checked against a hand-computed
average on both tracker paths, across a reset and a state dict, and in the env and
`LRController` (one observation function; v5's too). tests/test_features_v3.py runs its batched-env,
checkpoint, hostile-input and controller-file checks on both versions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lrctl.actions import ActionSpec
from lrctl.features import SLOW, FeatureTracker, feature_names, obs_dim
from lrctl.tasks import FAMILIES
from tests.helpers import random_policy
from tests.test_features_v3 import COSINE, env_and_controller_runs
from tests.test_layerwise import record_features

AVG = COSINE + 1  # index of grad_cosine_avg (15)
RESPONSE = feature_names(5).index("lr_response")  # 16


def blocks(seed: int, n: int = 6, rows: int = 1) -> list[tuple[np.ndarray, ...]]:
    """`n` random blocks of `rows` runs: losses [rows, 4], gradient norms [rows, 2] and
    step_stats [rows, 3] whose dot products give cosines of both signs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gnorms = rng.uniform(0.5, 2.0, (rows, 2))
        dots = rng.uniform(-1, 1, rows) * gnorms[:, 0] * gnorms[:, 1]
        stats = np.stack([dots, rng.uniform(1e-4, 1e-2, rows), rng.uniform(1, 4, rows)], axis=1)
        out.append((rng.uniform(0.5, 2.0, (rows, 4)), gnorms, stats))
    return out


def test_version_4_is_version_3_plus_the_average() -> None:
    assert feature_names(4) == (*feature_names(3), "grad_cosine_avg")
    assert obs_dim(4) == 16


@pytest.mark.parametrize("rows", [1, 3])
def test_rows_0_14_are_v3_and_row_15_averages_the_cosine(rows: int) -> None:
    v3, v4 = FeatureTracker(rows, 3), FeatureTracker(rows, 4)
    expected = None
    for losses, gnorms, stats in blocks(0, rows=rows):
        args = (losses, gnorms, np.zeros(rows), np.full(rows, 0.5), stats)
        if rows == 1:  # the one-run path (Python floats)
            args = (losses, gnorms, 0.0, 0.5, stats)
        a, b = v3.update(*args), v4.update(*args)
        assert a.shape == (rows, 15) and b.shape == (rows, 16)
        np.testing.assert_array_equal(a, b[:, :15])
        cosine = b[:, COSINE].astype(np.float64)
        expected = cosine if expected is None else expected + SLOW * (cosine - expected)
        np.testing.assert_allclose(b[:, AVG], expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 0.01  # a live average


def test_reset_restarts_the_average_of_the_masked_runs_only() -> None:
    tracker = FeatureTracker(2, 4)
    first, second = blocks(1, n=2, rows=2)
    tracker.update(first[0], first[1], [0.0, 0.0], [0.5, 0.5], first[2])
    before = tracker.cos_slow.copy()
    tracker.reset(np.array([True, False]))
    out = tracker.update(second[0], second[1], [0.0, 0.0], [0.5, 0.5], second[2])
    assert out[0, AVG] == pytest.approx(out[0, COSINE], abs=1e-6)  # restarted at its value
    kept = before[1] + SLOW * (out[1, COSINE] - before[1])
    assert out[1, AVG] == pytest.approx(kept, abs=1e-6)


def test_state_dict_carries_the_average_and_v3_state_dicts_stay_as_they_were() -> None:
    (b0, b1) = blocks(2, n=2)
    a = FeatureTracker(1, 4)
    a.update(b0[0], b0[1], 0.0, 0.2, b0[2])
    state = a.state_dict()
    assert "cos_slow" in state and "cos_slow" not in FeatureTracker(1, 3).state_dict()
    b = FeatureTracker(1, 4)
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.update(*b1[:2], 0.0, 0.4, b1[2]),
                                  b.update(*b1[:2], 0.0, 0.4, b1[2]))  # fmt: skip


@pytest.mark.parametrize("version", [4, 5])
def test_controller_decides_as_the_env(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random v4 (v5) policy: the same observations (all 16 or 17 rows) and LRs in the env
    and as an `LRController` on the same run."""
    spec = replace(
        FAMILIES["digits_mlp"]().spec("momentum", steps=60, batch_size=64, width=32, depth=1),
        base_lr=0.03,
    )
    spec_a = ActionSpec(interval=10, max_multiplier=2.0)
    weights = random_policy(version - 1, spec_a, feature_version=version)
    result, ctrl, run = env_and_controller_runs(spec, weights, feature_version=version)
    seen = record_features(ctrl, monkeypatch)
    run.advance(spec.steps, policy=ctrl)
    env_obs = np.stack([np.atleast_2d(o) for o in result.observations])
    assert env_obs.shape == (6, 1, obs_dim(version))
    np.testing.assert_allclose(np.stack(seen), env_obs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(run.lrs[:: spec.steps // 6], result.lrs, rtol=1e-5)
    assert np.abs(env_obs[1:, 0, AVG] - env_obs[1:, 0, COSINE]).max() > 1e-3  # an average
    if version == 5:  # the policy moved the LR, so lr_response is live
        assert np.abs(env_obs[2:, 0, RESPONSE]).max() > 1e-4
