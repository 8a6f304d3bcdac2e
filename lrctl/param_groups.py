"""Per-layer parameter groups (torch only: part of the standalone runtime).

Layer-wise LR control gives every layer its own param group, so that a controller can set one
LR per group from that group's own gradient statistics:

    optimizer = torch.optim.SGD(layer_param_groups(model), lr=0.05, momentum=0.9)
    sched = LRController(optimizer, total_steps=1000, per_group=True)

The one definition of a "layer" (`layer_param_groups`), used by the runtime controller, the
inner training loop, the env and the benchmark; a group's gradient norm is
`lrctl.grad_norms.combine` over the group's per-tensor norms."""

from __future__ import annotations

from typing import Literal

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
