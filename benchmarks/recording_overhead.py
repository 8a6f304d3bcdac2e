"""What recording costs: `InnerRun.advance` against a bare hand-written training loop.

Both loops train the same model (same initialisation), on the same minibatches, with the same
optimizer, for the same number of steps; the bare loop records nothing. Runs are interleaved
(the order alternates each repeat) and the median of the per-repeat ratios is reported, against the idiomatic loop and against
a lean one (see `bare_loop`). The
two loops must end with bitwise-identical parameters, which shows they did the same work and
that recording does not change training.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recording_overhead.py --steps 2000 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from lrctl.inner_run import InnerRun
from lrctl.optimizers import make_optimizer
from lrctl.tasks import FAMILIES, RunSpec, Task


def recorded_loop(task: Task, spec: RunSpec, steps: int) -> tuple[float, list[torch.Tensor]]:
    """Seconds spent in `InnerRun.advance(steps)`, and the final parameters."""
    run = InnerRun(task, spec.optimizer, spec.base_lr, steps, spec.seed)
    start = time.perf_counter()
    run.advance(steps)
    elapsed = time.perf_counter() - start
    return elapsed, [p.detach().clone() for p in run.params]


def bare_loop(
    task: Task, spec: RunSpec, steps: int, lean: bool = False
) -> tuple[float, list[torch.Tensor]]:
    """Seconds spent in a plain loop over the same batches, and the final parameters.

    The idiomatic loop (`lean=False`) is what a user writes: `optimizer.zero_grad()`,
    `x[idx]`. The lean loop clears gradients and gathers rows the way `InnerRun` does
    (`p.grad = None`, `index_select`), so against it the ratio is the cost of recording alone.
    """
    # Same initialisation and batch order as InnerRun: the seed drives both.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = task.model_fn()
    params = list(model.parameters())
    optimizer = make_optimizer(spec.optimizer, params, spec.base_lr)
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all, bs = task.train.x, task.train.y, min(task.batch_size, len(task.train))
    n_batches = len(task.train) // bs
    start = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.randperm(len(task.train), generator=gen)
        for i in range(min(n_batches, steps - done)):
            idx = perm[i * bs : (i + 1) * bs]
            if lean:
                x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
                for p in params:
                    p.grad = None
            else:
                x, y = x_all[idx], y_all[idx]
                optimizer.zero_grad(set_to_none=True)
            loss = task.loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        done += min(n_batches, steps - done)
    elapsed = time.perf_counter() - start
    return elapsed, [p.detach().clone() for p in params]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="digits_mlp", choices=sorted(FAMILIES))
    parser.add_argument("--optimizer", default="momentum")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    family = FAMILIES[args.family]()
    spec = family.spec(args.optimizer, steps=args.steps)
    task = family.build(spec)
    print("command: " + " ".join(["python", *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {spec.describe()}")

    recorded_loop(task, spec, 200)  # warm-up (allocator, first-call dispatch)
    bare_loop(task, spec, 200)
    bare_loop(task, spec, 200, lean=True)
    loops = {
        "recorded": lambda: recorded_loop(task, spec, args.steps),
        "bare": lambda: bare_loop(task, spec, args.steps),
        "lean": lambda: bare_loop(task, spec, args.steps, lean=True),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(args.repeats):
        order = list(loops) if r % 2 == 0 else list(reversed(loops))  # interleaved
        params = {}
        for name in order:
            elapsed, params[name] = loops[name]()
            times[name].append(elapsed)
        for name in ("bare", "lean"):
            same = all(
                torch.equal(a, b) for a, b in zip(params["recorded"], params[name], strict=True)
            )
            if not same:
                raise SystemExit(f"the recorded and {name} loops ended with different parameters")
        print(
            f"repeat {r + 1}/{args.repeats}: recorded {times['recorded'][-1]:.3f} s, "
            f"bare {times['bare'][-1]:.3f} s, lean bare {times['lean'][-1]:.3f} s"
        )

    us = 1e6 / args.steps
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = statistics.median(r / b for r, b in zip(times["recorded"], times["bare"], strict=True))
    ratio_lean = statistics.median(
        r / b for r, b in zip(times["recorded"], times["lean"], strict=True)
    )
    print(
        f"median over {args.repeats} repeats of {args.steps} steps: "
        + ", ".join(f"{name} {t:.3f} s ({t * us:.0f} us/step)" for name, t in med.items())
    )
    print(f"recorded / bare (idiomatic loop):  {ratio:.3f}   target <= 1.05")
    print(f"recorded / lean bare (same zeroing and gathering): {ratio_lean:.3f}   recording alone")
    print("final parameters identical in all three loops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
