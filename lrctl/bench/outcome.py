"""`BenchOutcome`: what a benchmark ran and where its records are.

The runner fills one in; the report and the plots read it. It lives apart from all three so
that each imports it without importing the others (runner -> report -> plots, never back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lrctl.bench.plan import Plan, RunConfig
from lrctl.bench.store import RunStore
from lrctl.bench.tuners import TuneOutcome


@dataclass
class BenchOutcome:
    """What a benchmark ran and where its records are."""

    plan: Plan
    store: RunStore
    out_dir: Path
    configs: dict[str, RunConfig] = field(default_factory=dict)
    """Every planned run by config hash, in plan order."""
    roles: dict[str, set[str]] = field(default_factory=dict)
    """The roles each run serves (tune, final, sweep)."""
    chosen: dict[tuple[str, str], float] = field(default_factory=dict)
    """(task, method) -> the tuned LR factor."""
    tuned: dict[tuple[str, str], TuneOutcome] = field(default_factory=dict)
    """(task, method) -> its tuner's outcome: the chosen setting and the budget spent."""
    n_new: int = 0
    n_cached: int = 0
    wall_time_s: float = 0.0
    backend: str = ""
    complete: bool = False
