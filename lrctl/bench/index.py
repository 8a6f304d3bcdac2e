"""Where the controller stands: each suite's `standing.md`, and the index results/README.md
that gathers every suite's.

A full benchmark writes `<results>/<suite>/standing.md` (its date, command, the quality bar
overall and per task, the replay comparison, and sentences on where the controller wins and
loses, all computed from the runs). The index is then rewritten from every folder's
standing.md, so it always shows each suite's latest full run, whichever ran last.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd

from lrctl.bench.outcome import BenchOutcome
from lrctl.bench.quality import (
    Criterion,
    criteria_table,
    mean_with_inf,
    quality_by_task,
    replay_pairs,
    replay_summary,
    verdict,
)

SUITE_ROLES = {
    "eval": "the final report: held-out families, nothing is chosen here",
    "val": "where every choice about the controller is made",
    "train": "the families the controller trains on",
    "train_v1": "the first revision of the train suite",
}
"""What each shipped suite is for (envs/README.md), as the index says it."""
SUITE_ORDER = ("eval", "val", "train", "train_v1")
STANDING = "standing.md"


def standing_lines(outcome: BenchOutcome, finals: pd.DataFrame) -> list[str]:
    """Where each controller method wins and loses, in sentences computed from the final runs
    (mean test loss per task; rank among every method of the run), so they stay true when the
    benchmark is regenerated."""
    plan = outcome.plan
    labels = {m.name: m.label for m in plan.methods}
    means = pd.DataFrame(
        {
            t: {
                m.name: mean_with_inf(finals[(finals.task == t) & (finals.method == m.name)][
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
        verdict_text = (
            "the controller wins"
            if ranks.loc[own, t] == 1
            else f"{labels[best]} wins ({means.loc[best, t]:.4g} vs {means.loc[own, t]:.4g})"
        )
        lines.append(
            f"- On **{t}** ({plan.steps[t]} steps) the best controller is {labels[own]}, rank "
            f"{int(ranks.loc[own, t])} of {n}: {verdict_text}."
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


def standing_markdown(
    outcome: BenchOutcome,
    runs: pd.DataFrame,
    crit: list[Criterion],
    command: str,
    today: dt.date | None = None,
) -> str:
    """The suite's section of the index (links relative to the suite's folder)."""
    plan = outcome.plan
    finals = runs[runs.role == "final"]
    role = SUITE_ROLES.get(plan.suite_name)
    head = f"## Suite `{plan.suite_name}` (revision {plan.suite.revision})"
    lines = [
        head + (f": {role}" if role else ""),
        "",
        f"Latest full run: {(today or dt.date.today()).isoformat()}, {len(outcome.configs)} "
        f"runs, {runs['steps'].sum():,} inner steps, {runs['wall_time_s'].sum() / 60:.1f} min "
        "of training summed over the runs (each on one core); this call trained "
        f"{outcome.n_new} and read {outcome.n_cached} from the store in "
        f"{outcome.wall_time_s / 60:.1f} min on {outcome.backend}. Command: `{command}`.",
        "",
        "Tasks: " + "; ".join(plan.describe_task(t) for t in plan.families) + ".",
        "",
        "Files: [summary.md](summary.md) (methods x tasks: test loss, ranks, win rates, tuning "
        "budget), [quality_bar.md](quality_bar.md), [runs.csv](runs.csv) (one row per run), "
        "[evals.csv.gz](evals.csv.gz) (validation curves); plots "
        "[loss_curves.png](loss_curves.png), [lr_trajectories.png](lr_trajectories.png), "
        "[robustness.png](robustness.png).",
        "",
    ]
    if crit:
        n_pass = sum(c.passed is True for c in crit)
        lines += [
            f"**Quality bar: {verdict(crit)} ({n_pass}/{len(crit)})** (final validation loss, "
            "untuned controller against constant LR and cosine at the same base LR, and against "
            "tuned cosine):",
            "",
            criteria_table(crit),
            "",
            "Per task:",
            "",
            quality_by_task(outcome, runs).to_markdown(index=False),
            "",
        ]
    summary = replay_summary(replay_pairs(outcome, runs))
    if summary:
        lines += [f"**Against its own LR curve, replayed:** {summary}", ""]
    lines += [
        "Where the controller wins and where it loses (mean test loss over the seeds):",
        "",
        *standing_lines(outcome, finals),
    ]
    return "\n".join(lines) + "\n"


def _prefix_links(text: str, folder: str) -> str:
    """Relative markdown links of a folder's file, made relative to the results root."""
    return re.sub(r"\]\((?![a-z]+://|/|#)", f"]({folder}/", text)


def index_markdown(results_root: Path) -> str:
    """results/README.md: every suite folder's standing.md, eval first, then val."""
    folders = [p for p in results_root.iterdir() if p.is_dir() and (p / STANDING).is_file()]
    rank = {name: i for i, name in enumerate(SUITE_ORDER)}
    folders.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    others = sorted(
        p.name
        for p in results_root.iterdir()
        if p.is_dir()
        and p not in folders
        and any((p / f).is_file() for f in ("summary.md", "README.md"))
    )
    lines = [
        "# Benchmark results",
        "",
        "One folder per suite, each holding that suite's latest full `lrctl bench` run; this "
        "index is rewritten from the folders' `standing.md` after every full run. The suites "
        "have three roles (envs/README.md): `train` is what the controller trains on, `val` is "
        "where every choice about it is made, `eval` is read for the final report only.",
        "",
        "Regenerate a suite with the command in its section: finished runs are kept in its "
        "`runs/` folder (one JSON per run, not committed) and skipped, so an interrupted "
        "benchmark resumes and a finished one rewrites its tables without training.",
        "",
    ]
    for folder in folders:
        text = (folder / STANDING).read_text(encoding="utf-8")
        lines += [_prefix_links(text, folder.name).rstrip("\n"), ""]
    if others:
        links = [
            f"[{f}/]({f}/README.md)" if (results_root / f / "README.md").is_file() else f"`{f}/`"
            for f in others
        ]
        lines.append("Other result folders: " + ", ".join(links) + ".")
    return "\n".join(lines).rstrip("\n") + "\n"
