"""The scripted policies on LRControl-v1: mean return and divergence rate per policy.

Every policy plays the same seeded episodes (seed i draws the i-th run from the suite), one
thread, so the numbers are comparable between policies and reproducible.

    .venv/bin/python benchmarks/scripted_policies.py [--suite train] [--episodes 50] [--csv out.csv]

Prints one row per policy (mean return, its standard error, divergence rate, mean final LR
as a multiple of the base LR), then the mean return per family.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lrctl.env import DIVERGENCE_RETURN, LRControlEnv
from lrctl.policies import SCRIPTED, make_policy, rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="train", help="suite name or path (default: train)")
    parser.add_argument("--episodes", type=int, default=50, help="seeds 0 .. episodes-1")
    parser.add_argument("--csv", default=None, help="also write one row per episode here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    env = LRControlEnv(args.suite)
    rows = []
    start = time.perf_counter()
    with tqdm(total=len(SCRIPTED) * args.episodes, desc="episodes", unit="ep") as bar:
        for name in SCRIPTED:
            policy = make_policy(name, env.action_spec)
            for seed in range(args.episodes):
                r = rollout(env, policy, seed)
                first = r.infos[0]
                rows.append(
                    {
                        "policy": name,
                        "seed": seed,
                        "family": first["family"],
                        "optimizer": first["optimizer"],
                        "task": first["task"],
                        "return": r.episode_return,
                        "diverged": r.diverged,
                        "decisions": r.length,
                        "final_lr_ratio": r.lrs[-1] / first["base_lr"],
                    }
                )
                bar.update()
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)

    summary = frame.groupby("policy", sort=False).agg(
        mean_return=("return", "mean"),
        sem=("return", lambda x: x.std(ddof=1) / math.sqrt(len(x))),
        diverged=("diverged", "mean"),
        final_lr_ratio=("final_lr_ratio", lambda x: float(np.exp(np.log(x).mean()))),
    )
    per_family = frame.pivot_table(
        index="family", columns="policy", values="return", aggfunc="mean", sort=False
    )[list(SCRIPTED)]
    counts = frame[frame.policy == "constant"].groupby("family", sort=False).size()
    per_family.insert(0, "episodes", counts)

    pd.set_option("display.width", 120)
    print(
        f"\n{args.episodes} episodes from suite {env.suite.name!r} ({env.suite.path}), "
        f"K = {env.action_spec.interval}, m_max = {env.action_spec.max_multiplier}, "
        f"divergence return = {DIVERGENCE_RETURN:g}; {time.perf_counter() - start:.0f} s\n"
    )
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nmean return per family:")
    print(per_family.to_string(float_format=lambda v: f"{v:.3f}"))
    wins = frame.pivot(index="seed", columns="policy", values="return").pipe(
        lambda p: (p["cosine"] > p["constant"]).mean()
    )
    print(f"\ncosine beats constant on {wins:.0%} of the episodes")


if __name__ == "__main__":
    main()
