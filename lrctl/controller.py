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

Non-finite losses: a block that contains a NaN or inf loss (or gradient norm) is answered by
cutting the LR by the largest factor the controller may apply (1 / m_max), and the policy may
not raise it again for the next `hold` decisions. The LR written to the optimizer is always
finite and inside the band, whatever the loss stream.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lrctl.controller_file import ControllerWeights, load_controller
from lrctl.features import FeatureTracker, read_block
from lrctl.resources import DEFAULT_CONTROLLER, data_path

STATE_VERSION = 1


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
    """

    step_takes_loss = True

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        controller: str | Path | ControllerWeights | None = None,
        hold: int = 3,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if controller is None:
            controller = data_path(DEFAULT_CONTROLLER)
        self.weights = (
            controller if isinstance(controller, ControllerWeights) else load_controller(controller)
        )
        self.spec = self.weights.action_spec
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.hold = hold
        self.base_lrs = [_group_lr(g) for g in optimizer.param_groups]
        for lr in self.base_lrs:
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(
                    f"every param group needs a finite positive lr, got {self.base_lrs}"
                )
        self.device = self._device()
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._tracker = FeatureTracker(1)
        self._loss_parts: list[torch.Tensor] = []  # this block's detached losses
        # Per step of the block's last G: per-parameter gradient norms (None: no gradients).
        self._norm_parts: list[list[torch.Tensor] | None] = []
        self._t = 0  # step() calls so far
        self._scale = 1.0  # lr / base lr, the same for every group
        self._hold_left = 0
        self.last_action = 0.0
        self._hook: torch.utils.hooks.RemovableHandle | None = None
        self._closed = False
        self._sync_hook()

    def _device(self) -> torch.device:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                return p.device
        return torch.device("cpu")

    def _capture_grad_norms(
        self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict
    ) -> None:
        grads = [p.grad for p in self._params if p.grad is not None]
        # Per-parameter norms only; their global norm is taken once per decision (_block).
        self._norm_parts.append(torch._foreach_norm(grads, 2.0) if grads else None)

    def step(self, loss: torch.Tensor | float) -> None:
        """Record this step's training loss; every K steps, decide and write the new LR."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if loss.dim():
                loss = loss.reshape(())
        else:
            loss = torch.tensor(float(loss), device=self.device)
        n_norms = self._norms_expected(len(self._loss_parts) + 1)
        if len(self._norm_parts) != n_norms:
            self._align_norms(n_norms)
        self._loss_parts.append(loss)
        self._t += 1
        if len(self._loss_parts) == self.spec.interval:
            self._decide()
        self._sync_hook()

    def _norms_expected(self, n_steps: int) -> int:
        """Gradient-norm entries after `n_steps` steps of a block (its last G steps read one)."""
        return max(0, n_steps - (self.spec.interval - self.spec.grad_norm_steps))

    def _sync_hook(self) -> None:
        """Hold the gradient-norm hook exactly while the next optimizer step is one of the
        block's last G steps."""
        wanted = not self._closed and self.spec.records_grad_norm(len(self._loss_parts))
        if wanted and self._hook is None:
            self._hook = self.optimizer.register_step_pre_hook(self._capture_grad_norms)
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
        """This block's losses [K] and global gradient norms [<= G], still on the device."""
        losses = torch.stack(self._loss_parts).to(self.device, torch.float32)
        parts = self._norm_parts
        sizes = {len(p) for p in parts if p is not None}
        if not parts:
            return losses, torch.zeros(0, device=self.device)
        if len(sizes) == 1 and all(p is not None for p in parts):
            flat = torch.stack([n for p in parts for n in p]).view(len(parts), -1)
            gnorms = torch.linalg.vector_norm(flat, 2.0, dim=1)
        else:  # steps without gradients, or a changing set of parameters with gradients
            zero = torch.zeros((), device=self.device)
            gnorms = torch.stack(
                [torch.linalg.vector_norm(torch.stack(p), 2.0) if p else zero for p in parts]
            )
        return losses, gnorms.to(self.device, torch.float32)

    def _decide(self) -> None:
        losses, gnorms = read_block(*self._block())  # the one host read per decision
        self._loss_parts, self._norm_parts = [], []
        progress = min(self._t / self.total_steps, 1.0)
        obs = self._tracker.update(losses, gnorms, math.log(self._scale), progress)
        nonfinite = bool(obs[0, -1] > 0)
        action = float(self.weights.act(obs)[0, 0])
        if nonfinite:
            action, self._hold_left = -1.0, self.hold
        elif self._hold_left > 0:
            action = min(action, 0.0)
            self._hold_left -= 1
        self.last_action = action
        self._scale = float(self.spec.next_lr(self._scale, 1.0, action))
        self._write_lrs()

    def _write_lrs(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            lr = base * self._scale
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        """The LR of every param group, as torch schedulers report it."""
        return [base * self._scale for base in self.base_lrs]

    def state_dict(self) -> dict:
        """Everything needed to continue the identical LR trajectory (not the optimizer)."""
        losses, gnorms = self._block() if self._loss_parts else (torch.zeros(0), torch.zeros(0))
        return {
            "version": STATE_VERSION,
            "t": self._t,
            "scale": self._scale,
            "hold_left": self._hold_left,
            "last_action": self.last_action,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "block_losses": losses.cpu(),
            "block_grad_norms": gnorms.cpu(),
            "tracker": {k: torch.from_numpy(v) for k, v in self._tracker.state_dict().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; writes the restored LR into every param group."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported LRController state version {state.get('version')!r}")
        self._t = int(state["t"])
        self._scale, self._hold_left = float(state["scale"]), int(state["hold_left"])
        self.last_action = float(state["last_action"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.total_steps = int(state["total_steps"])
        losses = state["block_losses"].to(self.device)
        gnorms = state["block_grad_norms"].to(self.device)
        self._loss_parts = list(losses.unbind(0))
        self._norm_parts = [[g] for g in gnorms.unbind(0)]  # a global norm is its own 1-part norm
        self._tracker.load_state_dict(
            {k: torch.as_tensor(v).cpu().numpy() for k, v in state["tracker"].items()}
        )
        self._write_lrs()
        self._sync_hook()

    def close(self) -> None:
        """Remove the optimizer hook (the controller stops seeing gradient norms)."""
        self._closed = True
        self._sync_hook()

    def __repr__(self) -> str:
        return (
            f"LRController(step={self._t}/{self.total_steps}, lr={self.get_last_lr()}, "
            f"interval={self.spec.interval}, max_multiplier={self.spec.max_multiplier})"
        )
