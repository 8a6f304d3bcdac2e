"""Hypergradient descent: SGD and Adam that adapt their own learning rate online.

Baydin et al. 2018, "Online Learning Rate Adaptation with Hypergradient Descent" (ICLR). The
LR α is itself trained by gradient descent on the loss: for an update θ_t = θ_{t-1} + u_t(α),
the derivative of f(θ_{t-1}) with respect to the α used one step earlier is the hypergradient
h_t = g_t · ∂u_{t-1}/∂α, and

    α_t = α_{t-1} − β h_t                     (then the base optimizer's step, with α_t)

| optimizer | ∂u_{t-1}/∂α                | so α_t =                                   |
| --------- | -------------------------- | ------------------------------------------ |
| SGD-HD    | −g_{t-1}                   | α_{t-1} + β g_t · g_{t-1}                  |
| Adam-HD   | −m̂_{t-1} / (√v̂_{t-1} + ε) | α_{t-1} + β g_t · m̂_{t-1} / (√v̂_{t-1} + ε) |

with g_t the gradient at θ_{t-1} (including the L2 term when weight_decay > 0) and m̂, v̂
Adam's bias-corrected moments. Before the first step there is no previous update, so h_1 = 0.
The paper's code is not on PyPI; this is a fresh implementation of its Algorithms 4 and 6.

Choices the paper leaves open, made here:

- **β is relative to the initial LR.** `rel_hypergrad_lr` = β / α_0, per param group. lrctl's
  tasks have reference LRs from 3e-4 to 3 and the benchmark tunes α_0 over three decades; a
  fixed β would adapt α by a negligible fraction at one end of that range and blow it up at the
  other, while β ∝ α_0 makes the relative change Δα/α_0 = β_rel · g_t · (previous direction)
  independent of α_0. The paper's absolute β is `rel_hypergrad_lr = β / lr`.
- **Defaults: β_rel = 0.01 (SGD-HD), 1e-3 (Adam-HD).** The paper's settings at its
  α_0 = 1e-3 (β = 1e-3 for SGD-HD, 1e-7 for Adam-HD, its logistic-regression and MLP runs)
  are β_rel = 1 and 1e-4. These were chosen instead on lrctl's *train* suite (not on the
  eval suite the benchmark reports): its five families at x0.1, x1, x10 of the base
  optimizer's reference LR, 300 steps (char_mlp 150), seeds 1 and 2, final validation loss
  against the base optimizer at the same α_0. SGD-HD at β_rel = 1 diverged in 3 of the 15
  settings where plain SGD did not and ended 5-70x worse on char_mlp; Adam-HD at 1e-4 moved α
  by at most 1.7x in 200 steps. β_rel = 0.01 (of 0.003, 0.01, 0.03, 1) and 1e-3 (of 1e-4,
  1e-3, 3e-3) were never more than 6% worse than the base optimizer and better on average
  (mean log-ratio of the final validation losses -0.14 and -0.16).
- **The LR stays positive.** α_t = max(α_{t-1} − β h_t, lr_floor · α_0), lr_floor = 1e-12:
  the additive rule can overshoot below zero after a run of negative gradient agreements, and a
  negative LR would ascend the loss. At the floor the run is in effect paused; a later positive
  agreement raises α again. A non-finite h_t (a diverging run) leaves α unchanged.
- **One α per param group**, its hypergradient the dot product over that group's parameters
  (with one group, which is how lrctl builds them, that is the paper's global LR).
- **The LR lives in `param_groups[i]["lr"]`**: read as α_{t-1} at every step and written back as
  α_t, so loggers and `get_last_lr()` see the adapted value, and a scheduler or lrctl's
  controller that rescales it composes with the adaptation. α_0 is kept as the group's
  `initial_lr` (torch's schedulers use the same key for the same value).
- α is a Python float, as torch schedulers and loggers expect: reading h_t costs one host
  synchronisation per step and group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

Group = dict[str, Any]
Tensors = list[torch.Tensor]

LR_FLOOR = 1e-12
"""Default lower bound on α, as a fraction of the group's initial LR."""


def _dot(xs: Iterable[torch.Tensor], ys: Iterable[torch.Tensor | None]) -> float:
    """Σ x·y over pairs whose y exists (a parameter without a previous update adds nothing)."""
    terms = [
        torch.dot(x.flatten(), y.flatten()) for x, y in zip(xs, ys, strict=True) if y is not None
    ]
    return float(torch.stack(terms).sum()) if terms else 0.0


class _HypergradientOptimizer(Optimizer):
    """What SGD-HD and Adam-HD share: checks, α_0 bookkeeping, the α update and `step`; a
    subclass gives its previous update direction and its base step."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if not defaults["lr"] > 0:
            raise ValueError(f"lr must be positive (β is relative to it), got {defaults['lr']}")
        if not defaults["rel_hypergrad_lr"] >= 0:
            raise ValueError(
                f"rel_hypergrad_lr must be non-negative, got {defaults['rel_hypergrad_lr']}"
            )
        if not 0 < defaults["lr_floor"] < 1:
            raise ValueError(f"lr_floor must be in (0, 1), got {defaults['lr_floor']}")
        if not defaults["weight_decay"] >= 0:
            raise ValueError(f"weight_decay must be non-negative, got {defaults['weight_decay']}")
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if not group["lr"] > 0:
            raise ValueError(f"a param group's lr must be positive, got {group['lr']}")
        group.setdefault("initial_lr", float(group["lr"]))

    @staticmethod
    def _adapt_lr(group: dict[str, Any], h: float) -> float:
        """α_t = max(α_{t-1} − β h_t, floor) with β = rel_hypergrad_lr · α_0; written into the
        group and returned."""
        alpha0 = group["initial_lr"]
        lr = float(group["lr"])
        if math.isfinite(h):
            lr = max(lr - group["rel_hypergrad_lr"] * alpha0 * h, group["lr_floor"] * alpha0)
        group["lr"] = lr
        return lr

    @staticmethod
    def _grads(group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The group's parameters that have a gradient, and g_t (plus the L2 term)."""
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if group["weight_decay"] and params:
            grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
        return params, grads

    def _previous_direction(self, group: Group, params: Tensors) -> list[torch.Tensor | None]:
        """d_{t-1} per parameter, the last update being u_{t-1} = −α d_{t-1} (so
        ∂u_{t-1}/∂α = −d_{t-1}); None where there was no update yet."""
        raise NotImplementedError

    def _update(self, group: Group, params: Tensors, grads: Tensors, lr: float) -> None:
        """The base optimizer's step with LR `lr`."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Per group: h_t = −g_t · d_{t-1}, α_t = max(α_{t-1} − β h_t, floor), then the base
        optimizer's step with α_t."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._grads(group)
            if params:
                h = -_dot(grads, self._previous_direction(group, params))
                self._update(group, params, grads, self._adapt_lr(group, h))
        return loss


class SGDHD(_HypergradientOptimizer):
    """SGD with hypergradient descent on its LR (SGD-HD, the paper's Algorithm 4).

    h_t = −g_t · g_{t-1};  α_t = α_{t-1} − β h_t;  θ_t = θ_{t-1} − α_t g_t.

    Args:
        params: parameters or param groups.
        lr: the initial LR α_0 (positive).
        rel_hypergrad_lr: β / α_0 (default 0.01; the paper's β = 1e-3 at α_0 = 1e-3 is 1).
        lr_floor: α never falls below lr_floor · α_0.
        weight_decay: L2 penalty added to the gradient (default 0).

    State per parameter: `prev_grad`, g_{t-1} (one extra copy of the gradient).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        rel_hypergrad_lr: float = 0.01,
        lr_floor: float = LR_FLOOR,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(
            lr=lr, rel_hypergrad_lr=rel_hypergrad_lr, lr_floor=lr_floor, weight_decay=weight_decay
        )
        super().__init__(params, defaults)

    def _previous_direction(self, group: Group, params: Tensors) -> list[torch.Tensor | None]:
        return [self.state[p].get("prev_grad") for p in params]

    def _update(self, group: Group, params: Tensors, grads: Tensors, lr: float) -> None:
        torch._foreach_add_(params, grads, alpha=-lr)
        for p, g in zip(params, grads, strict=True):
            self.state[p]["prev_grad"] = g.clone()


class AdamHD(_HypergradientOptimizer):
    """Adam with hypergradient descent on its LR (Adam-HD, the paper's Algorithm 6).

    h_t = −g_t · m̂_{t-1} / (√v̂_{t-1} + ε);  α_t = α_{t-1} − β h_t;  then Adam's step with α_t:
    m_t, v_t the moving averages of g_t and g_t², θ_t = θ_{t-1} − α_t m̂_t / (√v̂_t + ε).

    Args:
        params: parameters or param groups.
        lr: the initial LR α_0 (positive).
        betas: Adam's (β1, β2).
        eps: Adam's ε.
        rel_hypergrad_lr: β / α_0 (default 1e-3; the paper's β = 1e-7 at α_0 = 1e-3 is 1e-4).
        lr_floor: α never falls below lr_floor · α_0.
        weight_decay: L2 penalty added to the gradient, as in torch.optim.Adam (default 0).

    State per parameter: `step`, `exp_avg` (m), `exp_avg_sq` (v), as torch's Adam keeps; the
    previous direction m̂_{t-1} / (√v̂_{t-1} + ε) is recomputed from them rather than stored.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        rel_hypergrad_lr: float = 1e-3,
        lr_floor: float = LR_FLOOR,
        weight_decay: float = 0.0,
    ) -> None:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            rel_hypergrad_lr=rel_hypergrad_lr,
            lr_floor=lr_floor,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    @staticmethod
    def _direction(
        state: dict[str, Any], beta1: float, beta2: float, eps: float
    ) -> torch.Tensor | None:
        """m̂ / (√v̂ + ε) from the current moments (None before the first step)."""
        k = state.get("step", 0)
        if k == 0:
            return None
        denom = (state["exp_avg_sq"] / (1 - beta2**k)).sqrt_().add_(eps)
        return state["exp_avg"] / (1 - beta1**k) / denom

    def _previous_direction(self, group: Group, params: Tensors) -> list[torch.Tensor | None]:
        beta1, beta2 = group["betas"]
        return [self._direction(self.state[p], beta1, beta2, group["eps"]) for p in params]

    def _update(self, group: Group, params: Tensors, grads: Tensors, lr: float) -> None:
        beta1, beta2 = group["betas"]
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            state["exp_avg"].lerp_(g, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.add_(self._direction(state, beta1, beta2, group["eps"]), alpha=-lr)
