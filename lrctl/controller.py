"""`LRController`: a trained controller plugged into any PyTorch loop (torch and numpy only).

    sched = LRController(optimizer, total_steps=1000)   # the shipped default controller
    for step in range(1000):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        sched.step(loss)

Gradient norms are captured by an optimizer step pre-hook (the gradients are read just before
`optimizer.step()`, so zeroing them right after the step is fine), on the last G steps of each
block only (the controller file's `grad_norm_steps`; the hook is registered for those steps and
removed after them, so the other steps pay nothing for it). Per step the controller keeps the
detached loss, and on those G steps the per-parameter gradient norms (one `torch._foreach_norm`
call), as tensors on the parameters' device. Every K steps (the controller file's
`interval`) it stacks the block, reads it to the host once, computes the features with
`lrctl.features` (the same code the training env used), runs the policy and multiplies every
param group's LR by the chosen factor, keeping each group within the controller's band around
the group's own base LR. Nothing is synchronised between decisions, also on CUDA.

Feature version 3 (`lrctl.features`, recorded in the controller file): on the block's steps K-2
and K-1 the same hook also keeps a copy of step K-2's gradients, and at step K-1 takes their
dot product with that step's gradients, the parameters' squared norms and a copy of the
parameters, whose difference after the step is the update (`lrctl.last_steps.LastSteps`, one
preallocated buffer the size of the parameters). These are device tensors too, folded into
the decision's one host read. Version 1 and 2 files observe and act exactly as before.

Non-finite losses: a block that contains a NaN or inf loss (or gradient norm) is answered by
cutting the LR by the largest factor the controller may apply (1 / m_max), and the policy may
not raise it again for the next `hold` decisions. The LR written to the optimizer is always
finite and inside the band, whatever the loss stream.

The blow-up guard of anchored controllers (`ActionSpec.blowup_factor` g > 0, set at export,
or `blowup_guard=`): when a block has a non-finite loss, or a loss (geometric mean) above the
run's first block's and more than g times its best block's, while the policy holds the LR
above its base schedule (factor > 1), the controller hands the run back to the base
schedule: from that decision on the factor is the geometric mean of the factors of the run's
blocks so far, capped at 1, and the policy is no longer asked (`handed_back_at` says when).
Why: a run that blows up without going non-finite after the policy raised the LR (the loss up
a hundredfold, then a slow climb down) was answered by the policy alone, and after one,
loss_vs_best stays far above 0 for the rest of the run and the policy cuts the LR to its
floor, where the run cannot recover. Where the policy had been climbing all along, the run
goes on at the base schedule (the fallback the targets compare with); where it had held the
factor below 1 (the base schedule itself too high, as at 10x a good LR) and raised it just
before the blow-up, at its own average level rather than at the schedule that is too high.
A blow-up while the factor is at or below 1 is left to the policy, whose cuts keep such runs
finite (`agents/default/iterations.md`, L46, L47 and L49).

Anchored controllers (`ActionSpec.mode == "anchored"`, `lrctl.actions`): the LR follows a base
schedule, re-applied every step, times the controller's bounded factor: lr_t = anchor_t * factor.
The anchor is cosine annealing from each group's LR at construction to 0 over `total_steps`
(the controller's training schedule), or any torch scheduler passed as `base=`: the controller
lets the scheduler step on its own LRs (it puts them back before each scheduler step) and
multiplies what the scheduler sets by its factor. The observation's log_lr_ratio is
log(factor). Recursive controllers (every file before anchored actions) multiply the LR
itself and keep it in a band around the base LR, as before.

Per-group (layer-wise) control, `per_group=True`: each param group gets its own
decision, from its own features: the loss features are shared (there is one loss), the
gradient-norm features are computed from that group's parameters only, and log(lr / base lr)
is the group's own. One policy call decides for all groups at once ([n_groups, 13] in, one
action per group out), and each group has its own NaN hold. The hook still makes one
`torch._foreach_norm` call over all parameters; the norms are split by group at decision time
(`lrctl.grad_norms.combine`). With one param group, per-group control is global
control, bit for bit. `lrctl.param_groups.layer_param_groups(model)` builds one group per layer.
The shipped controller was trained on global control (one run-wide gradient norm); applying it
per group is a transfer, measured in benchmarks/layerwise.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lrctl import distributed
from lrctl.actions import cosine_anchor
from lrctl.controller_file import ControllerWeights, controller_weights
from lrctl.errors import UsageError
from lrctl.features import FEATURE_NAMES, NONFINITE_INDEX, FeatureTracker, read_block
from lrctl.grad_norms import combine, combine_floats, tensor_norms
from lrctl.last_steps import LastSteps, combine_stats

LOSS_VS_START = FEATURE_NAMES.index("loss_vs_start")
LOSS_VS_BEST = FEATURE_NAMES.index("loss_vs_best")

STATE_VERSION = 5
"""v5: the blow-up guard's hand-back step (`handed_back_at`) and memory (`guard_blocks_seen`,
`guard_log_factor_sums`). v4: a features-v3 controller's unfinished block of last-step
statistics (`last_steps`). v3: the slow scale terms of anchored controllers (`log_scales`).
v2: per-group scales, holds and actions as lists, and the mode (`per_group`). v1 to v4 states
still load."""


def _group_lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


class LRController:
    """Learned LR control for a torch optimizer, stepped with the training loss.

    Args:
        optimizer: any torch optimizer (SGD, Adam, AdamW, RMSprop, Adagrad, ...). Every param
            group is controlled; each group's LR at construction is its base LR.
        total_steps: the planned number of `step()` calls (the policy sees progress t / T).
        controller: path to a controller file, loaded weights, or None for the shipped default.
        hold: decisions during which the LR may not rise after a non-finite loss.
        per_group: one decision per param group, from that group's own gradient norm and LR
            (layer-wise control); False (default): one decision for the whole run, applied to
            every group.
        process_group: under torch.distributed, the ranks whose statistics are combined into
            each decision (`lrctl.distributed`); None (default): every rank of the default
            group, so that all ranks write the same LR. Nothing is combined when
            torch.distributed is not initialised or the group has one rank.
        base: an anchored controller's base schedule, any torch LR scheduler on `optimizer`
            (step it no more yourself: the controller steps it once per step); None (default):
            cosine annealing from each group's LR to 0 over `total_steps`. Recursive
            controllers take no base schedule.
        blowup_guard: the blow-up guard g of an anchored controller (module docstring): after
            a blow-up that followed the policy's own raise, the run is handed back to the base
            schedule, and `handed_back_at` is the step at which it was; 0: no guard; None
            (default): the controller file's setting (`lrctl export --blowup-guard`; none in
            the shipped file).

    Call `step(loss)` once per optimizer step, after `optimizer.step()` (with gradient
    accumulation: once per optimizer step, with the mean loss of its micro-batches). A `step()`
    call with no `optimizer.step()` since the previous one (an optimizer step hook counts
    them) is not a step: nothing is recorded. That is how a step skipped by a
    `torch.amp.GradScaler` (inf gradients, the optimizer not stepped) is left out; when the
    gradients are finite instead, the call was most likely one per micro-batch, and a warning
    says so.
    """

    step_takes_loss = True

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        controller: str | Path | ControllerWeights | None = None,
        hold: int = 3,
        per_group: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
        base: torch.optim.lr_scheduler.LRScheduler | None = None,
        blowup_guard: float | None = None,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise UsageError(f"total_steps must be a positive integer, got {total_steps!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.weights = controller_weights(controller)
        self.spec = self.weights.action_spec
        if blowup_guard is not None:
            try:
                self.spec = replace(self.spec, blowup_factor=float(blowup_guard))
            except (UsageError, TypeError, ValueError) as exc:
                raise UsageError(f"blowup_guard: {exc}") from None
        if base is not None and not self.spec.anchored:
            raise UsageError(
                "base= sets the schedule an anchored controller works around; this controller "
                "file uses recursive actions (it moves the LR itself). Pass an anchored "
                "controller file, or drop base="
            )
        if base is not None and getattr(base, "optimizer", None) is not optimizer:
            raise UsageError("base= must be a scheduler built on the same optimizer")
        if isinstance(base, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise UsageError(
                "base= takes a schedule of the step (ReduceLROnPlateau depends on a metric); "
                "use e.g. CosineAnnealingLR, OneCycleLR or a LambdaLR"
            )
        self.base = base
        self.optimizer = optimizer
        # The per-step path reads these plain attributes (not the spec's properties and
        # methods): step() runs after every optimizer step, and on a small model its Python
        # work is a visible share of the loop (benchmarks/controller_overhead.py).
        self._anchored = self.spec.anchored
        self._interval = self.spec.interval
        self._guard = self.spec.blowup_factor > 0
        self._guard_log = math.log(self.spec.blowup_factor) if self._guard else math.inf
        self._first_norm_step = self.spec.interval - self.spec.grad_norm_steps
        self.total_steps = total_steps
        self.hold = hold
        self.base_lrs = [_group_lr(g) for g in optimizer.param_groups]
        for lr in self.base_lrs:
            # A base schedule may start at 0 (a warm-up): the controller's factor multiplies
            # it, nothing divides by it. Without one, the LR is what the factor multiplies.
            if not (math.isfinite(lr) and (lr > 0 or (base is not None and lr == 0))):
                raise UsageError(
                    f"every param group needs a finite positive lr, got {self.base_lrs}"
                    + (
                        " (0 is allowed at a base schedule's first step)"
                        if base is not None
                        else ""
                    )
                )
        self.device = self._device()
        # Global mode on the CPU reads a block value by value (`_read_block_cpu`); on a GPU,
        # per group or distributed, in one `read_block` transfer. Tests turn this off to run
        # the device path on the CPU.
        self._host_floats = self.device.type == "cpu"
        self.per_group = bool(per_group)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._group_sizes = [len(g["params"]) for g in optimizer.param_groups]
        n = len(self.base_lrs) if self.per_group else 1  # decisions per block
        self.feature_version = self.weights.feature_version
        self._tracker = FeatureTracker(n, self.feature_version)
        # Features v3: the block's last two steps (on the local shards of DTensors).
        self._last = (
            LastSteps(distributed.local_tensors(self._params))
            if self.feature_version >= 3
            else None
        )
        self._loss_parts: list[torch.Tensor] = []  # this block's detached losses
        # Per step of the block's last G: per-parameter gradient norms (None: no gradients);
        # in per-group mode one per parameter, in order (0 where a parameter has none).
        self._norm_parts: list[list[torch.Tensor] | None] = []
        self._zero = torch.zeros((), device=self.device)
        self._t = 0  # step() calls so far
        # The factor each decision sets: lr / base lr (recursive) or lr / anchor (anchored),
        # of every group (global) or of each group; and the anchored slow scale terms.
        self._scales = [1.0] * n
        self._log_scales = [0.0] * n
        # Anchored: each group's anchor LR for the next step (the base schedule's value).
        self._anchor_lrs = list(self.base_lrs)
        self._hold_left = [0] * n
        self.last_actions = [0.0] * n
        self.handed_back_at: int | None = None
        """The step at which the blow-up guard handed the run back to the base schedule
        (None: it has not; always None without a guard)."""
        # The blow-up guard's memory: blocks decided on and the sum of their log factors.
        self._blocks_seen = 0
        self._log_factor_sums = [0.0] * n
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._closed = False
        self.process_group = process_group
        self._optimizer_steps = 0  # optimizer steps since the last counted step() call
        self._warned_not_a_step = False
        self._step_counter = optimizer.register_step_post_hook(self._count_optimizer_step)
        self._sync_hook()
        if self.spec.anchored:
            self._update_anchor()
            self._write_lrs()

    def _device(self) -> torch.device:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    @property
    def last_action(self) -> float:
        """The last decision's action (group 0's in per-group mode; see `last_actions`)."""
        return self.last_actions[0]

    def _capture_grad_norms(
        self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict
    ) -> None:
        grads = [p.grad for p in self._params if p.grad is not None]
        # Per-parameter norms only; their global norm is taken once per decision (_block).
        self._norm_parts.append(tensor_norms(grads) if grads else None)

    def _capture_param_grad_norms(
        self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict
    ) -> None:
        """Per-group mode: one norm per parameter, in order, so that the block splits by
        group (0 for a parameter without a gradient this step)."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if len(grads) == len(self._params) or not grads:
            self._norm_parts.append(tensor_norms(grads) if grads else None)
            return
        norms = iter(tensor_norms(grads))
        self._norm_parts.append(
            [next(norms) if p.grad is not None else self._zero for p in self._params]
        )

    def _capture_hook(
        self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict
    ) -> tuple[tuple, dict] | None:
        """The gradient-norm step pre-hook. Called as `optimizer.step(closure)` (Lightning
        does), the step's gradients exist only once the closure has run: the closure is
        wrapped so that the norms are read right after it."""
        capture_norms = (
            self._capture_param_grad_norms if self.per_group else self._capture_grad_norms
        )

        def capture(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
            capture_norms(optimizer, args, kwargs)
            if self._last is not None:
                self._capture_last_steps()

        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0]: self
        if closure is None:
            capture(optimizer, args, kwargs)
            return None

        def closure_then_capture():
            loss = closure()
            capture(optimizer, args, kwargs)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_capture}
        return (args[0], closure_then_capture, *args[2:]), kwargs

    def _capture_last_steps(self) -> None:
        """Features v3, in the gradient hook: step K-2 keeps its gradients; step K-1 measures
        the dot product and the parameters before it steps (`LastSteps`)."""
        assert self._last is not None
        index, k = len(self._loss_parts), self.spec.interval
        if index not in (k - 2, k - 1):
            return
        grads = distributed.local_tensors([p.grad for p in self._params])
        if index == k - 2:
            self._last.keep_grads(grads)
        else:
            self._last.before_last_step(grads, distributed.local_tensors(self._params))

    def _count_optimizer_step(
        self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict
    ) -> None:
        self._optimizer_steps += 1
        if self._last is not None and self._last.measuring:  # features v3: step K-1's update
            self._last.after_last_step(distributed.local_tensors(self._params))

    def _not_a_step(self) -> None:
        """A `step()` call with no optimizer step since the previous one, which is not counted.
        Silent when the gradients are non-finite or gone (a step a GradScaler skipped; checking
        costs a host read, on this path only); otherwise warn once."""
        if self._warned_not_a_step:
            return
        grads = distributed.local_tensors([p.grad for p in self._params if p.grad is not None])
        if not grads or not bool(torch.stack(tensor_norms(grads)).isfinite().all()):
            return
        self._warned_not_a_step = True
        warnings.warn(
            "LRController.step() was called with no optimizer.step() since the previous call "
            "(and the gradients are finite, so it was not a step a GradScaler skipped); such "
            "calls are not counted. Call step(loss) once per optimizer step, after "
            "optimizer.step(); with gradient accumulation, pass the mean loss of the step's "
            "micro-batches.",
            UserWarning,
            stacklevel=3,
        )

    def step(self, loss: torch.Tensor | float) -> None:
        """Record this step's training loss; every K steps, decide and write the new LR.
        A call with no optimizer step since the previous one is not a step (see the class)."""
        if self._optimizer_steps == 0 and not self._closed:
            self._not_a_step()
            return
        self._optimizer_steps = 0
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if loss.dim():
                loss = loss.reshape(())
        else:
            loss = torch.tensor(float(loss), device=self.device)
        parts = self._loss_parts
        n_norms = self._norms_expected(len(parts) + 1)
        if len(self._norm_parts) != n_norms:
            self._align_norms(n_norms)
        parts.append(loss)
        self._t += 1
        if self._anchored:
            self._update_anchor()
        if len(parts) == self._interval:
            self._decide()
        elif self._anchored:
            self._write_lrs()  # re-anchored every step
        # _sync_hook, called only where the hook's wanted state can change (block boundaries).
        if (len(self._loss_parts) >= self._first_norm_step) != (self._hook is not None):
            self._sync_hook()

    def _update_anchor(self) -> None:
        """Anchored: each group's anchor LR for step `_t` (0-based): the base scheduler's, stepped
        on its own LRs, or cosine from the base LR to 0 over `total_steps`."""
        if self.base is None:
            c = cosine_anchor(self._t, self.total_steps)
            self._anchor_lrs = [lr * c for lr in self.base_lrs]
            return
        if self._t > 0:
            for group, lr in zip(self.optimizer.param_groups, self._anchor_lrs, strict=True):
                group["lr"] = lr  # the scheduler steps from its own value, not ours
            self.base.step()
        self._anchor_lrs = [_group_lr(g) for g in self.optimizer.param_groups]

    def _norms_expected(self, n_steps: int) -> int:
        """Gradient-norm entries after `n_steps` steps of a block (its last G steps read one)."""
        return max(0, n_steps - self._first_norm_step)

    def _sync_hook(self) -> None:
        """Hold the gradient-norm hook exactly while the next optimizer step is one of the
        block's last G steps."""
        wanted = not self._closed and self.spec.records_grad_norm(len(self._loss_parts))
        if wanted and self._hook is None:
            self._hook = self.optimizer.register_step_pre_hook(self._capture_hook)
        elif not wanted and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _align_norms(self, n: int) -> None:
        """`n` gradient-norm entries: repeat the last one if no optimizer.step() ran since the
        previous step(), keep the first if several did (gradient accumulation)."""
        while len(self._norm_parts) < n:
            self._norm_parts.append(self._norm_parts[-1] if self._norm_parts else None)
        del self._norm_parts[n:]

    def _block(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's losses [K] and global gradient norms [<= G] (per-group mode: losses
        [n_groups, K], the same row for each group, and each group's norms [n_groups, <= G]),
        still on the device."""
        losses = torch.stack(self._loss_parts).to(self.device, torch.float32)
        if self.per_group:
            gnorms = combine(self._param_norms(), self._group_sizes)
            n = len(self._group_sizes)
            return losses.expand(n, -1), gnorms.to(self.device, torch.float32)
        parts = self._norm_parts
        sizes = {len(p) for p in parts if p is not None}
        if not parts:
            return losses, torch.zeros(0, device=self.device)
        if len(sizes) == 1 and all(p is not None for p in parts):
            flat = torch.stack([n for p in parts for n in p]).view(len(parts), -1)
            gnorms = combine(flat)
        else:  # steps without gradients, or a changing set of parameters with gradients
            zero = torch.zeros((), device=self.device)
            gnorms = torch.stack([combine(torch.stack(p)) if p else zero for p in parts])
        return losses, gnorms.to(self.device, torch.float32)

    def _param_norms(self) -> torch.Tensor:
        """Per-group mode: this block's per-parameter gradient norms [<= G, n_params]."""
        n_params = len(self._params)
        missing = [self._zero] * n_params  # a step without gradients: every norm is 0
        rows = [norm for part in self._norm_parts for norm in (part or missing)]
        if not rows:
            return torch.zeros(0, n_params, device=self.device)
        return torch.stack(rows).view(len(self._norm_parts), n_params)

    def _block_stats(self) -> torch.Tensor:
        """Features v3: the block's last-step statistics, the run's [1, 3] (per-group mode:
        each group's, [n_groups, 3]), on the device."""
        assert self._last is not None
        return combine_stats(self._last.stats, self._group_sizes if self.per_group else None)

    def _read_block_cpu(self) -> tuple[list[float], list[float]]:
        """Global mode on the CPU: the block's losses and global gradient norms as Python
        floats, read value by value. There is no device to sync with, and for 10 + G numbers
        this costs a fraction of stacking them into tensors first (the decision is a visible
        share of a small model's loop); the norms are the same global norms `_block` takes."""
        losses = [float(loss) for loss in self._loss_parts]
        gnorms = [combine_floats(part) if part else 0.0 for part in self._norm_parts]
        return losses, gnorms

    def _decide(self) -> None:
        progress = min(self._t / self.total_steps, 1.0)
        log_lr_ratios = [math.log(s) for s in self._scales]  # log(factor), both modes
        group = distributed.active_group(self.process_group)
        last = self._last
        if group is None and not self.per_group and self._host_floats:
            stats = None if last is None else self._block_stats()[0].tolist()
            obs = self._tracker.update_one(
                *self._read_block_cpu(), log_lr_ratios[0], progress, stats
            )
        else:
            stats = None
            if group is None:  # the one host read per decision
                if last is None:
                    losses, gnorms = read_block(*self._block())
                else:
                    losses, gnorms, stats = read_block(*self._block(), self._block_stats())
            else:  # every rank gets the same numbers: one all_reduce, one host read
                sizes = self._group_sizes if self.per_group else None
                losses, gnorms, stats = distributed.combine_block(
                    group, self._loss_parts, self._norm_parts, sizes, self.device,
                    None if last is None else last.stats, self._params,
                )  # fmt: skip
            # One row (a single group): a scalar, FeatureTracker's one-run path.
            ratio = log_lr_ratios[0] if len(log_lr_ratios) == 1 else log_lr_ratios
            obs = self._tracker.update(losses, gnorms, ratio, progress, stats)
        self._loss_parts, self._norm_parts = [], []
        if last is not None:
            last.start_block()
        if self._guard and self.handed_back_at is None:  # the run's average factor so far
            self._blocks_seen += 1
            self._log_factor_sums = [
                a + b for a, b in zip(self._log_factor_sums, log_lr_ratios, strict=True)
            ]
        if self._guard and (
            self.handed_back_at is not None or (max(self._scales) > 1.0 and self._blew_up(obs[0]))
        ):
            self._hand_back()
            return
        actions = self.weights.act(obs)  # [1 or n_groups, 1]: one policy call for all groups
        for i, scale in enumerate(self._scales):
            action = float(actions[i, 0])
            if obs[i, NONFINITE_INDEX] > 0:  # non-finite losses in the block
                action, self._hold_left[i] = -1.0, self.hold
            elif self._hold_left[i] > 0:
                action = min(action, 0.0)
                self._hold_left[i] -= 1
            self.last_actions[i] = action
            if self.spec.anchored:
                factor, log_scale = self.spec.decide(
                    scale, self._log_scales[i], action, self.total_steps, self._t
                )
                self._scales[i], self._log_scales[i] = float(factor), float(log_scale)
            else:
                self._scales[i] = float(self.spec.next_lr(scale, 1.0, action))
        self._write_lrs()

    def _blew_up(self, obs: np.ndarray) -> bool:
        """The blow-up guard's test (`ActionSpec.blowup_factor` g): the block has a non-finite
        loss, or its loss is above the first block's and more than g times the best block's.
        Read from the raw observation (the loss features are the same in every group's row),
        so it costs no extra host read."""
        return bool(
            obs[NONFINITE_INDEX] > 0
            or (obs[LOSS_VS_START] > 0 and obs[LOSS_VS_BEST] > self._guard_log)
        )

    def _hand_back(self) -> None:
        """The run blew up after the policy raised the LR: from now on every group's factor
        is the geometric mean of its factors over the run's blocks so far, capped at 1 (the
        anchor where the policy had been climbing, below it where it had been cutting), and
        the policy is no longer asked (module docstring)."""
        if self.handed_back_at is None:
            self.handed_back_at = self._t
            n = max(self._blocks_seen, 1)
            self._scales = [min(math.exp(total / n), 1.0) for total in self._log_factor_sums]
            self._log_scales = [min(x, 0.0) for x in self._log_scales]
            self.last_actions = [0.0] * len(self._scales)
        self._write_lrs()

    def _group_scales(self) -> list[float]:
        """The factor of every param group."""
        return self._scales if self.per_group else self._scales * len(self.base_lrs)

    def _references(self) -> list[float]:
        """What each group's factor multiplies: its anchor LR (anchored) or base LR."""
        return self._anchor_lrs if self._anchored else self.base_lrs

    def _write_lrs(self) -> None:
        groups = self.optimizer.param_groups
        for group, ref, scale in zip(groups, self._references(), self._group_scales(), strict=True):
            lr = ref * scale
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        """The LR of every param group, as torch schedulers report it."""
        return [ref * s for ref, s in zip(self._references(), self._group_scales(), strict=True)]

    def state_dict(self) -> dict:
        """Everything needed to continue the identical LR trajectory (not the optimizer; with
        `base=`, the base scheduler's state under "base_schedule").
        `block_grad_norms` holds the unfinished block's global norms [S], or in per-group
        mode its per-parameter norms [S, n_params].

        Under torch.distributed the unfinished block is this rank's own, read without any
        collective (a framework may call this on one rank only). A checkpoint written by one
        rank and loaded by all is continued alike on every rank; its first decision reads that
        rank's losses for the block's steps before the checkpoint (and, under FSDP, its
        shards' gradient norms) where an uninterrupted run would read the ranks' combination."""
        parts = self._norm_parts  # DTensor norms (FSDP) as their local values: no collective
        self._norm_parts = [distributed.local_tensors(p) if p else p for p in parts]
        try:
            if not self._loss_parts:
                losses, gnorms = torch.zeros(0), torch.zeros(0)
            elif self.per_group:
                losses = torch.stack(self._loss_parts).float()
                gnorms = self._param_norms().float()
            else:
                losses, gnorms = self._block()
        finally:
            self._norm_parts = parts
        extra = {} if self._last is None else {"last_steps": self._last.state()}
        if self.base is not None:  # the schedule the anchor steps: continued with the rest
            extra["base_schedule"] = self.base.state_dict()
        return {
            "version": STATE_VERSION,
            **extra,
            "per_group": self.per_group,
            "t": self._t,
            "scales": list(self._scales),
            "log_scales": list(self._log_scales),
            "anchor_lrs": list(self._anchor_lrs),
            "hold_left": list(self._hold_left),
            "handed_back_at": self.handed_back_at,
            "guard_blocks_seen": self._blocks_seen,
            "guard_log_factor_sums": list(self._log_factor_sums),
            "last_actions": list(self.last_actions),
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "block_losses": losses.cpu(),
            "block_grad_norms": gnorms.cpu(),
            "tracker": {k: torch.from_numpy(v) for k, v in self._tracker.state_dict().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` (also a v1 one, from global control); writes the restored
        LR into every param group."""
        version = state.get("version")
        if version == 1:  # before per-group control: one scale, hold and action
            state = {**state, "per_group": False, "scales": [state["scale"]],
                     "hold_left": [state["hold_left"]], "last_actions": [state["last_action"]]}  # fmt: skip
        elif version not in (2, 3, 4, STATE_VERSION):
            raise UsageError(f"unsupported LRController state version {version!r}")
        if bool(state["per_group"]) != self.per_group:
            raise UsageError(
                f"this LRController state was saved with per_group={bool(state['per_group'])}; "
                f"construct the controller with per_group={bool(state['per_group'])} to load it"
            )
        n_groups = len(self.optimizer.param_groups)
        if len(state["base_lrs"]) != n_groups or len(state["scales"]) != len(self._scales):
            raise UsageError(
                f"this LRController state is for {len(state['base_lrs'])} param groups, the "
                f"optimizer has {n_groups}; load it into an optimizer with the same groups"
            )
        base_state = state.get("base_schedule")
        if base_state is not None and self.base is None:
            raise UsageError(
                "this LRController state was saved with a base schedule (base=); construct "
                "the controller with the same kind of scheduler as base= to load it"
            )
        self._t = int(state["t"])
        self._scales = [float(x) for x in state["scales"]]
        self._log_scales = [float(x) for x in state.get("log_scales", [0.0] * len(self._scales))]
        self._anchor_lrs = [float(x) for x in state.get("anchor_lrs", state["base_lrs"])]
        self._hold_left = [int(x) for x in state["hold_left"]]
        handed_back = state.get("handed_back_at")  # absent before the guard: not handed back
        self.handed_back_at = None if handed_back is None else int(handed_back)
        self._blocks_seen = int(state.get("guard_blocks_seen", 0))
        sums = state.get("guard_log_factor_sums", [0.0] * len(self._scales))
        self._log_factor_sums = [float(x) for x in sums]
        self.last_actions = [float(x) for x in state["last_actions"]]
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.total_steps = int(state["total_steps"])
        losses = state["block_losses"].to(self.device)
        gnorms = state["block_grad_norms"].to(self.device)
        self._loss_parts = list(losses.unbind(0))
        if self.per_group:  # per-parameter norms, as the hook records them
            self._norm_parts = [list(row.unbind(0)) for row in gnorms]
        else:  # a global norm is its own 1-part norm
            self._norm_parts = [[g] for g in gnorms.unbind(0)]
        self._tracker.load_state_dict(
            {k: torch.as_tensor(v).cpu().numpy() for k, v in state["tracker"].items()}
        )
        if self._last is not None:  # a state from before features v3: a fresh measurement
            self._last.start_block()
            if "last_steps" in state:
                self._last.load_state(state["last_steps"])
        if base_state is not None:  # (a state from before it carried one leaves the base as is)
            self.base.load_state_dict(base_state)
        self._write_lrs()
        self._sync_hook()

    def close(self) -> None:
        """Remove the optimizer hooks (the controller stops seeing gradient norms, and counts
        every `step()` call)."""
        self._closed = True
        self._step_counter.remove()
        self._sync_hook()

    def __repr__(self) -> str:
        return (
            f"LRController(step={self._t}/{self.total_steps}, lr={self.get_last_lr()}, "
            f"interval={self.spec.interval}, max_multiplier={self.spec.max_multiplier}"
            f"{', per_group=True' if self.per_group else ''})"
        )
