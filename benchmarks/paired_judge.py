#!/usr/bin/env python
"""A candidate controller against the shipped one on paired runs, with a confidence interval.

    benchmarks/paired_judge.py --candidate FULL [SHORT ...] --shipped FULL [SHORT ...]

Each folder is one `benchmarks/bench_controller.sh val FILE OUT` output (OUT or OUT/val), the
i-th candidate folder judged on the same suite, horizon and seeds as the i-th shipped one (e.g.
full val, then val at 300 steps). Why this exists: lever_score.py counts thresholds (G1-G5)
that three evaluation seeds flip by noise (v9 scored 10 at 3 seeds and 6 at 5 on the same
baselines, 2026-12-04). Here every controller run of the candidate (task, optimizer, base LR
factor, seed) is paired with the shipped controller's run on the same key, so seed-to-seed
variation that both share cancels, and the verdict is a 95% interval on the geometric mean of
candidate / shipped final validation loss, not a count:

- per run, d = log(candidate / shipped), clipped to +-log(``--cap``); a run that diverged
  (non-finite loss) counts as ``--cap`` times the other's loss (both diverged: d = 0);
- per cell (folder, task, optimizer, factor), the mean of d over seeds;
- the effect is the mean over cells; its interval a two-stage bootstrap (cells with
  replacement, then seeds within each drawn cell), so both the task mix and the seeds count.

Verdict: "candidate better" when the interval lies below 1, "candidate worse" above 1,
"undecided" otherwise. Each controller's geometric mean ratio to cosine at the same base LR
(the continuous form of G2) is printed beside it, over the same runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["task", "optimizer", "lr_factor", "seed"]
PAIRED_ROLES = ("final", "sweep")  # the reported seeds; "tune" seeds are the replay's curve


def runs_csv(folder: Path) -> Path:
    for candidate in (folder / "runs.csv", folder / "val" / "runs.csv"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no runs.csv in {folder} or {folder / 'val'}: pass a folder written by "
        "benchmarks/bench_controller.sh val FILE OUT"
    )


def controller_runs(runs: pd.DataFrame, schedule: str = "controller") -> pd.Series:
    """Final validation loss of one method kind's reported runs, indexed by KEY."""
    sel = runs[(runs.schedule == schedule) & runs.role.isin(PAIRED_ROLES)]
    val = sel.set_index(KEY)["final_val_loss"].astype(float)
    return val[~val.index.duplicated()]


def log_ratio(num: np.ndarray, den: np.ndarray, cap: float) -> np.ndarray:
    """log(num / den) per run, clipped to +-log(cap) so one blown-up run cannot outweigh a
    cell; a non-finite side counts as ``cap`` times the other."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    fn, fd = np.isfinite(num), np.isfinite(den)
    out = np.zeros_like(num)
    both = fn & fd
    with np.errstate(divide="ignore", invalid="ignore"):
        out[both] = np.log(num[both]) - np.log(den[both])
    out[~fn & fd] = math.log(cap)
    out[fn & ~fd] = -math.log(cap)
    return np.clip(out, -math.log(cap), math.log(cap))


def paired_frame(cand: pd.Series, ship: pd.Series, horizon: str, cap: float) -> pd.DataFrame:
    """One row per key both controllers ran: the two losses and d = log(cand / shipped)."""
    both = cand.index.intersection(ship.index)
    frame = pd.DataFrame({"candidate": cand[both], "shipped": ship[both]}).reset_index()
    frame.insert(0, "horizon", horizon)
    frame["d"] = log_ratio(frame.candidate, frame.shipped, cap)
    return frame


def cell_groups(frame: pd.DataFrame) -> list[np.ndarray]:
    """The d values of each (horizon, task, optimizer, factor) cell, over its seeds."""
    cols = ["horizon", "task", "optimizer", "lr_factor"]
    return [g.d.to_numpy() for _, g in frame.groupby(cols, sort=True)]


def effect(cells: list[np.ndarray]) -> float:
    return float(np.mean([c.mean() for c in cells]))


def bootstrap_interval(
    cells: list[np.ndarray], n: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Two-stage bootstrap of the mean over cells of each cell's mean d (cells with
    replacement, then seeds within each drawn cell): the (low, high) percentile interval."""
    rng = np.random.default_rng(seed)
    k = len(cells)
    stats = np.empty(n)
    for b in range(n):
        picks = rng.integers(0, k, size=k)
        stats[b] = np.mean([rng.choice(cells[i], size=len(cells[i])).mean() for i in picks])
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass
class PairedVerdict:
    runs: int
    cells: int
    ratio: float  # geometric mean candidate / shipped
    low: float
    high: float
    candidate_lower: int  # runs where the candidate's loss is lower
    ties: int
    candidate_vs_cosine: float  # geometric mean controller / cosine at the same LR
    shipped_vs_cosine: float
    verdict: str


def verdict_of(low: float, high: float) -> str:
    if high < 1.0:
        return "candidate better"
    if low > 1.0:
        return "candidate worse"
    return "undecided"


def judge(
    candidate: list[Path],
    shipped: list[Path],
    cap: float = 10.0,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[PairedVerdict, pd.DataFrame]:
    """Pair the i-th candidate folder with the i-th shipped folder; return the verdict and the
    per-cell table (geometric mean ratios over seeds)."""
    if len(candidate) != len(shipped) or not candidate:
        raise ValueError(
            f"give as many --candidate folders as --shipped ones (got {len(candidate)} and "
            f"{len(shipped)}): the i-th of each is the same suite and horizon"
        )
    frames, vs_cos = [], {"candidate": [], "shipped": []}
    names = [d.parent.name if d.name == "val" else d.name for d in candidate]
    for i, (c_dir, s_dir) in enumerate(zip(candidate, shipped, strict=True)):
        c_runs, s_runs = (pd.read_csv(runs_csv(d)) for d in (c_dir, s_dir))
        label = names[i] if len(set(names)) == len(names) else f"{i}:{names[i]}"
        c_ctrl, s_ctrl = controller_runs(c_runs), controller_runs(s_runs)
        frame = paired_frame(c_ctrl, s_ctrl, label, cap)
        if frame.empty:
            raise ValueError(
                f"{c_dir} and {s_dir} share no controller run (task, optimizer, factor, "
                "seed): bench both on the same suite, seeds and --steps"
            )
        frames.append(frame)
        paired = frame.set_index(KEY).index
        for name, ctrl, runs in (("candidate", c_ctrl, c_runs), ("shipped", s_ctrl, s_runs)):
            cos = controller_runs(runs, "cosine")
            keys = paired.intersection(cos.index)
            vs_cos[name].append(log_ratio(ctrl[keys].to_numpy(), cos[keys].to_numpy(), cap))
    frame = pd.concat(frames, ignore_index=True)
    cells = cell_groups(frame)
    low, high = bootstrap_interval(cells, n_boot, seed)
    geo = lambda parts: float(np.exp(np.mean(np.concatenate(parts))))  # noqa: E731
    result = PairedVerdict(
        runs=len(frame),
        cells=len(cells),
        ratio=math.exp(effect(cells)),
        low=math.exp(low),
        high=math.exp(high),
        candidate_lower=int((frame.d < 0).sum()),
        ties=int((frame.d == 0).sum()),
        candidate_vs_cosine=geo(vs_cos["candidate"]),
        shipped_vs_cosine=geo(vs_cos["shipped"]),
        verdict=verdict_of(math.exp(low), math.exp(high)),
    )
    table = (
        frame.groupby(["horizon", "task", "optimizer", "lr_factor"], sort=True)
        .agg(
            seeds=("d", "size"),
            ratio=("d", lambda d: float(np.exp(d.mean()))),
            candidate_lower=("d", lambda d: f"{int((d < 0).sum())}/{len(d)}"),
        )
        .reset_index()
    )
    return result, table


def markdown(result: PairedVerdict, table: pd.DataFrame) -> str:
    shown = table.assign(
        lr_factor=table.lr_factor.map(lambda f: f"x{f:g}"),
        ratio=table.ratio.map(lambda r: f"{r:.3f}"),
    )
    return "\n".join(
        [
            f"**{result.verdict}**: geometric mean candidate / shipped final validation loss "
            f"{result.ratio:.3f} (95% interval {result.low:.3f}-{result.high:.3f}) over "
            f"{result.runs} paired runs in {result.cells} cells; the candidate is lower in "
            f"{result.candidate_lower} runs"
            + (f" ({result.ties} ties)" if result.ties else "")
            + f". Against cosine at the same base LR (geometric mean): candidate "
            f"{result.candidate_vs_cosine:.3f}, shipped {result.shipped_vs_cosine:.3f}.",
            "",
            shown.to_markdown(index=False),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: benchmarks/paired_judge.py --candidate runs/judge/L31s0_seeds5 "
        "runs/judge/L31s0_seeds5_short300 --shipped runs/judge/v9_seeds5 "
        "runs/judge/v9_seeds5_short300",
    )
    parser.add_argument(
        "--candidate",
        type=Path,
        nargs="+",
        required=True,
        help="bench folders of the candidate (one per suite/horizon)",
    )
    parser.add_argument(
        "--shipped",
        type=Path,
        nargs="+",
        required=True,
        help="bench folders of the shipped controller, in the same order",
    )
    parser.add_argument(
        "--cap",
        type=float,
        default=10.0,
        help="a run's ratio is clipped to [1/cap, cap]; a diverged run counts as cap "
        "times the other's loss (default 10)",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", type=Path, help="also write the verdict as JSON here")
    args = parser.parse_args(argv)
    if args.cap <= 1 or args.bootstrap < 100:
        parser.error("--cap must be above 1 and --bootstrap at least 100")
    try:
        result, table = judge(args.candidate, args.shipped, args.cap, args.bootstrap, args.seed)
    except (FileNotFoundError, ValueError, KeyError, pd.errors.ParserError) as err:
        print(f"paired_judge: {err}", file=sys.stderr)
        return 2
    print(markdown(result, table))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
