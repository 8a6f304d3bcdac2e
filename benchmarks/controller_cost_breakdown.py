"""Where `LRController` spends its time in a user's loop: the median time of each of its calls.

`benchmarks/controller_overhead.py` gives the ratio a user sees; this says what it is made of,
so that a change to the runtime can be aimed at the part that costs. It times the
controller's own calls (the gradient-norm hook, features v3's copies and dot products at the
block's last two steps, the feature update, the policy, the whole decision) inside the same
loop (same model, batches and optimizer), and the optimizer step plus the scheduler's step
by position in the block, against `CosineAnnealingLR`:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/controller_cost_breakdown.py [--controller FILE]

Run it with the machine otherwise idle: the figures are microseconds. `--device cuda` runs the
loop on the GPU: a call's time is then the host's (launches and bookkeeping; kernels run
asynchronously), and the decision's includes its one host read, which waits for the queued
step.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from controller_overhead import CASES, CUDA_CASES, make_loop

from lrctl.controller import LRController
from lrctl.controller_file import ControllerFileError, ControllerWeights, load_controller
from lrctl.features import FeatureTracker
from lrctl.last_steps import LastSteps
from lrctl.resources import DEFAULT_CONTROLLER, data_path

TIMED: list[tuple[type, str]] = [
    (LRController, "_capture_grad_norms"),
    (LRController, "_sync_hook"),
    (LastSteps, "keep_grads"),
    (LastSteps, "before_last_step"),
    (LastSteps, "after_last_step"),
    (LRController, "_read_block_cpu"),
    (LRController, "_block"),
    (LRController, "_block_stats"),
    (FeatureTracker, "update_one"),
    (FeatureTracker, "update"),
    (ControllerWeights, "act"),
    (LRController, "_decide"),
]
"""The calls timed, in the order a block makes them."""


def _timed(fn: Callable, log: list[float]) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        log.append(time.perf_counter() - start)
        return out

    return wrapper


def per_call(
    controller: ControllerWeights, family: str, steps: int, arch: dict, device: str = "cpu"
) -> dict:
    """Median µs and calls per block of each timed call over one run of the loop."""
    logs: dict[str, list[float]] = defaultdict(list)
    originals = [(cls, name, getattr(cls, name)) for cls, name in TIMED]
    try:
        for cls, name, fn in originals:
            setattr(cls, name, _timed(fn, logs[name]))
        _, run = make_loop(family, steps, arch, device)
        run("controller", controller)
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    blocks = max(1, len(logs["_decide"]))
    return {name: (statistics.median(v) * 1e6, len(v) / blocks) for name, v in logs.items() if v}


def by_position(
    controller: ControllerWeights,
    family: str,
    steps: int,
    arch: dict,
    interval: int,
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Median µs of optimizer.step() + the scheduler's step at each position of a block, with
    cosine and with the controller."""
    _, run = make_loop(family, steps, arch, device)
    out = {}
    for kind in ("cosine", "controller"):
        times: list[float] = []
        run(kind, controller if kind == "controller" else None, times)
        out[kind] = [statistics.median(times[i::interval]) * 1e6 for i in range(interval)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--controller", help="controller file (default: the shipped one)")
    parser.add_argument(
        "--family", choices=[c[0] for c in CASES + CUDA_CASES], default="digits_mlp"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")
    torch.set_num_threads(1)
    try:
        weights = load_controller(args.controller or data_path(DEFAULT_CONTROLLER))
    except ControllerFileError as err:
        parser.error(str(err))  # a clear message and exit 2, no traceback
    interval = weights.action_spec.interval
    family, steps, arch = next(c for c in CASES + CUDA_CASES if c[0] == args.family)
    per_call(weights, family, steps, arch, args.device)  # warm-up
    calls = per_call(weights, family, steps, arch, args.device)
    print(
        f"torch {torch.__version__}, {args.device}, 1 thread, {family} {steps} steps, "
        f"K = {interval}"
    )
    print(f"{'call':22s} {'median us':>10s} {'per block':>10s} {'us per block':>13s}")
    for name, (us, n) in calls.items():
        print(f"{name:22s} {us:10.1f} {n:10.2f} {us * n:13.1f}")
    print("(_decide includes _read_block_cpu or _block, _block_stats, update_one or update, act)")
    pos = by_position(weights, family, steps, arch, interval, args.device)
    extra = [c - b for c, b in zip(pos["controller"], pos["cosine"], strict=True)]
    print("optimizer.step() + scheduler step by position in the block (us):")
    print("  cosine     " + " ".join(f"{v:5.0f}" for v in pos["cosine"]))
    print("  controller " + " ".join(f"{v:5.0f}" for v in pos["controller"]))
    print(f"  extra per block {sum(extra):.0f} us = {sum(extra) / interval:.1f} us per step")


if __name__ == "__main__":
    main()
