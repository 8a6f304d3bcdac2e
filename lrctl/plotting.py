"""Plot helpers shared by every lrctl figure: a headless pyplot, atomic PNG writes, and the
mean of curves that may end early.

matplotlib is imported only when a figure is drawn (`pyplot()`), so importing this module
costs nothing; both the LR range test and the benchmark draw through it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from lrctl.atomic import atomic_write_bytes


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: object, path: Path) -> Path:
    """Write `fig` as a PNG atomically (temp file, then rename; no timestamp in the file, so
    the same figure gives the same bytes) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # type: ignore[attr-defined]
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def mean_curve(series: list[np.ndarray]) -> np.ndarray:
    """Mean over runs of curves that may end early (diverged runs): NaN-padded mean."""
    n = max(len(s) for s in series)
    stacked = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        stacked[i, : len(s)] = np.where(np.isfinite(s), s, np.nan)
    with warnings.catch_warnings():  # a step where every run has diverged: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stacked, axis=0)
