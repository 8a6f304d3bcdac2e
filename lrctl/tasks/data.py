"""Offline data: scikit-learn's bundled data sets and the Python standard library's source.

Nothing here downloads. Splits are fixed per data set (a fixed split seed), so the test split of
a family never changes between episodes and never reaches a reward.
"""

from __future__ import annotations

import sysconfig
from functools import cache
from pathlib import Path

import numpy as np
import torch

from lrctl.tasks.base import Split

SPLIT_SEED = 20_241_124
"""Seed of every train/val/test split; episode seeds never change which rows are test rows."""

VOCAB_SIZE = 128
"""Character LM vocabulary: ASCII code points; anything else maps to 0."""

# Stdlib modules whose source is the char-LM text. Two disjoint sets: the train suite's LM reads
# one, the eval suite's LM the other ("other data"). Modules missing on a Python version are
# skipped; each set is several hundred KB on every supported version.
TRAIN_TEXT_MODULES = ("argparse", "difflib", "inspect", "typing", "dataclasses", "textwrap")
EVAL_TEXT_MODULES = ("ast", "fractions", "shutil", "tarfile", "pathlib", "calendar")


def _split_indices(n: int, val_frac: float, test_frac: float) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = max(1, round(n * test_frac))
    n_val = max(1, round(n * val_frac))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


@cache
def tabular(name: str) -> tuple[Split, Split, Split]:
    """A scikit-learn bundled data set, standardised with train-split statistics.

    Classification targets are int64 class indices; regression targets (diabetes) are
    standardised float32 columns of shape [n, 1].
    """
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(loaders)}")
    bunch = loaders[name]()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    train_idx, val_idx, test_idx = _split_indices(len(x), 0.15, 0.15)
    mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    if name == "diabetes":
        y = y.astype(np.float64)
        y = ((y - y[train_idx].mean()) / y[train_idx].std()).astype(np.float32)[:, None]
        y_t = torch.from_numpy(y)
    else:
        y_t = torch.from_numpy(y.astype(np.int64))
    x_t = torch.from_numpy(x)
    return tuple(Split(x_t[i], y_t[i]) for i in (train_idx, val_idx, test_idx))  # type: ignore[return-value]


def _module_source(stdlib: Path, module: str) -> str:
    for candidate in (stdlib / f"{module}.py", stdlib / module / "__init__.py"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace")
    return ""


@cache
def stdlib_text(which: str) -> torch.Tensor:
    """The concatenated source of one stdlib module set as ASCII codes (int64, 1-D)."""
    modules = {"train": TRAIN_TEXT_MODULES, "eval": EVAL_TEXT_MODULES}[which]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "\n".join(_module_source(stdlib, m) for m in modules)
    if len(text) < 50_000:
        raise RuntimeError(
            f"found only {len(text)} characters of Python stdlib source under {stdlib}; "
            "the char-LM tasks need the standard library's .py files (a full CPython install)"
        )
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).copy()
    codes[codes >= VOCAB_SIZE] = 0
    return torch.from_numpy(codes.astype(np.int64))


@cache
def char_windows(
    which: str, context: int, n_val: int = 512, n_test: int = 1024
) -> tuple[Split, ...]:
    """Next-character windows from stdlib text: x = `context` codes, y = the next `context`
    codes (shifted by one). Contiguous split: the first 80% of the text trains; validation and
    test windows come from the disjoint last 20%, so no window overlaps another split."""
    codes = stdlib_text(which)
    cut = int(len(codes) * 0.8)
    cut2 = int(len(codes) * 0.9)

    def windows(segment: torch.Tensor, count: int | None, seed: int) -> Split:
        n = len(segment) - context - 1
        if count is None:
            starts = torch.arange(0, n, context // 2)
        else:
            g = torch.Generator().manual_seed(seed)
            starts = torch.randint(0, n, (count,), generator=g)
        idx = starts[:, None] + torch.arange(context + 1)[None, :]
        w = segment[idx]
        return Split(w[:, :-1].contiguous(), w[:, 1:].contiguous())

    return (
        windows(codes[:cut], None, 0),
        windows(codes[cut:cut2], n_val, SPLIT_SEED),
        windows(codes[cut2:], n_test, SPLIT_SEED + 1),
    )
