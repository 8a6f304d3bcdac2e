"""`lrctl bench`: a fair, resumable comparison of the controller with tuned classic schedules.

| module       | holds                                                          |
| ------------ | -------------------------------------------------------------- |
| `methods.py` | the registry of methods (optimizer + schedule + LR rule)       |
| `plan.py`    | settings, run configs and their hashes, the tuning rule        |
| `tuners.py`  | how a tuned LR is chosen: grid, random search, TPE, range test |
| `store.py`   | one JSON per finished run, written atomically (resume)         |
| `runner.py`  | execution: local process pool or Ray, tuners, then final runs  |
| `report.py`  | runs.csv, histories, summary.md, quality_bar.md, the index     |
| `plots.py`   | loss curves, LR trajectories, robustness                       |

    from lrctl.bench import BenchConfig, run_bench
    outcome = run_bench(BenchConfig(suite="eval", seeds=3), out="results")
"""

from lrctl.bench.methods import DEFAULT_METHODS, METHODS, Method, register_method
from lrctl.bench.plan import BenchConfig, RunConfig, make_plan
from lrctl.bench.runner import BenchOutcome, run_bench

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
