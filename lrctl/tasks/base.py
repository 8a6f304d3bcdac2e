"""Task, RunSpec and TaskFamily: the inner problems lrctl trains and evaluates on.

A *family* is a seeded sampler (learned_optimization's Task/TaskFamily idea): it draws a
`RunSpec` (architecture sizes, batch size, optimizer, base LR, horizon, seed) and builds the
concrete `Task` (model factory, data splits, loss). Families are held out by name, so the eval
suite can hold families the controller never trained on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from lrctl.optimizer_names import SAMPLED_OPTIMIZERS, reference_source

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one data split, already tensors on the task's device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Task:
    """One concrete inner problem: a model factory, data splits and a loss.

    `train` feeds minibatches; `val` is what rewards and tuning see; `test` is only read by the
    benchmark's final evaluation (never by a reward).
    """

    name: str
    family: str
    model_fn: Callable[[], nn.Module]
    train: Split
    val: Split
    test: Split
    loss_fn: LossFn
    batch_size: int
    classification: bool

    def to(self, device: torch.device | str) -> Task:
        return Task(
            self.name,
            self.family,
            self.model_fn,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.loss_fn,
            self.batch_size,
            self.classification,
        )


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one inner training run, drawn by a family."""

    family: str
    optimizer: str
    base_lr: float
    reference_lr: float
    steps: int
    batch_size: int
    seed: int
    arch: Mapping[str, int] = field(default_factory=dict)

    @property
    def lr_factor(self) -> float:
        """base_lr / reference_lr: how far this draw's LR is from the family's good value."""
        return self.base_lr / self.reference_lr

    def describe(self) -> str:
        arch = ",".join(f"{k}={v}" for k, v in sorted(self.arch.items()))
        return (
            f"{self.family}[{arch}] {self.optimizer} lr={self.base_lr:.3g} "
            f"bs={self.batch_size} T={self.steps} seed={self.seed}"
        )


@dataclass(frozen=True)
class FamilyConfig:
    """The ranges a family samples from; one `[[family]]` table of a suite file."""

    name: str
    weight: float = 1.0
    optimizers: tuple[str, ...] = SAMPLED_OPTIMIZERS
    lr_range: tuple[float, float] = (0.1, 10.0)
    """Base LR as multiples of the reference LR, drawn log-uniformly (two decades by default)."""
    steps: tuple[int, int] = (200, 800)
    """Horizon range, drawn log-uniformly."""
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    widths: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    reference_lr: Mapping[str, float] = field(default_factory=dict)
    """Overrides of the family's built-in reference LR per optimizer."""


class TaskFamily(ABC):
    """A seeded sampler of `RunSpec`s and the builder of their `Task`s."""

    name: ClassVar[str]
    description: ClassVar[str]
    default_widths: ClassVar[tuple[int, ...]] = (32, 64, 128)
    default_depths: ClassVar[tuple[int, ...]] = (1, 2)
    # Reference LR per optimizer: a value that trains well at the middle sizes. Chosen on the
    # validation split by a coarse 1-3-10 grid at constant LR over 3 decades, 2 seeds
    # (benchmarks/calibrate_reference_lr.py); tests/test_tasks.py states the margin each reaches.
    reference_lrs: ClassVar[Mapping[str, float]]
    batchable: ClassVar[bool] = False
    """Whether `lrctl.population.Population` can train this family's models as one tensor
    program (the batched env); tests/test_batched_env.py holds every such family to the
    single-run env."""

    def __init__(self, config: FamilyConfig | None = None) -> None:
        self.config = config or FamilyConfig(name=self.name)

    def reference_lr(self, optimizer: str) -> float:
        """The LR a user would start `optimizer` from on this family; an LR-adapting optimizer
        takes its base optimizer's value or its fixed default (`optimizers.reference_source`)."""
        source = reference_source(optimizer)
        if not isinstance(source, str):
            return float(source)
        return float(self.config.reference_lr.get(source, self.reference_lrs[source]))

    def arch_space(self) -> dict[str, tuple[int, ...]]:
        """The architecture choices this family samples over."""
        return {
            "width": self.config.widths or self.default_widths,
            "depth": self.config.depths or self.default_depths,
        }

    def sample(self, rng: np.random.Generator) -> RunSpec:
        """Draw one run: architecture, batch size, optimizer, base LR, horizon and seed."""
        cfg = self.config
        arch = {k: int(rng.choice(v)) for k, v in self.arch_space().items()}
        optimizer = str(rng.choice(cfg.optimizers))
        reference = self.reference_lr(optimizer)
        lo, hi = cfg.lr_range
        base_lr = reference * math.exp(rng.uniform(math.log(lo), math.log(hi)))
        s_lo, s_hi = cfg.steps
        steps = round(math.exp(rng.uniform(math.log(s_lo), math.log(s_hi))))
        return RunSpec(
            family=self.name,
            optimizer=optimizer,
            base_lr=float(base_lr),
            reference_lr=reference,
            steps=int(steps),
            batch_size=int(rng.choice(cfg.batch_sizes)),
            seed=int(rng.integers(0, 2**31 - 1)),
            arch=arch,
        )

    def spec(
        self,
        optimizer: str = "momentum",
        lr_factor: float = 1.0,
        steps: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        **arch: int,
    ) -> RunSpec:
        """A deterministic spec at the middle of the family's ranges (for tests and benches)."""
        space = self.arch_space()
        chosen = {k: int(arch.get(k, v[len(v) // 2])) for k, v in space.items()}
        reference = self.reference_lr(optimizer)
        sizes = self.config.batch_sizes
        return RunSpec(
            family=self.name,
            optimizer=optimizer,
            base_lr=reference * lr_factor,
            reference_lr=reference,
            steps=steps or round(math.sqrt(self.config.steps[0] * self.config.steps[1])),
            batch_size=batch_size or sizes[len(sizes) // 2],
            seed=seed,
            arch=chosen,
        )

    @abstractmethod
    def build(self, spec: RunSpec) -> Task:
        """The concrete task for a spec (data splits are fixed per family; the seed drives
        initialisation and batch order, applied by the training loop)."""
