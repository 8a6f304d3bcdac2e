#!/usr/bin/env python
"""Compare training configurations by the mean over their PPO seeds, not seed by seed.

    benchmarks/config_means.py --config NAME=GLOB [--config NAME=GLOB ...]
                               [--baseline NAME] [--root results/levers] [--out FILE.md]

Each GLOB (under --root) names the lever records of one configuration, one folder per PPO
seed, each holding the paired judge's `paired.json` and `paired.md` (`benchmarks/
paired_judge.py`: candidate / shipped final validation loss over the same val runs). For each
configuration it prints the seeds' paired ratios, their geometric mean and range, and the
mean on each val task; against the baseline configuration, the ratio of the two means with a
95% Welch interval over seeds and a verdict.

Why: every record is judged against the shipped controller, which was itself picked on the
val suite from seeds of one configuration, so a fresh seed of that very configuration lands
about 5% behind it (`results/levers/paired_by_task.md`). Two configurations' records share
that reference, so the ratio of their seed means cancels it: what is left is the difference
between the configurations, with the spread between PPO seeds as its noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from paired_by_task import emit, geometric_mean, read_cells, task_effects
from scipy import stats


@dataclass
class Config:
    """One configuration's seeds: record names, paired ratios and per-task effects."""

    name: str
    seeds: list[str]
    ratios: list[float]
    tasks: dict[str, float]

    @property
    def logs(self) -> list[float]:
        return [math.log(r) for r in self.ratios]

    @property
    def mean(self) -> float:
        return geometric_mean(self.ratios)


def load_config(name: str, root: Path, pattern: str) -> Config:
    """The records under `root` matching `pattern` that hold a paired judge's verdict."""
    folders = [p for p in sorted(root.glob(pattern)) if (p / "paired.json").is_file()]
    if not folders:
        raise SystemExit(
            f"config_means: --config {name}={pattern} matches no record with paired.json "
            f"under {root}; check the pattern (a shell glob relative to --root)"
        )
    ratios = [float(json.loads((p / "paired.json").read_text())["ratio"]) for p in folders]
    per_task: dict[str, list[float]] = {}
    for p in folders:
        md = p / "paired.md"
        cells = read_cells(md.read_text()) if md.is_file() else []
        for task, (on, _) in task_effects(cells).items():
            per_task.setdefault(task, []).append(on)
    tasks = {t: geometric_mean(v) for t, v in per_task.items() if len(v) == len(folders)}
    return Config(name, [p.name for p in folders], ratios, tasks)


def welch(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch interval; (diff, nan, nan) with fewer than 2 of each."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "too few seeds"
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "undecided"


def report(configs: list[Config], baseline: Config | None) -> str:
    """Markdown: one row per configuration, then one column per val task."""
    tasks = sorted({t for c in configs for t in c.tasks})
    head = ["configuration", "seeds", "paired ratio per seed", "geometric mean", "range"]
    if baseline is not None:
        head += [f"/ {baseline.name} (95% Welch interval over seeds)", "verdict"]
    head += tasks
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c in configs:
        row = [
            c.name,
            str(len(c.ratios)),
            ", ".join(f"{r:.3f}" for r in c.ratios),
            f"{c.mean:.3f}",
            f"{min(c.ratios):.3f}-{max(c.ratios):.3f}",
        ]
        if baseline is not None:
            if c is baseline:
                row += ["1 (the baseline)", ""]
            else:
                d, lo, hi = welch(c.logs, baseline.logs)
                span = "" if math.isnan(lo) else f" ({math.exp(lo):.3f}-{math.exp(hi):.3f})"
                row += [f"{math.exp(d):.3f}{span}", verdict(lo, hi)]
        row += [f"{c.tasks[t]:.3f}" if t in c.tasks else "" for t in tasks]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Paired ratios are each seed's candidate / shipped final validation loss on val "
        "(below 1: better than the shipped controller); task columns are the geometric mean "
        "over the configuration's seeds of the seed's effect on that task.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: --config v9=L32s?_v9config --config net32=L44s?_net32 --baseline v9",
    )
    parser.add_argument(
        "--config", action="append", required=True, metavar="NAME=GLOB",
        help="a configuration: its name and a glob (under --root) of its seeds' records",
    )  # fmt: skip
    parser.add_argument("--baseline", help="the configuration the others are compared with")
    parser.add_argument("--root", type=Path, default=Path("results/levers"))
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    configs = []
    for spec in args.config:
        name, sep, pattern = spec.partition("=")
        if not sep or not name or not pattern:
            parser.error(f"--config {spec!r}: expected NAME=GLOB, e.g. v9=L32s?_v9config")
        configs.append(load_config(name, args.root, pattern))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        parser.error(f"--config names must differ, got {names}")
    baseline = None
    if args.baseline is not None:
        if args.baseline not in names:
            parser.error(f"--baseline {args.baseline!r} is none of the configurations {names}")
        baseline = configs[names.index(args.baseline)]
    command = " ".join(
        ["benchmarks/config_means.py", *(argv if argv is not None else sys.argv[1:])]
    )
    emit(f"`{command}`\n\n" + report(configs, baseline), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
