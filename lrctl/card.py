"""Model card for an exported controller: README.md + training_curve.png beside the file.

The card states how the controller was made (the exact command, the config, wall time on the
machine that trained it), its training curve, and its evaluation on the held-out suite: the
periodic evaluations from training and, when `bench_dir` is given, the quality-bar table and
summary that `lrctl bench` wrote there for this controller.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pandas as pd

from lrctl.atomic import atomic_path, atomic_write_text
from lrctl.errors import UsageError


def _plot_training_curve(run_dir: Path, out: Path, eval_suite: str = "eval") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    progress = pd.read_csv(run_dir / "logs" / "progress.csv")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        progress["time/total_timesteps"],
        progress["rollout/ep_rew_mean"],
        label="train suite: mean episode return (stochastic policy)",
    )
    eval_csv = run_dir / "eval.csv"
    if eval_csv.is_file():
        ev = pd.read_csv(eval_csv)
        ax.errorbar(
            ev["step"], ev["mean_return"], yerr=ev["std_return"],
            fmt="o-", capsize=3, label=f"{eval_suite} suite (held out): mean return ± std, deterministic",
        )  # fmt: skip
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="PPO timesteps (controller decisions)", ylabel="return = log(V_0 / V_T)")
    ax.set_title("lrctl default controller: training curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def check_bench_dir(bench_dir: Path) -> None:
    if not (bench_dir / "quality_bar.md").is_file() or not (bench_dir / "summary.md").is_file():
        raise UsageError(f"{bench_dir}: no quality_bar.md and summary.md; run `lrctl bench` first")


def _bench_section(bench_dir: Path) -> str:
    """The quality bar (whole) and the summary's test-loss table, titles demoted one level."""
    check_bench_dir(bench_dir)
    quality = (bench_dir / "quality_bar.md").read_text().replace("\n## ", "\n### ")
    quality = quality.replace("# ", "## ", 1)
    sections = (bench_dir / "summary.md").read_text().split("\n## ")
    test_loss = next((s for s in sections[1:] if s.startswith("Test loss")), "")
    return (
        f"{quality}\n## Benchmark: test loss against tuned baselines (from `{bench_dir}/summary.md`)\n\n"
        f"{test_loss.split(chr(10), 1)[-1]}"
    )


ITERATIONS_FILE = "iterations.md"
"""A hand-written account of the training iterations tried, kept beside the controller and
appended to its card, so that regenerating the card keeps it."""


def _envs_line(cfg: dict) -> str:
    """How the training environments ran (batched populations and/or SubprocVecEnv)."""
    from lrctl.ppo import TrainConfig

    config = TrainConfig.from_dict(cfg, default_version=0)  # a run's config.json, read as a file
    n = config.resolved_n_envs()
    if config.batched:
        return (
            f"{n} environment slots side by side (batched populations of up to "
            f"{config.population} inner runs, `lrctl.batched_env`)"
        )
    return f"{n} environments in parallel (SubprocVecEnv)"


def _hidden_text(cfg: dict) -> str:
    """The features the policy never saw (`TrainConfig.hidden_features`), if any."""
    hidden = cfg.get("hidden_features") or []
    return f", except {', '.join(hidden)}, which it never sees" if hidden else ""


def _action_line(cfg: dict) -> str:
    """What the policy's action does, from the run's config (recursive or anchored)."""
    band = f"[{cfg['lr_band'][0]}, {cfg['lr_band'][1]}]"
    if cfg.get("action_mode", "recursive") == "anchored":
        scale = ""
        if cfg.get("scale_time", 0.0) > 0:
            lo, hi = cfg["scale_band"]
            scale = (
                f", times a slow scale term in [{lo}, {hi}] that can cross its range in "
                f"{cfg['scale_time']:.0%} of a run"
            )
            if cfg.get("scale_min_decisions", 1) > 1:
                scale += f" and in no fewer than {cfg['scale_min_decisions']} decisions"
        if cfg.get("dither", 0.0) > 0:
            scale += f", probed by x exp(+-{cfg['dither']}) on alternate blocks"
        return (
            f"A PPO policy that sets the learning rate every {cfg['interval']} optimizer steps to "
            f"cosine annealing from the base LR times exp({cfg['residual']} x a), a in [-1, 1]"
            f"{scale}, re-anchored every step and kept within {band} x the cosine value,"
        )
    m = cfg["max_multiplier"]
    return (
        f"A PPO policy that multiplies the learning rate by a factor in [1/{m}, {m}] every "
        f"{cfg['interval']} optimizer steps, within {band} x the base LR,"
    )


def _action_line_of_file(cfg: dict, controller_file: Path) -> str:
    """`_action_line` of the action the file acts with: a scale floor set at export
    (`lrctl export --scale-min-decisions`) is stated as such, and so is a blow-up guard
    (`lrctl export --blowup-guard`)."""
    from lrctl.controller_file import load_controller

    spec = load_controller(controller_file).action_spec
    floor, guard = spec.scale_min_decisions, spec.blowup_factor
    trained = cfg.get("scale_min_decisions", 1)
    line = _action_line({**cfg, "scale_min_decisions": floor})
    if floor != trained:
        line = line.removesuffix(",")
        line += f" (the floor of {floor} decisions set at export; it trained with {trained}),"
    if guard:
        line = line.removesuffix(",")
        line += (
            f"; if the loss turns non-finite, or climbs above the run's start and to more than "
            f"{guard:g}x its best, while the LR is above the cosine value, the run is handed "
            "back to the cosine schedule at its average factor so far, capped at 1 (a runtime "
            "guard set at export),"
        )
    return line


def _shock_text(cfg: dict) -> str:
    """The training episodes' LR shocks (`lrctl.shocks`), if the run had any."""
    p = cfg.get("lr_shock", 0.0)
    if not p:
        return ""
    from lrctl.shocks import SHOCK_DECADES

    span = 10**SHOCK_DECADES
    return (
        f", {p:.0%} of its episodes shocked (from a random step on, the LR off by a hidden "
        f"factor in [1/{span:g}, {span:g}])"
    )


def _return_line(cfg: dict) -> str:
    """What the returns in the card's table mean, from the run's reward setting."""
    from lrctl.episodes import DIVERGENCE_RETURN, RELATIVE_DIVERGENCE_RETURN

    if cfg.get("relative_reward", False):
        return (
            "Return = log(V_cosine,T / V_T): the final validation loss against a reference run "
            "under cosine at the same base LR (> 0: better than cosine); divergence gives "
            f"{RELATIVE_DIVERGENCE_RETURN:g}."
        )
    return (
        f"Return = log(V_0 / V_T) of the validation loss; divergence gives {DIVERGENCE_RETURN:g}."
    )


def write_card(
    run_dir: str | Path,
    controller_file: str | Path,
    command: str,
    bench_dir: str | Path | None = None,
    model_folder: str | Path | None = None,
) -> Path:
    """Write README.md and training_curve.png next to `controller_file`. `model_folder` is the
    exported model of the run (default RUN/final; a checkpoint chosen on val otherwise)."""
    run_dir, controller_file = Path(run_dir), Path(controller_file)
    folder = controller_file.parent
    cfg = json.loads((run_dir / "config.json").read_text())
    model = Path(model_folder) if model_folder is not None else run_dir / "final"
    state = json.loads((model / "state.json").read_text())
    _plot_training_curve(run_dir, folder / "training_curve.png", Path(cfg["eval_suite"]).stem)
    wall = state.get("wall_time_s")  # absent from a checkpoint's state
    wall_text = f"{wall / 60:.1f} min" if wall is not None else "not recorded for this checkpoint"
    ev_table = ""
    if (run_dir / "eval.csv").is_file():
        ev = pd.read_csv(run_dir / "eval.csv")
        ev_table = ev.to_markdown(index=False, floatfmt=".4f")
    cores = os.cpu_count()
    envs = _envs_line(cfg)
    text = f"""# lrctl default controller

{_action_line_of_file(cfg, controller_file)}
from the scale-free features of `lrctl/features.py` (version in the file's metadata){_hidden_text(cfg)}.

- File: `{controller_file.name}` (safetensors, no pickle; `lrctl info {controller_file}`)
- Trained on: `envs/{Path(cfg["suite"]).stem}.toml` (suite `{cfg["suite"]}`){_shock_text(cfg)}; evaluated on the held-out `{cfg["eval_suite"]}` suite
- Timesteps: {state["num_timesteps"]:,} decisions, {envs}
- Wall time: {wall_text} on this machine ({cores} cores, {platform.processor() or platform.machine()}, CPU only)
- Config: [`config.json`](config.json) (every field is documented in `lrctl/ppo.py`)

## Reproduce

```bash
{command}
```

## Training curve

![training curve](training_curve.png)

## Evaluation during training (held-out suite, {cfg["eval_episodes"]} fixed episodes, deterministic policy)

{_return_line(cfg)}

{ev_table}
"""
    if bench_dir is not None:
        text += "\n" + _bench_section(Path(bench_dir))
    history = folder / ITERATIONS_FILE
    if history.is_file():  # hand-written: what was tried before this controller was chosen
        text += "\n" + history.read_text()
    path = folder / "README.md"
    atomic_write_text(path, text)
    return path
