"""The observation: scale-free features of a training run's recent loss and gradient norms.

This is the one feature implementation (DESIGN rule 1): the Gymnasium env and the runtime
`LRController` both call `FeatureTracker.update`. It imports torch only (rule 2), works on
blocks of K steps for N runs at once (shape [N, K]; N = 1 for a single run), keeps its state on
the block's device, and returns an [N, D] float32 tensor, so a caller syncs once per decision.

Every feature is scale-free (rule 3): log-ratios of the run's own losses and gradient norms,
their spread, log(lr / base lr) and progress. All are clipped to [-CLIP, CLIP]; non-finite
inputs never produce non-finite features.

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
| 9     | gnorm_noise     | std of per-step log grad norm within the block                 | [0, 10]   |
| 10    | log_lr_ratio    | log(current lr / base lr)                                      | [-10, 10] |
| 11    | progress        | steps done / total steps                                       | [0, 1]    |
| 12    | nonfinite_frac  | fraction of the block's losses that were NaN or inf            | [0, 1]    |

"loss" of a block is the mean of its per-step log-losses (a geometric mean, robust to one
noisy step). Averages are exponential over blocks (fast 0.5, slow 0.1). Losses are assumed
non-negative (cross-entropy, MSE); values <= 1e-12 are clamped there.

Version history: v1 (this set).
"""

from __future__ import annotations

import torch

FEATURE_VERSION = 1
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
OBS_DIM = len(FEATURE_NAMES)
CLIP = 10.0
"""Every feature lies in [-CLIP, CLIP]; the observation space is Box(-CLIP, CLIP, (OBS_DIM,))."""

FAST, SLOW = 0.5, 0.1
_LOG_FLOOR = -27.6  # log(1e-12)
_BAD_STEP_PENALTY = (
    10.0  # a non-finite step counts as this much worse (in log) than the block's worst
)


def _sanitize_log(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of [N, K] values with non-finite entries replaced by the row's worst finite value
    + _BAD_STEP_PENALTY (so a NaN reads as "much worse", never as NaN). Returns (log, finite)."""
    finite = torch.isfinite(values)
    logs = torch.log(values.clamp(min=1e-12))
    worst = torch.where(finite, logs, torch.full_like(logs, _LOG_FLOOR)).amax(dim=1, keepdim=True)
    return torch.where(finite, logs, worst + _BAD_STEP_PENALTY), finite


def global_grad_norm(grads: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Global L2 norm of a list of gradients as a 0-d tensor on their device (no host sync).

    The same ops, hence the same number, as `torch.nn.utils.clip_grad_norm_` for gradients on
    one device: per-tensor norms (`torch._foreach_norm`), then the norm of their stack (and
    available on every torch this package supports). `out` (0-d) receives the result.
    """
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0, out=out)


class FeatureTracker:
    """Running state for N runs; `update` consumes one block per run and returns features."""

    _STATE = ("m0", "best", "prev", "ema_fast", "ema_slow", "g0", "g_slow", "started")

    def __init__(self, n: int = 1, device: torch.device | str = "cpu") -> None:
        self.n = n
        self.device = torch.device(device)
        z = torch.zeros(n, device=self.device)
        self.m0, self.best, self.prev = z.clone(), z.clone(), z.clone()
        self.ema_fast, self.ema_slow = z.clone(), z.clone()
        self.g0, self.g_slow = z.clone(), z.clone()
        self.started = torch.zeros(n, dtype=torch.bool, device=self.device)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Forget the history of the runs in `mask` (all runs if None)."""
        if mask is None:
            self.started.zero_()
        else:
            self.started &= ~mask.to(self.device)

    @torch.no_grad()
    def update(
        self,
        losses: torch.Tensor,
        grad_norms: torch.Tensor,
        log_lr_ratio: torch.Tensor,
        progress: torch.Tensor,
    ) -> torch.Tensor:
        """Consume one block: losses and grad_norms [N, K], log_lr_ratio and progress [N].
        Returns the [N, OBS_DIM] float32 features (on the block's device)."""
        losses = losses.float()
        grad_norms = grad_norms.float()
        log_l, finite = _sanitize_log(losses)
        log_g, _ = _sanitize_log(grad_norms)
        k = log_l.shape[1]
        m = log_l.mean(1)
        g = log_g.mean(1)

        first = ~self.started
        self.m0 = torch.where(first, m, self.m0)
        self.best = torch.where(first, m, self.best)
        self.prev = torch.where(first, m, self.prev)
        self.ema_fast = torch.where(first, m, self.ema_fast)
        self.ema_slow = torch.where(first, m, self.ema_slow)
        self.g0 = torch.where(first, g, self.g0)
        self.g_slow = torch.where(first, g, self.g_slow)
        self.started = torch.ones_like(self.started)

        loss_vs_slow = m - self.ema_slow
        gnorm_vs_slow = g - self.g_slow
        self.ema_fast = self.ema_fast + FAST * (m - self.ema_fast)
        self.ema_slow = self.ema_slow + SLOW * (m - self.ema_slow)
        self.g_slow = self.g_slow + SLOW * (g - self.g_slow)
        self.best = torch.minimum(self.best, m)

        steps = torch.arange(k, device=log_l.device, dtype=log_l.dtype)
        centred = steps - steps.mean()
        denom = centred.pow(2).sum().clamp(min=1.0)
        slope = (log_l * centred).sum(1) / denom * k

        feats = torch.stack(
            [
                m - self.m0,
                m - self.best,
                loss_vs_slow,
                self.ema_fast - self.ema_slow,
                m - self.prev,
                log_l.std(1, correction=0),
                slope,
                g - self.g0,
                gnorm_vs_slow,
                log_g.std(1, correction=0),
                log_lr_ratio.to(log_l),
                progress.to(log_l),
                1.0 - finite.float().mean(1),
            ],
            dim=1,
        )
        self.prev = m
        return torch.nan_to_num(feats, nan=0.0, posinf=CLIP, neginf=-CLIP).clamp(-CLIP, CLIP)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).clone() for k in self._STATE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in self._STATE:
            setattr(self, k, state[k].to(self.device).clone())
