"""Property tests: arbitrary loss and gradient-norm streams (NaN, +-inf, 0, negatives, 1e-30,
1e30, sudden jumps) never give a non-finite feature or an LR outside the controller's band."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrctl.controller import LRController
from lrctl.features import CLIP, OBS_DIM, FeatureTracker
from tests.helpers import random_policy

nasty = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-30, 1e30, -1e30]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=1e-3, max_value=10.0),
)
K = 5


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.lists(nasty, min_size=K, max_size=K), min_size=1, max_size=6),
    st.lists(st.lists(nasty, min_size=K, max_size=K), min_size=6, max_size=6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_features_always_finite_and_in_range(loss_blocks, gnorm_blocks, log_lr, progress):
    tracker = FeatureTracker(1)
    for losses, gnorms in zip(loss_blocks, gnorm_blocks, strict=False):
        obs = tracker.update(np.array([losses]), np.array([gnorms]), log_lr, progress)
        assert obs.shape == (1, OBS_DIM) and obs.dtype == np.float32
        assert np.isfinite(obs).all()
        assert (np.abs(obs) <= CLIP).all()
        assert 0.0 <= obs[0, -1] <= 1.0


WEIGHTS = random_policy(7)


@settings(max_examples=1000, deadline=None)
@given(st.lists(nasty, min_size=1, max_size=40), st.floats(min_value=1e-6, max_value=10.0))
def test_controller_lr_always_finite_and_in_band(losses, base_lr):
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=base_lr, momentum=0.9)
    sched = LRController(opt, total_steps=len(losses), controller=WEIGHTS)
    lo, hi = WEIGHTS.action_spec.lr_band
    for value in losses:
        param.grad = torch.full_like(param, value)  # NaN and inf gradients too
        opt.step()
        sched.step(torch.tensor(value))
        lr = opt.param_groups[0]["lr"]
        assert math.isfinite(lr)
        assert base_lr * lo * (1 - 1e-9) <= lr <= base_lr * hi * (1 + 1e-9)
    assert math.isfinite(sched.get_last_lr()[0])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.lists(nasty, min_size=K, max_size=K), min_size=1, max_size=6),
    st.lists(st.lists(nasty, min_size=2, max_size=2), min_size=6, max_size=6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_one_run_fast_path_equals_the_array_path(loss_blocks, gnorm_blocks, log_lr, progress):
    """FeatureTracker(1) with scalar inputs takes the plain-Python path; two identical rows take
    the numpy path. Both must give the same features on the same (hostile) stream."""
    one, two = FeatureTracker(1), FeatureTracker(2)
    for losses, gnorms in zip(loss_blocks, gnorm_blocks, strict=False):
        fast = one.update(np.array([losses]), np.array([gnorms]), log_lr, progress)
        both = two.update(
            np.array([losses, losses]), np.array([gnorms, gnorms]), [log_lr] * 2, [progress] * 2
        )
        np.testing.assert_allclose(fast[0], both[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(both[0], both[1])
    for key, value in one.state_dict().items():
        np.testing.assert_allclose(value, two.state_dict()[key][:1], rtol=1e-9, atol=1e-9)
