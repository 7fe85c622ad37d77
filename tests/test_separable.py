"""CP grid contraction against pointwise evaluation of the same model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seppinn.model.separable import CPModel

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


NETS = dict(width=8, depth=3, activation="tanh")


def models(dims: int):
    ranges = [(-1.0 + d, 1.5 + 2 * d) for d in range(dims)]
    from seppinn.model.separable import TTModel, TuckerModel

    return ranges, {
        "cp": CPModel(ranges, 4, 2, "sqrt_rank", NETS),
        "tucker": TuckerModel(ranges, [2, 3, 4, 2][:dims], 2, NETS),
        "tt": TTModel(ranges, [3, 2, 4][: dims - 1], 2, NETS),
    }


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_every_kind_grid_equals_pointwise_and_its_formula(kind, dims, f64):
    torch.manual_seed(7)
    ranges, ms = models(dims)
    model = ms[kind]
    pts = [lo + (hi - lo) * torch.rand(3 + d) for d, (lo, hi) in enumerate(ranges)]
    grid = model(pts)
    idx = list(itertools.product(*[range(len(p)) for p in pts]))
    cols = [torch.stack([pts[d][i[d]] for i in idx]) for d in range(dims)]
    pointwise = model.contract_points([model.factor_jets(d, cols[d], 0)[0] for d in range(dims)])
    torch.testing.assert_close(grid.reshape(-1, 2), pointwise, rtol=eps_tol(f64), atol=eps_tol(f64))
    i = idx[-1]
    F = [model.factor_jets(d, pts[d][i[d] : i[d] + 1], 0)[0][0] for d in range(dims)]
    if kind == "tucker":  # sum_{a,b,..} G[a, b, .., z] F1[a] F2[b] ..
        explicit = model.core
        for f in F:
            explicit = torch.tensordot(f, explicit, dims=([0], [0]))
    elif kind == "tt":  # G1[0, :] G2 ... GD[:, z] with the bond scales
        explicit = F[0][0]
        for d, f in enumerate(F[1:]):
            explicit = explicit @ f * model.bond_scale[d]
    else:
        explicit = torch.prod(torch.stack(F), 0).sum(0) / math.sqrt(4)
    torch.testing.assert_close(grid[i], explicit, rtol=eps_tol(f64), atol=eps_tol(f64))


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_every_kind_derivatives_are_contractions_of_jets(kind, f64):
    """d^3 u / dx^2 dy on the grid from factor jets equals autograd of pointwise evaluation."""
    torch.manual_seed(3)
    ranges, ms = models(3)
    model = ms[kind]
    pts = [lo + (hi - lo) * torch.rand(3) for lo, hi in ranges]
    jets = model.all_jets(pts, 2)
    grid = model.contract([jets[0][2], jets[1][1], jets[2][0]])[..., 1]
    for i, j, k in [(0, 1, 2), (2, 0, 1)]:
        x = pts[0][i : i + 1].clone().requires_grad_(True)
        y = pts[1][j : j + 1].clone().requires_grad_(True)
        u = model.contract_points([model.factor_jets(0, x, 0)[0], model.factor_jets(1, y, 0)[0],
                                   model.factor_jets(2, pts[2][k : k + 1], 0)[0]])[0, 1]
        ux = torch.autograd.grad(u, x, create_graph=True)[0]
        uxx = torch.autograd.grad(ux.sum(), x, create_graph=True)[0]
        uxxy = torch.autograd.grad(uxx.sum(), y)[0]
        assert grid[i, j, k].item() == pytest.approx(uxxy.item(), rel=1e-10, abs=1e-12)


def test_weight_factorisation_reparametrises_the_same_function(f64):
    """Random weight factorisation (model.weight_factorization): W = diag(exp(s)) V with V = W / exp(s)
    leaves the initial function and its jets unchanged; s ~ N(mean, std^2) trains with the rest."""
    ranges = [(0.0, 1.0), (-2.0, 3.0)]
    kw = dict(width=16, depth=4, activation="tanh", body="modified_mlp")
    torch.manual_seed(3)
    plain = CPModel(ranges, rank=4, components=1, scale="none", net_kwargs=kw)
    torch.manual_seed(3)
    rwf = CPModel(ranges, rank=4, components=1, scale="none", net_kwargs=dict(kw, weight_factorization={"mean": 1.0, "std": 0.1}))
    x = torch.linspace(-2.0, 3.0, 9)
    torch.testing.assert_close(rwf.factor_jets(1, x, 3), plain.factor_jets(1, x, 3), rtol=1e-12, atol=1e-12)
    scales = [m.log_scale for m in rwf.bank.layers()]
    assert all(s is not None for s in scales) and all(m.log_scale is None for m in plain.bank.layers())
    s = torch.cat([v.detach().flatten() for v in scales if v is not None])
    assert abs(float(s.mean()) - 1.0) < 0.02 and abs(float(s.std()) - 0.1) < 0.02
    rwf([torch.rand(5), x]).square().sum().backward()
    assert all(v is not None and v.grad is not None and float(v.grad.abs().max()) > 0 for v in scales)
