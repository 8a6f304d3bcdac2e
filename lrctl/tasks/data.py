"""Offline data: scikit-learn's bundled data sets, generated data, and the Python standard
library's source.

Nothing here downloads. Splits are fixed per data set (a fixed split seed), so the test split of
a family never changes between episodes and never reaches a reward.

Two regimes:

- **small data** (`tabular`, `synthetic_small`): a few thousand rows or fewer; a long run
  overfits, and the validation loss turns up once the training loss keeps falling;
- **large data** (`teacher`, `synthetic_large`, `textures`, the big stdlib text set): a training
  split so large that the longest horizon of its family sees each example about once or a few
  times, so the validation loss keeps falling while the LR is right (the streaming regime of
  most real training).
"""

from __future__ import annotations

import itertools
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

# Stdlib modules whose source is the char-LM text. Four disjoint sets, one per role: the train
# suite's LMs read "train", the eval suite's GRU "eval" and its transformer "eval_lm" (the
# largest: about 1 MB), the val suite's LMs "val" ("other data" for each). Modules missing on a
# Python version are skipped; each set is several hundred KB on every supported version.
TRAIN_TEXT_MODULES = ("argparse", "difflib", "inspect", "typing", "dataclasses", "textwrap")
EVAL_TEXT_MODULES = ("ast", "fractions", "shutil", "tarfile", "pathlib", "calendar")
VAL_TEXT_MODULES = ("pydoc", "doctest", "subprocess", "enum", "locale")
EVAL_LM_TEXT_MODULES = (
    "_pydecimal", "turtle", "zipfile", "datetime", "mailbox", "pickletools", "ipaddress",
    "configparser", "threading", "statistics",
)  # fmt: skip
TEXT_MODULES = {
    "train": TRAIN_TEXT_MODULES,
    "eval": EVAL_TEXT_MODULES,
    "val": VAL_TEXT_MODULES,
    "eval_lm": EVAL_LM_TEXT_MODULES,
}
"""The stdlib text sets by name (`stdlib_text`, `char_windows`)."""


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
    if which not in TEXT_MODULES:
        raise ValueError(f"unknown text set {which!r}; choose one of: {', '.join(TEXT_MODULES)}")
    modules = TEXT_MODULES[which]
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


# --- Generated data --------------------------------------------------------------------------
# Every generator is a pure function of its name (and SPLIT_SEED): the same rows on every call,
# every machine and every run; cached, since a large split takes a fraction of a second to make.

LARGE_TRAIN = 200_000
"""Training rows of a large generated data set: a 5,000-step run at batch 32 sees each about
0.8 times, at batch 64 about 1.6 times."""
GENERATED_VAL = 2048
"""Validation rows of a generated data set (read every decision by the env: kept small)."""
GENERATED_TEST = 4096


def _standardise(
    x: np.ndarray, y: np.ndarray, n_train: int, regression: bool
) -> tuple[Split, Split, Split]:
    """Rows [0, n_train) train, the next GENERATED_VAL validate, the rest test; inputs (and a
    regression target) standardised with train-split statistics."""
    xt = x[:n_train]
    x = ((x - xt.mean(0)) / (xt.std(0) + 1e-8)).astype(np.float32)
    if regression:
        yt = y[:n_train]
        y_t = torch.from_numpy(((y - yt.mean()) / yt.std()).astype(np.float32)[:, None])
    else:
        y_t = torch.from_numpy(y.astype(np.int64))
    x_t = torch.from_numpy(x)
    cut = (n_train, n_train + GENERATED_VAL)
    return (
        Split(x_t[: cut[0]], y_t[: cut[0]]),
        Split(x_t[cut[0] : cut[1]], y_t[cut[0] : cut[1]]),
        Split(x_t[cut[1] :], y_t[cut[1] :]),
    )


def _teacher_net(rng: np.random.Generator, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Weights of a random tanh network (He-scaled Gaussian matrices, no biases)."""
    return [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in itertools.pairwise(sizes)]


def _teacher_out(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x
    for w in weights[:-1]:
        h = np.tanh(2.0 * h @ w)  # gain 2: a clearly nonlinear teacher
    return h @ weights[-1]


TEACHERS = {
    # name: (input dim, teacher hidden widths, outputs (classes; 1: regression), noise, seed)
    "teacher_cls": (32, (128, 64), 10, 0.0, 1),
    "teacher_reg": (16, (64, 64), 1, 0.3, 2),
}


@cache
def teacher(name: str) -> tuple[Split, Split, Split]:
    """Teacher-student data, large: Gaussian inputs, targets from a fixed random tanh network.

    - `teacher_cls`: 32 inputs, 10 classes; each label is *sampled* from the softmax of the
      teacher's logits (scaled to an entropy well above 0), so the Bayes loss is positive and
      a student's validation loss keeps falling towards it while it learns;
    - `teacher_reg`: 16 inputs, a scalar target (standardised) plus Gaussian noise of 0.3 of
      its standard deviation (MSE floor about 0.08).

    LARGE_TRAIN training rows, GENERATED_VAL validation, GENERATED_TEST test.
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; choose one of: {', '.join(TEACHERS)}")
    dim, hidden, outputs, noise, seed = TEACHERS[name]
    rng = np.random.default_rng([SPLIT_SEED, seed])
    weights = _teacher_net(rng, (dim, *hidden, outputs))
    n = LARGE_TRAIN + GENERATED_VAL + GENERATED_TEST
    x = rng.standard_normal((n, dim))
    out = _teacher_out(weights, x)
    if outputs == 1:
        y = out[:, 0] / out[:, 0].std()
        y = y + noise * rng.standard_normal(n)
        return _standardise(x, y, LARGE_TRAIN, regression=True)
    logits = 2.5 * out / out.std()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)  # one draw from each row's softmax
    return _standardise(x, y, LARGE_TRAIN, regression=False)


SYNTHETIC = ("friedman1", "friedman2", "hastie", "classification", "spirals")


@cache
def synthetic(name: str) -> tuple[Split, Split, Split]:
    """scikit-learn's data generators and a spiral set, at fixed seeds.

    | name           | generator                        | task                   | train rows |
    | -------------- | -------------------------------- | ---------------------- | ---------- |
    | friedman1      | make_friedman1, noise 1          | regression, 10 inputs  | 200,000    |
    | friedman2      | make_friedman2, noise 10         | regression, 4 inputs   | 200,000    |
    | hastie         | make_hastie_10_2                 | 2 classes, 10 inputs   | 6,000      |
    | classification | make_classification, 5% flipped | 5 classes, 24 inputs   | 2,500      |
    | spirals        | three noisy spiral arms, 2 turns | 3 classes, 2 inputs    | 50,000     |

    The first two are large (streaming regime), the hastie and classification sets small
    (a long run overfits), the spirals in between (a hard boundary learnt slowly).
    """
    from sklearn import datasets

    seed = SPLIT_SEED + SYNTHETIC.index(name) if name in SYNTHETIC else 0
    if name == "friedman1":
        n_train = LARGE_TRAIN
        x, y = datasets.make_friedman1(n_train + GENERATED_VAL + GENERATED_TEST, n_features=10,
                                       noise=1.0, random_state=seed)  # fmt: skip
        return _standardise(x, y, n_train, regression=True)
    if name == "friedman2":
        n_train = LARGE_TRAIN
        x, y = datasets.make_friedman2(n_train + GENERATED_VAL + GENERATED_TEST, noise=10.0,
                                       random_state=seed)  # fmt: skip
        return _standardise(x, y, n_train, regression=True)
    if name == "hastie":
        n_train = 6000
        x, y = datasets.make_hastie_10_2(n_train + GENERATED_VAL + GENERATED_TEST,
                                         random_state=seed)  # fmt: skip
        return _standardise(x, (y > 0).astype(np.int64), n_train, regression=False)
    if name == "classification":
        n_train = 2500
        x, y = datasets.make_classification(
            n_train + GENERATED_VAL + GENERATED_TEST, n_features=24, n_informative=12,
            n_redundant=6, n_classes=5, n_clusters_per_class=2, flip_y=0.05, class_sep=1.0,
            random_state=seed,
        )  # fmt: skip
        return _standardise(x, y, n_train, regression=False)
    if name == "spirals":
        n_train = 50_000
        n = n_train + GENERATED_VAL + GENERATED_TEST
        rng = np.random.default_rng(seed)
        arm = rng.integers(0, 3, n)
        t = np.sqrt(rng.random(n)) * 3.0  # radius in [0, 3], uniform over the disc's area
        angle = 4.0 * t + arm * (2 * np.pi / 3)  # each arm turns about twice
        x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1)
        x = x + 0.1 * rng.standard_normal((n, 2))  # the arms touch: a positive Bayes loss
        return _standardise(x, arm, n_train, regression=False)
    raise ValueError(f"unknown synthetic data set {name!r}; choose one of: {', '.join(SYNTHETIC)}")


TEXTURE_SIZE = 12
"""Side of a texture image, pixels."""
TEXTURE_CLASSES = 8
"""Four orientations x two spatial frequencies."""


@cache
def textures(n_train: int = 60_000) -> tuple[Split, Split, Split]:
    """Generated 12x12 grey images of oriented gratings in noise, 8 classes (4 orientations x
    2 frequencies): random phase, contrast and an orientation jitter of +-15 degrees, pixel
    noise of standard deviation 1 (the grating's amplitude is 0.4 to 1). A large set: the
    CNN's validation loss keeps falling over a long run. Flattened to 144 values; the model
    reshapes them."""
    rng = np.random.default_rng([SPLIT_SEED, 3])
    n = n_train + GENERATED_VAL + GENERATED_TEST
    label = rng.integers(0, TEXTURE_CLASSES, n)
    theta = (label % 4) * (np.pi / 4) + np.deg2rad(rng.uniform(-15, 15, n))
    freq = np.where(label // 4 == 0, 1.5, 3.0) / TEXTURE_SIZE  # cycles per pixel
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.4, 1.0, n)
    coords = np.arange(TEXTURE_SIZE) - (TEXTURE_SIZE - 1) / 2
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    img = amp[:, None, None] * np.cos(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    img = img + rng.standard_normal(img.shape)
    x = img.reshape(n, -1).astype(np.float32)
    return _standardise(x, label, n_train, regression=False)
