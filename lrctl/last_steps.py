"""The tensor side of features v3: what a block's last two optimizer steps show.

Features v3 (`lrctl.features`) add two signals that can say "the LR is too high" before the
loss does: the size of the block's last update relative to the parameters, and the agreement
(cosine) of its last two gradients. Their raw numbers, per parameter tensor, are

| row | name      | value (L: the block's length, g_t: step t's gradient)                     |
| --- | --------- | ------------------------------------------------------------------------- |
| 0   | grad_dot  | g_{L-2} . g_{L-1}, NaN when the block has fewer than 2 steps              |
| 1   | update_sq | squared norm of theta_after - theta_before, over step L-1                 |
| 2   | param_sq  | squared norm of theta_before, the parameters before step L-1              |

Dot products and squared norms, unlike cosines and norms, add up over tensors, parameter
shards and ranks: a run's numbers (or a param group's) are the sums over its tensors
(`combine_stats`), and `lrctl.distributed` all-reduces them with the gradient norms' squares.
`lrctl.features` turns them, with the gradient norms of steps L-2 and L-1, into features.

**Definition.** `LastSteps`, on a list of parameter tensors: the inner run
(`lrctl.inner_run.InnerRun`) and the runtime `LRController` both call it on the block's last two
steps and never on the others. One preallocated buffer per tensor (the parameters' size) holds
g_{L-2} from step L-2 until the dot product at step L-1, then theta_before until the update is
measured after that step. Everything stays on the tensors' device (no host sync).

**Fast path** (tests/test_features_v3.py holds it to the definition): `row_dots` and
`lrctl.grad_norms.row_norms` on a population's flat [N, P] buffers (`lrctl.population`), one
reduction over all P coordinates per member instead of per-tensor sums first; equal up to
float32 rounding.

Imports torch only: this module is part of the standalone runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lrctl.grad_norms import tensor_norms

STAT_NAMES = ("grad_dot", "update_sq", "param_sq")
"""The raw numbers of features v3, in the order of `LastSteps.stats`' rows and of the
[N, 3] host arrays (`lrctl.runs.Block.step_stats`)."""


def tensor_dots(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Per-tensor dot products of `a` and `b` ([len(a)], float32; 0 where b has None)."""
    dots = [
        None if y is None else torch.dot(x.reshape(-1), y.reshape(-1))
        for x, y in zip(a, b, strict=True)
    ]
    if not dots:
        return torch.zeros(0)
    if any(d is None for d in dots):
        zero = torch.zeros((), device=a[0].device, dtype=a[0].dtype)
        dots = [zero if d is None else d for d in dots]
    return torch.stack(dots).float()


def squared_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-tensor squared L2 norms, [len(tensors)], float32 (one `torch._foreach_norm`)."""
    if not tensors:
        return torch.zeros(0)
    return torch.stack(tensor_norms(tensors)).float().square()


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Fast path for flat [N, P] buffers whose rows are N runs: each row's dot product, [N]."""
    return torch.linalg.vecdot(a, b, dim=1)


def combine_stats(stats: torch.Tensor, group_sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Per-tensor statistics [3, P] -> the run's [1, 3] (sums over tensors), or with
    `group_sizes` (tensors in group order, that many per group) each group's, [n_groups, 3]."""
    if group_sizes is None:
        return stats.sum(1)[None]
    return torch.stack([chunk.sum(1) for chunk in stats.split(list(group_sizes), dim=1)])


class LastSteps:
    """Features v3's raw numbers (`STAT_NAMES`) of one run's parameter tensors, per tensor.

    Per block: `start_block()`; at step L-2, once its gradients exist, `keep_grads(grads)`; at
    step L-1, after backward and before `optimizer.step()`, `before_last_step(grads, params)`;
    right after that step, `after_last_step(params)`. `stats` [3, P] then holds the block's
    numbers (NaN where a call was missed: no dot product without `keep_grads` in the same
    block). `grads[i]` is tensor i's gradient or None (it then contributes 0 to the dot
    product); `params` are the tensors, passed at each call (the runtime passes the local
    shards of distributed tensors, `lrctl.distributed.local_tensors`).
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self._shapes = [(p.shape, p.dtype, p.device) for p in params]
        device = params[0].device if len(params) else torch.device("cpu")
        self.stats = torch.full((3, len(params)), math.nan, device=device)
        self._buf: list[torch.Tensor] | None = None  # g_{L-2}, then theta_before
        self.has_grads = False  # _buf holds this block's g_{L-2}
        self.measuring = False  # _buf holds theta_before of the step being taken (K-1)

    def start_block(self) -> None:
        """Forget the previous block's numbers."""
        self.stats.fill_(math.nan)
        self.has_grads = self.measuring = False

    def _buffers(self) -> list[torch.Tensor]:
        if self._buf is None:  # allocated once, on first use
            self._buf = [torch.zeros(s, dtype=t, device=d) for s, t, d in self._shapes]
        return self._buf

    @torch.no_grad()
    def keep_grads(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Step L-2: copy its gradients (zeros for a tensor without one)."""
        buf = self._buffers()
        if all(g is not None for g in grads):
            torch._foreach_copy_(buf, list(grads))
        else:
            for b, g in zip(buf, grads, strict=True):
                b.zero_() if g is None else b.copy_(g)
        self.has_grads = True

    @torch.no_grad()
    def before_last_step(
        self, grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]
    ) -> None:
        """Step L-1, before the optimizer steps: the dot product with the kept gradients, the
        parameters' squared norms, and a copy of the parameters (the update's start)."""
        buf = self._buffers()
        if self.has_grads:
            self.stats[0].copy_(tensor_dots(buf, grads))
        self.stats[2].copy_(squared_norms(params))
        torch._foreach_copy_(buf, list(params))
        self.has_grads, self.measuring = False, True

    @torch.no_grad()
    def after_last_step(self, params: Sequence[torch.Tensor]) -> None:
        """Right after step L-1: the update's squared norm per tensor."""
        if not self.measuring:
            return
        buf = self._buffers()
        torch._foreach_sub_(buf, list(params))  # theta_before - theta_after
        self.stats[1].copy_(squared_norms(buf))
        self.measuring = False

    def state(self) -> dict:
        """What a checkpoint taken between steps L-2 and L-1 needs to continue the block
        exactly: the statistics and, while held, the kept gradients (tensors only)."""
        out: dict = {"stats": self.stats.detach().cpu()}
        if self.has_grads and self._buf is not None:
            out["grads"] = [b.detach().cpu() for b in self._buf]
        return out

    def load_state(self, state: dict) -> None:
        """Restore `state()`."""
        self.stats.copy_(torch.as_tensor(state["stats"]))
        self.measuring = False
        grads = state.get("grads")
        self.has_grads = grads is not None
        if grads is not None:
            buf = self._buffers()
            torch._foreach_copy_(
                buf, [g.to(b.device, b.dtype) for g, b in zip(grads, buf, strict=True)]
            )
