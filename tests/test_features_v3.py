"""Features v3: the last update's size and the last two gradients' cosine.

One arithmetic (`lrctl.features.last_step_features`), raw numbers measured on each block's last
two steps by every producer of blocks (`InnerRun`, `Population`, `LRController`, the ranks of
`lrctl.distributed`), checked against hand computations and against each other; version 1 and
2 controller files act exactly as before.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lrctl.actions import ActionSpec
from lrctl.controller import LRController
from lrctl.controller_file import ControllerFileError, load_controller, save_controller
from lrctl.env import LRControlEnv
from lrctl.errors import ConfigError, UsageError
from lrctl.features import (
    CLIP,
    FEATURE_NAMES,
    OBS_DIM,
    FeatureTracker,
    feature_names,
    last_step_features,
    obs_dim,
)
from lrctl.inner_run import InnerRun
from lrctl.last_steps import LastSteps, combine_stats, row_dots
from lrctl.policies import rollout
from lrctl.ppo import TrainConfig
from lrctl.runs import Runs
from lrctl.tasks import FAMILIES, RunSpec, Split, Task
from tests.helpers import config_from_cli, constant_policy, random_policy, tiny_regression
from tests.test_export import _rewrite_meta
from tests.test_layerwise import record_features

RATIO = FEATURE_NAMES.__len__()  # index of update_ratio (13); grad_cosine follows
COSINE = RATIO + 1
SPEC4 = ActionSpec(interval=4, max_multiplier=2.0, lr_band=(0.01, 100.0), grad_norm_steps=2)


# --- the arithmetic ------------------------------------------------------------------------


def test_version_3_is_version_2_plus_two_features() -> None:
    assert feature_names(3) == (*FEATURE_NAMES, "update_ratio", "grad_cosine")
    assert feature_names(2) == feature_names(1) == FEATURE_NAMES
    assert (obs_dim(1), obs_dim(2), obs_dim(3)) == (13, 13, 15) and OBS_DIM == 13
    with pytest.raises(ValueError, match="feature version must be one of 1, 2, 3, 4, 5"):
        obs_dim(6)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # dot, update^2, param^2, |g_prev|, |g_last|  ->  log(|update| / |param|), cosine
        ((-1.0, 4e-4, 4.0, 1.0, 2.0), (math.log(0.02 / 2.0), -0.5)),
        ((6.0, 1.0, 1.0, 2.0, 3.0), (0.0, 1.0)),
        ((6.0 + 1e-6, 1.0, 1.0, 2.0, 3.0), (0.0, 1.0)),  # rounding past 1 is clipped
        ((0.0, 1e-40, 1e40, 1.0, 1.0), (-10.0, 0.0)),  # clipped to -CLIP
        ((math.nan, 1.0, 4.0, 1.0, 1.0), (math.log(0.5), 0.0)),  # no dot product: a short block
        ((1.0, 1.0, 4.0, math.nan, math.nan), (math.log(0.5), 0.0)),  # fewer than 2 norms
        ((1.0, 1.0, 4.0, 0.0, 3.0), (math.log(0.5), 0.0)),  # a zero gradient
        ((1.0, 1.0, 4.0, math.inf, 3.0), (math.log(0.5), 0.0)),
        ((math.inf, math.nan, 4.0, 1.0, 1.0), (CLIP, 0.0)),  # a non-finite update: the largest
        ((1.0, 1.0, math.inf, 1.0, 1.0), (CLIP, 1.0)),
        ((1.0, 0.0, 4.0, 1.0, 1.0), (-CLIP, 1.0)),  # no update at all
        ((1.0, 1.0, 0.0, 1.0, 1.0), (CLIP, 1.0)),  # parameters all zero
        ((1.0, 0.0, 0.0, 1.0, 1.0), (-CLIP, 1.0)),
    ],
)
def test_last_step_features_table(raw: tuple, expected: tuple) -> None:
    assert last_step_features(*raw) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def full_batch_task(n: int = 32, seed: int = 0) -> Task:
    """A tiny regression whose batch is the whole training split (every step's gradient is
    the full-batch gradient, whatever the batch order)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.sin(x @ torch.randn(4, 1, generator=g))
    split = Split(x, y)

    def model_fn() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))

    return Task("tiny", "tiny", model_fn, split, split, split, nn.functional.mse_loss, n, False)


def by_hand(task: Task, lr: float, k: int, seed: int) -> tuple[float, float, float, float]:
    """Plain SGD for k full-batch steps: (g_{k-2} . g_{k-1}, |g_{k-2}|, |g_{k-1}|, |theta|
    before step k-1)."""
    torch.manual_seed(seed)
    model = task.model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    grads, theta = [], None
    for _ in range(k):
        opt.zero_grad()
        task.loss_fn(model(task.train.x), task.train.y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
        opt.step()
    a, b = grads[-2], grads[-1]
    return float(a @ b), float(a.norm()), float(b.norm()), float(theta.norm())


def test_inner_run_and_population_against_a_hand_computation() -> None:
    """Plain SGD: update_ratio = log(lr |g_{K-1}| / |theta|) and grad_cosine = the cosine of
    the last two full-batch gradients, for the single run and for a population row."""
    task, lr, k = full_batch_task(), 0.3, 6
    dot, n_prev, n_last, theta = by_hand(task, lr, k, seed=3)
    expected = (math.log(lr * n_last / theta), dot / (n_prev * n_last))
    assert -1 < expected[1] < 0.999  # the two gradients are not trivially parallel

    single = Runs.single(task, "sgd", lr, capacity=k, seed=3).run_block(
        k, grad_norm_steps=2, step_stats=True
    )
    pop = Runs.population(task, "sgd", 2, k)
    pop.start([0, 1], [3, 4])
    assert pop.pop.batched_matmul  # the flat-buffer fast path
    rows = pop.run_block(k, np.array([lr, lr]), 2, step_stats=True)
    for block, row in ((single, 0), (rows, 0)):
        obs = FeatureTracker(1, 3).update(
            *block.observed(np.array([row]), 2), 0.0, 1.0, block.step_stats[[row]]
        )
        np.testing.assert_allclose(obs[0, [RATIO, COSINE]], expected, rtol=1e-5, atol=1e-6)
        # the raw numbers: SGD's update is lr * g
        update_sq, param_sq = block.step_stats[row, 1:]
        assert update_sq == pytest.approx((lr * n_last) ** 2, rel=1e-4)
        assert param_sq == pytest.approx(theta**2, rel=1e-5)


def test_controller_against_a_hand_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime: the same numbers from the optimizer hooks in a plain loop (plain SGD,
    constant LR), recomputed by hand at every decision."""
    model, x, y = tiny_regression()
    lr, k = 0.05, SPEC4.interval
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ctrl = LRController(opt, 40, constant_policy(0.0, SPEC4, feature_version=3))
    seen = record_features(ctrl, monkeypatch)
    grads, expected = [], []
    for t in range(40):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
        opt.step()
        ctrl.step(nn.functional.mse_loss(model(x), y).detach())
        if (t + 1) % k == 0:
            a, b = grads[-2], grads[-1]
            cos = float(a @ b / (a.norm() * b.norm()))
            expected.append([math.log(lr * float(b.norm()) / float(theta.norm())), cos])
    got = np.stack(seen)[:, 0, [RATIO, COSINE]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.stack(seen).shape == (10, 1, 15)


def test_last_steps_definition_equals_the_flat_fast_path() -> None:
    """`LastSteps` (per tensor, then summed) and `row_dots` / `row_norms` on flat rows agree."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    params = [torch.randn(*s, generator=g) for s in shapes]
    g1 = [torch.randn(*s, generator=g) for s in shapes]
    g2 = [torch.randn(*s, generator=g) * 1e-3 for s in shapes]
    last = LastSteps(params)
    last.start_block()
    last.keep_grads(g1)
    last.before_last_step([g2[0], None, g2[2]], params)  # tensor 1 without a gradient
    before = torch.cat([p.reshape(-1) for p in params])
    for p, d in zip(params, g2, strict=True):
        p.sub_(0.1 * d)
    last.after_last_step(params)
    got = combine_stats(last.stats)[0]
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])[None]  # noqa: E731
    masked = [g2[0], torch.zeros(4), g2[2]]
    update = before[None] - flat(params)
    want = [row_dots(flat(g1), flat(masked))[0], update.square().sum(), before.square().sum()]
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-5, atol=1e-9)
    assert combine_stats(last.stats, [2, 1]).shape == (2, 3)
    assert not last.measuring and not last.has_grads


# --- every producer, the same numbers --------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "optimizer", "generic"),
    [
        ("digits_mlp", "momentum", False),
        ("digits_mlp", "adam", True),
        ("digits_cnn", "adam", False),
    ],
)
def test_single_run_equals_population_row(family: str, optimizer: str, generic: bool) -> None:
    """Each member's statistics are those of `InnerRun` on its own run: over two full blocks,
    and in a block where members' lengths differ (one of a single step: no dot product)."""
    fam = FAMILIES[family]()
    spec = fam.spec(optimizer, steps=40)
    task = fam.build(spec)
    seeds, lrs = [1, 2, 3], np.array([1.0, 3.0, 0.3]) * spec.base_lr
    for plan in ([[10, 10, 10], [10, 10, 10]], [[10, 7, 1]]):
        pop = Runs.population(task, optimizer, 3, 10, generic=generic)
        pop.start([0, 1, 2], seeds)
        blocks = [pop.run_block(lengths, lrs, 2, step_stats=True) for lengths in plan]
        for i in range(3):
            single = Runs.single(task, optimizer, float(lrs[i]), capacity=40, seed=seeds[i])
            for lengths, block in zip(plan, blocks, strict=True):
                n = lengths[i]
                own = single.run_block(n, grad_norm_steps=2, step_stats=True)
                np.testing.assert_allclose(block.step_stats[i], own.step_stats[0], rtol=1e-5)
                feats = [
                    last_step_features(*b.step_stats[j], *b.grad_norms[j, n - 2 : n])
                    if n >= 2
                    else last_step_features(*b.step_stats[j], math.nan, math.nan)
                    for b, j in ((block, i), (own, 0))
                ]
                np.testing.assert_allclose(feats[0], feats[1], rtol=5e-5, atol=5e-5)
    assert math.isnan(blocks[0].step_stats[2, 0])  # a one-step block: no dot product


@pytest.mark.parametrize("version", [3, 4, 5])
def test_batched_env_equals_single_env_v3(version: int) -> None:
    """Member i of the batched env observes what `LRControlEnv` observes on its spec, with
    features v3, v4 and v5 (the helpers and tolerance of tests/test_batched_env.py)."""
    from lrctl.batched_env import BatchedLRControlEnv
    from tests.test_batched_env import (
        assert_same_episode,
        batched_rollout,
        episode_of,
        member_specs,
    )

    specs = member_specs("digits_mlp", "momentum")
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 3, 1)).astype(np.float32)
    env = BatchedLRControlEnv(3, redraw_after=0, seed=5, feature_version=version)
    assert env.observation_space.shape == (obs_dim(version),)
    env.set_options([{"spec": s} for s in specs])
    out = batched_rollout(env, actions)
    for m, spec in enumerate(specs):
        single = LRControlEnv(feature_version=version)
        observations = [single.reset(options={"spec": spec})[0]]
        rewards, end = [], None
        for t, a in enumerate(actions[:, m]):
            obs, reward, terminated, truncated, _ = single.step(a)
            observations.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                end = t
                break
        assert_same_episode((observations, rewards, end), episode_of(out, m, 0))
        assert np.abs(np.stack(observations)[:, COSINE]).max() > 0.05  # the feature is live


def env_and_controller_runs(
    spec: RunSpec, weights, per_group: bool = False, feature_version: int = 3
):
    """The env (driven by `weights` on its observations) and `LRController` (in a loop on a
    fresh run of the same spec): their observations and LRs."""
    env = LRControlEnv(
        action_spec=weights.action_spec, feature_version=feature_version, per_group=per_group
    )
    policy = lambda obs, info: weights.act(np.atleast_2d(obs))[:, 0]  # noqa: E731
    result = rollout(env, policy, options={"spec": spec})
    task = FAMILIES[spec.family]().build(spec)
    grouping = "layer" if per_group else "single"
    run = InnerRun(task, spec.optimizer, spec.base_lr, spec.steps, spec.seed, param_groups=grouping)
    ctrl = LRController(run.optimizer, spec.steps, weights, per_group=per_group)
    return result, ctrl, run


@pytest.mark.parametrize("per_group", [False, True])
def test_controller_decides_as_the_env(monkeypatch: pytest.MonkeyPatch, per_group: bool) -> None:
    """One observation function: a random v3 policy makes the same decisions (LRs) in the env
    and as an `LRController` in a loop on the same run, from the same observations."""
    spec = replace(
        FAMILIES["digits_mlp"]().spec("momentum", steps=60, batch_size=64, width=32, depth=1),
        base_lr=0.03,
    )
    weights = random_policy(3, ActionSpec(interval=10, max_multiplier=2.0), feature_version=3)
    result, ctrl, run = env_and_controller_runs(spec, weights, per_group)
    seen = record_features(ctrl, monkeypatch)
    run.advance(spec.steps, policy=ctrl)
    env_obs = np.stack([np.atleast_2d(o) for o in result.observations])
    assert env_obs.shape == (6, 2 if per_group else 1, 15)
    np.testing.assert_allclose(np.stack(seen), env_obs, rtol=0, atol=1e-5)
    block_lrs = run.lrs[:: spec.steps // 6]  # the LR of each block (the first at the base LR)
    np.testing.assert_allclose(block_lrs, result.lrs, rtol=1e-5)
    assert len({round(lr, 6) for lr in result.lrs}) > 3  # the policy moves the LR both ways


def test_one_group_per_group_equals_global_v3(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one param group, per-group control is global control, features v3 included."""
    weights = random_policy(7, SPEC4, feature_version=3)
    trajectories, features = [], []
    for per_group in (False, True):
        model, x, y = tiny_regression()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = LRController(opt, total_steps=60, controller=weights, per_group=per_group)
        seen = record_features(sched, monkeypatch)
        lrs = []
        for _ in range(60):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
        trajectories.append(lrs)
        features.append(np.stack(seen))
    np.testing.assert_allclose(trajectories[0], trajectories[1], rtol=1e-6, atol=0)
    # As for v2 (tests/test_layerwise.py): global mode sums the gradient norms in float64, the
    # per-group path in float32, and the LRs, hence the parameters, follow to ~1e-6.
    np.testing.assert_allclose(features[0], features[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_v3_state_dict_resumes_identically_between_the_last_two_steps(version: int) -> None:
    """A checkpoint taken between steps K-2 and K-1 holds the kept gradients (and, v4 and v5, the
    running averages): the resumed run decides exactly as the uninterrupted
    one."""
    weights = random_policy(3, SPEC4, feature_version=version)

    def run(stop_at: int | None) -> list[float]:
        model, x, y = tiny_regression()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sched = LRController(opt, total_steps=30, controller=weights)
        lrs = []
        for t in range(30):
            if t == stop_at:  # block step 3 = K-1 is next: g_{K-2} is held
                assert sched._last is not None and sched._last.has_grads
                saved = (model.state_dict(), opt.state_dict(), sched.state_dict())
                model, x, y = tiny_regression()
                model.load_state_dict(saved[0])
                opt = torch.optim.Adam(model.parameters(), lr=1e-2)
                opt.load_state_dict(saved[1])
                sched = LRController(opt, total_steps=30, controller=weights)
                sched.load_state_dict(saved[2])
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            sched.step(loss)
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    assert run(stop_at=11) == run(stop_at=None)


# --- non-finite inputs -----------------------------------------------------------------------

nasty = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e-30, 1e30, -1e30]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.floats(min_value=1e-3, max_value=10.0),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(nasty, min_size=4, max_size=4), min_size=1, max_size=4),
    st.lists(st.lists(nasty, min_size=2, max_size=2), min_size=4, max_size=4),
    st.lists(st.lists(nasty, min_size=3, max_size=3), min_size=4, max_size=4),
)
@pytest.mark.parametrize("version", [3, 4, 5])
def test_v3_features_finite_and_both_paths_agree(version, loss_blocks, gnorm_blocks, stat_blocks):
    """Hostile raw numbers never give a non-finite feature; the one-run path (Python floats)
    and the array path give the same features (versions 3, 4 and 5)."""
    one, two = FeatureTracker(1, version), FeatureTracker(2, version)
    for losses, gnorms, stats in zip(loss_blocks, gnorm_blocks, stat_blocks, strict=False):
        fast = one.update(np.array([losses]), np.array([gnorms]), 0.0, 0.5, np.array([stats]))
        both = two.update(
            np.array([losses] * 2), np.array([gnorms] * 2), [0.0] * 2, [0.5] * 2,
            np.array([stats] * 2),
        )  # fmt: skip
        assert fast.shape == (1, obs_dim(version)) and np.isfinite(fast).all()
        assert (np.abs(fast) <= CLIP).all() and (np.abs(fast[0, COSINE:]) <= 1.0).all()
        np.testing.assert_allclose(fast[0], both[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(both[0], both[1])


def test_v3_needs_the_statistics() -> None:
    with pytest.raises(ValueError, match="needs the block's last-step statistics"):
        FeatureTracker(1, 3).update(np.ones((1, 4)), np.ones((1, 2)), 0.0, 0.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e30])
def test_nonfinite_gradients_never_give_nan_features(
    monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    """A v3 controller fed NaN / inf gradients (and the parameters they break): every
    observation finite, the LR finite and in the band."""
    param = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    weights = random_policy(7, SPEC4, feature_version=3)
    sched = LRController(opt, total_steps=24, controller=weights)
    seen = record_features(sched, monkeypatch)
    for t in range(24):
        param.grad = torch.full_like(param, bad if t in (6, 7, 13) else 0.5 / (t + 1))
        opt.step()
        sched.step(torch.tensor(1.0 / (t + 1)))
        lr = opt.param_groups[0]["lr"]
        assert math.isfinite(lr) and 0.1 * 0.01 * (1 - 1e-9) <= lr <= 0.1 * 100 * (1 + 1e-9)
    obs = np.stack(seen)
    assert obs.shape == (6, 1, 15) and np.isfinite(obs).all() and (np.abs(obs) <= CLIP).all()
    if not math.isfinite(bad):  # the block whose last step broke the parameters
        assert obs[1, 0, RATIO] == CLIP


# --- v1 and v2 files act as before -----------------------------------------------------------

V3_RECURSIVE = Path(__file__).resolve().parent / "data" / "controller_v3_recursive.safetensors"
"""Controller v3 (recursive, features v2), shipped until the anchored controllers."""

# LRs of tiny_regression under controller v3 (features v2) and a v1 copy of it (the same
# weights, feature version 1: G = K), every 10th step (one per decision), recorded with lrctl
# before features v3 existed. On the machine they were recorded on they are reproduced
# exactly; the tolerance only allows other CPUs' float32 kernels (an Intel Xeon differs by up
# to 1.1e-6 relative after 80 steps; a changed decision would move them by percents).
BEFORE_V3 = {
    ("v2", "momentum"): [0.025, 0.0183256105394009, 0.020509703430208588, 0.02863773644831862, 0.04303105352061476, 0.05331259934646552, 0.07460586053411801, 0.10345231938379335],
    ("v2", "adam"): [0.0041652241839641975, 0.00474807920254581, 0.004589897846936085, 0.003965827862508826, 0.003241421109411418, 0.0026546052442832646, 0.002254169937913986, 0.0019870295976214796],
    ("v1", "momentum"): [0.025, 0.0125, 0.006259053198753365, 0.007933072399458672, 0.010271133826488355, 0.01146265733124149, 0.015678191017172185, 0.020320649957154612],
    ("v1", "adam"): [0.004145235197660738, 0.004594546648833771, 0.004272892443045558, 0.003631027718991333, 0.00295518417195717, 0.0023264370182746567, 0.0018429268944785448, 0.0014818259703867178],
}  # fmt: skip


@pytest.mark.parametrize(("version", "optimizer"), list(BEFORE_V3))
def test_v1_and_v2_files_act_as_before(tmp_path: Path, version: str, optimizer: str) -> None:
    shipped = V3_RECURSIVE
    path = shipped
    if version == "v1":
        spec = load_controller(shipped).action_spec.to_dict()
        del spec["grad_norm_steps"]  # a v1 file has none: G = K
        path = _rewrite_meta(
            shipped, tmp_path / "v1.safetensors", feature_version="1", action_spec=json.dumps(spec)
        )
    weights = load_controller(path)
    assert weights.feature_version == int(version[1])
    model, x, y = tiny_regression()
    if optimizer == "momentum":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = LRController(opt, total_steps=80, controller=weights)
    assert sched._last is None  # no v3 measurement, no buffer
    lrs = []
    for _ in range(80):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[9::10] == pytest.approx(BEFORE_V3[version, optimizer], rel=1e-5, abs=0)


# --- files, configs, command line, distributed -----------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_v3_controller_file_round_trip_and_checks(tmp_path: Path, version: int) -> None:
    dim = obs_dim(version)
    w = random_policy(0, SPEC4, feature_version=version)
    loaded = load_controller(save_controller(w, tmp_path / "v3.safetensors"))
    assert loaded.feature_version == version and loaded.obs_mean.shape == (dim,)
    obs = torch.randn(6, dim)
    np.testing.assert_array_equal(w.act(obs), loaded.act(obs))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v3.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["feature_names"]) == list(feature_names(version))
    # a 13-input policy labelled v3 or v4, and one reading one gradient norm per block
    wrong = random_policy(0, SPEC4)
    wrong.feature_version = version
    with pytest.raises(ControllerFileError, match=f"does not match the {dim} features"):
        load_controller(save_controller(wrong, tmp_path / "wrong.safetensors"))
    one = random_policy(0, replace(SPEC4, grad_norm_steps=1), feature_version=version)
    with pytest.raises(ControllerFileError, match="needs grad_norm_steps >= 2"):
        load_controller(save_controller(one, tmp_path / "one.safetensors"))


def test_export_records_the_configs_feature_version(tmp_path: Path) -> None:
    """`lrctl export` writes the run's feature version; the file then acts on 15 features."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from lrctl.export import weights_from_model
    from tests.test_export import RandomObsEnv

    class RandomObsV3(RandomObsEnv):
        observation_space = RandomObsEnv.observation_space.__class__(-CLIP, CLIP, (15,), np.float32)

        def _obs(self):
            return self.np_random.standard_normal(15).clip(-CLIP, CLIP).astype(np.float32)

    venv = VecNormalize(DummyVecEnv([RandomObsV3]))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, device="cpu", seed=0,
                policy_kwargs={"activation_fn": torch.nn.Tanh})  # fmt: skip
    cfg = TrainConfig(feature_version=3)
    path = save_controller(weights_from_model(model, venv, cfg, {}), tmp_path / "c.safetensors")
    weights = load_controller(path)
    assert weights.feature_version == 3
    obs = np.zeros((2, 15), np.float32)
    sb3, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(weights.act(obs), sb3, atol=1e-5)


def test_train_config_feature_version(tmp_path: Path) -> None:
    assert TrainConfig().feature_version == 2
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 3, "interval": 5}))  # before the field: v2
    assert TrainConfig.load(path).feature_version == 2
    assert TrainConfig.from_dict({"feature_version": 3}).feature_version == 3
    with pytest.raises(ConfigError, match=r"feature_version.*needs grad_norm_steps >= 2"):
        TrainConfig(feature_version=3, grad_norm_steps=1).validate()
    with pytest.raises(ConfigError, match=r"feature_version.*one of 1, 2, 3, 4, 5"):
        TrainConfig(feature_version=6).validate()
    with pytest.raises(UsageError, match="version 1 is retired"):
        LRControlEnv(feature_version=1)


def test_cli_feature_version_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`lrctl train --feature-version 3` trains on features v3 (the config says so)."""
    from lrctl.cli import main

    argv = ["train", "--feature-version", "3", "--run-dir", str(tmp_path / "r")]
    assert config_from_cli(monkeypatch, argv).feature_version == 3
    argv = ["train", "--run-dir", str(tmp_path / "r2")]
    assert config_from_cli(monkeypatch, argv).feature_version == 2
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--feature-version {2,3,4,5}" in capsys.readouterr().out


def test_combine_block_adds_weighted_statistics_in_one_process(tmp_path: Path) -> None:
    """`combine_block` on a world of one: the statistics are the per-tensor sums (per group
    too), packed into the same all_reduce as the losses and norms."""
    import torch.distributed as dist

    from lrctl.distributed import combine_block

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)  # fmt: skip
    calls = []
    real = dist.all_reduce
    try:
        dist.all_reduce = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
        stats = torch.tensor([[1.0, -3.0], [4.0, 5.0], [9.0, 16.0]])
        params = [torch.zeros(2), torch.zeros(3)]
        parts = [[torch.tensor(3.0), torch.tensor(4.0)]]
        _, norms, got = combine_block(
            dist.group.WORLD, [torch.tensor(1.0)], parts, step_stats=stats, params=params
        )
        np.testing.assert_allclose(norms, [[5.0]])
        np.testing.assert_allclose(got, [[-2.0, 9.0, 25.0]])
        _, _, got = combine_block(
            dist.group.WORLD, [torch.tensor(1.0)], parts, [1, 1], step_stats=stats, params=params
        )
        np.testing.assert_allclose(got, [[1.0, 4.0, 9.0], [-3.0, 5.0, 16.0]])
        assert len(calls) == 2  # one collective per decision
    finally:
        dist.all_reduce = real
        dist.destroy_process_group()
