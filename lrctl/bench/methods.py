"""The benchmark's methods by name: an optimizer, an LR schedule and how the base LR is chosen.

| name                     | optimizer    | schedule                         | base LR                  |
| ------------------------ | ------------ | -------------------------------- | ------------------------ |
| controller_momentum      | SGD-momentum | lrctl controller                 | reference (untuned)      |
| controller_adam          | Adam         | lrctl controller                 | reference (untuned)      |
| momentum_<schedule>      | SGD-momentum | each of lrctl.baselines          | tuned per task           |
| adam_default             | Adam         | constant                         | 1e-3 (untuned)           |
| adam_constant            | Adam         | constant                         | tuned (not in defaults)  |
| adam_cosine              | Adam         | cosine                           | tuned per task           |
| adamw_cosine             | AdamW        | cosine                           | tuned per task           |
| rmsprop_constant         | RMSprop      | constant                         | tuned per task           |
| adagrad_constant         | AdaGrad      | constant                         | tuned per task           |

"Reference" is the task family's reference LR for the optimizer (`family.reference_lr`), the
value a user would start from; "tuned" means a grid search on the validation split
(lrctl.bench.plan). Later methods (an LR range test, an Optuna tuner, a hypergradient
optimizer) register here with `register_method`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from torch.optim import Optimizer

from lrctl.baselines import BASELINE_NAMES, BASELINES, baseline_policy
from lrctl.controller_file import ControllerWeights
from lrctl.optimizers import OPTIMIZER_NAMES

CONTROLLER = "controller"
"""The schedule name of lrctl's learned controller."""

OPTIMIZER_LABELS = {
    "sgd": "SGD",
    "momentum": "SGD-momentum",
    "nesterov": "SGD-Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
}


@dataclass(frozen=True)
class Method:
    """One way to train: optimizer + LR schedule + how its base LR is set."""

    name: str
    """Registry key, used on the command line and in runs.csv."""
    label: str
    """Human-readable name for tables and plots."""
    optimizer: str
    """An lrctl.optimizers name."""
    schedule: str
    """`CONTROLLER`, or a schedule name from lrctl.baselines."""
    lr: str | float = "tuned"
    """'tuned' (grid search per task), 'reference' (the family's reference LR for the
    optimizer), or a fixed number (the same LR on every task)."""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"method {self.name!r}: unknown optimizer {self.optimizer!r}")
        if self.schedule != CONTROLLER and self.schedule not in BASELINE_NAMES:
            raise ValueError(f"method {self.name!r}: unknown schedule {self.schedule!r}")
        if isinstance(self.lr, str) and self.lr not in ("tuned", "reference"):
            raise ValueError(f"method {self.name!r}: lr must be 'tuned', 'reference' or a number")

    @property
    def tuned(self) -> bool:
        return self.lr == "tuned"

    @property
    def uses_controller(self) -> bool:
        return self.schedule == CONTROLLER

    def policy_fn(
        self, steps: int, val_every: int, controller: ControllerWeights | None = None
    ) -> Callable[[Optimizer], object]:
        """The `policy_fn(optimizer)` that `lrctl.training.train` takes (picklable)."""
        if self.uses_controller:
            if controller is None:
                raise ValueError(f"method {self.name!r} needs controller weights")
            return partial(_controller_policy, controller, steps)
        overrides = {}
        if "val_every" in inspect.signature(BASELINES[self.schedule]).parameters:
            overrides["val_every"] = val_every  # plateau: patience counted in validations
        return baseline_policy(self.schedule, steps, **overrides)


def _controller_policy(weights: ControllerWeights, steps: int, optimizer: Optimizer) -> object:
    from lrctl.controller import LRController

    return LRController(optimizer, total_steps=steps, controller=weights)


METHODS: dict[str, Method] = {}
"""Every registered method by name, in registration order."""


def register_method(method: Method) -> Method:
    """Add a method to the registry (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def _schedule_label(schedule: str) -> str:
    return {
        "cosine_restarts": "cosine w/ restarts",
        "one_cycle": "one-cycle",
        "warmup_cosine": "warm-up + cosine",
        "plateau": "ReduceLROnPlateau",
    }.get(schedule, schedule)


for _opt in ("momentum", "adam"):
    register_method(
        Method(f"controller_{_opt}", f"controller + {OPTIMIZER_LABELS[_opt]}", _opt, CONTROLLER,
               "reference")
    )  # fmt: skip
for _schedule in BASELINE_NAMES:
    register_method(
        Method(f"momentum_{_schedule}", f"SGD-momentum + {_schedule_label(_schedule)}",
               "momentum", _schedule)
    )  # fmt: skip
register_method(Method("adam_default", "Adam (lr=1e-3, constant)", "adam", "constant", 1e-3))
register_method(Method("adam_constant", "Adam + constant", "adam", "constant"))
register_method(Method("adam_cosine", "Adam + cosine", "adam", "cosine"))
register_method(Method("adamw_cosine", "AdamW + cosine", "adamw", "cosine"))
register_method(Method("rmsprop_constant", "RMSprop + constant", "rmsprop", "constant"))
register_method(Method("adagrad_constant", "AdaGrad + constant", "adagrad", "constant"))

DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "adam_constant")
"""What `lrctl bench` runs when --methods is not given (adam_constant is only a reference
for the controller's quality bar)."""

COSINE_REFERENCE = "momentum_cosine"
"""Win rates are reported against tuned SGD-momentum + cosine ..."""
ADAM_REFERENCE = "adam_default"
"""... and against Adam at its default LR."""


def get_methods(names: Iterable[str]) -> list[Method]:
    """Methods by name, in the given order without repeats; unknown names raise ValueError
    listing the valid ones."""
    out: list[Method] = []
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
        if METHODS[name] not in out:
            out.append(METHODS[name])
    return out


def find_method(optimizer: str, schedule: str) -> Method:
    """The registered tuned method with this optimizer and schedule (e.g. adam + cosine)."""
    for m in METHODS.values():
        if m.optimizer == optimizer and m.schedule == schedule and m.tuned:
            return m
    raise KeyError(f"no tuned method registered for {optimizer} + {schedule}")
