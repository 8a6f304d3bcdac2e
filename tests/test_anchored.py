"""Anchored actions: lr_t = base_lr * anchor(t) * factor, re-anchored every step (lrctl.actions).

Trajectory tables for the decision rule, the env's LRs against torch's CosineAnnealingLR, and
the batched env's members against the single env, as for recursive actions."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lrctl.actions import ActionSpec, cosine_anchor
from lrctl.batched_env import BatchedLRControlEnv
from lrctl.env import LRControlEnv
from lrctl.errors import UsageError
from lrctl.tasks import FAMILIES
from tests.helpers import config_from_cli

ANCHORED = ActionSpec(mode="anchored", residual=0.5)
WITH_SCALE = ActionSpec(mode="anchored", residual=0.5, scale_time=0.25)
DITHERED = ActionSpec(mode="anchored", residual=0.5, scale_time=0.25, dither=0.2)


def test_cosine_anchor_is_torch_cosine_annealing() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=37)
    for t in range(37):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * cosine_anchor(t, 37), abs=1e-15)
        opt.step()
        sched.step()
    assert cosine_anchor(37, 37) == 0.0 and cosine_anchor(50, 37) == 0.0


def test_decision_table_without_and_with_the_scale_term() -> None:
    # Residual only: factor = exp(0.5 a), whatever came before (no compounding).
    f, s = 1.0, 0.0
    for a, expected in [(1.0, math.exp(0.5)), (1.0, math.exp(0.5)), (-1.0, math.exp(-0.5)),
                        (0.0, 1.0), (float("nan"), 1.0), (7.0, math.exp(0.5))]:  # fmt: skip
        f, s = ANCHORED.decide(f, s, a, 1000)
        assert f == pytest.approx(expected) and s == 0.0
    # The scale term: 1000 steps, K = 10, crossing [0.1, 10] at a = 1 in 25% of the run:
    # beta = log(100) / 25 per decision.
    beta = math.log(100.0) / 25
    assert WITH_SCALE.scale_step(1000) == pytest.approx(beta)
    f, s = 1.0, 0.0
    for i in range(1, 20):
        f, s = WITH_SCALE.decide(f, s, 1.0, 1000)
        assert s == pytest.approx(min(i * beta, math.log(10.0)))
        assert f == pytest.approx(min(math.exp(s + 0.5), 30.0))
    for _ in range(60):  # held at the band's bottom
        f, s = WITH_SCALE.decide(f, s, -1.0, 1000)
    assert s == pytest.approx(math.log(0.1)) and f == pytest.approx(0.1 * math.exp(-0.5))


def test_scale_floor_slows_the_scale_term_on_short_runs_only() -> None:
    """scale_min_decisions = N: the scale term crosses its band in no fewer than N decisions.
    A 40-step run (4 decisions, 25% of it is one) crosses it in one decision without the floor
    (the step that made a 40-step run's LR jump 100x) and in 10 with it; a long run, whose own
    crossing takes more than 10 decisions, is unchanged."""
    floored = replace(WITH_SCALE, scale_min_decisions=10)
    width = math.log(100.0)
    assert WITH_SCALE.scale_step(40) == pytest.approx(width)
    assert floored.scale_step(40) == pytest.approx(width / 10)
    assert floored.scale_step(1000) == WITH_SCALE.scale_step(1000) == pytest.approx(width / 25)
    f, s = floored.decide(1.0, 0.0, 1.0, 40)
    assert s == pytest.approx(width / 10) and f == pytest.approx(math.exp(width / 10 + 0.5))
    vf, vs = floored.decide(np.ones(2), np.zeros(2), np.array([1.0, 1.0]), np.array([40, 1000]))
    assert vs == pytest.approx([width / 10, width / 25])
    assert vf == pytest.approx(np.exp(vs + 0.5))
    assert ActionSpec.from_dict(floored.to_dict()) == floored
    old = WITH_SCALE.to_dict()
    del old["scale_min_decisions"]  # a file from before the floor: none
    assert ActionSpec.from_dict(old) == WITH_SCALE and WITH_SCALE.scale_min_decisions == 1
    for bad in (0, 2.5):
        with pytest.raises(UsageError, match="scale_min_decisions must be a whole number >= 1"):
            replace(WITH_SCALE, scale_min_decisions=bad)


def test_cli_scale_floor_flag(tmp_path, monkeypatch, capsys) -> None:
    """`--scale-min-decisions N` reaches the action; without the scale term it is refused in
    one line before anything is written; a version-5 config reads as no floor."""
    import json

    from lrctl.cli import main
    from lrctl.ppo import TrainConfig

    argv = ["train", "--action-mode", "anchored", "--scale-time", "0.25"]
    cfg = config_from_cli(
        monkeypatch, [*argv, "--scale-min-decisions", "10", "--run-dir", str(tmp_path / "r")]
    )
    assert cfg.scale_min_decisions == 10 and cfg.action_spec.scale_step(40) == pytest.approx(
        math.log(100) / 10
    )
    bad = ["train", "--action-mode", "anchored", "--scale-min-decisions", "10"]
    assert main([*bad, "--run-dir", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert (
        "scale_min_decisions" in err and "scale_time" in err and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "r2").exists()
    path = tmp_path / "v5.json"
    path.write_text(json.dumps({"version": 5, "action_mode": "anchored", "scale_time": 0.25}))
    assert TrainConfig.load(path).scale_min_decisions == 1
    from lrctl.card import _action_line

    line = _action_line(json.loads(cfg.to_json()))
    assert "cross its range in 25% of a run and in no fewer than 10 decisions" in line


def test_dither_alternates_the_factor_around_the_undithered_one() -> None:
    """Decision n (steps done // K) multiplies the factor by exp(+d) when n is odd, exp(-d)
    when even; the scale term never sees the probe; scalar and vector paths agree."""
    k = DITHERED.interval
    assert [DITHERED.dither_sign(n * k) for n in (1, 2, 3, 4)] == [1, -1, 1, -1]
    assert DITHERED.dither_sign(np.array([k, 2 * k + 3])).tolist() == [1, -1]
    for n, sign in ((1, 1), (2, -1)):
        f, s = DITHERED.decide(1.0, 0.0, 0.5, 1000, n * k)
        f0, s0 = WITH_SCALE.decide(1.0, 0.0, 0.5, 1000)
        assert s == s0
        assert f == pytest.approx(f0 * math.exp(sign * 0.2), rel=1e-12)
    fv, sv = DITHERED.decide(
        np.ones(2), np.zeros(2), np.array([0.5, 0.5]), np.array([1000, 1000]), np.array([k, 2 * k])
    )
    np.testing.assert_allclose(fv, [DITHERED.decide(1.0, 0.0, 0.5, 1000, n * k)[0] for n in (1, 2)])
    np.testing.assert_allclose(sv, [s0, s0])
    with pytest.raises(UsageError, match="steps_done"):
        DITHERED.decide(1.0, 0.0, 0.5, 1000)
    with pytest.raises(UsageError, match="anchored"):
        ActionSpec(dither=0.1)
    with pytest.raises(UsageError, match="dither"):
        replace(DITHERED, dither=-0.1)
    assert ActionSpec.from_dict(DITHERED.to_dict()) == DITHERED
    old = WITH_SCALE.to_dict()
    del old["dither"]
    assert ActionSpec.from_dict(old).dither == 0.0


def test_vectorised_decision_equals_the_scalar_one() -> None:
    actions = np.array([1.0, -0.3, 0.0, 0.8])
    f, s = WITH_SCALE.decide(np.ones(4), np.zeros(4), actions, np.array([100, 400, 1000, 5000]))
    for i, (a, steps) in enumerate(zip(actions, [100, 400, 1000, 5000], strict=True)):
        fi, si = WITH_SCALE.decide(1.0, 0.0, float(a), steps)
        assert f[i] == pytest.approx(fi) and s[i] == pytest.approx(si)


def test_old_specs_read_as_recursive() -> None:
    old = {"interval": 10, "max_multiplier": 2.0, "lr_band": [0.001, 30.0], "grad_norm_steps": 2}
    spec = ActionSpec.from_dict(old)
    assert spec.mode == "recursive" and not spec.anchored
    assert ActionSpec.from_dict(WITH_SCALE.to_dict()) == WITH_SCALE
    with pytest.raises(UsageError, match="mode"):
        ActionSpec(mode="sideways")


def _spec(steps: int = 43):
    family = FAMILIES["digits_mlp"]()
    return replace(family.spec("momentum", steps=steps), seed=3)


def test_env_at_action_zero_follows_cosine_from_the_base_lr() -> None:
    env = LRControlEnv(action_spec=ANCHORED)
    spec = _spec()
    obs, _ = env.reset(options={"spec": spec})
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        done = terminated or truncated
        assert obs[10] == 0.0  # log_lr_ratio = log(factor)
    expected = [spec.base_lr * cosine_anchor(t, spec.steps) for t in range(spec.steps)]
    np.testing.assert_allclose(env.run.lrs, expected, rtol=1e-12)


def test_env_action_moves_the_lr_around_the_anchor() -> None:
    env = LRControlEnv(action_spec=ANCHORED)
    spec = _spec()
    env.reset(options={"spec": spec})
    obs, *_ = env.step(np.ones(1, np.float32))
    t = np.arange(10, 20)
    expected = spec.base_lr * cosine_anchor(t, spec.steps) * math.exp(0.5)
    np.testing.assert_allclose(env.run.lrs[10:20], expected, rtol=1e-12)
    assert obs[10] == pytest.approx(0.5)


@pytest.mark.parametrize("action_spec", [ANCHORED, WITH_SCALE, DITHERED])
def test_batched_members_match_the_single_env(action_spec: ActionSpec) -> None:
    base = _spec(80)
    specs = [
        replace(base, seed=1, steps=75),
        replace(base, seed=2, steps=63, base_lr=base.base_lr * 3),
    ]
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 2, 1)).astype(np.float32)
    benv = BatchedLRControlEnv(2, action_spec=action_spec, redraw_after=0, seed=5)
    benv.set_options([{"spec": s} for s in specs])
    obs_b = [benv.reset()]
    rewards_b = []
    for a in actions:
        o, r, _, _ = benv.step(a)
        obs_b.append(o)
        rewards_b.append(r)
    for m, spec in enumerate(specs):
        env = LRControlEnv(action_spec=action_spec)
        obs, _ = env.reset(options={"spec": spec})
        np.testing.assert_allclose(obs, obs_b[0][m], rtol=5e-5, atol=5e-5)
        for t, a in enumerate(actions):
            obs, reward, terminated, truncated, _ = env.step(a[m])
            np.testing.assert_allclose(obs, obs_b[t + 1][m], rtol=5e-5, atol=5e-5)
            assert reward == pytest.approx(float(rewards_b[t][m]), rel=5e-5, abs=5e-5)
            assert not (terminated or truncated)


# --- The runtime controller, anchored. ---


def _loop(controller_fn, steps: int = 45, lr: float = 0.05):
    """A tiny regression loop stepped with `LRController`; returns the LR used at every step."""
    from tests.helpers import tiny_regression

    model, x, y = tiny_regression(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = controller_fn(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss)
    return lrs, sched


def _weights(action: float, spec: ActionSpec):
    from tests.helpers import constant_policy

    return constant_policy(action, replace(spec, interval=5, grad_norm_steps=2))


def test_controller_at_action_zero_is_cosine_annealing() -> None:
    from lrctl.controller import LRController

    lrs, _ = _loop(lambda o: LRController(o, total_steps=45, controller=_weights(0.0, ANCHORED)))
    np.testing.assert_allclose(lrs, [0.05 * cosine_anchor(t, 45) for t in range(45)], rtol=1e-12)


def test_controller_factor_and_a_user_base_schedule() -> None:
    from lrctl.controller import LRController

    alpha = ANCHORED.residual
    lrs, sched = _loop(lambda o: LRController(o, 45, controller=_weights(1.0, ANCHORED)))
    expected = [
        0.05 * cosine_anchor(t, 45) * (1.0 if t < 5 else math.exp(alpha)) for t in range(45)
    ]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.05 * cosine_anchor(45, 45) * math.exp(alpha))

    # Any torch scheduler as the anchor: warm-up then linear decay; the scheduler steps on its
    # own values, the controller multiplies them.
    def warmup(o):
        return torch.optim.lr_scheduler.LambdaLR(o, lambda t: min(1.0, (t + 1) / 10) * (1 - t / 50))

    alone, _ = _loop(lambda o: _Stepper(warmup(o)))
    lrs, _ = _loop(
        lambda o: LRController(o, 45, controller=_weights(-1.0, ANCHORED), base=warmup(o))
    )
    factors = [1.0 if t < 5 else math.exp(-alpha) for t in range(45)]
    np.testing.assert_allclose(lrs, np.array(alone) * factors, rtol=1e-12)

    # A warm-up from 0 (as transformers' schedules start): LR 0 at the first step is allowed
    # with a base schedule (nothing divides by it), and refused without one.
    def from_zero(o):
        return torch.optim.lr_scheduler.LambdaLR(o, lambda t: min(1.0, t / 10))

    alone, _ = _loop(lambda o: _Stepper(from_zero(o)))
    lrs, _ = _loop(
        lambda o: LRController(o, 45, controller=_weights(-1.0, ANCHORED), base=from_zero(o))
    )
    assert alone[0] == lrs[0] == 0.0
    np.testing.assert_allclose(lrs, np.array(alone) * factors, rtol=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.0)
    with pytest.raises(UsageError, match=r"finite positive lr, got \[0.0\]$"):
        LRController(opt, 45, controller=_weights(-1.0, ANCHORED))


class _Stepper:
    """A torch scheduler stepped like a loss-driven policy (for the reference trajectory)."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def step(self, _loss) -> None:
        self.scheduler.step()


def test_controller_state_round_trip_continues_the_trajectory() -> None:
    from lrctl.controller import LRController

    weights = _weights(0.7, WITH_SCALE)
    whole, _ = _loop(lambda o: LRController(o, 45, controller=weights))
    _, first = _loop(lambda o: LRController(o, 45, controller=weights), steps=22)
    state = first.state_dict()
    assert state["version"] >= 3 and state["log_scales"][0] > 0

    def resumed(o):
        sched = LRController(o, 45, controller=weights)
        sched.load_state_dict(state)
        return sched

    rest, _ = _loop(resumed, steps=1)
    assert rest[0] == pytest.approx(whole[22], rel=1e-12)


def test_base_needs_an_anchored_controller() -> None:
    from lrctl.controller import LRController

    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    recursive = _weights(0.0, ActionSpec())
    with pytest.raises(UsageError, match="recursive"):
        LRController(opt, 10, controller=recursive, base=cosine)
    with pytest.raises(UsageError, match="metric"):
        LRController(opt, 10, controller=_weights(0.0, ANCHORED),
                     base=torch.optim.lr_scheduler.ReduceLROnPlateau(opt))  # fmt: skip


@pytest.mark.parametrize("with_dither", [False, True])
def test_env_and_controller_agree_on_the_lr_trajectory(with_dither: bool) -> None:
    """The env (what PPO trains on) and the runtime give the same LRs for the same policy."""
    from lrctl.controller import LRController
    from lrctl.training import train

    spec = _spec(43)
    action_spec = replace(DITHERED if with_dither else WITH_SCALE, interval=10)
    weights = _weights(0.6, action_spec)
    weights = replace(weights, action_spec=action_spec)
    env = LRControlEnv(action_spec=action_spec, max_val_examples=None)
    env.reset(options={"spec": spec})
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(np.full(1, 0.6, np.float32))
        done = terminated or truncated
    task = FAMILIES["digits_mlp"]().build(spec)
    history = train(task, spec.optimizer, spec.base_lr, spec.steps, spec.seed,
                    policy_fn=lambda o: LRController(o, spec.steps, controller=weights))  # fmt: skip
    np.testing.assert_allclose(history.steps.lr.to_numpy(), env.run.lrs, rtol=1e-12)


# --- The relative reward: improvement over a reference run under cosine at the same LR. ---


def test_relative_reward_is_zero_when_the_run_is_its_reference() -> None:
    """Anchored at action 0 the run follows cosine from its base LR: exactly its reference run
    (same spec, seed and LRs), so every relative reward is 0, in both envs."""
    from lrctl.episodes import RELATIVE_DIVERGENCE_RETURN

    spec = _spec(43)
    env = LRControlEnv(action_spec=ANCHORED, relative=True)
    env.reset(options={"spec": spec})
    done, rewards = False, []
    while not done:
        _, r, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        rewards.append(r)
        done = terminated or truncated
    assert rewards == [0.0] * 4
    benv = BatchedLRControlEnv(2, action_spec=ANCHORED, relative=True, redraw_after=0, seed=1)
    benv.set_options([{"spec": spec}, {"spec": replace(spec, seed=9, steps=80)}])
    benv.reset()
    for _ in range(3):
        _, r, _, _ = benv.step(np.zeros((2, 1), np.float32))
        assert r.tolist() == [0.0, 0.0]
    assert RELATIVE_DIVERGENCE_RETURN == -15.0


@pytest.mark.parametrize("action_spec", [ActionSpec(), ANCHORED])
def test_relative_reward_batched_members_match_the_single_env(action_spec: ActionSpec) -> None:
    base = _spec(80)
    specs = [
        replace(base, seed=1, steps=75),
        replace(base, seed=2, steps=63, base_lr=base.base_lr * 3),
    ]
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 2, 1)).astype(np.float32)
    benv = BatchedLRControlEnv(2, action_spec=action_spec, relative=True, redraw_after=0, seed=5)
    benv.set_options([{"spec": s} for s in specs])
    benv.reset()
    rewards_b = [benv.step(a)[1] for a in actions]
    for m, spec in enumerate(specs):
        env = LRControlEnv(action_spec=action_spec, relative=True)
        env.reset(options={"spec": spec})
        total = 0.0
        for t, a in enumerate(actions):
            _, reward, *_ = env.step(a[m])
            assert reward == pytest.approx(float(rewards_b[t][m]), rel=5e-5, abs=5e-5)
            total += reward
        # The return telescopes: own improvement minus the reference's.
        ep = env.episode
        expected = (ep.log_v0[0] - ep.log_v[0]) - (ep.ref_log_v0[0] - ep.ref_log_v[0])
        assert total == pytest.approx(expected, abs=1e-9)


def test_cli_scale_time_flag(tmp_path, monkeypatch, capsys) -> None:
    """`lrctl train --action-mode anchored --scale-time F` trains with the scale term (c); with
    the recursive action it is refused in one line, before anything is written."""
    from lrctl.cli import main

    argv = ["train", "--action-mode", "anchored", "--scale-time", "0.25"]
    cfg = config_from_cli(monkeypatch, [*argv, "--run-dir", str(tmp_path / "r")])
    assert cfg.scale_time == 0.25 and cfg.action_spec.scale_step(1000) == pytest.approx(
        math.log(100) / 25
    )
    assert (
        main(
            [
                "train",
                "--action-mode",
                "recursive",
                "--scale-time",
                "0.25",
                "--run-dir",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "scale_time" in err and "anchored" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists()


def test_controller_state_carries_its_base_schedule() -> None:
    """With base=, the state holds the base scheduler's state: a controller built on a fresh
    scheduler and loaded continues both (the warm-up's position included); a state with a
    base schedule refuses a controller built without one, and changes nothing."""
    from lrctl.controller import LRController

    weights = _weights(0.7, WITH_SCALE)

    def warmup(o):
        return torch.optim.lr_scheduler.LambdaLR(o, lambda t: min(1.0, (t + 1) / 30) * (1 - t / 50))

    whole, _ = _loop(lambda o: LRController(o, 45, controller=weights, base=warmup(o)))
    _, first = _loop(lambda o: LRController(o, 45, controller=weights, base=warmup(o)), steps=22)
    state = first.state_dict()
    assert state["base_schedule"]["last_epoch"] == 22

    def resumed(o):
        sched = LRController(o, 45, controller=weights, base=warmup(o))
        sched.load_state_dict(state)
        return sched

    rest, sched = _loop(resumed, steps=23)
    np.testing.assert_allclose(rest, whole[22:], rtol=1e-12)
    assert sched.base.last_epoch == 45

    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.05)
    plain = LRController(opt, 45, controller=weights)
    before = plain.state_dict()
    with pytest.raises(UsageError, match=r"saved with a base schedule \(base=\)"):
        plain.load_state_dict(state)
    assert plain.state_dict()["t"] == before["t"] == 0
    assert opt.param_groups[0]["lr"] == 0.05


def test_cli_dither_flag(tmp_path, monkeypatch, capsys) -> None:
    """`lrctl train --action-mode anchored --dither D` trains with the probe; with the
    recursive action it is refused in one line, before anything is written."""
    from lrctl.cli import main

    argv = ["train", "--action-mode", "anchored", "--dither", "0.15"]
    cfg = config_from_cli(monkeypatch, [*argv, "--run-dir", str(tmp_path / "r")])
    assert cfg.dither == 0.15 and cfg.action_spec.dither == 0.15
    run_dir = tmp_path / "r2"
    assert main(["train", "--dither", "0.15", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "dither" in err and "anchored" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()
