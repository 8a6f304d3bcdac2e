"""One decision per run under torch.distributed: a block's statistics combined across ranks.

Each rank of a data-parallel run has its own `LRController` and sees only its own batches, so
left alone each rank would decide from its own local loss and the replicas' LRs (and then
their parameters) would drift apart. Once per decision, `combine_block` turns every rank's
block into the run's block with one `all_reduce` of K + G numbers (K + n_groups x G in
per-group mode), and every rank computes its features and action from the same numbers:

- **Losses** are averaged over the ranks: with equal per-rank batches, the mean of the ranks'
  losses is the loss of the global batch. A NaN or inf loss on any rank makes that step's mean
  non-finite on every rank, so all ranks take the non-finite branch together.
- **Gradient norms** are combined as sums of squares, each rank contributing, per parameter,
  its local squared norm divided by the number of ranks that hold the same values:
  - a plain tensor (DDP, where gradients are already all-reduced when the optimizer steps, so
    every rank holds the full, identical gradient) counts 1 / world_size on each rank: its
    square is averaged, not counted world_size times;
  - a DTensor (FSDP2's `fully_shard`, tensor parallelism) contributes the square of its local
    shard's norm (`torch._foreach_norm` of DTensor gradients gives partial norms whose local
    values are the shard norms), divided by the size of the mesh dimensions on which it is
    replicated, so that shards add up and replicas are counted once;

  and the norm is the square root of the sum: the same global norm `lrctl.grad_norms` defines,
  now over the whole model.
- **Last-step statistics** (features v3, `lrctl.last_steps`): the gradient dot products and the
  squared norms of the update and of the parameters, per parameter tensor, are weighted by the
  same rule (1 / the number of ranks holding the same values) and summed in the same
  `all_reduce`: dot products and squares of shards add up like the gradient norms' squares.

`active_group` decides whether there is anything to combine: nothing happens (no collective)
when torch.distributed is not available or not initialised, or the group has one rank.
Imports torch and numpy only: this module is part of the standalone runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist


def active_group(process_group: dist.ProcessGroup | None = None) -> dist.ProcessGroup | None:
    """The group whose ranks combine their statistics: `process_group`, or the default group
    when it is None; None when there is nothing to combine (torch.distributed unavailable or
    not initialised, a group of one rank, or a group this rank is not part of)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def _local(norm: torch.Tensor) -> torch.Tensor:
    """This rank's part of a norm: the local value of a DTensor (no communication)."""
    to_local = getattr(norm, "to_local", None)
    return to_local() if to_local is not None else norm


def local_tensors(tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """`tensors` with every DTensor replaced by its local shard (no communication; None
    stays None)."""
    return [None if t is None else _local(t) for t in tensors]


def _share(norm: torch.Tensor, world_size: int) -> float:
    """The weight of this rank's squared norm in the sum over ranks: 1 / (the number of ranks
    of the group that hold the same values)."""
    placements = getattr(norm, "placements", None)
    if placements is None:  # a plain tensor: replicated on every rank (DDP)
        return 1.0 / world_size
    mesh_sizes = norm.device_mesh.mesh.shape
    distinct = 1
    for size, placement in zip(mesh_sizes, placements, strict=True):
        if not placement.is_replicate():  # sharded or partial along this mesh dimension
            distinct *= int(size)
    return distinct / world_size


def _squares(
    part: Sequence[torch.Tensor] | None,
    world_size: int,
    group_sizes: Sequence[int] | None,
    device: torch.device,
) -> torch.Tensor:
    """One step's weighted sums of squared per-parameter norms: [n_groups] (float64)."""
    n_groups = 1 if group_sizes is None else len(group_sizes)
    if not part:
        return torch.zeros(n_groups, dtype=torch.float64, device=device)
    squares = torch.stack([_local(n).to(device, torch.float64) for n in part]).square()
    shares = [_share(n, world_size) for n in part]
    if len(set(shares)) == 1:
        squares = squares * shares[0]
    else:
        squares = squares * torch.tensor(shares, dtype=torch.float64).to(device)
    if group_sizes is None:
        return squares.sum().reshape(1)
    return torch.stack([chunk.sum() for chunk in squares.split(list(group_sizes))])


def _weighted_stats(
    stats: torch.Tensor,
    params: Sequence[torch.Tensor],
    world_size: int,
    group_sizes: Sequence[int] | None,
    device: torch.device,
) -> torch.Tensor:
    """Per-tensor last-step statistics [3, P], each tensor's weighted by its `_share`, summed
    per group: [n_groups * 3] (float64), group by group."""
    shares = torch.tensor([_share(p, world_size) for p in params], dtype=torch.float64)
    weighted = stats.to(device, torch.float64) * shares.to(device)
    if group_sizes is None:
        return weighted.sum(1)
    return torch.cat([chunk.sum(1) for chunk in weighted.split(list(group_sizes), dim=1)])


def combine_block(
    group: dist.ProcessGroup,
    losses: Sequence[torch.Tensor],
    norm_parts: Sequence[Sequence[torch.Tensor] | None],
    group_sizes: Sequence[int] | None = None,
    device: torch.device | None = None,
    step_stats: torch.Tensor | None = None,
    params: Sequence[torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The run's block from every rank's: one `all_reduce` and one host read.

    Args:
        group: the ranks to combine over (see `active_group`).
        losses: this rank's K per-step losses (0-d tensors).
        norm_parts: per step of the block's last G, this rank's per-parameter gradient norms
            (None: no gradients that step, read as 0).
        group_sizes: per-group mode: the norms are per parameter in param-group order, that
            many per group; None: one global norm per step.
        device: where the collective runs (the parameters' device; the losses' by default).
        step_stats: features v3: this rank's per-tensor last-step statistics [3, P]
            (`lrctl.last_steps.LastSteps.stats`, of the local shards), or None.
        params: with `step_stats`, the P parameters they belong to (plain tensors or
            DTensors: their placements give the weights, as for the gradient norms).

    Returns float64 arrays: losses [n_groups, K] (the ranks' mean, the same row for every
    group), gradient norms [n_groups, G], and the run's (or each group's) last-step
    statistics [n_groups, 3] (None without `step_stats`), identical on every rank.
    """
    world_size = dist.get_world_size(group)
    device = device if device is not None else losses[0].device
    n_groups = 1 if group_sizes is None else len(group_sizes)
    k = len(losses)
    loss_sum = torch.stack([loss.reshape(()).to(device, torch.float64) for loss in losses])
    squares = [_squares(part, world_size, group_sizes, device) for part in norm_parts]
    stats = []
    if step_stats is not None:
        if params is None or len(params) != step_stats.shape[1]:
            raise ValueError("step_stats needs the parameters they belong to, one per column")
        stats = [_weighted_stats(step_stats, params, world_size, group_sizes, device)]
    packed = torch.cat([loss_sum, *squares, *stats])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    host = packed.cpu().numpy()  # the one host read per decision
    mean_losses = host[:k] / world_size
    n_squares = len(squares) * n_groups
    norms = host[k : k + n_squares]
    norms = np.sqrt(norms.reshape(-1, n_groups).T) if squares else np.zeros((n_groups, 0))
    combined = host[k + n_squares :].reshape(n_groups, 3) if stats else None
    return np.repeat(mean_losses[None, :], n_groups, axis=0), norms, combined
