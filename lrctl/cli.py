"""The `lrctl` command line: train, export, info, demo, find-lr, bench.

User mistakes print one line `lrctl: error: ...` and exit with status 2, no traceback: every
`lrctl.errors.LrctlError` (unknown names, bad numbers, malformed or missing suites, configs and
controller files), and an OSError on a path the user gave (an input that cannot be read, an
output that cannot be written; the message says which, and the path) or a full disk. Any other
exception is a bug in lrctl and shows its traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import os
import sys
import textwrap
from pathlib import Path

from lrctl.errors import LrctlError, UsageError

EXIT_USAGE = 2


def _cmd_train(args: argparse.Namespace) -> None:
    from lrctl.ppo import TrainConfig, check_suites, train

    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir RUN (the folder of the run to continue)")
        ignored = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--suite", args.suite),
                ("--eval-suite", args.eval_suite),
                ("--n-envs", args.n_envs),
                ("--seed", args.seed),
                ("--no-batched", args.no_batched or None),
                ("--action-mode", args.action_mode),
                ("--relative-reward", args.relative_reward or None),
                ("--reward-norm", args.reward_norm),
                ("--feature-version", args.feature_version),
                ("--scale-time", args.scale_time),
                ("--scale-min-decisions", args.scale_min_decisions),
                ("--dither", args.dither),
                ("--hide-features", args.hide_features),
                ("--lr-shock", args.lr_shock),
                ("--obs-noise", args.obs_noise),
            )
            if value is not None
        ]
        if ignored:
            raise UsageError(
                f"--resume continues the run with its own RUN/config.json, so {', '.join(ignored)} "
                "cannot change it; drop them (only --timesteps may raise the budget) or start a "
                "new run in another --run-dir"
            )
        cfg = TrainConfig()
    else:
        cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
        overrides = {
            "suite": args.suite,
            "eval_suite": args.eval_suite,
            "total_timesteps": args.timesteps,
            "n_envs": args.n_envs,
            "seed": args.seed,
            "batched": False if args.no_batched else None,
            "action_mode": args.action_mode,
            "relative_reward": True if args.relative_reward else None,
            "reward_norm": args.reward_norm,
            "feature_version": args.feature_version,
            "scale_time": args.scale_time,
            "scale_min_decisions": args.scale_min_decisions,
            "dither": args.dither,
            "hidden_features": args.hide_features,
            "lr_shock": args.lr_shock,
            "obs_noise": args.obs_noise,
        }
        data = {**vars(cfg), **{k: v for k, v in overrides.items() if v is not None}}
        cfg = TrainConfig.from_dict(data, "command line")
        check_suites(cfg)  # fail fast on a bad suite, before the run folder
    # A default output path counts as given: main() reports an OSError on it in one line.
    args.run_dir = args.run_dir or f"runs/{_dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(args.run_dir)
    print(f"lrctl train: run folder {run_dir}")
    final = train(
        cfg,
        run_dir,
        resume=args.resume,
        progress_bar=not args.no_progress,
        extend_to=args.timesteps if args.resume else None,
    )
    _print_train_summary(run_dir, final)


def _print_train_summary(run_dir: Path, final: Path) -> None:
    import json

    state = json.loads((final / "state.json").read_text())
    print(
        f"\ndone: {state['num_timesteps']} timesteps in {state.get('wall_time_s', 0) / 60:.1f} min"
    )
    eval_csv = run_dir / "eval.csv"
    if eval_csv.is_file():
        import pandas as pd

        ev = pd.read_csv(eval_csv)
        print("evaluation on the held-out suite (deterministic policy):")
        print(ev.to_string(index=False))
    print(f"export it with: lrctl export {run_dir} -o {run_dir}/controller.safetensors")


def _cmd_export(args: argparse.Namespace) -> None:
    from lrctl.export import export_run

    if args.bench:
        from lrctl.card import check_bench_dir

        if not args.card:
            raise UsageError("--bench only makes sense with --card")
        check_bench_dir(Path(args.bench))  # before writing anything
    if args.card and Path(args.run).is_file():
        raise UsageError(
            "--card describes a training run; given a controller file, drop --card (the "
            "card of the run it came from still describes its training)"
        )
    out = export_run(args.run, args.output, args.scale_min_decisions, args.blowup_guard)
    print(f"wrote {out}")
    if args.card:
        import shutil

        from lrctl.card import write_card
        from lrctl.export import run_and_model

        run, model = run_and_model(Path(args.run))
        config = Path(args.output).parent / "config.json"
        if not config.exists():  # the card folder keeps the config it was trained with
            shutil.copyfile(run / "config.json", config)
        floor = (
            f" --scale-min-decisions {args.scale_min_decisions}"
            if args.scale_min_decisions is not None
            else ""
        )
        if args.blowup_guard is not None:
            floor += f" --blowup-guard {args.blowup_guard:g}"
        command = (
            f"lrctl train --config {config} --run-dir {run}\n"
            f"lrctl export {args.run} -o {args.output}{floor} --card"
        )
        card = write_card(run, out, command, args.bench, model)
        print(f"wrote {card} and training_curve.png")


def _cmd_info(args: argparse.Namespace) -> None:
    import json

    from lrctl.controller_file import load_controller
    from lrctl.resources import DEFAULT_CONTROLLER, data_path

    path = Path(args.controller) if args.controller else data_path(DEFAULT_CONTROLLER)
    w = load_controller(path)
    print(f"controller: {path}")
    print(f"features: version {w.feature_version} ({w.obs_mean.shape[0]} inputs)")
    print(f"action: {json.dumps(w.action_spec.to_dict())}")
    print(f"layers: {[tuple(wt.shape) for wt, _ in w.layers]}")
    prov = dict(w.provenance)
    prov.pop("config", None)
    if "ensemble_of" in prov:  # one line per member: its seed, budget and checkpoint
        prov["ensemble_of"] = [
            {
                "seed": m.get("config", {}).get("seed"),
                **{k: m[k] for k in ("timesteps", "checkpoint", "exported") if k in m},
            }
            for m in prov["ensemble_of"]
        ]
    print(f"provenance: {json.dumps(prov)}")


def _cmd_ensemble(args: argparse.Namespace) -> None:
    from lrctl.controller_file import load_controller, save_controller
    from lrctl.ensemble import ensemble_weights

    members = [load_controller(path) for path in args.controllers]
    out = save_controller(ensemble_weights(members), args.output)
    print(f"wrote {out}: the average of {len(members)} controllers' actions")


def _cmd_demo(args: argparse.Namespace) -> None:
    from lrctl.demo import run_demo

    run_demo(
        task=args.task,
        seeds=args.seeds,
        steps=args.steps,
        out_dir=Path(args.out),
        controller=args.controller,
    )


def _cmd_find_lr(args: argparse.Namespace) -> None:
    from lrctl.optimizers import OPTIMIZER_NAMES
    from lrctl.range_test import MIN_STEPS, REFERENCE_SPAN, range_test_task
    from lrctl.tasks import load_suite

    if args.optimizer not in OPTIMIZER_NAMES:
        raise UsageError(
            f"unknown optimizer {args.optimizer!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}"
        )
    if args.steps < MIN_STEPS:
        raise UsageError(f"--steps must be at least {MIN_STEPS} (100 is usual), got {args.steps}")
    family = load_suite(args.suite).family(args.task)  # UnknownNameError lists the families
    reference = family.reference_lr(args.optimizer)
    args.out = args.out or f"results/find-lr/{args.task}_{args.optimizer}.png"  # counts as given
    out = Path(args.out)
    _check_writable(out, "--out")
    spec = family.spec(args.optimizer, seed=args.seed)
    arch = ", ".join(f"{k}={v}" for k, v in sorted(spec.arch.items()))
    lo, hi = (reference * f for f in REFERENCE_SPAN)
    print(
        f"lrctl find-lr: {args.task} ({arch}{', ' if arch else ''}batch {spec.batch_size}), "
        f"{args.optimizer}, seed {args.seed}: LR {lo:.3g} -> {hi:.3g} over at most "
        f"{args.steps} steps, train split"
    )
    result = range_test_task(family, spec, args.optimizer, args.seed, steps=args.steps)
    title = f"{args.task}, {args.optimizer}: LR range test, seed {args.seed}"
    result.plot(out, reference_lr=reference, title=title)
    rows = [
        ("suggested LR", f"{result.suggestion:.3g}  ({result.suggestion / reference:.3g} x the reference)"),
        ("rule", result.rule),
        ("reference LR", f"{reference:.3g}  (the family's calibrated LR for {args.optimizer})"),
        ("steps used", f"{result.steps} of {args.steps}"),
        ("ended", result.stop_reason),
    ]  # fmt: skip
    for name, value in rows:
        print(textwrap.fill(value, 96, initial_indent=f"  {name:<14}", subsequent_indent=" " * 16))
    print(f"wrote {out}")


def _check_writable(path: Path, flag: str) -> None:
    """Fail before the work, not after it, when `path` cannot be written."""
    import tempfile

    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path such as {path}/plot.png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}; choose another {flag}"
        ) from None


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Names given as several arguments and/or comma-separated."""
    if not values:
        return None
    return tuple(n for v in values for n in v.split(",") if n)


def _cmd_bench(args: argparse.Namespace) -> None:
    import shlex

    from lrctl.bench import BenchConfig, run_bench
    from lrctl.bench.methods import DEFAULT_METHODS

    methods = _names(args.methods) or DEFAULT_METHODS
    if methods == ("all",):
        methods = _all_methods()
    settings = {
        "suite": args.suite,
        "tasks": _names(args.tasks),
        "methods": methods,
        "seeds": args.seeds,
        "steps": args.steps,
    }
    config = BenchConfig.quick_preset(**settings) if args.quick else BenchConfig(**settings)
    flags = [f"--suite {shlex.quote(args.suite)}", f"--seeds {args.seeds}"]
    for flag, value in (("--tasks", args.tasks), ("--methods", args.methods)):
        if value:
            flags.append(f"{flag} {shlex.quote(','.join(_names(value) or ()))}")
    for flag, value in (("--steps", args.steps), ("--controller", args.controller)):
        if value is not None:
            flags.append(f"{flag} {shlex.quote(str(value))}")
    if args.quick:
        flags.append("--quick")
    run_bench(
        config,
        out=args.out,
        controller=args.controller,
        workers=args.workers,
        ray_address=args.ray,
        progress=not args.no_progress,
        command="lrctl bench " + " ".join(flags),
    )


def _all_methods() -> tuple[str, ...]:
    """`--methods all`: every registered method; the PBT ones only when Ray Tune is installed
    (the optional extra), else they are left out with a note."""
    import importlib.util

    from lrctl.bench.methods import METHODS

    names = tuple(METHODS)
    if importlib.util.find_spec("ray") is None:
        pbt = [n for n, m in METHODS.items() if m.tuner == "pbt"]
        print(f"note: {', '.join(pbt)} left out: they need Ray Tune (pip install 'lrctl[ray]')")
        names = tuple(n for n in names if n not in pbt)
    return names


def _bench_epilog() -> str:
    from lrctl.bench.methods import DEFAULT_METHODS, METHODS

    rows = [
        f"  {m.name:<26}{m.label}{'' if m.name in DEFAULT_METHODS else ' (not run by default)'}"
        for m in METHODS.values()
    ]
    return (
        "methods (--methods; default: all but those marked; --methods all: every one):\n"
        + "\n".join(rows)
        + "\n\n"
        + textwrap.fill(
            "Outputs under OUT/<suite name>/ (OUT/<suite name>-quick/ with --quick): runs.csv, "
            "steps.csv.gz, evals.csv.gz, summary.md, quality_bar.md (and .json), loss_curves.png, "
            "lr_trajectories.png, robustness.png; a full run also rewrites OUT/README.md. Finished "
            "runs are kept in OUT/<suite name>/runs/ (one JSON each) and skipped when the same "
            "command runs again, so an interrupted benchmark resumes where it stopped.",
            88,
        )
    )


def _add_find_lr_parser(sub: argparse._SubParsersAction) -> None:
    from lrctl.optimizers import OPTIMIZER_NAMES
    from lrctl.range_test import MIN_STEPS, REFERENCE_SPAN, UNSTABLE_FACTOR

    lo, hi = REFERENCE_SPAN
    p = sub.add_parser(
        "find-lr",
        help="LR range test on a task: a suggested starting LR and a plot",
        description=(
            "The LR range test (Smith 2017; fastai's lr_find) on one task family of a suite: the "
            f"LR rises exponentially from {lo:g} to {hi:g} times the family's reference LR, one "
            "optimizer step each on the train split (validation and test data are never read), "
            "until the smoothed loss exceeds 4x its best. Prints the suggested LR beside the "
            "reference LR and writes a PNG of loss against LR. The suggestion is where the loss "
            "falls fastest: the steepest least-squares slope of log-loss over log-LR in windows "
            "of 10% of the steps, after a 10% burn-in, before the loss minimum and before the "
            f"loss first jumps to {UNSTABLE_FACTOR:g}x its best level; with no descent, the LR of "
            "the minimum / 10. The plot goes to results/find-lr/TASK_OPTIMIZER.png unless --out "
            "says otherwise. For your own loop: lrctl.range_test.find_lr(optimizer, train_step)."
        ),
    )
    p.add_argument(
        "--suite",
        default="eval",
        help="suite: a .toml path or a name: 'eval' (default), 'val', 'train', 'train_v1'",
    )
    p.add_argument("--task", required=True, help="a family of the suite, e.g. digits_cnn")
    p.add_argument(
        "--optimizer",
        default="momentum",
        help=f"one of {', '.join(OPTIMIZER_NAMES)} (default momentum: SGD with momentum 0.9)",
    )
    p.add_argument("--seed", type=int, default=0, help="model and batch-order seed (default 0)")
    p.add_argument(
        "--steps",
        type=int,
        default=100,
        help=f"most optimizer steps the test takes (default 100, at least {MIN_STEPS})",
    )
    p.add_argument("--out", metavar="PNG", help="where to write the plot (default: see above)")
    p.set_defaults(
        func=_cmd_find_lr, paths=(("suite", "--suite", "read"), ("out", "--out", "write"))
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrctl",
        description="Learned learning-rate control for PyTorch: train a PPO controller, export it, "
        "and compare it with classic schedules.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a PPO controller on a task suite", description=(
        "Meta-train a controller with Stable-Baselines3 PPO on envs/train.toml (by default), "
        "evaluating periodically on the held-out envs/eval.toml. Writes config, logs "
        "(CSV + TensorBoard), checkpoints and the final model into the run folder."))  # fmt: skip
    p.add_argument(
        "--config",
        help="JSON file of TrainConfig fields (see lrctl/ppo.py); flags override it. Its "
        '"version" says which format the fields follow (a run\'s RUN/config.json has the '
        "current one: copy it for today's defaults); a file without one is read as version 0, "
        "the oldest format (no batched populations, gradient norms on every step)",
    )
    p.add_argument("--run-dir", help="run folder (default: runs/<date-time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last checkpoint with its own config.json; "
        "with --timesteps N, train a finished (or interrupted) run on to N decisions in all",
    )
    p.add_argument("--suite", help="training suite: a .toml path or 'train' (default)")
    p.add_argument(
        "--eval-suite",
        help="suite of the periodic evaluation that picks the checkpoint: a .toml path or "
        "'val' (default); the eval suite is for the final report, not for choosing",
    )
    p.add_argument(
        "--action-mode",
        choices=("recursive", "anchored"),
        help="recursive: lr <- lr x m^a each decision (default); anchored: a bounded factor "
        "around cosine annealing, re-anchored every step (lrctl.actions)",
    )
    p.add_argument(
        "--scale-time",
        type=float,
        metavar="F",
        help="anchored only: add the slow scale term, which integrates the actions so that a "
        "run of constant a = 1 crosses the scale band (0.1x-10x) in the fraction F of a run; it "
        "can rescue a base LR off by up to 10x (TrainConfig.scale_time; 0, the default: off)",
    )
    p.add_argument(
        "--scale-min-decisions",
        type=int,
        metavar="N",
        help="with --scale-time: the scale term crosses its band in no fewer than N decisions, "
        "however short the run, so that one decision of a short run cannot move the LR 100x "
        "(TrainConfig.scale_min_decisions; 1, the default: no floor)",
    )
    p.add_argument(
        "--dither",
        type=float,
        metavar="D",
        help="anchored only, a research lever: probe the LR by multiplying every other block's "
        "LR by exp(D) and the others' by exp(-D), so that features v5's lr_response reads the "
        "loss's answer to a known move (TrainConfig.dither; 0, the default: no probe)",
    )
    p.add_argument(
        "--hide-features",
        nargs="+",
        metavar="NAME",
        help="a research lever: features the policy never sees (they read 0 in training, and "
        "the exported file ignores them), e.g. --hide-features progress; names as in "
        "lrctl/features.py (TrainConfig.hidden_features; default: none hidden)",
    )
    p.add_argument(
        "--lr-shock",
        type=float,
        metavar="P",
        help="a research lever: the probability that a training episode is shocked, i.e. from "
        "a random step on its LR is off by a hidden factor in [0.1, 10], so that the policy "
        "must read from the run whether its LR is too high or too low (lrctl/shocks.py; "
        "TrainConfig.lr_shock; batched populations only; 0, the default: never)",
    )
    p.add_argument(
        "--obs-noise",
        type=float,
        metavar="S",
        help="a research lever: the std of Gaussian noise added to every normalised observation "
        "of the training rollouts, in units of the feature's running std (lrctl/obs_noise.py; "
        "TrainConfig.obs_noise); the evaluation and the exported controller see clean "
        "observations (0, the default: none)",
    )
    p.add_argument(
        "--relative-reward",
        action="store_true",
        help="reward the improvement over a reference run under cosine at the same base LR "
        "(twice the inner steps; TrainConfig.relative_reward)",
    )
    p.add_argument(
        "--reward-norm",
        choices=("global", "family"),  # lrctl.family_reward_norm.REWARD_NORMS (not imported: SB3)
        help="how PPO's rewards are scaled: 'global' (one running scale, SB3's VecNormalize; "
        "the default) or 'family' (one per task family, so that families whose loss moves far "
        "do not drown the others; lrctl/family_reward_norm.py; TrainConfig.reward_norm)",
    )
    p.add_argument(
        "--feature-version",
        type=int,
        choices=(2, 3, 4, 5),
        help="the observation's feature version (lrctl/features.py; TrainConfig.feature_version; "
        "stored in the exported controller file): 2, the 13 loss, gradient-norm, LR and progress "
        "features (default); 3, those plus the last update's size relative to the parameters "
        "and the cosine of each block's last two gradients; 4, version 3 plus a slow average of "
        "that cosine; 5, version 4 plus lr_response, a slow average of the LR's moves signed by "
        "whether the loss then fell faster or slower",
    )
    p.add_argument(
        "--timesteps",
        type=int,
        help="total PPO timesteps (controller decisions); with --resume, the run's new budget",
    )
    p.add_argument(
        "--n-envs",
        type=int,
        help="env slots run side by side (default: 2 x population batched, else one per core)",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--no-batched",
        action="store_true",
        help="every env slot a single env in its own process (SubprocVecEnv), no batched "
        "populations (TrainConfig.batched)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(
        func=_cmd_train,
        paths=(
            ("config", "--config", "read"),
            ("suite", "--suite", "read"),
            ("eval_suite", "--eval-suite", "read"),
            ("run_dir", "--run-dir", "write"),
        ),
    )

    p = sub.add_parser("export", help="export a trained run to a controller file", description=(
        "Write the run's deterministic policy, observation normalisation and action mapping to a "
        "safetensors controller file (no pickle) usable with lrctl.LRController. Given a "
        "controller file instead of a run, write a copy with the runtime settings below "
        "(--scale-min-decisions, --blowup-guard) and the weights unchanged."))  # fmt: skip
    p.add_argument(
        "run",
        help="run folder written by `lrctl train` (its final model, else its latest checkpoint), "
        "or one of its checkpoints, RUN/checkpoints/step-N (checkpoint selection on val), or a "
        "controller file to rewrite with new runtime settings",
    )
    p.add_argument("-o", "--output", required=True, help="controller file to write (.safetensors)")
    p.add_argument(
        "--card",
        action="store_true",
        help="also write a model card (README.md, training_curve.png) beside it",
    )
    p.add_argument(
        "--bench",
        metavar="DIR",
        help="with --card: include the quality bar and summary `lrctl bench` wrote in DIR",
    )
    p.add_argument(
        "--scale-min-decisions",
        type=int,
        metavar="N",
        help="write the file with the scale term's floor N (ActionSpec.scale_min_decisions) "
        "whatever the run trained with: the scale term then crosses its band in no fewer than "
        "N decisions, so a short run's LR cannot jump 100x in one decision; recorded in the "
        "file's provenance",
    )
    p.add_argument(
        "--blowup-guard",
        type=float,
        metavar="G",
        help="write the file with the runtime's blow-up guard G (ActionSpec.blowup_factor, "
        "anchored controllers): when the loss turns non-finite, or climbs above the run's start "
        "and to more than G times its best, while the controller holds the LR above its base "
        "schedule, it hands the run back to that schedule (at the run's average factor so far, "
        "capped at 1); 0: no guard; recorded in the file's provenance",
    )
    p.set_defaults(
        func=_cmd_export,
        paths=(
            ("output", "--output", "write"),
            ("run", "run", "read"),
            ("bench", "--bench", "read"),
        ),
    )

    p = sub.add_parser(
        "info",
        help="describe a controller file",
        description="Print a controller file's action mapping, layers and provenance.",
    )
    p.add_argument(
        "controller", nargs="?", help="controller file (default: the shipped controller)"
    )
    p.set_defaults(func=_cmd_info, paths=(("controller", "controller", "read"),))

    p = sub.add_parser(
        "ensemble",
        help="average several controllers (seeds of one configuration) into one file",
        description=(
            "Write one controller file whose action is the average of the given controllers' "
            "actions (before the clip to [-1, 1]): one tanh MLP as wide as all of them together "
            "(lrctl/ensemble.py). The controllers must share feature version, action spec and "
            "depth, i.e. be seeds or checkpoints of one training configuration."
        ),
    )
    p.add_argument("controllers", nargs="+", help="controller files (.safetensors), two or more")
    p.add_argument("-o", "--output", required=True, help="controller file to write (.safetensors)")
    p.set_defaults(func=_cmd_ensemble, paths=(("output", "--output", "write"),))

    p = sub.add_parser("demo", help="shipped controller vs cosine and Adam on a held-out task", description=(
        "Train one held-out task with the shipped controller (SGD-momentum and Adam), with "
        "SGD-momentum + cosine annealing, and with Adam at its default LR, over several seeds; print "
        "a table and write a PNG of loss and LR curves."))  # fmt: skip
    p.add_argument(
        "--task", default="digits_cnn", help="family from envs/eval.toml (default: digits_cnn)"
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default: the family's middle horizon)",
    )
    p.add_argument("--controller", help="controller file (default: the shipped controller)")
    p.add_argument(
        "--out",
        default="results/demo",
        help="output folder for the table and PNG (default results/demo)",
    )
    p.set_defaults(
        func=_cmd_demo, paths=(("controller", "--controller", "read"), ("out", "--out", "write"))
    )

    _add_find_lr_parser(sub)

    p = sub.add_parser(
        "bench",
        help="fair, resumable comparison with tuned classic schedules and Adam",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_bench_epilog(),
        description=textwrap.fill(
            "Compare the controller (untuned, at each task's reference LR) with SGD-momentum "
            "under every classic schedule, Adam, AdamW, RMSprop and AdaGrad. Each baseline's base "
            "LR is tuned per task by a 7-point log grid (2 seeds, validation split), or, for the "
            "*_random / *_tpe methods, by random search / Optuna TPE with the same budget and "
            "range, and for the *_range_test methods by an LR range test; every "
            "method is then retrained with fresh seeds and reported on the test split (mean, "
            "std, rank, win rates vs tuned cosine and vs Adam at 1e-3). The controller is also "
            "swept over x0.1, x1, x10 of the reference LR against constant LR and cosine at "
            "the same LR (quality_bar.md)."
        ),
    )
    p.add_argument(
        "--suite",
        default="eval",
        help="suite: a .toml path or a name: 'eval' (default), 'val', 'train', 'train_v1'",
    )
    p.add_argument(
        "--tasks", nargs="+", metavar="TASK", help="families of the suite to run (default: all)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="methods to compare (names below, space- or comma-separated); tuned "
        "SGD-momentum + cosine and Adam at 1e-3 are always added as references",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="final-evaluation seeds per method and task (default 3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test, a few minutes on 2 cores: 100 steps, a 5-point grid (x0.1..x10), "
        "1 tuning seed; not the full protocol, and the output says so",
    )
    p.add_argument(
        "--steps", type=int, help="steps per run (default: each family's middle horizon)"
    )
    p.add_argument("--controller", help="controller file (default: the shipped controller)")
    p.add_argument("--out", default="results", help="output root (default: results)")
    p.add_argument(
        "--workers", type=int, help="parallel worker processes (default: one per CPU core)"
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the runs as Ray tasks: 'auto' or a cluster address (ray://host:10001), or "
        "'local' for a Ray started here with --workers CPUs; needs pip install 'lrctl[ray]'",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(
        func=_cmd_bench,
        paths=(
            ("suite", "--suite", "read"),
            ("controller", "--controller", "read"),
            ("out", "--out", "write"),
        ),
    )
    return parser


def _path_error(args: argparse.Namespace, exc: OSError) -> str | None:
    """The one-line message for an OSError on a path the user gave (or a default output path):
    the path itself, something inside it, a folder on the way to it, or the temporary file an
    atomic write puts beside it. None for any other path (a bug) or none."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}; free some space and run the command again"
    for filename in (exc.filename, exc.filename2):
        if filename is None:
            continue
        failed = Path(os.path.abspath(os.fsdecode(filename)))
        for dest, flag, verb in getattr(args, "paths", ()):
            value = getattr(args, dest, None)
            if value is None:
                continue
            given = Path(os.path.abspath(value))
            beside = failed.parent == given.parent and given.name in failed.name
            if failed.is_relative_to(given) or given.is_relative_to(failed) or beside:
                fix = "choose another path" if verb == "write" else "check the path"
                return (
                    f"cannot {verb} {failed}: {exc.strerror or type(exc).__name__} "
                    f"({flag} {value}); {fix}"
                )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LrctlError as exc:
        print(f"lrctl: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        message = _path_error(args, exc)
        if message is None:
            raise
        print(f"lrctl: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lrctl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
