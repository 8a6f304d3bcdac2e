"""Baseline schedules: LR trajectory tables (torch's own test style), groups, errors, train()."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lrctl.baselines import BASELINE_NAMES, BASELINES, baseline_policy, make_scheduler
from lrctl.tasks import FAMILIES
from lrctl.training import train

# Expected LR at every step k = 0..T-1 for a base LR of 1.0: the LR the optimizer holds after
# k calls to scheduler.step(), i.e. the LR of optimizer step k in train().
# fmt: off
TRAJECTORIES: dict[str, tuple[int, dict[str, object], list[float]]] = {
    # case: (T, overrides, expected LRs); the case name starts with the baseline's name.
    "constant": (6, {}, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    # x0.1 at round(0.5 T) = 5 and round(0.75 T) = 8.
    "step": (10, {}, [1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]),
    "step_halving_at_thirds": (
        9, {"fractions": (1 / 3, 2 / 3), "gamma": 0.5},
        [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25],
    ),
    # 0.01 ** (k / T) = 10 ** (-k / 5).
    "exponential": (
        10, {},
        [1, 0.6309573445, 0.3981071706, 0.2511886432, 0.1584893192, 0.1, 0.06309573445,
         0.03981071706, 0.02511886432, 0.01584893192],
    ),
    # (1 + cos(pi k / T)) / 2.
    "cosine": (
        10, {},
        [1, 0.9755282581, 0.9045084972, 0.7938926261, 0.6545084972, 0.5, 0.3454915028,
         0.2061073739, 0.09549150281, 0.02447174185],
    ),
    # T_0 = ceil(14 / 7) = 2: cycles of 2, 4 and 8 steps.
    "cosine_restarts": (
        14, {},
        [1, 0.5, 1, 0.8535533906, 0.5, 0.1464466094, 1, 0.9619397663, 0.8535533906,
         0.6913417162, 0.5, 0.3086582838, 0.1464466094, 0.03806023374],
    ),
    # Two triangles between 0.1 and 1.0, half-cycle 8 // 4 = 2 steps.
    "cyclic": (8, {}, [0.1, 0.55, 1.0, 0.55, 0.1, 0.55, 1.0, 0.55]),
    # Cosine up from 1/25 over steps 0..2 (phase 1 ends at 0.3 T - 1), then cosine down to
    # 1/25/1e4 = 4e-6 at step T - 1.
    "one_cycle": (
        10, {},
        [0.04, 0.52, 1, 0.950484632, 0.8117456539, 0.6112620219, 0.3887419781, 0.1882583461,
         0.04951936799, 4e-06],
    ),
    # Warm-up W = round(0.05 * 20) = 1 step at 1/2, then cosine over the remaining 19 steps.
    "warmup_cosine": (
        20, {},
        [0.5, 1, 0.9931806517, 0.9729086209, 0.9397368756, 0.8945702547, 0.8386407858,
         0.7734740791, 0.7008477123, 0.6227427436, 0.5412896727, 0.4587103273, 0.3772572564,
         0.2991522877, 0.2265259209, 0.1613592142, 0.1054297453, 0.0602631244, 0.02709137915,
         0.006819348299],
    ),
    # W = round(0.1 * 20) = 2 steps at (k + 1) / 3, then cosine over 18 steps.
    "warmup_cosine_10pct": (
        20, {"warmup_fraction": 0.1},
        [1 / 3, 2 / 3, 1, 0.9924038765, 0.9698463104, 0.9330127019, 0.8830222216, 0.8213938048,
         0.75, 0.6710100717, 0.5868240888, 0.5, 0.4131759112, 0.3289899283, 0.25, 0.1786061952,
         0.1169777784, 0.06698729811, 0.03015368961, 0.007596123494],
    ),
}
# fmt: on


def _two_group_optimizer(lr0: float = 1.0, lr1: float = 0.1) -> torch.optim.Optimizer:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([{"params": [a], "lr": lr0}, {"params": [b], "lr": lr1}])


def _trajectory(scheduler: object, optimizer: torch.optim.Optimizer, steps: int) -> list[list]:
    """LR of each group at steps 0..steps-1, stepping the scheduler after each optimizer step."""
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("case", list(TRAJECTORIES))
def test_trajectory_table_every_group(case: str) -> None:
    total, overrides, expected = TRAJECTORIES[case]
    name = next(n for n in sorted(BASELINE_NAMES, key=len, reverse=True) if case.startswith(n))
    optimizer = _two_group_optimizer(1.0, 0.1)
    scheduler = make_scheduler(name, optimizer, total, **overrides)
    lrs = _trajectory(scheduler, optimizer, total)
    assert len(expected) == total
    assert [g0 for g0, _ in lrs] == pytest.approx(expected, rel=1e-8, abs=1e-12)
    # The second group keeps its own scale: every group is scheduled, not only group 0.
    assert [g1 for _, g1 in lrs] == pytest.approx([0.1 * v for v in expected], rel=1e-8)


def test_plateau_trajectory_with_validation_losses() -> None:
    # T = 1000, one validation every 50 steps: patience = round(0.1 * 1000 / 50) = 2
    # validations; the LR drops x0.1 at the third validation in a row without improvement.
    optimizer = _two_group_optimizer(1.0, 0.1)
    scheduler = make_scheduler("plateau", optimizer, 1000)
    assert isinstance(scheduler, ReduceLROnPlateau)
    assert scheduler.patience == 2
    val_losses = [1.0, 0.8, 0.8, 0.8, 0.8, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    expected = [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    lrs = []
    for loss in val_losses:
        scheduler.step(loss)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    assert [g0 for g0, _ in lrs] == pytest.approx(expected)
    assert [g1 for _, g1 in lrs] == pytest.approx([0.1 * v for v in expected])


@pytest.mark.parametrize(
    ("total", "val_every", "patience"), [(100, 50, 1), (1000, 50, 2), (1000, 10, 10)]
)
def test_plateau_patience_is_ten_percent_of_the_horizon(
    total: int, val_every: int, patience: int
) -> None:
    scheduler = make_scheduler("plateau", _two_group_optimizer(), total, val_every=val_every)
    assert scheduler.patience == patience


@pytest.mark.parametrize("name", BASELINE_NAMES)
@pytest.mark.parametrize("total", [1, 2, 3, 7, 50])
def test_stepping_exactly_t_times_never_raises(name: str, total: int) -> None:
    optimizer = _two_group_optimizer()
    scheduler = make_scheduler(name, optimizer, total)
    for _ in range(total):
        optimizer.step()
        scheduler.step(1.0) if name == "plateau" else scheduler.step()
    assert all(g["lr"] >= 0 for g in optimizer.param_groups)


@pytest.mark.parametrize("total", [12, 100, 1000])
def test_decaying_schedules_reach_their_stated_end(total: int) -> None:
    def last_lr(name: str) -> float:
        optimizer = _two_group_optimizer()
        scheduler = make_scheduler(name, optimizer, total)
        return _trajectory(scheduler, optimizer, total)[-1][0]

    # exponential: 1% of the base at step T, so 0.01 ** ((T - 1) / T) at step T - 1.
    assert last_lr("exponential") == pytest.approx(0.01 ** ((total - 1) / total))
    assert last_lr("step") == pytest.approx(0.01)
    assert last_lr("one_cycle") == pytest.approx(1 / 25 / 1e4)
    assert last_lr("cosine") < 0.02
    assert last_lr("warmup_cosine") < 0.03  # cosine over T - W steps
    # The last restart cycle ends at T or up to 6 steps after it (T_0 = ceil(T / 7)): near its
    # minimum at T once T is not tiny (at T = 12 it is cut at 5/8 of its 8 steps).
    expected_restarts_end = {12: 0.3086582838, 100: 0.0244717419, 1000: 0.0}
    assert last_lr("cosine_restarts") == pytest.approx(expected_restarts_end[total], abs=1e-4)


TINY = FAMILIES["breast_cancer_logreg"]()
TINY_TASK = TINY.build(TINY.spec("adam", batch_size=32))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", BASELINE_NAMES)
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_each_baseline_runs_through_train(name: str, optimizer: str) -> None:
    steps = 20
    history = train(
        TINY_TASK, optimizer, 0.05, steps, seed=0, policy_fn=baseline_policy(name, steps),
        val_every=5,
    )  # fmt: skip
    assert not history.diverged
    assert len(history.steps) == steps
    assert list(history.evals.step) == [0, 5, 10, 15, 20]
    assert history.final_val_loss < history.evals.val_loss.iloc[0]
    # The recorded LRs are the schedule's, group 0 of a fresh optimizer at the same base LR.
    if name != "plateau":
        reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
        expected = _trajectory(make_scheduler(name, reference, steps), reference, steps)
        assert history.steps.lr.tolist() == pytest.approx([lr[0] for lr in expected])
    else:
        assert history.steps.lr.tolist() == [0.05] * steps  # improving: no reduction


def test_plateau_reduces_the_lr_inside_train_when_validation_stalls() -> None:
    # An LR so small that the validation loss improves by less than ReduceLROnPlateau's
    # relative threshold (1e-4) between validations: every validation counts as stalled.
    steps = 60
    history = train(
        TINY_TASK, "sgd", 1e-6, steps, seed=0,
        policy_fn=baseline_policy("plateau", steps, val_every=5), val_every=5,
    )  # fmt: skip
    # patience = max(1, round(0.1 * 60 / 5)) = 1 validation. The scheduler sees validations at
    # steps 5, 10, 15, ...: the first sets the best, and the 2nd stalled one in a row cuts the
    # LR, which applies from the next step: at step 15, then at step 25. A third cut (1e-8 ->
    # 1e-9) changes the LR by less than torch's eps (1e-8), so torch skips it.
    lr = history.steps.lr.to_numpy()
    drops = [k for k in range(1, steps) if lr[k] < lr[k - 1]]
    assert drops == [15, 25]
    assert lr[[0, 14, 15, 24, 25, 59]].tolist() == pytest.approx(
        [1e-6, 1e-6, 1e-7, 1e-7, 1e-8, 1e-8]
    )


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        make_scheduler("linear_decay", _two_group_optimizer(), 10)
    message = str(info.value)
    assert "unknown baseline 'linear_decay'" in message
    for name in BASELINE_NAMES:
        assert name in message
    with pytest.raises(ValueError, match="choose one of: constant, step"):
        baseline_policy("linear_decay", 10)  # checked when built, before any training


@pytest.mark.parametrize("total", [0, -5, 2.5, True])
def test_total_steps_must_be_a_positive_integer(total: object) -> None:
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        make_scheduler("cosine", _two_group_optimizer(), total)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        baseline_policy("cosine", total)  # type: ignore[arg-type]


def test_unknown_override_lists_the_schedules_settings() -> None:
    with pytest.raises(ValueError, match="its settings are: fractions, gamma"):
        make_scheduler("step", _two_group_optimizer(), 10, milestones=[5])
    with pytest.raises(ValueError, match=r"its settings are: \(none\)"):
        baseline_policy("constant", 10, factor=0.5)


def test_registry_and_names() -> None:
    assert BASELINE_NAMES == (
        "constant", "step", "exponential", "cosine", "cosine_restarts", "cyclic", "one_cycle",
        "warmup_cosine", "plateau",
    )  # fmt: skip
    assert tuple(BASELINES) == BASELINE_NAMES
    for name, builder in BASELINES.items():
        assert builder.__doc__, f"{name} needs a docstring stating its defaults"


def test_baseline_policy_pickles_and_builds_fresh_schedulers() -> None:
    policy_fn = pickle.loads(pickle.dumps(baseline_policy("step", 10, gamma=0.5)))
    optimizer = _two_group_optimizer()
    lrs = _trajectory(policy_fn(optimizer), optimizer, 10)
    assert [g0 for g0, _ in lrs] == pytest.approx([1] * 5 + [0.5] * 3 + [0.25] * 2)
