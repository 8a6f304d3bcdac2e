"""The benchmark's PNGs. A panel per task and optimizer, each showing only what answers its
question; every other method is in the tables (summary.md).

| file                | a panel shows                                   | against                   |
| ------------------- | ----------------------------------------------- | ------------------------- |
| loss_curves.png     | validation loss over the steps of the final runs | step                      |
| lr_trajectories.png | the LR of those runs                            | step                      |
| robustness.png      | test loss of the untuned sweep                  | base LR / reference LR    |

In each panel: the controller at the reference LR, its own LR curve replayed as a fixed
schedule, cosine and constant LR with the same optimizer at the same base LR, Adam at its
default LR, and the best tuned method on that task (named in the panel's title). Curves are
means over the final seeds; a diverged run drops out of the mean from the step it diverged.
One legend, above the panels, names these roles; the same role has the same style
everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lrctl.bench.methods import ADAM_REFERENCE, COSINE_REFERENCE, METHODS, find_method
from lrctl.bench.outcome import BenchOutcome
from lrctl.plotting import mean_curve, pyplot, save_png


@dataclass(frozen=True)
class Role:
    """What a line stands for in every panel, and how it is drawn."""

    key: str
    label: str
    color: str
    width: float
    style: str


ROLES = (
    Role("controller", "controller (untuned, reference LR)", "black", 2.4, "-"),
    Role("replay", "its LR curve, replayed as a fixed schedule", "crimson", 1.8, "--"),
    Role("cosine", "cosine, same optimizer and base LR", "tab:blue", 1.4, "-"),
    Role("constant", "constant LR, same optimizer and base LR", "0.5", 1.4, ":"),
    Role("adam", "Adam, lr = 1e-3 (untuned)", "tab:orange", 1.4, "-."),
    Role("best", "best tuned method on the task (named in the title)", "tab:green", 1.6, "-"),
)
ROLE = {r.key: r for r in ROLES}


@dataclass(frozen=True)
class Line:
    """One line of a panel: the runs of `method` at `factor` (None: its final runs)."""

    role: str
    method: str
    factor: float | None = None


def method_style(method: str) -> tuple[object, float]:
    """Colour and line width of a method (the demo's plot, which shows a few methods by name):
    the controllers stand out (thick, black and crimson), the others take tab20 without its
    reds, dark shades first."""
    import matplotlib

    if method.startswith("controller"):
        return ("black" if method.endswith("momentum") else "crimson"), 2.4
    cmap = matplotlib.colormaps["tab20"]
    palette = [cmap(i) for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (6, 7)]  # no reds
    others = [m for m in METHODS if not m.startswith("controller")]
    i = others.index(method) if method in others else len(others)
    return palette[i % len(palette)], 1.2


def _mean_test(finals: pd.DataFrame, task: str, method: str) -> float:
    v = finals[(finals.task == task) & (finals.method == method)]["test_loss"].to_numpy(float)
    return float(v.mean()) if len(v) and np.isfinite(v).all() else math.inf


def best_tuned(outcome: BenchOutcome, runs: pd.DataFrame, task: str) -> str | None:
    """The tuned method with the lowest mean test loss on `task` (None if none was tuned)."""
    finals = runs[runs.role == "final"]
    tuned = [m.name for m in outcome.plan.methods if (task, m.name) in outcome.tuned]
    tuned = [m for m in tuned if not METHODS[m].replays]  # a replay is the controller's curve
    scores = {m: _mean_test(finals, task, m) for m in tuned}
    return min(scores, key=lambda m: (scores[m], m)) if scores else None


def panel_rows(outcome: BenchOutcome) -> list[str]:
    """One row of panels per controller optimizer (momentum, adam), or one row ('') when no
    controller ran."""
    opts = [m.optimizer for m in outcome.plan.methods if m.uses_controller and not m.replays]
    opts = [o for o in dict.fromkeys(opts)]
    return opts or [""]


def panel_lines(outcome: BenchOutcome, runs: pd.DataFrame, task: str, optimizer: str) -> list[Line]:
    """The lines of one panel (task, optimizer row), in `ROLES` order, that have runs."""
    plan = outcome.plan
    names = {m.name for m in plan.methods} | {m.name for m in plan.sweep_methods}
    lines: list[Line] = []
    if optimizer:
        ctrl = next(
            m.name
            for m in plan.methods
            if m.uses_controller and m.optimizer == optimizer and m.param_groups == "single"
        )
        lines.append(Line("controller", ctrl, 1.0))
        replay = next((m.name for m in plan.methods if m.replays == ctrl), None)
        if replay:
            lines.append(Line("replay", replay))
        for key in ("cosine", "constant"):
            m = find_method(optimizer, key).name
            if m in names:
                lines.append(Line(key, m, 1.0))
    else:
        lines.append(Line("cosine", COSINE_REFERENCE))
    if ADAM_REFERENCE in names:
        lines.append(Line("adam", ADAM_REFERENCE))
    best = best_tuned(outcome, runs, task)
    if best is not None:
        lines.append(Line("best", best))
    return lines


def _select(runs: pd.DataFrame, outcome: BenchOutcome, task: str, line: Line) -> pd.DataFrame:
    seeds = set(outcome.plan.config.final_seed_list)
    sel = runs[(runs.task == task) & (runs.method == line.method) & runs.seed.isin(seeds)]
    if line.factor is None:
        return sel[sel.role == "final"]
    return sel[np.isclose(sel.lr_factor, line.factor) & (sel.role != "tune")]


def _layout(outcome: BenchOutcome, rows: list[str]):
    tasks = list(outcome.plan.families)
    plt = pyplot()
    fig, axes = plt.subplots(
        len(tasks), len(rows), figsize=(5.6 * len(rows), 3.3 * len(tasks) + 1.2), squeeze=False
    )
    return fig, axes, tasks


def _finish(fig, outcome: BenchOutcome, title: str, n_tasks: int, sweep: bool = False) -> object:
    """The figure's title and its one legend above the panels (`sweep`: the robustness
    figure's markers: sweep points, the replay as a diamond at x1)."""
    from matplotlib.lines import Line2D

    handles = []
    for r in ROLES:
        style = {"color": r.color, "lw": r.width, "ls": r.style, "label": r.label}
        if sweep and r.key == "replay":
            style.update(ls="none", marker="D", ms=7, label=f"{r.label} (at x1)")
        elif sweep and r.key in ("controller", "cosine", "constant"):
            style.update(marker="o", ms=4)
        handles.append(Line2D([], [], **style))
    height = 3.3 * n_tasks + 1.2  # inches, as _layout
    fig.suptitle(f"{outcome.plan.suite_name}: {title}", fontsize=12, y=1 - 0.12 / height)
    fig.legend(
        handles=handles, loc="upper center", ncol=3, fontsize=8.5, frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.38 / height),
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / height))
    return fig


def _log_axis(ax, axis: str = "y") -> None:
    """Plain tick labels on a log axis (0.2, not 2 x 10^-1); minor ticks at 2, 3 and 5 x 10^k
    labelled only when the axis spans less than about a decade."""
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis

    def minor(v: float, _pos: int) -> str:
        lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
        mantissa = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
        few = lo > 0 and hi / lo < 12
        return f"{v:g}" if few and round(mantissa) in (2, 3, 5) else ""

    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(minor))


def _cap(ax, values: list[float], top: float) -> float | None:
    """Keep a panel readable: an axis up to `top` when some value is far above it (a diverging
    run); returns the cap, or None when every value fits."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if not finite or max(finite) <= top:
        return None
    ax.set_ylim(top=top)
    return top


def _title(outcome: BenchOutcome, runs: pd.DataFrame, task: str, optimizer: str) -> str:
    from lrctl.bench.methods import OPTIMIZER_LABELS

    best = best_tuned(outcome, runs, task)
    head = f"{task}, {OPTIMIZER_LABELS[optimizer]}" if optimizer else task
    steps = outcome.plan.steps[task]
    label = METHODS[best].label if best else "none"
    return f"{head} ({steps} steps)\nbest tuned: {label}"


def _curves_plot(
    outcome: BenchOutcome, runs: pd.DataFrame, records: dict[str, dict], what: str
) -> object:
    rows = panel_rows(outcome)
    fig, axes, tasks = _layout(outcome, rows)
    for i, task in enumerate(tasks):
        for j, opt in enumerate(rows):
            ax = axes[i][j]
            starts, values = [], []
            for line in panel_lines(outcome, runs, task, opt):
                sel = _select(runs, outcome, task, line)
                if sel.empty:
                    continue
                if what == "loss":
                    evs = [records[h]["evals"] for h in sel.config_hash]
                    x = np.asarray(max(evs, key=lambda e: len(e["step"]))["step"])
                    y = mean_curve([np.asarray(e["val_loss"]) for e in evs])
                else:
                    y = mean_curve([np.asarray(records[h]["steps"]["lr"]) for h in sel.config_hash])
                    x = np.arange(len(y))
                r = ROLE[line.role]
                ax.plot(x[: len(y)], y, color=r.color, lw=r.width, ls=r.style)
                starts.append(float(y[0]))
                values += [float(v) for v in y]
            ax.set_yscale("log")
            if what == "loss" and starts:  # a spike of a diverging run: cut at 1.5 x the start
                _cap(ax, values, 1.5 * max(v for v in starts if math.isfinite(v)))
            _log_axis(ax)
            ax.set_title(_title(outcome, runs, task, opt), fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("validation loss" if what == "loss" else "learning rate", fontsize=8)
            ax.tick_params(labelsize=7)
    title = (
        "validation loss of the final runs (mean over seeds)"
        if what == "loss"
        else "learning rate of the final runs (mean over seeds)"
    )
    return _finish(fig, outcome, title, len(tasks))


def _robustness_plot(outcome: BenchOutcome, runs: pd.DataFrame) -> object:
    """Test loss against the base LR (x the reference LR) of the untuned sweep: the controller,
    constant and cosine at each sweep factor; its replay at x1; Adam at its default and the
    best tuned method as horizontal lines at their own (tuned) LR."""
    rows = panel_rows(outcome)
    fig, axes, tasks = _layout(outcome, rows)
    sweep = outcome.plan.config.sweep
    for i, task in enumerate(tasks):
        for j, opt in enumerate(rows):
            ax = axes[i][j]
            curves, levels = [], []  # (role, factors, losses); (role, loss) at one LR
            for line in panel_lines(outcome, runs, task, opt):
                if line.factor is not None:  # a method of the sweep: its curve over the factors
                    sel = runs[(runs.task == task) & (runs.method == line.method)]
                    sel = sel[sel.seed.isin(outcome.plan.config.final_seed_list)]
                    sel = sel[sel.lr_factor.isin(sweep) & (sel.role != "tune")]
                    g = sel.groupby("lr_factor")["test_loss"]
                    mean = g.agg(lambda v: v.mean() if np.isfinite(v).all() else math.nan)
                    curves.append((line.role, mean.index.to_numpy(), mean.to_numpy(float)))
                    continue
                value = _mean_test(runs[runs.role == "final"], task, line.method)
                if math.isfinite(value):
                    levels.append((line.role, value))
            shown = [v for _, _, y in curves for v in y if math.isfinite(v)]
            shown += [v for _, v in levels]
            top = 40 * min(shown) if shown else math.inf  # well above any usable result
            for role, x, y in curves:
                r = ROLE[role]
                clipped = np.where(y > top, top, y)
                ax.plot(x, clipped, marker="o", ms=4, color=r.color, lw=r.width, ls=r.style)
                over = y > top
                if over.any():  # off the scale: drawn at the top edge, pointing up
                    ax.plot(x[over], clipped[over], marker="^", ms=9, color=r.color, ls="none")
            for role, value in levels:
                r = ROLE[role]
                if role == "replay":  # the replay starts at the reference LR: x1
                    ax.plot([1.0], [min(value, top)], marker="D", ms=7, color=r.color, ls="none")
                else:
                    ax.axhline(min(value, top), color=r.color, lw=r.width, ls=r.style)
            ax.set(xscale="log", yscale="log")
            _log_axis(ax)
            ax.set_title(_title(outcome, runs, task, opt), fontsize=9)
            ax.set_xlabel("base LR / reference LR", fontsize=8)
            ax.set_ylabel("test loss (mean over seeds)", fontsize=8)
            ax.tick_params(labelsize=7)
    title = "test loss against the base LR (gaps: a seed diverged; ^: above the panel's range)"
    return _finish(fig, outcome, title, len(tasks), sweep=True)


def write_plots(outcome: BenchOutcome, runs: pd.DataFrame, records: dict[str, dict]) -> list[Path]:
    out = outcome.out_dir
    return [
        save_png(_curves_plot(outcome, runs, records, "loss"), out / "loss_curves.png"),
        save_png(_curves_plot(outcome, runs, records, "lr"), out / "lr_trajectories.png"),
        save_png(_robustness_plot(outcome, runs), out / "robustness.png"),
    ]
