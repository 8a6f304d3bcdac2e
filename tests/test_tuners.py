"""lrctl bench tuners: random search, TPE and the range test next to the grid.

One tiny bench (wine_mlp, 30 steps, a 3-point grid, 2 tuning seeds, 1 final seed; the range
test stubbed) is run once per module and checked from several sides; the tuners' own logic is
driven directly with a synthetic loss, without training.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrctl.baselines import baseline_policy
from lrctl.bench import BenchConfig, make_plan, run_bench
from lrctl.bench.methods import METHODS, Method, find_method
from lrctl.bench.plan import RunConfig, choose_factor
from lrctl.bench.report import BUDGET_COLUMN, RUN_COLUMNS
from lrctl.bench.store import RunStore
from lrctl.bench.tuners import (
    RANGE_TEST,
    RANGE_TEST_STEPS,
    SCHEDULE_SPACES,
    Budget,
    RandomTuner,
    TPETuner,
    geometric_mean_curve,
    make_tuner,
    startup_trials,
)
from lrctl.cli import main
from lrctl.errors import MissingDependencyError

SUITE = """\
version = 1
name = "tiny"

[[family]]
name = "wine_mlp"
steps = [30, 30]
batch_sizes = [16]
"""

METHOD_NAMES = (
    "momentum_cosine_random",
    "momentum_cosine_tpe",
    "momentum_one_cycle_tpe",
    "momentum_range_test",
)
GRID = (0.1, 1.0, 10.0)
STEPS = 30
STUB_STEPS = 37  # what the stubbed range test says it used
STUB_FACTOR = 0.5  # its suggestion, x the reference LR


@dataclass
class StubResult:
    suggestion: float
    steps: int


def stub_range_test(calls: list[dict]):
    """A stand-in for lrctl.range_test.range_test_task: records its arguments and suggests
    STUB_FACTOR x the reference LR."""

    def range_test_task(family, spec, optimizer, seed, steps=100):
        calls.append({"optimizer": optimizer, "seed": seed, "steps": steps, "spec": spec})
        return StubResult(STUB_FACTOR * family.reference_lr(optimizer), STUB_STEPS)

    return range_test_task


def _config(suite: Path) -> BenchConfig:
    return BenchConfig(suite=str(suite), methods=METHOD_NAMES, seeds=1, tune_seeds=2, grid=GRID)


def _bench(config: BenchConfig, out: Path, calls: list[dict], **kw):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lrctl.range_test.range_test_task", stub_range_test(calls))
        return run_bench(config, out=out, workers=1, progress=False, **kw)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tuners")
    suite = root / "tiny.toml"
    suite.write_text(SUITE)
    calls: list[dict] = []
    outcome = _bench(_config(suite), root / "out", calls)
    folder = root / "out" / "tiny"
    return {
        "root": root,
        "suite": suite,
        "outcome": outcome,
        "calls": calls,
        "dir": folder,
        "runs": pd.read_csv(folder / "runs.csv"),
    }


def _table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "runs.csv").drop(columns="wall_time_s")


@pytest.mark.parametrize("method", ["momentum_cosine_random", "momentum_cosine_tpe"])
def test_search_budget_range_and_rule(bench: dict, method: str) -> None:
    runs = bench["runs"]
    tune = runs[(runs.method == method) & (runs.role == "tune")]
    # The grid's budget: 3 configurations x 2 tuning seeds, in the grid's range.
    assert len(tune) == len(GRID) * 2
    per_trial = tune.groupby("lr_factor")["seed"].apply(sorted)
    assert len(per_trial) == len(GRID) and all(s == [0, 1] for s in per_trial)
    assert tune["lr_factor"].between(min(GRID), max(GRID)).all()
    assert not set(tune["lr_factor"]) & set(GRID)  # drawn, not the grid's points
    reference = bench["outcome"].plan.families["wine_mlp"].reference_lr("momentum")
    np.testing.assert_allclose(tune["base_lr"], tune["lr_factor"] * reference, rtol=1e-12)
    # Tuning runs never read the test split.
    assert tune["test_loss"].isna().all()
    store = RunStore(bench["dir"] / "runs")
    assert not any(store.load(h)["config"]["evaluate_test"] for h in tune["config_hash"])
    # The final run is at the trial with the lowest mean validation loss.
    final = runs[(runs.method == method) & (runs.role == "final")]
    best = tune.groupby("lr_factor")["final_val_loss"].mean().idxmin()
    assert list(final["lr_factor"]) == [best]
    assert final["test_loss"].notna().all()
    assert bench["outcome"].chosen[("wine_mlp", method)] == best


def test_budget_columns(bench: dict) -> None:
    runs = bench["runs"]
    assert list(runs.columns) == RUN_COLUMNS
    finals = runs[runs.role == "final"].set_index("method")
    full = len(GRID) * 2 * STEPS  # 3 configurations x 2 seeds x 30 steps
    expected = {
        "momentum_cosine": (3, full),
        "momentum_cosine_random": (3, full),
        "momentum_cosine_tpe": (3, full),
        "momentum_one_cycle_tpe": (3, full),
        "momentum_range_test": (1, STUB_STEPS),
        "adam_default": (0, 0),
    }
    got = {m: (r.tune_trials, r.tune_steps) for m, r in finals.iterrows()}
    assert got == expected
    assert runs[runs.role != "final"][["tune_trials", "tune_steps"]].isna().all().all()
    text = (bench["dir"] / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method "))
    assert BUDGET_COLUMN in header
    row = next(line for line in text.splitlines() if "cosine (TPE)" in line)
    assert f"| 3 / {full} " in row
    assert "| untuned " in next(
        line for line in text.splitlines() if line.startswith("| Adam (lr=1e-3")
    )
    assert f"| 1 / {STUB_STEPS} " in next(
        line for line in text.splitlines() if "range test -> cosine" in line
    )


def test_summary_states_each_protocol(bench: dict) -> None:
    text = (bench["dir"] / "summary.md").read_text()
    assert "- **Tuning:** each tuned method's base LR (except with the tuners below)" in text
    assert "- **Random search** (momentum_cosine_random): 3 trials per task" in text
    assert "[x0.1, x10] the reference LR (the grid's range)" in text
    assert "- **TPE** (momentum_cosine_tpe, momentum_one_cycle_tpe)" in text
    assert "one_cycle's pct_start uniform in [0.05, 0.5]" in text
    assert f"over at most {RANGE_TEST_STEPS} steps" in text and "**train** split only" in text
    assert "random search and TPE: the same, 3 trials x 2 seed(s)" in text
    assert "(x0.5, range test)" in text  # the LR table says how each LR was chosen


def test_one_cycle_tpe_tunes_pct_start(bench: dict) -> None:
    runs = bench["runs"]
    sel = runs[runs.method == "momentum_one_cycle_tpe"]
    tune = sel[sel.role == "tune"]
    pct = tune["schedule_params"].str.extract(r"pct_start=([0-9.]+)")[0].astype(float)
    assert pct.between(0.05, 0.5).all() and pct.nunique() == len(GRID)
    final = sel[sel.role == "final"].iloc[0]
    # The final run replays the chosen trial's LR and pct_start: its LR peaks there.
    best = tune.groupby(["lr_factor", "schedule_params"])["final_val_loss"].mean().idxmin()
    assert (final["lr_factor"], final["schedule_params"]) == best
    record = RunStore(bench["dir"] / "runs").load(final["config_hash"])
    ((name, value),) = record["config"]["schedule_params"]
    assert name == "pct_start" and f"pct_start={value:.3g}" == final["schedule_params"]
    lr = np.asarray(record["steps"]["lr"])
    assert abs(int(lr.argmax()) - (value * STEPS - 1)) <= 1
    assert 0.99 * final["base_lr"] <= lr.max() <= final["base_lr"]  # the peak: the base LR
    # ... and the other methods keep the schedule's defaults (and their old hashes).
    assert runs[~runs.method.isin(["momentum_one_cycle_tpe"])]["schedule_params"].isna().all()


def test_range_test_method(bench: dict) -> None:
    runs = bench["runs"]
    sel = runs[runs.method == "momentum_range_test"]
    (job,) = sel[sel.role == "tune"].itertuples()
    assert job.schedule == RANGE_TEST and job.seed == 0 and job.steps == RANGE_TEST_STEPS
    assert math.isnan(job.test_loss) and math.isnan(job.final_val_loss)
    (call,) = bench["calls"]
    assert call["optimizer"] == "momentum" and call["seed"] == 0
    assert call["steps"] == RANGE_TEST_STEPS and call["spec"].batch_size == 16
    finals = sel[sel.role == "final"]
    assert list(finals["schedule"]) == ["cosine"]
    assert finals["lr_factor"].tolist() == pytest.approx([STUB_FACTOR])
    # Cosine from the suggested LR.
    steps = pd.read_csv(bench["dir"] / "steps.csv.gz")
    lr = steps[steps.config_hash == finals["config_hash"].iloc[0]]["lr"].to_numpy()
    base = finals["base_lr"].iloc[0]
    np.testing.assert_allclose(lr, base * (1 + np.cos(np.pi * np.arange(STEPS) / STEPS)) / 2,
                               rtol=1e-5)  # fmt: skip


def test_interrupted_bench_resumes_tpe_from_the_store(bench: dict, tmp_path: Path) -> None:
    """Stopped after 10 new runs (TPE part-way through its sequential trials), then rerun: the
    stored trials are reused, TPE replays them and asks the same next trials, and the tables
    equal an uninterrupted bench's (which also shows a rerun is reproducible)."""
    config = _config(bench["suite"])
    part = _bench(config, tmp_path, [], max_new_runs=10)
    assert not part.complete and part.n_new == 10
    stored = RunStore(tmp_path / "tiny" / "runs")
    records = [stored.load(h)["config"] for h in stored.done()]
    tpe = [c for c in records if c["method"] == "momentum_cosine_tpe" and c["seed"] < 1000]
    assert 2 < len(tpe) < 6  # some TPE trials stored (the last one half-way), not all
    rest = _bench(config, tmp_path, [])
    assert rest.complete and rest.n_cached == 10
    assert rest.n_new == len(bench["runs"]) - 10
    pd.testing.assert_frame_equal(_table(tmp_path / "tiny"), _table(bench["dir"]))
    again = _bench(config, tmp_path, [])
    assert again.n_new == 0 and again.n_cached == len(bench["runs"])


# --- The tuners on their own, with a synthetic validation loss (no training). ---


def _plan(suite: Path, method: str, grid=(0.03, 0.3, 3.0, 30.0), tune_seeds: int = 2):
    config = BenchConfig(suite=str(suite), methods=(method,), tune_seeds=tune_seeds, grid=grid)
    return make_plan(config)


def _drive(tuner, loss=lambda c: (math.log10(c.lr_factor) - 0.5) ** 2 + 0.01 * c.seed):
    """Run a tuner to the end on a synthetic loss; returns every config it asked for, in order,
    and the largest number of runs it had in flight at once."""
    asked, most = [], 0
    pending = tuner.ask()
    while pending:
        asked += pending
        most = max(most, len(pending))
        for c in pending:
            tuner.tell(c, {"result": {"final_val_loss": loss(c)}})
        pending = tuner.ask()
    assert tuner.done
    return asked, most


@pytest.mark.parametrize(
    "method", ["momentum_cosine_random", "momentum_cosine_tpe", "adam_cosine_tpe"]
)
def test_tuner_reproducible_in_range_and_on_budget(bench: dict, method: str) -> None:
    plan = _plan(bench["suite"], method)
    m = METHODS[method]
    tuner = make_tuner(plan, "wine_mlp", m)
    asked, most = _drive(tuner)
    again, _ = _drive(make_tuner(plan, "wine_mlp", m))
    assert [c.config_hash for c in asked] == [c.config_hash for c in again]  # same seed
    assert len(asked) == 4 * 2 and len({c.config_hash for c in asked}) == 8  # exact budget
    factors = sorted({c.lr_factor for c in asked})
    assert len(factors) == 4 and factors[0] >= 0.03 and factors[-1] <= 30.0
    assert all(not c.evaluate_test and c.steps == plan.steps["wine_mlp"] for c in asked)
    # TPE asks one trial (2 seeds) at a time; random search everything at once.
    assert most == (2 if METHODS[method].tuner == "tpe" else 8)
    result = tuner.outcome()
    assert result.budget.trials == 4 and result.budget.steps == 8 * plan.steps["wine_mlp"]
    # The winner is the trial with the lowest mean synthetic loss.
    mean = {f: np.mean([(math.log10(f) - 0.5) ** 2 + 0.01 * s for s in (0, 1)]) for f in factors}
    assert result.factor == min(mean, key=mean.get)


def test_grid_tuner_is_the_grid(bench: dict) -> None:
    """The grid tuner asks for the runs the grid always ran (same configs, same order, same
    hashes) and chooses by `choose_factor`."""
    plan = _plan(bench["suite"], "momentum_cosine")
    m = METHODS["momentum_cosine"]
    tuner = make_tuner(plan, "wine_mlp", m)
    asked, most = _drive(tuner)
    grid, seeds = plan.config.grid, plan.config.tune_seed_list
    assert [c.config_hash for c in asked] == [
        plan.run("wine_mlp", m, f, s, role="tune").config_hash for f in grid for s in seeds
    ]
    assert most == len(grid) * len(seeds)
    losses = {f: [(math.log10(f) - 0.5) ** 2 + 0.01 * s for s in seeds] for f in grid}
    outcome = tuner.outcome()
    assert outcome.factor == choose_factor(losses) and outcome.schedule_params == ()
    assert outcome.budget == Budget(len(grid), len(asked) * plan.steps["wine_mlp"])


def test_tuner_seeds_differ_by_task_and_method(bench: dict) -> None:
    plan = _plan(bench["suite"], "momentum_cosine_random")
    a = RandomTuner(plan, "wine_mlp", METHODS["momentum_cosine_random"]).ask()
    b = RandomTuner(
        plan, "wine_mlp", Method("other", "x", "momentum", "cosine", tuner="random")
    ).ask()
    assert {c.lr_factor for c in a} != {c.lr_factor for c in b}


def test_tpe_uses_its_model_after_startup(bench: dict) -> None:
    """After its random startup trials, TPE samples near the best trials so far."""
    assert startup_trials(7) == 3 and startup_trials(5) == 2  # the full and the quick grid
    plan = _plan(
        bench["suite"], "momentum_cosine_tpe", grid=tuple(np.logspace(-3, 3, 12)), tune_seeds=1
    )
    tuner = TPETuner(plan, "wine_mlp", METHODS["momentum_cosine_tpe"])
    asked, _ = _drive(tuner, loss=lambda c: abs(math.log10(c.lr_factor) - 1.0))
    start = startup_trials(12)
    later = [abs(math.log10(c.lr_factor) - 1.0) for c in asked[start:]]
    first = [abs(math.log10(c.lr_factor) - 1.0) for c in asked[:start]]
    assert np.median(later) < np.median(first)


def test_diverged_trials_count_as_inf(bench: dict) -> None:
    plan = _plan(bench["suite"], "momentum_cosine_tpe")
    tuner = make_tuner(plan, "wine_mlp", METHODS["momentum_cosine_tpe"])
    _drive(tuner, loss=lambda c: math.inf if c.lr_factor > 1 else 1.0 / c.lr_factor)
    assert tuner.outcome().factor <= 1


def test_missing_optuna_is_a_clear_error(bench: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(bench["suite"], "momentum_cosine_tpe")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingDependencyError, match="pip install optuna"):
        make_tuner(plan, "wine_mlp", METHODS["momentum_cosine_tpe"])


def test_methods_and_hash() -> None:
    with pytest.raises(ValueError, match="unknown tuner 'nope'; choose from: grid, random"):
        Method("x", "x", "adam", "cosine", tuner="nope")
    with pytest.raises(ValueError, match="needs lr='tuned'"):
        Method("x", "x", "adam", "cosine", 1e-3, tuner="tpe")
    assert find_method("momentum", "cosine").name == "momentum_cosine"  # the grid-tuned one
    assert find_method("adam", "cosine").name == "adam_cosine"
    for schedule, space in SCHEDULE_SPACES.items():  # every searched setting is a real one
        baseline_policy(schedule, 100, **{k: s.low for k, s in space.items()})
    fields = dict(
        task="wine_mlp", method="momentum_cosine", optimizer="momentum", schedule="cosine",
        base_lr=0.1, lr_factor=1.0, seed=1000, steps=40, batch_size=16,
        arch=(("depth", 2), ("width", 64)), val_every=10, reference_lr=0.1, evaluate_test=True,
    )  # fmt: skip
    # The hash of a run without schedule settings is the one stored before they existed.
    assert RunConfig(**fields).config_hash == "2bb77c0f63820887"
    tuned = RunConfig(**fields, schedule_params=(("pct_start", 0.2),))
    assert tuned.config_hash != RunConfig(**fields).config_hash
    assert json.loads(json.dumps(tuned.schedule_params)) == [["pct_start", 0.2]]


def test_cli_quick_prints_budget_column(
    bench: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [
        "bench", "--suite", str(bench["suite"]), "--methods", "momentum_cosine_tpe",
        "--seeds", "1", "--steps", "20", "--quick", "--workers", "1", "--out", str(tmp_path),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert BUDGET_COLUMN in out and "LRs tuned (grid, TPE)" in out
    row = next(
        line for line in out.splitlines() if line.startswith("| SGD-momentum + cosine (TPE)")
    )
    assert "| 5 / 100 " in row  # the quick grid's 5 trials x 1 seed x 20 steps


@pytest.mark.parametrize(
    ("curves", "steps", "expected"),
    [
        # step: geometric mean of the curves that reached it (a diverged run's curve ends)
        ([[1.0, 4.0, 2.0], [4.0, 1.0]], 3, [2.0, 2.0, 2.0]),
        ([[0.1, 0.2, 0.4], [0.1, 0.05, 0.1]], 3, [0.1, 0.1, 0.2]),
        # no curve reached a step: the last mean holds
        ([[0.5, 0.25]], 4, [0.5, 0.25, 0.25, 0.25]),
        # a non-finite or non-positive LR is left out of the mean
        ([[1.0, math.nan], [9.0, 4.0]], 2, [3.0, 4.0]),
    ],
)
def test_geometric_mean_curve_trajectory_table(curves, steps, expected) -> None:
    assert geometric_mean_curve(curves, steps) == pytest.approx(tuple(expected), rel=1e-12)


def test_geometric_mean_curve_needs_a_first_lr() -> None:
    with pytest.raises(ValueError, match="no curve has a finite positive LR"):
        geometric_mean_curve([[], [math.inf]], 2)
