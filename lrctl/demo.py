"""`lrctl demo`: the shipped controller against cosine annealing and Adam on one held-out task.

Every method trains the same task (same spec, same seeds, same number of steps); the table
reports the final validation loss and the test metrics (mean +- std over seeds), and a PNG
shows validation loss and LR against steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lrctl.tasks import load_suite
from lrctl.training import History, train


@dataclass(frozen=True)
class DemoMethod:
    label: str
    optimizer: str
    lr: float
    schedule: str  # "controller", or a baseline name from lrctl.baselines


def demo_methods(family, adam_default: float = 1e-3) -> list[DemoMethod]:
    mom, adam = family.reference_lr("momentum"), family.reference_lr("adam")
    return [
        DemoMethod("controller + SGD-momentum", "momentum", mom, "controller"),
        DemoMethod("cosine + SGD-momentum", "momentum", mom, "cosine"),
        DemoMethod("controller + Adam", "adam", adam, "controller"),
        DemoMethod("cosine + Adam", "adam", adam, "cosine"),
        DemoMethod("Adam (lr=1e-3, constant)", "adam", adam_default, "constant"),
    ]


def _policy_fn(method: DemoMethod, steps: int, controller: str | None):
    if method.schedule == "controller":
        from lrctl.controller import LRController

        return lambda opt: LRController(opt, total_steps=steps, controller=controller)
    from lrctl.baselines import baseline_policy

    return baseline_policy(method.schedule, steps)


def run_demo(
    task: str = "digits_cnn",
    seeds: int = 3,
    steps: int | None = None,
    out_dir: Path = Path("results/demo"),
    controller: str | None = None,
) -> pd.DataFrame:
    """Run the comparison, print the table, write summary.md, runs.csv and curves.png."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if steps is not None and steps < 20:
        raise ValueError(f"--steps must be at least 20, got {steps}")
    if controller is not None:
        from lrctl.controller_file import load_controller

        load_controller(controller)  # fail before training anything
    suite = load_suite("eval")
    family = suite.family(task)
    spec = family.spec("momentum", steps=steps)
    steps = spec.steps
    task_obj = family.build(spec)
    methods = demo_methods(family)
    rows, curves = [], []
    jobs = [(m, s) for m in methods for s in range(seeds)]
    for method, seed in tqdm(jobs, desc=f"demo on {task}", unit="run"):
        h: History = train(
            task_obj,
            method.optimizer,
            method.lr,
            steps,
            seed,
            _policy_fn(method, steps, controller),
            val_every=max(10, steps // 30),
            evaluate_test=True,
        )
        rows.append(
            {
                "method": method.label,
                "seed": seed,
                "final_val_loss": h.final_val_loss,
                "test_loss": h.test_loss,
                "test_accuracy": h.test_accuracy,
                "diverged": h.diverged,
                "wall_time_s": h.wall_time,
            }
        )
        ev = h.evals.assign(method=method.label, seed=seed)
        lr = h.steps[["step", "lr"]].assign(method=method.label, seed=seed)
        curves.append((ev, lr))
    runs = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    arch = ", ".join(f"{k}={v}" for k, v in sorted(spec.arch.items()))
    title = f"held-out task {task} ({arch}, batch {spec.batch_size}), {steps} steps, {seeds} seeds"
    table = summary.to_markdown(index=False)
    text = f"# lrctl demo: {title}\n\n{table}\n"
    _atomic_write(out_dir / "summary.md", text)
    _atomic_write(out_dir / "runs.csv", runs.to_csv(index=False))
    _plot(curves, out_dir / "curves.png", title)
    print(f"\n{text}\nwrote {out_dir}/summary.md, runs.csv, curves.png")
    return runs


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    def fmt(values: pd.Series) -> str:
        v = values[np.isfinite(values)]
        if len(v) == 0:
            return "diverged"
        return f"{v.mean():.4f} ± {v.std(ddof=0):.4f}"

    order = list(dict.fromkeys(runs["method"]))
    g = runs.groupby("method", sort=False)
    out = pd.DataFrame(
        {
            "method": order,
            "final val loss": [fmt(g.get_group(m)["final_val_loss"]) for m in order],
            "test loss": [fmt(g.get_group(m)["test_loss"]) for m in order],
            "test accuracy": [fmt(g.get_group(m)["test_accuracy"]) for m in order],
            "diverged": [int(g.get_group(m)["diverged"].sum()) for m in order],
        }
    )
    mean_val = [g.get_group(m)["final_val_loss"].replace(math.inf, np.nan).mean() for m in order]
    out.insert(
        1, "rank", pd.Series(mean_val).rank(method="min").fillna(len(order)).astype(int).values
    )
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _plot(curves, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = pd.concat([c[0] for c in curves])
    lrs = pd.concat([c[1] for c in curves])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, ev in evals.groupby("method", sort=False):
        mean = ev.groupby("step")["val_loss"].agg(["mean", "min", "max"])
        ax1.plot(mean.index, mean["mean"], label=method)
        ax1.fill_between(mean.index, mean["min"], mean["max"], alpha=0.15)
    ax1.set(
        xlabel="step",
        ylabel="validation loss",
        yscale="log",
        title="validation loss (mean, min-max over seeds)",
    )
    ax1.legend(fontsize=8)
    for method, lr in lrs.groupby("method", sort=False):
        mean = lr.groupby("step")["lr"].mean()
        ax2.plot(mean.index, mean.values, label=method)
    ax2.set(
        xlabel="step", ylabel="learning rate", yscale="log", title="learning rate (mean over seeds)"
    )
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
