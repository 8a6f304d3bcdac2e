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
