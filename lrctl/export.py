"""`lrctl export RUN -o FILE`: a trained PPO run -> a standalone controller file.

`lrctl export FILE -o FILE2 [--scale-min-decisions N] [--blowup-guard G]` rewrites an existing
controller file with those runtime settings instead (the weights unchanged, the change noted
in its provenance): the training run of a shipped file need not still exist.

The deterministic policy (the Gaussian's mean, clipped to [-1, 1] as SB3's predict does) is
copied as plain tensors; VecNormalize's observation statistics travel with it, so the runtime
applies exactly what SB3 applied in training.
"""

from __future__ import annotations

import datetime as _dt
import json
import pickle
from dataclasses import replace
from pathlib import Path

import torch
from stable_baselines3 import PPO

from lrctl import __version__
from lrctl.actions import ActionSpec
from lrctl.controller_file import ControllerWeights, load_controller, save_controller
from lrctl.errors import UsageError
from lrctl.hidden_features import feature_indices, without_columns
from lrctl.ppo import TrainConfig, latest_checkpoint


def policy_layers(model: PPO) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the actor MLP and the action head, in order (tanh in between)."""
    policy = model.policy
    acts = [m for m in policy.mlp_extractor.policy_net if not isinstance(m, torch.nn.Linear)]
    if any(not isinstance(a, torch.nn.Tanh) for a in acts):
        raise UsageError("only tanh actor networks can be exported (TrainConfig uses tanh)")
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    linears.append(policy.action_net)
    return [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]


def weights_from_model(
    model: PPO, vecnormalize, cfg: TrainConfig, provenance: dict
) -> ControllerWeights:
    rms = vecnormalize.obs_rms
    weights = ControllerWeights(
        layers=policy_layers(model),
        obs_mean=torch.as_tensor(rms.mean, dtype=torch.float32),
        obs_var=torch.as_tensor(rms.var, dtype=torch.float32),
        obs_clip=float(vecnormalize.clip_obs),
        obs_epsilon=float(vecnormalize.epsilon),
        action_spec=cfg.action_spec,
        provenance=provenance,
        feature_version=cfg.feature_version,
    )
    # Features hidden in training read 0 there; the file ignores them (lrctl.hidden_features).
    return without_columns(weights, feature_indices(cfg.hidden_features, cfg.feature_version))


def _model_folder(run_dir: Path) -> Path:
    final = run_dir / "final"
    if (final / "model.zip").is_file():
        return final
    latest = latest_checkpoint(run_dir)
    if latest is not None and (latest / "model.zip").is_file():
        return latest
    raise UsageError(
        f"{run_dir}: no trained model found (neither final/ nor a checkpoint); run `lrctl train` first"
    )


def run_and_model(path: Path) -> tuple[Path, Path]:
    """(run folder, model folder) of `path`: a run (its final model, else its latest
    checkpoint) or one model folder inside a run (RUN/final, RUN/checkpoints/step-N)."""
    if (path / "config.json").is_file():
        return path, _model_folder(path)
    for run in (path.parent, path.parent.parent):
        if (run / "config.json").is_file() and (path / "model.zip").is_file():
            return run, path
    raise UsageError(
        f"{path}: not an lrctl training run (no config.json) nor one of its checkpoints "
        "(RUN/checkpoints/step-N with a model.zip)"
    )


def export_run(
    run_dir: str | Path,
    out: str | Path,
    scale_min_decisions: int | None = None,
    blowup_factor: float | None = None,
) -> Path:
    """Export a run's final model (or its latest checkpoint), or the checkpoint folder
    `run_dir` names (RUN/checkpoints/step-N), to a controller file; or, when `run_dir` is a
    controller file, rewrite it to `out` with the settings below.

    `scale_min_decisions` sets the scale term's floor (`ActionSpec.scale_min_decisions`) in
    the file, for a policy trained without one (or with another); `blowup_factor` sets the
    runtime's blow-up guard (`ActionSpec.blowup_factor`): the provenance says so."""
    source = Path(run_dir)
    if source.is_file():
        weights = load_controller(source)
        trained_floor = weights.provenance.get("config", {}).get(
            "scale_min_decisions", weights.action_spec.scale_min_decisions
        )
        if scale_min_decisions is None and blowup_factor is None:
            raise UsageError(
                f"{source} is already a controller file; to rewrite it, say what to change "
                "(--scale-min-decisions N, --blowup-guard G), or export a training run folder"
            )
    else:
        run_dir, folder = run_and_model(source)
        cfg = TrainConfig.load(run_dir / "config.json")
        model = PPO.load(folder / "model.zip", device="cpu")
        # Our own checkpoint, written by lrctl train (VecNormalize.save pickles); controller
        # files themselves never contain pickle.
        with open(folder / "vecnormalize.pkl", "rb") as f:
            vecnormalize = pickle.load(f)
        state = json.loads((folder / "state.json").read_text())
        provenance = {
            "config": json.loads(cfg.to_json()),
            "timesteps": int(state["num_timesteps"]),
            "wall_time_s": state.get("wall_time_s"),
            "checkpoint": folder.name,
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "lrctl_version": __version__,
        }
        weights = weights_from_model(model, vecnormalize, cfg, provenance)
        trained_floor = cfg.scale_min_decisions
    if (
        scale_min_decisions is not None
        and scale_min_decisions != weights.action_spec.scale_min_decisions
    ):
        weights = with_scale_floor(weights, scale_min_decisions, trained_floor)
    if blowup_factor is not None and blowup_factor != weights.action_spec.blowup_factor:
        weights = with_blowup_guard(weights, blowup_factor)
    return save_controller(weights, out)


def _noted(weights: ControllerWeights, spec: ActionSpec, note: str) -> ControllerWeights:
    """`weights` with `spec`, `note` added to the provenance's "after_training" (the changes
    made to the file since training, in order, separated by "; ")."""
    before = weights.provenance.get("after_training")
    notes = f"{before}; {note}" if before else note
    return replace(
        weights, action_spec=spec, provenance={**weights.provenance, "after_training": notes}
    )


def with_blowup_guard(weights: ControllerWeights, blowup_factor: float) -> ControllerWeights:
    """`weights` with the runtime's blow-up guard g = `blowup_factor` (0: none), which only
    anchored controllers have (it hands a run back to their base schedule)."""
    if not weights.action_spec.anchored:
        raise UsageError(
            "--blowup-guard: this controller uses recursive actions, with no base schedule to "
            "hand a run back to; the guard is for anchored controllers (--action-mode anchored)"
        )
    try:
        spec = replace(weights.action_spec, blowup_factor=blowup_factor)
    except UsageError as exc:
        raise UsageError(f"--blowup-guard: {exc}") from None
    return _noted(weights, spec, f"blowup_factor set to {blowup_factor:g} at export")


def with_scale_floor(
    weights: ControllerWeights, scale_min_decisions: int, trained_with: int
) -> ControllerWeights:
    """`weights` acting with the scale floor `scale_min_decisions` (refused for a controller
    without the scale term, where it would do nothing), the change noted in the provenance."""
    spec = weights.action_spec
    if not (spec.anchored and spec.scale_time > 0):
        raise UsageError(
            "--scale-min-decisions: this controller has no slow scale term (it was trained "
            "without --scale-time), so a floor on it would change nothing; drop the option"
        )
    try:
        spec = replace(spec, scale_min_decisions=scale_min_decisions)
    except UsageError as exc:
        raise UsageError(f"--scale-min-decisions: {exc}") from None
    note = (
        f"scale_min_decisions set to {scale_min_decisions} at export; the policy trained with "
        f"{trained_with}"
    )
    return _noted(weights, spec, note)
