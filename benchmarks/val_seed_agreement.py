"""How consistently the val suite ranks candidate controllers from one evaluation seed to another.

Every lever in agents/default/iterations.md is judged on val with 3 evaluation seeds. If the
seeds disagree on which candidate is better, differences between candidates of the size seen
there are noise. For each judged candidate (a folder holding `val/runs.csv`, as
`benchmarks/judge_on_val.sh` writes them under runs/judge/), per evaluation seed:

- `d`: median over (task, optimizer) of the controller at x1 ÷ cosine at its tuned LR, the
  same seed (the per-seed version of quality bar (d) = G1);
- `b`: the fraction of sweep cells (x0.1, x10) where the controller ≤ 1.01 × cosine at the
  same LR and seed (the x1 cells are the final runs, in `d`).

Then the Spearman rank correlation of each figure between every pair of seeds, and between
the first seed and the mean of the others (a split half). Only candidates judged against the
same baselines (one machine) should be compared: pass their folders.

    .venv/bin/python benchmarks/val_seed_agreement.py runs/judge/*  [--out FILE.md]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

OPTIMIZERS = ("momentum", "adam")


def _rows(runs: pd.DataFrame, method: str, seed: int) -> pd.DataFrame:
    return runs[(runs.method == method) & (runs.seed == seed)]


def _spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.corr(b, method="spearman"))


def per_seed(runs: pd.DataFrame) -> dict[str, float]:
    """`d` and `b` of one candidate for each of its final seeds (module docstring)."""
    final, sweep = runs[runs.role == "final"], runs[runs.role == "sweep"]
    out: dict[str, float] = {}
    for seed in sorted(final.seed.unique()):
        ratios: list[float] = []
        cells: list[bool] = []
        for opt in OPTIMIZERS:
            ctrl = _rows(final, f"controller_{opt}", seed).set_index("task").final_val_loss
            cos = _rows(final, f"{opt}_cosine", seed).set_index("task").final_val_loss
            ratios += list((ctrl / cos).dropna())
            both = _rows(sweep, f"controller_{opt}", seed).merge(
                _rows(sweep, f"{opt}_cosine", seed), on=["task", "lr_factor"], suffixes=("_c", "_k")
            )
            cells += list(both.final_val_loss_c <= 1.01 * both.final_val_loss_k)
        out[f"d@{seed}"] = float(np.median(ratios))
        out[f"b@{seed}"] = float(np.mean(cells))
    return out


def agreement(table: pd.DataFrame, key: str) -> str:
    """Spearman correlations of figure `key` between seeds, as one line."""
    cols = [c for c in table.columns if c.startswith(f"{key}@")]
    pairs = [
        f"{a.split('@')[1]}~{b.split('@')[1]}: {_spearman(table[a], table[b]):.2f}"
        for a, b in itertools.combinations(cols, 2)
    ]
    half = _spearman(table[cols[0]], table[cols[1:]].mean(axis=1))
    return f"- `{key}`: {', '.join(pairs)}; first seed ~ mean of the others: {half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="folders holding val/runs.csv")
    parser.add_argument("--out", help="also write the table and correlations to this file")
    args = parser.parse_args()
    rows = {}
    for folder in map(Path, args.candidates):
        f = folder / "val" / "runs.csv"
        if f.is_file():
            rows[folder.name] = per_seed(pd.read_csv(f))
    if len(rows) < 3:
        raise SystemExit("need at least 3 judged candidates (folders with val/runs.csv)")
    table = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    text = "\n".join(
        [
            f"{len(table)} candidates; per evaluation seed, d = median controller(x1) / tuned "
            "cosine, b = sweep cells within 1.01 x cosine at the same LR",
            "",
            table.round(3).to_markdown(),
            "",
            "Spearman rank correlation between evaluation seeds, over candidates:",
            agreement(table, "d"),
            agreement(table, "b"),
        ]
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
