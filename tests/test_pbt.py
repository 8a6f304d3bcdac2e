"""Population-based training (the bench's `pbt` tuner) and the replay of its LR trajectory.

Without Ray (as in CI): the replay scheduler as a trajectory table, the run-hash and plan
plumbing, a member's checkpoint round trip and split use (its loop driven with a stand-in for
Tune's report), and a whole bench with the PBT job stubbed. With Ray Tune installed: one tiny
bench with `momentum_pbt` (4 members, 60 steps) on real Ray, checked from several sides.
"""

from __future__ import annotations

import io
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lrctl.baselines import REPLAY, ReplayLR, replay_policy
from lrctl.bench import BenchConfig, make_plan, run_bench
from lrctl.bench.methods import METHODS, Method
from lrctl.bench.pbt import (
    MIN_POPULATION,
    PBT,
    MemberJob,
    PBTSettings,
    lineage_history,
    pbt_settings,
    population_based_training,
    train_member,
)
from lrctl.bench.plan import RunConfig
from lrctl.bench.report import BUDGET_COLUMN
from lrctl.bench.store import RunStore, make_record
from lrctl.bench.tuners import PBTTuner, make_tuner
from lrctl.cli import main
from lrctl.inner_run import InnerRun
from lrctl.tasks import load_suite
from lrctl.tasks.base import Split, Task
from lrctl.training import train
from tests.helpers import tiny_regression

SUITE = """\
version = 1
name = "tiny"

[[family]]
name = "wine_mlp"
steps = [60, 60]
batch_sizes = [16]
"""

STEPS = 60
GRID = (0.1, 1.0, 10.0)  # 3 points x 1 tuning seed: a population of MIN_POPULATION = 4


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pbt") / "tiny.toml"
    path.write_text(SUITE)
    return path


def _config(suite: Path, methods: tuple[str, ...] = ("momentum_pbt",)) -> BenchConfig:
    return BenchConfig(suite=str(suite), methods=methods, seeds=1, tune_seeds=1, grid=GRID)


# --- The replay schedule (no Ray). ---


def test_replay_trajectory_table() -> None:
    """Step k's LR is lrs[k], exactly, then the last one; other groups keep their ratio."""
    lrs = [0.1, 0.3, 0.2000001, 0.7 / 3]
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "lr": 1.0}], lr=0.5)
    sched = replay_policy(lrs)(opt)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = [
        [0.1, 0.2],
        [0.3, 0.6],
        [0.2000001, 0.4000002],
        [0.7 / 3, 2 * 0.7 / 3],
        [0.7 / 3, 2 * 0.7 / 3],  # past the end: the last LR
        [0.7 / 3, 2 * 0.7 / 3],
    ]
    assert [s[0] for s in seen] == [e[0] for e in expected]  # bit for bit
    np.testing.assert_allclose([s[1] for s in seen], [e[1] for e in expected], rtol=1e-15)
    assert isinstance(sched, ReplayLR) and sched.get_last_lr()[0] == lrs[-1]
    assert pickle.loads(pickle.dumps(replay_policy(lrs))).keywords["lrs"] == tuple(lrs)


@pytest.mark.parametrize("lrs", [[], [0.1, math.nan], [0.1, -1.0], [math.inf]])
def test_replay_rejects_bad_trajectories(lrs: list[float]) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="trajectory"):
        ReplayLR(opt, lrs)


def test_train_replays_a_trajectory_exactly() -> None:
    model, x, y = tiny_regression()
    split = Split(x, y)
    task = Task("t", "t", lambda: model, split, split, split, torch.nn.functional.mse_loss, 8,
                False)  # fmt: skip
    lrs = list(np.geomspace(0.1, 0.001, 25))
    history = train(task, "momentum", lrs[0], 25, 0, replay_policy(lrs), val_every=10)
    assert history.steps["lr"].tolist() == lrs


# --- Hashes and the plan (no Ray). ---

FIELDS = dict(
    task="wine_mlp", method="momentum_cosine", optimizer="momentum", schedule="cosine",
    base_lr=0.1, lr_factor=1.0, seed=1000, steps=40, batch_size=16,
    arch=(("depth", 2), ("width", 64)), val_every=10, reference_lr=0.1, evaluate_test=True,
)  # fmt: skip


def test_trajectory_is_hashed_and_old_hashes_stay() -> None:
    assert RunConfig(**FIELDS).config_hash == "2bb77c0f63820887"  # as stored before the field
    assert RunConfig(**FIELDS, lr_trajectory=()).config_hash == "2bb77c0f63820887"
    a = RunConfig(**FIELDS, lr_trajectory=(0.1,) * 40)
    b = RunConfig(**FIELDS, lr_trajectory=(0.1,) * 39 + (0.2,))
    assert len({a.config_hash, b.config_hash, RunConfig(**FIELDS).config_hash}) == 3


def test_plan_runs_of_a_replay_method(suite: Path) -> None:
    plan = make_plan(_config(suite))
    m = METHODS["momentum_pbt"]
    assert m.schedule == REPLAY and m.tuner == "pbt" and m.tuned
    ref = plan.families["wine_mlp"].reference_lr("momentum")
    lrs = tuple(np.linspace(0.3, 0.01, STEPS))
    run = plan.run("wine_mlp", m, 123.0, 1000, lr_trajectory=lrs)
    assert run.lr_trajectory == lrs and run.base_lr == lrs[0] and run.lr_factor == lrs[0] / ref
    # Untuned (a one-point grid): the LR at the factor, throughout.
    assert plan.run("wine_mlp", m, 2.0, 1000).lr_trajectory == (2.0 * ref,) * STEPS
    with pytest.raises(ValueError, match="59 steps for 60-step runs"):
        plan.run("wine_mlp", m, 1.0, 1000, lr_trajectory=lrs[1:])
    with pytest.raises(ValueError, match="does not replay"):
        plan.run("wine_mlp", METHODS["momentum_cosine"], 1.0, 1000, lr_trajectory=lrs)
    with pytest.raises(ValueError, match="goes with a tuner"):
        Method("x", "x", "momentum", REPLAY)  # a replay needs a tuner to find its trajectory
    with pytest.raises(ValueError, match="goes with a tuner"):
        Method("x", "x", "momentum", "cosine", tuner="pbt")


def test_pbt_settings_and_job_config(suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The population gets the grid's budget (at least MIN_POPULATION), and every setting is
    in the job's hash."""
    assert pbt_settings((0.1, 1.0, 10.0), 1, 60) == PBTSettings(4, 60, 6, 0.1, 10.0)
    quick = pbt_settings(tuple(np.logspace(-1, 1, 5)), 1, 100)
    assert quick.population == 5 and quick.total_steps == 5 * 1 * 100  # the quick grid's
    full = pbt_settings(tuple(np.logspace(-1.5, 1.5, 7)), 2, 400)
    assert full.population == 14 and full.interval == 40 and full.total_steps == 14 * 400
    assert MIN_POPULATION == 4
    assert PBTSettings.from_params(full.params()) == full
    starts = full.start_factors()
    assert len(starts) == 14
    np.testing.assert_allclose([starts[0], starts[-1]], [10**-1.5, 10**1.5], rtol=1e-12)
    monkeypatch.setattr("lrctl.bench.tuners.require_ray_tune", lambda: None)
    tuner = make_tuner(make_plan(_config(suite)), "wine_mlp", METHODS["momentum_pbt"])
    assert isinstance(tuner, PBTTuner)
    (job,) = tuner.ask()
    assert tuner.ask() == [] and not tuner.done
    assert job.schedule == PBT and not job.evaluate_test and job.lr_trajectory == ()
    assert job.seed == 0 and job.steps == 4 * STEPS
    assert PBTSettings.from_params(job.schedule_params) == PBTSettings(4, STEPS, 6, 0.1, 10.0)


# --- One member, driven without Tune (no Ray). ---


def _job(seed: int = 0) -> MemberJob:
    family = load_suite("eval").family("wine_mlp")
    spec = family.spec("momentum", steps=30, batch_size=16)
    return MemberJob(family, spec, "momentum", family.reference_lr("momentum"), 30, 10, seed)


def _drive(config: dict, job: MemberJob, state: dict | None = None) -> list[tuple[dict, dict]]:
    """Train a member as Tune would, its reports kept: each state saved as a checkpoint file
    and loaded back (weights_only, as `_tune_member` loads it)."""
    reports: list[tuple[dict, dict]] = []

    def report(metrics: dict, member: dict) -> None:
        buffer = io.BytesIO()
        torch.save(member, buffer)
        buffer.seek(0)
        reports.append((metrics, torch.load(buffer, weights_only=True)))

    train_member(config, job, state, report)
    return reports


def test_member_reads_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    splits: list[str] = []
    evaluate = InnerRun.evaluate

    def spy(self: InnerRun, split: str = "val", accuracy: bool = True) -> tuple[float, float]:
        splits.append(split)
        return evaluate(self, split, accuracy)

    monkeypatch.setattr(InnerRun, "evaluate", spy)
    reports = _drive({"member": 0, "lr_factor": 1.0}, _job())
    assert set(splits) == {"val"} and len(splits) == 1 + 3  # at step 0, then every 10 steps
    assert [m["step"] for m, _ in reports] == [10, 20, 30]
    assert [m["steps_trained"] for m, _ in reports] == [10, 10, 10]
    assert all(math.isfinite(m["val_loss"]) for m, _ in reports)


def test_member_checkpoint_round_trip() -> None:
    """Resumed from its own state, a member continues exactly as if never stopped; resumed
    with another LR factor (an exploit), its lineage keeps the donor's LRs up to there."""
    job = _job()
    whole = _drive({"member": 1, "lr_factor": 1.0}, job)
    part = _drive({"member": 1, "lr_factor": 1.0}, job, whole[0][1])
    final, resumed = whole[-1][1], part[-1][1]
    for key in ("lrs", "train_loss", "grad_norm", "evals"):
        torch.testing.assert_close(resumed[key], final[key], rtol=0, atol=0)
    assert [m for m, _ in part] == [m for m, _ in whole[1:]]
    ref = job.reference_lr
    moved = _drive({"member": 3, "lr_factor": 2.0}, job, whole[0][1])[-1][1]
    assert moved["lrs"].tolist() == [ref] * 10 + [2.0 * ref] * 20
    history = lineage_history(moved, 1.0)
    assert history.steps["lr"].tolist() == moved["lrs"].tolist() and not history.diverged
    assert history.final_val_loss == moved["evals"][-1, 1] and math.isnan(history.test_loss)


def test_diverged_member_reports_inf() -> None:
    reports = _drive({"member": 0, "lr_factor": 1e30}, _job())
    assert [m["val_loss"] for m, _ in reports][-1] == math.inf
    state = reports[-1][1]
    assert 0 <= state["diverged_at"] < 30 and len(state["lrs"]) == 30  # charged every step
    history = lineage_history(state, 1.0)
    assert history.diverged and len(history.steps) == state["diverged_at"] + 1


# --- A bench with the PBT job stubbed (no Ray): the runner's plumbing. ---


def _stub_lrs(ref: float) -> list[float]:
    return [ref * (2.0 if k < STEPS // 2 else 0.5) for k in range(STEPS)]


def stub_pbt_job(config: RunConfig, family: object, cpus: int = 1) -> dict:
    """A stand-in for lrctl.bench.pbt.run_pbt_job: a made-up winner (x2, then x0.5)."""
    lrs = _stub_lrs(config.reference_lr)
    n = len(lrs)
    evals = [[0.0, 2.0, 0.5], [float(n), 1.0, 0.9]]
    winner = {"diverged_at": -1, "t": n, "train_loss": torch.ones(n), "grad_norm": torch.ones(n),
              "lrs": torch.tensor(lrs, dtype=torch.float64),
              "evals": torch.tensor(evals, dtype=torch.float64)}  # fmt: skip
    record = make_record(config, lineage_history(winner, 0.5))
    record["result"].update(lr_trajectory=lrs, inner_steps=config.steps, population=4)
    return record


def test_bench_replays_the_trajectory_stubbed(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lrctl.bench.tuners.require_ray_tune", lambda: None)
    monkeypatch.setattr("lrctl.bench.runner.run_pbt_job", stub_pbt_job)
    config = _config(suite, ("momentum_pbt", "momentum_cosine"))
    outcome = run_bench(config, out=tmp_path, workers=1, progress=False)
    assert outcome.complete
    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    sel = runs[runs.method == "momentum_pbt"].set_index("role")
    assert sel.loc["tune", "schedule"] == PBT and sel.loc["final", "schedule"] == REPLAY
    assert math.isnan(sel.loc["tune", "test_loss"]) and not math.isnan(
        sel.loc["final", "test_loss"]
    )
    assert (sel.loc["final", "tune_trials"], sel.loc["final", "tune_steps"]) == (4, 4 * STEPS)
    store = RunStore(tmp_path / "tiny" / "runs")
    final = store.load(sel.loc["final", "config_hash"])
    ref = final["config"]["reference_lr"]
    assert final["steps"]["lr"] == final["config"]["lr_trajectory"] == _stub_lrs(ref)
    assert final["config"]["seed"] == 1000 and final["config"]["evaluate_test"]
    assert sel.loc["final", "lr_factor"] == pytest.approx(2.0)
    text = (tmp_path / "tiny" / "summary.md").read_text()
    assert "- **PBT** (momentum_pbt): Ray Tune's PopulationBasedTraining" in text
    assert "| 4 / 240 " in next(line for line in text.splitlines() if "PBT schedule" in line)
    # A rerun replays the tuner from the store: nothing new, the same trajectory.
    again = run_bench(config, out=tmp_path, workers=1, progress=False)
    assert again.n_new == 0 and again.tuned == outcome.tuned


def test_missing_ray_is_one_clear_error(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    argv = ["bench", "--suite", str(suite), "--methods", "momentum_pbt", "--seeds", "1",
            "--quick", "--workers", "1", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrctl: error: ") and "pip install 'lrctl[ray]'" in err
    assert len(err.strip().splitlines()) == 1  # no traceback
    assert not list(tmp_path.rglob("*.json"))  # nothing ran
    # Other methods are unaffected.
    plan = make_plan(_config(suite, ("momentum_cosine_tpe",)))
    assert make_tuner(plan, "wine_mlp", METHODS["momentum_cosine_tpe"]).ask()


# --- Real Ray Tune: one tiny bench, checked from several sides. ---


@pytest.fixture(scope="module")
def ray_bench(tmp_path_factory: pytest.TempPathFactory, suite: Path) -> dict:
    pytest.importorskip("ray.tune")
    out = tmp_path_factory.mktemp("pbt-bench")
    outcome = run_bench(_config(suite), out=out, workers=1, progress=False)
    folder = out / "tiny"
    runs = pd.read_csv(folder / "runs.csv")
    store = RunStore(folder / "runs")
    sel = runs[runs.method == "momentum_pbt"].set_index("role")
    return {
        "outcome": outcome,
        "runs": runs,
        "job": store.load(sel.loc["tune", "config_hash"]),
        "final": store.load(sel.loc["final", "config_hash"]),
        "dir": folder,
    }


def test_pbt_job_end_to_end(ray_bench: dict) -> None:
    job = ray_bench["job"]
    result, config = job["result"], job["config"]
    lrs = np.asarray(result["lr_trajectory"])
    ref = config["reference_lr"]
    assert len(lrs) == STEPS
    assert np.all((lrs >= 0.1 * ref * (1 - 1e-12)) & (lrs <= 10.0 * ref * (1 + 1e-12)))
    assert result["population"] == 4 and result["inner_steps"] == 4 * STEPS  # P x T, measured
    assert not config["evaluate_test"] and math.isnan(result["test_loss"])
    assert math.isfinite(result["final_val_loss"])
    assert job["steps"]["lr"] == result["lr_trajectory"]  # the winner's lineage history
    # PBT did change the LR during training (the members started at 4 distinct constant LRs).
    assert len(set(result["lr_trajectory"])) > 1
    budget = ray_bench["outcome"].tuned[("wine_mlp", "momentum_pbt")].budget
    assert (budget.trials, budget.steps) == (4, 4 * STEPS)


def test_pbt_final_run_replays_the_trajectory(ray_bench: dict) -> None:
    final, job = ray_bench["final"], ray_bench["job"]
    assert final["config"]["schedule"] == REPLAY and final["config"]["seed"] == 1000
    assert final["steps"]["lr"] == job["result"]["lr_trajectory"]  # exactly
    assert math.isfinite(final["result"]["test_loss"])
    text = (ray_bench["dir"] / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method "))
    assert BUDGET_COLUMN in header
    assert "| 4 / 240 " in next(line for line in text.splitlines() if "PBT schedule" in line)


def test_pbt_is_reproducible() -> None:
    """The same PBT on 1 and on 2 local CPUs finds the same schedule (members' seeds and PBT's
    own seeded generator; synchronous decisions)."""
    pytest.importorskip("ray.tune")
    job = _job()  # 30 steps, perturbed every 10
    settings = PBTSettings(population=4, horizon=30, interval=10, low=0.1, high=10.0)
    one = population_based_training(job, settings, seed=0, cpus=1)
    two = population_based_training(job, settings, seed=0, cpus=2)
    assert one.lr_trajectory == two.lr_trajectory and len(one.lr_trajectory) == 30
    assert one.inner_steps == two.inner_steps == 4 * 30
    assert one.history.final_val_loss == two.history.final_val_loss
