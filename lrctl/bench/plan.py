"""What a benchmark runs: its settings, every run's config and hash, and the tuning rule.

Protocol (stated again in every summary.md):

- **Tuning.** Each tuned method's base LR is chosen per task by its tuner
  (lrctl.bench.tuners). The grid tuner tries a log-spaced grid of multiples of the family's
  reference LR for that optimizer (7 points, x10^-1.5 .. x10^1.5, for a full run), trained
  with the *tuning seeds* 0..tune_seeds-1 and judged on the *validation* split: the grid point
  with the lowest mean final validation loss wins (a diverged seed counts as +inf; ties go to
  the smaller LR). Random search and TPE get the same budget and range and the same rule; an
  LR range test reads the train split only.
- **Final evaluation.** Every method is then trained with *fresh seeds* (1000, 1001, ...) at
  its chosen LR and reported on the held-out *test* split.
- **Sweep.** The controller runs untuned at x0.1, x1 and x10 of the reference LR; constant LR
  and cosine with the same optimizer run at the same fixed factors, for the quality bar.
- **Replay.** A controller replay's LR per step is the geometric mean of the controller's own
  LR curves at the reference LR on the tuning seeds; its final runs replay it on the fresh
  seeds (lrctl.bench.tuners.ReplayTuner).

Runs are identified by a hash of their config (`RunConfig.config_hash`), so a run that serves
two roles (the controller at x1 is both its final run and a sweep point) is trained once, and
a rerun skips every run already stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from lrctl.baselines import REPLAY
from lrctl.bench.methods import (
    ADAM_REFERENCE,
    COSINE_REFERENCE,
    DEFAULT_METHODS,
    WARMUP_REFERENCES,
    Method,
    find_method,
    get_methods,
)
from lrctl.controller_file import ControllerWeights, load_controller
from lrctl.errors import UsageError
from lrctl.tasks import RunSpec, Suite, TaskFamily, load_suite
from lrctl.tasks.families import WARMUP_FAMILIES

HASH_VERSION = 1
"""Bumped when a run's meaning changes without its config fields changing."""

FINAL_SEED_OFFSET = 1000
"""Final and sweep runs use seeds 1000, 1001, ...: never a tuning seed."""

ROLES = ("tune", "final", "sweep")

ADDED_FIELD = {"hashed_at_default": False}
"""Metadata of a `RunConfig` field added after HASH_VERSION 1: left out of the hash while it
holds its default, so every run stored before the field existed keeps its hash."""

ScheduleParams = tuple[tuple[str, float], ...]
"""Overrides of a schedule's defaults, as sorted (name, value) pairs (hashable, JSON-able)."""


def log_grid(points: int, decades: float) -> tuple[float, ...]:
    """`points` LR factors spaced evenly in log10 over [10^-decades/2, 10^decades/2]."""
    if points < 1:
        raise ValueError(f"a grid needs at least one point, got {points}")
    exps = np.linspace(-decades / 2, decades / 2, points) if points > 1 else np.zeros(1)
    return tuple(float(10.0**e) for e in exps)


FULL_GRID = log_grid(7, 3.0)
"""x0.0316, x0.1, x0.316, x1, x3.16, x10, x31.6 the reference LR."""
QUICK_GRID = log_grid(5, 2.0)
"""x0.1 .. x10 in half decades (--quick only)."""
SWEEP_FACTORS = (0.1, 1.0, 10.0)
MIN_FULL_GRID_POINTS = 7


def default_val_every(steps: int) -> int:
    """Validation interval: about 30 validations per run, at least 10 steps apart."""
    return max(10, steps // 30)


@dataclass(frozen=True)
class BenchConfig:
    """The settings of one benchmark (the command line's flags)."""

    suite: str = "eval"
    """Suite file or name ('eval' is envs/eval.toml)."""
    tasks: tuple[str, ...] | None = None
    """Families of the suite to run; None: all of them."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Method names (lrctl.bench.methods); the comparison references are always added."""
    seeds: int = 3
    """Final-evaluation seeds per (task, method)."""
    tune_seeds: int = 2
    """Seeds per grid point when tuning."""
    grid: tuple[float, ...] = FULL_GRID
    """Tuning grid, as multiples of the reference LR."""
    sweep: tuple[float, ...] = SWEEP_FACTORS
    """Fixed multiples of the reference LR for the controller's robustness sweep."""
    steps: int | None = None
    """Steps per run; None: each family's middle horizon."""
    quick: bool = False
    """A smoke-test preset (fewer steps, smaller grid); its output says so."""

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")
        if self.tune_seeds < 1:
            raise UsageError(f"tune_seeds must be at least 1, got {self.tune_seeds}")
        if self.steps is not None and self.steps < 20:
            raise UsageError(f"--steps must be at least 20, got {self.steps}")
        if not self.grid or any(not (math.isfinite(f) and f > 0) for f in self.grid):
            raise UsageError(f"the tuning grid needs positive factors, got {self.grid}")
        if not self.methods:
            raise UsageError("--methods needs at least one method")

    @classmethod
    def quick_preset(cls, **overrides: object) -> BenchConfig:
        """--quick: 100 steps, a 5-point grid over two decades, 1 tuning seed."""
        settings: dict[str, object] = {
            "steps": 100,
            "grid": QUICK_GRID,
            "tune_seeds": 1,
            "quick": True,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)  # type: ignore[arg-type]

    @property
    def tune_seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.tune_seeds))

    @property
    def final_seed_list(self) -> tuple[int, ...]:
        return tuple(FINAL_SEED_OFFSET + i for i in range(self.seeds))


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run (and nothing that doesn't)."""

    task: str
    method: str
    optimizer: str
    schedule: str
    base_lr: float
    lr_factor: float
    seed: int
    steps: int
    batch_size: int
    arch: tuple[tuple[str, int], ...]
    val_every: int
    reference_lr: float
    evaluate_test: bool
    """False for tuning runs: they never read the test split."""
    controller: str = ""
    """Digest of the controller's weights for controller runs, else empty."""
    schedule_params: ScheduleParams = field(default=(), metadata=ADDED_FIELD)
    """Overrides of the schedule's defaults (lrctl.baselines), set when a tuner searched the
    schedule's own parameters (e.g. one_cycle's pct_start); empty: the schedule's defaults."""
    param_groups: str = field(default="single", metadata=ADDED_FIELD)
    """The method's optimizer param groups: 'single', or 'layer' (one per layer)."""
    lr_trajectory: tuple[float, ...] = field(default=(), metadata=ADDED_FIELD)
    """The LR of every step, replayed by the 'replay' schedule (a PBT-tuned method's final
    runs: the schedule PBT found, lrctl.bench.pbt); empty for every other run."""

    @property
    def config_hash(self) -> str:
        values = asdict(self)
        for f in fields(self):
            if not f.metadata.get("hashed_at_default", True) and values[f.name] == f.default:
                del values[f.name]
        payload = json.dumps({"v": HASH_VERSION, **values}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    role: str


def controller_digest(weights: ControllerWeights) -> str:
    """A short hash of a controller's weights and action mapping (part of run hashes)."""
    h = hashlib.sha256()
    tensors = [weights.obs_mean, weights.obs_var, *(t for pair in weights.layers for t in pair)]
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    spec = weights.action_spec.to_dict()
    if spec["grad_norm_steps"] == spec["interval"]:
        del spec["grad_norm_steps"]  # every step, as before the field existed: same digest
    if not spec["blowup_factor"]:
        del spec["blowup_factor"]  # no guard, as before the field existed: same digest
    meta = [weights.obs_clip, weights.obs_epsilon, spec]
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:16]


def run_spec(config: RunConfig, family: TaskFamily, steps: int | None = None) -> RunSpec:
    """The family's spec of a run (`steps`: another horizon, for a tuner's job)."""
    return family.spec(
        config.optimizer,
        steps=steps or config.steps,
        batch_size=config.batch_size,
        seed=config.seed,
        **dict(config.arch),
    )


def tuning_key(losses: Iterable[float], factor: float) -> tuple[float, float]:
    """The tuning rule as a sort key (lowest first): the mean final validation loss over the
    tuning seeds (a diverged seed counts as +inf), then the smaller LR factor."""
    values = [v if math.isfinite(v) else math.inf for v in losses]
    return (float(np.mean(values)) if values else math.inf, factor)


def choose_factor(results: Mapping[float, Sequence[float]]) -> float:
    """The tuning rule on a grid: the factor with the lowest mean final validation loss over
    the tuning seeds. A diverged seed counts as +inf; ties go to the smaller factor."""
    if not results:
        raise ValueError("no tuning results to choose from")
    return min(results, key=lambda factor: tuning_key(results[factor], factor))


@dataclass
class Plan:
    """The benchmark's runs: tuning, final and sweep runs per (task, method).

    Final runs of tuned methods depend on their tuning results (`finals_after_tuning`); the
    rest is known up front (`initial_runs`).
    """

    config: BenchConfig
    suite: Suite
    families: dict[str, TaskFamily]
    methods: list[Method]
    """Methods in the summary: the requested ones, then the added references."""
    added: list[str]
    """Method names added for comparison (not requested)."""
    sweep_methods: list[Method]
    controller: ControllerWeights | None
    controller_source: str
    steps: dict[str, int] = field(default_factory=dict)
    controller_hash: str = ""
    """Digest of the controller weights (part of controller runs' hashes)."""

    @property
    def suite_name(self) -> str:
        return self.suite.name

    def run(
        self,
        task: str,
        method: Method,
        factor: float,
        seed: int,
        role: str = "final",
        schedule_params: ScheduleParams = (),
        lr_trajectory: Sequence[float] = (),
    ) -> RunConfig:
        """The config of `method` on `task` at `factor` x the reference LR (or, for a method
        with a fixed LR, at that LR; `factor` is then ignored), with the schedule's defaults
        overridden by `schedule_params`. Tuning runs skip the test split.

        A replay method (PBT) replays `lr_trajectory` from its first LR (`factor` is then
        ignored); without one (no tuning), it holds the LR at `factor` throughout, which is
        what PBT over a one-point range would find."""
        family = self.families[task]
        steps = self.steps[task]
        spec = family.spec(method.optimizer, steps=steps)
        reference = family.reference_lr(method.optimizer)
        if isinstance(method.lr, float | int) and not isinstance(method.lr, bool):
            base_lr = float(method.lr)
            factor = base_lr / reference
        else:
            base_lr = reference * factor
        lrs = tuple(float(v) for v in lr_trajectory)
        if method.schedule == REPLAY:
            if not lrs:
                lrs = (base_lr,) * steps
            elif len(lrs) != steps:
                raise ValueError(f"an LR trajectory of {len(lrs)} steps for {steps}-step runs")
            base_lr, factor = lrs[0], lrs[0] / reference
        elif lrs:
            raise ValueError(f"method {method.name!r} does not replay an LR trajectory")
        return RunConfig(
            task=task,
            method=method.name,
            optimizer=method.optimizer,
            schedule=method.schedule,
            base_lr=base_lr,
            lr_factor=factor,
            seed=seed,
            steps=steps,
            batch_size=spec.batch_size,
            arch=tuple(sorted(spec.arch.items())),
            val_every=default_val_every(steps),
            reference_lr=reference,
            evaluate_test=role != "tune",
            controller=self.controller_hash if method.uses_controller else "",
            schedule_params=tuple(sorted(schedule_params)),
            param_groups=method.param_groups,
            lr_trajectory=lrs,
        )

    @property
    def tuning(self) -> bool:
        """False for a one-point grid: tuned methods then simply run at that factor."""
        return len(self.config.grid) > 1

    def has_tuner(self, method: Method) -> bool:
        """Whether a tuner sets `method`'s final runs: a tuned method when the grid has more
        than one point; a controller replay always (its curve needs no grid)."""
        return method.tuned and (self.tuning or method.tuner == "replay")

    def tune_targets(self) -> list[tuple[str, Method]]:
        """Every (task, tuned method) whose base LR a tuner chooses (lrctl.bench.tuners)."""
        return [(task, m) for task in self.families for m in self.methods if self.has_tuner(m)]

    def initial_runs(self) -> list[PlannedRun]:
        """The final runs of untuned methods, and the sweep (tuners ask for the tuning runs)."""
        out: list[PlannedRun] = []
        for task in self.families:
            for m in self.methods:
                if not self.has_tuner(m):
                    factor = self.config.grid[0] if m.tuned else 1.0
                    out += [
                        PlannedRun(self.run(task, m, factor, s), "final")
                        for s in self.config.final_seed_list
                    ]
        for task in self.families:
            for m in self.sweep_methods:
                out += [
                    PlannedRun(self.run(task, m, f, s), "sweep")
                    for f in self.config.sweep
                    for s in self.config.final_seed_list
                ]
        return out

    def finals_after_tuning(
        self,
        task: str,
        method: str,
        factor: float,
        schedule_params: ScheduleParams = (),
        lr_trajectory: Sequence[float] = (),
    ) -> list[PlannedRun]:
        """The final runs of a tuned method, at the factor (and schedule settings, or LR
        trajectory) its tuner chose."""
        m = next(m for m in self.methods if m.name == method)
        return [
            PlannedRun(
                self.run(task, m, factor, s, "final", schedule_params, lr_trajectory), "final"
            )
            for s in self.config.final_seed_list
        ]

    def n_final_tuned(self) -> int:
        """How many final runs tuning will unlock."""
        n_tuned = sum(self.has_tuner(m) for m in self.methods)
        return len(self.families) * n_tuned * self.config.seeds

    def describe_task(self, task: str) -> str:
        family = self.families[task]
        spec = family.spec("momentum", steps=self.steps[task])
        arch = ", ".join(f"{k}={v}" for k, v in sorted(spec.arch.items())) or "fixed"
        return f"{task} ({arch}; batch {spec.batch_size}; {spec.steps} steps)"


def make_plan(
    config: BenchConfig, controller: str | Path | ControllerWeights | None = None
) -> Plan:
    """Resolve names (unknown tasks or methods raise UsageError listing the valid ones), add
    the comparison references (tuned cosine, Adam at its default, a replay's controller, and
    warm-up + cosine where a transformer family runs), and load the controller if a
    controller method is run.

    `controller`: a controller file, loaded weights, or None for the shipped default.
    """
    suite = load_suite(config.suite)
    names = config.tasks or suite.family_names
    unknown = [t for t in names if t not in suite.family_names]
    if unknown:
        raise UsageError(
            f"unknown task {unknown[0]!r} for suite {suite.name!r}; "
            f"choose from: {', '.join(suite.family_names)}"
        )
    families = {t: suite.family(t) for t in dict.fromkeys(names)}
    requested = get_methods(config.methods)
    controllers = [m for m in requested if m.uses_controller]
    needed = [COSINE_REFERENCE, ADAM_REFERENCE]
    needed += [find_method(m.optimizer, "cosine").name for m in controllers]
    needed += [m.replays for m in requested if m.replays]
    if WARMUP_FAMILIES & set(families):
        needed += WARMUP_REFERENCES
    added = [n for n in dict.fromkeys(needed) if n not in {m.name for m in requested}]
    methods = requested + get_methods(added)
    sweep: list[Method] = []
    for m in controllers:
        sweep += [m, find_method(m.optimizer, "constant"), find_method(m.optimizer, "cosine")]
    weights, source = None, ""
    if any(m.uses_controller for m in methods):
        if isinstance(controller, ControllerWeights):
            weights, source = controller, "(weights given in code)"
        else:
            from lrctl.resources import DEFAULT_CONTROLLER, data_path

            path = Path(controller) if controller is not None else data_path(DEFAULT_CONTROLLER)
            if controller is None and not path.is_file():
                raise UsageError(
                    f"no shipped controller at {path}; pass --controller FILE (a file "
                    "written by `lrctl export`)"
                )
            weights, source = load_controller(path), str(path)
    return Plan(
        config=config,
        suite=suite,
        families=families,
        methods=methods,
        added=added,
        sweep_methods=sweep,
        controller=weights,
        controller_source=source,
        steps={t: config.steps or f.spec("momentum").steps for t, f in families.items()},
        controller_hash=controller_digest(weights) if weights is not None else "",
    )
