"""Small shared builders for the test-suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from lrctl.actions import ActionSpec
from lrctl.controller_file import ControllerWeights
from lrctl.features import FEATURE_VERSION, obs_dim


def constant_policy(
    action: float,
    spec: ActionSpec | None = None,
    hidden: int = 4,
    feature_version: int = FEATURE_VERSION,
) -> ControllerWeights:
    """A controller whose action is always `action` (zero weights, bias = atanh-free constant)."""
    d = obs_dim(feature_version)
    w1, b1 = torch.zeros(hidden, d), torch.zeros(hidden)
    w2, b2 = torch.zeros(1, hidden), torch.full((1,), float(action))
    return ControllerWeights(
        layers=[(w1, b1), (w2, b2)],
        obs_mean=torch.zeros(d),
        obs_var=torch.ones(d),
        obs_clip=10.0,
        obs_epsilon=1e-8,
        action_spec=spec or ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.25, 4.0)),
        provenance={"test": True},
        feature_version=feature_version,
    )


def random_policy(
    seed: int = 0, spec: ActionSpec | None = None, feature_version: int = FEATURE_VERSION
) -> ControllerWeights:
    """A randomly initialised controller (8 tanh units) for `feature_version`'s observation;
    the v2 one is drawn exactly as before the feature version was a choice."""
    g = torch.Generator().manual_seed(seed)
    d = obs_dim(feature_version)
    layers = [
        (torch.randn(8, d, generator=g), torch.randn(8, generator=g)),
        (torch.randn(1, 8, generator=g), torch.randn(1, generator=g)),
    ]
    return ControllerWeights(
        layers=layers,
        obs_mean=torch.randn(d, generator=g),
        obs_var=torch.rand(d, generator=g) + 0.1,
        obs_clip=5.0,
        obs_epsilon=1e-8,
        action_spec=spec or ActionSpec(interval=5, max_multiplier=1.5, lr_band=(0.01, 10.0)),
        feature_version=feature_version,
    )


def tiny_regression(seed: int = 0, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, x, y


def config_from_cli(monkeypatch, argv: list[str]):
    """The validated `TrainConfig` that `lrctl <argv>` (a `train` command) would train with;
    `lrctl.ppo.train` is replaced, so nothing trains and no run folder is written."""
    import pytest

    import lrctl.ppo
    from lrctl.cli import main

    class Captured(Exception):
        pass

    def fake_train(cfg, run_dir, resume=False, progress_bar=True, extend_to=None):
        cfg.validate()
        raise Captured(cfg)

    monkeypatch.setattr(lrctl.ppo, "train", fake_train)
    with pytest.raises(Captured) as caught:
        main(argv)
    return caught.value.args[0]


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The module of `benchmarks/NAME.py` (benchmarks are scripts, not a package), registered in
    sys.modules so that its dataclasses can look their module up."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def noisy_quadratic_suite(folder: Path, steps: int) -> Path:
    """A one-family suite file in `folder`: noisy_quadratic at exactly `steps` steps, batch 8
    (the smallest real runs, for the benchmark scripts' tests)."""
    path = folder / "tiny.toml"
    path.write_text(
        'version = 1\nname = "tiny"\n\n[[family]]\nname = "noisy_quadratic"\n'
        f"steps = [{steps}, {steps}]\nbatch_sizes = [8]\n"
    )
    return path
