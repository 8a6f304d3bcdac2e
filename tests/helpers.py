"""Small shared builders for the test-suite."""

from __future__ import annotations

import torch

from lrctl.actions import ActionSpec
from lrctl.controller_file import ControllerWeights
from lrctl.features import OBS_DIM


def constant_policy(
    action: float, spec: ActionSpec | None = None, hidden: int = 4
) -> ControllerWeights:
    """A controller whose action is always `action` (zero weights, bias = atanh-free constant)."""
    w1, b1 = torch.zeros(hidden, OBS_DIM), torch.zeros(hidden)
    w2, b2 = torch.zeros(1, hidden), torch.full((1,), float(action))
    return ControllerWeights(
        layers=[(w1, b1), (w2, b2)],
        obs_mean=torch.zeros(OBS_DIM),
        obs_var=torch.ones(OBS_DIM),
        obs_clip=10.0,
        obs_epsilon=1e-8,
        action_spec=spec or ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.25, 4.0)),
        provenance={"test": True},
    )


def random_policy(seed: int = 0, spec: ActionSpec | None = None) -> ControllerWeights:
    g = torch.Generator().manual_seed(seed)
    layers = [
        (torch.randn(8, OBS_DIM, generator=g), torch.randn(8, generator=g)),
        (torch.randn(1, 8, generator=g), torch.randn(1, generator=g)),
    ]
    return ControllerWeights(
        layers=layers,
        obs_mean=torch.randn(OBS_DIM, generator=g),
        obs_var=torch.rand(OBS_DIM, generator=g) + 0.1,
        obs_clip=5.0,
        obs_epsilon=1e-8,
        action_spec=spec or ActionSpec(interval=5, max_multiplier=1.5, lr_band=(0.01, 10.0)),
    )


def tiny_regression(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, x, y
