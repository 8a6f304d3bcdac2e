"""What a controller observes on a suite's tasks: each feature's mean per third of the run.

Every lever since L33 (agents/default/iterations.md) trades two val tasks against each other:
friedman2 wants a higher LR for longer, the post-LN transformer with Adam wants less. This
script shows whether any feature tells such runs apart before the policy has to act: for each
(family, optimizer) of a suite, at the family's middle spec and its reference LR (x1), it runs
the controller once per seed in a plain loop (`lrctl.training.train`, the benchmark's loop),
records the observation and the action of every decision, and prints each feature's mean over
the first, middle and last third of the decisions, with the mean action.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/feature_trace.py val \
        [--controller FILE] [--families friedman2_bn_mlp postln_transformer] [--seeds 1]

Run it on the val or train suites only: the eval suite is read for the final report.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from lrctl.controller import LRController
from lrctl.controller_file import ControllerWeights, controller_weights
from lrctl.errors import LrctlError
from lrctl.features import feature_names
from lrctl.tasks import load_suite
from lrctl.training import train


class RecordingWeights:
    """A controller's weights that keep every observation they act on, and the actions."""

    def __init__(self, weights: ControllerWeights) -> None:
        self.weights = weights
        self.observations: list[np.ndarray] = []
        self.actions: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self.weights, name)

    def act(self, obs):
        actions = self.weights.act(obs)
        self.observations.append(np.array(obs, dtype=np.float64).reshape(-1))
        self.actions.append(float(actions.reshape(-1)[0]))
        return actions


def trace(
    weights: ControllerWeights, suite: str, families: list[str] | None, optimizers: list[str],
    seeds: int,
) -> pd.DataFrame:  # fmt: skip
    """One row per (family, optimizer, third of the run): mean of each feature and action."""
    names = feature_names(weights.feature_version)
    rows = []
    loaded = load_suite(suite)
    for family in [loaded.family(f) for f in families] if families else loaded.families:
        for optimizer in optimizers:
            per_third: list[list[np.ndarray]] = [[], [], []]
            for seed in range(seeds):
                spec = family.spec(optimizer, 1.0, seed=seed)
                recorder = RecordingWeights(weights)

                def policy(opt, recorder=recorder, total=spec.steps):
                    controller = LRController(opt, total_steps=total, controller=weights)
                    controller.weights = recorder  # read only to act, after construction
                    return controller

                train(family.build(spec), optimizer, spec.base_lr, spec.steps, seed, policy)
                obs = np.column_stack([np.array(recorder.observations), recorder.actions])
                for i, part in enumerate(np.array_split(obs, 3)):
                    per_third[i].append(part)
            for i, parts in enumerate(per_third):
                mean = np.concatenate(parts).mean(axis=0)
                rows.append(
                    {"family": family.name, "optimizer": optimizer, "third": i + 1}
                    | dict(zip([*names, "action"], mean.round(3), strict=True))
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="a suite name (val, train_v1, train) or a suite file")
    parser.add_argument("--controller", help="controller file (default: the shipped one)")
    parser.add_argument("--families", nargs="+", help="only these families of the suite")
    parser.add_argument("--optimizers", nargs="+", default=["momentum", "adam"])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per pair (default 1)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be positive")
    try:
        weights = controller_weights(args.controller)
        table = trace(weights, args.suite, args.families, args.optimizers, args.seeds)
    except LrctlError as exc:
        print(f"feature_trace: {exc}", file=sys.stderr)
        return 2
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
