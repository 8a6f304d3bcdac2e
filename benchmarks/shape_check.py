"""Which fixed LR shape a suite rewards at its reference LR: each shape's final validation loss
over cosine's.

A controller trained on a suite learns that suite's prior shape before it learns to read a
run. agents/default/iterations.md found v9's "climb" to be a slower decay than cosine, and this
check shows where that prior comes from and where it is wrong: for every (family, optimizer) of
a suite, at the family's middle spec and its reference LR (x1), the final validation loss under
each shape of `SHAPES`, divided by cosine's (geometric mean over seeds). Below 1: the shape
beats cosine there.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shape_check.py train_v1 [--seeds 2]

Each run is a plain torch `LambdaLR` over `lrctl.training.train`, so the numbers are those of
the benchmark's loop. The shapes are written out here: torch's schedulers give cosine and
linear decay, but not "hold, then cosine", and one `LambdaLR` keeps the five side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
from torch.optim.lr_scheduler import LambdaLR

from lrctl.actions import cosine_anchor
from lrctl.errors import LrctlError
from lrctl.tasks import load_suite
from lrctl.training import train


def _cosine(frac: float) -> float:
    """Cosine annealing from 1 to 0 at this fraction of the run (the controller's anchor)."""
    return cosine_anchor(frac, 1.0)


SHAPES: dict[str, Callable[[float], float]] = {
    "cosine": _cosine,
    "linear": lambda f: max(1.0 - f, 0.0),
    "hold_half": lambda f: 1.0 if f < 0.5 else _cosine(2.0 * (f - 0.5)),
    "constant": lambda f: 1.0,
    "cosine_x2": lambda f: 2.0 * _cosine(f),
}
"""LR factor as a function of the fraction of the run done: cosine from the base LR to 0,
linear decay, constant for half the run then cosine, constant, cosine from twice the LR."""


def shape_ratios(
    suite: str,
    optimizers: tuple[str, ...] = ("momentum", "adam"),
    seeds: int = 2,
    steps: int | None = None,
) -> list[dict]:
    """One row per (family, optimizer): each shape's geometric-mean final validation loss over
    cosine's, at the family's middle spec and reference LR (`steps` overrides its horizon)."""
    rows = []
    for family in load_suite(suite).families:
        for optimizer in optimizers:
            losses: dict[str, float] = {}
            for name, shape in SHAPES.items():
                finals = []
                for seed in range(seeds):
                    spec = family.spec(optimizer, 1.0, steps=steps, seed=seed)
                    total = spec.steps

                    def schedule(opt, shape=shape, total=total):
                        return LambdaLR(opt, lambda t: shape(t / total))

                    history = train(
                        family.build(spec), optimizer, spec.base_lr, total, seed,
                        policy_fn=schedule,
                    )  # fmt: skip
                    finals.append(history.final_val_loss)
                losses[name] = float(np.exp(np.mean(np.log(finals))))
            ratios = {k: v / losses["cosine"] for k, v in losses.items() if k != "cosine"}
            rows.append({"family": family.name, "optimizer": optimizer, **ratios})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table, ratios to three decimals."""
    names = [k for k in SHAPES if k != "cosine"]
    lines = [
        "| family | optimizer | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k]:.3f}" for k in names)
        lines.append(f"| {r['family']} | {r['optimizer']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="a suite name (train_v1, train, val) or a suite file")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per shape (default 2)")
    parser.add_argument(
        "--optimizers", nargs="+", default=["momentum", "adam"], help="default: momentum adam"
    )
    parser.add_argument("--steps", type=int, help="override every family's horizon (a quick look)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--seeds and --steps must be positive")
    try:
        rows = shape_ratios(args.suite, tuple(args.optimizers), args.seeds, args.steps)
    except LrctlError as exc:
        print(f"shape_check: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
