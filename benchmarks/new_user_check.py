"""The issue's "tried as a new user would" check: plain PyTorch loops on tasks outside every suite.

Issue 14 opened with this measurement of the controller shipped then: eight small training
scripts a user might write (a CNN with BatchNorm, MLPs with dropout and with weight decay, a
logistic regression, a GRU and a small causal transformer language model, a residual MLP with
LayerNorm, a regression on streaming data; 300 to 4,000 steps; SGD, Nesterov, RMSprop, Adam and
AdamW), each run with `LRController(opt, total_steps=T)` and `sched.step(loss)` at the user's
LR and at 0.1x and 10x of it, against `CosineAnnealingLR` over a grid of base LRs and against
Adam at 1e-3. This script redoes it for any controller files, so that the issue's headline
figures can be read for what ships (and for the controller the issue measured,
`tests/data/controller_v3_recursive.safetensors`) on the same runs.

The tasks are written here, as a user would write them, and none is a family of the train, val
or eval suites (`lrctl.tasks`): other data (scikit-learn generators, signals and a teacher
network generated here, stdlib modules that no suite reads, split into word-level tokens) and
other architectures. They are a report, never a choice: nothing in lrctl is tuned on them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/new_user_check.py \\
        --controller agents/default/controller.safetensors v9 \\
        --controller tests/data/controller_v3_recursive.safetensors v3 [--seeds 3] [--jobs 2]

Writes `results/new_user/`: `runs.csv` (one row per run), `README.md` (the issue's four
figures per controller, for short and long runs, and per-task tables) and `new_user.png`
(final validation loss against base LR per task: cosine's grid and each controller's cells).
A diverged run (non-finite loss) counts as +inf.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lrctl.atomic import atomic_path, atomic_write_text

GRID = (1 / 30, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Cosine's base LRs, as factors of the user's LR (x0.1, x1 and x10 are the controller's cells)."""
CELLS = (0.1, 1.0, 10.0)
ADAM_LR = 1e-3


# ---------------------------------------------------------------- data a user would have


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """80/20 train/validation split, features standardised on the train part."""
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    tr, va = perm[:cut], perm[cut:]
    mean, std = x[tr].mean(0), x[tr].std(0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    return (
        torch.from_numpy(x[tr]),
        torch.from_numpy(y[tr]),
        torch.from_numpy(x[va]),
        torch.from_numpy(y[va]),
    )


@cache
def _signals() -> tuple[torch.Tensor, ...]:
    """Noisy 1-D signals of 4 classes (a sine's frequency band, random phase and amplitude)."""
    rng = np.random.default_rng(7)
    n, length = 3000, 64
    y = rng.integers(0, 4, n)
    freq = (y + 1) * 1.5 + rng.uniform(-0.5, 0.5, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.5, n)
    x = amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t + phase[:, None])
    x = x + rng.normal(0, 0.8, x.shape)
    xtr, ytr, xva, yva = _split(x[:, None, :], y.astype(np.int64))
    return xtr, ytr, xva, yva


@cache
def _sklearn(name: str) -> tuple[torch.Tensor, ...]:
    from sklearn import datasets

    if name == "madelon":  # 3 classes, 10 informative of 40 features, 5% label noise
        x, y = datasets.make_classification(
            3000, 40, n_informative=10, n_redundant=10, n_classes=3, flip_y=0.05, random_state=3
        )
    elif name == "moons":
        x, y = datasets.make_moons(2000, noise=0.3, random_state=4)
    elif name == "sparse":  # a wide, mostly irrelevant design: logistic regression's home
        x, y = datasets.make_classification(
            4000, 200, n_informative=15, n_redundant=5, flip_y=0.03, random_state=5
        )
    elif name == "checkerboard":  # 3x3 checkerboard on the plane, plus 6 noise dimensions
        rng = np.random.default_rng(6)
        x = rng.uniform(-1.5, 1.5, (4000, 8))
        y = ((np.floor(x[:, 0] + 0.5) + np.floor(x[:, 1] + 0.5)) % 2).astype(np.int64)
    else:
        raise ValueError(name)
    return _split(np.asarray(x, np.float64), np.asarray(y, np.int64))


# Stdlib modules no suite reads (lrctl/tasks/data.py's four sets are disjoint from these).
TEXT_MODULES = (
    "logging/__init__.py", "unittest/mock.py", "http/client.py", "email/_header_value_parser.py",
    "collections/__init__.py", "functools.py", "random.py", "imaplib.py", "smtplib.py",
    "optparse.py", "gettext.py", "csv.py", "heapq.py", "bisect.py", "sched.py", "uuid.py",
)  # fmt: skip
VOCAB = 1000


@cache
def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Word-level tokens of the modules above (top 999 words and symbols, the rest one id):
    the first 90% to train on, the last 10% to validate on."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = "\n".join((root / m).read_text() for m in TEXT_MODULES if (root / m).exists())
    words = re.findall(r"\w+|[^\w\s]", text)
    ids = {w: i + 1 for i, (w, _) in enumerate(Counter(words).most_common(VOCAB - 1))}
    data = torch.tensor([ids.get(w, 0) for w in words], dtype=torch.int64)
    cut = int(0.9 * len(data))
    return data[:cut], data[cut:]


# ---------------------------------------------------------------- the tasks


@dataclass(frozen=True)
class Task:
    name: str
    what: str
    steps: int
    optimizer: str  # sgd, nesterov, rmsprop, adam, adamw
    user_lr: float
    batch: int


TASKS = (
    Task("bn_cnn_signals", "1-D CNN with BatchNorm, noisy signals", 400, "nesterov", 0.05, 32),
    Task("dropout_mlp", "MLP 2x128, dropout 0.3, 40 features", 500, "adam", 1e-3, 64),
    Task("wd_mlp_moons", "MLP 3x64, AdamW weight decay 0.05, moons", 300, "adamw", 1e-3, 32),
    Task("logreg_sparse", "logistic regression, 200 features", 600, "sgd", 0.1, 64),
    Task("ln_resmlp", "residual MLP with LayerNorm, checkerboard", 500, "rmsprop", 1e-3, 64),
    Task("gru_lm_words", "GRU word-level LM, stdlib tokens", 1200, "adamw", 2e-3, 16),
    Task("causal_tf_words", "pre-LN causal transformer LM, stdlib tokens", 2000, "adam", 1e-3, 16),
    Task("stream_regression", "MLP regression on a stream of fresh batches", 3000, "sgd_momentum", 0.01, 32),
)  # fmt: skip
SHORT = 600
"""Runs up to this many steps are "short" (the issue's two columns: 300-600 and 1,200-4,000)."""


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _GRULM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 64)
        self.gru = nn.GRU(64, 128, batch_first=True)
        self.out = nn.Linear(128, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(self.emb(x))[0])


class _CausalLM(nn.Module):
    def __init__(self, seq: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 64)
        self.pos = nn.Parameter(torch.zeros(seq, 64))
        layer = nn.TransformerEncoderLayer(
            64, 4, 128, dropout=0.0, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(64)
        self.out = nn.Linear(64, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.emb(x) + self.pos[: x.shape[1]], mask=self.mask, is_causal=True)
        return self.out(self.norm(h))


SEQ = 48


def _lm_batch(data: torch.Tensor, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    starts = torch.randint(0, len(data) - SEQ - 1, (batch,), generator=gen)
    window = torch.stack([data[s : s + SEQ + 1] for s in starts.tolist()])
    return window[:, :-1], window[:, 1:]


def build(task: Task, seed: int) -> tuple[nn.Module, Callable, Callable]:
    """The task's model (seeded), a `batch()` that draws the next training batch and returns
    its loss, and a `val_loss()` on the held-out data (a float; call it under `no_grad`)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    ce = nn.functional.cross_entropy
    if task.name in ("gru_lm_words", "causal_tf_words"):
        train, val = _tokens()
        model = _GRULM() if task.name == "gru_lm_words" else _CausalLM(SEQ)
        val_gen = torch.Generator().manual_seed(12345)
        val_batches = [_lm_batch(val, 64, val_gen) for _ in range(4)]

        def lm_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ce(model(x).reshape(-1, VOCAB), y.reshape(-1))

        return (
            model,
            lambda: lm_loss(*_lm_batch(train, task.batch, gen)),
            lambda: sum(float(lm_loss(x, y)) for x, y in val_batches) / len(val_batches),
        )
    if task.name == "stream_regression":
        teacher = torch.Generator().manual_seed(99)
        w1, w2 = torch.randn(10, 32, generator=teacher), torch.randn(32, 1, generator=teacher)

        def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.randn(n, 10, generator=g)
            return x, torch.tanh(x @ w1 / 3) @ w2 / 3 + 0.1 * torch.randn(n, 1, generator=g)

        xv, yv = sample(2000, torch.Generator().manual_seed(100))
        model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                              nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))  # fmt: skip
        mse = nn.functional.mse_loss

        def fresh_batch() -> torch.Tensor:
            x, y = sample(task.batch, gen)
            return mse(model(x), y)

        return model, fresh_batch, lambda: float(mse(model(xv), yv))
    data = {
        "bn_cnn_signals": _signals,
        "dropout_mlp": lambda: _sklearn("madelon"),
        "wd_mlp_moons": lambda: _sklearn("moons"),
        "logreg_sparse": lambda: _sklearn("sparse"),
        "ln_resmlp": lambda: _sklearn("checkerboard"),
    }[task.name]()
    xtr, ytr, xva, yva = data
    if task.name == "bn_cnn_signals":
        model = nn.Sequential(
            nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 4),
        )  # fmt: skip
    elif task.name == "dropout_mlp":
        model = nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Dropout(0.3),
                              nn.Linear(128, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 3))  # fmt: skip
    elif task.name == "wd_mlp_moons":
        model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                              nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))  # fmt: skip
    elif task.name == "logreg_sparse":
        model = nn.Linear(200, 2)
    else:
        model = nn.Sequential(nn.Linear(8, 64), *[_ResBlock(64) for _ in range(4)],
                              nn.LayerNorm(64), nn.Linear(64, 2))  # fmt: skip

    def batch() -> torch.Tensor:
        idx = torch.randint(0, len(xtr), (task.batch,), generator=gen)
        return ce(model(xtr[idx]), ytr[idx])

    return model, batch, lambda: float(ce(model(xva), yva))


# ---------------------------------------------------------------- one run


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer a user of the task would pick, at `lr`. Written out here rather than
    `lrctl.optimizers.make_optimizer`, the suites' sampled set: these loops stand for a user's
    own script (AdamW here with weight decay 0.05, not the suites' 0.01)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    raise ValueError(f"unknown optimizer {name!r}")


def run_one(task_name: str, seed: int, method: str, factor: float, controller: str | None) -> dict:
    """One training run, the README's loop: final validation loss (+inf once the training loss
    is non-finite: the run stops there) and, for a controller, LR / user LR at each tenth."""
    from lrctl import LRController  # in the worker, after its thread setting

    task = next(t for t in TASKS if t.name == task_name)
    model, batch, val_loss = build(task, seed)
    if method == "adam":
        lr, opt = ADAM_LR, torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    else:
        lr = task.user_lr * factor
        opt = make_optimizer(task.optimizer, model.parameters(), lr)
    sched = None
    if method == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=task.steps)
    elif method.startswith("controller"):
        sched = LRController(opt, total_steps=task.steps, controller=controller)
    tenths, diverged, start = [], False, time.perf_counter()
    for step in range(task.steps):
        if method.startswith("controller") and step % (task.steps // 10) == 0 and len(tenths) < 10:
            tenths.append(opt.param_groups[0]["lr"] / task.user_lr)
        loss = batch()
        if not math.isfinite(float(loss.detach())):
            diverged = True
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(sched, LRController):
            sched.step(loss)
        elif sched is not None:
            sched.step()
    final = math.inf
    if not diverged:
        model.eval()
        with torch.no_grad():
            final = val_loss()
        final = final if math.isfinite(final) else math.inf
    return {
        "task": task.name,
        "steps": task.steps,
        "optimizer": task.optimizer,
        "user_lr": task.user_lr,
        "method": method,
        "factor": factor,
        "base_lr": lr,
        "seed": seed,
        "final_val_loss": final,
        "diverged": diverged or not math.isfinite(final),
        "lr_tenths": " ".join(f"{v:.3g}" for v in tenths),
        "controller_file": controller or "",
        "wall_s": time.perf_counter() - start,
    }


def _worker_init() -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------- the figures


def _mean(frame: pd.DataFrame) -> float:
    values = frame["final_val_loss"].to_numpy(float)
    return math.inf if not len(values) or np.isinf(values).any() else float(values.mean())


def _not_worse(ctl: float, cos: float) -> bool:
    return ctl <= 1.01 * cos or (math.isinf(ctl) and math.isinf(cos))


def task_table(runs: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per task: cosine's best grid LR, the controller's cells against cosine's at the same LR,
    Adam at 1e-3, and the controller's median LR / user LR at each tenth of its x1 runs."""
    rows = []
    for task in (t for t in TASKS if t.name in set(runs.task)):
        t = runs[runs.task == task.name]
        cos = {f: _mean(t[(t.method == "cosine") & np.isclose(t.factor, f)]) for f in GRID}
        best = min(cos, key=lambda f: cos[f])
        ctl = {f: _mean(t[(t.method == label) & np.isclose(t.factor, f)]) for f in CELLS}
        seeds = sorted(t.seed.unique())
        ratios = []
        for seed in seeds:
            c = t[(t.method == label) & np.isclose(t.factor, 1.0) & (t.seed == seed)]
            b = t[(t.method == "cosine") & np.isclose(t.factor, best) & (t.seed == seed)]
            if len(c) and len(b):
                ratios.append(float(c.final_val_loss.iloc[0]) / float(b.final_val_loss.iloc[0]))
        x1 = t[(t.method == label) & np.isclose(t.factor, 1.0)]
        tenths = np.array([[float(v) for v in s.split()] for s in x1.lr_tenths if s])
        cell_div = [
            f for f in CELLS
            if t[(t.method == label) & np.isclose(t.factor, f)].diverged.any()
            and not t[(t.method == "cosine") & np.isclose(t.factor, f)].diverged.any()
        ]  # fmt: skip
        rows.append({
            "task": task.name,
            "steps": task.steps,
            "optimizer": task.optimizer,
            "user LR": task.user_lr,
            "cosine best LR": f"x{best:.3g}",
            "cosine best": cos[best],
            **{f"ctl x{f:g}": ctl[f] for f in CELLS},
            **{f"cos x{f:g}": cos[f] for f in CELLS},
            "Adam 1e-3": _mean(t[t.method == "adam"]),
            "ctl(x1) / cos best": float(np.median(ratios)) if ratios else math.nan,
            "ratios": ratios,
            "cells <= 1.01 cos": sum(_not_worse(ctl[f], cos[f]) for f in CELLS),
            "worst <= cos worst": max(ctl.values()) <= max(cos[f] for f in CELLS),
            "diverged where cos finite": ", ".join(f"x{f:g}" for f in cell_div) or "-",
            "beats Adam": ctl[1.0] < _mean(t[t.method == "adam"]),
            "LR / user LR at tenths (x1, median)": " ".join(
                f"{v:.2g}" for v in np.median(tenths, axis=0)
            ) if len(tenths) else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The issue's four figures (and divergences), for short and long runs."""
    out = {}
    for name, part in (("runs of 300-600 steps", table[table.steps <= SHORT]),
                       ("runs of 1,200-4,000 steps", table[table.steps > SHORT])):  # fmt: skip
        if part.empty:
            continue
        ratios = [r for rs in part.ratios for r in rs]
        n = len(part)
        out[name] = {
            "controller at the user's LR / cosine at its best LR, median over (task, seed)":
                f"{np.median(ratios):.3f}",
            "cells (x0.1, x1, x10) where controller <= 1.01 x cosine at the same LR":
                f"{int(part['cells <= 1.01 cos'].sum())} / {3 * n}",
            "tasks where controller at x1 beats Adam at 1e-3": f"{int(part['beats Adam'].sum())} / {n}",
            "tasks where controller's worst cell <= cosine's worst":
                f"{int(part['worst <= cos worst'].sum())} / {n}",
            "tasks with a divergence where cosine stays finite":
                f"{int((part['diverged where cos finite'] != '-').sum())} / {n}",
        }  # fmt: skip
    return pd.DataFrame(out)


# ---------------------------------------------------------------- plot, main


def plot(runs: pd.DataFrame, labels: list[str], path: Path) -> None:
    """Final validation loss against base LR / user LR, one panel per task."""
    from lrctl.plotting import pyplot, save_png

    fig, axes = pyplot().subplots(2, 4, figsize=(16, 7.5))
    for ax, task in zip(axes.flat, TASKS, strict=True):
        t = runs[runs.task == task.name]
        finite = t.final_val_loss[np.isfinite(t.final_val_loss)]
        top = float(finite.max()) * 1.15 if len(finite) else 1.0
        cos = [min(_mean(t[(t.method == "cosine") & np.isclose(t.factor, f)]), top) for f in GRID]
        ax.plot(GRID, cos, "o-", color="0.4", label="cosine (grid)")
        for i, label in enumerate(labels):
            ctl = [min(_mean(t[(t.method == label) & np.isclose(t.factor, f)]), top) for f in CELLS]
            ax.plot(CELLS, ctl, "s--", color=f"C{i}", label=label.removeprefix("controller "))
        ax.axhline(min(_mean(t[t.method == "adam"]), top), color="C3", ls=":", label="Adam 1e-3")
        ax.set_xscale("log")
        ax.set_title(f"{task.name} ({task.optimizer}, {task.steps} steps)", fontsize=9)
        ax.set_xlabel("base LR / user's LR")
        ax.set_ylabel("final val loss (diverged: top)")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(
        "Plain PyTorch loops outside every suite: controller at its cells vs cosine's grid"
    )
    fig.tight_layout()
    save_png(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--controller", nargs=2, action="append", metavar=("FILE", "LABEL"),
        help="a controller file and its label (repeatable; default: the shipped one as 'shipped')",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    parser.add_argument("--tasks", nargs="+", help="a subset of the tasks (default: all eight)")
    parser.add_argument(
        "--out", type=Path, default=Path("results/new_user"),
        help="output folder: runs.csv, README.md, new_user.png (default: results/new_user)",
    )  # fmt: skip
    parser.add_argument(
        "--report-only", action="store_true",
        help="rewrite README.md and the plot from OUT/runs.csv, without running anything",
    )  # fmt: skip
    return parser.parse_args(argv)


def collect(jobs: list[tuple], n_jobs: int) -> pd.DataFrame:
    """Every run of `jobs` (`run_one`'s arguments), `n_jobs` at a time, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="runs", file=sys.stderr)
    rows = []
    if n_jobs == 1:  # in this process
        _worker_init()
        results = (run_one(*job) for job in jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(n_jobs, initializer=_worker_init)
        results = (fut.result() for fut in [pool.submit(run_one, *job) for job in jobs])
    for row in results:
        rows.append(row)
        bar.update()
    bar.close()
    if pool:
        pool.shutdown()
    return pd.DataFrame(rows)


def write_report(runs: pd.DataFrame, out: Path, command: str) -> None:
    """OUT/README.md (the issue's figures per controller, then per task) and OUT/new_user.png."""
    controllers = (
        runs[runs.method.str.startswith("controller")]
        .drop_duplicates("method")[["method", "controller_file"]]
        .itertuples(index=False)
    )
    controllers = list(controllers)
    lines = [
        "# Plain PyTorch loops outside every suite (issue 14's first measurement, redone)",
        "",
        f"`{command}`: {runs.task.nunique()} tasks, seeds {sorted(runs.seed.unique().tolist())}, "
        f"{len(runs)} runs ({runs.wall_s.sum() / 60:.1f} min of training summed over the runs, "
        "each on one core). Each cell's loss is the mean final validation loss over the seeds "
        "(+inf if any diverged); cosine's best LR is the point of its grid (x1/30 to x30 of the "
        "user's LR) with the lowest mean. Nothing is tuned on these tasks. Plot: "
        "[new_user.png](new_user.png).",
        "",
        "Tasks (none is a family of the train, val or eval suites):",
        "",
        *(
            f"- `{t.name}`: {t.what}; {t.optimizer} at {t.user_lr:g}, batch {t.batch}, "
            f"{t.steps} steps"
            for t in TASKS
            if t.name in set(runs.task)
        ),
        "",
    ]
    for method, path in controllers:
        table = task_table(runs, method)
        lines += [f"## {method.removeprefix('controller ')} (`{path}`)", ""]
        lines += [headline(table).to_markdown(), ""]
        lines += [table.drop(columns=["ratios"]).to_markdown(index=False, floatfmt=".4g"), ""]
        print(f"\n{method}:\n{headline(table).to_string()}")
    atomic_write_text(out / "README.md", "\n".join(lines))
    plot(runs, [m for m, _ in controllers], out / "new_user.png")
    print(f"\nwrote {out}/README.md and new_user.png")


def main(argv: list[str] | None = None) -> int:
    from lrctl.controller_file import ControllerFileError, load_controller
    from lrctl.resources import DEFAULT_CONTROLLER, data_path

    args = parse_args(argv)
    command = " ".join(["python benchmarks/new_user_check.py", *(argv or sys.argv[1:])])
    if args.report_only:
        if not (args.out / "runs.csv").is_file():
            print(f"error: --report-only needs {args.out}/runs.csv; run without it first",
                  file=sys.stderr)  # fmt: skip
            return 2
        recorded = args.out / "command.txt"  # the command that made runs.csv
        command = recorded.read_text().strip() if recorded.is_file() else command
        write_report(pd.read_csv(args.out / "runs.csv", keep_default_na=False), args.out, command)
        return 0
    controllers = args.controller or [[str(data_path(DEFAULT_CONTROLLER)), "shipped"]]
    for path, _label in controllers:
        try:
            load_controller(path)
        except (ControllerFileError, OSError) as err:
            print(f"error: --controller {path}: {err}", file=sys.stderr)
            return 2
    names = [t.name for t in TASKS]
    tasks = args.tasks or names
    unknown = sorted(set(tasks) - set(names))
    if unknown or args.seeds < 1 or args.jobs < 1:
        print(
            f"error: unknown task(s) {unknown} (choose from {', '.join(names)})" if unknown
            else "error: --seeds and --jobs must be at least 1",
            file=sys.stderr,
        )  # fmt: skip
        return 2
    jobs = []
    for task in tasks:
        for seed in range(args.seeds):
            jobs += [(task, seed, "cosine", f, None) for f in GRID]
            jobs.append((task, seed, "adam", 1.0, None))
            jobs += [
                (task, seed, f"controller {lab}", f, p) for p, lab in controllers for f in CELLS
            ]
    runs = collect(jobs, args.jobs)
    with atomic_path(args.out / "runs.csv") as tmp:
        runs.to_csv(tmp, index=False)
    atomic_write_text(args.out / "command.txt", command + "\n")
    write_report(runs, args.out, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
