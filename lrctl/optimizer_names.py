"""Optimizer names and where each one's reference LR comes from: the registry's table of
contents, without the optimizers.

Task families key their reference-LR tables by these names and suites check them, so this
module imports nothing: building an optimizer (`lrctl.optimizers`, which brings the
hypergradient and LR-free optimizers) is only needed where a run is trained.
"""

from __future__ import annotations

from lrctl.errors import UsageError

SAMPLED_OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
)
"""The torch.optim optimizers task families sample and the env trains the controller on."""

LR_ADAPTING_OPTIMIZERS: tuple[str, ...] = (
    "sgd_hd",
    "adam_hd",
    "schedulefree_adamw",
    "prodigy",
    "dadapt_adam",
)
"""Optimizers that adapt their own LR: the benchmark compares with them; never sampled."""

OPTIMIZER_NAMES: tuple[str, ...] = SAMPLED_OPTIMIZERS + LR_ADAPTING_OPTIMIZERS
"""Every name `lrctl.optimizers.make_optimizer` builds (the benchmark's methods may use any)."""

REFERENCE_SOURCE: dict[str, str | float] = {
    "sgd_hd": "sgd",
    "adam_hd": "adam",
    "schedulefree_adamw": "adamw",
    "prodigy": 1.0,
    "dadapt_adam": 1.0,
}
"""Reference LR of each LR-adapting optimizer: a sampled optimizer's name (the family's value
for it is used: hypergradient methods start where their base optimizer does), or a fixed LR
(Prodigy and D-Adaptation estimate the step size themselves; lr = 1 is their documented
default, a multiplier on that estimate)."""


def reference_source(name: str) -> str | float:
    """Where `name`'s reference LR comes from: a sampled optimizer (itself, or the base of an
    LR-adapting one), whose value the task family holds, or a fixed LR."""
    if name in SAMPLED_OPTIMIZERS:
        return name
    try:
        return REFERENCE_SOURCE[name]
    except KeyError:
        raise UsageError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}"
        ) from None
