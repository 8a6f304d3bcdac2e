"""The benchmark's methods by name: an optimizer, an LR schedule and how the base LR is chosen.

| name                     | optimizer    | schedule                         | base LR                  |
| ------------------------ | ------------ | -------------------------------- | ------------------------ |
| controller_momentum      | SGD-momentum | lrctl controller                 | reference (untuned)      |
| controller_adam          | Adam         | lrctl controller                 | reference (untuned)      |
| controller_replay_momentum | SGD-momentum | the controller's mean LR curve | reference, replayed      |
| controller_replay_adam   | Adam         | the controller's mean LR curve   | reference, replayed      |
| momentum_<schedule>      | SGD-momentum | each of lrctl.baselines          | tuned per task           |
| adam_default             | Adam         | constant                         | 1e-3 (untuned)           |
| adam_constant            | Adam         | constant                         | tuned (not in defaults)  |
| adam_cosine              | Adam         | cosine                           | tuned per task           |
| adamw_cosine             | AdamW        | cosine                           | tuned per task           |
| adamw_warmup_cosine      | AdamW        | warm-up + cosine                 | tuned per task           |
| rmsprop_constant         | RMSprop      | constant                         | tuned per task           |
| adagrad_constant         | AdaGrad      | constant                         | tuned per task           |
| sgd_hd                   | SGD-HD       | constant (adapts its own LR)     | tuned (not in defaults)  |
| adam_hd                  | Adam-HD      | constant (adapts its own LR)     | tuned (not in defaults)  |
| schedulefree_adamw       | SF-AdamW     | constant (schedule-free)         | tuned (not in defaults)  |
| prodigy                  | Prodigy      | constant (adapts its own LR)     | 1.0 (not in defaults)    |
| dadapt_adam              | D-Adapt Adam | constant (adapts its own LR)     | 1.0 (not in defaults)    |
| momentum_cosine_random   | SGD-momentum | cosine                           | random search (not def.) |
| momentum_cosine_tpe      | SGD-momentum | cosine                           | Optuna TPE (not def.)    |
| adam_cosine_tpe          | Adam         | cosine                           | Optuna TPE (not def.)    |
| momentum_one_cycle_tpe   | SGD-momentum | one-cycle, pct_start tuned too   | Optuna TPE (not def.)    |
| momentum_range_test      | SGD-momentum | cosine                           | LR range test (not def.) |
| adam_range_test          | Adam         | cosine                           | LR range test (not def.) |
| controller_layerwise_momentum | SGD-momentum | lrctl controller, per layer | reference (not def.) |
| controller_layerwise_adam     | Adam         | lrctl controller, per layer | reference (not def.) |
| momentum_pbt             | SGD-momentum | PBT's LR trajectory, replayed    | Ray Tune PBT (not def.)  |
| adam_pbt                 | Adam         | PBT's LR trajectory, replayed    | Ray Tune PBT (not def.)  |

"Reference" is the task family's reference LR for the optimizer (`family.reference_lr`), the
value a user would start from; "tuned" means chosen per task by the method's `tuner`: a grid
search on the validation split unless stated (lrctl.bench.tuners). Later methods register here
with `register_method`.

A controller replay answers whether the controller reacts to the run or only found a better
fixed curve: its 'replay' tuner takes the controller's LR at every step of the controller's
own untuned runs (reference LR, tuning seeds), averages them geometrically over the seeds, and
the final runs replay that fixed schedule on the reported seeds (lrctl.baselines.ReplayLR).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from torch.optim import Optimizer

from lrctl.baselines import BASELINE_NAMES, BASELINES, REPLAY, baseline_policy, replay_policy
from lrctl.controller_file import ControllerWeights
from lrctl.errors import UsageError
from lrctl.optimizers import OPTIMIZER_NAMES
from lrctl.param_groups import check_grouping

CONTROLLER = "controller"
"""The schedule name of lrctl's learned controller."""

TUNER_NAMES = ("grid", "random", "tpe", "range_test", "pbt", "replay")
"""How a tuned method's base LR is chosen per task (implemented in lrctl.bench.tuners)."""
TRAJECTORY_TUNERS = ("pbt", "replay")
"""Tuners that find an LR per step, which the 'replay' schedule then replays."""

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
    """'tuned' (chosen per task by `tuner`), 'reference' (the family's reference LR for the
    optimizer), or a fixed number (the same LR on every task)."""
    tuner: str = "grid"
    """For a tuned LR, how it is chosen: one of `TUNER_NAMES` (lrctl.bench.tuners)."""
    param_groups: str = "single"
    """'single': one optimizer param group; 'layer': one per layer, all at the base LR
    (lrctl.param_groups), and a controller then decides per group (layer-wise control)."""
    replays: str = ""
    """For the 'replay' tuner: the controller method whose LR curve the final runs replay."""

    def __post_init__(self) -> None:
        check_grouping(self.param_groups)
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"method {self.name!r}: unknown optimizer {self.optimizer!r}")
        if self.schedule not in (CONTROLLER, REPLAY, *BASELINE_NAMES):
            raise ValueError(f"method {self.name!r}: unknown schedule {self.schedule!r}")
        if (self.schedule == REPLAY) != (self.tuner in TRAJECTORY_TUNERS):
            raise ValueError(
                f"method {self.name!r}: the {REPLAY!r} schedule goes with a tuner that finds an "
                f"LR trajectory ({', '.join(TRAJECTORY_TUNERS)}); the final runs replay it"
            )
        if (self.tuner == "replay") != bool(self.replays):
            raise ValueError(
                f"method {self.name!r}: the 'replay' tuner needs `replays`, the controller "
                "method whose LR curve it replays (and only it takes one)"
            )
        if isinstance(self.lr, str) and self.lr not in ("tuned", "reference"):
            raise ValueError(f"method {self.name!r}: lr must be 'tuned', 'reference' or a number")
        if self.tuner not in TUNER_NAMES:
            raise ValueError(
                f"method {self.name!r}: unknown tuner {self.tuner!r}; "
                f"choose from: {', '.join(TUNER_NAMES)}"
            )
        if self.tuner != "grid" and not self.tuned:
            raise ValueError(f"method {self.name!r}: tuner {self.tuner!r} needs lr='tuned'")

    @property
    def tuned(self) -> bool:
        return self.lr == "tuned"

    @property
    def uses_controller(self) -> bool:
        return self.schedule == CONTROLLER

    def policy_fn(
        self,
        steps: int,
        val_every: int,
        controller: ControllerWeights | None = None,
        schedule_params: Mapping[str, float] | None = None,
        lr_trajectory: Sequence[float] = (),
    ) -> Callable[[Optimizer], object]:
        """The `policy_fn(optimizer)` that `lrctl.training.train` takes (picklable).
        `schedule_params` override the schedule's defaults (tuned by random search / TPE);
        `lr_trajectory` is the LR per step that the replay schedule replays (PBT's)."""
        if self.schedule == REPLAY:
            if not lr_trajectory:
                raise ValueError(f"method {self.name!r} needs the LR trajectory to replay")
            return replay_policy(lr_trajectory)
        if self.uses_controller:
            if controller is None:
                raise ValueError(f"method {self.name!r} needs controller weights")
            return partial(_controller_policy, controller, steps, self.param_groups == "layer")
        overrides: dict[str, object] = dict(schedule_params or {})
        if "val_every" in inspect.signature(BASELINES[self.schedule]).parameters:
            overrides["val_every"] = val_every  # plateau: patience counted in validations
        return baseline_policy(self.schedule, steps, **overrides)


def _controller_policy(
    weights: ControllerWeights, steps: int, per_group: bool, optimizer: Optimizer
) -> object:
    from lrctl.controller import LRController

    return LRController(optimizer, total_steps=steps, controller=weights, per_group=per_group)


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
for _opt in ("momentum", "adam"):
    register_method(
        Method(f"controller_replay_{_opt}",
               f"controller's LR curve replayed + {OPTIMIZER_LABELS[_opt]}", _opt, REPLAY,
               tuner="replay", replays=f"controller_{_opt}")
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
register_method(
    Method("adamw_warmup_cosine", "AdamW + warm-up + cosine", "adamw", "warmup_cosine")
)  # what transformer users run (nanoGPT's recipe)
register_method(Method("rmsprop_constant", "RMSprop + constant", "rmsprop", "constant"))
register_method(Method("adagrad_constant", "AdaGrad + constant", "adagrad", "constant"))

DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "adam_constant")
"""What `lrctl bench` runs when --methods is not given (adam_constant is only a reference
for the controller's quality bar)."""

WARMUP_REFERENCES = ("momentum_warmup_cosine", "adamw_warmup_cosine")
"""Added to every benchmark with a family in `lrctl.tasks.families.WARMUP_FAMILIES` (the
transformers, whose users run warm-up + cosine)."""

COSINE_REFERENCE = "momentum_cosine"
"""Win rates are reported against tuned SGD-momentum + cosine ..."""
ADAM_REFERENCE = "adam_default"
"""... and against Adam at its default LR."""


def get_methods(names: Iterable[str]) -> list[Method]:
    """Methods by name, in the given order without repeats; an unknown name raises UsageError
    (a ValueError) listing the valid ones."""
    out: list[Method] = []
    for name in names:
        if name not in METHODS:
            raise UsageError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
        if METHODS[name] not in out:
            out.append(METHODS[name])
    return out


def find_method(optimizer: str, schedule: str) -> Method:
    """The registered grid-tuned method with this optimizer and schedule (e.g. adam + cosine)."""
    for m in METHODS.values():
        if m.optimizer == optimizer and m.schedule == schedule and m.tuned and m.tuner == "grid":
            return m
    raise KeyError(f"no grid-tuned method registered for {optimizer} + {schedule}")


# --- LR-adapting optimizers: hypergradient descent, schedule-free, LR-free. ---
# Each runs at a constant schedule: the optimizer itself changes (or replaces) the LR. The
# hypergradient methods and schedule-free AdamW take their initial LR from the tuning grid like
# the other tuned methods; Prodigy and D-Adaptation run untuned at lr = 1, their documented
# default (a multiplier on the step size they estimate). Registered after DEFAULT_METHODS, so
# `lrctl bench` runs them only when named in --methods.
OPTIMIZER_LABELS.update(
    {
        "sgd_hd": "SGD-HD",
        "adam_hd": "Adam-HD",
        "schedulefree_adamw": "schedule-free AdamW",
        "prodigy": "Prodigy",
        "dadapt_adam": "D-Adapt Adam",
    }
)
for _name in ("sgd_hd", "adam_hd", "schedulefree_adamw"):
    register_method(Method(_name, OPTIMIZER_LABELS[_name], _name, "constant"))
for _name in ("prodigy", "dadapt_adam"):
    register_method(Method(_name, f"{OPTIMIZER_LABELS[_name]} (lr=1)", _name, "constant", 1.0))


# --- Search-based tuners: the base LR chosen by random search, Optuna TPE or an LR
# range test instead of the grid (lrctl.bench.tuners). Random search and TPE get the grid's
# budget and range; TPE on one-cycle also tunes its pct_start. Registered after
# DEFAULT_METHODS, so `lrctl bench` runs them only when named in --methods.
register_method(Method("momentum_cosine_random", "SGD-momentum + cosine (random search)",
                       "momentum", "cosine", tuner="random"))  # fmt: skip
register_method(Method("momentum_cosine_tpe", "SGD-momentum + cosine (TPE)", "momentum",
                       "cosine", tuner="tpe"))  # fmt: skip
register_method(Method("adam_cosine_tpe", "Adam + cosine (TPE)", "adam", "cosine", tuner="tpe"))
register_method(Method("momentum_one_cycle_tpe", "SGD-momentum + one-cycle (TPE, LR + pct_start)",
                       "momentum", "one_cycle", tuner="tpe"))  # fmt: skip
for _opt in ("momentum", "adam"):
    register_method(
        Method(f"{_opt}_range_test", f"{OPTIMIZER_LABELS[_opt]}: range test -> cosine", _opt,
               "cosine", tuner="range_test")
    )  # fmt: skip


# --- Layer-wise control: the controller decides per layer. The optimizer has one
# param group per layer (lrctl.param_groups.layer_param_groups), all at the reference LR
# (untuned, as controller_momentum / controller_adam), and LRController(per_group=True) sets
# each group's LR from that group's own gradient statistics. Registered after DEFAULT_METHODS,
# so `lrctl bench` runs them only when named in --methods (benchmarks/layerwise.py compares
# them with the global controller).
for _opt in ("momentum", "adam"):
    register_method(
        Method(f"controller_layerwise_{_opt}", f"layer-wise controller + {OPTIMIZER_LABELS[_opt]}",
               _opt, CONTROLLER, "reference", param_groups="layer")
    )  # fmt: skip


# --- Population-based training: Ray Tune's PopulationBasedTraining trains a
# population per task and mutates its LR while training (lrctl.bench.pbt, the grid's budget and
# range); the final runs replay the winner's LR at every step on fresh seeds (the 'replay'
# schedule, lrctl.baselines.ReplayLR). Needs Ray: pip install 'lrctl[ray]'. Registered after
# DEFAULT_METHODS, so `lrctl bench` runs them only when named in --methods.
for _opt in ("momentum", "adam"):
    register_method(
        Method(f"{_opt}_pbt", f"{OPTIMIZER_LABELS[_opt]} + PBT schedule", _opt, REPLAY,
               tuner="pbt")
    )  # fmt: skip
