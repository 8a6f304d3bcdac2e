"""benchmarks/shape_check.py: fixed LR shapes over cosine per (family, optimizer) of a suite."""

from __future__ import annotations

import math

import pytest

from tests.helpers import load_benchmark, noisy_quadratic_suite


def _module():
    return load_benchmark("shape_check")


def test_shapes_are_what_their_names_say() -> None:
    shapes = _module().SHAPES
    assert [shapes["cosine"](f) for f in (0, 0.5, 1)] == pytest.approx([1, 0.5, 0])
    assert [shapes["linear"](f) for f in (0, 0.25, 1)] == pytest.approx([1, 0.75, 0])
    assert [shapes["hold_half"](f) for f in (0, 0.49, 0.75, 1)] == pytest.approx([1, 1, 0.5, 0])
    assert shapes["constant"](0.9) == 1 and shapes["cosine_x2"](0.5) == pytest.approx(1.0)
    assert shapes["cosine"](1.5) == pytest.approx(0.0) and math.isfinite(shapes["cosine"](-1))


def test_one_step_runs_tell_the_shapes_apart_only_by_their_first_lr(tmp_path, capsys) -> None:
    """With a single step every shape but cosine x2 starts at the base LR, so their final
    losses equal cosine's exactly; cosine x2's first step is twice as large."""
    module = _module()
    suite = noisy_quadratic_suite(tmp_path, 100)
    rows = module.shape_ratios(str(suite), ("momentum", "adam"), seeds=1, steps=1)
    assert [(r["family"], r["optimizer"]) for r in rows] == [
        ("noisy_quadratic", "momentum"),
        ("noisy_quadratic", "adam"),
    ]
    for r in rows:
        assert (r["linear"], r["hold_half"], r["constant"]) == (1.0, 1.0, 1.0)
        assert r["cosine_x2"] != 1.0 and math.isfinite(r["cosine_x2"])
    assert module.main([str(suite), "--seeds", "1", "--steps", "1", "--optimizers", "sgd"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| family | optimizer | linear | hold_half | constant | cosine_x2 |"
    assert table[2].startswith("| noisy_quadratic | sgd | 1.000 | 1.000 | 1.000 |")


def test_an_unknown_suite_is_one_line_and_rc_2(capsys) -> None:
    assert _module().main(["no_such_suite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shape_check: ") and len(err.strip().splitlines()) == 1
