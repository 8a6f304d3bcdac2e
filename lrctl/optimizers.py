"""Optimizers by name: the seven lrctl samples, and LR-adapting ones for the benchmark.

`SAMPLED_OPTIMIZERS` are torch.optim's; they are what task families draw from (the env trains
the controller on them) and what the families' reference-LR tables are keyed by.
`OPTIMIZER_NAMES` adds optimizers that adapt their own LR, which the benchmark compares the
controller with, but which never enter the env's sampling:

| name               | optimizer                                      | reference LR        |
| ------------------ | ---------------------------------------------- | ------------------- |
| sgd_hd             | SGD-HD (lrctl.hypergradient)                   | the family's sgd    |
| adam_hd            | Adam-HD (lrctl.hypergradient)                  | the family's adam   |
| schedulefree_adamw | schedulefree.AdamWScheduleFree, wd 0.01        | the family's adamw  |
| prodigy            | prodigyopt.Prodigy                             | 1.0 (its default)   |
| dadapt_adam        | dadaptation.DAdaptAdam                         | 1.0 (its default)   |

Schedule-free AdamW evaluates at other weights than it trains at: it is returned in train mode,
and `evaluation_mode` switches it for an evaluation (a no-op for every other optimizer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from lrctl.errors import MissingDependencyError, UsageError
from lrctl.hypergradient import SGDHD, AdamHD
from lrctl.optimizer_names import (
    OPTIMIZER_NAMES,
    REFERENCE_SOURCE,
    SAMPLED_OPTIMIZERS,
    reference_source,
)

__all__ = [
    "OPTIMIZER_NAMES",
    "REFERENCE_SOURCE",
    "SAMPLED_OPTIMIZERS",
    "evaluation_mode",
    "make_optimizer",
    "reference_source",
]

Factory = Callable[[Iterable[torch.nn.Parameter], float], torch.optim.Optimizer]

_SAMPLED: dict[str, Factory] = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "nesterov": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "adagrad": lambda p, lr: torch.optim.Adagrad(p, lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.01),
}


def _package(module: str) -> ModuleType:
    """Import an LR-free optimizer's package, or say how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"this optimizer needs the {module!r} package, a dependency of lrctl: "
            f"pip install {module} (or reinstall lrctl)"
        ) from None


def _schedulefree_adamw(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    # Weight decay as lrctl's "adamw" (its reference LR is used); no warm-up, as for the other
    # constant-LR methods. It refuses to step until .train() is called: do it here.
    optimizer = _package("schedulefree").AdamWScheduleFree(params, lr=lr, weight_decay=0.01)
    optimizer.train()
    return optimizer


_LR_ADAPTING: dict[str, Factory] = {
    "sgd_hd": lambda p, lr: SGDHD(p, lr=lr),
    "adam_hd": lambda p, lr: AdamHD(p, lr=lr),
    "schedulefree_adamw": _schedulefree_adamw,
    "prodigy": lambda p, lr: _package("prodigyopt").Prodigy(p, lr=lr),
    "dadapt_adam": lambda p, lr: _package("dadaptation").DAdaptAdam(p, lr=lr),
}

_FACTORIES: dict[str, Factory] = {**_SAMPLED, **_LR_ADAPTING}


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """Build an optimizer by name (one of `OPTIMIZER_NAMES`), ready to step."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UsageError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}"
        ) from None
    return factory(params, lr)


@contextmanager
def evaluation_mode(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Within the block, the model holds the weights to evaluate at.

    Schedule-free optimizers train at an interpolation of their iterates and evaluate at the
    average, switched by their `eval()` / `train()` methods; this calls them around the block,
    and does nothing for optimizers without them.
    """
    if not (hasattr(optimizer, "eval") and hasattr(optimizer, "train")):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
