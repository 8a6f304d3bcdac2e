"""LR-adapting optimizers from PyPI (schedule-free AdamW, Prodigy, D-Adaptation Adam): built by
name, trained through lrctl.training, benchmarked, and kept out of the env's sampling."""

from __future__ import annotations

import sys
from pathlib import Path

import dadaptation
import numpy as np
import prodigyopt
import pytest
import schedulefree
import torch

from lrctl.bench.methods import METHODS, get_methods
from lrctl.bench.plan import BenchConfig, make_plan
from lrctl.inner_run import InnerRun
from lrctl.optimizers import (
    OPTIMIZER_NAMES,
    REFERENCE_SOURCE,
    SAMPLED_OPTIMIZERS,
    evaluation_mode,
    make_optimizer,
)
from lrctl.tasks import FAMILIES, FamilyConfig, SuiteError, load_suite
from lrctl.training import train

LR_FREE = {
    "schedulefree_adamw": schedulefree.AdamWScheduleFree,
    "prodigy": prodigyopt.Prodigy,
    "dadapt_adam": dadaptation.DAdaptAdam,
}
NEW = ("sgd_hd", "adam_hd", *LR_FREE)


def _task(optimizer: str, family_name: str = "digits_mlp", steps: int = 150):
    family = FAMILIES[family_name]()
    spec = family.spec(optimizer, steps=steps)
    return family, spec, family.build(spec)


@pytest.mark.parametrize("name", list(LR_FREE))
def test_builds_by_name(name: str) -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = make_optimizer(name, params, 1.0)
    assert isinstance(opt, LR_FREE[name])
    assert opt.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize("name", list(LR_FREE))
def test_trains_a_small_task_to_lower_loss(name: str) -> None:
    """At the family's reference LR for it (adamw's for schedule-free, 1 for the others).
    (D-Adaptation's step-size estimate grows from d0 = 1e-6 and needs more than these 150 steps
    on the MLP families; the logistic regression trains under all three.)"""
    family, spec, task = _task(name, "breast_cancer_logreg")
    expected = family.reference_lr("adamw") if name == "schedulefree_adamw" else 1.0
    assert spec.base_lr == expected
    history = train(task, name, spec.base_lr, 150, seed=0, val_every=50)
    assert not history.diverged
    assert history.final_val_loss < 0.5 * history.evals["val_loss"].iloc[0]
    assert history.final_val_accuracy > 0.9


def test_schedulefree_evaluates_at_its_eval_weights_and_trains_at_its_train_weights() -> None:
    """A forward hook records the optimizer's mode at every forward pass: training steps run in
    train mode, evaluations in eval mode, and the next step is in train mode again."""
    _, spec, task = _task("schedulefree_adamw")
    run = InnerRun(task, "schedulefree_adamw", spec.base_lr, capacity=20, seed=0)
    modes: list[bool] = []
    run.model.register_forward_hook(
        lambda *_: modes.append(run.optimizer.param_groups[0]["train_mode"])
    )
    run.advance(3)
    weights_train = [p.detach().clone() for p in run.params]
    run.evaluate("val")
    # Training resumes from its own weights y (up to the rounding of the two interpolations).
    for before, after in zip(weights_train, run.params, strict=True):
        torch.testing.assert_close(after.detach(), before, rtol=1e-5, atol=1e-6)
    run.advance(2)
    assert modes == [True] * 3 + [False] + [True] * 2
    # Evaluation sees other weights (the average x) than training does (y).
    with evaluation_mode(run.optimizer):
        weights_eval = [p.detach().clone() for p in run.params]
    assert all(not torch.allclose(a, b) for a, b in zip(weights_eval, run.params, strict=True))


def test_train_switches_schedulefree_around_every_validation() -> None:
    """Spy on eval()/train() through `policy_fn`, which receives the run's optimizer."""
    _, spec, task = _task("schedulefree_adamw")
    calls: list[str] = []

    def spy(optimizer: torch.optim.Optimizer) -> None:
        for mode in ("eval", "train"):
            method = getattr(optimizer, mode)
            setattr(optimizer, mode, lambda m=method, n=mode: (calls.append(n), m())[1])
        return None

    history = train(
        task, "schedulefree_adamw", spec.base_lr, 30, seed=0, policy_fn=spy, val_every=10
    )
    assert len(history.evals) == 4  # step 0, 10, 20, 30
    assert calls == ["eval", "train"] * 4


def test_evaluation_mode_is_a_no_op_for_other_optimizers() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = make_optimizer("adam", [p], 0.1)
    with evaluation_mode(opt):
        pass
    assert torch.equal(p, torch.ones(2))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install prodigyopt"):
        make_optimizer("prodigy", [torch.nn.Parameter(torch.zeros(1))], 1.0)


def test_new_optimizers_never_enter_the_envs_sampling() -> None:
    assert set(NEW) <= set(OPTIMIZER_NAMES)
    assert set(NEW).isdisjoint(SAMPLED_OPTIMIZERS)
    assert set(REFERENCE_SOURCE) == set(NEW)
    assert FamilyConfig(name="digits_mlp").optimizers == SAMPLED_OPTIMIZERS
    rng = np.random.default_rng(0)
    for suite in (load_suite("train"), load_suite("eval")):
        drawn = {suite.sample(rng)[1].optimizer for _ in range(300)}
        assert drawn == set(SAMPLED_OPTIMIZERS), suite.name


@pytest.mark.parametrize("name", NEW)
def test_a_suite_file_cannot_sample_them(tmp_path: Path, name: str) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(
        f'version = 1\nname = "x"\n\n[[family]]\nname = "digits_mlp"\noptimizers = ["{name}"]\n',
        encoding="utf-8",
    )
    with pytest.raises(SuiteError, match="optimizers"):
        load_suite(path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reference_lr_maps_to_the_base_optimizer_or_one(family: str) -> None:
    fam = FAMILIES[family]()
    assert fam.reference_lr("sgd_hd") == fam.reference_lr("sgd")
    assert fam.reference_lr("adam_hd") == fam.reference_lr("adam")
    assert fam.reference_lr("schedulefree_adamw") == fam.reference_lr("adamw")
    assert fam.reference_lr("prodigy") == fam.reference_lr("dadapt_adam") == 1.0


def test_reference_lr_follows_a_suite_override() -> None:
    fam = FAMILIES["wine_mlp"](FamilyConfig(name="wine_mlp", reference_lr={"adam": 0.5}))
    assert fam.reference_lr("adam_hd") == 0.5


def test_bench_plans_them_tuned_or_at_lr_one() -> None:
    names = ("sgd_hd", "adam_hd", "schedulefree_adamw", "prodigy", "dadapt_adam")
    plan = make_plan(BenchConfig.quick_preset(tasks=("wine_mlp",), methods=names))
    family = plan.families["wine_mlp"]
    for m in get_methods(names):
        assert m.schedule == "constant"
        runs = [plan.run("wine_mlp", m, f, 1000) for f in (0.1, 1.0, 10.0)]
        if m.name in ("prodigy", "dadapt_adam"):
            assert not m.tuned
            assert [r.base_lr for r in runs] == [1.0, 1.0, 1.0]
        else:
            assert m.tuned
            ref = family.reference_lr(m.optimizer)
            assert [r.base_lr for r in runs] == pytest.approx([0.1 * ref, ref, 10 * ref])
    assert {METHODS[n].optimizer for n in names} == set(NEW)


def test_the_name_table_and_the_factories_agree() -> None:
    """lrctl.optimizer_names (what tasks and suites import) names exactly what
    lrctl.optimizers builds."""
    from lrctl import optimizers
    from lrctl.optimizer_names import LR_ADAPTING_OPTIMIZERS, OPTIMIZER_NAMES, SAMPLED_OPTIMIZERS

    assert tuple(optimizers._SAMPLED) == SAMPLED_OPTIMIZERS
    assert tuple(optimizers._LR_ADAPTING) == LR_ADAPTING_OPTIMIZERS
    for name in OPTIMIZER_NAMES:
        p = torch.nn.Parameter(torch.zeros(2))
        assert isinstance(optimizers.make_optimizer(name, [p], 0.1), torch.optim.Optimizer)
