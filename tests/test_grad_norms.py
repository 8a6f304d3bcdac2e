"""The one gradient-norm definition (lrctl.grad_norms) and its fast paths, held equal."""

from __future__ import annotations

import math

import pytest
import torch

from lrctl.grad_norms import combine, combine_floats, grad_norm, param_norms, row_norms


def _grads(seed: int, shapes=((3, 4), (4,), (5, 2, 2), (1,))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-4, 3, len(shapes))
    return [torch.randn(*s, generator=g) * float(c) for s, c in zip(shapes, scales, strict=True)]


@pytest.mark.parametrize("seed", range(5))
def test_definition_is_clip_grad_norm(seed: int) -> None:
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in _grads(seed)]
    for p, g in zip(params, _grads(seed), strict=True):
        p.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm=math.inf)
    assert torch.equal(grad_norm(params), expected)


@pytest.mark.parametrize("seed", range(5))
def test_combine_floats_equals_combine(seed: int) -> None:
    norms = param_norms(_grads(seed))
    assert combine_floats(norms.tolist()) == pytest.approx(float(combine(norms)), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_row_norms_equal_per_run_definition(seed: int) -> None:
    runs = [_grads(seed * 10 + i) for i in range(3)]
    flat = torch.stack([torch.cat([g.reshape(-1) for g in run]) for run in runs])
    expected = torch.stack([combine(param_norms(run)) for run in runs])
    torch.testing.assert_close(row_norms(flat), expected, rtol=1e-6, atol=0.0)


def test_groups_and_the_global_norm() -> None:
    norms = param_norms(_grads(0))
    per_group = combine(norms[None], [1, 3])  # [n_groups, steps]
    assert per_group.shape == (2, 1)
    assert float(per_group[0, 0]) == pytest.approx(float(norms[0]))
    assert float(combine(per_group[:, 0])) == pytest.approx(float(combine(norms)), rel=1e-6)
    assert torch.equal(combine(norms[None], [4])[0, 0], combine(norms))


def test_no_gradient_reads_zero() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    assert float(grad_norm([p])) == 0.0
    out = torch.full((), 5.0)
    grad_norm([p], out=out)
    assert float(out) == 0.0
