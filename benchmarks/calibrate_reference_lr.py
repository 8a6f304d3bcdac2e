"""Calibrate each family's reference LR per optimizer: a coarse 1-3-10 grid, constant LR.

For every family of the shipped suites and every optimizer, train the family's middle spec
(`family.spec(optimizer)`: middle sizes, middle batch size, middle horizon of the suite's
ranges; a family is configured by the first suite of `SUITE_ORDER` that holds it, so the
revision-1 train families keep the horizons they were calibrated at) at constant LRs on a 1-3-10 ladder spanning 3 decades around the current reference LR,
and pick the LR with the lowest final loss on the VALIDATION split (mean over seeds; a diverged
run counts as infinite). When the best point is at an edge of the grid, the grid is extended
on that side. The chosen values are what `lrctl/tasks/families.py` holds as `reference_lrs`:
good LRs, not tuned optima (the ladder is coarse on purpose).

The eight revision-1 families' values come from the default command restricted to them
(about 7 minutes on one CPU core, char_gru half of it). The families added with the v2
suites were calibrated with one seed (`--seeds 1`: their middle horizons are long, up to
2,449 steps); the commands, as run, and their output are in results/calibration/README.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_reference_lr.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_reference_lr.py --families wine_mlp
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from lrctl.optimizers import SAMPLED_OPTIMIZERS
from lrctl.tasks import FAMILIES, TaskFamily, load_suite
from lrctl.training import train

SUITE_ORDER = ("train_v1", "eval", "val", "train")
"""Which suite configures a family that several hold (the first): the revision-1 families
were calibrated at train_v1's and eval's horizons."""


def ladder_value(k: int) -> float:
    """The k-th point of the 1-3-10 ladder: k = 0 -> 1, 1 -> 3, 2 -> 10, -1 -> 0.3, ..."""
    return (1.0 if k % 2 == 0 else 3.0) * 10.0 ** (k // 2)


def ladder_index(value: float) -> int:
    """The ladder point nearest to `value` (in log space)."""
    return round(2 * math.log10(value))


def final_val_loss(family: TaskFamily, optimizer: str, lr: float, seed: int) -> float:
    spec = family.spec(optimizer, lr_factor=lr / family.reference_lr(optimizer), seed=seed)
    history = train(family.build(spec), optimizer, lr, spec.steps, seed, val_every=spec.steps)
    return math.inf if history.diverged else history.final_val_loss


def calibrate(
    family: TaskFamily, optimizer: str, seeds: int, half_width: int, max_extend: int
) -> tuple[float, dict[float, float]]:
    """(best LR, {lr: mean final validation loss}) over the grid around the current reference."""
    centre = ladder_index(family.reference_lr(optimizer))
    lo, hi = centre - half_width, centre + half_width
    scores: dict[int, float] = {}

    def score(k: int) -> float:
        if k not in scores:
            losses = [final_val_loss(family, optimizer, ladder_value(k), s) for s in range(seeds)]
            scores[k] = sum(losses) / len(losses)
        return scores[k]

    for _ in range(max_extend + 1):
        for k in range(lo, hi + 1):
            score(k)
        best = min(range(lo, hi + 1), key=lambda k: (scores[k], k))
        if best == lo and math.isfinite(scores[best]):
            lo -= 2
        elif best == hi:
            hi += 2
        else:
            break
    best = min(scores, key=lambda k: (scores[k], k))
    return ladder_value(best), {ladder_value(k): scores[k] for k in sorted(scores)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", choices=sorted(FAMILIES), default=None)
    parser.add_argument("--optimizers", nargs="*", choices=SAMPLED_OPTIMIZERS, default=None)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per grid point (mean)")
    parser.add_argument(
        "--half-width", type=int, default=3, help="ladder points each side (3: 3 decades)"
    )
    parser.add_argument("--max-extend", type=int, default=2, help="grid extensions at an edge")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    by_name: dict[str, TaskFamily] = {}
    for suite in SUITE_ORDER:
        for f in load_suite(suite).families:
            by_name.setdefault(f.name, f)
    families = list(by_name.values())
    if args.families:
        families = [f for f in families if f.name in args.families]
    optimizers = args.optimizers or list(SAMPLED_OPTIMIZERS)
    print("command: " + " ".join(["python", *sys.argv]))
    print(
        f"grid: 1-3-10 ladder, +-{args.half_width} points around the current reference; "
        f"{args.seeds} seed(s); score = final validation loss at constant LR\n"
    )
    start = time.perf_counter()
    chosen: dict[str, dict[str, float]] = {}
    for family in families:
        spec = family.spec(optimizers[0])
        arch = ",".join(f"{k}={v}" for k, v in sorted(spec.arch.items())) or "-"
        print(f"## {family.name}: arch {arch}, batch {spec.batch_size}, T={spec.steps}")
        print(f"{'optimizer':10s} {'old':>7s} {'new':>7s}  grid (lr: final val loss)")
        chosen[family.name] = {}
        for opt in optimizers:
            t0 = time.perf_counter()
            best, scores = calibrate(family, opt, args.seeds, args.half_width, args.max_extend)
            chosen[family.name][opt] = best
            grid = "  ".join(
                f"{lr:g}:{loss:.3f}" if math.isfinite(loss) else f"{lr:g}:div"
                for lr, loss in scores.items()
            )
            print(
                f"{opt:10s} {family.reference_lr(opt):7g} {best:7g}  {grid}"
                f"  ({time.perf_counter() - t0:.0f} s)"
            )
        print()

    print(f"## reference LRs (total {time.perf_counter() - start:.0f} s)")
    print(f"{'family':22s} " + " ".join(f"{o:>8s}" for o in optimizers))
    for name, refs in chosen.items():
        print(f"{name:22s} " + " ".join(f"{refs[o]:8g}" for o in optimizers))
    print("\n# for lrctl/tasks/families.py")
    for name, refs in chosen.items():
        body = ", ".join(f'"{o}": {refs[o]:g}' for o in optimizers)
        print(f"{name}: {{{body}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
