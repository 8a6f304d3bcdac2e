"""The benchmark's PNGs: loss curves, LR trajectories, and final loss against base LR.

One panel per task. Curves are means over the final seeds; a diverged run drops out of the
mean from the step it diverged (its curve ends there).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lrctl.bench.methods import METHODS
from lrctl.bench.runner import BenchOutcome


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_style(method: str) -> tuple[object, float]:
    """Colour and line width of a method, the same in every plot: the controllers stand out
    (thick, black and crimson), the others take tab20 without its reds, dark shades first."""
    import matplotlib

    if method.startswith("controller"):
        return ("black" if method.endswith("momentum") else "crimson"), 2.4
    cmap = matplotlib.colormaps["tab20"]
    palette = [cmap(i) for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (6, 7)]  # no reds
    others = [m for m in METHODS if not m.startswith("controller")]
    i = others.index(method) if method in others else len(others)
    return palette[i % len(palette)], 1.2


def save_png(fig, path: Path) -> Path:
    from lrctl.atomic import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def mean_curve(series: list[np.ndarray]) -> np.ndarray:
    """Mean over runs of curves that may end early (diverged runs): NaN-padded mean."""
    n = max(len(s) for s in series)
    stacked = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        stacked[i, : len(s)] = np.where(np.isfinite(s), s, np.nan)
    with warnings.catch_warnings():  # a step where every run has diverged: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stacked, axis=0)


def _grid(n_tasks: int, rows: int = 1):
    plt = pyplot()
    fig, axes = plt.subplots(
        rows, n_tasks, figsize=(5.2 * n_tasks + 2.8, 4.0 * rows), squeeze=False
    )
    return fig, axes


def _curves_plot(
    outcome: BenchOutcome, runs: pd.DataFrame, records: dict[str, dict], what: str
) -> object:
    plan = outcome.plan
    finals = runs[runs.role == "final"]
    tasks = list(plan.families)
    fig, axes = _grid(len(tasks))
    names = [m.name for m in plan.methods]
    labels = {m.name: m.label for m in plan.methods}
    for ax, task in zip(axes[0], tasks, strict=True):
        for name in names:
            sel = finals[(finals.task == task) & (finals.method == name)]
            if sel.empty:
                continue
            color, width = method_style(name)
            if what == "loss":
                evs = [records[h]["evals"] for h in sel.config_hash]
                x = np.asarray(max(evs, key=lambda e: len(e["step"]))["step"])
                y = mean_curve([np.asarray(e["val_loss"]) for e in evs])
            else:
                y = mean_curve([np.asarray(records[h]["steps"]["lr"]) for h in sel.config_hash])
                x = np.arange(len(y))
            ax.plot(x[: len(y)], y, color=color, lw=width, label=labels[name])
        ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss" if what == "loss" else "learning rate")
    handles, labs = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="center right", fontsize=8, frameon=False)
    title = (
        "validation loss of the final runs (mean over seeds)"
        if what == "loss"
        else "learning rate of the final runs (mean over seeds)"
    )
    fig.suptitle(f"{plan.suite_name}: {title}")
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / (5.2 * len(tasks) + 2.8), 1))
    return fig


def _robustness_plot(outcome: BenchOutcome, runs: pd.DataFrame) -> object:
    """Top: test loss vs base LR (x reference) of the sweep methods over the final seeds.
    Bottom: the tuning curves, mean validation loss vs base LR, with each chosen point."""
    plan = outcome.plan
    tasks = list(plan.families)
    rows = 2 if plan.sweep_methods else 1
    fig, axes = _grid(len(tasks), rows)
    labels = {m.name: m.label for m in [*plan.methods, *plan.sweep_methods]}
    final_seeds = set(plan.config.final_seed_list)
    evaluated = runs[runs.seed.isin(final_seeds)]
    tune = runs[runs.role == "tune"]
    for col, task in enumerate(tasks):
        if plan.sweep_methods:
            ax = axes[0][col]
            for m in plan.sweep_methods:
                sel = evaluated[(evaluated.task == task) & (evaluated.method == m.name)]
                sel = sel[sel.lr_factor.isin(plan.config.sweep)]
                g = sel.groupby("lr_factor")["test_loss"]
                mean = g.agg(lambda v: v.mean() if np.isfinite(v).all() else math.nan)
                color, width = method_style(m.name)
                style = {"constant": ":", "cosine": "--"}.get(m.schedule, "-")
                ax.plot(mean.index, mean.values, style, marker="o", color=color, lw=width,
                        label=labels[m.name])  # fmt: skip
            ax.set(xscale="log", yscale="log", title=f"{task}: untuned sweep (test loss)",
                   xlabel="base LR / reference LR", ylabel="test loss")  # fmt: skip
            ax.legend(fontsize=7)
        ax = axes[rows - 1][col]
        for m in plan.methods:
            sel = tune[(tune.task == task) & (tune.method == m.name)]
            if sel.empty:
                continue
            g = sel.groupby("lr_factor")["final_val_loss"]
            mean = g.agg(lambda v: v.mean() if np.isfinite(v).all() else math.nan)
            color, width = method_style(m.name)
            ax.plot(
                mean.index, mean.values, marker=".", color=color, lw=width, label=labels[m.name]
            )
            best = outcome.chosen.get((task, m.name))
            if best is not None and best in mean.index and math.isfinite(mean[best]):
                ax.plot([best], [mean[best]], marker="*", ms=11, color=color)
        ax.set(xscale="log", yscale="log", title=f"{task}: tuning grid (validation loss, * chosen)",
               xlabel="base LR / reference LR", ylabel="validation loss")  # fmt: skip
    handles, labs = axes[rows - 1][0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{plan.suite_name}: final loss against base LR (gaps: a seed diverged)")
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / (5.2 * len(tasks) + 2.8), 1))
    return fig


def write_plots(outcome: BenchOutcome, runs: pd.DataFrame, records: dict[str, dict]) -> list[Path]:
    out = outcome.out_dir
    return [
        save_png(_curves_plot(outcome, runs, records, "loss"), out / "loss_curves.png"),
        save_png(_curves_plot(outcome, runs, records, "lr"), out / "lr_trajectories.png"),
        save_png(_robustness_plot(outcome, runs), out / "robustness.png"),
    ]
