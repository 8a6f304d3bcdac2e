"""The benchmark's outputs: runs.csv, histories, summary.md, and the console summary; it
writes quality_bar.md (lrctl.bench.quality), the plots (lrctl.bench.plots), standing.md and
the index (lrctl.bench.index) too.

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
from lrctl.bench.index import STANDING, index_markdown, standing_markdown
from lrctl.bench.methods import ADAM_REFERENCE, COSINE_REFERENCE
from lrctl.bench.outcome import BenchOutcome
from lrctl.bench.plan import MIN_FULL_GRID_POINTS, ROLES, ScheduleParams
from lrctl.bench.plots import write_plots
from lrctl.bench.quality import (
    Criterion,
    criteria_lines,
    fmt_loss,
    mean_with_inf,
    quality_bar,
    quality_json,
    quality_markdown,
    replay_pairs,
    verdict,
)
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


def mean_std_cell(values: pd.Series) -> str:
    """mean ± std (ddof=1) of finite values, with the number of diverged runs."""
    v = values.to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    n_bad = len(v) - len(finite)
    if len(finite) == 0:
        return f"diverged ({n_bad}/{len(v)})"
    text = fmt_loss(finite.mean())
    if len(finite) > 1:
        text += f" ± {finite.std(ddof=1):.2g}"
    if n_bad:
        text += f" (+{n_bad} diverged)"
    return text


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
                m.name: mean_with_inf(
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
        if "replay" in tuners:
            others.append(
                f"a controller replay: the controller's {cfg.tune_seeds} run(s) at the reference "
                "LR it averages"
            )
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
class Report:
    runs: pd.DataFrame
    tables: Tables
    criteria: list[Criterion]
    files: list[Path]


def write_report(outcome: BenchOutcome, command: str | None = None, echo: bool = True) -> Report:
    """Write every output of a finished benchmark and print its summary."""
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
    if crit or not replay_pairs(outcome, runs).empty:
        files.append(out / "quality_bar.md")
        atomic_write_text(files[-1], quality_markdown(outcome, crit, cell_table, runs))
        if crit:
            files.append(out / "quality_bar.json")
            atomic_write_text(files[-1], quality_json(outcome, crit, runs))
    files += write_plots(outcome, runs, records)
    if not outcome.plan.config.quick:
        cmd = command or "lrctl.bench.run_bench(...) from Python"
        files.append(out / STANDING)
        atomic_write_text(files[-1], standing_markdown(outcome, runs, crit, cmd))
        files.append(out.parent / "README.md")
        atomic_write_text(files[-1], index_markdown(out.parent))
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
    used = {m.tuner for m in outcome.plan.methods if outcome.plan.has_tuner(m)}
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
        print(f"\ncontroller quality bar: {verdict(crit)}")
        print("\n".join(criteria_lines(crit)))
    print(
        f"\n{len(outcome.configs)} runs: {outcome.n_new} trained now, {outcome.n_cached} "
        f"from the store; {outcome.wall_time_s / 60:.1f} min on {outcome.backend}"
    )
    print(f"wrote {outcome.out_dir}/: " + ", ".join(p.name for p in files))
