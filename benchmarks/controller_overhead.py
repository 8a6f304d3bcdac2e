"""Controller overhead in a user's loop: wall time with `LRController` ÷ with `CosineAnnealingLR`.

Both loops are the loop from the README (zero_grad, forward, backward, step, scheduler step),
on the same model, data batches and optimizer; repeats are interleaved and the median ratio is
reported. Run with one thread so the two loops see the same machine:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/controller_overhead.py [--controller FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lrctl.controller import LRController
from lrctl.tasks import FAMILIES


def make_loop(family: str, steps: int, arch: dict[str, int]):
    fam = FAMILIES[family]()
    spec = fam.spec("momentum", steps=steps, **arch)
    task = fam.build(spec)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(task.train), (steps, spec.batch_size), generator=g)
    batches = [(task.train.x[i], task.train.y[i]) for i in idx]

    def run(scheduler: str, controller: str | None) -> float:
        torch.manual_seed(0)
        model = task.model_fn()
        opt = torch.optim.SGD(model.parameters(), lr=spec.base_lr, momentum=0.9)
        if scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            step = lambda _loss: sched.step()  # noqa: E731
        else:
            sched = LRController(opt, total_steps=steps, controller=controller)
            step = sched.step
        start = time.perf_counter()
        for x, y in batches:
            opt.zero_grad()
            loss = task.loss_fn(model(x), y)
            loss.backward()
            opt.step()
            step(loss)
        return time.perf_counter() - start

    return spec, run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--controller", help="controller file (default: the shipped one)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("digits_mlp", 2000, {"width": 64, "depth": 2}),
        ("char_mlp", 1000, {"width": 256, "depth": 2}),
        ("char_gru", 300, {"width": 128}),
    ]
    print(f"torch {torch.__version__}, 1 thread, {args.repeats} interleaved repeats, median")
    for family, steps, arch in cases:
        spec, run = make_loop(family, steps, arch)
        run("cosine", args.controller), run("controller", args.controller)  # warm-up
        cos, ctl = [], []
        for _ in range(args.repeats):
            cos.append(run("cosine", args.controller))
            ctl.append(run("controller", args.controller))
        c, k = statistics.median(cos), statistics.median(ctl)
        ratios = [b / a for a, b in zip(cos, ctl, strict=True)]
        print(
            f"{spec.describe():<70} cosine {c / steps * 1e6:7.1f} us/step  controller "
            f"{k / steps * 1e6:7.1f} us/step  ratio {k / c:.3f} (per-repeat median {statistics.median(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
