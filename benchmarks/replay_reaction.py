"""How much a controller reacts within a run: its LR curves across seeds against its replay.

For each task and optimizer of a bench folder (e.g. results/val), at the reference LR (x1):
the spread of the controller's log-LR across the reported seeds (standard deviation per step,
averaged over the first 90% of the run: 0 means the same curve on every seed, i.e. no
reaction to the run), and the controller's final validation loss over its replay's on each
seed (the replay runs the controller's mean LR curve as a fixed schedule; < 1: the controller
did better). Used to read G5 ("beats its own replay") in agents/default/iterations.md.

And how far the controller moves from cosine annealing at the same base LR (the anchor of
anchored controllers): `climb_first_third` and `climb_run`, the mean of log(LR / cosine's LR)
over the first third of the run and over its first 90% (the anchor nears 0 after that), in
the mean over seeds, as a factor (exp of the mean log): 1 is cosine itself, 3 a run that sits
at 3x cosine. It says whether a controller raises the user's LR on a task where that pays.

    .venv/bin/python benchmarks/replay_reaction.py results/val
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from lrctl.actions import cosine_anchor


def log_climb(log_lr: np.ndarray, base_lr: float) -> np.ndarray:
    """log(LR / cosine's LR from `base_lr` over the curve's length), per step, from log(LR)."""
    n = len(log_lr)
    return log_lr - np.log(base_lr * cosine_anchor(np.arange(n), n))


def reaction_table(folder: Path) -> pd.DataFrame:
    runs = pd.read_csv(folder / "runs.csv")
    steps = pd.read_csv(folder / "steps.csv.gz")
    own = runs[
        runs.method.str.startswith("controller_")
        & ~runs.method.str.contains("replay")
        & (runs.lr_factor == 1.0)
        & (runs.role != "tune")
    ]
    rows = []
    for (task, opt), group in own.groupby(["task", "optimizer"]):
        curves = [
            np.log(steps[steps.config_hash == h].sort_values("step").lr.to_numpy())
            for h in group.config_hash
        ]
        n = min(map(len, curves))
        spread = float(np.stack([c[:n] for c in curves]).std(0)[: int(0.9 * n)].mean())
        climbs = np.stack(
            [log_climb(c[:n], b) for c, b in zip(curves, group.base_lr, strict=True)]
        ).mean(0)
        replay = runs[
            (runs.method == f"controller_replay_{opt}")
            & (runs.task == task)
            & (runs.role == "final")
        ].set_index("seed")
        mine = group.set_index("seed").final_val_loss
        ratios = (mine / replay.final_val_loss.reindex(mine.index)).to_numpy()
        rows.append(
            {
                "task": task,
                "optimizer": opt,
                "log_lr_spread": round(spread, 3),
                "climb_first_third": round(float(np.exp(climbs[: max(1, n // 3)].mean())), 2),
                "climb_run": round(float(np.exp(climbs[: int(0.9 * n)].mean())), 2),
                "vs_replay": " ".join(f"{x:.3f}" for x in ratios),
                "wins": int((ratios < 1).sum()),
                "seeds": len(ratios),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a bench folder with runs.csv and steps.csv.gz")
    table = reaction_table(parser.parse_args().folder)
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
