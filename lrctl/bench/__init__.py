"""`lrctl bench`: a fair, resumable comparison of the controller with tuned classic schedules.

| module       | holds                                                          |
| ------------ | -------------------------------------------------------------- |
| `methods.py` | the registry of methods (optimizer + schedule + LR rule)       |
| `plan.py`    | settings, run configs and their hashes, the tuning rule        |
| `tuners.py`  | how a tuned LR is chosen: grid, random search, TPE, range test, |
|              | PBT, and the controller's replayed LR curve                    |
| `store.py`   | one JSON per finished run, written atomically (resume)         |
| `runner.py`  | execution: local process pool or Ray, tuners, then final runs  |
| `outcome.py` | `BenchOutcome`: what ran, read by the report and the plots     |
| `report.py`  | runs.csv, histories, summary.md, the console summary           |
| `quality.py` | the controller's quality bar, per task, and its replay         |
| `index.py`   | each suite's standing.md and the index results/README.md       |
| `plots.py`   | loss curves, LR trajectories, robustness                       |

Imports point one way: runner -> report -> (quality, index, plots) -> outcome -> plan.

    from lrctl.bench import BenchConfig, run_bench
    outcome = run_bench(BenchConfig(suite="eval", seeds=3), out="results")
"""

from lrctl.bench.methods import DEFAULT_METHODS, METHODS, Method, register_method
from lrctl.bench.outcome import BenchOutcome
from lrctl.bench.plan import BenchConfig, RunConfig, make_plan
from lrctl.bench.runner import run_bench

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "BenchConfig",
    "BenchOutcome",
    "Method",
    "RunConfig",
    "make_plan",
    "register_method",
    "run_bench",
]
