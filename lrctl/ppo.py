"""Meta-training: Stable-Baselines3 PPO on LRControl-v1 over the train suite.

Read top to bottom: `TrainConfig` (every field documented), `make_training_env` (batched
populations and/or SubprocVecEnv, + VecNormalize), the two callbacks lrctl adds to SB3 (atomic
checkpoints, evaluation on the held-out suite), and `train()`.

Environments. By default (`batched`) the suite's families that `supports_batched` are trained as
populations (`lrctl.batched_env.BatchedLRControlEnv`): N episodes of one shared family,
architecture, batch size and optimizer in one tensor program, each member with its own base LR,
horizon and seed, in this process; the other families run as single `LRControlEnv`s in a
SubprocVecEnv; both side by side in one `ConcatVecEnv`. Env slots are split between the two in
proportion to the families' suite weights. The suite's distribution is kept by redrawing a
population's shared spec from the suite (restricted to the batched families) once every member
has finished `redraw_after` episodes of it, and members' own draws follow the family's
distribution given the shared spec (`batched_env.member_spec`). What changes: a population
keeps its shared spec for about `redraw_after` + 1 episode lengths, and the episodes still
running at a redraw are cut (truncated, bootstrapped by PPO), so late-horizon decisions are a
little rarer than with single envs: simulated for 16 members and horizons of 200-800 steps,
27% of decisions come from episodes that get cut and the mean progress t/T of a decision is
0.46 instead of 0.5 with `redraw_after` = 1 (2: 16%, 0.48; 5: 8%, 0.50), while a larger
value draws fewer architectures, batch sizes and optimizers per timestep. `batched=False`
(`--no-batched`) is the former path: every slot a single env in its own process.

A run folder holds:

    config.json                  the TrainConfig
    logs/progress.csv, events.*  SB3's CSV and TensorBoard logs (train/*, rollout/*, eval/*)
    eval.csv                     one row per evaluation on the eval suite
    checkpoints/step-N/          model.zip + vecnormalize.pkl, written to a temp dir then renamed
    checkpoints/latest.json      {"step": N, "path": ...}, replaced atomically after each save
    final/                       the same pair at the end of training
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecMonitor,
    VecNormalize,
)

from lrctl import __version__
from lrctl.actions import ActionSpec
from lrctl.atomic import atomic_write_json
from lrctl.batched_env import BatchedLRControlEnv, split_suite
from lrctl.episodes import resolve_feature_version
from lrctl.errors import ConfigError, UsageError
from lrctl.family_reward_norm import REWARD_NORMS, reward_normaliser
from lrctl.features import FEATURE_VERSION
from lrctl.hidden_features import HideFeatures, feature_indices, hide
from lrctl.obs_noise import normaliser, with_obs_noise
from lrctl.shocks import check_probability
from lrctl.tasks import Suite, load_suite
from lrctl.vec_concat import ConcatVecEnv

CONFIG_VERSION = 12
"""The config format this code writes; older ones are migrated one version at a time
(`MIGRATIONS`), newer ones refused."""

LR_SCHEDULES = ("constant", "linear")
"""`TrainConfig.lr_schedule`'s values."""


@dataclass
class TrainConfig:
    """Everything `lrctl train` needs; saved as config.json in the run folder."""

    suite: str = "train"
    """Suite the agent trains on (path or 'train'/'eval' for envs/<name>.toml)."""
    eval_suite: str = "val"
    """Suite of the periodic evaluation, which picks the checkpoint: the validation suite
    (never trained on; the eval suite is for the final report only)."""
    total_timesteps: int = 200_000
    """PPO timesteps = controller decisions (each decision is `interval` inner steps)."""
    n_envs: int = 0
    """Environment slots, i.e. episodes run side by side (population members and single envs);
    0: `2 * population` with `batched`, else one per CPU core."""
    batched: bool = True
    """Train the families that support it as batched populations in this process (see the
    module docstring); False: every slot a single env in its own process (SubprocVecEnv)."""
    population: int = 16
    """Most members of one batched population (slots are split into populations this size)."""
    redraw_after: int = 1
    """A population draws a new shared spec once each member finished this many episodes."""
    threads: int = 1
    """torch threads of this process (populations, PPO updates). More can speed populations
    up on an idle machine, but on a busy one OpenMP threads wait on each other and it can be
    many times slower (benchmarks/speed.py --threads); the single envs always use one each."""
    seed: int = 0
    """Seed of PPO and of the environments (env i gets seed + i)."""
    interval: int = 10
    """K: inner optimizer steps per decision."""
    max_multiplier: float = 2.0
    """m_max: an action of +-1 multiplies or divides the LR by this."""
    lr_band: tuple[float, float] = (1e-3, 30.0)
    """The LR stays within this band times the base LR."""
    grad_norm_steps: int = 2
    """G: gradient norms are observed on the last G steps of each block (capped at K).
    Configs written before this field existed read every step (G = K)."""
    action_mode: str = "recursive"
    """"recursive" (lr <- lr * m_max ** a) or "anchored" (lr = base schedule x a bounded
    factor, re-anchored every step; `lrctl.actions`)."""
    residual: float = 1.0
    """Anchored: an action a moves the LR by exp(residual * a) around the base schedule."""
    scale_time: float = 0.0
    """Anchored: fraction of a run in which the slow scale term can cross `scale_band` (0:
    no scale term)."""
    scale_band: tuple[float, float] = (0.1, 10.0)
    """Anchored: the range of the slow scale term."""
    scale_min_decisions: int = 1
    """Anchored: the fewest decisions in which the scale term may cross `scale_band`, however
    short the run (1: a run of four decisions may cross it in one). Configs before version 6
    had no floor (1)."""
    dither: float = 0.0
    """Anchored: the alternating probe's log-factor (`ActionSpec.dither`): every other block's
    LR is multiplied by exp(+d), the others' by exp(-d), so that features v5's `lr_response`
    reads the loss's answer to a known move. 0 (configs before version 8): no probe."""
    relative_reward: bool = False
    """Reward each block's improvement minus that of a reference run (the same spec and seed
    under cosine from the same base LR, trained alongside: twice the inner steps), so that
    returns mean "better than cosine at this LR" on every task (`lrctl.episodes`)."""
    reward_norm: str = "global"
    """How PPO's rewards are scaled: "global" (SB3's `VecNormalize`: one running scale of the
    discounted return, pooled over every episode) or "family" (one per task family,
    `lrctl.family_reward_norm`, so that families whose loss moves far do not drown the others
    in PPO's advantages). Configs before version 10 were "global"."""
    lr_shock: float = 0.0
    """Probability that a training episode is shocked: from a random step on, the LRs its
    optimizer receives are multiplied by a hidden factor in [0.1, 10] (`lrctl.shocks`), so
    the best LR changes during the run. Batched populations only; 0 (the default): never.
    Configs before version 5 had no shocks."""
    feature_version: int = FEATURE_VERSION
    """The observation's feature version (`lrctl.features`): 2 (13 features, the default) or
    3 (adds the last update's size relative to the parameters and the last two gradients'
    cosine; needs grad_norm_steps >= 2). Recorded in the exported controller file. Configs
    written before this field observed version 2."""
    hidden_features: tuple[str, ...] = ()
    """Features the policy never sees: they read 0 in every observation of training and of
    the periodic evaluation, and the exported file's first layer ignores them
    (`lrctl.hidden_features`). Names from `lrctl.features.feature_names(feature_version)`,
    e.g. ["progress"]. () (configs before version 9): the policy sees every feature."""
    n_steps: int = 0
    """Rollout length per env slot between PPO updates; 0: 512 without `batched`, else
    1024 // n_envs (at least 16), so that an update sees about as many decisions as the
    SubprocVecEnv path on two cores."""
    batch_size: int = 256
    """PPO minibatch size."""
    n_epochs: int = 10
    """PPO epochs per update."""
    learning_rate: float = 3e-4
    """Adam learning rate of the PPO networks."""
    lr_schedule: str = "constant"
    """PPO's learning rate over the run: "constant" or "linear" (from `learning_rate` down to 0
    at `total_timesteps`, SB3's `LinearSchedule`; the last updates then barely move the
    policy). A run extended with `--resume --timesteps` follows the line of its new budget
    (at 200k decisions of 400k: half of `learning_rate`). Configs before version 11 were
    "constant"."""
    gamma: float = 0.99
    """Discount over decisions."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clipping."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    log_std_init: float = -1.0
    """Initial log std of the Gaussian policy (actions live in [-1, 1]). With `use_sde` it
    scales a noise matrix on the policy's last hidden activations (norm about 4 for a fresh
    [64, 64] tanh policy), so the action noise is about 4 x exp(log_std_init): -2.5 there
    gives the 0.35 that -1 gives without it."""
    use_sde: bool = False
    """Generalized state-dependent exploration (gSDE, SB3's `use_sde`): the exploration noise
    is a function of the observation under a noise matrix drawn once per `sde_sample_freq`
    decisions of an env slot, so an episode explores one consistent deviation (climbing more
    or less on this run) instead of independent noise per decision, which the slow scale term
    averages away. The exported controller is the same deterministic policy either way.
    Configs before version 7 explored with independent noise (False)."""
    sde_sample_freq: int = -1
    """With `use_sde`: draw a new noise matrix every this many decisions of an env slot; -1:
    once per rollout (SB3's default)."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the policy and value networks (tanh)."""
    clip_obs: float = 10.0
    """VecNormalize clip on normalised observations."""
    obs_noise: float = 0.0
    """Std of Gaussian noise added to each normalised observation of the training rollouts,
    in units of the feature's running std, before the clip (`lrctl.obs_noise`): a regulariser
    for tasks the train suite does not hold. The periodic evaluation and the exported
    controller see clean observations. 0 (configs before version 12): no noise."""
    checkpoint_every: int = 20_000
    """Save a checkpoint every this many timesteps."""
    eval_every: int = 20_000
    """Evaluate on the eval suite every this many timesteps (0 disables)."""
    eval_episodes: int = 8
    """Episodes per evaluation (fixed seeds, deterministic policy)."""
    version: int = CONFIG_VERSION
    """Config format version: 0 (a file without the field) to 12 (see `MIGRATIONS`)."""

    @property
    def action_spec(self) -> ActionSpec:
        return ActionSpec(
            self.interval,
            self.max_multiplier,
            tuple(self.lr_band),
            self.grad_norm_steps,
            self.action_mode,
            self.residual,
            self.scale_time,
            tuple(self.scale_band),
            self.scale_min_decisions,
            self.dither,
        )

    def resolved_n_envs(self) -> int:
        if self.n_envs:
            return self.n_envs
        return 2 * self.population if self.batched else max(1, os.cpu_count() or 1)

    def resolved_n_steps(self) -> int:
        if self.n_steps:
            return self.n_steps
        return max(16, 1024 // self.resolved_n_envs()) if self.batched else 512

    def validate(self) -> None:
        """Raise ConfigError naming the field and what is allowed."""
        for name in (
            "total_timesteps",
            "batch_size",
            "n_epochs",
            "interval",
            "grad_norm_steps",
            "checkpoint_every",
            "population",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"config field {name} must be positive, got {getattr(self, name)}"
                )
        for name in ("n_envs", "n_steps", "eval_every", "eval_episodes", "redraw_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config field {name} must be >= 0, got {getattr(self, name)}")
        if self.sde_sample_freq == 0 or self.sde_sample_freq < -1:
            raise ConfigError(
                "config field sde_sample_freq must be -1 (a new noise matrix once per rollout) "
                f"or a positive number of decisions, got {self.sde_sample_freq}"
            )
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("config fields gamma and gae_lambda must lie in (0, 1] and [0, 1]")
        try:
            spec = self.action_spec  # validates the action fields
            check_probability(self.lr_shock)
        except UsageError as exc:
            raise ConfigError(f"config field {exc}") from None
        if self.scale_time and not spec.anchored:
            raise ConfigError(
                "config field scale_time: the slow scale term is part of the anchored action; "
                'set action_mode "anchored" (--action-mode anchored) or scale_time 0'
            )
        if self.scale_min_decisions != 1 and not self.scale_time:
            raise ConfigError(
                "config field scale_min_decisions: it slows the slow scale term, which is off "
                "(scale_time 0); set scale_time > 0 (--scale-time F) or scale_min_decisions 1"
            )
        if self.lr_shock and not self.batched:
            raise ConfigError(
                "config field lr_shock: shocks are drawn by the batched populations only; set "
                "batched true (drop --no-batched) or lr_shock 0"
            )
        try:
            resolve_feature_version(self.feature_version, spec)
        except UsageError as exc:
            raise ConfigError(f"config field feature_version: {exc}") from None
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"config field lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                f"got {self.lr_schedule!r}"
            )
        if not 0 <= self.obs_noise < math.inf:
            raise ConfigError(
                f"config field obs_noise must be a finite number >= 0 (0: no noise), "
                f"got {self.obs_noise}"
            )
        if self.reward_norm not in REWARD_NORMS:
            raise ConfigError(
                f"config field reward_norm must be one of {', '.join(REWARD_NORMS)}, "
                f"got {self.reward_norm!r}"
            )
        try:
            feature_indices(self.hidden_features, self.feature_version)
        except UsageError as exc:
            raise ConfigError(f"config field {exc}") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(
        cls, data: dict, source: str = "config", default_version: int = CONFIG_VERSION
    ) -> TrainConfig:
        """A validated config from its fields, migrated to `CONFIG_VERSION` from the version
        `data["version"]` names. Without that key the fields are read as `default_version`:
        this code's own format for a dict built in code (missing fields take today's
        defaults, as with `TrainConfig(...)`), 0 for a file (`load`)."""
        data = dict(data)
        version = data.pop("version", default_version)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigError(
                f"{source}: config version must be a whole number >= 0, got {version!r}"
            )
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"{source}: config version {version} is newer than this lrctl ({__version__}) "
                f"reads (versions 0 to {CONFIG_VERSION}); upgrade lrctl to use it"
            )
        for migrate in MIGRATIONS[version:]:
            data = migrate(data)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown config field {unknown[0]!r}; allowed fields: {', '.join(sorted(known))}"
            )
        for name, value in data.items():
            _check_type(source, name, value, known[name].default)
        for key in ("lr_band", "net_arch", "scale_band", "hidden_features"):
            if key in data:
                data[key] = tuple(data[key])
        cfg = cls(**data)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config file; one without a `version` field is version 0, the oldest format."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of config fields")
        return cls.from_dict(data, str(path), default_version=0)


_NAME_TUPLES = ("hidden_features",)
"""Tuple fields whose entries are names, not numbers."""


def _check_type(source: str, name: str, value: object, default: object) -> None:
    """A field's value has its default's type (an int passes for a float, a list for a tuple)."""
    if default is None:  # an optional field: the dataclass and validate() say more
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif name in _NAME_TUPLES:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"{source}: config field {name} must be {type(default).__name__}-valued like its "
            f"default {default!r}, got {value!r}"
        )


def _v0_to_v1(data: dict) -> dict:
    """Version 0 (a file without a `version` field) has the fields of version 1: lrctl has
    written the field since its first config, so such a file is hand-written."""
    return data


def _v1_to_v2(data: dict) -> dict:
    """Version 1 gained `grad_norm_steps` (features v2) and `batched` (populations) without a
    version bump; a version-1 config without them is from before they existed and ran with
    every step's gradient norms (G = K) and every env in its own process."""
    data.setdefault("grad_norm_steps", data.get("interval", TrainConfig.interval))
    data.setdefault("batched", False)
    return data


def _v2_to_v3(data: dict) -> dict:
    """Version 3 added anchored actions (`action_mode` and its fields) and made the validation
    suite the default `eval_suite`; a version-2 config used recursive actions and, unless it
    said otherwise, evaluated on the eval suite."""
    data.setdefault("action_mode", "recursive")
    data.setdefault("relative_reward", False)
    data.setdefault("eval_suite", "eval")
    return data


def _v3_to_v4(data: dict) -> dict:
    """Version 4 added `feature_version`; a version-3 config observed features v2."""
    data.setdefault("feature_version", 2)
    return data


def _v4_to_v5(data: dict) -> dict:
    """Version 5 added `lr_shock`; a version-4 config trained without shocks."""
    data.setdefault("lr_shock", 0.0)
    return data


def _v5_to_v6(data: dict) -> dict:
    """Version 6 added `scale_min_decisions`; a version-5 config had no floor (1)."""
    data.setdefault("scale_min_decisions", 1)
    return data


def _v6_to_v7(data: dict) -> dict:
    """Version 7 added `use_sde` and `sde_sample_freq`; a version-6 config explored with
    independent Gaussian noise."""
    data.setdefault("use_sde", False)
    data.setdefault("sde_sample_freq", -1)
    return data


def _v7_to_v8(data: dict) -> dict:
    """Version 8 added `dither`; a version-7 config probed nothing (0)."""
    data.setdefault("dither", 0.0)
    return data


def _v8_to_v9(data: dict) -> dict:
    """Version 9 added `hidden_features`; a version-8 policy saw every feature."""
    data.setdefault("hidden_features", [])
    return data


def _v9_to_v10(data: dict) -> dict:
    """Version 10 added `reward_norm`; a version-9 run scaled rewards globally."""
    data.setdefault("reward_norm", "global")
    return data


def _v10_to_v11(data: dict) -> dict:
    """Version 11 added `lr_schedule`; a version-10 run kept PPO's learning rate constant."""
    data.setdefault("lr_schedule", "constant")
    return data


def _v11_to_v12(data: dict) -> dict:
    """Version 12 added `obs_noise`; a version-11 run trained on clean observations."""
    data.setdefault("obs_noise", 0.0)
    return data


MIGRATIONS: tuple[Callable[[dict], dict], ...] = (
    _v0_to_v1,
    _v1_to_v2,
    _v2_to_v3,
    _v3_to_v4,
    _v4_to_v5,
    _v5_to_v6,
    _v6_to_v7,
    _v7_to_v8,
    _v8_to_v9,
    _v9_to_v10,
    _v10_to_v11,
    _v11_to_v12,
)
"""`MIGRATIONS[n]` turns the fields of a version-n config into those of version n + 1; a config
is migrated by each from its own version on. A format change bumps `CONFIG_VERSION` and adds
one function here."""


def ppo_learning_rate(cfg: TrainConfig) -> float | LinearSchedule:
    """What PPO gets as its learning rate: the number, or SB3's linear schedule to 0."""
    if cfg.lr_schedule == "linear":
        return LinearSchedule(cfg.learning_rate, 0.0, 1.0)
    return cfg.learning_rate


def _env_factory(
    suite: str | Suite,
    spec: ActionSpec,
    seed: int,
    relative: bool = False,
    feature_version: int = FEATURE_VERSION,
):
    def make():
        torch.set_num_threads(1)  # one core per env process; PPO's update runs in the parent
        import lrctl.env

        env = lrctl.env.LRControlEnv(
            suite=suite, action_spec=spec, relative=relative, feature_version=feature_version
        )
        env.reset(seed=seed)
        return env

    return make


def _single_envs(
    suite: str | Suite, cfg: TrainConfig, n: int, first_seed: int, subprocess: bool
) -> VecEnv:
    """n single envs drawing from `suite`, in separate processes when subprocess and n > 1."""
    factories = [
        _env_factory(
            suite, cfg.action_spec, first_seed + i, cfg.relative_reward, cfg.feature_version
        )
        for i in range(n)
    ]
    if subprocess and n > 1:
        return SubprocVecEnv(factories, start_method="spawn")
    return DummyVecEnv(factories)


def _slot_split(cfg: TrainConfig) -> tuple[list[int], Suite | None, int, Suite | None]:
    """(population sizes, the suite part they draw, number of single envs, theirs).

    Slots go to the batched and the single part in proportion to their families' suite
    weights; populations hold at most `population` members, sizes as equal as possible.
    Without `batched`, or when the slots are too few to give each part one, all are single."""
    n = cfg.resolved_n_envs()
    suite = load_suite(cfg.suite)
    batched, single = split_suite(suite)
    if not cfg.batched or batched is None:
        return [], None, n, suite
    weight = lambda part: sum(f.config.weight for f in part.families)  # noqa: E731
    n_single = 0 if single is None else max(1, round(n * weight(single) / weight(suite)))
    n_batched = n - n_single
    if n_batched < 1:
        return [], None, n, suite
    count = -(-n_batched // cfg.population)
    sizes = [n_batched // count + (i < n_batched % count) for i in range(count)]
    return sizes, batched, n_single, single


def _check_shocks(cfg: TrainConfig, single: Suite | None) -> None:
    """LR shocks need every slot batched: `single` is the part of the suite that is not."""
    if cfg.lr_shock and single is not None:
        raise ConfigError(
            f"config field lr_shock: suite {cfg.suite!r} has families that do not batch "
            f"({', '.join(single.family_names)}), and only batched populations draw shocks; "
            "train on a suite whose families all batch (e.g. train_v1) or set lr_shock 0"
        )


def check_suites(cfg: TrainConfig) -> None:
    """Load the config's suites and check they suit it, before a run folder is written: a
    missing or malformed suite raises `SuiteError`, shocks on families that do not batch
    `ConfigError`."""
    load_suite(cfg.eval_suite)
    _check_shocks(cfg, split_suite(load_suite(cfg.suite))[1])


def make_training_env(cfg: TrainConfig, subprocess: bool = True) -> VecEnv:
    """The env slots (batched populations first, then single envs, in separate processes by
    default), monitored and normalised (`normaliser(venv)` is the `VecNormalize`), with
    `cfg.obs_noise` on top."""
    sizes, batched, n_single, single = _slot_split(cfg)
    _check_shocks(cfg, single if n_single else None)
    parts: list[VecEnv] = [
        BatchedLRControlEnv(
            size,
            batched,
            cfg.action_spec,
            redraw_after=cfg.redraw_after,
            relative=cfg.relative_reward,
            feature_version=cfg.feature_version,
            lr_shock=cfg.lr_shock,
        )
        for size in sizes
    ]
    if n_single:
        parts.append(_single_envs(single, cfg, n_single, cfg.seed + sum(sizes), subprocess))
    venv = parts[0] if len(parts) == 1 else ConcatVecEnv(parts)
    venv.seed(cfg.seed)
    if cfg.hidden_features:
        venv = HideFeatures(venv, feature_indices(cfg.hidden_features, cfg.feature_version))
    normalised = reward_normaliser(
        VecMonitor(venv),
        cfg.reward_norm,
        norm_obs=True,
        norm_reward=True,
        clip_obs=cfg.clip_obs,
        gamma=cfg.gamma,
    )
    return with_obs_noise(normalised, cfg.obs_noise, cfg.clip_obs, cfg.seed)


def _atomic_dir_save(model: PPO, venv: VecNormalize, target: Path) -> None:
    """Write model.zip + vecnormalize.pkl into a temp folder, then rename it into place."""
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.zip")
    venv.save(str(tmp / "vecnormalize.pkl"))
    (tmp / "state.json").write_text(json.dumps({"num_timesteps": int(model.num_timesteps)}))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


MILESTONE_EVERY = 100_000
"""Checkpoints at multiples of this many timesteps are never pruned: they are the candidates
of checkpoint selection on the val suite (`lrctl export RUN/checkpoints/step-N`)."""


class AtomicCheckpoint(BaseCallback):
    """Every `every` timesteps: policy + normalisation statistics saved together, atomically.
    The last `keep` checkpoints stay (resume reads the latest), plus every milestone."""

    def __init__(self, run_dir: Path, every: int, keep: int = 2) -> None:
        super().__init__()
        self.dir = run_dir / "checkpoints"
        self.every, self.keep = every, keep
        self._next = every

    def _on_training_start(self) -> None:
        self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self.save()
            self._next += self.every
        return True

    def save(self) -> Path:
        step = int(self.model.num_timesteps)
        target = self.dir / f"step-{step:09d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_dir_save(self.model, normaliser(self.model.get_env()), target)
        atomic_write_json(self.dir / "latest.json", {"step": step, "path": target.name})
        for old in sorted(self.dir.glob("step-*"))[: -self.keep]:
            if int(old.name.removeprefix("step-")) % MILESTONE_EVERY:
                shutil.rmtree(old, ignore_errors=True)
        return target


@dataclass
class EvalResult:
    step: int
    mean_return: float
    std_return: float
    diverge_rate: float
    mean_final_lr_ratio: float
    returns: list[float] = field(default_factory=list)


def evaluate_on_suite(
    model: PPO, obs_rms, cfg: TrainConfig, episodes: int, seed: int = 10_000
) -> EvalResult:
    """Deterministic episodes on `cfg.eval_suite` with fixed seeds, observations normalised
    with the training statistics (frozen). Returns raw (unnormalised) returns, with the reward
    the run trains on (relative to cosine at the same LR, with `relative_reward`)."""
    import lrctl.env

    env = lrctl.env.LRControlEnv(
        suite=cfg.eval_suite,
        action_spec=cfg.action_spec,
        relative=cfg.relative_reward,
        feature_version=cfg.feature_version,
    )
    hidden = feature_indices(cfg.hidden_features, cfg.feature_version)
    returns, diverged, ratios = [], [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            obs = hide(obs, hidden) if hidden else obs
            norm = np.clip(
                (obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -cfg.clip_obs, cfg.clip_obs
            )
            action, _ = model.predict(norm.astype(np.float32), deterministic=True)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        diverged.append(bool(info.get("diverged", False)))
        ratios.append(float(info["lr"]) / float(info["base_lr"]))
    env.close()
    return EvalResult(
        step=int(model.num_timesteps),
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        diverge_rate=float(np.mean(diverged)),
        mean_final_lr_ratio=float(np.exp(np.mean(np.log(ratios)))),
        returns=returns,
    )


class SuiteEvaluation(BaseCallback):
    """Every `every` timesteps: mean return and divergence rate on the held-out suite."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.cfg, self.path = cfg, run_dir / "eval.csv"
        self._next = cfg.eval_every
        self.results: list[EvalResult] = []

    def _on_training_start(self) -> None:
        self._next = (self.model.num_timesteps // self.cfg.eval_every + 1) * self.cfg.eval_every

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self.run()
            self._next += self.cfg.eval_every
        return True

    def run(self) -> EvalResult:
        res = evaluate_on_suite(
            self.model, normaliser(self.model.get_env()).obs_rms, self.cfg, self.cfg.eval_episodes
        )
        self.results.append(res)
        self.logger.record("eval/mean_return", res.mean_return)
        self.logger.record("eval/diverge_rate", res.diverge_rate)
        self.logger.record("eval/final_lr_ratio", res.mean_final_lr_ratio)
        new = not self.path.exists()
        with self.path.open("a") as f:
            if new:
                f.write("step,mean_return,std_return,diverge_rate,final_lr_ratio\n")
            f.write(
                f"{res.step},{res.mean_return:.5f},{res.std_return:.5f},{res.diverge_rate:.4f},{res.mean_final_lr_ratio:.4f}\n"
            )
        return res


class ControlMetrics(BaseCallback):
    """Logs ctrl/* from the env infos: LR relative to base, and the divergence rate of episodes."""

    def __init__(self) -> None:
        super().__init__()
        self._ratios: list[float] = []
        self._ends: list[bool] = []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=False):
            if "lr" in info and info.get("base_lr"):
                self._ratios.append(float(info["lr"]) / float(info["base_lr"]))
            if done:
                self._ends.append(bool(info.get("diverged", False)))
        return True

    def _on_rollout_end(self) -> None:
        if self._ratios:
            self.logger.record(
                "ctrl/lr_ratio_geomean", float(np.exp(np.mean(np.log(self._ratios))))
            )
        if self._ends:
            self.logger.record("ctrl/diverge_rate", float(np.mean(self._ends)))
        self._ratios, self._ends = [], []


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    return run_dir / "checkpoints" / json.loads(pointer.read_text())["path"]


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress_bar: bool = True,
    extend_to: int | None = None,
) -> Path:
    """Train (or resume) a PPO controller in `run_dir`; returns the folder of the final model.

    `extend_to` (with `resume`) raises the run's total_timesteps, so a finished run trains on
    from its last checkpoint toward a larger budget; every other setting stays the run's own.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if extend_to is not None and not resume:
        raise UsageError("extend_to needs resume=True (it continues an existing run)")
    if resume:
        if not config_path.is_file():
            raise UsageError(
                f"{run_dir}: nothing to resume (no config.json); start it without --resume"
            )
        cfg = TrainConfig.load(config_path)
        if extend_to is not None and extend_to != cfg.total_timesteps:
            cfg = _extended(cfg, run_dir, extend_to)
            atomic_write_json(config_path, json.loads(cfg.to_json()))
    elif config_path.exists():
        raise UsageError(
            f"{run_dir}: a run already exists here; pass --resume to continue it or choose another --run-dir"
        )
    check_suites(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        atomic_write_json(config_path, json.loads(cfg.to_json()))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    venv = make_training_env(cfg)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        stats = VecNormalize.load(str(checkpoint / "vecnormalize.pkl"), normaliser(venv).venv)
        venv = with_obs_noise(stats, cfg.obs_noise, cfg.clip_obs, cfg.seed + _timesteps(checkpoint))
        model = PPO.load(checkpoint / "model.zip", env=venv, device="cpu")
    else:
        model = PPO(
            "MlpPolicy",
            venv,
            n_steps=cfg.resolved_n_steps(),
            batch_size=cfg.batch_size,
            n_epochs=cfg.n_epochs,
            learning_rate=ppo_learning_rate(cfg),
            gamma=cfg.gamma,
            gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range,
            ent_coef=cfg.ent_coef,
            use_sde=cfg.use_sde,
            sde_sample_freq=cfg.sde_sample_freq,
            policy_kwargs={
                "net_arch": {"pi": list(cfg.net_arch), "vf": list(cfg.net_arch)},
                "activation_fn": torch.nn.Tanh,
                "log_std_init": cfg.log_std_init,
            },
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
    if checkpoint is not None:
        # SB3's CSV logger truncates progress.csv; keep the log of the run before the resume.
        log = run_dir / "logs" / "progress.csv"
        if log.is_file():
            log.rename(log.with_name(f"progress-before-step-{model.num_timesteps:09d}.csv"))
        for stale in (run_dir / "checkpoints").glob(".tmp-*"):  # a save the kill interrupted
            shutil.rmtree(stale, ignore_errors=True)
    model.set_logger(configure(str(run_dir / "logs"), ["csv", "tensorboard"]))
    checkpointer = AtomicCheckpoint(run_dir, cfg.checkpoint_every)
    callbacks: list[BaseCallback] = [checkpointer, ControlMetrics()]
    if cfg.eval_every:
        callbacks.append(SuiteEvaluation(cfg, run_dir))
    remaining = cfg.total_timesteps - model.num_timesteps
    start = time.perf_counter()
    try:
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=checkpoint is None,
                progress_bar=progress_bar,
            )
        final = run_dir / "final"
        _atomic_dir_save(model, normaliser(venv), final)
        state = json.loads((final / "state.json").read_text())
        state["wall_time_s"] = time.perf_counter() - start + _previous_wall_time(run_dir)
        atomic_write_json(final / "state.json", state)
        atomic_write_json(run_dir / "wall_time.json", {"wall_time_s": state["wall_time_s"]})
    finally:
        venv.close()
        torch.set_num_threads(threads_before)
    return final


def _timesteps(checkpoint: Path) -> int:
    """The timesteps a checkpoint (or the final model) was saved at."""
    return int(json.loads((checkpoint / "state.json").read_text())["num_timesteps"])


def _extended(cfg: TrainConfig, run_dir: Path, total: int) -> TrainConfig:
    """`cfg` with total_timesteps raised to `total`, refused below what the run has done."""
    checkpoint = latest_checkpoint(run_dir)
    done = _timesteps(checkpoint) if checkpoint else 0
    if total < max(done, cfg.total_timesteps):
        raise UsageError(
            f"{run_dir}: --timesteps {total} is below the run's budget of "
            f"{cfg.total_timesteps} ({done} done); resume extends a run, it cannot shorten it"
        )
    extended = TrainConfig.from_dict({**vars(cfg), "total_timesteps": total}, "--timesteps")
    extended.validate()
    return extended


def _previous_wall_time(run_dir: Path) -> float:
    path = run_dir / "wall_time.json"
    return float(json.loads(path.read_text())["wall_time_s"]) if path.is_file() else 0.0
