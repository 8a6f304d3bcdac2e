"""`lrctl demo`: one held-out task, five methods, a table and a PNG."""

from __future__ import annotations

import pandas as pd

from lrctl.actions import ActionSpec
from lrctl.cli import main
from lrctl.controller_file import save_controller
from lrctl.demo import DEMO_METHODS, run_demo
from tests.helpers import random_policy


def test_demo_writes_table_runs_and_plot(tmp_path):
    ctrl = save_controller(random_policy(0, ActionSpec()), tmp_path / "c.safetensors")
    out = tmp_path / "demo"
    runs = run_demo(
        task="wine_mlp", seeds=2, steps=30, out_dir=out, controller=str(ctrl), workers=1
    )
    assert len(runs) == len(DEMO_METHODS) * 2
    assert set(runs["seed"]) == {1000, 1001}
    saved = pd.read_csv(out / "runs.csv")
    assert len(saved) == len(runs)
    assert saved["test_loss"].notna().all()
    summary = (out / "summary.md").read_text()
    for label in ("controller + SGD-momentum", "controller + Adam", "Adam (lr=1e-3"):
        assert label in summary
    assert (out / "curves.png").stat().st_size > 10_000
    # A rerun reuses every finished run and gives the same table.
    again = run_demo(
        task="wine_mlp", seeds=2, steps=30, out_dir=out, controller=str(ctrl), workers=1
    )
    pd.testing.assert_frame_equal(
        runs.drop(columns=["wall_time_s"], errors="ignore"),
        again.drop(columns=["wall_time_s"], errors="ignore"),
    )


def test_demo_bad_task_is_one_line_exit_2(capsys):
    assert main(["demo", "--task", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lrctl: error: unknown task 'nope'") and "digits_cnn" in err
