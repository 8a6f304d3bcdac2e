#!/usr/bin/env python
"""Each judged candidate's paired effect against the shipped controller, per val task.

    benchmarks/paired_by_task.py [results/levers] [--out FILE.md]

Reads every `paired.md` a lever's record holds (the cell table `benchmarks/paired_judge.py`
writes: one row per horizon, task, optimizer and base-LR factor, with the geometric mean
candidate / shipped ratio over its seeds) and prints one row per candidate: the overall
effect, the effect on each task, and the effect without each task's cells. The effect is the
judge's own: the geometric mean of the cells' ratios (each cell has the same seeds).

Why: a candidate is judged against the controller that was itself picked on the val suite,
so a task on which the shipped controller happened to do well counts against every
candidate. A task that every candidate loses, whatever the lever, says so here.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path

CELL = re.compile(
    r"^\|\s*(?P<horizon>[\w.]+)\s*\|\s*(?P<task>\w+)\s*\|\s*(?P<optimizer>\w+)\s*\|"
    r"\s*(?P<factor>x[\d.]+)\s*\|\s*\d+\s*\|\s*(?P<ratio>[\d.]+(?:e[-+]?\d+)?)\s*\|"
)
"""A cell row of paired.md: horizon, task, optimizer, factor, seeds, ratio, lower count."""


def read_cells(text: str) -> list[tuple[str, float]]:
    """(task, ratio) of every cell row of a paired.md text."""
    return [(m["task"], float(m["ratio"])) for m in map(CELL.match, text.splitlines()) if m]


def geometric_mean(ratios: Iterable[float]) -> float:
    logs = [math.log(r) for r in ratios]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def task_effects(cells: list[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """Per task: (the effect on its cells, the effect on all the other cells)."""
    tasks = sorted({t for t, _ in cells})
    return {
        t: (
            geometric_mean(r for u, r in cells if u == t),
            geometric_mean(r for u, r in cells if u != t),
        )
        for t in tasks
    }


def table(root: Path) -> str:
    """The markdown table over every `root/*/paired.md`."""
    records = {p.parent.name: read_cells(p.read_text()) for p in sorted(root.glob("*/paired.md"))}
    records = {name: cells for name, cells in records.items() if cells}
    if not records:
        raise SystemExit(f"no paired.md with cell rows under {root}")
    tasks = sorted({t for cells in records.values() for t, _ in cells})
    head = ["candidate", "all cells", *tasks, *(f"all but {t}" for t in tasks)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    effects_of = {name: task_effects(cells) for name, cells in records.items()}
    for name, cells in records.items():
        effects = effects_of[name]
        on = [f"{effects[t][0]:.3f}" if t in effects else "" for t in tasks]
        without = [f"{effects[t][1]:.3f}" if t in effects else "" for t in tasks]
        lines.append(
            f"| {name} | {geometric_mean(r for _, r in cells):.3f} | "
            + " | ".join(on + without)
            + " |"
        )
    beaten = {
        t: sum(1 for effects in effects_of.values() if effects.get(t, (0.0,))[0] > 1.0)
        for t in tasks
    }
    lines += ["", f"{len(records)} candidates; on each task, candidates worse than the shipped controller: "
              + ", ".join(f"{t} {n}" for t, n in beaten.items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def emit(text: str, out: Path | None) -> None:
    """Print a report, and also write it to `out` when given (the `--out` of these scripts)."""
    sys.stdout.write(text)
    if out:
        out.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="results/levers", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    emit(table(args.root), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
