"""benchmarks/feature_trace.py: what the shipped controller observes, per third of a run."""

from __future__ import annotations

import numpy as np

from lrctl.controller_file import controller_weights
from lrctl.features import feature_names
from tests.helpers import load_benchmark, noisy_quadratic_suite


def test_trace_has_a_row_per_third_with_the_observed_features(tmp_path) -> None:
    """A 90-step run has 9 decisions, 3 per third: progress rises through the thirds, the
    actions are the policy's (in [-1, 1]) and every feature of the file is a column."""
    module = load_benchmark("feature_trace")
    suite = noisy_quadratic_suite(tmp_path, 90)
    weights = controller_weights(None)
    table = module.trace(weights, str(suite), None, ["momentum"], seeds=1)
    assert list(table["third"]) == [1, 2, 3]
    assert set(feature_names(weights.feature_version)) < set(table.columns)
    assert list(table["progress"]) == sorted(table["progress"]) and table["progress"].iloc[0] > 0
    assert table["action"].between(-1, 1).all() and np.isfinite(table["loss_noise"]).all()


def test_recording_weights_act_as_the_weights_and_keep_what_they_saw() -> None:
    module = load_benchmark("feature_trace")
    weights = controller_weights(None)
    recorder = module.RecordingWeights(weights)
    obs = np.random.default_rng(0).normal(size=(1, weights.obs_mean.shape[0])).astype(np.float32)
    np.testing.assert_array_equal(recorder.act(obs), weights.act(obs))
    assert recorder.feature_version == weights.feature_version
    assert len(recorder.observations) == 1 and recorder.actions == [float(weights.act(obs)[0, 0])]


def test_an_unknown_family_is_one_line_and_rc_2(capsys) -> None:
    module = load_benchmark("feature_trace")
    assert module.main(["val", "--families", "no_such_family"]) == 2
    err = capsys.readouterr().err
    assert "no_such_family" in err and len(err.strip().splitlines()) == 1
