"""Batched optimizer updates: N runs' parameters stacked on a leading member dimension, one
learning rate per member.

`lrctl.population` steps N small training runs as one tensor program; this is its optimizer.
Each parameter is one tensor [N, ...] (member i's parameter is row i), and every update is a
handful of `torch._foreach_*` ops over all parameters at once, with the per-member learning
rate (and Adam's per-member bias corrections) broadcast from [N] vectors.

The hyperparameters are read from the torch optimizer `lrctl.optimizers.make_optimizer` builds
for the name (never restated here), and the formulas are torch.optim's single-tensor ones (the
path torch takes for CPU tensors), so member i follows the trajectory of its own torch
optimizer up to float rounding (tests/test_functional_optim.py: 100 steps, allclose). Options
lrctl never samples (amsgrad, centered RMSprop, SGD dampening, ...) raise a ValueError rather
than being silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lrctl.optimizers import make_optimizer

_STATE_KEYS: dict[type[torch.optim.Optimizer], tuple[str, ...]] = {
    torch.optim.SGD: ("momentum_buffer",),
    torch.optim.Adagrad: ("sum",),
    torch.optim.RMSprop: ("square_avg",),
    torch.optim.Adam: ("exp_avg", "exp_avg_sq"),
}
"""Per-parameter state of each optimizer kind, named as torch.optim names it (`opt.state[p]`)."""

# Hyperparameters each kind must have at these values (what the batched update does not model).
_UNSUPPORTED: dict[type[torch.optim.Optimizer], dict[str, object]] = {
    torch.optim.SGD: {"dampening": 0, "maximize": False},
    torch.optim.Adagrad: {"lr_decay": 0, "maximize": False},
    torch.optim.RMSprop: {"momentum": 0, "centered": False, "maximize": False},
    torch.optim.Adam: {"amsgrad": False, "maximize": False},
}


def torch_optimizer_kind(name: str) -> tuple[type[torch.optim.Optimizer], dict]:
    """The torch.optim class (SGD, Adagrad, RMSprop or Adam; AdamW is Adam with decoupled
    weight decay) and hyperparameters that `make_optimizer(name, ...)` uses."""
    probe = make_optimizer(name, [torch.zeros(1, requires_grad=True)], 1.0)
    kind = next((k for k in _STATE_KEYS if isinstance(probe, k)), None)
    if kind is None:
        raise ValueError(
            f"optimizer {name!r} ({type(probe).__name__}) has no batched update; batched "
            f"populations support {', '.join(k.__name__ for k in _STATE_KEYS)} (and AdamW)"
        )
    hp = dict(probe.defaults)
    hp.setdefault("decoupled_weight_decay", isinstance(probe, torch.optim.AdamW))
    for key, allowed in _UNSUPPORTED[kind].items():
        if hp.get(key, allowed) != allowed:
            raise ValueError(
                f"optimizer {name!r}: the batched update does not model {key}={hp[key]!r}"
            )
    return kind, hp


class BatchedOptimizer:
    """torch.optim's update for N stacked runs, each at its own learning rate.

    `params`: leaf tensors [N, ...] updated in place by `step(grads)`. `lr` is the [N] float64
    learning rate of each member (write it with `set_lr`). `state[key]` lists one [N, ...]
    tensor per parameter under torch's state names; `steps` counts each member's updates.
    `reset(rows)` gives those members a fresh optimizer (zero state, step 0).
    """

    def __init__(self, name: str, params: Sequence[torch.Tensor]) -> None:
        self.name = name
        self.kind, self.hp = torch_optimizer_kind(name)
        self.params = list(params)
        p0 = self.params[0]
        self.n = int(p0.shape[0])
        self.lr = torch.zeros(self.n, dtype=torch.float64, device=p0.device)
        self.steps = torch.zeros(self.n, dtype=torch.float64, device=p0.device)
        self._init_value = float(self.hp.get("initial_accumulator_value", 0.0))
        plain_sgd = self.kind is torch.optim.SGD and not self.hp["momentum"]
        keys = () if plain_sgd else _STATE_KEYS[self.kind]  # torch keeps no buffer for plain SGD
        self.state: dict[str, list[torch.Tensor]] = {
            key: [torch.full_like(p, self._init_value if key == "sum" else 0.0) for p in params]
            for key in keys
        }
        # Per-member scale factors in the parameters' dtype, and a broadcastable view of each
        # per parameter ([N, 1, ..., 1]): written once per step, read by the foreach ops.
        self._scales = torch.zeros(3, self.n, dtype=p0.dtype, device=p0.device)
        self._views = [
            [s.view(-1, *([1] * (p.dim() - 1))) for p in self.params] for s in self._scales
        ]

    def set_lr(self, lr: torch.Tensor | Sequence[float]) -> None:
        """Each member's learning rate ([N])."""
        self.lr.copy_(torch.as_tensor(lr, dtype=torch.float64))

    def reset(self, rows: torch.Tensor | slice | None = None) -> None:
        """A fresh optimizer for the members in `rows` (all if None)."""
        rows = slice(None) if rows is None else rows
        with torch.no_grad():
            self.steps[rows] = 0.0
            for key, tensors in self.state.items():
                for t in tensors:
                    t[rows] = self._init_value if key == "sum" else 0.0

    def state_tensors(self) -> list[torch.Tensor]:
        """Every per-member tensor (state, step counts, learning rates), in a fixed order: rows
        of two optimizers of one kind are exchanged through it (`copy_rows`)."""
        return [t for tensors in self.state.values() for t in tensors] + [self.steps, self.lr]

    def copy_rows(self, rows: torch.Tensor, other: BatchedOptimizer) -> None:
        """Member rows[j] takes member j of `other` (same kind and parameter shapes)."""
        with torch.no_grad():
            for dst, src in zip(self.state_tensors(), other.state_tensors(), strict=True):
                dst.index_copy_(0, rows, src)

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """One update of every member, with gradients [N, ...] aligned with `params`."""
        self.steps += 1.0
        if self.kind is torch.optim.SGD:
            self._sgd(list(grads))
        elif self.kind is torch.optim.Adagrad:
            self._adagrad(list(grads))
        elif self.kind is torch.optim.RMSprop:
            self._rmsprop(list(grads))
        else:
            self._adam(list(grads))

    # --- the updates (torch/optim/<kind>.py, _single_tensor_<kind>) ------------------------

    def _coupled_decay(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        wd = self.hp.get("weight_decay", 0.0)
        if wd and not self.hp.get("decoupled_weight_decay", False):
            return torch._foreach_add(grads, self.params, alpha=wd)
        return grads

    def _scaled(self, i: int, value: torch.Tensor) -> list[torch.Tensor]:
        """Scale slot i set to `value` ([N], any float dtype), as per-parameter views."""
        self._scales[i].copy_(value)
        return self._views[i]

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        grads = self._coupled_decay(grads)
        momentum = self.hp["momentum"]
        if momentum:
            # torch starts the buffer at the first gradient; 0 * momentum + g is the same.
            bufs = self.state["momentum_buffer"]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
            nesterov = self.hp["nesterov"]
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
        torch._foreach_addcmul_(self.params, grads, self._scaled(0, -self.lr))

    def _adagrad(self, grads: list[torch.Tensor]) -> None:
        grads = self._coupled_decay(grads)
        sums = self.state["sum"]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, self.hp["eps"])
        self._addcdiv(grads, std, self._scaled(0, -self.lr))

    def _rmsprop(self, grads: list[torch.Tensor]) -> None:
        grads = self._coupled_decay(grads)
        alpha = self.hp["alpha"]
        square_avg = self.state["square_avg"]
        torch._foreach_mul_(square_avg, alpha)
        torch._foreach_addcmul_(square_avg, grads, grads, value=1 - alpha)
        avg = torch._foreach_sqrt(square_avg)
        torch._foreach_add_(avg, self.hp["eps"])
        self._addcdiv(grads, avg, self._scaled(0, -self.lr))

    def _adam(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.hp["betas"]
        wd = self.hp["weight_decay"]
        if wd and self.hp["decoupled_weight_decay"]:
            torch._foreach_mul_(self.params, self._scaled(2, 1.0 - self.lr * wd))
        grads = self._coupled_decay(grads)
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        # Bias corrections in float64 per member, as torch computes them in Python floats.
        bias_correction1 = 1.0 - torch.pow(beta1, self.steps)
        bias_correction2_sqrt = (1.0 - torch.pow(beta2, self.steps)).sqrt()
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, self._scaled(1, bias_correction2_sqrt))
        torch._foreach_add_(denom, self.hp["eps"])
        self._addcdiv(exp_avg, denom, self._scaled(0, -self.lr / bias_correction1))

    def _addcdiv(
        self, num: list[torch.Tensor], den: list[torch.Tensor], value: list[torch.Tensor]
    ) -> None:
        """params += value * num / den, in addcdiv's order of operations."""
        torch._foreach_addcdiv_(self.params, torch._foreach_mul(num, value), den)
