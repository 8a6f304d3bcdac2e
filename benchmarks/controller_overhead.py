"""Controller overhead in a user's loop: wall time with `LRController` ÷ with `CosineAnnealingLR`.

Both loops are the loop from the README (zero_grad, forward, backward, step, scheduler step),
on the same model, data batches and optimizer; repeats are interleaved and the median ratio is
reported. Run with one thread so the two loops see the same machine:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/controller_overhead.py [--controller FILE]

`--with-v3` also times the controller widened to feature version 3 (the two new inputs get zero
weights, so it makes exactly the same decisions): the difference between the two is the cost of
measuring the last update's size and the last two gradients' cosine once per block.
`--family` restricts the cases to one model.

`--device cuda` runs the same loops on the GPU (models and batches there), plus a larger case
(a 4-layer causal transformer of width 256); the loop is timed between two
`torch.cuda.synchronize()` calls, and the in-call figure is then the host's time inside the
two calls (launches and bookkeeping: on a GPU the controller's kernels run asynchronously).
These small models are launch-bound on a GPU, the worst case for the controller's share.

Two figures per controller: the loop-time ratio (what a user sees, but on a shared virtual
machine it moves by several percent between identical loops) and the in-call ratio, 1 + (time
inside `optimizer.step()` and the scheduler's step with the controller, minus the same with
cosine) ÷ cosine's loop time: the controller's own work (hooks, bookkeeping, decisions), far
steadier, but blind to any cache effect the controller has on the rest of the loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lrctl.controller import LRController
from lrctl.controller_file import ControllerFileError, ControllerWeights, load_controller
from lrctl.features import obs_dim
from lrctl.resources import DEFAULT_CONTROLLER, data_path
from lrctl.tasks import FAMILIES

CASES = [
    ("digits_mlp", 2000, {"width": 64, "depth": 2}),
    ("char_mlp", 1000, {"width": 256, "depth": 2}),
    ("char_gru", 300, {"width": 128}),
]
CUDA_CASES = [("lm_transformer", 500, {"width": 256, "depth": 4})]


def widened_to_v3(weights: ControllerWeights) -> ControllerWeights:
    """`weights` reading features v3: zero input weights (mean 0, variance 1) on the two new
    features, so that it decides exactly as `weights` does; only the measurement differs."""
    extra = obs_dim(3) - weights.obs_mean.shape[0]
    (w0, b0), *rest = weights.layers
    return ControllerWeights(
        layers=[(torch.cat([w0, torch.zeros(w0.shape[0], extra)], 1), b0), *rest],
        obs_mean=torch.cat([weights.obs_mean, torch.zeros(extra)]),
        obs_var=torch.cat([weights.obs_var, torch.ones(extra)]),
        obs_clip=weights.obs_clip,
        obs_epsilon=weights.obs_epsilon,
        action_spec=weights.action_spec,
        provenance=weights.provenance,
        feature_version=3,
    )


def make_loop(family: str, steps: int, arch: dict[str, int], device: str = "cpu"):
    fam = FAMILIES[family]()
    spec = fam.spec("momentum", steps=steps, **arch)
    task = fam.build(spec)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(task.train), (steps, spec.batch_size), generator=g)
    batches = [(task.train.x[i].to(device), task.train.y[i].to(device)) for i in idx]
    cuda = device.startswith("cuda")

    def run(
        scheduler: str,
        controller: str | ControllerWeights | None,
        per_step: list[float] | None = None,
    ) -> tuple[float, float]:
        """(loop time, time inside optimizer.step() and the scheduler's step) in seconds; each
        step's time inside them is appended to `per_step` if given."""
        torch.manual_seed(0)
        model = task.model_fn().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=spec.base_lr, momentum=0.9)
        if scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            step = lambda _loss: sched.step()  # noqa: E731
        else:
            sched = LRController(opt, total_steps=steps, controller=controller)
            step = sched.step
        inside = 0.0
        clock = time.perf_counter
        if cuda:
            torch.cuda.synchronize()
        start = clock()
        for x, y in batches:
            opt.zero_grad()
            loss = task.loss_fn(model(x), y)
            loss.backward()
            t0 = clock()
            opt.step()
            step(loss)
            dt = clock() - t0
            inside += dt
            if per_step is not None:
                per_step.append(dt)
        if cuda:
            torch.cuda.synchronize()
        return clock() - start, inside

    return spec, run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--controller", help="controller file (default: the shipped one)")
    parser.add_argument(
        "--with-v3",
        action="store_true",
        help="also time the controller widened to feature version 3 (same decisions)",
    )
    parser.add_argument(
        "--family", choices=[c[0] for c in CASES + CUDA_CASES], help="only this case"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--device", default="cpu", help="device of the loops: cpu (default) or cuda[:N]"
    )
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here; use --device cpu")
    torch.set_num_threads(1)
    try:
        weights = load_controller(args.controller or data_path(DEFAULT_CONTROLLER))
    except ControllerFileError as err:
        parser.error(str(err))  # a clear message and exit 2, no traceback
    controllers = {f"controller (features v{weights.feature_version})": weights}
    if args.with_v3 and weights.feature_version < 3:
        controllers["controller (features v3)"] = widened_to_v3(weights)
    all_cases = CASES + (CUDA_CASES if args.device.startswith("cuda") else [])
    cases = [c for c in all_cases if args.family in (None, c[0])]
    where = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu"
    print(
        f"torch {torch.__version__}, {where}, 1 thread, {args.repeats} interleaved repeats, median"
    )
    for family, steps, arch in cases:
        spec, run = make_loop(family, steps, arch, args.device)
        run("cosine", None)
        for ctl in controllers.values():  # warm-up
            run("controller", ctl)
        times: dict[str, list[float]] = {"cosine": [], **{name: [] for name in controllers}}
        inside: dict[str, list[float]] = {name: [] for name in times}
        for _ in range(args.repeats):
            for name, ctl in [("cosine", None), *controllers.items()]:
                loop, calls = run("cosine" if ctl is None else "controller", ctl)
                times[name].append(loop)
                inside[name].append(calls)
        c = statistics.median(times["cosine"])
        c_in = statistics.median(inside["cosine"])
        print(
            f"{spec.describe()}: cosine {c / steps * 1e6:7.1f} us/step, of which "
            f"optimizer.step() + scheduler.step() {c_in / steps * 1e6:.1f}"
        )
        for name in controllers:
            k = statistics.median(times[name])
            ratios = [b / a for a, b in zip(times["cosine"], times[name], strict=True)]
            extra = statistics.median(inside[name]) - c_in
            print(
                f"  {name:<27} {k / steps * 1e6:7.1f} us/step  ratio {k / c:.3f} "
                f"(per-repeat median {statistics.median(ratios):.3f}); in-call "
                f"{extra / steps * 1e6:+.1f} us/step over cosine's = ratio {1 + extra / c:.3f}"
            )


if __name__ == "__main__":
    main()
