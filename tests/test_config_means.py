"""benchmarks/config_means.py: configurations compared by the mean over their PPO seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

load_benchmark("paired_by_task")  # config_means imports it, as a script would from its folder
config_means = load_benchmark("config_means")


def _record(root: Path, name: str, ratio: float, cells: dict[str, float]) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "paired.json").write_text(json.dumps({"ratio": ratio, "verdict": "undecided"}))
    rows = "\n".join(f"| full | {task} | adam | x1 | 5 | {r} | 2/5 |" for task, r in cells.items())
    (folder / "paired.md").write_text(
        "**undecided**: ...\n\n| horizon | task | optimizer | lr_factor | seeds | ratio | "
        "candidate_lower |\n|:--|:--|:--|:--|--:|--:|:--|\n" + rows + "\n"
    )


def test_welch_interval_matches_the_textbook_figures() -> None:
    a, b = [0.0, 0.1, 0.2], [0.3, 0.5, 0.4, 0.6]
    diff, low, high = config_means.welch(a, b)
    assert diff == pytest.approx(0.1 - 0.45)
    # se = sqrt(0.01/3 + 0.01667/4) = 0.0866; Welch df = 4.93; t(0.975, 4.93) = 2.577
    assert (high - low) / 2 == pytest.approx(2.577 * 0.08660, rel=2e-3)
    assert config_means.verdict(low, high) == "better"
    assert config_means.verdict(-0.1, 0.2) == "undecided"
    assert config_means.verdict(0.01, 0.2) == "worse"
    assert math.isnan(config_means.welch([0.1], [0.2, 0.3])[1])
    assert config_means.verdict(math.nan, math.nan) == "too few seeds"


def test_compares_each_configuration_with_the_baseline(tmp_path: Path, capsys) -> None:
    _record(tmp_path, "A_s1", 1.10, {"t1": 1.21, "t2": 1.0})
    _record(tmp_path, "A_s2", 1.00, {"t1": 1.0, "t2": 1.0})
    _record(tmp_path, "B_s1", 0.90, {"t1": 0.81, "t2": 1.0})
    _record(tmp_path, "B_s2", 0.95, {"t1": 0.9, "t2": 1.0})
    (tmp_path / "A_s3").mkdir()  # no paired judge yet: left out
    out = tmp_path / "means.md"
    args = f"--root {tmp_path} --config A=A_s* --config B=B_s* --baseline A --out {out}"
    assert config_means.main(args.split()) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    mean_a, mean_b = math.sqrt(1.1), math.sqrt(0.9 * 0.95)
    assert f"| A | 2 | 1.100, 1.000 | {mean_a:.3f} | 1.000-1.100 | 1 (the baseline) |" in text
    # per task: t1's effect is the geometric mean over seeds of each seed's t1 cells
    assert f"| {math.sqrt(1.21):.3f} | 1.000 |" in text
    row_b = next(line for line in text.splitlines() if line.startswith("| B |"))
    assert f"| {mean_b / mean_a:.3f} (" in row_b
    assert f"| {math.sqrt(0.81 * 0.9):.3f} | 1.000 |" in row_b


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    _record(tmp_path, "A_s1", 1.0, {"t1": 1.0})
    with pytest.raises(SystemExit, match=r"matches no record with paired\.json"):
        config_means.main(["--root", str(tmp_path), "--config", "X=nothing*"])
    with pytest.raises(SystemExit):
        config_means.main(["--root", str(tmp_path), "--config", "no_equals_sign"])
    with pytest.raises(SystemExit):
        config_means.main(["--root", str(tmp_path), "--config", "A=A_s*", "--baseline", "Z"])
