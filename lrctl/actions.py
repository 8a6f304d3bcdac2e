"""The action: a bounded log-multiplier on the learning rate.

One definition, used by the env, the scripted policies and the runtime controller, and stored
in exported controller files. Imports only the standard library, numpy and lrctl.errors: the
runtime controller uses it.

Two modes (`ActionSpec.mode`). In both, the LR at step t is

    lr_t = base_lr * anchor(t) * factor

where `factor` is what the decisions move, kept inside `lr_band`:

- **recursive** (the first controllers): anchor(t) = 1 and each decision multiplies the factor
  by m_max ** a, so errors compound and "no change" means a constant LR.
- **anchored**: anchor(t) is a base schedule (cosine from the base LR to 0 over the run,
  `cosine_anchor`, exactly torch's `CosineAnnealingLR`; in a user's loop any torch scheduler),
  re-applied every step, and each decision sets factor = scale * exp(alpha * a): a bounded
  residual around the schedule, so "no change" is a good schedule. With `scale_time` > 0 a slow
  scale term integrates the actions (log scale += beta * a per decision, beta such that a run
  of constant a = 1 crosses `scale_band` in `scale_time` of the run, and in no fewer than
  `scale_min_decisions` decisions), able to rescue a base LR off by up to `scale_band`.
  With `dither` d > 0 the factor of every other block is multiplied by exp(+d) and that of
  the blocks between by exp(-d) (`dither_sign`): a known, alternating probe of the LR whose
  answer in the loss (features v5's `lr_response`) says which way the LR should go, as a
  lock-in amplifier reads a signal it modulates. The policy's own moves are smooth and
  follow the run's trend, so their answer is confounded with it; the probe's is not.

The observation's log_lr_ratio is log(factor) in both modes: the controller's own deviation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lrctl.errors import UsageError

ACTION_MODES = ("recursive", "anchored")


def cosine_anchor(t: int | np.ndarray, total_steps: int | np.ndarray) -> float | np.ndarray:
    """The default anchor: the LR factor of step t (0-based) under cosine annealing from 1 to 0
    over `total_steps` steps, 0.5 * (1 + cos(pi * t / T)), t clipped to [0, T] (the value torch's
    `CosineAnnealingLR(T_max=T, eta_min=0)` gives step t)."""
    if type(t) is int and type(total_steps) is int:  # the runtime's per-step path: no numpy
        frac = min(max(t / total_steps, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if np.ndim(t) == 0 and np.ndim(total_steps) == 0:
        frac = min(max(float(t) / float(total_steps), 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    frac = np.clip(np.asarray(t, np.float64) / np.asarray(total_steps, np.float64), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * frac))


@dataclass(frozen=True)
class ActionSpec:
    """How an action a in [-1, 1] changes the LR, once every `interval` optimizer steps (module
    docstring): recursive, lr <- lr * exp(a * log(max_multiplier)) kept within `lr_band` x the
    base LR; or anchored around a base schedule."""

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
    mode: str = "recursive"
    """"recursive" or "anchored" (module docstring). Files from before this field: recursive."""
    residual: float = 1.0
    """alpha (anchored): an action a moves the LR by exp(alpha * a) around the anchor."""
    scale_time: float = 0.0
    """Anchored: the fraction of a run in which the slow scale term can cross `scale_band` at
    a = 1 (0: no scale term)."""
    scale_band: tuple[float, float] = (0.1, 10.0)
    """Anchored: the range of the slow scale term."""
    scale_min_decisions: int = 1
    """Anchored: the fewest decisions in which the scale term may cross `scale_band`, whatever
    the run's length. With 1 (files from before this field) a run of 4 decisions crosses the
    whole band in one, and one bad decision moves the LR 100x."""
    dither: float = 0.0
    """Anchored: d, the alternating probe's log-factor (module docstring): the LR of the block
    after a decision is multiplied by exp(d * `dither_sign`(steps done)), +1 after odd
    decisions (steps done // K) and -1 after even ones; log_lr_ratio, log(factor), includes
    it. 0 (files from before this field): no probe."""
    blowup_factor: float = 0.0
    """Anchored: the runtime's blow-up guard, g (`lrctl.controller`): when a block's loss is
    non-finite, or above the run's first block's and more than g times its best block's,
    while the policy holds the LR above the anchor, the controller hands the run back to the
    base schedule (the factor from then on: the run's average so far, capped at 1). 0 (files
    from before this field): no guard. Set at export (`lrctl export --blowup-guard`); the
    training env does not apply it, as it does not apply the runtime's hold: an episode there
    ends at divergence."""

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise UsageError(f"interval must be >= 1, got {self.interval}")
        if self.grad_norm_steps < 1:
            raise UsageError(f"grad_norm_steps must be >= 1, got {self.grad_norm_steps}")
        object.__setattr__(self, "grad_norm_steps", min(int(self.grad_norm_steps), self.interval))
        if not self.max_multiplier > 1.0 or not math.isfinite(self.max_multiplier):
            raise UsageError(
                f"max_multiplier must be a finite number > 1, got {self.max_multiplier}"
            )
        lo, hi = self.lr_band
        if not (0 < lo <= 1 <= hi < math.inf):
            raise UsageError(f"lr_band must satisfy 0 < low <= 1 <= high < inf, got {self.lr_band}")
        if self.mode not in ACTION_MODES:
            raise UsageError(f"mode must be one of {', '.join(ACTION_MODES)}, got {self.mode!r}")
        if not (self.residual > 0 and math.isfinite(self.residual)):
            raise UsageError(f"residual must be a finite number > 0, got {self.residual}")
        if not (0 <= self.scale_time <= 1):
            raise UsageError(f"scale_time must be in [0, 1], got {self.scale_time}")
        slo, shi = self.scale_band
        if not (0 < slo <= 1 <= shi < math.inf):
            raise UsageError(f"scale_band must satisfy 0 < low <= 1 <= high, got {self.scale_band}")
        if (
            int(self.scale_min_decisions) != self.scale_min_decisions
            or self.scale_min_decisions < 1
        ):
            raise UsageError(
                f"scale_min_decisions must be a whole number >= 1, got {self.scale_min_decisions}"
            )
        object.__setattr__(self, "scale_min_decisions", int(self.scale_min_decisions))
        if not (0 <= self.dither <= 1):
            raise UsageError(f"dither must be in [0, 1] (a log-factor), got {self.dither}")
        if self.dither and not self.anchored:
            raise UsageError("dither is part of the anchored action; set mode 'anchored' or 0")
        g = self.blowup_factor
        if not (g == 0 or (g > 1 and math.isfinite(g))):
            raise UsageError(f"blowup_factor must be 0 (no guard) or a finite number > 1, got {g}")
        if g and not self.anchored:
            raise UsageError(
                "blowup_factor hands a run back to the base schedule of an anchored action; "
                "set mode 'anchored' or blowup_factor 0"
            )

    @property
    def anchored(self) -> bool:
        return self.mode == "anchored"

    def anchor(self, t: int | np.ndarray, total_steps: int | np.ndarray) -> float | np.ndarray:
        """The base schedule's factor for the LR of step t (0-based): 1 when recursive, else
        `cosine_anchor`."""
        if not self.anchored:
            return 1.0 if np.ndim(t) == 0 and np.ndim(total_steps) == 0 else np.ones(np.shape(t))
        return cosine_anchor(t, total_steps)

    def scale_step(self, total_steps: int | np.ndarray) -> float | np.ndarray:
        """beta: the slow scale term's log-step per decision at a = 1 (0 when off)."""
        if not self.anchored or self.scale_time == 0:
            return 0.0 if np.ndim(total_steps) == 0 else np.zeros(np.shape(total_steps))
        decisions = np.maximum(
            self.scale_time * np.asarray(total_steps) / self.interval,
            float(self.scale_min_decisions),
        )
        width = math.log(self.scale_band[1] / self.scale_band[0])
        beta = width / decisions
        return float(beta) if np.ndim(beta) == 0 else beta

    def dither_sign(self, steps_done: int | np.ndarray) -> int | np.ndarray:
        """+1 or -1: the probe's sign for the block after the decision taken with
        `steps_done` optimizer steps done (decision n = steps_done // K; odd n: +1)."""
        if np.ndim(steps_done):
            return 2 * (np.asarray(steps_done) // self.interval % 2) - 1
        return 2 * (int(steps_done) // self.interval % 2) - 1

    def decide(
        self,
        factor: float | np.ndarray,
        log_scale: float | np.ndarray,
        action: float | np.ndarray,
        total_steps: int | np.ndarray,
        steps_done: int | np.ndarray | None = None,
    ):
        """One decision: (factor, log_scale) -> the next (factor, log_scale).

        Recursive: factor * m_max ** a, in the band (log_scale stays 0). Anchored:
        log_scale += beta * a (in `scale_band`), factor = exp(log_scale + alpha * a
        + dither * dither_sign(steps_done)), in the band. The action is clipped to [-1, 1];
        NaN reads as 0. `steps_done` (the run's optimizer steps so far) is needed with a
        dither only."""
        if not self.anchored:
            return self.next_lr(factor, 1.0, action), log_scale
        probe = 0.0
        if self.dither:
            if steps_done is None:
                raise UsageError("an ActionSpec with a dither needs steps_done to decide")
            probe = self.dither * self.dither_sign(steps_done)
        lo, hi = self.lr_band
        slo, shi = self.scale_band
        if isinstance(action, float) and isinstance(log_scale, float):  # the runtime's path
            a = 0.0 if math.isnan(action) else min(max(action, -1.0), 1.0)
            beta = float(self.scale_step(total_steps))
            log_scale = min(max(log_scale + beta * a, math.log(slo)), math.log(shi))
            new = math.exp(log_scale + self.residual * a + probe)
            return min(max(new, lo), hi), log_scale
        a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64), nan=0.0), -1.0, 1.0)
        log_scale = np.clip(
            np.asarray(log_scale) + self.scale_step(total_steps) * a, math.log(slo), math.log(shi)
        )
        return np.clip(np.exp(log_scale + self.residual * a + probe), lo, hi), log_scale

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
        d["scale_band"] = list(self.scale_band)
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
            str(d.get("mode", "recursive")),  # absent before anchored actions
            float(d.get("residual", 1.0)),
            float(d.get("scale_time", 0.0)),
            tuple(map(float, d.get("scale_band", (0.1, 10.0)))),
            int(d.get("scale_min_decisions", 1)),  # absent before the floor: one decision
            float(d.get("dither", 0.0)),  # absent before the probe: none
            float(d.get("blowup_factor", 0.0)),  # absent before the guard: none
        )
