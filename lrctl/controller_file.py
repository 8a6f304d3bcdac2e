"""The controller file: a deterministic policy as plain tensors plus versioned metadata.

Format `lrctl-controller` v1, stored with safetensors (tensors + a string-to-string header, no
pickle: loading never runs code):

| tensor              | shape          | meaning                                             |
| ------------------- | -------------- | --------------------------------------------------- |
| obs_mean, obs_var   | [D]            | observation normalisation (VecNormalize statistics) |
| layers.{i}.weight   | [out, in]      | actor MLP, tanh between layers, identity at the end |
| layers.{i}.bias     | [out]          |                                                     |

| metadata key    | value                                                        |
| --------------- | ------------------------------------------------------------ |
| format          | "lrctl-controller"                                           |
| format_version  | "1"                                                          |
| feature_version | the lrctl.features version the policy was trained with       |
| feature_names   | JSON list, checked against lrctl.features.feature_names(v)   |
| obs_clip        | normalised observations are clipped to [-obs_clip, obs_clip] |
| obs_epsilon     | added to obs_var before the square root                      |
| n_layers        | number of linear layers                                      |
| activation      | "tanh"                                                       |
| action_spec     | JSON of lrctl.actions.ActionSpec (interval, m_max, LR band)  |
| provenance      | JSON: training config, timesteps, date, lrctl version        |

D = `lrctl.features.obs_dim(feature_version)`: 13 for versions 1 and 2, 15 for version 3 (which
needs `grad_norm_steps` >= 2: its gradient cosine reads the block's last two gradient norms).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lrctl.actions import ActionSpec
from lrctl.atomic import atomic_path
from lrctl.errors import LrctlError
from lrctl.features import (
    FEATURE_VERSION,
    SUPPORTED_FEATURE_VERSIONS,
    feature_names,
    min_grad_norm_steps,
    obs_dim,
)
from lrctl.resources import DEFAULT_CONTROLLER, data_path

FORMAT = "lrctl-controller"
FORMAT_VERSION = 1
_REQUIRED_META = (
    "format", "format_version", "feature_version", "feature_names", "obs_clip",
    "obs_epsilon", "n_layers", "activation", "action_spec",
)  # fmt: skip


class ControllerFileError(LrctlError, ValueError):
    """A controller file cannot be used; the message names the file and the problem."""


@dataclass
class ControllerWeights:
    """The contents of a controller file, validated."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    obs_mean: torch.Tensor
    obs_var: torch.Tensor
    obs_clip: float
    obs_epsilon: float
    action_spec: ActionSpec
    provenance: dict = field(default_factory=dict)
    feature_version: int = FEATURE_VERSION
    _np: list | None = field(default=None, init=False, repr=False, compare=False)
    _norm: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def act(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Deterministic actions in [-1, 1], shape [..., 1], for raw observations
        [..., obs_dim(feature_version)]. Computed in numpy float32: for a 13-64-64-1 network,
        numpy's per-call cost is a fraction of torch's dispatch, and the controller calls this
        every K steps."""
        if self._np is None:
            self._np = [(w.numpy().T.copy(), b.numpy().copy()) for w, b in self.layers]
            self._norm = (
                self.obs_mean.numpy().copy(),
                np.sqrt(self.obs_var.numpy() + np.float32(self.obs_epsilon)).astype(np.float32),
            )
        x = np.asarray(
            obs.detach().cpu() if isinstance(obs, torch.Tensor) else obs, dtype=np.float32
        )
        mean, std = self._norm
        x = (x - mean) / std
        # np.minimum/np.maximum rather than np.clip: same result, a fraction of np.clip's
        # per-call cost on arrays this small.
        x = np.minimum(np.maximum(x, -self.obs_clip, out=x), self.obs_clip, out=x)
        last = len(self._np) - 1
        for i, (w_t, b) in enumerate(self._np):
            x = x @ w_t + b
            if i < last:
                x = np.tanh(x, out=x)
        return np.minimum(np.maximum(x, -1.0, out=x), 1.0, out=x)


def save_controller(weights: ControllerWeights, path: str | Path) -> Path:
    """Write a controller file atomically (lrctl.atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"obs_mean": weights.obs_mean, "obs_var": weights.obs_var}
    for i, (w, b) in enumerate(weights.layers):
        tensors[f"layers.{i}.weight"] = w
        tensors[f"layers.{i}.bias"] = b
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "feature_version": str(weights.feature_version),
        "feature_names": json.dumps(list(feature_names(weights.feature_version))),
        "obs_clip": repr(float(weights.obs_clip)),
        "obs_epsilon": repr(float(weights.obs_epsilon)),
        "n_layers": str(len(weights.layers)),
        "activation": "tanh",
        "action_spec": json.dumps(weights.action_spec.to_dict()),
        "provenance": json.dumps(weights.provenance, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _fail(path: Path, problem: str) -> ControllerFileError:
    return ControllerFileError(f"{path}: {problem}")


def controller_weights(source: str | Path | ControllerWeights | None) -> ControllerWeights:
    """The weights `source` names: loaded weights as they are, a controller file read with
    `load_controller`, or None for the shipped default controller."""
    if isinstance(source, ControllerWeights):
        return source
    return load_controller(source if source is not None else data_path(DEFAULT_CONTROLLER))


def load_controller(path: str | Path) -> ControllerWeights:
    """Read and validate a controller file. Never unpickles: safetensors only parses a JSON
    header and raw tensor bytes."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise _fail(path, "controller file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise _fail(
            path,
            f"not a readable lrctl controller file (expected safetensors, {exc.__class__.__name__}: "
            f"{exc}); export one with `lrctl export RUN -o FILE`",
        ) from None
    missing = [k for k in _REQUIRED_META if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise _fail(
            path,
            f"not an lrctl controller file (format={meta.get('format')!r}, missing metadata "
            f"{missing}); export one with `lrctl export RUN -o FILE`",
        )
    if meta["format_version"] != str(FORMAT_VERSION):
        raise _fail(
            path,
            f"controller format version {meta['format_version']} is not supported by this lrctl "
            f"(it reads version {FORMAT_VERSION}); re-export it with this version of lrctl",
        )
    supported = [str(v) for v in SUPPORTED_FEATURE_VERSIONS]
    if meta["feature_version"] not in supported or json.loads(meta["feature_names"]) != list(
        feature_names(int(meta["feature_version"]))
    ):
        raise _fail(
            path,
            f"controller was trained on feature version {meta['feature_version']} but this lrctl "
            f"reads feature versions {', '.join(supported)}; retrain or use a matching lrctl",
        )
    try:
        n_layers = int(meta["n_layers"])
        layers = [
            (tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]) for i in range(n_layers)
        ]
        weights = ControllerWeights(
            layers=[(w.float(), b.float()) for w, b in layers],
            obs_mean=tensors["obs_mean"].float(),
            obs_var=tensors["obs_var"].float(),
            obs_clip=float(meta["obs_clip"]),
            obs_epsilon=float(meta["obs_epsilon"]),
            action_spec=ActionSpec.from_dict(json.loads(meta["action_spec"])),
            provenance=json.loads(meta.get("provenance", "{}")),
            feature_version=int(meta["feature_version"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise _fail(path, f"controller file is incomplete or inconsistent: {exc}") from None
    _check_shapes(path, weights)
    return weights


def _check_shapes(path: Path, w: ControllerWeights) -> None:
    dim = obs_dim(w.feature_version)
    if w.obs_mean.shape != (dim,) or w.obs_var.shape != (dim,):
        raise _fail(
            path,
            f"observation size {tuple(w.obs_mean.shape)} does not match the {dim} features of "
            f"feature version {w.feature_version}",
        )
    least = min_grad_norm_steps(w.feature_version)
    if w.action_spec.grad_norm_steps < least:
        raise _fail(
            path,
            f"feature version {w.feature_version} needs grad_norm_steps >= {least} (its "
            f"gradient cosine reads a block's last two gradient norms), the file has "
            f"{w.action_spec.grad_norm_steps}",
        )
    n_in = dim
    for i, (weight, bias) in enumerate(w.layers):
        if weight.ndim != 2 or weight.shape[1] != n_in or bias.shape != (weight.shape[0],):
            raise _fail(path, f"layer {i} has shape {tuple(weight.shape)}, expected [*, {n_in}]")
        n_in = weight.shape[0]
    if n_in != 1:
        raise _fail(path, f"the last layer outputs {n_in} values, expected 1 action")
    finite = all(torch.isfinite(t).all() for pair in w.layers for t in pair)
    if not finite or not torch.isfinite(w.obs_mean).all() or not (w.obs_var >= 0).all():
        raise _fail(path, "controller file holds non-finite weights or negative variances")
    if not (math.isfinite(w.obs_clip) and w.obs_clip > 0 and w.obs_epsilon >= 0):
        raise _fail(path, "controller file holds an invalid observation clip or epsilon")
