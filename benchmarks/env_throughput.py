"""Env overhead: inner steps per second through LRControl-v1 vs a bare training loop.

Both train the same task (digits_mlp at the middle of its ranges, SGD with momentum, the
spec's seed) for the spec's horizon, one thread. The bare loop is hand-written: minibatch,
zero_grad, forward, loss, backward, step, nothing recorded. The env run is one episode with
action 0 (constant LR): everything the env adds (gradient norms, stat buffers, features,
divergence check, validation loss every decision) counts as overhead.

    .venv/bin/python benchmarks/env_throughput.py [--repeats 7] [--steps N] [--interval 10]
        [--family digits_mlp] [--optimizer momentum] [--max-val-examples 256]

Prints each side's median steps/s over the repeats (alternated, after one warm-up each) and
the ratio env / bare (target >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lrctl.env import LRControlEnv
from lrctl.optimizers import make_optimizer
from lrctl.tasks import FAMILIES, RunSpec, Task


def bare_loop(task: Task, spec: RunSpec) -> float:
    """Seconds for `spec.steps` plain optimizer steps on `task`."""
    torch.manual_seed(spec.seed)
    model = task.model_fn()
    opt = make_optimizer(spec.optimizer, model.parameters(), spec.base_lr)
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all = task.train.x, task.train.y
    n, bs = len(task.train), min(spec.batch_size, len(task.train))
    start = time.perf_counter()
    batches: list[torch.Tensor] = []
    for _ in range(spec.steps):
        if not batches:
            perm = torch.randperm(n, generator=gen)
            batches = list(perm[: n // bs * bs].view(-1, bs).unbind(0))[::-1]
        idx = batches.pop()
        opt.zero_grad(set_to_none=True)
        loss = task.loss_fn(model(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def env_episode(env: LRControlEnv, spec: RunSpec) -> float:
    """Seconds for one whole episode of `spec` (reset included) at action 0."""
    action = np.zeros(1, np.float32)
    start = time.perf_counter()
    env.reset(seed=0, options={"spec": spec})
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each side")
    parser.add_argument("--steps", type=int, default=None, help="horizon (default: the spec's)")
    parser.add_argument(
        "--max-val-examples", type=int, default=256, help="the env's validation subset size"
    )
    parser.add_argument("--interval", type=int, default=10, help="K, steps per decision")
    parser.add_argument("--family", default="digits_mlp", help="task family (middle spec)")
    parser.add_argument("--optimizer", default="momentum")
    args = parser.parse_args()
    torch.set_num_threads(1)

    family = FAMILIES[args.family]()
    spec = family.spec(args.optimizer, steps=args.steps)
    task = family.build(spec)
    env = LRControlEnv("train", interval=args.interval, max_val_examples=args.max_val_examples)
    n_val = min(len(task.val), args.max_val_examples or len(task.val))
    print(f"task: {spec.describe()}  (val examples: {n_val}, K = {args.interval})")

    bare_loop(task, spec)  # warm-up
    env_episode(env, spec)
    bare_s, env_s = [], []
    for _ in range(args.repeats):
        bare_s.append(bare_loop(task, spec))
        env_s.append(env_episode(env, spec))
    bare_rate = spec.steps / statistics.median(bare_s)
    env_rate = spec.steps / statistics.median(env_s)
    print(f"bare loop : {bare_rate:8.0f} steps/s  (median of {args.repeats} runs)")
    print(f"env       : {env_rate:8.0f} steps/s  (median of {args.repeats} episodes)")
    print(f"env / bare: {env_rate / bare_rate:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
