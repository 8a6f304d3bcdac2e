"""Baseline LR schedules by name, each one of torch's own schedulers with defaults set by T.

Every schedule here is a thin, named recipe over `torch.optim.lr_scheduler` (nothing torch has
is re-implemented): it picks the scheduler and sets its arguments from the horizon T (the
number of optimizer steps) and the optimizer's own LRs, so each param group keeps its ratio.
The LR of step k is the one the scheduler holds after k calls to `step()`, as in `train()`.

    policy_fn = baseline_policy("cosine", total_steps=500)
    history = train(task, "adam", 3e-3, steps=500, seed=0, policy_fn=policy_fn)

| name            | torch scheduler                      | defaults (T = total steps)             |
| --------------- | ------------------------------------ | -------------------------------------- |
| constant        | ConstantLR(factor=1)                 | the base LR throughout                 |
| step            | MultiStepLR                          | x0.1 at 50% and at 75% of T            |
| exponential     | ExponentialLR                        | reaches 1% of the base LR at T         |
| cosine          | CosineAnnealingLR                    | base LR to 0 over T                    |
| cosine_restarts | CosineAnnealingWarmRestarts          | 3 cycles, each twice the last, span T  |
| cyclic          | CyclicLR (triangular)                | base/10 to base and back, 2 cycles     |
| one_cycle       | OneCycleLR                           | peak = base LR at 30% of T             |
| warmup_cosine   | SequentialLR(LinearLR, CosineAnnLR)  | linear warm-up 5% of T, then cosine    |
| plateau         | ReduceLROnPlateau                    | x0.1 after ~10% of T without progress  |

`plateau` is stepped by `train()` with the validation loss every `val_every` steps; the others
are stepped after every optimizer step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
)

from lrctl.errors import UsageError

Scheduler = LRScheduler | ReduceLROnPlateau


def _group_lrs(optimizer: Optimizer) -> list[float]:
    """Each param group's base LR (before any scheduler touched it)."""
    return [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]


def constant(optimizer: Optimizer, total_steps: int) -> ConstantLR:
    """The base LR at every step (ConstantLR with factor 1: a no-op scheduler, so a constant
    run goes through the same code path as the others)."""
    # Every step: lr = base lr.
    return ConstantLR(optimizer, factor=1.0, total_iters=total_steps)


def step(
    optimizer: Optimizer,
    total_steps: int,
    *,
    fractions: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> MultiStepLR:
    """Step decay: the LR is multiplied by `gamma` (0.1) at each of `fractions` of T (50% and
    75%), the classic ImageNet/ResNet recipe."""
    # Steps [0, 0.5 T): base lr; [0.5 T, 0.75 T): base lr * 0.1; [0.75 T, T): base lr * 0.01.
    milestones = sorted({max(1, round(f * total_steps)) for f in fractions})
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def exponential(
    optimizer: Optimizer, total_steps: int, *, final_factor: float = 0.01
) -> ExponentialLR:
    """Exponential decay by a constant factor per step, chosen so that the LR reaches
    `final_factor` (1%) of the base LR at step T."""
    # Every step: lr *= gamma, with gamma ** T = final_factor.
    return ExponentialLR(optimizer, gamma=final_factor ** (1.0 / total_steps))


def cosine(optimizer: Optimizer, total_steps: int, *, eta_min: float = 0.0) -> CosineAnnealingLR:
    """Cosine annealing from the base LR at step 0 to `eta_min` (0) at step T (T_max = T)."""
    # Step k: lr = eta_min + (base lr - eta_min) * (1 + cos(pi * k / T)) / 2.
    return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


def cosine_restarts(
    optimizer: Optimizer,
    total_steps: int,
    *,
    cycles: int = 3,
    t_mult: int = 2,
    eta_min: float = 0.0,
) -> CosineAnnealingWarmRestarts:
    """SGDR: `cycles` (3) cosine cycles, each `t_mult` (2) times longer than the last, sized
    to fill T: T_0 = ceil(T / 7) for the defaults, so the last cycle ends at T or a few steps
    after it (close to `eta_min` (0) at T, never restarting just before the end). The LR jumps
    back to the base at each restart."""
    # Cycle i lasts T_0 * t_mult**i steps and anneals base lr -> eta_min; then a restart.
    span = sum(t_mult**i for i in range(cycles))
    first = -(-total_steps // span)  # ceil(T / span)
    return CosineAnnealingWarmRestarts(optimizer, T_0=first, T_mult=t_mult, eta_min=eta_min)


def cyclic(
    optimizer: Optimizer, total_steps: int, *, cycles: int = 2, low_factor: float = 0.1
) -> CyclicLR:
    """Triangular cyclical LR (Smith 2017): `cycles` (2) triangles over T, from
    `low_factor` (1/10) of the base LR up to the base LR and back. Momentum is not cycled
    (cycle_momentum=False), so it works with every optimizer, Adam and AdaGrad included."""
    # Each cycle: linear ramp base/10 -> base over T / (2 cycles) steps, then back down.
    peaks = _group_lrs(optimizer)
    return CyclicLR(
        optimizer,
        base_lr=[lr * low_factor for lr in peaks],
        max_lr=peaks,
        step_size_up=max(1, total_steps // (2 * cycles)),
        mode="triangular",
        cycle_momentum=False,
    )


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> OneCycleLR:
    """One cycle (Smith & Topin 2018) with the base LR as its peak (max_lr): cosine warm-up from
    base/25 to the base over the first 30% of T, then cosine annealing to base/25/1e4 at step
    T - 1. Momentum is not cycled (cycle_momentum=False): only the LR is under test, and plain
    SGD stays plain SGD."""
    # Steps [0, 0.3 T): base/25 -> base (cosine); [0.3 T, T): base -> base/2.5e5 (cosine).
    return OneCycleLR(
        optimizer,
        max_lr=_group_lrs(optimizer),
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=False,
    )


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    *,
    warmup_fraction: float = 0.05,
    eta_min: float = 0.0,
) -> SequentialLR:
    """Linear warm-up over `warmup_fraction` (5%) of T, then cosine annealing to `eta_min` (0)
    at step T: the usual transformer recipe (nanoGPT's get_lr)."""
    warmup = min(max(1, round(warmup_fraction * total_steps)), max(1, total_steps - 1))
    # Steps [0, W): lr = base * (k + 1) / (W + 1), a linear ramp (LinearLR).
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    # Steps [W, T): cosine from base to eta_min over the remaining T - W steps.
    decay = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=eta_min)
    return SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


def plateau(
    optimizer: Optimizer,
    total_steps: int,
    *,
    val_every: int = 50,
    patience_fraction: float = 0.1,
    factor: float = 0.1,
) -> ReduceLROnPlateau:
    """ReduceLROnPlateau on the validation loss: x`factor` (0.1) once it has not improved for
    about `patience_fraction` (10%) of T. It is stepped once per validation, every `val_every`
    steps (train()'s default, 50), so patience = max(1, round(0.1 T / val_every)) validations."""
    # At each validation: no improvement for `patience` validations in a row -> lr *= 0.1.
    patience = max(1, round(patience_fraction * total_steps / val_every))
    return ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)


BASELINES: dict[str, Callable[..., Scheduler]] = {
    fn.__name__: fn
    for fn in (
        constant, step, exponential, cosine, cosine_restarts, cyclic, one_cycle,
        warmup_cosine, plateau,
    )
}  # fmt: skip
"""Schedule builders by name: `builder(optimizer, total_steps, **overrides)`."""

BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


def _overrides_allowed(name: str) -> list[str]:
    params = inspect.signature(BASELINES[name]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _check(name: str, total_steps: int, overrides: dict[str, object]) -> None:
    if name not in BASELINES:
        raise UsageError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINE_NAMES)}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise UsageError(f"total_steps must be a positive integer, got {total_steps!r}")
    allowed = _overrides_allowed(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise UsageError(
            f"baseline {name!r} has no setting {unknown[0]!r}; "
            f"its settings are: {', '.join(allowed) or '(none)'}"
        )


def make_scheduler(
    name: str, optimizer: Optimizer, total_steps: int, **overrides: object
) -> Scheduler:
    """The torch scheduler of baseline `name` on `optimizer`, for a run of `total_steps` steps.

    `overrides` change a schedule's defaults (its keyword-only arguments, e.g.
    `make_scheduler("step", opt, 1000, gamma=0.5)`).
    """
    _check(name, total_steps, overrides)
    return BASELINES[name](optimizer, total_steps, **overrides)


def baseline_policy(
    name: str, total_steps: int, **overrides: object
) -> Callable[[Optimizer], Scheduler]:
    """A `policy_fn(optimizer)` for `train(..., policy_fn=...)` that builds baseline `name`.

    Checked now (a wrong name fails before any training); picklable, so it can be sent to
    worker processes.
    """
    _check(name, total_steps, overrides)
    return partial(_build, name, total_steps, overrides)


def _build(
    name: str, total_steps: int, overrides: dict[str, object], optimizer: Optimizer
) -> Scheduler:
    return make_scheduler(name, optimizer, total_steps, **overrides)


# --- Replay: a recorded LR trajectory, step by step. Not a baseline of its own (it
# has no defaults: a tuner records the LRs, lrctl.bench's population-based training), so it is
# kept out of BASELINES and BASELINE_NAMES, and built with `replay_policy`.
REPLAY = "replay"
"""The schedule name of a replayed LR trajectory."""


class ReplayLR(LRScheduler):
    """Step k's LR is `lrs[k]` (the last one after the end), exactly: a trajectory recorded
    by one run (population-based training's winner) replayed on another. With several param
    groups, each keeps its ratio to the first group's LR.

    torch's LambdaLR would multiply the base LR by lrs[k] / base, which can be off by a
    rounding error; this writes the recorded values themselves.
    """

    def __init__(self, optimizer: Optimizer, lrs: Sequence[float], last_epoch: int = -1) -> None:
        self.lrs = tuple(float(v) for v in lrs)
        if not self.lrs or any(not (v >= 0 and v < float("inf")) for v in self.lrs):
            raise UsageError("a replayed LR trajectory needs finite, non-negative LRs")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # Step k: lrs[min(k, len - 1)]; other groups keep their base ratio to group 0.
        lr = self.lrs[min(max(self.last_epoch, 0), len(self.lrs) - 1)]
        first = self.base_lrs[0]
        return [lr if base == first else lr * base / first for base in self.base_lrs]


def replay_policy(lrs: Sequence[float]) -> Callable[[Optimizer], ReplayLR]:
    """A picklable `policy_fn(optimizer)` for `train()` that replays `lrs`, one per step."""
    lrs = tuple(float(v) for v in lrs)
    if not lrs:
        raise UsageError("a replayed LR trajectory needs at least one LR")
    return partial(ReplayLR, lrs=lrs)
