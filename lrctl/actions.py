"""The action: a bounded log-multiplier on the learning rate (DESIGN rule 4).

One definition, used by the env, the scripted policies and the runtime controller, and stored
in exported controller files. Imports only the standard library and numpy (rule 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ActionSpec:
    """How an action a in [-1, 1] changes the LR: lr <- lr * exp(a * log(max_multiplier)),
    once every `interval` optimizer steps, kept within `lr_band` x the base LR."""

    interval: int = 10
    """K: optimizer steps between two decisions."""
    max_multiplier: float = 2.0
    """m_max: the largest factor one decision may apply (up or down)."""
    lr_band: tuple[float, float] = (1e-3, 30.0)
    """Lowest and highest LR as multiples of the base LR."""
    grad_norm_steps: int = 2
    """G: gradient norms are read on the last G steps of each block only (capped at K).

    Reading them costs a norm per parameter tensor, a measurable share of a small model's step,
    and G = 2 keeps what the gradient features need (its level and its spread). Controller
    files from before this field (feature version 1) read every step: G = K."""

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.grad_norm_steps < 1:
            raise ValueError(f"grad_norm_steps must be >= 1, got {self.grad_norm_steps}")
        object.__setattr__(self, "grad_norm_steps", min(int(self.grad_norm_steps), self.interval))
        if not self.max_multiplier > 1.0 or not math.isfinite(self.max_multiplier):
            raise ValueError(
                f"max_multiplier must be a finite number > 1, got {self.max_multiplier}"
            )
        lo, hi = self.lr_band
        if not (0 < lo <= 1 <= hi < math.inf):
            raise ValueError(f"lr_band must satisfy 0 < low <= 1 <= high < inf, got {self.lr_band}")

    def multiplier(self, action: float | np.ndarray) -> float | np.ndarray:
        """exp(a * log m_max), with a clipped to [-1, 1] and NaN read as 0 (no change)."""
        if isinstance(action, float):  # the runtime's per-decision path: plain floats, no numpy
            a = 0.0 if math.isnan(action) else min(max(action, -1.0), 1.0)
            return math.exp(a * math.log(self.max_multiplier))
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64), nan=0.0), -1.0, 1.0)
        m = np.exp(a * math.log(self.max_multiplier))
        return float(m) if m.ndim == 0 else m

    def action_for(self, multiplier: float | np.ndarray) -> float | np.ndarray:
        """The action whose multiplier is `multiplier` (the inverse of `multiplier`), clipped
        to [-1, 1]: factors beyond m_max (or <= 0) take the largest step allowed; NaN reads
        as 0 (no change)."""
        m = np.maximum(np.asarray(multiplier, dtype=np.float64), 1e-300)
        a = np.nan_to_num(np.log(m) / math.log(self.max_multiplier), nan=0.0)
        a = np.clip(a, -1.0, 1.0)
        return float(a) if a.ndim == 0 else a

    def next_lr(
        self, lr: float | np.ndarray, base_lr: float | np.ndarray, action: float | np.ndarray
    ):
        """The LR after one decision: multiplied, then clipped to the band around base_lr."""
        lo, hi = self.lr_band
        if isinstance(lr, float) and isinstance(base_lr, float) and isinstance(action, float):
            return min(max(lr * self.multiplier(action), base_lr * lo), base_lr * hi)
        new = np.clip(
            np.asarray(lr) * self.multiplier(action),
            np.asarray(base_lr) * lo,
            np.asarray(base_lr) * hi,
        )
        return float(new) if np.ndim(new) == 0 else new

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lr_band"] = list(self.lr_band)
        return d

    def records_grad_norm(self, index: int, block_len: int | None = None) -> bool:
        """Whether step `index` (0-based) of a block of `block_len` steps (default K) reads
        the gradient norm: the block's last G steps do."""
        return index >= (self.interval if block_len is None else block_len) - self.grad_norm_steps

    @classmethod
    def from_dict(cls, d: dict) -> ActionSpec:
        interval = int(d["interval"])
        return cls(
            interval,
            float(d["max_multiplier"]),
            tuple(map(float, d["lr_band"])),
            int(d.get("grad_norm_steps", interval)),  # absent in v1 files: every step
        )
