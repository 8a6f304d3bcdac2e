"""One inner training run: a task's model under an optimizer, stepped on its own batch stream.

`InnerRun` is the one implementation of "train this task for n more steps while recording
loss, gradient norm and LR". Per-step statistics are written into preallocated tensors on the
task's device and read back in blocks (`lrctl.runs`, one host read per block), so a step never
calls `.item()`. What a block means (divergence, validation, history) is decided in
`lrctl.runs`, which drives this class for a single run (and `lrctl.population` for N runs).
On request (features v3) a block's last two steps also measure the gradient dot product and
the update's size (`lrctl.last_steps.LastSteps`, per parameter tensor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lrctl.grad_norms import combine, grad_norm, param_norms
from lrctl.last_steps import LastSteps, combine_stats
from lrctl.optimizers import evaluation_mode, make_optimizer
from lrctl.param_groups import ParamGrouping, check_grouping, layer_param_groups
from lrctl.tasks.base import Split, Task


@runtime_checkable
class LossDrivenPolicy(Protocol):
    """An LR policy stepped with the training loss (lrctl's controller, scripted policies)."""

    step_takes_loss: bool

    def step(self, loss: torch.Tensor) -> None: ...


def _policy_stepper(policy: object | None) -> Callable[[torch.Tensor], None] | None:
    """How `InnerRun` steps a policy after each optimizer step (resolved once per block)."""
    if policy is None or isinstance(policy, ReduceLROnPlateau):
        return None  # ReduceLROnPlateau is stepped with the validation loss, by train()
    if isinstance(policy, LossDrivenPolicy):
        return policy.step
    step = policy.step  # a torch LRScheduler
    return lambda _loss: step()


def params_finite(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """0-d bool tensor: every element of every parameter is finite (one NaN is enough to fail).

    One foreach norm per parameter: a tensor's L2 norm is NaN or inf exactly when one of its
    elements is (or when finite values overflow float32, which is divergence too)."""
    return torch.isfinite(torch.stack(torch._foreach_norm(params, 2.0))).all()


class _BatchStream:
    """Shuffled minibatches, epoch after epoch, from a seeded generator on the CPU."""

    def __init__(self, split: Split, batch_size: int, seed: int) -> None:
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.gen = torch.Generator().manual_seed(seed)
        self.batches: list[torch.Tensor] = []

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batches:
            perm = torch.randperm(len(self.split), generator=self.gen)
            n_full = len(perm) // self.batch_size
            perm = perm[: n_full * self.batch_size].to(self.split.x.device)
            self.batches = list(perm.view(n_full, self.batch_size).unbind(0))[::-1]
        idx = self.batches.pop()
        # index_select: the same rows as split.x[idx], with less per-call overhead.
        return self.split.x.index_select(0, idx), self.split.y.index_select(0, idx)


class InnerRun:
    """A live inner training run: fresh model, optimizer, batch stream and stat buffers.

    `seed` fixes initialisation and batch order. `capacity` bounds the number of steps recorded
    (the run's horizon). `param_groups="layer"` gives the optimizer one param group per layer
    (`lrctl.param_groups.layer_param_groups`), all at `lr`, and records per-parameter gradient
    norms on the steps that read them, for per-group norms (`group_grad_norms`).
    """

    def __init__(
        self,
        task: Task,
        optimizer: str,
        lr: float,
        capacity: int,
        seed: int,
        device: torch.device | str = "cpu",
        param_groups: ParamGrouping = "single",
    ) -> None:
        check_grouping(param_groups)
        self.device = torch.device(device)
        self.task = task if device == "cpu" else task.to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = task.model_fn().to(self.device)
        groups = layer_param_groups(self.model) if param_groups == "layer" else None
        if groups is None:
            self.params = [p for p in self.model.parameters() if p.requires_grad]
        else:  # in group order, which per-parameter norms follow
            self.params = [p for g in groups for p in g["params"]]
        self.optimizer = make_optimizer(optimizer, groups or self.params, lr)
        self.group_sizes = [len(g["params"]) for g in self.optimizer.param_groups]
        self.base_lr = float(lr)
        self.batches = _BatchStream(self.task.train, task.batch_size, seed)
        self.capacity = int(capacity)
        self.loss_buf = torch.empty(self.capacity, device=self.device)
        self.gnorm_buf = torch.zeros(self.capacity, device=self.device)  # 0 where not read
        # Hot-path helpers: per-step 0-d views of the buffers (written with `out=`/`copy_`,
        # cheaper than `buf[t] = x`) and a scratch vector for the per-tensor gradient norms.
        self._loss_at = self.loss_buf.unbind()
        self._gnorm_at = self.gnorm_buf.unbind()
        self._norms = torch.empty(len(self.params), device=self.device)
        # Per-layer groups: every read step's per-parameter norms, a row per step.
        self.param_norm_buf = (
            torch.zeros(self.capacity, len(self.params), device=self.device) if groups else None
        )
        self._param_norms_at = None if groups is None else self.param_norm_buf.unbind()
        self._fast_norm = all(
            p.dtype == self._norms.dtype and p.device == self.device for p in self.params
        )
        self.lrs: list[float] = []
        self.t = 0
        self.diverged_at: int | None = None
        self.last_steps: LastSteps | None = None  # features v3's measurements, on request

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float | Sequence[float]) -> None:
        """Write `lr` into every param group (a sequence: one LR per group, in order)."""
        groups = self.optimizer.param_groups
        lrs = [float(lr)] * len(groups) if np.ndim(lr) == 0 else [float(v) for v in lr]
        for group, value in zip(groups, lrs, strict=True):
            group["lr"] = value

    def step(self, policy: object | None = None) -> torch.Tensor:
        """One optimizer step on the next minibatch; returns the (detached) training loss."""
        loss = self._step()
        stepper = _policy_stepper(policy)
        if stepper is not None:
            stepper(loss)
        return loss

    def _step(self, read_grad_norm: bool = True, from_end: int = -1) -> torch.Tensor:
        """One step; `from_end` = 1 or 0: the block's step L-2 or L-1, whose last-step
        statistics `LastSteps` measures (features v3); any other value: no measurement."""
        t = self.t
        x, y = self.batches.next()
        for p in self.params:  # optimizer.zero_grad(set_to_none=True), without its overhead
            p.grad = None
        loss = self.task.loss_fn(self.model(x), y)
        loss.backward()
        last = self.last_steps if from_end in (0, 1) else None
        if last is not None:
            grads = [p.grad for p in self.params]
            if from_end == 1:
                last.keep_grads(grads)
            else:
                last.before_last_step(grads, self.params)
        grads = [p.grad for p in self.params if p.grad is not None] if read_grad_norm else None
        if grads is None:
            pass  # this step's gradient norm is not read (its buffer entry stays 0)
        elif self._fast_norm and len(grads) == len(self.params):
            # grad_norm()'s ops, into preallocated memory: per-tensor norms, then their norm.
            norms = self._norms if self._param_norms_at is None else self._param_norms_at[t]
            combine(param_norms(grads, out=norms), out=self._gnorm_at[t])
        else:  # some parameter got no gradient this step, or other dtypes than the buffers'
            self._gnorm_at[t].copy_(grad_norm(self.params))
            if self._param_norms_at is not None:
                zero = torch.zeros((), device=self.device)
                norms = [zero if p.grad is None else p.grad.norm() for p in self.params]
                self._param_norms_at[t].copy_(torch.stack(norms))
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        if last is not None and from_end == 0:
            last.after_last_step(self.params)
        loss = loss.detach()
        self._loss_at[t].copy_(loss)
        self.t = t + 1
        return loss

    def advance(
        self,
        n: int,
        policy: object | None = None,
        grad_norm_steps: int | None = None,
        step_lrs: Sequence[float] | None = None,
        step_stats: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run up to `n` steps (never past capacity); return this block's losses and gradient
        norms as on-device views (no host sync). With `grad_norm_steps` = G, only the block's
        last G steps read their gradient norm and only those G norms are returned (the
        controller's observation, `ActionSpec.grad_norm_steps`); None reads every step.
        `step_lrs[i]`: the LR of the block's step i (every param group), if given.
        `step_stats`: measure the block's last-step statistics (features v3) on its last two
        steps, per parameter tensor (`block_step_stats`)."""
        start = self.t
        stepper = _policy_stepper(policy)
        m = min(n, self.capacity - self.t)
        first_read = 0 if grad_norm_steps is None else max(m - grad_norm_steps, 0)
        if step_stats:
            if self.last_steps is None:
                self.last_steps = LastSteps(self.params)
            self.last_steps.start_block()
        for i in range(m):
            if step_lrs is not None:
                self.set_lr(float(step_lrs[i]))
            loss = self._step(i >= first_read, m - 1 - i if step_stats else -1)
            if stepper is not None:
                stepper(loss)
        return self.loss_buf[start : self.t], self.gnorm_buf[start + first_read : self.t]

    def state_dict(self) -> dict:
        """Everything to continue this run elsewhere (model, optimizer, batch order, step) and
        its recorded history so far (LR, train loss and gradient norm per step)."""
        t = self.t
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.batches.gen.get_state(),
            "batches": list(self.batches.batches),
            "t": t,
            "lrs": torch.tensor(self.lrs, dtype=torch.float64),
            "train_loss": self.loss_buf[:t].clone(),
            "grad_norm": self.gnorm_buf[:t].clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a `state_dict()` in this run (same task, optimizer kind and capacity)."""
        t = int(state["t"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.gen.set_state(state["generator"])
        self.batches.batches = list(state["batches"])
        self.t = t
        self.lrs = [float(v) for v in state["lrs"]]
        self.loss_buf[:t] = state["train_loss"]
        self.gnorm_buf[:t] = state["grad_norm"]

    def block_step_stats(self, by_group: bool = False) -> torch.Tensor:
        """The last `advance(..., step_stats=True)` block's last-step statistics
        (`lrctl.last_steps.STAT_NAMES`) on the device: the run's, [1, 3], or with `by_group`
        each param group's, [n_groups, 3]."""
        if self.last_steps is None:
            raise ValueError(
                "no block measured its last-step statistics (advance(step_stats=True))"
            )
        return combine_stats(self.last_steps.stats, self.group_sizes if by_group else None)

    def group_grad_norms(self, start: int, stop: int) -> torch.Tensor:
        """Each param group's gradient norm on steps [start, stop) (0 on steps that did not
        read it), [n_groups, stop - start], on the device; needs `param_groups="layer"`."""
        if self.param_norm_buf is None:
            raise ValueError("per-group gradient norms need InnerRun(param_groups='layer')")
        return combine(self.param_norm_buf[start:stop], self.group_sizes)

    @torch.no_grad()
    def evaluate(self, split: str = "val", accuracy: bool = True) -> tuple[float, float]:
        """(mean loss, accuracy) on a split; accuracy is NaN for non-classification tasks and
        when not asked for (the env's reward needs the loss only). A schedule-free optimizer
        is switched to its evaluation weights for it, and back to training."""
        data: Split = getattr(self.task, split)
        was_training = self.model.training
        self.model.eval()
        with evaluation_mode(self.optimizer):
            out = self.model(data.x)
        loss = float(self.task.loss_fn(out, data.y))
        acc = math.nan
        if accuracy and self.task.classification:
            pred = out.argmax(-1)
            target = data.y if pred.shape == data.y.shape else data.y[:, -1]
            acc = float((pred == target).float().mean())
        self.model.train(was_training)
        return loss, acc
