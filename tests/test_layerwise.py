"""Layer-wise control: per-layer param groups, per-group decisions in
`LRController` and in the env, and the benchmark methods that use them."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from torch import nn

from lrctl.actions import ActionSpec
from lrctl.bench.methods import METHODS
from lrctl.bench.plan import HASH_VERSION, RunConfig
from lrctl.controller import LRController
from lrctl.controller_file import ControllerWeights
from lrctl.env import LRControlEnv
from lrctl.features import FEATURE_NAMES, OBS_DIM, FeatureTracker
from lrctl.grad_norms import combine
from lrctl.inner_run import InnerRun
from lrctl.param_groups import layer_param_groups
from lrctl.policies import make_policy, rollout
from lrctl.tasks import FAMILIES, RunSpec
from lrctl.training import train
from tests.helpers import constant_policy, random_policy, tiny_regression

SPEC = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.01, 100.0), grad_norm_steps=2)
GNORM_VS_START = FEATURE_NAMES.index("gnorm_vs_start")


def feature_policy(index: int, gain: float, spec: ActionSpec = SPEC) -> ControllerWeights:
    """A linear policy: action = clip(gain * obs[index], -1, 1) (one layer, no tanh)."""
    w = torch.zeros(1, OBS_DIM)
    w[0, index] = gain
    return ControllerWeights(
        layers=[(w, torch.zeros(1))],
        obs_mean=torch.zeros(OBS_DIM),
        obs_var=torch.ones(OBS_DIM),
        obs_clip=10.0,
        obs_epsilon=0.0,
        action_spec=spec,
    )


def record_features(ctrl: LRController, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every feature array the controller's tracker returns, in order."""
    seen: list[np.ndarray] = []
    depth = [0]  # update() may call update_one(): record the outermost call only

    def recording(update):
        def record(*args: object) -> np.ndarray:
            depth[0] += 1
            try:
                feats = update(*args)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                seen.append(feats.copy())
            return feats

        return record

    # Global mode on the CPU calls update_one (one run, Python floats); per-group mode update.
    for name in ("update", "update_one"):
        monkeypatch.setattr(ctrl._tracker, name, recording(getattr(ctrl._tracker, name)))
    return seen


def run_loop(opt: torch.optim.Optimizer, model: nn.Module, sched: LRController, steps: int,
             losses: list[float] | None = None) -> list[list[float]]:  # fmt: skip
    """The README loop on tiny_regression's data; every group's LR after each step."""
    _, x, y = tiny_regression()
    lrs = []
    for t in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step(loss if losses is None else losses[t])
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


# --- grouping helper -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "arch", "expected"),
    [
        ("digits_cnn", {"width": 4}, ["conv1", "conv2", "head"]),
        ("char_gru", {"width": 16}, ["embed", "gru", "head"]),
        ("wine_mlp", {"width": 8, "depth": 2}, ["0", "2", "4"]),
        ("breast_cancer_logreg", {}, ["0"]),
    ],
)
def test_layer_param_groups_one_group_per_layer(family: str, arch: dict, expected: list) -> None:
    fam = FAMILIES[family]()
    model = fam.build(fam.spec("momentum", steps=50, **arch)).model_fn()
    groups = layer_param_groups(model)
    owners = {id(p): name.rpartition(".")[0] for name, p in model.named_parameters()}
    assert [owners[id(g["params"][0])] for g in groups] == expected
    assert all(len({owners[id(p)] for p in g["params"]}) == 1 for g in groups)
    # Every trainable parameter exactly once, in model.parameters() order.
    assert [id(p) for g in groups for p in g["params"]] == [id(p) for p in model.parameters()]


def test_layer_param_groups_skips_frozen_and_shared() -> None:
    a = nn.Linear(3, 3)
    b = nn.Linear(3, 3)
    b.weight = a.weight  # tied
    frozen = nn.Linear(3, 1)
    frozen.requires_grad_(False)
    groups = layer_param_groups(nn.Sequential(a, b, frozen))
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(a.weight), id(a.bias)],
        [id(b.bias)],
    ]


def test_group_grad_norms_match_clip_grad_norm_per_group() -> None:
    model, x, y = tiny_regression()
    nn.functional.mse_loss(model(x), y).backward()
    groups = layer_param_groups(model)
    norms = torch.stack(torch._foreach_norm([p.grad for p in model.parameters()], 2.0))
    per_group = combine(norms[None], [len(g["params"]) for g in groups])
    assert per_group.shape == (2, 1)
    for g, value in zip(groups, per_group[:, 0], strict=True):
        expected = nn.utils.clip_grad_norm_(g["params"], math.inf)
        assert float(value) == pytest.approx(float(expected), rel=1e-6)
    # One group: the global norm, bit for bit (the controller's global-mode ops).
    glob = torch.linalg.vector_norm(norms[None], 2.0, dim=1)
    assert torch.equal(combine(norms[None], [len(norms)])[0], glob)


# --- LRController --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "losses", [None, [1.0] * 9 + [math.nan] + [0.5] * 50], ids=["real", "with-nan"]
)
def test_one_group_per_group_equals_global(monkeypatch: pytest.MonkeyPatch, losses) -> None:
    """(a) With one param group, per-group control is global control: the same features and
    the same LR at every step (up to float32 rounding of the gradient norm)."""
    weights = random_policy(7, SPEC)
    trajectories, features = [], []
    for per_group in (False, True):
        model, _, _ = tiny_regression()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = LRController(opt, total_steps=60, controller=weights, per_group=per_group)
        seen = record_features(sched, monkeypatch)
        trajectories.append(run_loop(opt, model, sched, 60, losses))
        features.append(np.stack(seen))
    np.testing.assert_allclose(trajectories[0], trajectories[1], rtol=1e-6, atol=0)
    assert len({lr for (lr,) in trajectories[0]}) > 3  # the policy does move the LR
    # Global mode on the CPU sums the per-parameter norms in float64 (Python floats), the
    # per-group path in float32 tensors: equal up to float32 rounding.
    np.testing.assert_allclose(features[0], features[1], rtol=0, atol=1e-6)


def test_groups_with_different_gradients_get_different_lrs() -> None:
    """(b) Group 0's gradient norm shrinks as the regression is fitted; group 1's parameter
    never gets a gradient (norm 0, so gnorm_vs_start stays 0). A policy that follows
    gnorm_vs_start cuts group 0's LR and leaves group 1's exactly at its base."""
    model, _, _ = tiny_regression()
    unused = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD(
        [{"params": model.parameters()}, {"params": [unused], "lr": 0.02}], lr=0.05
    )
    sched = LRController(opt, 80, controller=feature_policy(GNORM_VS_START, 2.0), per_group=True)
    lrs = run_loop(opt, model, sched, 80)
    assert lrs[-1][0] < 0.05 * 0.5  # group 0: cut as its gradient shrank
    assert [lr[1] for lr in lrs] == [0.02] * 80  # group 1: untouched
    assert sched.get_last_lr() == lrs[-1]
    assert sched.last_actions[0] < 0 and sched.last_actions[1] == 0.0


def test_per_group_features_come_from_each_groups_own_norms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each group's row is FeatureTracker on the shared losses and that group's own gradient
    norms (the global norm of its parameters), with its own log(lr / base lr); each group's
    LR follows its own actions."""
    torch.manual_seed(0)
    model, x, y = tiny_regression()
    groups = layer_param_groups(model)
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    weights = feature_policy(GNORM_VS_START, 1.0)
    sched = LRController(opt, 40, controller=weights, per_group=True)
    seen = record_features(sched, monkeypatch)
    tracker = FeatureTracker(2)
    losses, norms, scales, lrs = [], [], np.ones(2), []
    for t in range(40):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        norms.append([float(nn.utils.clip_grad_norm_(g["params"], math.inf)) for g in groups])
        losses.append(float(loss.detach()))
        opt.step()
        sched.step(loss)
        lrs.append([g["lr"] for g in opt.param_groups])
        if (t + 1) % SPEC.interval == 0:  # the decision, recomputed from its definition
            block = np.array(losses[-4:])[None].repeat(2, 0)
            expected = tracker.update(block, np.array(norms[-2:]).T, np.log(scales), (t + 1) / 40)
            np.testing.assert_allclose(seen[(t + 1) // 4 - 1], expected, rtol=1e-5, atol=1e-5)
            actions = weights.act(expected)[:, 0]
            scales = np.array(
                [
                    SPEC.next_lr(float(s), 1.0, float(a))
                    for s, a in zip(scales, actions, strict=True)
                ]
            )
            np.testing.assert_allclose(lrs[-1], 0.05 * scales, rtol=1e-5)
    assert any(a != b for a, b in lrs)  # the groups' LRs went apart


def test_per_group_state_dict_resumes_identically() -> None:
    weights = random_policy(3, SPEC)

    def make():
        model, _, _ = tiny_regression()
        opt = torch.optim.Adam(layer_param_groups(model), lr=1e-2)
        return model, opt, LRController(opt, 50, controller=weights, per_group=True)

    model, opt, sched = make()
    full = run_loop(opt, model, sched, 50)
    model, opt, sched = make()
    first = run_loop(opt, model, sched, 23)  # stop mid-block, resume into fresh objects
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict(),
             sched.state_dict())  # fmt: skip
    assert saved[2]["block_grad_norms"].shape == (1, 4)  # block step 2 (of 0-2) x 4 params
    model, opt, sched = make()
    model.load_state_dict(saved[0])
    opt.load_state_dict(saved[1])
    sched.load_state_dict(saved[2])
    rest = run_loop(opt, model, sched, 27)
    np.testing.assert_allclose(first + rest, full, rtol=1e-6)
    assert len({tuple(lr) for lr in full}) > 3 and any(a != b for a, b in full)


def test_state_dict_modes_and_v1_states() -> None:
    model, _, _ = tiny_regression()
    opt = torch.optim.SGD(layer_param_groups(model), lr=0.1)
    per_group = LRController(opt, 10, controller=constant_policy(1.0), per_group=True)
    glob = LRController(opt, 10, controller=constant_policy(1.0))
    with pytest.raises(ValueError, match="per_group=True"):
        glob.load_state_dict(per_group.state_dict())
    with pytest.raises(ValueError, match="per_group=False"):
        per_group.load_state_dict(glob.state_dict())
    # A v1 state (global control, before per-group control) still loads.
    v1 = {"version": 1, "t": 4, "scale": 2.0, "hold_left": 1, "last_action": 1.0,
          "base_lrs": [0.1, 0.1], "total_steps": 10, "block_losses": torch.zeros(0),
          "block_grad_norms": torch.zeros(0),
          "tracker": {k: torch.as_tensor(v) for k, v in FeatureTracker(1).state_dict().items()}}  # fmt: skip
    glob.load_state_dict(v1)
    assert glob.get_last_lr() == [0.2, 0.2] and glob._hold_left == [1]
    assert glob.last_action == 1.0


# --- env -----------------------------------------------------------------------------------


def policy_of(weights: ControllerWeights):
    """A rollout policy from controller weights: one action per row of the observation."""
    return lambda obs, info: weights.act(np.atleast_2d(obs))[:, 0]


def test_env_one_group_per_group_equals_global() -> None:
    """(a) A logistic regression (one Linear: one param group): per-group mode plays the same
    episode as the default mode, exactly (observations, rewards, LRs)."""
    spec = replace(
        FAMILIES["breast_cancer_logreg"]().spec("momentum", steps=80, batch_size=32),
        base_lr=0.03,
    )
    policy = policy_of(random_policy(5))
    glob = rollout(LRControlEnv("train"), policy, options={"spec": spec})
    env = LRControlEnv("train", per_group=True)
    per = rollout(env, policy, options={"spec": spec})
    assert env.observation_space.shape == (1, OBS_DIM) and env.action_space.shape == (1,)
    assert per.rewards == glob.rewards and per.lrs == glob.lrs
    assert len(set(glob.lrs)) > 2
    for a, b in zip(glob.observations, per.observations, strict=True):
        np.testing.assert_array_equal(b, a[None])
    assert [i["lrs"] for i in per.infos] == [[lr] for lr in glob.lrs]


def digits_spec(steps: int = 60) -> RunSpec:
    spec = FAMILIES["digits_mlp"]().spec("momentum", steps=steps, batch_size=64, width=32, depth=1)
    return replace(spec, base_lr=0.03)


def test_env_per_group_spaces_and_actions() -> None:
    """(b) A 2-layer MLP: [2, 13] observations inside the re-declared space; each group's LR
    follows its own action, and its log_lr_ratio row reads it."""
    env = LRControlEnv("train", per_group=True)
    obs, info = env.reset(options={"spec": digits_spec()})
    assert obs.shape == (2, OBS_DIM) and obs.dtype == np.float32
    assert env.observation_space.shape == (2, OBS_DIM) and env.action_space.shape == (2,)
    assert env.observation_space.contains(obs) and info["lrs"] == [0.03, 0.03]
    obs, _, _, _, info = env.step(np.array([1.0, -1.0], np.float32))
    assert info["lrs"] == pytest.approx([0.06, 0.015]) and info["lr"] == info["lrs"][0]
    np.testing.assert_allclose(obs[:, FEATURE_NAMES.index("log_lr_ratio")], [math.log(2), -math.log(2)], rtol=1e-6)  # fmt: skip
    assert not np.array_equal(obs[0, 7:10], obs[1, 7:10])  # each layer's own gradient norms
    np.testing.assert_array_equal(obs[0, :7], obs[1, :7])  # one loss for both
    obs, *_, info = env.step(np.array([0.5], np.float32))  # one action for every group
    assert info["lrs"] == pytest.approx([0.06 * 2**0.5, 0.015 * 2**0.5])
    with pytest.raises(ValueError, match="one action per param group"):
        env.step(np.zeros(3, np.float32))


def test_env_per_group_observations_match_the_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(c) One observation function, per group: the env's per-group observations are the features
    `LRController(per_group=True)` computes for each group on the same run."""
    env = LRControlEnv("train", per_group=True)
    spec = digits_spec()
    result = rollout(env, make_policy("constant"), options={"spec": spec})
    task = FAMILIES["digits_mlp"]().build(spec)
    run = InnerRun(task, spec.optimizer, spec.base_lr, spec.steps, spec.seed, param_groups="layer")
    ctrl = LRController(
        run.optimizer, spec.steps, constant_policy(0.0, env.action_spec), per_group=True
    )
    seen = record_features(ctrl, monkeypatch)
    run.advance(spec.steps, policy=ctrl)
    assert len(seen) == len(result.observations) == 6
    np.testing.assert_array_equal(np.stack(seen), np.stack(result.observations))
    # ... and InnerRun's per-group norms partition its global norm.
    g = env.action_spec.grad_norm_steps
    per_group = run.group_grad_norms(60 - g, 60)
    assert per_group.shape == (2, g) and bool((per_group > 0).all())
    torch.testing.assert_close(per_group.norm(dim=0), run.gnorm_buf[60 - g : 60])


def test_layer_groups_alone_do_not_change_training() -> None:
    """One group per layer at one LR trains exactly as one group (constant LR)."""
    spec = digits_spec(steps=30)
    task = FAMILIES["digits_mlp"]().build(spec)
    a = train(task, "momentum", 0.03, 30, 0, val_every=10)
    b = train(task, "momentum", 0.03, 30, 0, val_every=10, param_groups="layer")
    np.testing.assert_array_equal(a.steps["train_loss"], b.steps["train_loss"])
    np.testing.assert_array_equal(a.steps["grad_norm"], b.steps["grad_norm"])
    with pytest.raises(ValueError, match="param_groups must be one of"):
        train(task, "momentum", 0.03, 30, 0, param_groups="layers")


# --- bench ---------------------------------------------------------------------------------


def test_layerwise_methods_registered() -> None:
    for opt in ("momentum", "adam"):
        m = METHODS[f"controller_layerwise_{opt}"]
        glob = METHODS[f"controller_{opt}"]
        assert (m.optimizer, m.schedule, m.lr, m.param_groups) == (
            opt, glob.schedule, "reference", "layer",
        )  # fmt: skip
        model, _, _ = tiny_regression()
        optimizer = torch.optim.SGD(layer_param_groups(model), lr=0.1)
        policy = m.policy_fn(100, 10, constant_policy(0.0))(optimizer)
        assert isinstance(policy, LRController) and policy.per_group
        assert not glob.policy_fn(100, 10, constant_policy(0.0))(optimizer).per_group


def test_run_hash_unchanged_by_default_param_groups() -> None:
    """Runs stored before the field existed keep their hash; a per-layer run gets its own."""
    fields = dict(
        task="wine_mlp", method="controller_momentum", optimizer="momentum",
        schedule="controller", base_lr=0.1, lr_factor=1.0, seed=1000, steps=40, batch_size=16,
        arch=(("depth", 2), ("width", 64)), val_every=10, reference_lr=0.1, evaluate_test=True,
        controller="abc",
    )  # fmt: skip
    before = json.dumps({"v": HASH_VERSION, **fields}, sort_keys=True, default=list)
    legacy = hashlib.sha256(before.encode()).hexdigest()[:16]
    config = RunConfig(**fields)
    assert asdict(config)["param_groups"] == "single"
    assert config.config_hash == legacy
    assert replace(config, param_groups="layer").config_hash != legacy
