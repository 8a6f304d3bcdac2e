"""The benchmark's outputs: runs.csv, histories, summary.md, quality_bar.md and the index.

Everything here is computed from the store's records and the plan, so rerunning a finished
benchmark rewrites identical tables. Each file is written to a temporary name and renamed, so
a reader never sees half a file.
"""

from __future__ import annotations

import gzip
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lrctl.atomic import atomic_write_bytes, atomic_write_text
from lrctl.bench.methods import ADAM_REFERENCE, COSINE_REFERENCE, find_method
from lrctl.bench.plan import MIN_FULL_GRID_POINTS, ROLES, ScheduleParams
from lrctl.bench.runner import BenchOutcome
from lrctl.bench.tuners import NO_BUDGET, RANGE_TEST_STEPS, TUNERS, Budget
from lrctl.bench.tuners import protocol_lines as tuner_protocol_lines

RUN_COLUMNS = [
    "task", "method", "optimizer", "schedule", "schedule_params", "base_lr", "lr_factor",
    "role", "seed", "final_val_loss", "final_val_accuracy", "test_loss", "test_accuracy",
    "diverged", "diverged_at", "wall_time_s", "steps", "tune_trials", "tune_steps",
    "config_hash",
]  # fmt: skip
"""runs.csv: one row per run. A run serving several roles (the controller at x1 is its final
run and a sweep point) has one row, under the first of final, sweep, tune. `schedule_params`:
the schedule's settings a tuner chose ('pct_start=0.21'; empty: the defaults); `schedule`
'range_test' is a range-test tuner's job. On final rows, the tuning budget the method used on
that task: `tune_trials` configurations tried (grid: its points; random search and TPE: their
trials; a range test: 1; untuned: 0) and `tune_steps` inner steps spent, across seeds (each
training trial's full horizon; a range test's steps used)."""

ROLE_ORDER = ("final", "sweep", "tune")

# Quality bar targets for the shipped controller (never change them to make a run pass).
TARGET_A = 0.80  # fraction of cells with controller <= constant LR
TARGET_B = 0.60  # fraction of cells with controller <= 1.01 x cosine
TARGET_D = 1.05  # median of controller(x1) / cosine(best grid LR)


def _gzip(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:  # mtime=0: identical bytes
        f.write(text.encode("utf-8"))
    return buf.getvalue()


def params_text(params: ScheduleParams) -> str:
    """Schedule settings as 'name=value, ...' (empty for the defaults)."""
    return ", ".join(f"{k}={v:.3g}" for k, v in params)


def budget_of(outcome: BenchOutcome, task: str, method: str) -> Budget:
    """The tuning budget `method` used on `task` (none for an untuned method)."""
    tuned = outcome.tuned.get((task, method))
    return tuned.budget if tuned is not None else NO_BUDGET


def runs_frame(outcome: BenchOutcome, records: dict[str, dict]) -> pd.DataFrame:
    """The tidy runs table, in a fixed order (role, task, method, LR, seed)."""
    plan = outcome.plan
    task_rank = {t: i for i, t in enumerate(plan.families)}
    method_rank = {m.name: i for i, m in enumerate([*plan.methods, *plan.sweep_methods])}
    rows = []
    for h, c in outcome.configs.items():
        r = records[h]["result"]
        role = next(x for x in ROLE_ORDER if x in outcome.roles[h])
        budget = budget_of(outcome, c.task, c.method) if role == "final" else None
        rows.append(
            {
                "task": c.task,
                "method": c.method,
                "optimizer": c.optimizer,
                "schedule": c.schedule,
                "schedule_params": params_text(c.schedule_params),
                "base_lr": c.base_lr,
                "lr_factor": c.lr_factor,
                "role": role,
                "seed": c.seed,
                "final_val_loss": r["final_val_loss"],
                "final_val_accuracy": r["final_val_accuracy"],
                "test_loss": r["test_loss"],
                "test_accuracy": r["test_accuracy"],
                "diverged": r["diverged"],
                "diverged_at": r["diverged_at"],
                "wall_time_s": r["wall_time_s"],
                "steps": c.steps,
                "tune_trials": budget.trials if budget is not None else None,
                "tune_steps": budget.steps if budget is not None else None,
                "config_hash": h,
                "_order": (
                    ROLES.index(role),
                    task_rank[c.task],
                    method_rank[c.method],
                    c.base_lr,
                    c.seed,
                ),
            }
        )
    frame = pd.DataFrame(rows).sort_values("_order", kind="stable").drop(columns="_order")
    for col in ("diverged_at", "tune_trials", "tune_steps"):
        frame[col] = frame[col].astype("Int64")
    return frame.reset_index(drop=True)[RUN_COLUMNS]


def histories_csv(outcome: BenchOutcome, records: dict[str, dict]) -> tuple[bytes, bytes]:
    """Per-step (train loss, grad norm, LR) and per-validation histories of every run, as
    gzip CSV keyed by config_hash."""
    steps, evals = [], []
    for h in outcome.configs:
        rec = records[h]
        s = pd.DataFrame(rec["steps"])
        s.insert(0, "step", np.arange(len(s)))
        s.insert(0, "config_hash", h)
        steps.append(s)
        e = pd.DataFrame(rec["evals"])
        e["step"] = e["step"].astype(int)
        e.insert(0, "config_hash", h)
        evals.append(e)
    fmt = "%.6g"
    return (
        _gzip(pd.concat(steps).to_csv(index=False, float_format=fmt)),
        _gzip(pd.concat(evals).to_csv(index=False, float_format=fmt)),
    )


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "inf"


def mean_std_cell(values: pd.Series) -> str:
    """mean ± std (ddof=1) of finite values, with the number of diverged runs."""
    v = values.to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    n_bad = len(v) - len(finite)
    if len(finite) == 0:
        return f"diverged ({n_bad}/{len(v)})"
    text = _fmt(finite.mean())
    if len(finite) > 1:
        text += f" ± {finite.std(ddof=1):.2g}"
    if n_bad:
        text += f" (+{n_bad} diverged)"
    return text


def _mean_with_inf(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    return math.inf if not np.isfinite(v).all() else float(v.mean())


def win_rate(finals: pd.DataFrame, method: str, reference: str) -> float:
    """Fraction of (task, seed) pairs where `method`'s test loss is lower than `reference`'s
    (ties, e.g. both diverged, count half)."""
    a = finals[finals.method == method].set_index(["task", "seed"])["test_loss"]
    b = finals[finals.method == reference].set_index(["task", "seed"])["test_loss"]
    a, b = a.align(b, join="inner")
    if len(a) == 0:
        return math.nan
    wins = (a < b).astype(float) + 0.5 * (a == b).astype(float)
    return float(wins.mean())


BUDGET_COLUMN = "tuning budget (configs / inner steps)"


def budget_cell(budgets: list[Budget]) -> str:
    """A method's tuning budget over the tasks: configurations tried per task (a range when
    tasks differ) / inner steps spent on all tasks together; 'untuned' when none."""
    if not any(b.trials for b in budgets):
        return "untuned"
    lo, hi = min(b.trials for b in budgets), max(b.trials for b in budgets)
    trials = str(lo) if lo == hi else f"{lo}–{hi}"
    return f"{trials} / {sum(b.steps for b in budgets):,}"


@dataclass
class Tables:
    finals: pd.DataFrame
    test_loss: pd.DataFrame
    test_accuracy: pd.DataFrame
    lrs: pd.DataFrame


def summary_tables(outcome: BenchOutcome, runs: pd.DataFrame) -> Tables:
    plan = outcome.plan
    finals = runs[runs.role == "final"]
    tasks = list(plan.families)
    labels = {m.name: m.label for m in plan.methods}
    loss_rows, acc_rows, lr_rows = [], [], []
    means = pd.DataFrame(
        {
            t: {
                m.name: _mean_with_inf(
                    finals[(finals.task == t) & (finals.method == m.name)]["test_loss"]
                )
                for m in plan.methods
            }
            for t in tasks
        }
    )
    ranks = means.rank(method="min")
    for m in plan.methods:
        sel = finals[finals.method == m.name]
        row: dict[str, object] = {"method": labels[m.name]}
        acc: dict[str, object] = {"method": labels[m.name]}
        lr: dict[str, object] = {"method": labels[m.name]}
        for t in tasks:
            cell = sel[sel.task == t]
            row[t] = f"{mean_std_cell(cell['test_loss'])} ({int(ranks.loc[m.name, t])})"
            acc[t] = mean_std_cell(cell["test_accuracy"])
            factor, base = float(cell["lr_factor"].iloc[0]), float(cell["base_lr"].iloc[0])
            how = "reference" if m.lr == "reference" else "fixed"
            if m.tuned:
                how = TUNERS[m.tuner].label if (t, m.name) in outcome.tuned else "untuned"
            params = cell["schedule_params"].iloc[0]
            lr[t] = f"{base:.3g} (x{factor:.3g}, {how}{'; ' + params if params else ''})"
        row["mean rank"] = f"{ranks.loc[m.name].mean():.2f}"
        for ref, name in ((COSINE_REFERENCE, "win vs cosine"), (ADAM_REFERENCE, "win vs Adam")):
            row[name] = "—" if m.name == ref else f"{win_rate(finals, m.name, ref):.0%}"
        row["diverged"] = int(sel["diverged"].sum())
        row[BUDGET_COLUMN] = budget_cell([budget_of(outcome, t, m.name) for t in tasks])
        loss_rows.append(row)
        acc_rows.append(acc)
        lr_rows.append(lr)
    return Tables(finals, pd.DataFrame(loss_rows), pd.DataFrame(acc_rows), pd.DataFrame(lr_rows))


def budget_lines(outcome: BenchOutcome, runs: pd.DataFrame) -> list[str]:
    plan, cfg = outcome.plan, outcome.plan.config
    trials = len(cfg.grid) * cfg.tune_seeds
    lines = []
    if plan.tuning:
        per_task = ", ".join(f"{t}: {trials * s:,} inner steps" for t, s in plan.steps.items())
        tuners = {m.tuner for m in plan.methods if m.tuned}
        others = []
        if tuners & {"random", "tpe"}:
            others.append(
                f"random search and TPE: the same, {len(cfg.grid)} trials x {cfg.tune_seeds} "
                "seed(s)"
            )
        if "range_test" in tuners:
            others.append(f"a range test: 1 test of at most {RANGE_TEST_STEPS} steps")
        lines.append(
            f"- **Tuning budget per (task, tuned method):** {len(cfg.grid)} base LRs x "
            f"{cfg.tune_seeds} seed(s) = {trials} trials of the task's full horizon ({per_task})"
            + (f"; {'; '.join(others)}" if others else "")
            + f"; each method's in the column `{BUDGET_COLUMN}`."
        )
    for role in ROLES:
        sel = runs[runs.role == role]
        lines.append(
            f"- **{role} runs:** {len(sel)} runs, {int(sel['steps'].sum()):,} inner steps "
            f"planned ({len(sel) and int(sel['diverged'].sum())} diverged)."
        )
    lines.append(f"- **total:** {len(runs)} runs, {int(runs['steps'].sum()):,} inner steps.")
    return lines


def protocol_lines(outcome: BenchOutcome) -> list[str]:
    plan, cfg = outcome.plan, outcome.plan.config
    lines = [
        f"- **Tasks:** {'; '.join(plan.describe_task(t) for t in plan.families)}.",
    ]
    if plan.tuning:
        lines += tuner_protocol_lines(plan)
    else:
        lines.append(
            f"- **No tuning:** every method runs at x{cfg.grid[0]:g} of its task's reference LR "
            "(Adam at 1e-3 excepted)."
        )
    lines += [
        f"- **Reported figures:** every method retrained at its chosen LR with **fresh seeds** "
        f"{list(cfg.final_seed_list)} (never used in tuning), evaluated once on the held-out "
        "**test** split. Mean ± sample std over seeds; the rank in brackets is by mean test "
        "loss on that task (a diverged run counts as +inf).",
        "- **Untuned:** the controller runs at the task's reference LR for its optimizer "
        "(robustness over x" + ", x".join(f"{f:g}" for f in cfg.sweep) + " in quality_bar.md and "
        "robustness.png); Adam (lr=1e-3) is untuned by definition.",
        "- **Win rate:** fraction of (task, seed) pairs where the method's test loss is lower "
        f"than that of tuned `{COSINE_REFERENCE}` / of `{ADAM_REFERENCE}` on the same task and "
        "seed; ties count half.",
    ]
    if plan.added:
        lines.append(f"- **Added as comparison references:** {', '.join(plan.added)}.")
    if plan.controller is not None:
        lines.append(f"- **Controller:** `{plan.controller_source}`.")
    if cfg.quick or (plan.tuning and len(cfg.grid) < MIN_FULL_GRID_POINTS):
        lines.insert(
            0,
            f"- **QUICK RUN, not the full protocol:** {len(cfg.grid)}-point grid, "
            f"{cfg.tune_seeds} tuning seed(s), {sorted(set(plan.steps.values()))} steps.",
        )
    return lines


def summary_markdown(outcome: BenchOutcome, runs: pd.DataFrame, tables: Tables) -> str:
    plan = outcome.plan
    parts = [
        f"# lrctl bench: suite `{plan.suite_name}`\n",
        *protocol_lines(outcome),
        *budget_lines(outcome, runs),
        "\n## Test loss (mean ± std over seeds; rank per task in brackets)\n",
        tables.test_loss.to_markdown(index=False),
        "\n## Test accuracy\n",
        tables.test_accuracy.to_markdown(index=False),
        "\n## Base LR used in the final runs (x the task's reference LR)\n",
        tables.lrs.to_markdown(index=False),
        "\n## Plots\n",
        "![loss curves](loss_curves.png)\n",
        "![LR trajectories](lr_trajectories.png)\n",
        "![robustness](robustness.png)\n",
        "Files: `runs.csv` (one row per run), `steps.csv.gz` (per-step train loss, gradient "
        "norm, LR by config_hash), `evals.csv.gz` (validation curves), `quality_bar.md`.",
    ]
    return "\n".join(parts) + "\n"


@dataclass
class Criterion:
    key: str
    text: str
    value: str
    target: str
    passed: bool | None  # None: not measured


def quality_bar(outcome: BenchOutcome, runs: pd.DataFrame) -> tuple[list[Criterion], str]:
    """The shipped controller's bar, on final validation loss, cell by cell (same task,
    optimizer, base LR, seed and steps). Returns the criteria and a per-cell markdown table."""
    plan, cfg = outcome.plan, outcome.plan.config
    controllers = [m for m in plan.sweep_methods if m.uses_controller]
    val = runs.set_index(["task", "method", "lr_factor", "seed"])["final_val_loss"]
    val = val[~val.index.duplicated()]
    cells, per_task = [], {}
    for ctrl in controllers:
        const = find_method(ctrl.optimizer, "constant").name
        cos = find_method(ctrl.optimizer, "cosine").name
        for t in plan.families:
            for f in cfg.sweep:
                for s in cfg.final_seed_list:
                    c, k, q = (val[(t, name, f, s)] for name in (ctrl.name, const, cos))
                    cells.append(
                        {"task": t, "optimizer": ctrl.optimizer, "factor": f, "seed": s,
                         "controller": c, "constant": k, "cosine": q}
                    )  # fmt: skip
    cell = pd.DataFrame(cells)
    crit: list[Criterion] = []
    if cell.empty:
        return crit, ""
    a = float((cell.controller <= cell.constant).mean())
    b = float((cell.controller <= 1.01 * cell.cosine).mean())
    crit.append(Criterion("a", "cells where controller <= constant LR", f"{a:.1%}",
                          f">= {TARGET_A:.0%}", a >= TARGET_A))  # fmt: skip
    crit.append(Criterion("b", "cells where controller <= 1.01 x cosine", f"{b:.1%}",
                          f">= {TARGET_B:.0%}", b >= TARGET_B))  # fmt: skip
    worst = cell.groupby("task", sort=False)[["controller", "cosine"]].max()
    c_ok = worst.controller <= worst.cosine
    per_task = ", ".join(
        f"{t}: {_fmt(r.controller)} vs {_fmt(r.cosine)}" for t, r in worst.iterrows()
    )
    crit.append(Criterion("c", "per task, controller's worst cell <= cosine's worst cell",
                          f"{int(c_ok.sum())}/{len(c_ok)} tasks ({per_task})", "every task",
                          bool(c_ok.all())))  # fmt: skip
    ratios = []
    if 1.0 in cfg.sweep:
        for ctrl in controllers:
            cos = find_method(ctrl.optimizer, "cosine").name
            for t in plan.families:
                best = outcome.chosen.get((t, cos))
                if best is None:  # not tuned (a one-point grid)
                    continue
                for s in cfg.final_seed_list:
                    num, den = val[(t, ctrl.name, 1.0, s)], val[(t, cos, best, s)]
                    ratios.append(1.0 if num == den else num / den)
    if ratios:
        d = float(np.median(ratios))
        grid_note = f"{len(cfg.grid)}-point grid"
        crit.append(Criterion("d", f"median of controller(x1) / cosine(best LR of the {grid_note})",
                              f"{d:.3f} over {len(ratios)} (task, optimizer, seed)",
                              f"<= {TARGET_D}", d <= TARGET_D))  # fmt: skip
    else:
        crit.append(Criterion("d", "median of controller(x1) / tuned cosine", "not measured "
                              "(needs x1 in the sweep and a tuned cosine)", f"<= {TARGET_D}", None))  # fmt: skip
    means = (
        cell.groupby(["task", "optimizer", "factor"], sort=False)[
            ["controller", "constant", "cosine"]
        ]
        .agg(_mean_with_inf)
        .reset_index()
    )
    for col in ("controller", "constant", "cosine"):
        means[col] = means[col].map(_fmt)
    means["factor"] = means["factor"].map(lambda f: f"x{f:g}")
    return crit, means.to_markdown(index=False)


def quality_markdown(outcome: BenchOutcome, crit: list[Criterion], table: str) -> str:
    plan, cfg = outcome.plan, outcome.plan.config
    n_pass = sum(c.passed is True for c in crit)
    verdict = "PASS" if crit and all(c.passed for c in crit) else "FAIL"
    rows = pd.DataFrame(
        [
            {
                "": c.key,
                "criterion": c.text,
                "value": c.value,
                "target": c.target,
                "result": {True: "pass", False: "FAIL", None: "n/a"}[c.passed],
            }
            for c in crit
        ]
    )
    quick = (
        f"\n**Quick run** ({sorted(set(plan.steps.values()))} steps, {len(cfg.grid)}-point grid): "
        "an indication only; the bar is judged on a full run.\n"
        if cfg.quick
        else ""
    )
    return (
        f"# Controller quality bar: suite `{plan.suite_name}` — {verdict} ({n_pass}/{len(crit)})\n"
        f"{quick}\n"
        f"Controller `{plan.controller_source}`, untuned, at x"
        + ", x".join(f"{f:g}" for f in cfg.sweep)
        + f" of each task's reference LR, with SGD-momentum and with Adam, seeds "
        f"{list(cfg.final_seed_list)}. Each cell (same task, optimizer, base LR, seed and steps) "
        "compares **final validation loss** with constant LR and cosine annealing at the same "
        "base LR; (d) compares with cosine at its per-task best base LR from the tuning grid, "
        "on the same seeds. A diverged run's loss is +inf. Targets are fixed.\n\n"
        f"{rows.to_markdown(index=False)}\n\n"
        "## Mean final validation loss per cell group (over seeds)\n\n"
        f"{table}\n"
    )


def criteria_lines(crit: list[Criterion]) -> list[str]:
    return [
        f"  ({c.key}) {c.text}: {c.value} [target {c.target}] "
        f"{ {True: 'PASS', False: 'FAIL', None: 'n/a'}[c.passed] }"
        for c in crit
    ]


def standing_lines(outcome: BenchOutcome, finals: pd.DataFrame) -> list[str]:
    """Where each controller method wins and loses, in sentences computed from the final runs
    (mean test loss per task; rank among every method of the run), so they stay true when the
    benchmark is regenerated."""
    plan = outcome.plan
    labels = {m.name: m.label for m in plan.methods}
    means = pd.DataFrame(
        {
            t: {
                m.name: _mean_with_inf(finals[(finals.task == t) & (finals.method == m.name)][
                    "test_loss"])
                for m in plan.methods
            }
            for t in plan.families
        }
    )  # fmt: skip
    ranks = means.rank(method="min")
    mean_rank = ranks.mean(axis=1).sort_values()
    n = len(means)
    controllers = [m.name for m in plan.methods if m.uses_controller]
    if not controllers:
        return ["No controller method was part of this run."]
    lines = []
    for t in plan.families:  # the short version: one sentence per task
        own = min(controllers, key=lambda c: means.loc[c, t])
        best = means[t].idxmin()
        verdict = (
            "the controller wins"
            if ranks.loc[own, t] == 1
            else f"{labels[best]} wins ({means.loc[best, t]:.4g} vs {means.loc[own, t]:.4g})"
        )
        lines.append(
            f"On **{t}** the best controller is {labels[own]}, rank {int(ranks.loc[own, t])} "
            f"of {n}: {verdict}."
        )
    lines += ["", "Per controller method:", ""]
    for m in (m for m in plan.methods if m.uses_controller):
        place = int((mean_rank < mean_rank[m.name]).sum()) + 1
        parts = [
            f"**{labels[m.name]}** (untuned) has mean rank {mean_rank[m.name]:.1f} of {n} "
            f"methods (place {place})."
        ]
        for t in plan.families:
            better = means[t][means[t] < means.loc[m.name, t]].sort_values()
            if better.empty:
                parts.append(f"On {t} it is the best of all methods ({means.loc[m.name, t]:.4g}).")
            else:
                best = better.index[0]
                parts.append(
                    f"On {t} {len(better)} of {n - 1} beat it ({means.loc[m.name, t]:.4g}; best "
                    f"{labels[best]} {better.iloc[0]:.4g})."
                )
        lines.append("- " + " ".join(parts))
    return lines


def readme_markdown(
    outcome: BenchOutcome, results_root: Path, command: str, outcome_finals: pd.DataFrame
) -> str:
    import datetime as dt

    out = outcome.out_dir
    rel = out.relative_to(results_root)
    plan = outcome.plan
    folders = sorted(
        p.name for p in results_root.iterdir() if p.is_dir() and (p / "summary.md").is_file()
    )
    lines = [
        "# Benchmark results",
        "",
        f"Latest full run: suite `{plan.suite_name}`, {dt.date.today().isoformat()}, "
        f"{len(outcome.configs)} runs ({outcome.n_new} trained now, {outcome.n_cached} from the "
        f"store), {outcome.wall_time_s / 60:.1f} min on {outcome.backend}.",
        "",
        f"Command: `{command}`",
        "",
        f"- [{rel}/summary.md]({rel}/summary.md): methods x tasks, test loss, ranks, win rates, "
        "tuning budget",
        f"- [{rel}/quality_bar.md]({rel}/quality_bar.md): the controller's quality bar",
        f"- [{rel}/runs.csv]({rel}/runs.csv): one row per run; "
        f"[{rel}/evals.csv.gz]({rel}/evals.csv.gz): validation histories; `steps.csv.gz`: "
        "per-step histories (written by the run, not committed: several MiB)",
        f"- plots: [{rel}/loss_curves.png]({rel}/loss_curves.png), "
        f"[{rel}/lr_trajectories.png]({rel}/lr_trajectories.png), "
        f"[{rel}/robustness.png]({rel}/robustness.png)",
        "",
        "Where the controller wins and where it loses (mean test loss over the seeds, computed "
        "from runs.csv):",
        "",
        *standing_lines(outcome, outcome_finals),
        "",
        "Regenerate with the command above: finished runs are kept in `runs/` (one JSON per run, "
        "not committed) and skipped, so an interrupted benchmark resumes.",
        "",
        "Other result folders: "
        + (", ".join(f"`{f}/`" for f in folders if f != str(rel)) or "none"),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    runs: pd.DataFrame
    tables: Tables
    criteria: list[Criterion]
    files: list[Path]


def write_report(outcome: BenchOutcome, command: str | None = None, echo: bool = True) -> Report:
    """Write every output of a finished benchmark and print its summary."""
    from lrctl.bench.plots import write_plots

    out = outcome.out_dir
    records = {h: outcome.store.load(h) for h in outcome.configs}
    runs = runs_frame(outcome, records)
    tables = summary_tables(outcome, runs)
    crit, cell_table = quality_bar(outcome, runs)
    files = [out / "runs.csv", out / "steps.csv.gz", out / "evals.csv.gz", out / "summary.md"]
    atomic_write_text(files[0], runs.to_csv(index=False))
    steps_gz, evals_gz = histories_csv(outcome, records)
    atomic_write_bytes(files[1], steps_gz)
    atomic_write_bytes(files[2], evals_gz)
    atomic_write_text(files[3], summary_markdown(outcome, runs, tables))
    if crit:
        files.append(out / "quality_bar.md")
        atomic_write_text(files[-1], quality_markdown(outcome, crit, cell_table))
    files += write_plots(outcome, runs, records)
    if not outcome.plan.config.quick:
        root = out.parent
        cmd = command or "lrctl.bench.run_bench(...) from Python"
        files.append(root / "README.md")
        atomic_write_text(files[-1], readme_markdown(outcome, root, cmd, tables.finals))
    if echo:
        print_summary(outcome, tables, crit, files, budget_lines(outcome, runs))
    return Report(runs, tables, crit, files)


def print_summary(
    outcome: BenchOutcome,
    tables: Tables,
    crit: list[Criterion],
    files: list[Path],
    budget: list[str],
) -> None:
    cfg = outcome.plan.config
    print(f"\nlrctl bench: suite {outcome.plan.suite_name}" + (" (QUICK)" if cfg.quick else ""))
    lines = protocol_lines(outcome)[:1] if cfg.quick else []
    used = {m.tuner for m in outcome.plan.methods if m.tuned}
    tuners = [t.label for name, t in TUNERS.items() if name in used]
    range_note = "; range tests: train split" if "range test" in tuners else ""
    lines.append(
        f"- Protocol: LRs tuned ({', '.join(tuners)}) on the validation split{range_note} "
        f"(tuning seeds {list(cfg.tune_seed_list)}); reported: fresh seeds "
        f"{list(cfg.final_seed_list)} on the test split."
    )
    for line in lines + budget:
        print(line.replace("**", ""))
    print("\ntest loss, mean ± std over seeds (rank per task):")
    print(tables.test_loss.to_markdown(index=False))
    if crit:
        verdict = "PASS" if all(c.passed for c in crit) else "FAIL"
        print(f"\ncontroller quality bar: {verdict}")
        print("\n".join(criteria_lines(crit)))
    print(
        f"\n{len(outcome.configs)} runs: {outcome.n_new} trained now, {outcome.n_cached} "
        f"from the store; {outcome.wall_time_s / 60:.1f} min on {outcome.backend}"
    )
    print(f"wrote {outcome.out_dir}/: " + ", ".join(p.name for p in files))
