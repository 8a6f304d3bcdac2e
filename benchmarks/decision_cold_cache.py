"""Why a controller decision costs more inside a training loop than alone: cold caches.

Times (median over 300 calls, one thread) the shipped controller's policy forward pass
(`ControllerWeights.act`, numpy) and a torch version of it, alone and right after ten
training steps of a small MLP, plus one 1x64 @ 64x64 numpy matmul and one np.tanh. Run with
the machine otherwise idle:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decision_cold_cache.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lrctl.controller_file import load_controller
from lrctl.features import obs_dim
from lrctl.resources import DEFAULT_CONTROLLER, data_path


def median_us(fn: Callable[[], object], between: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(300):
        if between is not None:
            between()
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e3


def main() -> None:
    torch.set_num_threads(1)
    weights = load_controller(data_path(DEFAULT_CONTROLLER))
    obs = np.random.default_rng(0).normal(size=(1, obs_dim(weights.feature_version)))
    layers = [(w.float(), b.float()) for w, b in weights.layers]
    mean = weights.obs_mean.float()
    std = torch.sqrt(weights.obs_var.float() + weights.obs_epsilon)

    def act_torch() -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(obs, dtype=np.float32))
            x = ((x - mean) / std).clamp_(-weights.obs_clip, weights.obs_clip)
            for i, (w, b) in enumerate(layers):
                x = F.linear(x, w, b)
                x = torch.tanh(x) if i < len(layers) - 1 else x
            return x.clamp_(-1, 1).numpy()

    assert np.allclose(act_torch(), weights.act(obs), atol=1e-5)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )  # fmt: skip
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def ten_steps() -> None:
        for _ in range(10):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()

    a, b = np.zeros((1, 64), np.float32), np.zeros((64, 64), np.float32)
    cases = {
        "policy forward, numpy (shipped)": lambda: weights.act(obs),
        "policy forward, torch": act_torch,
        "one 1x64 @ 64x64 numpy matmul": lambda: a @ b,
        "one np.tanh on 64 numbers": lambda: np.tanh(a),
    }
    print(f"{'':34s} {'alone':>9s} {'after 10 training steps':>24s}   (median us)")
    for name, fn in cases.items():
        print(f"{name:34s} {median_us(fn):9.1f} {median_us(fn, ten_steps):24.1f}")


if __name__ == "__main__":
    main()
