"""Seed ensembles (lrctl/ensemble.py): one controller file whose action is the members' average."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lrctl.actions import ActionSpec
from lrctl.controller import LRController
from lrctl.controller_file import load_controller, save_controller
from lrctl.ensemble import ensemble_act_reference, ensemble_weights
from lrctl.errors import UsageError
from tests.helpers import random_policy

SPEC = ActionSpec(interval=5, max_multiplier=1.5, lr_band=(0.01, 10.0))


def _seeds(*seeds: int) -> list:
    """Random members with their own weights and nearby, not equal, normalisations."""
    first = random_policy(seeds[0], SPEC)
    return [
        replace(
            random_policy(s, SPEC),
            obs_mean=first.obs_mean + 0.05 * i,
            obs_var=first.obs_var * (1 + 0.1 * i),
        )
        for i, s in enumerate(seeds)
    ]


def _inside_every_clip(members, n: int = 500) -> np.ndarray:
    """Observations no member's normalisation clips (where the fold is exact)."""
    rng = np.random.default_rng(0)
    mean, std = members[0].obs_mean.numpy(), members[0].obs_var.sqrt().numpy()
    obs = mean + std * rng.uniform(-2, 2, (n, len(mean)))
    for w in members:
        z = (obs - w.obs_mean.numpy()) / np.sqrt(w.obs_var.numpy() + w.obs_epsilon)
        assert np.abs(z).max() < w.obs_clip
    return obs.astype(np.float32)


def test_the_ensemble_acts_as_the_members_average() -> None:
    members = _seeds(1, 2, 3)
    obs = _inside_every_clip(members)
    got = ensemble_weights(members).act(obs)
    np.testing.assert_allclose(got, ensemble_act_reference(members, obs), atol=1e-5)
    # the average of unclipped actions differs from every member's own action
    assert all(np.abs(got - w.act(obs)).max() > 0.05 for w in members)


def test_an_ensemble_of_copies_is_the_member() -> None:
    member = random_policy(4, SPEC)
    obs = _inside_every_clip([member])
    np.testing.assert_allclose(
        ensemble_weights([member, member]).act(obs), member.act(obs), atol=1e-5
    )


def test_the_ensemble_is_an_ordinary_controller_file(tmp_path) -> None:
    """Saved, loaded and driving an optimizer like any controller: block-diagonal hidden
    layers, identity normalisation, the members' action spec and provenance."""
    members = _seeds(5, 6)
    path = save_controller(ensemble_weights(members), tmp_path / "e.safetensors")
    loaded = load_controller(path)
    shapes = [tuple(w.shape) for w, _ in loaded.layers]
    assert shapes == [(16, obs_len := members[0].obs_mean.shape[0]), (1, 16)]
    assert loaded.action_spec == SPEC and loaded.obs_mean.abs().max() == 0
    assert len(loaded.provenance["ensemble_of"]) == 2 and obs_len == 13
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LRController(opt, total_steps=40, controller=path)
    for _ in range(40):
        loss = model(torch.ones(4, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss)
    assert np.isfinite(opt.param_groups[0]["lr"]) and opt.param_groups[0]["lr"] > 0


def test_members_of_different_configurations_are_refused() -> None:
    a = random_policy(1, SPEC)
    with pytest.raises(UsageError, match="at least 2 controllers, got 1"):
        ensemble_weights([a])
    other_spec = random_policy(2, ActionSpec(interval=10))
    with pytest.raises(UsageError, match=r"controller 1's action spec .* differs"):
        ensemble_weights([a, other_spec])
    with pytest.raises(UsageError, match="feature version 3, controller 0 version 2"):
        ensemble_weights([a, random_policy(3, SPEC, feature_version=3)])
    deeper = random_policy(4, SPEC)
    deeper.layers.insert(1, (torch.eye(8), torch.zeros(8)))
    with pytest.raises(UsageError, match="controller 1 has 3 layers, controller 0 2"):
        ensemble_weights([a, deeper])


def test_cli_ensemble_writes_the_average_and_refuses_in_one_line(tmp_path, capsys) -> None:
    from lrctl.cli import main

    paths = [save_controller(w, tmp_path / f"m{i}.safetensors") for i, w in enumerate(_seeds(7, 8))]
    out = tmp_path / "e.safetensors"
    assert main(["ensemble", *map(str, paths), "-o", str(out)]) == 0
    assert "the average of 2 controllers' actions" in capsys.readouterr().out
    obs = _inside_every_clip(_seeds(7, 8))
    np.testing.assert_allclose(
        load_controller(out).act(obs), ensemble_act_reference(_seeds(7, 8), obs), atol=1e-5
    )
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "layers: [(16, 13), (1, 16)]" in info and '"ensemble_of": [{' in info
    assert main(["ensemble", str(paths[0]), "-o", str(tmp_path / "one.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "at least 2 controllers, got 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "one.safetensors").exists()
