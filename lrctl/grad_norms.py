"""Gradient norms: the one definition, and its two documented fast paths.

**Definition.** The gradient norm of a set of parameters is the L2 norm of their per-tensor L2
norms: `tensor_norms` (one `torch._foreach_norm` call), then `combine`. These are the ops
`torch.nn.utils.clip_grad_norm_` uses for gradients on one device, so the number a user's
clipping reports is the number lrctl observes. A param group's norm is `combine` over that
group's per-tensor norms (`group_sizes`); with one group it is the global norm, bit for bit.
Everything stays on the tensors' device (no host sync).

Every part of lrctl that needs a gradient norm calls this module: the inner training loop
(`lrctl.inner_run.InnerRun`), the runtime `LRController`, layer-wise control
(`lrctl.param_groups`) and the batched populations (`lrctl.population`).

**Fast paths** (each tested equal to the definition, tests/test_grad_norms.py):

- `combine_floats`: `combine` on Python floats, for the runtime's CPU decision, where reading
  10 + G numbers one by one costs less than stacking them into a tensor first.
- `row_norms`: the norm of each row of a flat [N, P] gradient buffer, for a population whose
  members' parameters are rows of one buffer: one reduction over all P coordinates instead of
  per-tensor norms first. The same value up to float32 rounding (a different summation order).

Imports torch only: this module is part of the standalone runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch


def tensor_norms(grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor L2 norms of `grads`, one 0-d tensor each (one `torch._foreach_norm` call)."""
    return list(torch._foreach_norm(list(grads), 2.0))


def param_norms(grads: Sequence[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """`tensor_norms` stacked into a [len(grads)] tensor (into `out` if given)."""
    return torch.stack(tensor_norms(grads), out=out)


def combine(
    norms: torch.Tensor,
    group_sizes: Sequence[int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The norm of per-tensor norms along the last dimension ([..., P] -> [...]).

    With `group_sizes` (per-tensor norms in group order, that many per group): each group's
    norm, [..., P] -> [n_groups, ...]. `out` receives the ungrouped result."""
    if group_sizes is None:
        return torch.linalg.vector_norm(norms, 2.0, dim=-1, out=out)
    chunks = norms.split(list(group_sizes), dim=-1)
    return torch.stack([torch.linalg.vector_norm(c, 2.0, dim=-1) for c in chunks])


def grad_norm(params: Sequence[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Global gradient norm of `params` (those without a gradient are left out; 0-d, 0 when
    none has one), as a 0-d tensor on their device. `out` (0-d) receives the result."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        zero = torch.zeros((), device=params[0].device if len(params) else "cpu")
        return zero if out is None else out.copy_(zero)
    return combine(param_norms(grads), out=out)


def combine_floats(norms: Iterable[float]) -> float:
    """Fast path of `combine` on Python floats (exactly rounded sum of squares)."""
    return math.sqrt(math.fsum(float(n) ** 2 for n in norms))


def row_norms(flat: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fast path for a flat [N, P] buffer holding N runs' gradients as rows: each run's global
    gradient norm, [N] (equal to `grad_norm` of the run's tensors up to float32 rounding)."""
    return torch.linalg.vector_norm(flat, 2.0, dim=1, out=out)
