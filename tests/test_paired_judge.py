"""benchmarks/paired_judge.py: a candidate controller against the shipped one on paired runs
(same task, optimizer, base LR factor and seed), with a bootstrap interval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark

TASKS = ("hastie_dropout_mlp", "char_lstm")
FACTORS = (0.1, 1.0, 10.0)
SEEDS = (1000, 1001, 1002, 1003, 1004)


def _module():
    return load_benchmark("paired_judge")


def _write_bench(folder: Path, scale: float, noise: float = 0.0, seed: int = 0) -> Path:
    """A runs.csv as bench_controller.sh writes it: controller and cosine runs at every
    (task, optimizer, factor, seed); the controller's loss is the base loss times ``scale``
    (times a log-normal noise), the cosine's is the base loss times 1.2."""
    rng = np.random.default_rng(seed)
    rows = []
    for t_i, task in enumerate(TASKS):
        for opt in ("momentum", "adam"):
            for f in FACTORS:
                for s in SEEDS:
                    base = 1.0 + 0.1 * t_i + 0.01 * (s - 1000) + 0.05 * math.log10(f)
                    role = "final" if f == 1.0 else "sweep"
                    ctrl = base * scale * math.exp(noise * rng.standard_normal())
                    for method, schedule, loss in (
                        (f"controller_{opt}", "controller", ctrl),
                        (f"{opt}_cosine", "cosine", base * 1.2),
                    ):
                        rows.append(
                            {"task": task, "method": method, "optimizer": opt,
                             "schedule": schedule, "lr_factor": f, "role": role, "seed": s,
                             "final_val_loss": loss}
                        )  # fmt: skip
            # a tuning run of the controller: not paired (its seeds build the replay's curve)
            rows.append({"task": task, "method": f"controller_{opt}", "optimizer": opt,
                         "schedule": "controller", "lr_factor": 1.0, "role": "tune", "seed": 0,
                         "final_val_loss": 99.0})  # fmt: skip
    (folder / "val").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "val" / "runs.csv", index=False)
    return folder


def test_a_uniformly_better_candidate_is_judged_better(tmp_path):
    pj = _module()
    cand = _write_bench(tmp_path / "cand", 0.9, noise=0.02, seed=1)
    ship = _write_bench(tmp_path / "ship", 1.0, noise=0.02, seed=2)
    result, table = pj.judge([cand], [ship], n_boot=300)
    assert result.runs == len(TASKS) * 2 * len(FACTORS) * len(SEEDS)  # tuning runs left out
    assert result.cells == len(TASKS) * 2 * len(FACTORS)
    assert result.ratio == pytest.approx(0.9, rel=0.02)
    assert result.low < result.ratio < result.high < 1.0
    assert result.verdict == "candidate better"
    assert result.candidate_vs_cosine == pytest.approx(0.9 / 1.2, rel=0.02)
    assert result.shipped_vs_cosine == pytest.approx(1.0 / 1.2, rel=0.02)
    assert len(table) == result.cells and set(table.seeds) == {len(SEEDS)}


def test_the_same_runs_are_undecided_with_a_ratio_of_one(tmp_path):
    pj = _module()
    a = _write_bench(tmp_path / "a", 1.0)
    b = _write_bench(tmp_path / "b", 1.0)
    result, _ = pj.judge([a], [b], n_boot=200)
    assert result.ratio == pytest.approx(1.0)
    assert (result.low, result.high) == pytest.approx((1.0, 1.0))
    assert result.verdict == "undecided"
    assert result.ties == result.runs and result.candidate_lower == 0


def test_a_worse_candidate_over_two_horizons_is_judged_worse(tmp_path):
    pj = _module()
    cands = [_write_bench(tmp_path / f"c{h}", 1.1, 0.02, seed=h) for h in (1, 2)]
    ships = [_write_bench(tmp_path / f"s{h}", 1.0, 0.02, seed=10 + h) for h in (1, 2)]
    result, table = pj.judge(cands, ships, n_boot=300)
    assert result.cells == 2 * len(TASKS) * 2 * len(FACTORS)
    assert set(table.horizon) == {"c1", "c2"}
    assert result.verdict == "candidate worse" and result.low > 1.0


def test_divergences_and_blowups_are_capped():
    pj = _module()
    num = np.array([math.inf, 1.0, math.nan, 500.0, 2.0])
    den = np.array([1.0, math.inf, math.inf, 1.0, 1.0])
    d = pj.log_ratio(num, den, cap=10.0)
    assert d == pytest.approx([math.log(10), -math.log(10), 0.0, math.log(10), math.log(2)])


def test_the_cli_prints_the_verdict_and_writes_json(tmp_path, capsys):
    pj = _module()
    cand = _write_bench(tmp_path / "cand", 0.9, 0.02, seed=1)
    ship = _write_bench(tmp_path / "ship", 1.0, 0.02, seed=2)
    out = tmp_path / "verdict.json"
    rc = pj.main(["--candidate", str(cand), "--shipped", str(ship), "--bootstrap", "200",
                  "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("**candidate better**") and "| hastie_dropout_mlp" in text
    doc = json.loads(out.read_text())
    assert doc["verdict"] == "candidate better" and doc["runs"] == 60
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_folders_get_a_clear_error(tmp_path, capsys):
    pj = _module()
    ship = _write_bench(tmp_path / "ship", 1.0)
    assert pj.main(["--candidate", str(tmp_path / "nowhere"), "--shipped", str(ship)]) == 2
    assert "no runs.csv" in capsys.readouterr().err
    assert pj.main(["--candidate", str(ship), str(ship), "--shipped", str(ship)]) == 2
    assert "as many --candidate folders" in capsys.readouterr().err
    other = tmp_path / "other" / "val"
    other.mkdir(parents=True)
    runs = pd.read_csv(ship / "val" / "runs.csv")
    runs.assign(seed=runs.seed + 100).to_csv(other / "runs.csv", index=False)
    assert pj.main(["--candidate", str(other.parent), "--shipped", str(ship)]) == 2
    assert "share no controller run" in capsys.readouterr().err
