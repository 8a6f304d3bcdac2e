"""The controller's quality bar, per suite and per task, and its comparison with its own LR
curve replayed (quality_bar.md).

The bar compares, cell by cell (same task, optimizer, base LR, seed and steps), the untuned
controller's **final validation loss** with constant LR and cosine annealing at the same base
LR (the sweep), and the controller at the reference LR with cosine at its tuned base LR:

| key | criterion                                                   | target       |
| --- | ----------------------------------------------------------- | ------------ |
| a   | cells where controller <= constant LR                       | >= 80%       |
| b   | cells where controller <= 1.01 x cosine                     | >= 60%       |
| c   | per task, controller's worst cell <= cosine's worst cell    | every task   |
| d   | median of controller(x1) / cosine(best LR of the grid)      | <= 1.05      |

A second, stricter table holds the targets for a controller that generalizes (untuned, at
the user's LR, at least as good as cosine tuned per task), judged on the same runs:

| key | criterion                                                                | target     |
| --- | ------------------------------------------------------------------------ | ---------- |
| G1  | median of controller(x1) / cosine(best LR of the grid)                   | <= 1.00    |
| G2  | cells where controller <= 1.01 x cosine at the same LR                   | >= 80%     |
| G3  | per task, worst cell <= cosine's, no divergence where cosine is finite   | every task |
| G4  | per task, the better controller at x1 beats Adam at 1e-3 (mean val loss) | every task |
| G5  | tasks where the controller beats its own replay in most runs             | most tasks |

The replay comparison holds the controller at the reference LR against its own mean LR curve
replayed as a fixed schedule on the same seeds (lrctl.bench.tuners.ReplayTuner): the same
curve on average, without the reaction to the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lrctl.bench.methods import find_method
from lrctl.bench.outcome import BenchOutcome

# Quality bar targets for the shipped controller (never change them to make a run pass).
TARGET_A = 0.80  # fraction of cells with controller <= constant LR
TARGET_B = 0.60  # fraction of cells with controller <= 1.01 x cosine
TARGET_D = 1.05  # median of controller(x1) / cosine(best grid LR)
# Generalization targets (the stricter table; never change them to make a run pass either).
GOAL_RATIO = 1.00  # G1: median of controller(x1) / cosine(best grid LR)
GOAL_CELLS = 0.80  # G2: fraction of cells with controller <= 1.01 x cosine at the same LR


def fmt_loss(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "inf"


def mean_with_inf(values: pd.Series) -> float:
    """The mean, or +inf when any value is not finite (a diverged run)."""
    v = values.to_numpy(dtype=float)
    return math.inf if not np.isfinite(v).all() else float(v.mean())


@dataclass
class Criterion:
    key: str
    text: str
    value: str
    target: str
    passed: bool | None  # None: not measured


def _val_index(runs: pd.DataFrame) -> pd.Series:
    val = runs.set_index(["task", "method", "lr_factor", "seed"])["final_val_loss"]
    return val[~val.index.duplicated()]


def bar_cells(outcome: BenchOutcome, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, optimizer, sweep factor, seed): the final validation loss of the
    controller, constant LR and cosine at that base LR."""
    plan, cfg = outcome.plan, outcome.plan.config
    val = _val_index(runs)
    cells = []
    for ctrl in (m for m in plan.sweep_methods if m.uses_controller):
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
    return pd.DataFrame(
        cells,
        columns=["task", "optimizer", "factor", "seed", "controller", "constant", "cosine"],
    )


def bar_ratios(outcome: BenchOutcome, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, optimizer, seed): controller(x1) / cosine(best grid LR), on final
    validation loss (1 where both are equal, e.g. both diverged); empty without x1 in the
    sweep or a tuned cosine."""
    plan, cfg = outcome.plan, outcome.plan.config
    val = _val_index(runs)
    rows = []
    if 1.0 in cfg.sweep:
        for ctrl in (m for m in plan.sweep_methods if m.uses_controller):
            cos = find_method(ctrl.optimizer, "cosine").name
            for t in plan.families:
                best = outcome.chosen.get((t, cos))
                if best is None:  # not tuned (a one-point grid)
                    continue
                for s in cfg.final_seed_list:
                    num, den = val[(t, ctrl.name, 1.0, s)], val[(t, cos, best, s)]
                    ratio = 1.0 if num == den else num / den
                    rows.append({"task": t, "optimizer": ctrl.optimizer, "seed": s, "ratio": ratio})
    return pd.DataFrame(rows, columns=["task", "optimizer", "seed", "ratio"])


def quality_bar(outcome: BenchOutcome, runs: pd.DataFrame) -> tuple[list[Criterion], str]:
    """The shipped controller's bar over the whole suite. Returns the criteria and a markdown
    table of the mean final validation loss per (task, optimizer, factor)."""
    cfg = outcome.plan.config
    cell = bar_cells(outcome, runs)
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
        f"{t}: {fmt_loss(r.controller)} vs {fmt_loss(r.cosine)}" for t, r in worst.iterrows()
    )
    crit.append(Criterion("c", "per task, controller's worst cell <= cosine's worst cell",
                          f"{int(c_ok.sum())}/{len(c_ok)} tasks ({per_task})", "every task",
                          bool(c_ok.all())))  # fmt: skip
    ratios = bar_ratios(outcome, runs)
    if len(ratios):
        d = float(np.median(ratios.ratio))
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
        .agg(mean_with_inf)
        .reset_index()
    )
    for col in ("controller", "constant", "cosine"):
        means[col] = means[col].map(fmt_loss)
    means["factor"] = means["factor"].map(lambda f: f"x{f:g}")
    return crit, means.to_markdown(index=False)


def quality_by_task(outcome: BenchOutcome, runs: pd.DataFrame) -> pd.DataFrame:
    """The bar's four numbers per task (with its horizon): (a) and (b) as shares of the task's
    cells, (c) as the two worst cells, (d) as the task's median ratio."""
    cell = bar_cells(outcome, runs)
    ratios = bar_ratios(outcome, runs)
    rows = []
    for t in outcome.plan.families:
        c = cell[cell.task == t]
        if c.empty:
            continue
        worst_c, worst_q = c.controller.max(), c.cosine.max()
        r = ratios[ratios.task == t].ratio
        rows.append(
            {
                "task": t,
                "steps": outcome.plan.steps[t],
                "(a) <= constant": f"{(c.controller <= c.constant).mean():.0%}",
                "(b) <= 1.01 x cosine": f"{(c.controller <= 1.01 * c.cosine).mean():.0%}",
                "(c) worst cell vs cosine's": (
                    f"{fmt_loss(worst_c)} vs {fmt_loss(worst_q)} "
                    f"({'pass' if worst_c <= worst_q else 'FAIL'})"
                ),
                "(d) median ratio": f"{float(np.median(r)):.3f}" if len(r) else "n/a",
            }
        )
    return pd.DataFrame(rows)


def replay_pairs(outcome: BenchOutcome, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, optimizer, seed) where a controller and its replay both ran: their
    final validation and test losses on the same seed."""
    plan = outcome.plan
    finals = runs[runs.role == "final"].set_index(["task", "method", "seed"])
    finals = finals[~finals.index.duplicated()]
    rows = []
    for rep in (m for m in plan.methods if m.replays):
        ctrl = rep.replays
        for t in plan.families:
            for s in plan.config.final_seed_list:
                if (t, ctrl, s) not in finals.index or (t, rep.name, s) not in finals.index:
                    continue
                a, b = finals.loc[(t, ctrl, s)], finals.loc[(t, rep.name, s)]
                rows.append(
                    {"task": t, "optimizer": rep.optimizer, "seed": s,
                     "controller_val": a.final_val_loss, "replay_val": b.final_val_loss,
                     "controller_test": a.test_loss, "replay_test": b.test_loss}
                )  # fmt: skip
    columns = ["task", "optimizer", "seed", "controller_val", "replay_val", "controller_test",
               "replay_test"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _ratio(num: float, den: float) -> float:
    return 1.0 if num == den else num / den


def replay_summary(pairs: pd.DataFrame) -> str:
    """One sentence: how often the controller beats its replayed curve, and by how much."""
    if pairs.empty:
        return ""
    wins = (pairs.controller_val < pairs.replay_val).sum()
    ties = (pairs.controller_val == pairs.replay_val).sum()
    ratio = float(np.median([_ratio(a, b) for a, b in zip(pairs.controller_val,
                                                           pairs.replay_val, strict=True)]))  # fmt: skip
    return (
        f"The controller's final validation loss is lower than its replayed LR curve's in "
        f"{wins} of {len(pairs)} (task, optimizer, seed) runs"
        + (f" ({ties} ties)" if ties else "")
        + f"; median ratio controller / replay {ratio:.3f} (below 1: reacting to the run "
        "pays; about 1: the curve, not the reaction, does the work)."
    )


def replay_table(pairs: pd.DataFrame) -> str:
    """Per (task, optimizer): mean final validation and test loss of the controller and of its
    replay, and the controller's wins on validation loss."""
    if pairs.empty:
        return ""
    g = pairs.groupby(["task", "optimizer"], sort=False)
    table = pd.DataFrame(
        {
            "controller val": g.controller_val.agg(mean_with_inf).map(fmt_loss),
            "replay val": g.replay_val.agg(mean_with_inf).map(fmt_loss),
            "controller test": g.controller_test.agg(mean_with_inf).map(fmt_loss),
            "replay test": g.replay_test.agg(mean_with_inf).map(fmt_loss),
            "controller lower (val)": g.apply(
                lambda d: f"{int((d.controller_val < d.replay_val).sum())}/{len(d)}",
                include_groups=False,
            ),
        }
    ).reset_index()
    return table.to_markdown(index=False)


def generalization_bar(outcome: BenchOutcome, runs: pd.DataFrame) -> list[Criterion]:
    """The generalization targets G1-G5 (module docstring) on the bar's runs; empty without a
    controller sweep. G4 needs Adam at 1e-3 and G5 the replay methods among the runs, else
    they read "not measured"."""
    cell = bar_cells(outcome, runs)
    if cell.empty:
        return []
    crit: list[Criterion] = []
    ratios = bar_ratios(outcome, runs)
    if len(ratios):
        d = float(np.median(ratios.ratio))
        crit.append(Criterion("G1", "median of controller(x1) / cosine(best LR of the grid)",
                              f"{d:.3f}", f"<= {GOAL_RATIO:.2f}", d <= GOAL_RATIO))  # fmt: skip
    b = float((cell.controller <= 1.01 * cell.cosine).mean())
    crit.append(Criterion("G2", "cells where controller <= 1.01 x cosine at the same LR",
                          f"{b:.1%}", f">= {GOAL_CELLS:.0%}", b >= GOAL_CELLS))  # fmt: skip
    failing = []
    for t, c in cell.groupby("task", sort=False):
        lost = (~np.isfinite(c.controller) & np.isfinite(c.cosine)).sum()
        if c.controller.max() > c.cosine.max() or lost:
            failing.append(
                f"{t}" + (f" ({lost} divergences where cosine stays finite)" if lost else "")
            )
    n_tasks = cell.task.nunique()
    crit.append(Criterion("G3", "per task, worst cell <= cosine's worst, no divergence where "
                          "cosine stays finite",
                          f"{n_tasks - len(failing)}/{n_tasks} tasks"
                          + (f" (fails: {', '.join(failing)})" if failing else ""),
                          "every task", not failing))  # fmt: skip
    finals = runs[runs.role == "final"]
    means = finals.groupby(["task", "method"]).final_val_loss.agg(mean_with_inf)
    controllers = [m.name for m in outcome.plan.sweep_methods if m.uses_controller]
    tasks = [t for t in outcome.plan.families if (t, "adam_default") in means.index]
    if tasks:
        lose = [
            t for t in tasks
            if not min(means.get((t, m), math.inf) for m in controllers) < means[(t, "adam_default")]
        ]  # fmt: skip
        crit.append(Criterion("G4", "per task, the better controller at x1 beats Adam at 1e-3 "
                              "(mean final validation loss)",
                              f"{len(tasks) - len(lose)}/{len(tasks)} tasks"
                              + (f" (loses on: {', '.join(lose)})" if lose else ""),
                              "every task", not lose))  # fmt: skip
    else:
        crit.append(Criterion("G4", "per task, the better controller at x1 beats Adam at 1e-3",
                              "not measured (adam_default not run)", "every task", None))  # fmt: skip
    pairs = replay_pairs(outcome, runs)
    if not pairs.empty:
        won = pairs.assign(win=pairs.controller_val < pairs.replay_val).groupby("task").win.mean()
        n_won = int((won > 0.5).sum())
        crit.append(Criterion("G5", "tasks where the controller beats its own replay in most "
                              "(optimizer, seed) runs", f"{n_won}/{len(won)} tasks",
                              "most tasks", n_won > len(won) / 2))  # fmt: skip
    else:
        crit.append(Criterion("G5", "tasks where the controller beats its own replay",
                              "not measured (no replay method run)", "most tasks", None))  # fmt: skip
    return crit


def verdict(crit: list[Criterion]) -> str:
    return "PASS" if crit and all(c.passed for c in crit) else "FAIL"


def criteria_table(crit: list[Criterion]) -> str:
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
    return rows.to_markdown(index=False)


def quality_markdown(
    outcome: BenchOutcome, crit: list[Criterion], table: str, runs: pd.DataFrame
) -> str:
    plan, cfg = outcome.plan, outcome.plan.config
    n_pass = sum(c.passed is True for c in crit)
    quick = (
        f"\n**Quick run** ({sorted(set(plan.steps.values()))} steps, {len(cfg.grid)}-point grid): "
        "an indication only; the bar is judged on a full run.\n"
        if cfg.quick
        else ""
    )
    if not crit:  # no sweep: only the replay comparison below
        parts = [
            f"# Controller quality bar: suite `{plan.suite_name}` — not measured\n{quick}",
            "No controller method was requested, so there is no sweep to judge the bar on.\n",
        ]
    else:
        parts = [
            f"# Controller quality bar: suite `{plan.suite_name}` — {verdict(crit)} "
            f"({n_pass}/{len(crit)})\n{quick}",
            f"Controller `{plan.controller_source}`, untuned, at x"
            + ", x".join(f"{f:g}" for f in cfg.sweep)
            + f" of each task's reference LR, with SGD-momentum and with Adam, seeds "
            f"{list(cfg.final_seed_list)}. Each cell (same task, optimizer, base LR, seed and "
            "steps) compares **final validation loss** with constant LR and cosine annealing at "
            "the same base LR; (d) compares with cosine at its per-task best base LR from the "
            "tuning grid, on the same seeds. A diverged run's loss is +inf. Targets are fixed.\n",
            criteria_table(crit) + "\n",
            "## Per task\n",
            quality_by_task(outcome, runs).to_markdown(index=False) + "\n",
        ]
        goals = generalization_bar(outcome, runs)
        parts += [
            f"## Generalization targets — {verdict(goals)} "
            f"({sum(c.passed is True for c in goals)}/{len(goals)})\n",
            "The stricter targets for a controller that generalizes: untuned, at the user's LR, "
            "at least as good as cosine tuned per task (same runs as above).\n",
            criteria_table(goals) + "\n",
        ]
    pairs = replay_pairs(outcome, runs)
    if not pairs.empty:
        parts += [
            "## The controller against its own LR curve, replayed\n",
            "Each controller's LR at every step of its own runs at the reference LR (tuning "
            "seeds), averaged geometrically over the seeds, replayed as a fixed schedule on the "
            "reported seeds: the same curve on average, without the reaction to the run. "
            + replay_summary(pairs)
            + "\n",
            replay_table(pairs) + "\n",
        ]
    if crit:
        parts += ["## Mean final validation loss per cell group (over seeds)\n", f"{table}\n"]
    return "\n".join(parts)


def quality_json(outcome: BenchOutcome, crit: list[Criterion], runs: pd.DataFrame) -> str:
    """quality_bar.md's verdicts as JSON (quality_bar.json), for scripts that compare
    controllers (benchmarks/lever_score.py): both tables' criteria as written in the markdown,
    plus the numbers behind (d)/G1 and the replay comparison unrounded (null when not
    measured)."""
    ratios = bar_ratios(outcome, runs)
    pairs = replay_pairs(outcome, runs)
    replay = None
    if not pairs.empty:
        replay = {
            "wins": int((pairs.controller_val < pairs.replay_val).sum()),
            "runs": len(pairs),
            "median_ratio": float(np.median([_ratio(a, b) for a, b in zip(
                pairs.controller_val, pairs.replay_val, strict=True)])),
        }  # fmt: skip
    plan = outcome.plan
    doc = {
        "suite": plan.suite_name,
        "controller": str(plan.controller_source),
        "steps": {t: int(plan.steps[t]) for t in plan.families},
        "bar": [asdict(c) for c in crit],
        "generalization": [asdict(c) for c in generalization_bar(outcome, runs)],
        "median_ratio_x1_vs_best_cosine": float(np.median(ratios.ratio)) if len(ratios) else None,
        "replay": replay,
    }
    return json.dumps(doc, indent=2) + "\n"


def criteria_lines(crit: list[Criterion]) -> list[str]:
    return [
        f"  ({c.key}) {c.text}: {c.value} [target {c.target}] "
        f"{ {True: 'PASS', False: 'FAIL', None: 'n/a'}[c.passed] }"
        for c in crit
    ]
