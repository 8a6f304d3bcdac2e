"""Suite files: the shipped ones load, malformed ones fail with a message that says the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrctl.optimizers import SAMPLED_OPTIMIZERS
from lrctl.tasks import FAMILIES, SuiteError, load_suite
from lrctl.tasks.suite import SUITE_NAMES, SUITES_DIR

V1_FAMILIES = ("digits_mlp", "breast_cancer_logreg", "diabetes_mlp", "char_mlp", "noisy_quadratic")


def test_shipped_suites_load() -> None:
    train = load_suite("train")
    evals = load_suite("eval")
    val = load_suite("val")
    v1 = load_suite("train_v1")
    assert [s.name for s in (train, val, evals, v1)] == list(SUITE_NAMES)
    assert (train.revision, val.revision, evals.revision, v1.revision) == (2, 1, 2, 1)
    assert train.path == SUITES_DIR / "train.toml"
    assert v1.family_names == V1_FAMILIES
    assert len(train.family_names) >= 10 and set(V1_FAMILIES) <= set(train.family_names)
    # Revision 2 of eval keeps revision 1's families and their entries, and adds three.
    assert evals.family_names == (
        "digits_cnn", "wine_mlp", "char_gru", "lm_transformer", "spiral_resmlp",
        "teacher_regression",
    )  # fmt: skip
    assert val.family_names == (
        "hastie_dropout_mlp", "char_lstm", "friedman2_bn_mlp", "postln_transformer",
    )  # fmt: skip
    # The values the files set reach the family configs.
    digits = v1.family("digits_mlp")
    assert digits.config.weight == 2.0
    assert digits.config.steps == (200, 800)
    assert digits.config.batch_sizes == (32, 64, 128)
    assert train.family("digits_mlp").config.steps == (100, 2000)
    assert evals.family("wine_mlp").config.batch_sizes == (16, 32)
    assert evals.family("digits_cnn").config.steps == (300, 600)
    assert evals.family("char_gru").config.steps == (200, 500)
    assert evals.family("lm_transformer").config.steps == (2000, 2000)
    # Breadth: every train family samples every optimizer.
    assert all(f.config.optimizers == SAMPLED_OPTIMIZERS for f in train.families)


def test_train_val_and_eval_share_no_family() -> None:
    train, val, evals = (set(load_suite(n).family_names) for n in ("train", "val", "eval"))
    assert train.isdisjoint(val) and train.isdisjoint(evals) and val.isdisjoint(evals)
    assert train | val | evals == set(FAMILIES)  # every family has one role
    assert set(load_suite("train_v1").family_names) <= train


def test_train_v2_spans_horizons_lrs_and_regimes() -> None:
    """Horizons log-uniform over 100 to 5,000 steps, base LRs over three decades, and the
    large-data families among the ones with the longest horizons."""
    train = load_suite("train")
    assert min(f.config.steps[0] for f in train.families) == 100
    assert max(f.config.steps[1] for f in train.families) == 5000
    for f in train.families:
        lo, hi = f.config.lr_range
        assert hi / lo == pytest.approx(1000.0, rel=0.01), f.name
    long = {f.name for f in train.families if f.config.steps[1] >= 5000}
    assert {"teacher_mlp", "friedman_mlp", "char_transformer"} <= long
    # Log-uniform horizons: the geometric middle of a range is its median draw.
    family = train.family("teacher_mlp")
    rng = np.random.default_rng(3)
    steps = np.array([family.sample(rng).steps for _ in range(2000)])
    assert np.median(steps) == pytest.approx(1000, rel=0.1)
    assert steps.min() >= 200 and steps.max() <= 5000


def test_suite_by_path_equals_suite_by_name() -> None:
    by_name = load_suite("eval")
    by_path = load_suite(SUITES_DIR / "eval.toml")
    assert by_path.family_names == by_name.family_names


def test_suite_sampling_is_seeded_and_weighted() -> None:
    suite = load_suite("train_v1")
    draws = [suite.sample(np.random.default_rng(7))[1] for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(0)
    names = [suite.sample(rng)[0].name for _ in range(700)]
    share = names.count("digits_mlp") / len(names)
    assert share == pytest.approx(2 / 7, abs=0.05)  # weight 2 of a total 7
    with pytest.raises(KeyError, match="it has: digits_mlp"):
        suite.family("wine_mlp")


GOOD_FAMILY = 'name = "digits_mlp"\n'


def _suite_text(family_body: str = GOOD_FAMILY, header: str = "version = 1\n") -> str:
    return f"{header}name = 'bad'\n\n[[family]]\n{family_body}"


MALFORMED = {
    # case: (file text, [substrings the message must hold: the field, then what is allowed])
    "unknown family": (
        _suite_text('name = "mnist_mlp"\n'),
        ["family[0].name", "unknown family 'mnist_mlp'", "choose one of: digits_mlp"],
    ),
    "unknown field": (
        _suite_text(GOOD_FAMILY + "learning_rate = 0.1\n"),
        ["family[0].learning_rate", "unknown field", "allowed fields:", "lr_range"],
    ),
    "unknown top-level field": (
        _suite_text(header="version = 1\nseed = 3\n"),
        ["seed", "unknown top-level field", "allowed: version, revision, name, description"],
    ),
    "revision not a positive integer": (
        _suite_text(header="version = 1\nrevision = 0\n"),
        ["revision", "expected a positive integer, got 0"],
    ),
    "wrong version": (
        _suite_text(header="version = 2\n"),
        ["version", "expected version = 1, got 2"],
    ),
    "missing version": (
        _suite_text(header=""),
        ["version", "expected version = 1, got None"],
    ),
    "lr_range wrong length": (
        _suite_text(GOOD_FAMILY + "lr_range = [0.1, 1.0, 10.0]\n"),
        ["family[0] (digits_mlp).lr_range", "exactly 2 numbers [low, high]"],
    ),
    "lr_range non-positive": (
        _suite_text(GOOD_FAMILY + "lr_range = [0.0, 10.0]\n"),
        ["family[0] (digits_mlp).lr_range", "expected positive numbers, got 0.0"],
    ),
    "lr_range reversed": (
        _suite_text(GOOD_FAMILY + "lr_range = [10.0, 0.1]\n"),
        ["family[0] (digits_mlp).lr_range", "low must not exceed high"],
    ),
    "optimizer not allowed": (
        _suite_text(GOOD_FAMILY + 'optimizers = ["sgd", "lion"]\n'),
        ["family[0] (digits_mlp).optimizers", "drawn from ['sgd', 'momentum'", "'adamw']"],
    ),
    "steps not integers": (
        _suite_text(GOOD_FAMILY + "steps = [100.5, 200]\n"),
        ["family[0] (digits_mlp).steps", "expected integers [low, high]"],
    ),
    "weight non-positive": (
        _suite_text(GOOD_FAMILY + "weight = -1.0\n"),
        ["family[0] (digits_mlp).weight", "expected positive numbers, got -1.0"],
    ),
    "reference_lr unknown optimizer": (
        _suite_text(GOOD_FAMILY + "reference_lr = { lion = 1e-4 }\n"),
        ["family[0] (digits_mlp).reference_lr", "keyed by optimizer names ['sgd'"],
    ),
    "depths on a family without depth": (
        _suite_text('name = "digits_cnn"\ndepths = [1, 2]\n'),
        ["family[0] (digits_cnn).depths", "has no depth to vary", "its size fields: widths"],
    ),
    "no family": (
        "version = 1\nname = 'empty'\n",
        ["family", "expected at least one [[family]] table"],
    ),
    "duplicate family": (
        _suite_text(GOOD_FAMILY + "\n[[family]]\n" + GOOD_FAMILY),
        ["family", "each family may appear once", "['digits_mlp', 'digits_mlp']"],
    ),
    "not TOML at all": (
        "[[family]\nname = digits\n",
        ["not valid TOML"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_suite_names_file_field_and_fix(tmp_path: Path, case: str) -> None:
    text, expected = MALFORMED[case]
    path = tmp_path / "suite.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_suite_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: suite file not found")
    assert "one of 'train', 'val', 'eval', 'train_v1'" in message


def test_unknown_suite_name_looks_in_envs() -> None:
    with pytest.raises(SuiteError, match=r"envs/holdout\.toml: suite file not found"):
        load_suite("holdout")


def test_suite_error_is_a_value_error() -> None:
    assert issubclass(SuiteError, ValueError)
