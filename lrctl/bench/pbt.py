"""Population-based training of the LR with Ray Tune: the job of the bench's `pbt` tuner.

One job per (task, method): `lrctl.bench.tuners.PBTTuner` asks for it, and
`lrctl.bench.runner.execute_run` runs it with `run_pbt_job`. Ray Tune's
`PopulationBasedTraining` (Jaderberg et al. 2017) trains a population of inner runs of the
task with the method's optimizer and mutates their LR while they train:

- **Population:** P = max(4, len(grid) x tune_seeds) members (`pbt_settings`), each trained
  once over the task's full horizon T, so the job spends P x T inner steps: exactly the grid's
  budget (len(grid) x tune_seeds x T; 5 x 1 x 100 for --quick) whenever the grid has 4 runs or
  more. Member i starts at the i-th of P LR factors log-spaced over the grid's range
  [min(grid), max(grid)] x the reference LR, with seed i (tuning seed 0 + i; never a final seed).
- **Perturbation:** every `ceil(T / 10)` inner steps (Tune's `time_attr` is the inner step),
  synchronously: once every member has reached the step, the members whose validation loss is
  in the worst 25% copy the model and optimizer state of one in the best 25% (exploit, through
  Tune's checkpoints) and perturb its LR factor (explore: x0.8 or x1.2, or, with probability
  0.25, a fresh draw log-uniform over the range; always clipped to the range).
- **Metric:** the loss on the task's *validation* split, evaluated at every perturbation step;
  the members' task has no test split at all (`member_task`), so it cannot be read.
- **Result:** the member with the lowest final validation loss. Each member carries its
  lineage's history through exploits in its checkpoint, so the winner's LR at every step, from
  step 0 to T-1, is the schedule PBT found: `lr_trajectory`, absolute LRs. The final runs replay
  it on fresh seeds (`lrctl.baselines.ReplayLR`) and are scored on the test split.

Seeded: the members' seeds, and one seeded generator for every draw PBT makes (`_pbt_rng`);
synchronous PBT decides at fixed steps on deterministic members, so a rerun finds the same
schedule, whatever the number of workers. Ray is an optional extra (`pip install
'lrctl[ray]'`); without it, a bench with a PBT method stops before running anything, with that
hint (`require_ray_tune`). Tune runs on the Ray the bench already uses (`--ray`: inside a Ray
task of the cluster) or on one started here with the bench's worker count, quiet, with its
files in a temporary folder removed afterwards. On a multi-node cluster Tune needs storage
shared by the nodes for the members' checkpoints (not set up here: one node, or the local Ray).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from lrctl.bench.plan import RunConfig, ScheduleParams, run_spec
from lrctl.errors import MissingDependencyError
from lrctl.runs import History, Runs, make_history

if TYPE_CHECKING:
    from lrctl.tasks import RunSpec, Task, TaskFamily

PBT = "pbt"
"""The `schedule` of a PBT job: `execute_run` runs `run_pbt_job`."""
MIN_POPULATION = 4
"""The smallest population (with fewer, the 25% quantiles are one member each or empty)."""
PERTURBATION_FRACTION = 0.1
"""Members are compared, exploited and explored every ceil(10% of T) inner steps."""
QUANTILE_FRACTION = 0.25
"""The worst 25% copy the best 25% at each perturbation (Tune's default)."""
RESAMPLE_PROBABILITY = 0.25
"""Chance that explore draws a fresh LR factor instead of scaling it (Tune's default)."""
PERTURBATION_FACTORS = (1.2, 0.8)
"""Explore scales the copied LR factor by one of these (Tune's default)."""
STATE_FILE = "member.pt"
"""A member's checkpoint: tensors, numbers and lists only (loaded with weights_only=True)."""
RAY_HINT = "pip install 'lrctl[ray]'"


@dataclass(frozen=True)
class PBTSettings:
    """What a PBT job does; stored in its RunConfig's `schedule_params`, so in its hash."""

    population: int
    horizon: int
    """T: the inner steps each member trains (the task's horizon)."""
    interval: int
    """Inner steps between perturbations."""
    low: float
    high: float
    """The LR factor's range, x the reference LR (the tuning grid's)."""

    @property
    def total_steps(self) -> int:
        """The job's budget: P x T inner steps."""
        return self.population * self.horizon

    def start_factors(self) -> tuple[float, ...]:
        """Member i's first LR factor: P points log-spaced over [low, high]."""
        return tuple(float(f) for f in np.geomspace(self.low, self.high, self.population))

    def params(self) -> ScheduleParams:
        return (
            ("high", self.high),
            ("horizon", float(self.horizon)),
            ("interval", float(self.interval)),
            ("low", self.low),
            ("population", float(self.population)),
        )

    @classmethod
    def from_params(cls, params: ScheduleParams) -> PBTSettings:
        p = dict(params)
        ints = {k: int(p[k]) for k in ("population", "horizon", "interval")}
        return cls(**ints, low=float(p["low"]), high=float(p["high"]))


def pbt_settings(grid: tuple[float, ...], tune_seeds: int, horizon: int) -> PBTSettings:
    """The grid's budget as a population (at least `MIN_POPULATION`) over the grid's range."""
    return PBTSettings(
        population=max(MIN_POPULATION, len(grid) * tune_seeds),
        horizon=horizon,
        interval=max(1, math.ceil(PERTURBATION_FRACTION * horizon)),
        low=min(grid),
        high=max(grid),
    )


def require_ray_tune() -> ModuleType:
    """The `ray.tune` module, or a MissingDependencyError saying how to install it."""
    try:
        from ray import tune
    except ImportError:
        raise MissingDependencyError(
            f"population-based training (the 'pbt' tuner) needs Ray Tune, which is not "
            f"installed: {RAY_HINT}"
        ) from None
    return tune


# --- One member: an InnerRun with its lineage's history, saved and restored whole. ---


@dataclass(frozen=True)
class MemberJob:
    """What every member of one job shares (sent to the members by Tune)."""

    family: TaskFamily
    spec: RunSpec
    optimizer: str
    reference_lr: float
    horizon: int
    interval: int
    seed: int
    """Member i's seed is seed + i (the job's tuning seed, 0: seeds 0 .. P-1)."""


def member_task(job: MemberJob) -> Task:
    """The job's task without its test split: members see train and validation data only."""
    return replace(job.family.build(job.spec), test=None)  # type: ignore[arg-type]


Report = Callable[[dict, dict], None]
"""`report(metrics, state)`: hand one result and the member's state to Tune."""


def train_member(
    config: Mapping[str, float], job: MemberJob, state: Mapping[str, object] | None, report: Report
) -> None:
    """Train one member to the horizon from `state` (None: from scratch, with seed
    `job.seed + config["member"]`) at LR `config["lr_factor"]` x the reference, reporting the
    validation loss every `job.interval` steps (+inf once diverged: such a member only waits
    to be replaced, and is still charged its steps)."""
    lr = job.reference_lr * float(config["lr_factor"])
    seed = job.seed + int(config["member"])
    runs = Runs.single(member_task(job), job.optimizer, lr, job.horizon, seed)
    if state is None:
        runs.validate_start()
    else:
        runs.load_state_dict(dict(state))
        runs.run.set_lr(lr)  # the exploited member's state came with its donor's LR
    while runs.t[0] < job.horizon:
        start = int(runs.t[0])
        block = runs.run_block(job.interval, accuracy=True)
        val_loss = math.inf if block.diverged[0] else float(block.val_loss[0])
        step = int(runs.t[0])
        metrics = {"step": step, "val_loss": val_loss, "steps_trained": step - start}
        report(metrics, runs.state_dict())


def lineage_history(
    state: Mapping[str, object], wall_time: float, classification: bool = False
) -> History:
    """The winner's history across its lineage (a `Runs.state_dict`), as `lrctl.runs.History`
    (its steps end at the divergence step, as `train()`'s do; no test metrics)."""
    diverged_at = int(state["diverged_at"])  # type: ignore[call-overload]
    evals = [tuple(float(v) for v in row) for row in state["evals"]]  # type: ignore[attr-defined]
    return make_history(
        state["train_loss"].numpy(),  # type: ignore[attr-defined]
        state["grad_norm"].numpy(),  # type: ignore[attr-defined]
        state["lrs"].numpy(),  # type: ignore[attr-defined]
        evals,
        diverged_at if diverged_at >= 0 else None,
        classification,
        wall_time,
    )


# --- Ray Tune: the members as function trainables, PBT as their scheduler. ---


def _tune_member(config: dict, job: MemberJob) -> None:
    """A member as a Ray Tune function trainable: `train_member` with Tune's checkpoints."""
    from ray import tune

    torch.set_num_threads(1)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, weights_only=True)

    def report(metrics: dict, member: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(member, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train_member(config, job, state, report)


def _start_factor(factors: tuple[float, ...], spec: object) -> float:
    return factors[spec.config.member]  # type: ignore[attr-defined]


def _clip_factor(low: float, high: float, config: dict) -> dict:
    config["lr_factor"] = min(max(float(config["lr_factor"]), low), high)
    return config


@contextlib.contextmanager
def _pbt_rng(seed: int) -> Iterator[random.Random]:
    """A seeded `random.Random` for every draw PBT makes (which member to copy, how to explore).

    Ray Tune's PBT draws from the `random` module's global state, which Ray's own machinery
    also draws from at moments that depend on timing; so for the duration PBT's module gets a
    private generator in its place (the log-uniform resampling draws from it too)."""
    from ray.tune.schedulers import pbt

    rng = random.Random(seed)
    saved = pbt.random
    pbt.random = rng  # type: ignore[assignment]
    try:
        yield rng
    finally:
        pbt.random = saved


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """No Tune result files, progress tables, migration warnings or exploit log lines."""
    env = {
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1e9",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    loggers = [logging.getLogger(n) for n in ("ray", "ray.tune", "ray.train")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@dataclass
class PBTResult:
    """The winning lineage, and what the job spent."""

    history: History
    """The winner's history across exploits (its `lr` column: the LR trajectory)."""
    lr_trajectory: tuple[float, ...]
    """The winner's LR at every step, 0 .. T-1 (absolute LRs)."""
    inner_steps: int
    """Inner steps trained by all members together (P x T)."""
    population: int


def population_based_training(
    job: MemberJob, settings: PBTSettings, seed: int, cpus: int = 1
) -> PBTResult:
    """Train a population with Ray Tune's PopulationBasedTraining; return the winner's lineage.

    Uses the Ray this process is connected to (a cluster, from inside a Ray task), or starts a
    local one with `cpus` CPUs (the bench's worker count) for the duration, one CPU per member."""
    tune = require_ray_tune()
    import ray
    from ray.tune.schedulers import PopulationBasedTraining

    start = time.perf_counter()
    steps_trained = [0]

    class StepCounter(tune.Callback):
        """Adds up the inner steps every member reports (the job's budget, measured)."""

        def on_trial_result(
            self, iteration: int, trials: list, trial: object, result: dict, **info: object
        ) -> None:
            steps_trained[0] += int(result["steps_trained"])

    lo, hi = settings.low, settings.high
    with (
        tempfile.TemporaryDirectory(prefix="lrctl-pbt-") as folder,
        _quiet_tune(),
        _pbt_rng(seed) as rng,
    ):
        started = not ray.is_initialized()
        if started:
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _temp_dir=str(Path(folder) / "ray"),
            )
        try:
            scheduler = PopulationBasedTraining(
                time_attr="step",
                metric="val_loss",
                mode="min",
                perturbation_interval=settings.interval,
                hyperparam_mutations={"lr_factor": lambda: _log_uniform(rng, lo, hi)},
                quantile_fraction=QUANTILE_FRACTION,
                resample_probability=RESAMPLE_PROBABILITY,
                perturbation_factors=PERTURBATION_FACTORS,
                custom_explore_fn=lambda c: _clip_factor(lo, hi, c),
                log_config=False,
                synch=True,
            )
            factors = settings.start_factors()
            tuner = tune.Tuner(
                tune.with_parameters(_tune_member, job=job),
                param_space={
                    "member": tune.grid_search(list(range(settings.population))),
                    "lr_factor": tune.sample_from(lambda s: _start_factor(factors, s)),
                },
                tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
                run_config=tune.RunConfig(
                    name="pbt",
                    storage_path=str(Path(folder) / "tune"),
                    stop={"step": settings.horizon},
                    verbose=0,
                    callbacks=[StepCounter()],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
                ),
            )
            results = tuner.fit()
            if results.errors:
                raise RuntimeError(f"a PBT member failed: {results.errors[0]}")
            best = results.get_best_result(metric="val_loss", mode="min", scope="last")
            with best.checkpoint.as_directory() as ckpt:
                state = torch.load(Path(ckpt) / STATE_FILE, weights_only=True)
        finally:
            if started:
                ray.shutdown()
    classification = member_task(job).classification
    history = lineage_history(state, time.perf_counter() - start, classification)
    return PBTResult(
        history=history,
        lr_trajectory=tuple(float(v) for v in state["lrs"]),
        inner_steps=steps_trained[0],
        population=settings.population,
    )


def run_pbt_job(config: RunConfig, family: TaskFamily, cpus: int = 1) -> dict:
    """Run a PBT job (`config.schedule == PBT`) and return its store record (in a worker)."""
    from lrctl.bench.store import make_record

    settings = PBTSettings.from_params(config.schedule_params)
    job = MemberJob(
        family,
        run_spec(config, family, settings.horizon),
        config.optimizer,
        config.reference_lr,
        settings.horizon,
        settings.interval,
        config.seed,
    )
    result = population_based_training(job, settings, config.seed, cpus)
    record = make_record(config, result.history)
    record["result"].update(
        lr_trajectory=list(result.lr_trajectory),
        inner_steps=result.inner_steps,
        population=result.population,
    )
    return record
