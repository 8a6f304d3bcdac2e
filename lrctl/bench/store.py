"""The results store: one JSON file per finished run, written atomically.

`<out>/<suite>/runs/<config_hash>.json` holds the run's config, its final metrics and its
per-step history. A range-test job (a tuner's, lrctl.bench.tuners) is stored the same way: no
validation or test metrics, its suggested LR and the steps it used, its LR and loss curve. A file appears only once it is complete (written to a hidden temporary file
in the same folder, flushed to disk, then renamed over its final name), so a sweep killed at
any moment leaves only whole records behind, and the next run skips exactly those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lrctl.atomic import atomic_write_json
from lrctl.bench.plan import RunConfig

RECORD_VERSION = 1


class RunStore:
    """Finished runs by config hash, in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, config_hash: str) -> Path:
        return self.folder / f"{config_hash}.json"

    def done(self) -> set[str]:
        """Hashes of every stored run (temporary files are not runs)."""
        return {p.stem for p in self.folder.glob("*.json") if not p.name.startswith(".")}

    def save(self, record: dict) -> Path:
        """Write a record atomically: temp file, fsync, rename."""
        path = self.path(record["config_hash"])
        atomic_write_json(path, record, separators=(",", ":"))
        return path

    def load(self, config_hash: str) -> dict:
        with open(self.path(config_hash)) as f:
            return json.load(f)

    def load_valid(self, config_hash: str) -> dict | None:
        """The record, or None when it is missing or unreadable (then it is run again)."""
        try:
            record = self.load(config_hash)
        except (OSError, ValueError):
            return None
        if record.get("version") != RECORD_VERSION or record.get("config_hash") != config_hash:
            return None
        return record


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _record(config: RunConfig, result: dict, steps: dict, evals: dict) -> dict:
    return {
        "version": RECORD_VERSION,
        "config_hash": config.config_hash,
        "config": asdict(config),
        "result": result,
        "steps": {c: _floats(steps[c]) for c in ("train_loss", "grad_norm", "lr")},
        "evals": {c: _floats(evals[c]) for c in ("step", "val_loss", "val_accuracy")},
    }


def make_record(config: RunConfig, history) -> dict:  # history: lrctl.training.History
    """A store record from a run's config and its `History`."""
    result = {
        "final_val_loss": history.final_val_loss,
        "final_val_accuracy": history.final_val_accuracy,
        "test_loss": history.test_loss,
        "test_accuracy": history.test_accuracy,
        "diverged": bool(history.diverged),
        "diverged_at": history.diverged_at,
        "wall_time_s": history.wall_time,
    }
    return _record(config, result, history.steps, history.evals)


def make_range_test_record(config: RunConfig, test, wall_time: float) -> dict:
    """A store record from a range-test job's config and its `RangeTestResult` (`suggestion`,
    `steps`; its `lrs` and `losses` curve when it has them)."""
    nan = math.nan
    result = {
        "final_val_loss": nan,  # a range test reads the train split only
        "final_val_accuracy": nan,
        "test_loss": nan,
        "test_accuracy": nan,
        "diverged": False,
        "diverged_at": None,
        "wall_time_s": wall_time,
        "suggestion": float(test.suggestion),
        "inner_steps": int(test.steps),
    }
    lrs: Sequence[float] = getattr(test, "lrs", ())
    losses: Sequence[float] = getattr(test, "losses", ())
    if len(lrs) != len(losses):
        lrs = losses = ()
    steps = {"lr": lrs, "train_loss": losses, "grad_norm": [nan] * len(lrs)}
    return _record(config, result, steps, {"step": [], "val_loss": [], "val_accuracy": []})
