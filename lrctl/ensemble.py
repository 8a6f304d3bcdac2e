"""A seed ensemble of controllers, written as one controller file.

PPO's seed moves the val figures more than most levers did (agents/default/iterations.md), so
one lever is to average the policies of several seeds of one configuration instead of picking
the best seed on val. The members' deterministic actions (before the final clip to [-1, 1])
are averaged, and the average is clipped: a member that pushes hard outside [-1, 1] counts
for more than one at the edge, as averaging logits would.

The average is one tanh MLP of M times the width, so it is an ordinary controller file
(`lrctl.controller_file`, format v1) that every runtime reads unchanged:

- each member's observation normalisation is folded into its block of the first layer,
  W (x - m) / s = (W / s) x - W m / s, and the file's own normalisation is the identity
  (mean 0, variance 1 - epsilon, clip `CLIP`: the features' own range, so a no-op);
- hidden layers are block-diagonal (member j's block reads only member j's units);
- the last layer concatenates the members' heads, each weight and bias divided by M.

One difference from running the members one by one: a member's normalised observation is no
longer clipped at its own `obs_clip` (the features are still bounded by `CLIP`). A feature
more than `obs_clip` standard deviations from its training mean is rare and already
saturates the first tanh layer; `ensemble_act_reference` computes the average with the
members' clips, for the tests to compare. No library merges MLPs this way, so it is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lrctl.controller_file import ControllerWeights
from lrctl.errors import UsageError
from lrctl.features import CLIP


def _check_compatible(members: Sequence[ControllerWeights]) -> None:
    if len(members) < 2:
        raise UsageError(f"an ensemble needs at least 2 controllers, got {len(members)}")
    first = members[0]
    for i, w in enumerate(members[1:], start=1):
        if w.feature_version != first.feature_version:
            raise UsageError(
                f"controller {i} observes feature version {w.feature_version}, controller 0 "
                f"version {first.feature_version}; ensemble controllers of one configuration"
            )
        if w.action_spec != first.action_spec:
            raise UsageError(
                f"controller {i}'s action spec ({w.action_spec.to_dict()}) differs from "
                f"controller 0's ({first.action_spec.to_dict()}); ensemble controllers of one "
                "configuration"
            )
        if len(w.layers) != len(first.layers):
            raise UsageError(
                f"controller {i} has {len(w.layers)} layers, controller 0 {len(first.layers)}; "
                "ensemble controllers of one configuration"
            )


def ensemble_weights(members: Sequence[ControllerWeights]) -> ControllerWeights:
    """One controller whose action is the clipped average of the members' unclipped actions
    (module docstring). Members must share feature version, action spec and depth."""
    _check_compatible(members)
    m = len(members)
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    n_layers = len(members[0].layers)
    last = n_layers - 1
    for i in range(n_layers):
        ws = [w.layers[i][0].double() for w in members]
        bs = [w.layers[i][1].double() for w in members]
        if i == 0:  # fold each member's normalisation into its rows
            std = [(w.obs_var.double() + w.obs_epsilon).sqrt() for w in members]
            pairs = zip(ws, bs, members, std, strict=True)
            bs = [b - wt @ (w.obs_mean.double() / s) for wt, b, w, s in pairs]
            ws = [wt / s for wt, s in zip(ws, std, strict=True)]
        if i == last:  # the heads, averaged (over the shared input of a linear policy)
            weight = (torch.stack(ws).sum(0) if i == 0 else torch.cat(ws, dim=1)) / m
            bias = torch.stack(bs).mean(0)
        elif i == 0:  # the members' first layers side by side, all reading the input
            weight, bias = torch.cat(ws), torch.cat(bs)
        else:  # member j's block reads only member j's units
            weight, bias = torch.block_diag(*ws), torch.cat(bs)
        layers.append((weight.float(), bias.float()))
    first = members[0]
    dim = first.obs_mean.shape[0]
    eps = 1e-8
    return ControllerWeights(
        layers=layers,
        obs_mean=torch.zeros(dim),
        obs_var=torch.full((dim,), 1.0 - eps),
        obs_clip=float(CLIP),
        obs_epsilon=eps,
        action_spec=first.action_spec,
        provenance={"ensemble_of": [w.provenance for w in members]},
        feature_version=first.feature_version,
    )


def ensemble_act_reference(members: Sequence[ControllerWeights], obs: np.ndarray) -> np.ndarray:
    """The average the ensemble approximates, member by member with each member's own
    normalisation clip (slow; for tests and checks)."""
    outs = []
    for w in members:
        std = np.sqrt(w.obs_var.numpy().astype(np.float64) + w.obs_epsilon)
        x = np.clip(
            (np.asarray(obs, np.float64) - w.obs_mean.numpy()) / std, -w.obs_clip, w.obs_clip
        )
        for i, (weight, bias) in enumerate(w.layers):
            x = x @ weight.double().numpy().T + bias.double().numpy()
            if i < len(w.layers) - 1:
                x = np.tanh(x)
        outs.append(x)
    return np.clip(np.mean(outs, axis=0), -1.0, 1.0)
