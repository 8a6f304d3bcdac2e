"""lrctl bench: plan, tuning rule, store, resume after a kill, reports, plots, the controller
replay, Ray, command line.

One tiny sweep (2 tasks x 3 methods, 2 final seeds, 2 tuning seeds, a 3-point grid, 40 steps)
is run once per module and checked from several sides; a second one adds the controller's
replay.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lrctl.actions import ActionSpec
from lrctl.bench import BenchConfig, make_plan, run_bench
from lrctl.bench.methods import METHODS, Method, get_methods
from lrctl.bench.plan import FULL_GRID, RunConfig, choose_factor, log_grid
from lrctl.bench.quality import generalization_bar, quality_bar
from lrctl.bench.report import RUN_COLUMNS, win_rate
from lrctl.bench.store import RunStore
from lrctl.cli import main
from lrctl.controller_file import save_controller
from tests.helpers import random_policy

TINY_SUITE = """\
version = 1
name = "tiny"

[[family]]
name = "wine_mlp"
steps = [40, 40]
batch_sizes = [16]

[[family]]
name = "breast_cancer_logreg"
steps = [40, 40]
batch_sizes = [32]
"""

TINY_METHODS = ("controller_momentum", "momentum_cosine", "adam_default")
TINY_GRID = (0.1, 1.0, 10.0)
# 2 tasks x: tune 1 tuned method x 3 LRs x 2 seeds = 6; final 3 methods x 2 seeds = 6;
# sweep: controller at x0.1, x10 (x1 is its final run) = 4, constant x3 = 6, cosine x3 minus
# its final run (the tuned factor is one of the sweep's) = 4.
TINY_ROWS = {"tune": 12, "final": 12, "sweep": 28}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    suite = root / "tiny.toml"
    suite.write_text(TINY_SUITE)
    controller = root / "controller.safetensors"
    save_controller(random_policy(0, ActionSpec()), controller)
    config = BenchConfig(
        suite=str(suite), methods=TINY_METHODS, seeds=2, tune_seeds=2, grid=TINY_GRID
    )
    outcome = run_bench(config, out=root / "out", controller=controller, workers=1, progress=False)
    return {
        "root": root,
        "suite": suite,
        "controller": controller,
        "config": config,
        "outcome": outcome,
        "dir": root / "out" / "tiny",
        "runs": pd.read_csv(root / "out" / "tiny" / "runs.csv"),
    }


def _table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "runs.csv").drop(columns="wall_time_s")


def test_runs_csv_columns_and_rows(tiny: dict) -> None:
    runs = tiny["runs"]
    assert list(runs.columns) == RUN_COLUMNS
    assert runs["role"].value_counts().to_dict() == TINY_ROWS
    assert runs["config_hash"].is_unique
    finals = runs[runs.role == "final"]
    assert finals.groupby(["task", "method"]).size().to_dict() == {
        (t, m): 2 for t in ("wine_mlp", "breast_cancer_logreg") for m in TINY_METHODS
    }
    assert set(finals["seed"]) == {1000, 1001}
    assert set(runs[runs.role == "tune"]["seed"]) == {0, 1}
    # Finals and sweep read the test split; tuning never does.
    assert runs[runs.role != "tune"]["test_loss"].notna().all()
    assert runs[runs.role == "tune"]["test_loss"].isna().all()
    # Adam's default is untuned: lr 1e-3 on every task.
    assert np.allclose(runs[runs.method == "adam_default"]["base_lr"], 1e-3)
    # The controller's x1 run is its final run, trained once and listed once.
    ctrl = runs[runs.method == "controller_momentum"]
    assert sorted(ctrl.groupby("role").size().items()) == [("final", 4), ("sweep", 8)]
    assert set(ctrl[ctrl.role == "final"]["lr_factor"]) == {1.0}
    assert (tiny["dir"] / "runs").is_dir()
    for name in ("summary.md", "quality_bar.md", "steps.csv.gz", "evals.csv.gz"):
        assert (tiny["dir"] / name).stat().st_size > 0
    for name in ("loss_curves.png", "lr_trajectories.png", "robustness.png"):
        assert (tiny["dir"] / name).read_bytes()[:4] == b"\x89PNG"
    index = (tiny["root"] / "out" / "README.md").read_text()
    assert "[summary.md](tiny/summary.md)" in index and "## Suite `tiny`" in index
    assert (tiny["dir"] / "standing.md").read_text().startswith("## Suite `tiny` (revision 1)")


def test_histories_match_runs(tiny: dict) -> None:
    runs = tiny["runs"].set_index("config_hash")
    steps = pd.read_csv(tiny["dir"] / "steps.csv.gz")
    evals = pd.read_csv(tiny["dir"] / "evals.csv.gz")
    assert list(steps.columns) == ["config_hash", "step", "train_loss", "grad_norm", "lr"]
    assert set(steps["config_hash"]) == set(runs.index)
    n = steps.groupby("config_hash").size()
    assert (n[~runs["diverged"]] == 40).all()
    last = evals.groupby("config_hash").last()
    ok = ~runs["diverged"]
    np.testing.assert_allclose(
        last.loc[runs.index[ok], "val_loss"], runs.loc[ok, "final_val_loss"], rtol=1e-5
    )
    # An LR trajectory from the table: cosine from the base LR towards 0.
    cos = runs[(runs.method == "momentum_cosine") & (runs.role == "final")].index[0]
    lr = steps[steps.config_hash == cos]["lr"].to_numpy()
    base = runs.loc[cos, "base_lr"]
    expected = base * (1 + np.cos(np.pi * np.arange(40) / 40)) / 2
    np.testing.assert_allclose(lr, expected, rtol=1e-5)


def test_tuning_picked_lowest_validation_loss(tiny: dict) -> None:
    runs = tiny["runs"]
    tune = runs[runs.role == "tune"]
    finals = runs[runs.role == "final"]
    for (task, method), group in tune.groupby(["task", "method"]):
        mean_val = group.groupby("lr_factor")["final_val_loss"].mean()
        assert len(mean_val) == 3 and (group.groupby("lr_factor").size() == 2).all()
        chosen = finals[(finals.task == task) & (finals.method == method)]["lr_factor"]
        assert set(chosen) == {mean_val.idxmin()}
        assert tiny["outcome"].chosen[(task, method)] == mean_val.idxmin()


def test_choose_factor_rule() -> None:
    assert choose_factor({0.1: [0.5, 0.7], 1.0: [0.2, 0.4], 10.0: [0.1, math.inf]}) == 1.0
    assert choose_factor({0.1: [0.3], 1.0: [0.3]}) == 0.1  # a tie goes to the smaller LR
    assert choose_factor({1.0: [math.inf], 3.0: [math.inf]}) == 1.0  # all diverged
    with pytest.raises(ValueError):
        choose_factor({})


def test_grid_and_hash() -> None:
    assert len(FULL_GRID) == 7
    assert {0.1, 1.0, 10.0} <= set(FULL_GRID)  # the sweep's points are grid points
    np.testing.assert_allclose(np.diff(np.log10(FULL_GRID)), 0.5)
    assert log_grid(5, 2.0) == pytest.approx((0.1, 10**-0.5, 1.0, 10**0.5, 10.0))
    fields = dict(
        task="wine_mlp", method="momentum_cosine", optimizer="momentum", schedule="cosine",
        base_lr=0.1, lr_factor=1.0, seed=1000, steps=40, batch_size=16,
        arch=(("depth", 2), ("width", 64)), val_every=10, reference_lr=0.1, evaluate_test=True,
    )  # fmt: skip
    a = RunConfig(**fields)
    assert a.config_hash == RunConfig(**fields).config_hash
    assert a.config_hash != RunConfig(**{**fields, "seed": 1001}).config_hash
    assert a.config_hash != RunConfig(**{**fields, "base_lr": 0.1000001}).config_hash


def test_rerun_does_no_new_runs(tiny: dict) -> None:
    before = (tiny["dir"] / "summary.md").read_text()
    csv_before = (tiny["dir"] / "runs.csv").read_bytes()
    again = run_bench(
        tiny["config"],
        out=tiny["root"] / "out",
        controller=tiny["controller"],
        workers=1,
        progress=False,
    )
    assert again.n_new == 0
    assert again.n_cached == sum(TINY_ROWS.values())
    assert (tiny["dir"] / "runs.csv").read_bytes() == csv_before
    assert (tiny["dir"] / "summary.md").read_text() == before


def test_limited_run_resumes(tiny: dict, tmp_path: Path) -> None:
    kw = dict(out=tmp_path, controller=tiny["controller"], workers=1, progress=False)
    part = run_bench(tiny["config"], max_new_runs=7, **kw)
    assert part.n_new == 7 and not part.complete
    assert not (tmp_path / "tiny" / "runs.csv").exists()
    rest = run_bench(tiny["config"], **kw)
    assert rest.complete and rest.n_cached == 7
    assert rest.n_new == sum(TINY_ROWS.values()) - 7
    pd.testing.assert_frame_equal(_table(tmp_path / "tiny"), _table(tiny["dir"]))


def test_killed_sweep_resumes_to_same_table(tiny: dict, tmp_path: Path) -> None:
    """SIGKILL a 2-worker sweep mid-way: only whole records remain, and a rerun finishes
    with exactly the tables of an uninterrupted sweep."""
    script = textwrap.dedent(
        f"""
        from lrctl.bench import BenchConfig, run_bench
        config = BenchConfig(suite={str(tiny["suite"])!r}, methods={TINY_METHODS!r}, seeds=2,
                             tune_seeds=2, grid={TINY_GRID!r})
        run_bench(config, out={str(tmp_path)!r}, controller={str(tiny["controller"])!r},
                  workers=2, progress=False)
        """
    )
    store = tmp_path / "tiny" / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if store.is_dir() and len(list(store.glob("*.json"))) >= 6:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = RunStore(store).done()
    assert 6 <= len(done) < sum(TINY_ROWS.values())
    assert all(RunStore(store).load_valid(h) is not None for h in done)
    assert not (tmp_path / "tiny" / "runs.csv").exists()
    resumed = run_bench(
        tiny["config"], out=tmp_path, controller=tiny["controller"], workers=1, progress=False
    )
    assert resumed.n_cached == len(done)
    assert resumed.n_new == sum(TINY_ROWS.values()) - len(done)
    pd.testing.assert_frame_equal(_table(tmp_path / "tiny"), _table(tiny["dir"]))
    for name in ("summary.md", "quality_bar.md"):
        assert (tmp_path / "tiny" / name).read_text() == (tiny["dir"] / name).read_text()


def test_summary_and_win_rates(tiny: dict) -> None:
    runs = tiny["runs"]
    finals = runs[runs.role == "final"]
    a = finals[finals.method == "controller_momentum"].set_index(["task", "seed"])["test_loss"]
    b = finals[finals.method == "momentum_cosine"].set_index(["task", "seed"])["test_loss"]
    expected = float(((a < b) + 0.5 * (a == b)).mean())
    assert win_rate(finals, "controller_momentum", "momentum_cosine") == expected
    text = (tiny["dir"] / "summary.md").read_text()
    assert "fresh seeds** [1000, 1001]" in text and "**validation** split" in text
    assert "**test** split" in text and "3 base LRs x 2 seed(s) = 6 trials" in text
    row = next(line for line in text.splitlines() if line.startswith("| controller + SGD"))
    assert f"| {expected:.0%} " in row
    mean = a.xs("wine_mlp").mean()
    assert f"{mean:.4g} ± " in row


def test_win_rate_counts_ties_half() -> None:
    finals = pd.DataFrame(
        {
            "task": ["t"] * 6,
            "seed": [0, 1, 2] * 2,
            "method": ["a"] * 3 + ["b"] * 3,
            "test_loss": [1.0, math.inf, 3.0, 2.0, math.inf, 1.0],
        }
    )
    assert win_rate(finals, "a", "b") == pytest.approx(0.5)  # win, tie (both diverged), loss


def test_quality_bar_numbers(tiny: dict) -> None:
    runs = tiny["runs"]
    val = runs.set_index(["task", "method", "lr_factor", "seed"])["final_val_loss"]
    pairs = [
        (val[(t, "controller_momentum", f, s)], val[(t, "momentum_constant", f, s)],
         val[(t, "momentum_cosine", f, s)])
        for t in ("wine_mlp", "breast_cancer_logreg") for f in TINY_GRID for s in (1000, 1001)
    ]  # fmt: skip
    a = np.mean([c <= k for c, k, _ in pairs])
    b = np.mean([c <= 1.01 * q for c, _, q in pairs])
    crit, _ = quality_bar(tiny["outcome"], runs)
    by_key = {c.key: c for c in crit}
    assert by_key["a"].value == f"{a:.1%}" and by_key["a"].passed == (a >= 0.8)
    assert by_key["b"].value == f"{b:.1%}" and by_key["b"].passed == (b >= 0.6)
    ratios = [
        val[(t, "controller_momentum", 1.0, s)]
        / val[(t, "momentum_cosine", tiny["outcome"].chosen[(t, "momentum_cosine")], s)]
        for t in ("wine_mlp", "breast_cancer_logreg")
        for s in (1000, 1001)
    ]
    assert by_key["d"].value.startswith(f"{np.median(ratios):.3f} over 4")
    text = (tiny["dir"] / "quality_bar.md").read_text()
    assert f"| {a:.1%} " in text and ">= 80%" in text and "<= 1.05" in text


def test_generalization_targets(tiny: dict, replay: dict) -> None:
    runs, outcome = tiny["runs"], tiny["outcome"]
    goals = {c.key: c for c in generalization_bar(outcome, runs)}
    bar = {c.key: c for c in quality_bar(outcome, runs)[0]}
    assert list(goals) == ["G1", "G2", "G3", "G4", "G5"]
    # G1 and G2 are (d) and (b) of the bar against the stricter targets.
    assert goals["G1"].value == bar["d"].value.split(" ")[0]
    assert goals["G1"].passed == (float(goals["G1"].value) <= 1.0)
    assert goals["G2"].value == bar["b"].value and goals["G2"].passed == (
        float(bar["b"].value.rstrip("%")) >= 80
    )
    finals = runs[runs.role == "final"].groupby(["task", "method"]).final_val_loss.mean()
    beats = [
        finals[(t, "controller_momentum")] < finals[(t, "adam_default")]
        for t in ("wine_mlp", "breast_cancer_logreg")
    ]
    assert goals["G4"].value.startswith(f"{sum(beats)}/2 tasks")
    assert goals["G4"].passed == all(beats)
    assert goals["G5"].passed is None  # no replay method in this bench
    # Both benches' stored runs together: the sweep of one, the replays of the other.
    out = tiny["root"] / "both"
    for source in (tiny["dir"], replay["dir"]):
        shutil.copytree(source / "runs", out / "tiny" / "runs", dirs_exist_ok=True)
    config = BenchConfig(
        suite=str(tiny["suite"]), methods=(*TINY_METHODS, "controller_replay_momentum"),
        seeds=2, tune_seeds=2, grid=TINY_GRID,
    )  # fmt: skip
    both = run_bench(config, out=out, controller=tiny["controller"], workers=1, progress=False)
    assert both.n_new == 0
    runs = pd.read_csv(out / "tiny" / "runs.csv")
    pairs = runs[runs.role == "final"].pivot_table(
        index=["task", "seed"], columns="method", values="final_val_loss"
    )
    won = (pairs.controller_momentum < pairs.controller_replay_momentum).groupby("task").mean()
    g5 = {c.key: c for c in generalization_bar(both, runs)}["G5"]
    assert g5.value == f"{int((won > 0.5).sum())}/2 tasks"
    assert g5.passed == ((won > 0.5).sum() > 1)
    assert "## Generalization targets" in (tiny["dir"] / "quality_bar.md").read_text()
    # quality_bar.json holds the same verdicts, and the numbers behind G1 and the replay line.
    doc = json.loads((out / "tiny" / "quality_bar.json").read_text())
    both_goals = generalization_bar(both, runs)
    assert [(c["key"], c["value"], c["passed"]) for c in doc["generalization"]] == [
        (c.key, c.value, c.passed) for c in both_goals
    ]
    assert [c["key"] for c in doc["bar"]] == ["a", "b", "c", "d"]
    assert f"{doc['median_ratio_x1_vs_best_cosine']:.3f}" == both_goals[0].value
    assert doc["replay"]["runs"] == len(pairs)
    assert doc["replay"]["wins"] == int(
        (pairs.controller_momentum < pairs.controller_replay_momentum).sum()
    )
    assert doc["steps"] == {"wine_mlp": 40, "breast_cancer_logreg": 40}
    no_replay = json.loads((tiny["dir"] / "quality_bar.json").read_text())
    assert no_replay["replay"] is None and no_replay["generalization"][4]["passed"] is None


def test_method_registry() -> None:
    assert {"controller_momentum", "controller_adam", "adam_default", "adamw_cosine"} <= set(
        METHODS
    )
    assert all(f"momentum_{s}" in METHODS for s in ("step", "one_cycle", "plateau"))
    with pytest.raises(ValueError, match="choose from: controller_momentum"):
        get_methods(["nope"])
    with pytest.raises(ValueError, match="unknown schedule"):
        Method("x", "x", "adam", "warp")
    # plateau counts patience in validations: it gets the run's val_every.
    policy = METHODS["momentum_plateau"].policy_fn(steps=400, val_every=10)
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert policy(opt).patience == 4  # 10% of 400 steps = 40 steps = 4 validations


def test_plan_adds_references(tiny: dict) -> None:
    plan = make_plan(
        BenchConfig(suite=str(tiny["suite"]), methods=("controller_adam",)), tiny["controller"]
    )
    assert [m.name for m in plan.methods] == [
        "controller_adam", "momentum_cosine", "adam_default", "adam_cosine",
    ]  # fmt: skip
    assert [m.name for m in plan.sweep_methods] == [
        "controller_adam", "adam_constant", "adam_cosine",
    ]  # fmt: skip


def test_ray_backend_same_table(tiny: dict, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    outcome = run_bench(
        tiny["config"],
        out=tmp_path,
        controller=tiny["controller"],
        workers=2,
        ray_address="local",
        progress=False,
    )
    assert outcome.backend.startswith("Ray")
    assert outcome.n_new == sum(TINY_ROWS.values())
    pd.testing.assert_frame_equal(_table(tmp_path / "tiny"), _table(tiny["dir"]))


def test_cli_bench_quick(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "bench", "--suite", str(tiny["suite"]), "--tasks", "wine_mlp", "--methods",
        "controller_momentum", "--seeds", "1", "--steps", "30", "--quick", "--workers", "1",
        "--controller", str(tiny["controller"]), "--out", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "QUICK" in out and "5-point grid" in out
    assert "controller + SGD-momentum" in out and "controller quality bar:" in out
    assert f"wrote {tmp_path}/tiny-quick/" in out
    runs = pd.read_csv(tmp_path / "tiny-quick" / "runs.csv")
    assert set(runs["task"]) == {"wine_mlp"} and set(runs["steps"]) == {30}
    assert len(runs[(runs.role == "tune")]) == 5  # momentum_cosine: 5 LRs x 1 seed
    assert not (tmp_path / "README.md").exists()  # quick runs don't replace the index


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "nope"], "unknown method 'nope'; choose from: controller_momentum"),
        (["--tasks", "nope"], "unknown task 'nope' for suite 'tiny'; choose from: wine_mlp"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--controller", "/no/such.safetensors"], "controller file not found"),
    ],
)
def test_cli_bench_user_errors(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    argv = ["bench", "--suite", str(tiny["suite"]), "--out", str(tmp_path), *args]
    if "--controller" not in args:
        argv += ["--controller", str(tiny["controller"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lrctl: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.json"))  # failed before running anything


def test_cli_methods_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--methods all` runs every registered method (PBT only when Ray is importable)."""
    import importlib.util

    from lrctl import cli
    from lrctl.bench import runner
    from lrctl.bench.methods import METHODS

    seen = {}
    monkeypatch.setattr(runner, "run_bench", lambda config, **kw: seen.setdefault("c", config))
    monkeypatch.setattr("lrctl.bench.run_bench", runner.run_bench)
    assert cli.main(["bench", "--methods", "all", "--out", str(tmp_path)]) in (0, None)
    has_ray = importlib.util.find_spec("ray") is not None
    expected = [n for n, m in METHODS.items() if has_ray or m.tuner != "pbt"]
    assert list(seen["c"].methods) == expected


# --- The controller replay: the controller's own mean LR curve as a fixed schedule. ---

REPLAY_METHODS = ("controller_replay_momentum", "momentum_cosine")


@pytest.fixture(scope="module")
def replay(tiny: dict) -> dict:
    config = BenchConfig(
        suite=str(tiny["suite"]), methods=REPLAY_METHODS, seeds=2, tune_seeds=2, grid=TINY_GRID
    )
    out = tiny["root"] / "replay"
    outcome = run_bench(config, out=out, controller=tiny["controller"], workers=1, progress=False)
    return {"outcome": outcome, "dir": out / "tiny", "runs": pd.read_csv(out / "tiny" / "runs.csv")}


def test_replay_adds_its_controller_and_replays_its_geometric_mean_lr(replay: dict) -> None:
    outcome, runs = replay["outcome"], replay["runs"]
    names = [m.name for m in outcome.plan.methods]
    assert names[:2] == list(REPLAY_METHODS) and "controller_momentum" in names
    steps = pd.read_csv(replay["dir"] / "steps.csv.gz")
    lr = {h: g["lr"].to_numpy() for h, g in steps.groupby("config_hash")}
    for task in ("wine_mlp", "breast_cancer_logreg"):
        sel = runs[runs.task == task]
        # The source: the controller at the reference LR on the tuning seeds (validation only).
        source = sel[(sel.method == "controller_momentum") & (sel.role == "tune")]
        assert sorted(source.seed) == [0, 1] and set(source.lr_factor) == {1.0}
        assert source.test_loss.isna().all()
        curves = np.stack([lr[h] for h in source.config_hash])
        expected = np.exp(np.log(curves).mean(0))  # geometric mean per step
        finals = sel[(sel.method == "controller_replay_momentum") & (sel.role == "final")]
        assert sorted(finals.seed) == [1000, 1001]
        for h in finals.config_hash:
            np.testing.assert_allclose(lr[h], expected, rtol=1e-5)  # steps.csv: 6 digits
        assert (finals.tune_trials == 1).all() and (finals.tune_steps == 2 * 40).all()
        assert outcome.tuned[(task, "controller_replay_momentum")].lr_trajectory == pytest.approx(
            tuple(expected), rel=1e-5
        )
    # The controller reacted to its runs: its two source curves differ somewhere.
    assert not np.array_equal(*curves)


def test_replay_is_reported(replay: dict) -> None:
    summary = (replay["dir"] / "summary.md").read_text()
    assert "**Controller replay** (controller_replay_momentum)" in summary
    assert "| controller's LR curve replayed + SGD-momentum |" in summary
    text = (replay["dir"] / "quality_bar.md").read_text()
    assert "## The controller against its own LR curve, replayed" in text
    assert (
        "lower than its replayed LR curve's in" in text and "of 4 (task, optimizer, seed)" in text
    )


def test_warmup_cosine_joins_a_suite_with_a_transformer(tmp_path: Path) -> None:
    suite = tmp_path / "lm.toml"
    suite.write_text(
        'version = 1\nname = "lm"\n\n[[family]]\nname = "char_transformer"\nsteps = [40, 40]\n'
    )
    plan = make_plan(BenchConfig(suite=str(suite), methods=("momentum_cosine",)))
    assert [m.name for m in plan.methods] == [
        "momentum_cosine", "adam_default", "momentum_warmup_cosine", "adamw_warmup_cosine",
    ]  # fmt: skip
    no_lm = make_plan(BenchConfig(suite="eval", tasks=("wine_mlp",), methods=("momentum_cosine",)))
    assert [m.name for m in no_lm.methods] == ["momentum_cosine", "adam_default"]


def test_replay_without_a_grid_still_replays(tiny: dict) -> None:
    plan = make_plan(
        BenchConfig(suite=str(tiny["suite"]), methods=REPLAY_METHODS, grid=(1.0,)),
        tiny["controller"],
    )
    assert not plan.tuning
    assert [m.name for _, m in plan.tune_targets()] == ["controller_replay_momentum"] * 2
    assert {r.config.method for r in plan.initial_runs()} == {
        "momentum_cosine", "adam_default", "controller_momentum",
    }  # fmt: skip


def test_replay_method_needs_its_controller() -> None:
    with pytest.raises(ValueError, match="needs `replays`"):
        Method("x", "x", "momentum", "replay", tuner="replay")
    with pytest.raises(ValueError, match="goes with a tuner that finds an LR trajectory"):
        Method("x", "x", "momentum", "cosine", tuner="replay", replays="controller_momentum")


def test_plots_show_only_what_answers_each_panel(tiny: dict, replay: dict) -> None:
    """One legend, outside the panels; per panel at most the six roles (controller, replay,
    cosine and constant at the same LR, Adam, the best tuned method)."""
    from lrctl.bench.plots import ROLES, _curves_plot, _robustness_plot

    outcome, runs = replay["outcome"], replay["runs"]
    records = {h: outcome.store.load(h) for h in outcome.configs}
    for fig in (
        _curves_plot(outcome, runs, records, "loss"),
        _curves_plot(outcome, runs, records, "lr"),
        _robustness_plot(outcome, runs),
    ):
        assert len(fig.legends) == 1
        assert len(fig.legends[0].get_texts()) == len(ROLES)
        axes = fig.get_axes()
        assert len(axes) == 2  # one panel per task, one row: the one controller optimizer
        for ax in axes:
            assert ax.get_legend() is None
            assert 1 <= len(ax.get_lines()) <= len(ROLES)
            assert "best tuned: SGD-momentum + cosine" in ax.get_title()
