"""`lrctl demo`: the shipped controller against cosine annealing and Adam on one held-out task.

A small, untuned `lrctl bench`: every method trains the same task (same spec, same seeds, same
number of steps) at the task's reference LR for its optimizer (Adam's default 1e-3 for the
Adam baseline), on the bench's runner and results store (so a rerun reuses finished runs).
The table reports the final validation loss and the test metrics (mean ± std over seeds), and
a PNG shows validation loss and LR against steps. For the tuned, multi-task comparison, run
`lrctl bench`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lrctl.atomic import atomic_write_text
from lrctl.bench.outcome import BenchOutcome
from lrctl.bench.plan import BenchConfig, make_plan
from lrctl.bench.plots import method_style
from lrctl.bench.report import mean_std_cell, runs_frame
from lrctl.bench.runner import execute_plan
from lrctl.plotting import mean_curve, pyplot, save_png

DEMO_METHODS = (
    "controller_momentum",
    "momentum_cosine",
    "controller_adam",
    "adam_cosine",
    "adam_default",
)


def run_demo(
    task: str = "digits_cnn",
    seeds: int = 3,
    steps: int | None = None,
    out_dir: Path = Path("results/demo"),
    controller: str | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Run the comparison, print the table, write summary.md, runs.csv and curves.png."""
    config = BenchConfig(
        suite="eval",
        tasks=(task,),
        methods=DEMO_METHODS,
        seeds=seeds,
        steps=steps,
        grid=(1.0,),  # one point: no tuning, every method at its reference LR
        sweep=(),
    )
    plan = make_plan(config, controller)
    out_dir = Path(out_dir)
    outcome = execute_plan(plan, out_dir, workers, desc=f"demo on {task}")
    records = {h: outcome.store.load(h) for h in outcome.configs}
    runs = runs_frame(outcome, records)
    labels = {m.name: m.label for m in plan.methods}
    runs.insert(2, "label", runs["method"].map(labels))
    summary = summarise(runs)
    family = plan.families[task]
    spec = family.spec("momentum", steps=plan.steps[task])
    arch = ", ".join(f"{k}={v}" for k, v in sorted(spec.arch.items()))
    title = (
        f"held-out task {task} ({arch}, batch {spec.batch_size}), {spec.steps} steps, {seeds} seeds"
    )
    text = (
        f"# lrctl demo: {title}\n\nEvery method at the task's reference LR for its optimizer "
        "(untuned; Adam's baseline at its default 1e-3), fresh seeds "
        f"{list(config.final_seed_list)}; test metrics on the held-out test split.\n\n"
        f"{summary.to_markdown(index=False)}\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "summary.md", text)
    atomic_write_text(out_dir / "runs.csv", runs.to_csv(index=False))
    _plot(outcome, runs, records, out_dir / "curves.png", title)
    print(f"\n{text}\nwrote {out_dir}/summary.md, runs.csv, curves.png")
    return runs


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method: rank by mean final validation loss, then mean ± std columns."""
    order = list(dict.fromkeys(runs["label"]))
    g = runs.groupby("label", sort=False)
    out = pd.DataFrame(
        {
            "method": order,
            "final val loss": [mean_std_cell(g.get_group(m)["final_val_loss"]) for m in order],
            "test loss": [mean_std_cell(g.get_group(m)["test_loss"]) for m in order],
            "test accuracy": [mean_std_cell(g.get_group(m)["test_accuracy"]) for m in order],
            "diverged": [int(g.get_group(m)["diverged"].sum()) for m in order],
        }
    )
    mean_val = [g.get_group(m)["final_val_loss"].replace(math.inf, np.nan).mean() for m in order]
    out.insert(
        1, "rank", pd.Series(mean_val).rank(method="min").fillna(len(order)).astype(int).values
    )
    return out


def _plot(
    outcome: BenchOutcome, runs: pd.DataFrame, records: dict[str, dict], path: Path, title: str
) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, sel in runs.groupby("method", sort=False):
        color, width = method_style(method)
        label = sel["label"].iloc[0]
        evals = [records[h]["evals"] for h in sel.config_hash]
        losses = [np.asarray(e["val_loss"], dtype=float) for e in evals]
        x = np.asarray(max(evals, key=lambda e: len(e["step"]))["step"])
        n = max(len(v) for v in losses)
        stack = np.full((len(losses), n), np.nan)
        for i, v in enumerate(losses):
            stack[i, : len(v)] = np.where(np.isfinite(v), v, np.nan)
        ax1.plot(x, mean_curve(losses), color=color, lw=width, label=label)
        with warnings.catch_warnings():  # steps where every seed has diverged: no band
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(stack, 0), np.nanmax(stack, 0)
        ax1.fill_between(x, low, high, color=color, alpha=0.15)
        lr = mean_curve([np.asarray(records[h]["steps"]["lr"]) for h in sel.config_hash])
        ax2.plot(np.arange(len(lr)), lr, color=color, lw=width, label=label)
    ax1.set(xlabel="step", ylabel="validation loss", yscale="log",
            title="validation loss (mean, min-max over seeds)")  # fmt: skip
    ax1.legend(fontsize=8)
    ax2.set(xlabel="step", ylabel="learning rate", yscale="log",
            title="learning rate (mean over seeds)")  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
