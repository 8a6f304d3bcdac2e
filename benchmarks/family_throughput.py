"""Batched throughput per family: inner steps/s of one LRControlEnv against a population of
N members (BatchedLRControlEnv), for every family a population can train.

Each family runs the middle spec of the suite that holds it (envs/*.toml; its horizon cut to
--steps), SGD with momentum, whole episodes at action 0, one torch thread. Figures are medians
over --repeats interleaved repeats after a warm-up (benchmarks/speed.py's method).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_throughput.py [--sizes 16,64]
        [--steps 200] [--repeats 3] [--families teacher_mlp char_transformer ...]

Prints one row per family: single env, N = each size, and the best ratio batched / single.
On a machine that other processes share, every figure is low by the same factor; the ratios
are the steadier figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_throughput import env_episode
from speed import episodes, medians, one_spec_suite, with_threads

from lrctl.batched_env import BatchedLRControlEnv
from lrctl.env import LRControlEnv
from lrctl.tasks import FAMILIES, TaskFamily, load_suite
from lrctl.tasks.suite import SUITE_NAMES


def suite_families() -> dict[str, TaskFamily]:
    """Every family as the first shipped suite that holds it configures it."""
    out: dict[str, TaskFamily] = {}
    for name in ("train_v1", *SUITE_NAMES):
        for family in load_suite(name).families:
            out.setdefault(family.name, family)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[16, 64],
        help="population sizes N, comma-separated (default 16,64)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=200, help="episode horizon (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side")
    parser.add_argument("--optimizer", default="momentum")
    parser.add_argument("--families", nargs="*", default=None, help="default: every batchable")
    args = parser.parse_args()
    torch.set_num_threads(1)
    families = suite_families()
    names = args.families or [n for n in families if FAMILIES[n].batchable]
    print(f"{args.optimizer}, {args.steps}-step episodes at action 0, 1 thread, medians of "
          f"{args.repeats}; inner steps/s")  # fmt: skip
    header = f"{'family':20s} {'spec':44s} {'single':>8s} " + " ".join(
        f"{'N=' + str(n):>8s}" for n in args.sizes
    )
    print(header + "   best/single")
    for name in names:
        family = families[name]
        spec = replace(family.spec(args.optimizer), steps=args.steps)
        suite = one_spec_suite(spec)
        single = LRControlEnv(suite)
        sides = {
            "single": with_threads(1, lambda single=single, spec=spec: env_episode(single, spec))
        }
        steps = {"single": spec.steps}
        for n in args.sizes:
            env = BatchedLRControlEnv(n, suite, spec=spec, redraw_after=0)
            sides[f"N={n}"] = with_threads(1, lambda env=env, spec=spec: episodes(env, spec))
            steps[f"N={n}"] = n * spec.steps
        seconds = medians(sides, args.repeats)
        rates = {k: steps[k] / s for k, s in seconds.items()}
        best = max(rates[f"N={n}"] for n in args.sizes)
        arch = ",".join(f"{k}={v}" for k, v in sorted(spec.arch.items()))
        desc = f"[{arch}] bs={spec.batch_size}"
        print(f"{name:20s} {desc:44s} {rates['single']:8.0f} "
              + " ".join(f"{rates[f'N={n}']:8.0f}" for n in args.sizes)
              + f"   {best / rates['single']:6.1f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
