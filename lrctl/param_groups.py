"""Per-layer parameter groups, and gradient norms per group (torch only, DESIGN rule 2).

Layer-wise LR control (issue #7) gives every layer its own param group, so that a controller
can set one LR per group from that group's own gradient statistics:

    optimizer = torch.optim.SGD(layer_param_groups(model), lr=0.05, momentum=0.9)
    sched = LRController(optimizer, total_steps=1000, per_group=True)

The one definition of a "layer" (`layer_param_groups`) and of a group's gradient norm
(`group_grad_norms`) used by the runtime controller, the inner training loop, the env and the
benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

ParamGrouping = Literal["single", "layer"]
"""How a run's parameters are split into optimizer param groups: one group, or one per layer."""
PARAM_GROUPINGS: tuple[str, ...] = ("single", "layer")


def layer_param_groups(model: nn.Module) -> list[dict[str, list[nn.Parameter]]]:
    """One param group per module that owns trainable parameters directly (an `nn.Linear`,
    a conv, a GRU, an embedding, ...), in `model.modules()` order; each group lists only
    that module's own parameters (`recurse=False`), so nested modules get their own groups.
    A parameter shared by several modules is in the first one's group only."""
    seen: set[int] = set()
    groups: list[dict[str, list[nn.Parameter]]] = []
    for module in model.modules():
        params = [
            p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen
        ]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params})
    return groups


def check_grouping(param_groups: str) -> None:
    """Raise a clear ValueError for an unknown grouping name."""
    if param_groups not in PARAM_GROUPINGS:
        raise ValueError(
            f"param_groups must be one of {', '.join(PARAM_GROUPINGS)}, got {param_groups!r}"
        )


def group_grad_norms(param_norms: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """Gradient norm of each param group: [S, P] per-parameter norms of S steps (parameters in
    group order, `group_sizes` of them per group) -> [n_groups, S].

    A group's norm is the L2 norm of its parameters' norms, the same ops as the global norm
    (`lrctl.features.global_grad_norm`): with one group it is the global norm, bit for bit."""
    chunks = param_norms.split(list(group_sizes), dim=-1)
    return torch.stack([torch.linalg.vector_norm(c, 2.0, dim=-1) for c in chunks])
