"""CP grid contraction against pointwise evaluation of the same model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seppinn.separable import CPModel

from .conftest import eps_tol


@pytest.mark.parametrize("scale", ["sqrt_rank", "none"])
@pytest.mark.parametrize("dims", [2, 3, 4])
def test_grid_contraction_equals_pointwise(dims, scale, f64):
    torch.manual_seed(dims)
    ranges = [(-1.0 + d, 1.5 + 2 * d) for d in range(dims)]
    model = CPModel(ranges, rank=5, components=2, scale=scale,
                    net_kwargs=dict(width=8, depth=3, activation="sin", omega0=2.0))
    pts = [lo + (hi - lo) * torch.rand(3 + d) for d, (lo, hi) in enumerate(ranges)]
    grid = model(pts)  # (n_1, ..., n_D, C)
    assert grid.shape == (*[len(p) for p in pts], 2)
    idx = list(itertools.product(*[range(len(p)) for p in pts]))
    cols = [torch.stack([pts[d][i[d]] for i in idx]) for d in range(dims)]
    mats = [model.factor_jets(d, cols[d], 0)[0] for d in range(dims)]
    pointwise = model.contract_points(mats)  # (N, C)
    torch.testing.assert_close(grid.reshape(-1, 2), pointwise, rtol=eps_tol(f64), atol=eps_tol(f64))
    # the explicit sum over the rank, for one point, with the paper's 1/sqrt(R)
    i = idx[-1]
    vals = [model.factor_jets(d, pts[d][i[d] : i[d] + 1], 0)[0][0] for d in range(dims)]  # (R, C)
    s = 1 / math.sqrt(5) if scale == "sqrt_rank" else 1.0
    explicit = s * torch.prod(torch.stack(vals), dim=0).sum(0)
    torch.testing.assert_close(grid[i], explicit, rtol=eps_tol(f64), atol=eps_tol(f64))
