"""benchmarks/new_user_check.py: the issue's plain-loop check on tasks outside every suite."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lrctl.resources import DEFAULT_CONTROLLER, data_path
from tests.helpers import load_benchmark

check = load_benchmark("new_user_check")
SHIPPED = str(data_path(DEFAULT_CONTROLLER))


@pytest.mark.parametrize("task", check.TASKS, ids=lambda t: t.name)
def test_every_task_builds_a_model_that_trains_one_step(task) -> None:
    model, batch, val_loss = check.build(task, seed=0)
    with torch.no_grad():
        before = val_loss()
    loss = batch()
    loss.backward()
    assert math.isfinite(before) and before > 0
    assert math.isfinite(float(loss.detach()))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_no_task_reads_a_suite_family_or_its_text() -> None:
    from lrctl.tasks import FAMILIES
    from lrctl.tasks.data import TEXT_MODULES

    assert not {t.name for t in check.TASKS} & set(FAMILIES)
    suite_files = {f"{m}.py" for mods in TEXT_MODULES.values() for m in mods}
    suite_files |= {f"{m}/__init__.py" for mods in TEXT_MODULES.values() for m in mods}
    assert not set(check.TEXT_MODULES) & suite_files


def test_a_controller_run_reports_its_lr_at_each_tenth() -> None:
    row = check.run_one("logreg_sparse", 0, "controller shipped", 1.0, SHIPPED)
    tenths = [float(v) for v in row["lr_tenths"].split()]
    assert len(tenths) == 10 and tenths[0] == pytest.approx(1.0)
    assert math.isfinite(row["final_val_loss"]) and not row["diverged"]
    cosine = check.run_one("logreg_sparse", 0, "cosine", 1.0, None)
    assert cosine["lr_tenths"] == "" and cosine["base_lr"] == pytest.approx(0.1)
    adam = check.run_one("logreg_sparse", 0, "adam", 1.0, None)
    assert adam["base_lr"] == pytest.approx(check.ADAM_LR)


def test_a_run_whose_loss_goes_non_finite_counts_as_inf() -> None:
    row = check.run_one("stream_regression", 0, "cosine", 1e6, None)
    assert row["diverged"] and row["final_val_loss"] == math.inf


def _runs(ctl: dict[float, list[float]], cos: dict[float, list[float]], adam: list[float]):
    rows = []
    for method, losses in (("controller x", ctl), ("cosine", cos)):
        for factor, values in losses.items():
            for seed, v in enumerate(values):
                rows.append({"task": "logreg_sparse", "steps": 600, "method": method,
                             "factor": factor, "seed": seed, "final_val_loss": v,
                             "diverged": math.isinf(v), "lr_tenths": ""})  # fmt: skip
    for seed, v in enumerate(adam):
        rows.append({"task": "logreg_sparse", "steps": 600, "method": "adam", "factor": 1.0,
                     "seed": seed, "final_val_loss": v, "diverged": False, "lr_tenths": ""})  # fmt: skip
    return pd.DataFrame(rows)


def test_the_issue_figures_from_known_losses() -> None:
    cos = {f: [1.0, 1.0] for f in check.GRID}
    cos[3.0] = [0.5, 0.6]  # cosine's best grid LR: x3
    cos[10.0] = [2.0, 2.0]
    ctl = {0.1: [0.9, 0.9], 1.0: [0.55, 0.9], 10.0: [1.0, math.inf]}
    table = check.task_table(_runs(ctl, cos, adam=[0.8, 0.8]), "controller x")
    row = table[table.task == "logreg_sparse"].iloc[0]
    assert row["cosine best LR"] == "x3" and row["cosine best"] == pytest.approx(0.55)
    assert row["ratios"] == pytest.approx([1.1, 1.5])
    assert row["ctl(x1) / cos best"] == pytest.approx(1.3)
    assert row["cells <= 1.01 cos"] == 2  # x0.1 and x1; x10 diverged where cosine did not
    assert row["diverged where cos finite"] == "x10"
    assert not row["worst <= cos worst"]
    assert row["beats Adam"]  # mean 0.725 at x1 against 0.8
    head = check.headline(table[table.task == "logreg_sparse"])
    short = head["runs of 300-600 steps"]
    assert short.iloc[0] == "1.300"
    assert short.iloc[1] == "2 / 3"


def test_bad_arguments_are_refused_with_one_line_and_nothing_written(tmp_path, capsys) -> None:
    assert check.main(["--tasks", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task(s) ['nope']" in capsys.readouterr().err
    missing = str(tmp_path / "missing.safetensors")
    assert check.main(["--controller", missing, "m", "--out", str(tmp_path / "o")]) == 2
    assert "--controller" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_end_to_end_on_one_short_task(tmp_path) -> None:
    out = tmp_path / "new_user"
    argv = ["--tasks", "wd_mlp_moons", "--seeds", "1", "--jobs", "1", "--out", str(out)]
    assert check.main(["--controller", SHIPPED, "v", *argv]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(check.GRID) + 1 + len(check.CELLS)
    assert np.isfinite(runs.final_val_loss).all()
    summary = (out / "README.md").read_text()
    assert "## v (" in summary and "wd_mlp_moons" in summary
    assert (out / "new_user.png").stat().st_size > 10_000
    (out / "README.md").unlink()
    assert check.main(["--report-only", "--out", str(out)]) == 0
    assert (out / "README.md").read_text() == summary  # the run's command kept


def test_report_only_without_runs_is_refused(tmp_path, capsys) -> None:
    assert check.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert "needs" in capsys.readouterr().err and not list(tmp_path.iterdir())
