"""How a tuned method's base LR is chosen per task: tuners that ask for runs and pick a setting.

One tuner serves one (task, method). The runner (lrctl.bench.runner) drives it:

    tuner = make_tuner(plan, task, method)
    tuner.ask()               # the runs it wants now: RunConfigs, run (in any order) and stored
    tuner.tell(config, rec)   # one finished run's store record; ask() again, until tuner.done
    tuner.outcome()           # what the final runs need, and the budget the tuning used

| tuner      | asks for (per task)                                       | picks                   |
| ---------- | --------------------------------------------------------- | ----------------------- |
| grid       | every grid factor x the tuning seeds, all at once         | lowest mean val. loss   |
| random     | len(grid) trials x the tuning seeds, all at once          | the same rule           |
| tpe        | len(grid) trials x the tuning seeds, one trial at a time  | the same rule           |
| range_test | one LR range test (tuning seed 0, train split only)       | its suggested LR        |
| pbt        | one PBT job: a population on Ray Tune (val. split)        | winner's LR per step    |
| replay     | the replayed controller at the reference LR, tuning seeds | its geometric-mean LRs  |

Random search and TPE (Optuna, seeded per task and method) draw the LR factor log-uniformly
over the grid's range, [min(grid), max(grid)] x the reference LR, and with a schedule listed in
`SCHEDULE_SPACES` that schedule's own parameters too; a trial is judged, like a grid point, by
its mean final validation loss over the tuning seeds (`lrctl.bench.plan.tuning_key`). So both
get exactly the grid's budget: len(grid) configurations x tune_seeds runs of the full horizon.

Every run a tuner asks for is an ordinary stored run (role "tune", `evaluate_test=False`: the
test split is never read while tuning), so tuning runs in the process pool or on Ray next to
everything else, and is resumable. TPE is sequential (Optuna's ask/tell, in the main process):
it asks trial k+1 only once trial k is told. On a rerun it is replayed from the store: the same
seeded sampler asks the same trials in the same order, gets their stored results back, and
goes on from the first trial that was not run, so a resumed TPE ends where an uninterrupted one
does.

Adding a tuner: subclass `Tuner`, register it in `TUNERS` and its name in
`lrctl.bench.methods.TUNER_NAMES`. A tuner whose work is not a set of fixed-horizon training
runs asks for one job whose `schedule` names it, as the range test does (`RANGE_TEST`, run by
`run_range_test` from `lrctl.bench.runner.execute_run`); `JobTuner` does the asking. PBT works
that way (`PBTTuner`, lrctl.bench.pbt): one job trains the population on the validation split
(the grid's budget and range), its record holds the winner's LR at every step and the steps
spent, and the tuner returns them in `TuneOutcome` (`lr_trajectory`, `budget`) for the final
runs to replay on fresh seeds (the 'replay' schedule, lrctl.baselines.ReplayLR).

A controller replay (`ReplayTuner`) depends on another method's runs the same way: it asks for
the controller's own runs at the reference LR with the tuning seeds (ordinary stored runs of
the controller method, role "tune"), reads the LR each recorded at every step, and returns
their geometric mean per step as the `lr_trajectory` the final runs replay.
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from lrctl.bench.methods import METHODS, TUNER_NAMES, Method
from lrctl.bench.pbt import (
    PBT,
    PERTURBATION_FACTORS,
    PERTURBATION_FRACTION,
    QUANTILE_FRACTION,
    RESAMPLE_PROBABILITY,
    pbt_settings,
    require_ray_tune,
)
from lrctl.bench.plan import (
    Plan,
    RunConfig,
    ScheduleParams,
    default_val_every,
    run_spec,
    tuning_key,
)
from lrctl.bench.store import make_range_test_record
from lrctl.errors import MissingDependencyError

if TYPE_CHECKING:
    from optuna import Study
    from optuna.samplers import BaseSampler
    from optuna.trial import Trial as OptunaTrial

    from lrctl.tasks import TaskFamily

RANGE_TEST = "range_test"
"""The `schedule` of a range-test job: `execute_run` runs `lrctl.range_test.range_test_task`."""
RANGE_TEST_STEPS = 100
"""Inner steps of one range test (lrctl.range_test's default)."""


class Span(NamedTuple):
    """A searched parameter's range."""

    low: float
    high: float
    log: bool = False


SCHEDULE_SPACES: dict[str, dict[str, Span]] = {
    "one_cycle": {"pct_start": Span(0.05, 0.5)},
}
"""Schedule parameters that random search and TPE tune together with the LR factor (keyword
arguments of the lrctl.baselines schedule). One-cycle's peak is its base LR, so its max_lr is
the tuned LR factor itself; pct_start places the peak (default 0.3)."""


@dataclass(frozen=True)
class Budget:
    """What tuning one method on one task cost."""

    trials: int
    """Configurations tried (one configuration trained with several seeds counts once)."""
    steps: int
    """Inner steps spent, across seeds: each training trial's full horizon (a diverged run
    counts in full, as it was given that budget), or the steps a range test used."""


NO_BUDGET = Budget(0, 0)
"""An untuned method's budget."""


@dataclass(frozen=True)
class TuneOutcome:
    """What the final runs of a tuned method need, and what choosing it cost."""

    factor: float
    """The base LR, as a multiple of the task's reference LR."""
    schedule_params: ScheduleParams = ()
    """Schedule settings chosen with it (empty: the schedule's defaults)."""
    lr_trajectory: tuple[float, ...] | None = None
    """An LR per step for the final runs to replay (a PBT tuner); None: the schedule's."""
    budget: Budget = NO_BUDGET


class Tuner(ABC):
    """Chooses one method's base LR on one task from the runs it asks for."""

    name: ClassVar[str]
    """The `Method.tuner` value it serves."""
    label: ClassVar[str]
    """How tables name it ('random search')."""

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        self.plan = plan
        self.task = task
        self.method = method
        self.n_asked = 0
        """Runs asked for so far."""

    @property
    @abstractmethod
    def n_runs(self) -> int:
        """Runs it will ask for in all (for progress)."""

    @abstractmethod
    def ask(self) -> list[RunConfig]:
        """Runs wanted now and not asked for before; [] while waiting for results, or done."""

    @abstractmethod
    def tell(self, config: RunConfig, record: Mapping[str, object]) -> None:
        """A run it asked for finished with this store record (lrctl.bench.store: its
        `result` metrics and its per-step `steps` history)."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """Every run it needs is told: `outcome()` is ready."""

    @abstractmethod
    def outcome(self) -> TuneOutcome:
        """The chosen setting and the budget spent."""

    @classmethod
    @abstractmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        """One line of summary.md stating how this tuner chose the LR of `methods`."""


@dataclass
class Trial:
    """One configuration (LR factor, schedule settings), trained with every tuning seed."""

    factor: float
    params: ScheduleParams
    configs: list[RunConfig]
    losses: dict[str, float] = field(default_factory=dict)
    """Final validation loss by config hash, as the runs finish."""
    handle: OptunaTrial | None = None
    """Optuna's trial, told the mean loss once every seed is in."""

    @property
    def complete(self) -> bool:
        return len(self.losses) == len(self.configs)

    @property
    def key(self) -> tuple[float, float]:
        return tuning_key(self.losses.values(), self.factor)


class TrialTuner(Tuner):
    """A tuner of trials: each trial one configuration, run with the tuning seeds, on the
    validation split. The trial that wins `tuning_key` is chosen (the earlier one on a tie)."""

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        super().__init__(plan, task, method)
        self.trials: list[Trial] = []
        self._waiting: dict[str, list[Trial]] = {}

    @property
    def n_trials(self) -> int:
        return len(self.plan.config.grid)

    @property
    def n_runs(self) -> int:
        return self.n_trials * self.plan.config.tune_seeds

    def _new_trial(
        self, factor: float, params: ScheduleParams = (), handle: OptunaTrial | None = None
    ) -> list[RunConfig]:
        """Start a trial; returns its runs, one per tuning seed."""
        configs = [
            self.plan.run(self.task, self.method, factor, s, role="tune", schedule_params=params)
            for s in self.plan.config.tune_seed_list
        ]
        trial = Trial(factor, configs[0].schedule_params, configs, handle=handle)
        self.trials.append(trial)
        for c in configs:
            self._waiting.setdefault(c.config_hash, []).append(trial)
        self.n_asked += len(configs)
        return configs

    def tell(self, config: RunConfig, record: Mapping[str, object]) -> None:
        h = config.config_hash
        result: Mapping[str, object] = record["result"]  # type: ignore[assignment]
        for trial in self._waiting.pop(h, []):
            trial.losses[h] = float(result["final_val_loss"])  # type: ignore[arg-type]
            if trial.complete:
                self._trial_complete(trial)

    def _trial_complete(self, trial: Trial) -> None:
        """Hook: a trial has all its seeds."""

    @property
    def done(self) -> bool:
        return len(self.trials) == self.n_trials and all(t.complete for t in self.trials)

    def outcome(self) -> TuneOutcome:
        if not self.done:
            raise RuntimeError(f"tuning {self.method.name} on {self.task} is not finished")
        best = min(self.trials, key=lambda t: t.key)
        steps = sum(c.steps for t in self.trials for c in t.configs)
        return TuneOutcome(best.factor, best.params, budget=Budget(len(self.trials), steps))


class GridTuner(TrialTuner):
    """Every grid factor x the tuning seeds, asked at once (`lrctl.bench.plan.choose_factor`)."""

    name = "grid"
    label = "grid"

    def ask(self) -> list[RunConfig]:
        if self.trials:
            return []
        return [c for f in self.plan.config.grid for c in self._new_trial(f)]

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        cfg = plan.config
        grid = ", ".join(f"x{f:.3g}" for f in cfg.grid)
        others = any(m.tuned and m.tuner != cls.name for m in plan.methods)
        return (
            f"- **Tuning:** each tuned method's base LR "
            f"{'(except with the tuners below) ' if others else ''}is chosen per task from a "
            f"{len(cfg.grid)}-point log-spaced grid of the task's reference LR for that "
            f"optimizer ({grid}), with tuning seeds {list(cfg.tune_seed_list)}, on the "
            "**validation** split: the lowest mean final validation loss wins (a diverged seed "
            "counts as +inf; ties go to the smaller LR)."
        )


def _optuna() -> ModuleType:
    """The optuna module, quiet (or a ValueError saying how to install it)."""
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError(
            "random search and TPE need Optuna, which is not installed: pip install optuna "
            "(a dependency of lrctl; reinstalling lrctl brings it)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no log line per trial
    return optuna


def sampler_seed(task: str, method: str) -> int:
    """A fixed seed per (task, method): a rerun draws the same trials, tasks draw different."""
    return zlib.crc32(f"{task}/{method}".encode())


def _space_text(methods: list[Method]) -> str:
    spaces = {
        m.schedule: SCHEDULE_SPACES[m.schedule] for m in methods if m.schedule in SCHEDULE_SPACES
    }
    parts = [
        f"{schedule}'s {name} {'log-' if s.log else ''}uniform in [{s.low:g}, {s.high:g}]"
        for schedule, space in spaces.items()
        for name, s in space.items()
    ]
    return f", and {', '.join(parts)}" if parts else ""


class OptunaTuner(TrialTuner):
    """Trials drawn by an Optuna sampler over the grid's LR range (and `SCHEDULE_SPACES`),
    each told its mean validation loss."""

    sequential: ClassVar[bool]
    """Ask trial k+1 only after trial k is told (TPE), or every trial at once (random)."""

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        super().__init__(plan, task, method)
        optuna = _optuna()
        grid = plan.config.grid
        self.lr_span = Span(min(grid), max(grid), log=True)
        self.space = SCHEDULE_SPACES.get(method.schedule, {})
        self.study: Study = optuna.create_study(
            direction="minimize", sampler=self.sampler(sampler_seed(task, method.name))
        )

    @abstractmethod
    def sampler(self, seed: int) -> BaseSampler:
        """The seeded Optuna sampler."""

    def ask(self) -> list[RunConfig]:
        out: list[RunConfig] = []
        while len(self.trials) < self.n_trials:
            if self.sequential and not all(t.complete for t in self.trials):
                break
            handle = self.study.ask()
            factor = _suggest(handle, "lr_factor", self.lr_span)
            params = tuple((name, _suggest(handle, name, s)) for name, s in self.space.items())
            out += self._new_trial(factor, params, handle)
        return out

    def _trial_complete(self, trial: Trial) -> None:
        self.study.tell(trial.handle, trial.key[0])  # +inf (all seeds diverged) is allowed

    @classmethod
    def budget_text(cls, plan: Plan) -> str:
        cfg = plan.config
        lo, hi = min(cfg.grid), max(cfg.grid)
        return (
            f"{len(cfg.grid)} trials per task, each trained with tuning seeds "
            f"{list(cfg.tune_seed_list)} (the grid's budget), the LR factor log-uniform over "
            f"[x{lo:.3g}, x{hi:.3g}] the reference LR (the grid's range)"
        )


def _suggest(handle: OptunaTrial, name: str, span: Span) -> float:
    return float(handle.suggest_float(name, span.low, span.high, log=span.log))


class RandomTuner(OptunaTuner):
    """Random search: every trial drawn at once by Optuna's seeded RandomSampler."""

    name = "random"
    label = "random search"
    sequential = False

    def sampler(self, seed: int) -> BaseSampler:
        return _optuna().samplers.RandomSampler(seed=seed)

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        ms = [m for m in plan.methods if m.name in methods]
        return (
            f"- **Random search** ({', '.join(methods)}): {cls.budget_text(plan)}"
            f"{_space_text(ms)}, drawn by Optuna's RandomSampler (seeded per task and "
            "method); judged on the **validation** split by the grid's rule."
        )


def startup_trials(n_trials: int) -> int:
    """TPE's random trials before it models the loss: a third of the budget, at least 2."""
    return min(n_trials, max(2, math.ceil(n_trials / 3)))


class TPETuner(OptunaTuner):
    """Optuna's TPE, asked one trial at a time (ask/tell in the main process)."""

    name = "tpe"
    label = "TPE"
    sequential = True

    def sampler(self, seed: int) -> BaseSampler:
        optuna = _optuna()
        with warnings.catch_warnings():  # multivariate is experimental in Optuna 4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # multivariate: the LR and a schedule's parameters are modelled jointly (Optuna 5's
            # default, set for Optuna 4 too); its default 10 random startup trials would be the
            # whole budget.
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup_trials(self.n_trials), multivariate=True
            )

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        ms = [m for m in plan.methods if m.name in methods]
        n = len(plan.config.grid)
        return (
            f"- **TPE** ({', '.join(methods)}): {cls.budget_text(plan)}{_space_text(ms)}; "
            f"Optuna's TPESampler (multivariate, the first {startup_trials(n)} trials random, "
            "seeded per task and method) asks one trial at a time and is told its mean final "
            "validation loss before the next; the best trial wins by the grid's rule."
        )


class JobTuner(Tuner):
    """A tuner whose work is one job rather than training runs (a range test, PBT): it asks
    for `job()` once, and chooses from that job's stored result."""

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        super().__init__(plan, task, method)
        self.config: RunConfig | None = None
        self.result: Mapping[str, object] | None = None

    @abstractmethod
    def job(self) -> RunConfig:
        """The job's config (role "tune": it never reads the test split)."""

    def job_config(self, schedule: str, steps: int, val_every: int, **changes: object) -> RunConfig:
        """The method's run at the reference LR with the first tuning seed, made a job."""
        seed = self.plan.config.tune_seed_list[0]
        run = self.plan.run(self.task, self.method, 1.0, seed, role="tune")
        changes.update(schedule=schedule, steps=steps, val_every=val_every)
        return replace(run, **changes)  # type: ignore[arg-type]

    @property
    def n_runs(self) -> int:
        return 1

    def ask(self) -> list[RunConfig]:
        if self.config is not None:
            return []
        self.config = self.job()
        self.n_asked = 1
        return [self.config]

    def tell(self, config: RunConfig, record: Mapping[str, object]) -> None:
        if self.config is not None and config.config_hash == self.config.config_hash:
            self.result = record["result"]  # type: ignore[assignment]

    @property
    def done(self) -> bool:
        return self.result is not None


class RangeTestTuner(JobTuner):
    """One LR range test per task on the train split; the final runs start at its suggestion."""

    name = "range_test"
    label = "range test"

    def job(self) -> RunConfig:
        return self.job_config(RANGE_TEST, RANGE_TEST_STEPS, default_val_every(RANGE_TEST_STEPS))

    def outcome(self) -> TuneOutcome:
        if self.result is None or self.config is None:
            raise RuntimeError(f"the range test of {self.method.name} on {self.task} is not done")
        suggestion = float(self.result["suggestion"])  # type: ignore[arg-type]
        ok = math.isfinite(suggestion) and suggestion > 0
        factor = suggestion / self.config.reference_lr if ok else 1.0
        return TuneOutcome(factor, budget=Budget(1, int(self.result["inner_steps"])))  # type: ignore[call-overload]

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        from lrctl.range_test import REFERENCE_SPAN

        lo, hi = REFERENCE_SPAN
        return (
            f"- **LR range test** ({', '.join(methods)}): one range test per task "
            f"(lrctl.range_test: the LR rises exponentially from x{lo:g} to x{hi:g} the "
            f"reference LR over at most {RANGE_TEST_STEPS} steps, tuning seed "
            f"{plan.config.tune_seed_list[0]}, the **train** split only), then cosine from its "
            "suggested LR; without a positive finite suggestion, the reference LR."
        )


def run_range_test(config: RunConfig, family: TaskFamily) -> dict:
    """Run a range-test job and return its store record (in a worker)."""
    from lrctl.range_test import range_test_task

    spec = run_spec(config, family)
    start = time.perf_counter()
    result = range_test_task(family, spec, config.optimizer, config.seed, steps=config.steps)
    return make_range_test_record(config, result, time.perf_counter() - start)


class PBTTuner(JobTuner):
    """Population-based training (Ray Tune) on the validation split, one job per task; the
    final runs replay the winning member's LR at every step (lrctl.bench.pbt)."""

    name = "pbt"
    label = "PBT"

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        require_ray_tune()  # before anything runs: a clear error naming the extra
        super().__init__(plan, task, method)
        cfg = plan.config
        self.settings = pbt_settings(cfg.grid, cfg.tune_seeds, plan.steps[task])

    def job(self) -> RunConfig:
        s = self.settings  # steps: the job's inner steps, P members x T
        return self.job_config(
            PBT, s.total_steps, s.interval, schedule_params=s.params(), lr_trajectory=()
        )

    def outcome(self) -> TuneOutcome:
        if self.result is None or self.config is None:
            raise RuntimeError(f"PBT of {self.method.name} on {self.task} is not done")
        lrs = tuple(float(v) for v in self.result["lr_trajectory"])  # type: ignore[attr-defined]
        population, steps = self.result["population"], self.result["inner_steps"]
        budget = Budget(int(population), int(steps))  # type: ignore[call-overload]
        return TuneOutcome(lrs[0] / self.config.reference_lr, lr_trajectory=lrs, budget=budget)

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        cfg = plan.config
        s = pbt_settings(cfg.grid, cfg.tune_seeds, 1)
        seed = cfg.tune_seed_list[0]
        grid_runs = len(cfg.grid) * cfg.tune_seeds
        budget = "the grid's budget" if s.population == grid_runs else f"the grid: {grid_runs} x"
        return (
            f"- **PBT** ({', '.join(methods)}): Ray Tune's PopulationBasedTraining per task, "
            f"{s.population} members (seeds {seed}..{seed + s.population - 1}), each trained "
            f"over the task's horizon ({s.population} x the horizon in inner steps; {budget}), "
            f"starting at LR factors log-spaced over [x{s.low:.3g}, x{s.high:.3g}] the reference "
            f"LR; every {PERTURBATION_FRACTION:.0%} of the horizon, once all members are there, "
            f"the worst {QUANTILE_FRACTION:.0%} by **validation** loss copy the model and "
            f"optimizer of one of the best {QUANTILE_FRACTION:.0%} and perturb its LR "
            f"(x{' or x'.join(f'{f:g}' for f in PERTURBATION_FACTORS)}, or with probability "
            f"{RESAMPLE_PROBABILITY:g} redrawn log-uniformly; kept in the range). The member "
            "with the lowest final validation loss wins: the final runs replay its LR at every "
            "step (its lineage's, through the copies) on fresh seeds."
        )


def geometric_mean_curve(curves: list[list[float]], steps: int) -> tuple[float, ...]:
    """The LR at each of `steps` steps: the geometric mean (the mean of log LR, the natural
    mean of multiplicative quantities) over the curves that reached that step with a finite
    positive LR. A curve ends early when its run diverged; a step no curve reached holds the
    last mean (every curve empty: ValueError)."""
    out: list[float] = []
    for t in range(steps):
        logs = [math.log(c[t]) for c in curves if t < len(c) and math.isfinite(c[t]) and c[t] > 0]
        if logs:
            out.append(math.exp(math.fsum(logs) / len(logs)))
        elif out:
            out.append(out[-1])
        else:
            raise ValueError("no curve has a finite positive LR at the first step")
    return tuple(out)


class ReplayTuner(Tuner):
    """A controller's LR curve as a fixed schedule: the geometric mean, per step, of the LRs of
    the controller method `method.replays` at the reference LR on the tuning seeds (its own
    untuned runs, which read the validation split only); the final runs replay it."""

    name = "replay"
    label = "controller's LR curve"

    def __init__(self, plan: Plan, task: str, method: Method) -> None:
        super().__init__(plan, task, method)
        source = METHODS[method.replays]
        if source.optimizer != method.optimizer or not source.uses_controller:
            raise ValueError(
                f"method {method.name!r} replays {source.name!r}, which is not a controller "
                f"method with the optimizer {method.optimizer!r}"
            )
        self.source = source
        self.configs = [
            plan.run(task, source, 1.0, s, role="tune") for s in plan.config.tune_seed_list
        ]
        self.curves: dict[str, list[float]] = {}

    @property
    def n_runs(self) -> int:
        return len(self.configs)

    def ask(self) -> list[RunConfig]:
        if self.n_asked:
            return []
        self.n_asked = len(self.configs)
        return list(self.configs)

    def tell(self, config: RunConfig, record: Mapping[str, object]) -> None:
        if any(config.config_hash == c.config_hash for c in self.configs):
            steps: Mapping[str, list[float]] = record["steps"]  # type: ignore[assignment]
            self.curves[config.config_hash] = [float(v) for v in steps["lr"]]

    @property
    def done(self) -> bool:
        return len(self.curves) == len(self.configs)

    def outcome(self) -> TuneOutcome:
        if not self.done:
            raise RuntimeError(f"the runs {self.method.name} replays on {self.task} are not done")
        first = self.configs[0]
        lrs = geometric_mean_curve(list(self.curves.values()), first.steps)
        budget = Budget(1, sum(c.steps for c in self.configs))
        return TuneOutcome(lrs[0] / first.reference_lr, lr_trajectory=lrs, budget=budget)

    @classmethod
    def protocol(cls, plan: Plan, methods: list[str]) -> str:
        sources = ", ".join(dict.fromkeys(METHODS[m].replays for m in methods))
        return (
            f"- **Controller replay** ({', '.join(methods)}): per task, the LR at every step of "
            f"the controller's own untuned runs ({sources}, at the reference LR) with the "
            f"tuning seeds {list(plan.config.tune_seed_list)}, averaged over the seeds "
            "geometrically (the mean of log LR), is replayed as a fixed schedule "
            "(lrctl.baselines.ReplayLR) on the reported seeds: the controller's curve without "
            "its reaction to the run. Beating its replay is the controller's evidence that it "
            "reacts to what it sees."
        )


TUNERS: dict[str, type[Tuner]] = {
    t.name: t for t in (GridTuner, RandomTuner, TPETuner, RangeTestTuner, PBTTuner, ReplayTuner)
}
"""Tuner classes by `Method.tuner` name."""
assert tuple(TUNERS) == TUNER_NAMES, "register each tuner in TUNERS and in TUNER_NAMES"


def make_tuner(plan: Plan, task: str, method: Method) -> Tuner:
    """A fresh tuner for `method` on `task` (raises ValueError if its library is missing)."""
    return TUNERS[method.tuner](plan, task, method)


def protocol_lines(plan: Plan) -> list[str]:
    """How each tuner in use chose the LRs, one summary line per tuner (grid first)."""
    used: dict[str, list[str]] = {}
    for m in plan.methods:
        if plan.has_tuner(m):
            used.setdefault(m.tuner, []).append(m.name)
    return [TUNERS[name].protocol(plan, used[name]) for name in TUNER_NAMES if name in used]
