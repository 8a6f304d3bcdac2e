"""The observation: scale-free features of a training run's recent loss and gradient norms.

This is the one feature implementation (ARCHITECTURE.md, Rules: one observation function): the
Gymnasium env and the runtime `LRController` both call `FeatureTracker.update`. It imports torch
and numpy only (the runtime stands alone) and works on blocks of K steps for N runs at once
(shape [N, K]; N = 1 for a single run). Per step,
callers only write the loss and gradient norm into buffers on the tensors' device; once per
decision they read the block to the host (`read_block`, the one sync) and `update` turns it
into an [N, D] float32 array. The per-decision arithmetic runs in numpy float64 on purpose: on
arrays this small, numpy's per-operation cost is a fraction of torch's dispatch, which made
the env's decisions 3x cheaper.

Every feature is scale-free: log-ratios of the run's own losses and gradient norms,
their spread, log(lr / base lr), progress, and (version 3) the update's size relative to the
parameters and the agreement of successive gradients. All are clipped to [-CLIP, CLIP];
non-finite inputs never produce non-finite features. Which version a run observes is chosen
when it is trained (`TrainConfig.feature_version`) and recorded in its controller file; the
runtime computes the version its file says. Version 3 is the 13 features of version 2, in the
same order and with the same arithmetic, plus rows 13 and 14; version 4 is version 3 plus row 15;
version 5 is version 4 plus row 16.

| index | name            | meaning                                                        | range     |
| ----- | --------------- | -------------------------------------------------------------- | --------- |
| 0     | loss_vs_start   | log(loss / loss of the first block)                            | [-10, 10] |
| 1     | loss_vs_best    | log(loss / best block loss so far), >= 0                       | [0, 10]   |
| 2     | loss_vs_slow    | log(loss / slow moving average of loss)                        | [-10, 10] |
| 3     | loss_trend      | log(fast average / slow average): < 0 while improving         | [-10, 10] |
| 4     | loss_change     | log(loss / previous block's loss)                              | [-10, 10] |
| 5     | loss_noise      | std of per-step log-loss within the block                      | [0, 10]   |
| 6     | loss_slope      | least-squares slope of log-loss over the block, per block      | [-10, 10] |
| 7     | gnorm_vs_start  | log(grad norm / grad norm of the first block)                  | [-10, 10] |
| 8     | gnorm_vs_slow   | log(grad norm / its slow moving average)                       | [-10, 10] |
| 9     | gnorm_noise     | std of log grad norm over the block's last G steps             | [0, 10]   |
| 10    | log_lr_ratio    | log(current lr / base lr)                                      | [-10, 10] |
| 11    | progress        | steps done / total steps                                       | [0, 1]    |
| 12    | nonfinite_frac  | fraction of the block's losses that were NaN or inf            | [0, 1]    |
| 13    | update_ratio    | v3: log(norm of the last update / norm of the parameters)      | [-10, 10] |
| 14    | grad_cosine     | v3: cosine of the block's last two gradients (< 0: overshoot)  | [-1, 1]   |
| 15    | grad_cosine_avg | v4: slow moving average of grad_cosine over blocks             | [-1, 1]   |
| 16    | lr_response     | v5: slow average of the LR's moves signed by the loss's answer | [-10, 10] |

"loss" of a block is the mean of its per-step log-losses (a geometric mean, robust to one
noisy step). Averages are exponential over blocks (fast 0.5, slow 0.1). Losses are assumed
non-negative (cross-entropy, MSE); values <= 1e-12 are clamped there. A NaN or inf step reads
as the block's worst finite value + 10 in log space (a block with no finite value: the previous
block's + 10), so it looks much worse, never better, and `nonfinite_frac` flags it.

The gradient-norm features (7-9) are computed from the norms of the last G steps of each block
only (G = `ActionSpec.grad_norm_steps`, stored in controller files): `update` takes whatever
[N, G] it is given, and callers read norms on those steps only, which is most of the per-step
cost a controller adds to a small model's loop.

The version-3 features read the block's last two steps only (L: the block's length), from
three raw numbers per run that `lrctl.last_steps` defines and every producer of blocks
measures on those two steps and no other: g_{L-2} . g_{L-1}, the squared norm of the last
update theta_after - theta_before, and the squared norm of theta_before (`step_stats`, [N, 3]).

- `update_ratio` = log(||theta_after - theta_before|| / ||theta_before||) over step L-1: for
  plain SGD, log(lr * ||g|| / ||theta||), the LR's size in the parameters' own scale. A
  non-finite update or parameter norm reads +10 (a step that broke the run is the largest
  there is), a zero update -10.
- `grad_cosine` = g_{L-2} . g_{L-1} / (||g_{L-2}|| ||g_{L-1}||), with the gradient norms of
  the same two steps (the last two of the G read, so version 3 needs G >= 2): the
  hypergradient's signal, < 0 when successive steps overshoot (LR too high), > 0 when they
  keep going the same way (LR too low). 0 when a norm is 0 or non-finite, the dot product is
  not finite, or the block has fewer than 2 steps.

- `grad_cosine_avg` (version 4) = the slow moving average (rate 0.1, about ten blocks) of
  `grad_cosine`, started at the first block's value. One cosine per block is a noisy sign
  when minibatch noise dominates the gradient; hypergradient descent sums that sign over
  every step, and this average is the policy's way to read it the same way: "successive
  gradients have kept disagreeing (LR too high) or agreeing (too low) for a while".

- `lr_response` (version 5) = the slow moving average (rate 0.1, started at 0) over blocks of
  d_lr x sign(d_change): d_lr is this block's `log_lr_ratio` minus the previous block's (how
  far the LR moved), d_change this block's `loss_change` minus the previous block's (did the
  loss fall faster, < 0, or slower, > 0, after the move). Positive: moving the LR up made the
  loss fall slower, or moving it down made it fall faster (the LR is too high); negative: the
  reverse (too low); about 0 when the LR stood still or the loss's answer is noise. The
  other features describe where the run is; this one says which way the last moves took it,
  the run-level answer to "would a higher LR help here?" that a fixed climb cannot give. It
  reads numbers the tracker has already (no per-step cost).

Version history: v1: every step's gradient norm (G = K). v2: the last G steps of each block,
G recorded in the controller file (a v1 file reads as G = K; the arithmetic is unchanged).
v3: v2's 13 features plus `update_ratio` and `grad_cosine` (15; needs G >= 2). v4: v3's 15
plus `grad_cosine_avg` (16; the same raw numbers, so the same per-step cost as v3). v5: v4's 16
plus `lr_response` (17; from the features themselves, no per-step cost).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

FEATURE_VERSION = 2
"""The default version: what a run observes unless its config chooses another."""
SUPPORTED_FEATURE_VERSIONS = (1, 2, 3, 4, 5)
"""Feature versions a controller file may have been trained on (v1 files have G = K)."""
FEATURE_NAMES: tuple[str, ...] = (
    "loss_vs_start",
    "loss_vs_best",
    "loss_vs_slow",
    "loss_trend",
    "loss_change",
    "loss_noise",
    "loss_slope",
    "gnorm_vs_start",
    "gnorm_vs_slow",
    "gnorm_noise",
    "log_lr_ratio",
    "progress",
    "nonfinite_frac",
)
"""The features of versions 1 and 2, in order (version 3 starts with them)."""
V3_FEATURE_NAMES: tuple[str, ...] = ("update_ratio", "grad_cosine")
"""What version 3 adds after them."""
V4_FEATURE_NAMES: tuple[str, ...] = ("grad_cosine_avg",)
"""What version 4 adds after version 3's."""
V5_FEATURE_NAMES: tuple[str, ...] = ("lr_response",)
"""What version 5 adds after version 4's."""
OBS_DIM = len(FEATURE_NAMES)
"""The observation size of versions 1 and 2 (`obs_dim(version)` for any version)."""
NONFINITE_INDEX = FEATURE_NAMES.index("nonfinite_frac")
"""Where `nonfinite_frac` sits in every version's observation."""
CLIP = 10.0
"""Every feature lies in [-CLIP, CLIP]; the observation space is Box(-CLIP, CLIP, (obs_dim,))."""

FAST, SLOW = 0.5, 0.1
_LOG_FLOOR = math.log(1e-12)
_BAD_STEP_PENALTY = (
    10.0  # a non-finite step reads as this much worse (in log) than the block's worst
)


def check_version(version: int) -> int:
    """`version` if it is a supported feature version, else a ValueError that lists them."""
    if isinstance(version, bool) or version not in SUPPORTED_FEATURE_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_FEATURE_VERSIONS))
        raise ValueError(f"feature version must be one of {supported}, got {version!r}")
    return int(version)


def feature_names(version: int = FEATURE_VERSION) -> tuple[str, ...]:
    """The names of a version's features, in observation order."""
    version = check_version(version)
    return (
        FEATURE_NAMES
        + (V3_FEATURE_NAMES if version >= 3 else ())
        + (V4_FEATURE_NAMES if version >= 4 else ())
        + (V5_FEATURE_NAMES if version >= 5 else ())
    )


def min_grad_norm_steps(version: int) -> int:
    """The fewest gradient norms per block (G) a version reads: 2 for versions 3 and 4, whose
    gradient cosine reads the norms of the block's last two steps; else 1."""
    return 2 if check_version(version) >= 3 else 1


def obs_dim(version: int = FEATURE_VERSION) -> int:
    """The observation size of a feature version (13 for v1 and v2, 15 for v3, 16 for v4, 17
    for v5)."""
    return len(feature_names(version))


def observation_table(indent: str = "") -> str:
    """The feature table of this module's docstring (index, name, meaning, range), for other
    docstrings to show (the env's Observation Space) without a second copy."""
    rows = [line for line in (__doc__ or "").splitlines() if line.startswith("|")]
    return f"\n{indent}".join(rows)


def read_block(*tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
    """The one host read per decision: the block's tensors on the device ([N, K] (or [K])
    losses, [N, G] (or [G]) gradient norms, and for version 3 the [N, 3] (or [1, 3])
    `step_stats`) -> float64 numpy arrays [N, *], one per tensor, from one transfer. A 1-D
    tensor is one run's row: the runtime's global mode on a GPU passes [K] losses and [G]
    norms with [1, 3] statistics."""
    tensors = tuple(t.unsqueeze(0) if t.dim() == 1 else t for t in tensors)
    widths = [t.shape[-1] for t in tensors]
    dtype = tensors[0].dtype
    both = torch.cat([t.to(dtype) for t in tensors], dim=-1).detach().double().cpu()
    both = both.numpy().reshape(-1, both.shape[-1])
    ends = np.cumsum(widths)
    return tuple(both[:, end - w : end] for w, end in zip(widths, ends, strict=True))


def last_step_features(
    grad_dot: float, update_sq: float, param_sq: float, gnorm_prev: float, gnorm_last: float
) -> tuple[float, float]:
    """(update_ratio, grad_cosine) of one run from its block's raw numbers (module docstring):
    g_{L-2} . g_{L-1}, the last update's and the parameters' squared norms, and the gradient
    norms of steps L-2 and L-1 (NaN where the block had no such step). Plain floats: both
    `FeatureTracker` paths call this one definition, row by row."""
    if not (math.isfinite(update_sq) and math.isfinite(param_sq)):
        ratio = CLIP  # a non-finite update or parameter: the largest step there is
    elif update_sq <= 0.0:
        ratio = -CLIP  # no update at all
    elif param_sq <= 0.0:
        ratio = CLIP
    else:
        ratio = min(max(0.5 * (math.log(update_sq) - math.log(param_sq)), -CLIP), CLIP)
    denom = gnorm_prev * gnorm_last
    if math.isfinite(grad_dot) and math.isfinite(denom) and denom > 0.0:
        cosine = min(max(grad_dot / denom, -1.0), 1.0)
    else:
        cosine = 0.0
    return ratio, cosine


def _sanitize_log(values: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log of [N, K] values, non-finite entries replaced by the row's worst finite log (or
    `fallback` [N] where the row has none) + _BAD_STEP_PENALTY. Returns (logs, finite mask)."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.clip(values, 1e-12, None))
    if finite.all():
        return logs, finite
    masked = np.where(finite, logs, -np.inf)
    worst = masked.max(axis=1)
    worst = np.where(np.isfinite(worst), worst, fallback)
    return np.where(finite, logs, (worst + _BAD_STEP_PENALTY)[:, None]), finite


def _sanitize_log_row(values: list[float], fallback: float) -> tuple[list[float], int]:
    """`_sanitize_log` for one row of Python floats. Returns (logs, number of finite values)."""
    logs = [math.log(max(v, 1e-12)) if math.isfinite(v) else None for v in values]
    finite = [v for v in logs if v is not None]
    if len(finite) == len(logs):
        return logs, len(logs)  # type: ignore[return-value]
    bad = (max(finite) if finite else fallback) + _BAD_STEP_PENALTY
    return [bad if v is None else v for v in logs], len(finite)


@functools.cache
def _slope_weights(k: int) -> tuple[tuple[float, ...], float]:
    """Centred step indices of a K-step block and their sum of squares (at least 1)."""
    centred = tuple(i - (k - 1) / 2.0 for i in range(k))
    return centred, max(sum(c * c for c in centred), 1.0)


def _std(values: list[float], mean: float) -> float:
    """Population standard deviation (numpy's default, ddof = 0)."""
    if not values:
        return math.nan
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _last_two(grad_norms: list[float]) -> tuple[float, float]:
    """The gradient norms of a block's last two steps (NaN where it read fewer than two)."""
    return (grad_norms[-2], grad_norms[-1]) if len(grad_norms) >= 2 else (math.nan, math.nan)


class FeatureTracker:
    """Running state for N runs; `update` consumes one block per run and returns features
    of feature version `version` ([N, obs_dim(version)])."""

    _STATE = ("m0", "best", "prev", "ema_fast", "ema_slow", "g0", "g_prev", "g_slow", "started")
    _V4_STATE = ("cos_slow",)
    """Version 4's running average of grad_cosine (absent from state dicts of versions 1-3)."""
    _V5_STATE = ("lr_prev", "change_prev", "response")
    """Version 5's previous log_lr_ratio and loss_change and its running response (absent
    from state dicts of versions 1-4)."""

    def __init__(self, n: int = 1, version: int = FEATURE_VERSION) -> None:
        self.n = n
        self.version = check_version(version)
        self.dim = obs_dim(version)
        z = np.zeros(n)
        self.m0, self.best, self.prev = z.copy(), z.copy(), z.copy()
        self.ema_fast, self.ema_slow = z.copy(), z.copy()
        self.g0, self.g_prev, self.g_slow = z.copy(), z.copy(), z.copy()
        self.cos_slow = z.copy()
        self.lr_prev, self.change_prev, self.response = z.copy(), z.copy(), z.copy()
        self.started = np.zeros(n, dtype=bool)

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the history of the runs in `mask` (all runs if None)."""
        if mask is None:
            self.started[:] = False
        else:
            self.started &= ~np.asarray(mask, dtype=bool)

    def update(
        self,
        losses: np.ndarray,
        grad_norms: np.ndarray,
        log_lr_ratio: np.ndarray | float,
        progress: np.ndarray | float,
        step_stats: np.ndarray | None = None,
    ) -> np.ndarray:
        """Consume one block: losses and grad_norms [N, K] (host arrays, see `read_block`),
        log_lr_ratio and progress [N] (or scalars), and for version 3 the block's raw
        last-step numbers `step_stats` [N, 3] (`lrctl.last_steps.STAT_NAMES`). Returns
        [N, obs_dim(version)] float32 features."""
        losses = np.asarray(losses, dtype=np.float64).reshape(self.n, -1)
        grad_norms = np.asarray(grad_norms, dtype=np.float64).reshape(self.n, -1)
        stats = self._stats(step_stats)
        if self.n == 1 and np.ndim(log_lr_ratio) == 0 and np.ndim(progress) == 0:
            return self.update_one(losses[0].tolist(), grad_norms[0].tolist(),
                                    float(log_lr_ratio), float(progress),
                                    None if stats is None else stats[0].tolist())  # fmt: skip
        started = self.started
        log_l, finite = _sanitize_log(losses, np.where(started, self.prev, 0.0))
        log_g, _ = _sanitize_log(grad_norms, np.where(started, self.g_prev, 0.0))
        k = log_l.shape[1]
        m = log_l.mean(1)
        g = log_g.mean(1)

        first = ~started
        if first.any():
            for name, value in (("m0", m), ("best", m), ("prev", m), ("ema_fast", m),
                                ("ema_slow", m), ("g0", g), ("g_slow", g)):  # fmt: skip
                getattr(self, name)[first] = value[first]
            self.started[:] = True

        loss_vs_slow = m - self.ema_slow
        gnorm_vs_slow = g - self.g_slow
        self.ema_fast += FAST * (m - self.ema_fast)
        self.ema_slow += SLOW * (m - self.ema_slow)
        self.g_slow += SLOW * (g - self.g_slow)
        np.minimum(self.best, m, out=self.best)

        centred = np.arange(k) - (k - 1) / 2.0
        slope = (log_l @ centred) / max(float(centred @ centred), 1.0) * k

        feats = np.empty((self.n, self.dim))
        feats[:, 0] = m - self.m0
        feats[:, 1] = m - self.best
        feats[:, 2] = loss_vs_slow
        feats[:, 3] = self.ema_fast - self.ema_slow
        feats[:, 4] = m - self.prev
        feats[:, 5] = log_l.std(1)
        feats[:, 6] = slope
        feats[:, 7] = g - self.g0
        feats[:, 8] = gnorm_vs_slow
        feats[:, 9] = log_g.std(1)
        feats[:, 10] = log_lr_ratio
        feats[:, 11] = progress
        feats[:, 12] = 1.0 - finite.mean(1)
        if stats is not None:  # version 3: one definition, row by row (N is small)
            for i, (row, gnorms) in enumerate(
                zip(stats.tolist(), grad_norms.tolist(), strict=True)
            ):
                feats[i, 13:15] = last_step_features(*row, *_last_two(gnorms))
            if self.version >= 4:
                cosine = feats[:, 14]
                self.cos_slow[first] = cosine[first]
                self.cos_slow += SLOW * (cosine - self.cos_slow)
                feats[:, 15] = self.cos_slow
        if self.version >= 5:
            lr_now = np.broadcast_to(np.asarray(log_lr_ratio, dtype=np.float64), (self.n,))
            change = np.clip(np.nan_to_num(feats[:, 4], nan=0.0), -CLIP, CLIP)
            self.lr_prev[first], self.change_prev[first] = lr_now[first], change[first]
            self.response[first] = 0.0
            moved = (lr_now - self.lr_prev) * np.sign(change - self.change_prev)
            moved = np.where(np.isfinite(moved), moved, 0.0)
            self.response += SLOW * (moved - self.response)
            self.lr_prev, self.change_prev = lr_now.copy(), change
            feats[:, 16] = self.response
        self.prev = m
        self.g_prev = g
        feats[np.isnan(feats)] = 0.0  # +-inf are clipped to +-CLIP just below
        return np.clip(feats, -CLIP, CLIP).astype(np.float32)

    def _stats(self, step_stats: np.ndarray | None) -> np.ndarray | None:
        """Version 3: the block's [N, 3] raw last-step numbers (required); else None."""
        if self.version < 3:
            return None
        if step_stats is None:
            raise ValueError(
                "feature version 3 needs the block's last-step statistics (step_stats)"
            )
        return np.asarray(step_stats, dtype=np.float64).reshape(self.n, 3)

    def update_one(
        self,
        losses: list[float],
        grad_norms: list[float],
        log_lr_ratio: float,
        progress: float,
        step_stats: list[float] | None = None,
    ) -> np.ndarray:
        """`update` for one run, from Python floats (losses [K], gradient norms [G], and for
        version 3 the 3 `step_stats`); returns [1, obs_dim] float32. The same arithmetic as
        the array path (tests/test_bad_numbers.py checks they agree on hostile inputs), at a
        tenth of its cost, since a decision of the runtime controller is otherwise dominated by
        numpy's per-call overhead on 10-element arrays. The single env and `LRController` take
        it."""
        if self.version >= 3 and step_stats is None:
            raise ValueError(
                "feature version 3 needs the block's last-step statistics (step_stats)"
            )
        started = bool(self.started[0])
        log_l, n_finite = _sanitize_log_row(losses, float(self.prev[0]) if started else 0.0)
        log_g, _ = _sanitize_log_row(grad_norms, float(self.g_prev[0]) if started else 0.0)
        k = len(log_l)
        m = math.fsum(log_l) / k
        g = math.fsum(log_g) / len(log_g) if log_g else math.nan
        if not started:
            self.m0[0] = self.best[0] = self.prev[0] = self.ema_fast[0] = self.ema_slow[0] = m
            self.g0[0] = self.g_slow[0] = g
            self.started[0] = True
        ema_fast, ema_slow, g_slow = (
            float(self.ema_fast[0]),
            float(self.ema_slow[0]),
            float(self.g_slow[0]),
        )
        loss_vs_slow, gnorm_vs_slow = m - ema_slow, g - g_slow
        ema_fast += FAST * (m - ema_fast)
        ema_slow += SLOW * (m - ema_slow)
        g_slow += SLOW * (g - g_slow)
        best = min(float(self.best[0]), m)
        weights, sxx = _slope_weights(k)
        slope = sum(v * w for v, w in zip(log_l, weights, strict=True)) / sxx * k
        feats = [
            m - float(self.m0[0]),
            m - best,
            loss_vs_slow,
            ema_fast - ema_slow,
            m - float(self.prev[0]),
            _std(log_l, m),
            slope,
            g - float(self.g0[0]),
            gnorm_vs_slow,
            _std(log_g, g),
            log_lr_ratio,
            progress,
            1.0 - n_finite / k,
        ]
        self.ema_fast[0], self.ema_slow[0], self.g_slow[0], self.best[0] = (
            ema_fast, ema_slow, g_slow, best
        )  # fmt: skip
        if self.version >= 3:
            ratio, cosine = last_step_features(*map(float, step_stats), *_last_two(grad_norms))
            feats += (ratio, cosine)
            if self.version >= 4:
                cos_slow = cosine if not started else float(self.cos_slow[0])
                cos_slow += SLOW * (cosine - cos_slow)
                self.cos_slow[0] = cos_slow
                feats.append(cos_slow)
        if self.version >= 5:
            change = feats[4]
            change = 0.0 if change != change else min(max(change, -CLIP), CLIP)
            if not started:
                self.lr_prev[0], self.change_prev[0], self.response[0] = log_lr_ratio, change, 0.0
            d_change = change - float(self.change_prev[0])
            moved = (log_lr_ratio - float(self.lr_prev[0])) * ((d_change > 0) - (d_change < 0))
            moved = moved if math.isfinite(moved) else 0.0
            response = float(self.response[0]) + SLOW * (moved - float(self.response[0]))
            self.lr_prev[0], self.change_prev[0], self.response[0] = log_lr_ratio, change, response
            feats.append(response)
        self.prev = np.array([m])
        self.g_prev = np.array([g])
        out = [0.0 if f != f else min(max(f, -CLIP), CLIP) for f in feats]  # NaN -> 0, clip
        return np.array([out], dtype=np.float32)

    def _state_names(self) -> tuple[str, ...]:
        return (
            self._STATE
            + (self._V4_STATE if self.version >= 4 else ())
            + (self._V5_STATE if self.version >= 5 else ())
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(getattr(self, k), copy=True) for k in self._state_names()}

    def load_state_dict(self, state: dict) -> None:
        for k in self._state_names():
            setattr(
                self, k, np.array(state[k], dtype=bool if k == "started" else np.float64, copy=True)
            )
