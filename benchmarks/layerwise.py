"""Layer-wise vs global LR control on the eval suite: test loss per task and optimizer.

The controller (default: the shipped one, agents/default, which was trained on *global*
control) runs untuned at each task's reference LR in two ways: one decision for the whole run
(`controller_momentum`, `controller_adam`), and one decision per layer
(`controller_layerwise_*`: one optimizer param group per layer, `LRController(per_group=True)`,
each layer's LR set from its own gradient statistics). Both use the same seeds, hence the same
initialisation and batches, so the runs pair up: the table reports each method's test loss
(mean ± std over seeds; a diverged run counts as inf), the paired difference, and the LR each
layer runs its last step at (÷ base LR, seed 1000) next to the global controller's.

    .venv/bin/python benchmarks/layerwise.py [--quick] [--seeds 3] [--workers 2] [--out DIR]

Runs go through `lrctl.bench`'s runner and store (one JSON per run under OUT/<suite>/runs, keyed
by config hash), so a rerun reuses them; the table is printed and written to
OUT/<suite>/layerwise.md.
"""

from __future__ import annotations

import argparse
import math
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lrctl.bench.methods import METHODS
from lrctl.bench.plan import BenchConfig, Plan, RunConfig, make_plan
from lrctl.bench.runner import execute_run, make_backend, output_dir
from lrctl.bench.store import RunStore
from lrctl.controller import LRController
from lrctl.inner_run import InnerRun

PAIRS = {"momentum": ("controller_momentum", "controller_layerwise_momentum"),
         "adam": ("controller_adam", "controller_layerwise_adam")}  # fmt: skip
"""Optimizer -> (global method, layer-wise method)."""


def run_all(plan: Plan, configs: list[RunConfig], store: RunStore, workers: int | None) -> None:
    """Train every config the store does not hold yet, saving each as it finishes."""
    todo = [c for c in configs if store.load_valid(c.config_hash) is None]
    print(f"{len(configs)} runs, {len(configs) - len(todo)} already stored")
    if not todo:
        return
    backend = make_backend(workers)
    try:
        futures = [
            backend.submit(
                execute_run, c, plan.families[c.task], METHODS[c.method], plan.controller
            )
            for c in todo
        ]
        for fut in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run"):
            store.save(fut.result())
    except BaseException:
        backend.close(cancel=True)
        raise
    backend.close()


def final_layer_lrs(plan: Plan, config: RunConfig) -> list[float]:
    """Each layer's LR ÷ base LR at the last step of a per-layer controller run (retrained
    here without validations, which do not change the training trajectory)."""
    family = plan.families[config.task]
    spec = family.spec(config.optimizer, steps=config.steps, batch_size=config.batch_size,
                       seed=config.seed, **dict(config.arch))  # fmt: skip
    run = InnerRun(family.build(spec), config.optimizer, config.base_lr, config.steps,
                   config.seed, param_groups="layer")  # fmt: skip
    ctrl = LRController(run.optimizer, config.steps, plan.controller, per_group=True)
    run.advance(config.steps - 1, ctrl)  # the LRs now in force are the last step's
    return [lr / config.base_lr for lr in ctrl.get_last_lr()]


def mean_std(values: list[float]) -> str:
    if not all(math.isfinite(v) for v in values):
        return f"inf ({sum(not math.isfinite(v) for v in values)} diverged)"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", default="eval", help="suite name or path (default: eval)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and method")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: "
                        "each family's middle horizon; 100 with --quick)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="100 steps per run")
    parser.add_argument("--controller", default=None, help="controller file (default: shipped)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--out", default="/tmp/bench-layerwise", help="output root")
    args = parser.parse_args()
    torch.set_num_threads(1)

    names = tuple(n for pair in PAIRS.values() for n in pair)
    settings = {"suite": args.suite, "methods": names, "seeds": args.seeds, "steps": args.steps}
    config = BenchConfig.quick_preset(**settings) if args.quick else BenchConfig(**settings)
    plan = make_plan(config, args.controller)
    out = output_dir(args.out, plan)
    store = RunStore(out / "runs")
    configs = {
        (task, name, seed): plan.run(task, METHODS[name], 1.0, seed)
        for task in plan.families
        for name in names
        for seed in config.final_seed_list
    }
    start = time.perf_counter()
    run_all(plan, list(configs.values()), store, args.workers)

    def results(task: str, name: str, key: str) -> list[float]:
        return [
            store.load(configs[task, name, s].config_hash)["result"][key]
            for s in config.final_seed_list
        ]

    lines = [
        f"Layer-wise vs global control, suite `{plan.suite_name}`"
        f"{' (--quick: 100 steps)' if config.quick else ''}, controller `{plan.controller_source}`"
        f" (trained on global control), untuned at each task's reference LR, "
        f"{config.seeds} seeds ({', '.join(map(str, config.final_seed_list))}). "
        "Test loss, mean ± std over seeds; Δ = layer-wise − global, paired by seed "
        "(negative: layer-wise better).",
        "",
        "| task | optimizer | global | layer-wise | Δ mean ± std | layer-wise better | "
        "final LR ÷ base: global | per layer (seed 1000) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in plan.families:
        for opt, (glob, layer) in PAIRS.items():
            g, lw = results(task, glob, "test_loss"), results(task, layer, "test_loss")
            diff = [b - a for a, b in zip(g, lw, strict=True)]
            wins = sum(d < 0 for d in diff)
            first = store.load(configs[task, glob, config.final_seed_list[0]].config_hash)
            global_lr = first["steps"]["lr"][-1] / first["config"]["base_lr"]
            per_layer = final_layer_lrs(plan, configs[task, layer, config.final_seed_list[0]])
            lines.append(
                f"| {plan.describe_task(task)} | {opt} | {mean_std(g)} | {mean_std(lw)} | "
                f"{mean_std(diff)} | {wins}/{len(diff)} | {global_lr:.3g} | "
                f"{', '.join(f'{r:.3g}' for r in per_layer)} |"
            )
    lines += [
        "",
        f"Wall time {time.perf_counter() - start:.0f} s (runs already stored are reused).",
    ]
    table = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "layerwise.md").write_text(table)
    print(table)
    print(f"written to {Path(out) / 'layerwise.md'}")


if __name__ == "__main__":
    main()
