"""Execution: every planned run, in worker processes or as Ray tasks, resumable.

`run_bench` plans (lrctl.bench.plan), skips runs the store already holds, and executes the
rest on a backend:

- local (default): a `ProcessPoolExecutor` with one worker per core, each worker using one
  torch thread; `workers=1` runs in this process;
- Ray (`ray_address`): the same function as Ray tasks of one CPU each, on a running cluster
  (`"auto"` or an address) or on a Ray started here (`"local"`, `workers` CPUs). Ray is an
  optional extra: `pip install 'lrctl[ray]'`; lrctl must be installed on the cluster's nodes.

Tuning is two-phase: each tuned (task, method) has a tuner (lrctl.bench.tuners) that asks for
tuning runs, all at once (grid, random search) or a trial at a time (TPE), as ordinary runs of
the pool; when it is done, its LR is chosen and the final runs are queued ahead of the rest.
A tuner whose work is one job (a range test; population-based training, which runs Ray Tune
on the Ray of `--ray`, or on a local Ray of `workers` CPUs) asks for it like a run.
Each finished run is written to the store at once (atomically), so an interrupted benchmark
loses only the runs that were in flight, and a rerun replays every tuner from the store.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from lrctl.bench.methods import Method
from lrctl.bench.outcome import BenchOutcome
from lrctl.bench.pbt import PBT, run_pbt_job
from lrctl.bench.plan import BenchConfig, Plan, PlannedRun, RunConfig, make_plan, run_spec
from lrctl.bench.report import write_report
from lrctl.bench.store import RunStore, make_record
from lrctl.bench.tuners import RANGE_TEST, Tuner, make_tuner, run_range_test
from lrctl.controller_file import ControllerWeights
from lrctl.errors import MissingDependencyError, UsageError
from lrctl.tasks import TaskFamily


def execute_run(
    config: RunConfig,
    family: TaskFamily,
    method: Method,
    controller: ControllerWeights | None,
    cpus: int = 1,
) -> dict:
    """Train one run and return its store record (runs in a worker, with one torch thread).
    A tuner's job runs instead: the range test, or PBT (on the Ray this worker is part of, or
    on a local Ray of `cpus` CPUs: the bench's worker count)."""
    import torch

    from lrctl.training import train

    torch.set_num_threads(1)
    if config.schedule == RANGE_TEST:
        return run_range_test(config, family)
    if config.schedule == PBT:
        return run_pbt_job(config, family, cpus)
    history = train(
        family.build(run_spec(config, family)),
        config.optimizer,
        config.base_lr,
        config.steps,
        config.seed,
        method.policy_fn(
            config.steps,
            config.val_every,
            controller,
            dict(config.schedule_params),
            config.lr_trajectory,
        ),
        val_every=config.val_every,
        evaluate_test=config.evaluate_test,
        param_groups=config.param_groups,
    )
    return make_record(config, history)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


class InlineBackend:
    """Runs each submitted call at once, in this process (workers=1; tests, debugging)."""

    name = "this process"
    slots = 1
    cpus = 1
    """CPUs a PBT job may start a local Ray with (the bench's worker count)."""

    def __init__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()  # execute_run sets 1; restored by close()

    def submit(self, fn: Callable[..., dict], *args: object) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def close(self, cancel: bool = False) -> None:
        import torch

        torch.set_num_threads(self.threads)


class PoolBackend:
    """A local process pool (spawned workers, one torch thread each)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.name = f"{workers} local worker processes"
        self.slots = 2 * workers  # keep every worker fed while results are being saved
        self.cpus = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    def submit(self, fn: Callable[..., dict], *args: object) -> Future:
        return self.pool.submit(fn, *args)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class RayBackend:
    """Ray tasks of one CPU each; `address` 'local' starts a Ray of `workers` CPUs here."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError(
                "--ray needs Ray, which is not installed: pip install 'lrctl[ray]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address == "local":
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(
                    f"cannot start or reach Ray at {address!r} ({exc}); start a cluster with "
                    "`ray start --head`, or use --ray local"
                ) from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.name = f"Ray ({address}, {cpus} CPUs)"
        self.slots = 2 * max(1, cpus)
        self.cpus = cpus
        self.remote = ray.remote(num_cpus=1)(execute_run)
        # A PBT job only drives Ray Tune, whose members take one CPU each: it holds none
        # itself, so it cannot starve its own members of a small cluster.
        self.driver = ray.remote(num_cpus=0)(execute_run)

    def submit(self, fn: Callable[..., dict], *args: object) -> Future:
        assert fn is execute_run, "the Ray backend runs lrctl.bench.runner.execute_run only"
        pbt_job = isinstance(args[0], RunConfig) and args[0].schedule == PBT
        return (self.driver if pbt_job else self.remote).remote(*args).future()

    def close(self, cancel: bool = False) -> None:
        if self.started:
            self.ray.shutdown()


Backend = InlineBackend | PoolBackend | RayBackend


def make_backend(workers: int | None = None, ray_address: str | None = None) -> Backend:
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise UsageError(f"--workers must be at least 1, got {n}")
    if ray_address:
        return RayBackend(ray_address, n)
    return InlineBackend() if n == 1 else PoolBackend(n)


def _run_label(c: RunConfig) -> str:
    return f"{c.task} / {c.method} / lr={c.base_lr:.3g} / seed {c.seed}"


def run_plan(
    plan: Plan,
    store: RunStore,
    backend: Backend,
    out_dir: Path,
    progress: bool = True,
    max_new_runs: int | None = None,
    desc: str | None = None,
) -> BenchOutcome:
    """Execute every run of `plan` not yet in `store`; stop early after `max_new_runs`."""
    from tqdm import tqdm

    start = time.perf_counter()
    out = BenchOutcome(plan=plan, store=store, out_dir=out_dir, backend=backend.name)
    results: dict[str, dict] = {}
    stored = store.done()
    queue: deque[str] = deque()
    # Tuners are made first: one whose library is missing fails before anything runs.
    tuners: dict[tuple[str, str], Tuner] = {
        (task, m.name): make_tuner(plan, task, m) for task, m in plan.tune_targets()
    }
    waiting: dict[str, list[tuple[str, str]]] = {}  # run hash -> the tuners it will be told to
    told: deque[tuple[str, str]] = deque()  # tuners told a result since they last asked
    methods = {m.name: m for m in [*plan.methods, *plan.sweep_methods]}

    def add(run: PlannedRun, front: bool = False) -> None:
        h = run.config.config_hash
        out.roles.setdefault(h, set()).add(run.role)
        if h in out.configs:
            return  # the same run serves another role: trained once
        out.configs[h] = run.config
        record = store.load_valid(h) if h in stored else None
        if record is None:
            queue.appendleft(h) if front else queue.append(h)
        else:
            out.n_cached += 1
            finished(h, record)

    def finished(h: str, record: dict) -> None:
        results[h] = record["result"]
        for g in waiting.pop(h, ()):
            tuners[g].tell(out.configs[h], record)
            told.append(g)

    def advance(g: tuple[str, str], front: bool) -> None:
        """Queue what tuner `g` asks for now; once it is done, queue its final runs."""
        tuner = tuners[g]
        asked = []
        for c in tuner.ask():
            h = c.config_hash
            if h in results:  # asked again (the same config twice): known already
                out.roles[h].add("tune")
                tuner.tell(c, store.load(h))
                told.append(g)
            else:
                waiting.setdefault(h, []).append(g)
                asked.append(PlannedRun(c, "tune"))
        for run in reversed(asked) if front else asked:
            add(run, front)  # a stored run is told at once (and `g` is back in `told`)
        if tuner.done and g not in out.tuned:
            outcome = out.tuned[g] = tuner.outcome()
            out.chosen[g] = outcome.factor
            finals = plan.finals_after_tuning(
                *g, outcome.factor, outcome.schedule_params, outcome.lr_trajectory or ()
            )
            for run in reversed(finals):
                add(run, front=True)

    def settle(front: bool) -> None:
        """Let every tuner told something ask again (a sequential tuner replays its stored
        trials here, one after the other)."""
        while told:
            advance(told.popleft(), front)

    for g in tuners:
        advance(g, front=False)
    settle(front=False)
    for run in plan.initial_runs():
        add(run)
    running: dict[Future, str] = {}
    submitted = 0
    bar = tqdm(
        total=len(queue) + plan.n_final_tuned(),
        desc=desc or f"bench {plan.suite_name}",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        while True:
            pending_finals = plan.config.seeds * sum(1 for g in tuners if g not in out.tuned)
            unasked = sum(t.n_runs - t.n_asked for t in tuners.values())
            bar.total = out.n_new + len(running) + len(queue) + unasked + pending_finals
            bar.set_postfix_str(f"{out.n_cached} stored before", refresh=False)
            while queue and len(running) < backend.slots:
                if max_new_runs is not None and submitted >= max_new_runs:
                    break
                h = queue.popleft()
                c = out.configs[h]
                args = (c, plan.families[c.task], methods[c.method], plan.controller, backend.cpus)
                running[backend.submit(execute_run, *args)] = h
                submitted += 1
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                h = running.pop(fut)
                try:
                    record = fut.result()
                except Exception as exc:
                    raise RuntimeError(f"run {_run_label(out.configs[h])} failed: {exc}") from exc
                store.save(record)
                out.n_new += 1
                bar.update(1)
                finished(h, record)
            settle(front=True)  # a sequential tuner's next trial goes ahead of the rest
    finally:
        bar.close()
    out.complete = not queue and not running and len(out.tuned) == len(tuners)
    out.wall_time_s = time.perf_counter() - start
    return out


def execute_plan(
    plan: Plan,
    out_dir: Path,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    max_new_runs: int | None = None,
    desc: str | None = None,
) -> BenchOutcome:
    """`run_plan` on a fresh backend with the store `out_dir/runs`; the backend is closed
    at the end, and at once on an error or Ctrl-C (finished runs are already stored)."""
    store = RunStore(out_dir / "runs")
    backend = make_backend(workers, ray_address)
    try:
        outcome = run_plan(plan, store, backend, out_dir, progress, max_new_runs, desc)
    except BaseException:
        backend.close(cancel=True)
        raise
    backend.close()
    return outcome


def output_dir(out: str | Path, plan: Plan) -> Path:
    """`<out>/<suite name>`, or `<out>/<suite name>-quick` for --quick."""
    return Path(out) / (plan.suite_name + ("-quick" if plan.config.quick else ""))


def run_bench(
    config: BenchConfig,
    out: str | Path = "results",
    controller: str | Path | ControllerWeights | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    max_new_runs: int | None = None,
    report: bool = True,
    command: str | None = None,
) -> BenchOutcome:
    """Plan, run (resuming from the store), and write the outputs under `<out>/<suite>/`."""
    plan = make_plan(config, controller)
    outcome = execute_plan(
        plan, output_dir(out, plan), workers, ray_address, progress, max_new_runs
    )
    if report and outcome.complete:
        write_report(outcome, command=command)
    return outcome
