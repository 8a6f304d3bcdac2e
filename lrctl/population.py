"""A population: N inner training runs of one task, stepped as one tensor program.

One small model on a CPU core spends most of a training step in Python and dispatch overhead.
`Population` stacks N runs of one task (one architecture, batch size and optimizer kind) on a
leading member dimension, so a step is the same few dozen tensor ops for every N:

- parameters: one row per member of a flat [N, P] buffer, viewed as the model's parameters
  ([N, ...] each); member i's row is initialised by `task.model_fn()` under member i's seed,
  exactly as `training.InnerRun` does;
- forward: batched matmuls for MLPs (`nn.Sequential` of Linear, ReLU, Tanh with cross-entropy
  or MSE), `torch.func.functional_call` under `torch.vmap` for every other module;
- gradients: written layer by layer for MLPs (`BatchedMLP`), else autograd on the sum of the
  members' losses (member i's slice of the gradient is exactly the gradient of its own loss:
  the members share no computation);
- batches: member i's minibatches are those of `training._BatchStream` with its seed;
- optimizer: `lrctl.functional_optim.BatchedOptimizer`, one learning rate per member.

Statistics go into preallocated [K, N] buffers on the device; `run_block` returns them for the
caller's one host read per decision block. On request (features v3), each member's last two
steps of the block also measure `lrctl.last_steps.STAT_NAMES` with the flat-buffer fast path
(`row_dots`, `row_norms`: one reduction per member over all its coordinates). Only the
population's own bookkeeping loops over members in Python (initialising a member, refilling its
epoch of batch indices), never a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lrctl.functional_optim import BatchedOptimizer
from lrctl.grad_norms import row_norms
from lrctl.last_steps import row_dots
from lrctl.tasks.base import Task


class BatchStreams:
    """Each member's shuffled minibatches, the sequence `training._BatchStream` yields with the
    member's seed: per epoch one `torch.randperm` from the member's CPU generator, the full
    batches of it in order.

    Indices are queued per member ([N, Q, B]) and served K steps at a time; a member's queue is
    topped up with whole epochs only when it holds fewer than K batches.
    """

    def __init__(self, n_examples: int, batch_size: int, n: int, device: torch.device) -> None:
        self.n_examples = n_examples
        self.batch_size = min(batch_size, n_examples)
        self.per_epoch = n_examples // self.batch_size
        self.n = n
        self.device = device
        self.gens: list[torch.Generator | None] = [None] * n
        self.queue = torch.zeros(n, 0, self.batch_size, dtype=torch.long, device=device)
        self.cursor = np.zeros(n, dtype=np.int64)  # next batch of each member in its queue
        self.filled = np.zeros(n, dtype=np.int64)  # batches queued per member

    def reset(self, rows: Sequence[int], seeds: Sequence[int]) -> None:
        """Members `rows` restart their streams from `seeds`."""
        for r, seed in zip(rows, seeds, strict=True):
            self.gens[r] = torch.Generator().manual_seed(int(seed))
        self.cursor[list(rows)] = 0
        self.filled[list(rows)] = 0

    def take(self, k: int) -> torch.Tensor:
        """The next k batches of every member, [k, N, B] example indices."""
        need = self.cursor + k > self.filled
        if need.any():
            self._grow(k + self.per_epoch)
            for r in np.flatnonzero(need):
                self._refill(int(r), k)
        pos = torch.from_numpy(self.cursor[:, None] + np.arange(k)[None, :]).to(self.device)
        self.cursor += k
        rows = torch.arange(self.n, device=self.device)[:, None]
        return self.queue[rows, pos].transpose(0, 1)  # [k, N, B]

    def _grow(self, capacity: int) -> None:
        """Room for `capacity` batches per member in the queue."""
        if self.queue.shape[1] < capacity:
            grown = torch.zeros(self.n, capacity, self.batch_size, dtype=torch.long)
            grown[:, : self.queue.shape[1]] = self.queue.cpu()
            self.queue = grown.to(self.device)

    def _refill(self, r: int, k: int) -> None:
        """Move member r's unread batches to the front, then append whole epochs until k wait."""
        gen = self.gens[r]
        if gen is None:
            raise RuntimeError(f"member {r} has no batch stream; call reset() for it first")
        left = int(self.filled[r] - self.cursor[r])
        q = self.queue[r]
        if left:
            q[:left] = q[self.cursor[r] : self.filled[r]].clone()
        while left < k:
            perm = torch.randperm(self.n_examples, generator=gen)
            perm = perm[: self.per_epoch * self.batch_size].view(self.per_epoch, self.batch_size)
            q[left : left + self.per_epoch] = perm.to(self.device)
            left += self.per_epoch
        self.cursor[r], self.filled[r] = 0, left

    def copy_rows(self, rows: Sequence[int], other: BatchStreams) -> None:
        """Member rows[j] takes over member j's stream of `other` (same task and batch size)."""
        self._grow(other.queue.shape[1])
        for j, r in enumerate(rows):
            self.gens[r] = other.gens[j]
            m = int(other.filled[j])
            self.queue[r, :m] = other.queue[j, :m]
            self.cursor[r], self.filled[r] = other.cursor[j], m


class BatchedMLP:
    """The fast path for MLPs (`nn.Sequential` of Linear, ReLU and Tanh, starting and ending
    with a Linear) under cross-entropy or MSE: batched matmuls, gradients written by hand.

    Activations are feature-major ([N, features, B]): each layer is one `baddbmm`, and
    cross-entropy's log-softmax runs over dim 1, a much faster CPU kernel than over a short last
    dimension. The backward pass is the chain rule layer by layer with the kernels autograd
    itself calls (`threshold_backward`, `tanh_backward`), each weight gradient one `bmm` into
    its slice of the flat gradient: no graph is recorded, nothing is concatenated (about 15%
    faster than autograd here; tests/test_batched_env.py holds both paths to `LRControlEnv`).
    """

    _KINDS: ClassVar[dict[type[nn.Module], str]] = {
        nn.Linear: "linear",
        nn.ReLU: "relu",
        nn.Tanh: "tanh",
    }

    def __init__(self, plan: list[str], cross_entropy: bool) -> None:
        self.plan, self.cross_entropy = plan, cross_entropy

    @classmethod
    def build(cls, module: nn.Module, loss_fn: Callable) -> BatchedMLP | None:
        """The fast path for `module` under `loss_fn`, or None where it does not apply."""
        if type(module) is not nn.Sequential or loss_fn not in (F.cross_entropy, F.mse_loss):
            return None
        plan = [cls._KINDS.get(type(m)) for m in module]
        if not plan or None in plan or plan[0] != "linear" or plan[-1] != "linear":
            return None
        if any(m.bias is None for m in module if isinstance(m, nn.Linear)):
            return None
        return cls(plan, loss_fn is F.cross_entropy)  # type: ignore[arg-type]

    @staticmethod
    def _layers(
        kinds: list[str], params: list[torch.Tensor], h: torch.Tensor, saved: list
    ) -> torch.Tensor:
        """Forward through `kinds`; appends what each layer's backward reads to `saved` (a
        linear layer: its input; an activation: its output)."""
        i = 0
        for kind in kinds:
            if kind == "linear":
                saved.append(h)
                h = torch.baddbmm(params[i + 1].unsqueeze(2), params[i], h)
                i += 2
            else:
                h = torch.relu_(h) if kind == "relu" else torch.tanh_(h)
                saved.append(h)
        return h

    def _loss(self, out: torch.Tensor, y: torch.Tensor, grad: bool):
        """Per-member mean losses [N] of outputs [N, O, B], and d(sum of losses)/d(outputs)."""
        if self.cross_entropy:  # y [N, B]
            logp = torch.log_softmax(out, 1)
            target = y.unsqueeze(1)
            losses = -logp.gather(1, target).squeeze(1).mean(1)
            if not grad:
                return losses, None
            d = logp.exp_()  # softmax - one-hot, averaged over the batch
            d.scatter_add_(1, target, torch.full(target.shape, -1.0, dtype=d.dtype))
            return losses, d.mul_(1.0 / out.shape[2])
        diff = out - (y.transpose(1, 2) if y.dim() == 3 else y.unsqueeze(1))
        losses = diff.pow(2).flatten(1).mean(1)
        return losses, (diff.mul_(2.0 / diff[0].numel()) if grad else None)

    @torch.no_grad()
    def train_step(self, params, _buffers, x, y, grads: list[torch.Tensor]) -> torch.Tensor:
        """Losses [N] of batches x [N, B, D]; each parameter's gradient written into `grads`."""
        saved: list[torch.Tensor] = []
        out = self._layers(self.plan, params, x.transpose(1, 2), saved)
        losses, d = self._loss(out, y, True)
        i = len(params)
        for kind, s in zip(reversed(self.plan), reversed(saved), strict=True):
            if kind == "linear":
                i -= 2
                torch.bmm(d, s.transpose(1, 2), out=grads[i])
                torch.sum(d, 2, out=grads[i + 1])
                if i == 0:
                    break  # the input needs no gradient
                d = torch.bmm(params[i].transpose(1, 2), d)
            elif kind == "relu":
                d = torch.ops.aten.threshold_backward(d, s, 0.0)
            else:
                d = torch.ops.aten.tanh_backward(d, s)
        return losses

    @torch.no_grad()
    def val_losses(self, params, _buffers, x, y) -> torch.Tensor:
        """Losses [N] of every member on one split x [V, D] (first layer: one matmul for all)."""
        w, b = params[0], params[1]
        n, out, d = w.shape
        h = torch.addmm(b.reshape(n * out, 1), w.reshape(n * out, d), x.t()).view(n, out, -1)
        h = self._layers(self.plan[1:], params[2:], h, [])
        return self._loss(h, y.expand(n, *y.shape), False)[0]


class VmapModel:
    """Any module: its own forward per member (`functional_call` on the member's parameters)
    vectorised by `torch.vmap`, gradients by autograd on the sum of the members' losses."""

    def __init__(
        self, template: nn.Module, names: list[str], buffer_names: list[str], loss_fn: Callable
    ) -> None:
        def one(params, buffers, x, y):
            state = dict(zip(names, params, strict=True))
            state.update(zip(buffer_names, buffers, strict=True))
            return loss_fn(functional_call(template, state, (x,)), y)

        self._train, self._val = vmap(one), vmap(one, in_dims=(0, 0, None, None))

    def train_step(self, params, buffers, x, y, grads: list[torch.Tensor]) -> torch.Tensor:
        """Losses [N] of batches x [N, B, ...]; each parameter's gradient copied into `grads`."""
        losses = self._train(params, buffers, x, y)
        computed = torch.autograd.grad(losses.sum(), params, materialize_grads=True)
        torch._foreach_copy_(grads, computed)
        return losses.detach()

    @torch.no_grad()
    def val_losses(self, params, buffers, x, y) -> torch.Tensor:
        return self._val(params, buffers, x, y)


class Population:
    """N runs of `task` under the optimizer kind `optimizer`, one learning rate per member.

    All parameters of a member live in one row of a flat [N, P] buffer (`flat`); `params` are
    views of it shaped as the model's parameters (the leaves autograd differentiates), so the
    optimizer, the gradient norms, the divergence check and the row copies are each one op on
    [N, P], whatever the number of parameter tensors.

    Members are (re)started by `init_members(rows, seeds)`; `run_block` trains every member
    for a block of steps; `val_losses` and `params_finite` measure each member. `generic=True`
    forces the vmap forward even where the batched-matmul MLP path applies (for tests).
    """

    def __init__(
        self,
        task: Task,
        optimizer: str,
        n: int,
        max_block: int,
        device: torch.device | str = "cpu",
        generic: bool = False,
    ) -> None:
        self.task = task
        self.n = int(n)
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # the structure only; its values are unused
            torch.manual_seed(0)
            self.template = task.model_fn().to(self.device)
        named = [(k, p) for k, p in self.template.named_parameters() if p.requires_grad]
        if len({p.dtype for _, p in named}) != 1:
            raise ValueError("a population needs parameters of one dtype")
        self.names = [k for k, _ in named]
        sizes = [p.numel() for _, p in named]
        self.flat = torch.zeros(n, sum(sizes), dtype=named[0][1].dtype, device=self.device)
        self.params = [
            v.view(n, *p.shape).requires_grad_()
            for v, (_, p) in zip(self.flat.split(sizes, dim=1), named, strict=True)
        ]
        self._flat_grad = torch.zeros_like(self.flat)
        self._grads = [
            v.view(n, *p.shape)
            for v, (_, p) in zip(self._flat_grad.split(sizes, dim=1), named, strict=True)
        ]
        self.buffer_names = [k for k, _ in self.template.named_buffers()]
        self.buffers = [
            torch.zeros(n, *b.shape, dtype=b.dtype, device=self.device)
            for _, b in self.template.named_buffers()
        ]
        fast = None if generic else BatchedMLP.build(self.template, task.loss_fn)
        self.batched_matmul = fast is not None
        self.model: BatchedMLP | VmapModel = fast or VmapModel(
            self.template, self.names, self.buffer_names, task.loss_fn
        )
        self.optimizer = BatchedOptimizer(optimizer, [self.flat])
        self.streams = BatchStreams(len(task.train), task.batch_size, n, self.device)
        self._loss_buf = torch.zeros(max_block, n, device=self.device)
        self._gnorm_buf = torch.zeros(max_block, n, device=self.device)
        self._stats_buf = torch.zeros(n, 3, device=self.device)
        # Features v3, allocated on first use: g_{L-2} and theta_before of every member.
        self._prev_grad: torch.Tensor | None = None
        self._prev_flat: torch.Tensor | None = None

    def init_members(self, rows: Sequence[int], seeds: Sequence[int]) -> None:
        """Fresh runs in `rows`: the model `task.model_fn()` builds under each seed (as
        `InnerRun`), a fresh optimizer state and the seed's batch order."""
        with torch.no_grad():
            for r, seed in zip(rows, seeds, strict=True):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(seed))
                    model = self.task.model_fn()
                values = [p.reshape(-1) for p in model.parameters() if p.requires_grad]
                self.flat[r] = torch.cat(values)
                for dst, src in zip(self.buffers, model.buffers(), strict=True):
                    dst[r] = src
        self.optimizer.reset(torch.as_tensor(list(rows), dtype=torch.long, device=self.device))
        self.streams.reset(rows, seeds)

    def copy_rows(self, rows: Sequence[int], other: Population) -> None:
        """Members `rows` take over the runs of `other` (same task and optimizer), in order."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.device)
        with torch.no_grad():
            for dst, src in zip(
                [self.flat, *self.buffers], [other.flat, *other.buffers], strict=True
            ):
                dst.index_copy_(0, index, src)
        self.optimizer.copy_rows(index, other.optimizer)
        self.streams.copy_rows(rows, other.streams)

    def run_block(
        self,
        lr: np.ndarray,
        lengths: np.ndarray,
        grad_norm_steps: int,
        step_stats: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Train member i for lengths[i] steps at lr[i] (all members step together; a member
        whose block is shorter is put back to its state after its last step). `lr` may also be
        per step, [N, k]: lr[i, t] is member i's LR at the block's step t. Returns the training
        losses and gradient norms [k, N] (k = the longest block) on the device; member i's
        gradient norm is read on the last min(G, lengths[i]) steps of its block only (0
        elsewhere). With `step_stats`, also each member's last-step statistics [N, 3]
        (`lrctl.last_steps.STAT_NAMES`, measured on its own block's last two steps), else
        None."""
        lengths = np.asarray(lengths, dtype=np.int64)
        k = int(lengths.max())
        lr = np.asarray(lr, dtype=np.float64)
        per_step = torch.from_numpy(np.ascontiguousarray(lr.T)) if lr.ndim == 2 else None
        if per_step is None:
            self.optimizer.set_lr(torch.from_numpy(lr))
        idx = self.streams.take(k)
        read = np.zeros(k, dtype=bool)
        ends: dict[int, torch.Tensor] = {}  # step after which shorter blocks end -> their rows
        for length in np.unique(lengths):
            read[max(length - grad_norm_steps, 0) : length] = True
            if length < k:
                rows = np.flatnonzero(lengths == length)
                ends[int(length)] = torch.from_numpy(rows).to(self.device)
        losses, gnorms = self._loss_buf[:k], self._gnorm_buf[:k]
        gnorms.zero_()
        # Features v3: the step at which each member's block ends (its statistics are measured
        # there) and the steps whose gradients are kept for the next one's dot product.
        last_at: dict[int, torch.Tensor] = {}
        keep_at: set[int] = set()
        stats = None
        if step_stats:
            stats = self._stats_buf.fill_(float("nan"))
            for length in np.unique(lengths):
                if length >= 1:
                    rows = np.flatnonzero(lengths == length)
                    last_at[int(length) - 1] = torch.from_numpy(rows).to(self.device)
                if length >= 2:
                    keep_at.add(int(length) - 2)
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        for t in range(k):
            if per_step is not None:
                self.optimizer.set_lr(per_step[t])
            self._step(idx[t], losses[t], gnorms[t] if read[t] else None,
                       t in keep_at, last_at.get(t), stats)  # fmt: skip
            rows = ends.get(t + 1)
            if rows is not None:
                saved.append((rows, self.flat.index_select(0, rows)))
        with torch.no_grad():
            for rows, values in saved:
                self.flat.index_copy_(0, rows, values)
        if stats is not None and (lengths < 2).any():  # a one-step block has no dot product
            short = torch.from_numpy(np.flatnonzero(lengths < 2)).to(self.device)
            stats[short, 0] = float("nan")
        return losses, gnorms, stats

    def _step(
        self,
        idx: torch.Tensor,
        loss_out: torch.Tensor,
        gnorm_out: torch.Tensor | None,
        keep_grads: bool = False,
        last_rows: torch.Tensor | None = None,
        stats: torch.Tensor | None = None,
    ) -> None:
        """One optimizer step of every member on its batch idx [N, B]. Features v3:
        `keep_grads` keeps this step's gradients for the next step's dot product; `last_rows`
        are the members whose block ends with this step, whose statistics go into `stats`."""
        train = self.task.train
        flat = idx.reshape(-1)
        x = train.x.index_select(0, flat).view(*idx.shape, *train.x.shape[1:])
        y = train.y.index_select(0, flat).view(*idx.shape, *train.y.shape[1:])
        losses = self.model.train_step(self.params, self.buffers, x, y, self._grads)
        if gnorm_out is not None:
            # Each member's global gradient norm: the flat-buffer fast path of lrctl.grad_norms.
            row_norms(self._flat_grad, out=gnorm_out)
        loss_out.copy_(losses)
        if keep_grads or last_rows is not None:
            self._last_steps_before(keep_grads, last_rows, stats)
        self.optimizer.step([self._flat_grad])
        if last_rows is not None:
            self._last_steps_after(last_rows, stats)

    @torch.no_grad()
    def _last_steps_before(
        self, keep_grads: bool, last_rows: torch.Tensor | None, stats: torch.Tensor | None
    ) -> None:
        """Before the optimizer step: for members ending their block, the dot product with the
        kept gradients and the parameters' squared norm, and a copy of the parameters; then,
        if asked, this step's gradients are kept (`lrctl.last_steps.LastSteps`, per row)."""
        if self._prev_grad is None or self._prev_flat is None:
            self._prev_grad = torch.zeros_like(self._flat_grad)
            self._prev_flat = torch.zeros_like(self.flat)
        if last_rows is not None and stats is not None:
            stats[:, 0].index_copy_(
                0, last_rows, row_dots(self._prev_grad, self._flat_grad).index_select(0, last_rows)
            )
            param_sq = row_norms(self.flat).square()
            stats[:, 2].index_copy_(0, last_rows, param_sq.index_select(0, last_rows))
            self._prev_flat.copy_(self.flat)
        if keep_grads:
            self._prev_grad.copy_(self._flat_grad)

    @torch.no_grad()
    def _last_steps_after(self, last_rows: torch.Tensor, stats: torch.Tensor | None) -> None:
        """After the optimizer step: the update's squared norm of members ending their block."""
        assert self._prev_flat is not None and stats is not None
        update_sq = row_norms(self._prev_flat.sub_(self.flat)).square()
        stats[:, 1].index_copy_(0, last_rows, update_sq.index_select(0, last_rows))

    @torch.no_grad()
    def val_losses(self) -> torch.Tensor:
        """Each member's mean loss on the task's validation split, [N] (model in eval mode, as
        `InnerRun.evaluate`)."""
        self.template.eval()
        try:
            val = self.task.val
            return self.model.val_losses(self.params, self.buffers, val.x, val.y)
        finally:
            self.template.train()

    @torch.no_grad()
    def params_finite(self) -> torch.Tensor:
        """[N] bool: every element of every parameter of the member is finite (one NaN fails;
        like `training.params_finite`, a norm that overflows float32 fails too)."""
        return torch.isfinite(torch.linalg.vector_norm(self.flat, 2.0, dim=1))
