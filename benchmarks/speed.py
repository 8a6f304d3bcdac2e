"""Speed of meta-training's environments and of the runtime controller, from one run.

Inner training steps per second on one task spec (digits_mlp, or --family, at the middle of
its ranges, one optimizer), each side running whole episodes at action 0:

  (a) a bare training loop (benchmarks/env_throughput.bare_loop), one thread;
  (b) one LRControlEnv (benchmarks/env_throughput.env_episode), one thread;
  (c) SubprocVecEnv, one LRControlEnv per CPU core (each process one thread), as
      `lrctl train --no-batched` runs them;
  (d) BatchedLRControlEnv with N members (N = --sizes), one process with --threads threads;

then (d at its best N) / (c), the target being >= 4. Last, the runtime controller's overhead
in a user's loop (benchmarks/controller_overhead.make_loop): time per step with LRController
and with torch's CosineAnnealingLR, on the digits MLP and on a larger model (char_mlp, width
256). Every figure is the median over --repeats interleaved repeats, after a warm-up.

    .venv/bin/python benchmarks/speed.py [--sizes 16,64,256] [--repeats 3] [--threads 1]
        [--family digits_mlp] [--optimizer momentum] [--steps N] [--no-overhead]

--threads > 1 lets the batched env use intra-op parallelism: worth trying on an idle machine
only (when other processes hold the cores, OpenMP threads wait on each other).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from controller_overhead import make_loop
from env_throughput import bare_loop, env_episode

from lrctl.batched_env import BatchedLRControlEnv
from lrctl.env import LRControlEnv
from lrctl.ppo import _env_factory
from lrctl.tasks import FAMILIES, FamilyConfig, RunSpec, Suite

OVERHEAD_CASES = [("digits_mlp", 2000, {"width": 64, "depth": 2}), ("char_mlp", 1000, {"width": 256, "depth": 2})]  # fmt: skip


def medians(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each side over `repeats` rounds (one warm-up each, then interleaved)."""
    for run in sides.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            times[name].append(run())
    return {name: statistics.median(t) for name, t in times.items()}


def with_threads(threads: int, run: Callable[[], float]) -> Callable[[], float]:
    def timed() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run()
        finally:
            torch.set_num_threads(before)

    return timed


def episodes(venv: VecEnv, spec: RunSpec) -> float:
    """Seconds for one episode of `spec` in every slot of `venv` (other seeds), all at once."""
    venv.set_options([{"spec": replace(spec, seed=spec.seed + i)} for i in range(venv.num_envs)])
    actions = np.zeros((venv.num_envs, 1), np.float32)
    start = time.perf_counter()
    venv.reset()
    done = np.zeros(venv.num_envs, bool)
    while not done.all():
        _, _, dones, _ = venv.step(actions)
        done |= dones
    return time.perf_counter() - start


def one_spec_suite(spec: RunSpec) -> Suite:
    """A suite whose only draw is `spec` (any seed): what the envs' automatic resets at the end
    of an episode draw, so that every side trains that one spec."""
    config = FamilyConfig(
        name=spec.family, optimizers=(spec.optimizer,), lr_range=(spec.lr_factor,) * 2,
        steps=(spec.steps,) * 2, batch_sizes=(spec.batch_size,),
        **{f"{k}s": (v,) for k, v in spec.arch.items()},
    )  # fmt: skip
    return Suite("one-spec", Path("."), (FAMILIES[spec.family](config),))


def throughput(args: argparse.Namespace) -> None:
    family = FAMILIES[args.family]()
    spec = family.spec(args.optimizer, steps=args.steps)
    task = family.build(spec)
    suite = one_spec_suite(spec)
    cores = os.cpu_count() or 1
    print(f"task: {spec.describe()}  (K = 10, episodes at action 0)")
    print(
        f"machine: {cores} CPU cores, torch {torch.__version__}; medians of {args.repeats} repeats"
    )
    single = LRControlEnv(suite)
    venv = SubprocVecEnv(
        [_env_factory(suite, single.action_spec, i) for i in range(cores)], start_method="spawn"
    )
    sides: dict[str, Callable[[], float]] = {
        "(a) bare loop": with_threads(1, lambda: bare_loop(task, spec)),
        "(b) single env": with_threads(1, lambda: env_episode(single, spec)),
        f"(c) SubprocVecEnv x{cores}": lambda: episodes(venv, spec),
    }
    steps = {"(a) bare loop": spec.steps, "(b) single env": spec.steps}
    steps[f"(c) SubprocVecEnv x{cores}"] = cores * spec.steps
    for n in args.sizes:
        env = BatchedLRControlEnv(n, suite, spec=spec, redraw_after=0)
        name = f"(d) batched N={n}"
        sides[name] = with_threads(args.threads, lambda env=env: episodes(env, spec))
        steps[name] = n * spec.steps
    try:
        seconds = medians(sides, args.repeats)
    finally:
        venv.close()
    rates = {name: steps[name] / s for name, s in seconds.items()}
    for name, rate in rates.items():
        threads = args.threads if name.startswith("(d)") else 1
        print(f"  {name:<24} {rate:9.0f} inner steps/s   ({threads} thread{'s' * (threads > 1)}"
              f"{' per process' if name.startswith('(c)') else ''})")  # fmt: skip
    best = max((r, name) for name, r in rates.items() if name.startswith("(d)"))
    subproc = rates[f"(c) SubprocVecEnv x{cores}"]
    print(f"  (d best) / (c) = {best[0] / subproc:.2f}  ({best[1]}; target >= 4)")
    single_rate = rates["(b) single env"]
    print(f"  (d best) / (b) = {best[0] / single_rate:.2f}  (per core, vs one env)")
    if subproc < 0.75 * cores * single_rate:
        print(f"  note: (c) < 0.75 x {cores} x (b): other processes share the cores, so (c) and"
              " the ratio to it are off; (d best) / (b) is the steadier figure")  # fmt: skip


def overhead(args: argparse.Namespace) -> None:
    print("controller overhead in a user loop (1 thread): LRController vs CosineAnnealingLR")
    torch.set_num_threads(1)
    for family, steps, arch in OVERHEAD_CASES:
        spec, run = make_loop(family, steps, arch)
        seconds = medians(
            {
                "cosine": lambda run=run: run("cosine", None),
                "controller": lambda run=run: run("controller", None),
            },
            args.repeats,
        )
        cos, ctl = seconds["cosine"] / steps * 1e6, seconds["controller"] / steps * 1e6
        print(f"  {spec.describe():<66} cosine {cos:7.1f} us/step  controller {ctl:7.1f} us/step"
              f"  (+{ctl - cos:5.1f} us, ratio {ctl / cos:.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[16, 64, 256],
        help="members N of the batched env, comma-separated (default 16,64,256)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the batched env")
    parser.add_argument("--family", default="digits_mlp", help="task family (its middle spec)")
    parser.add_argument("--optimizer", default="momentum", help="the spec's optimizer")
    parser.add_argument("--steps", type=int, default=None, help="horizon (default: the spec's)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the controller part")
    args = parser.parse_args()
    throughput(args)
    if not args.no_overhead:
        overhead(args)


if __name__ == "__main__":
    main()
