"""benchmarks/paired_by_task.py: the paired judge's effect split by val task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

by_task = load_benchmark("paired_by_task")

PAIRED_MD = """**candidate worse**: geometric mean candidate / shipped final validation loss ...

| horizon   | task   | optimizer   | lr_factor   |   seeds |   ratio | candidate_lower   |
|:----------|:-------|:------------|:------------|--------:|--------:|:------------------|
| full      | a_mlp  | adam        | x0.1        |       5 |   1     | 2/5               |
| full      | a_mlp  | momentum    | x10         |       5 |   1.21  | 0/5               |
| short300  | b_lstm | adam        | x1          |       5 |   0.9   | 4/5               |
| short300  | b_lstm | momentum    | x1          |       5 |   0.8   | 5/5               |
"""


def test_reads_cells_and_splits_the_effect_by_task(tmp_path: Path) -> None:
    cells = by_task.read_cells(PAIRED_MD)
    assert cells == [("a_mlp", 1.0), ("a_mlp", 1.21), ("b_lstm", 0.9), ("b_lstm", 0.8)]
    effects = by_task.task_effects(cells)
    assert effects["a_mlp"] == pytest.approx((1.1, math.sqrt(0.72)))
    assert effects["b_lstm"][0] == pytest.approx(math.sqrt(0.72))
    (tmp_path / "L1").mkdir()
    (tmp_path / "L1" / "paired.md").write_text(PAIRED_MD)
    (tmp_path / "notes").mkdir()  # a record without a paired judge is left out
    (tmp_path / "notes" / "paired.md").write_text("no cells here\n")
    text = by_task.table(tmp_path)
    overall = (1.0 * 1.21 * 0.9 * 0.8) ** 0.25
    assert f"| L1 | {overall:.3f} | 1.100 | 0.849 | 0.849 | 1.100 |" in text
    assert "notes" not in text
    assert (
        "1 candidates; on each task, candidates worse than the shipped controller: a_mlp 1, b_lstm 0"
        in text
    )
