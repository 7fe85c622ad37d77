"""Causal training (train.causal): slice losses and weights against a brute-force computation on the
grid (forward-mode derivatives of the model), the grid-free path equal to the grid path, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jvp

import seppinn
from seppinn import SolverConfigError
from seppinn.compile.plan import make_plan
from seppinn.train.loop import Trainer

from .conftest import PLAIN

HEAT = """
[problem]
name = "heat"
[axes]
t = { range = [0.0, 1.0], time = true }
x = [0.0, 1.0]
[fields]
u = {}
[definitions]
exact = "sin(pi*x)*exp(-0.1*pi**2*t)"
[[equations]]
residual = "diff(u, t) - 0.1*diff(u, x, 2)"
[[conditions]]
name = "walls"
on = ["x = min", "x = max"]
value = 0
[[conditions]]
name = "initial"
on = "t = min"
value = "exact"
[reference]
u = "exact"
"""
OV = {**PLAIN, "train.dtype": "float64", "train.points": {"t": 11, "x": 9}, "model.rank": 5, "model.width": 12,
      "model.depth": 3, "model.activation": "tanh", "train.causal": {"chunks": 4, "tol": 1e4}, "train.test_points": 6}


def trainer(tmp_path, mode=None, **extra):
    path = tmp_path / "heat.toml"
    path.write_text(HEAT)
    prep = seppinn.prepare(path, overrides={**OV, **extra})
    plan = make_plan(prep.compiled, prep.config, mode=mode)
    return Trainer(prep.compiled, prep.config, plan=plan, device=torch.device("cpu"), progress=False)


def brute_force(tr, chunks, tol):
    """(true mean r^2, causal loss mean_k w_k L_k with w fixed, min weight) from u_t and u_xx on the
    grid by forward-mode derivatives along each axis (each grid value depends on its own t_i, x_j)."""
    t, x = tr.points[("train", 0)], tr.points[("train", 1)]
    u = lambda t, x: tr.model["u"]([t, x])[..., 0]  # noqa: E731
    ones_t, ones_x = torch.ones_like(t), torch.ones_like(x)
    u_t = jvp(lambda s: u(s, x), (t,), (ones_t,))[1]
    u_xx = jvp(lambda y: jvp(lambda z: u(t, z), (y,), (ones_x,))[1], (x,), (ones_x,))[1]
    r2 = (u_t - 0.1 * u_xx) ** 2
    sl = np.minimum(np.floor(t.detach().numpy() * chunks), chunks - 1).astype(int)
    L = torch.stack([r2[torch.as_tensor(sl == k)].sum() / max(1, r2[torch.as_tensor(sl == k)].numel())
                     for k in range(chunks)])  # an empty slice (random points): 0
    w = torch.exp(-tol * (torch.cumsum(L, 0) - L)).detach()
    return r2.mean(), (w * L).mean(), w.min()


@pytest.mark.parametrize("sampling", ["grid", "random", "gauss"])
def test_causal_loss_equals_brute_force_and_grid_free_equals_grid(tmp_path, sampling):
    grid = trainer(tmp_path, mode="grid", **{"train.sampling": sampling})
    free = trainer(tmp_path, **{"train.grid_free": True, "train.sampling": sampling})
    ti = [t.name for t in grid.c.terms].index("pde")
    assert grid.plan.parts[ti][0].mode == "grid" and free.plan.parts[ti][0].mode == "grid_free"
    assert grid.losses.diagnostic_names == ["causal_min/pde"]
    results = []
    for tr in (grid, free):
        losses, diag = tr.losses.evaluate()
        params = list(tr.model.parameters())
        g = torch.autograd.grad(losses["pde"], params)
        results.append((losses["pde"].detach(), diag["causal_min/pde"], torch.cat([x.flatten() for x in g])))
    (vg, wg, gg), (vf, wf, gf) = results
    torch.testing.assert_close(vf, vg, rtol=1e-10, atol=0)
    torch.testing.assert_close(wf, wg, rtol=1e-10, atol=0)
    torch.testing.assert_close(gf, gg, rtol=1e-8, atol=1e-12)
    assert float(wg) < 0.9  # the weights do act
    if sampling != "gauss":  # Gauss: quadrature-weighted slice means; the two paths are compared above
        mean, causal, w_min = brute_force(grid, 4, 1e4)
        torch.testing.assert_close(vg, mean.detach(), rtol=1e-10, atol=0)
        torch.testing.assert_close(wg, w_min, rtol=1e-10, atol=0)
        want = torch.autograd.grad(causal, list(grid.model.parameters()), retain_graph=True)
        torch.testing.assert_close(gg, torch.cat([x.flatten() for x in want]), rtol=1e-8, atol=1e-12)
        plain = torch.cat([x.flatten() for x in torch.autograd.grad(mean, list(grid.model.parameters()))])
        assert not torch.allclose(gg, plain)  # the causal gradient is not the plain one
        for tr in (grid, free):  # the L-BFGS phase: the gradient of the value its line search measures
            tr.losses.causal_weights = False
            loss = tr.losses.evaluate()[0]["pde"]
            torch.testing.assert_close(loss.detach(), vg, rtol=1e-10, atol=0)
            g = torch.autograd.grad(loss, list(tr.model.parameters()))
            torch.testing.assert_close(torch.cat([x.flatten() for x in g]), plain, rtol=1e-8, atol=1e-12)


def test_the_lbfgs_phase_drops_the_causal_weights(tmp_path):
    tr = trainer(tmp_path, **{"train.iterations": 3, "train.lbfgs_iterations": 2})
    assert tr.losses.causal_weights
    tr.train()
    assert not tr.losses.causal_weights


def test_causal_run_logs_the_minimum_weight_and_refusals(tmp_path):
    path = tmp_path / "heat.toml"
    path.write_text(HEAT)
    r = seppinn.solve(path, overrides={**OV, "train.iterations": 20, "train.eval_every": 10,
                                       "train.causal": {"chunks": 4, "tol": 10.0}}, progress=False)
    w = r.history["causal_min/pde"]
    assert w.shape == (3,) and ((w > 0) & (w <= 1)).all()
    steady = tmp_path / "steady.toml"
    steady.write_text(HEAT.replace(", time = true", ""))
    with pytest.raises(SolverConfigError, match="train.causal: causal training weights time slices, but the "
                                                "problem has no time axis"):
        seppinn.prepare(steady, overrides={"train.causal": {"chunks": 4, "tol": 1.0}})


@pytest.mark.parametrize("grid_free", [False, True])
def test_compiled_causal_loss_equals_eager(tmp_path, grid_free):
    """Through torch.compile (the training step's graph) the causal loss, its minimum weight and its
    gradient are those of the eager evaluation, on the grid and the grid-free path."""
    tr = trainer(tmp_path, **{"train.compile": True, "train.grid_free": grid_free})
    assert tr._compiled is not None
    assert tr.plan.parts[[t.name for t in tr.c.terms].index("pde")][0].mode == ("grid_free" if grid_free else "fused")
    params = list(tr.model.parameters())
    outs = []
    for fn in (tr._loss_stack, tr._compiled):
        out = fn()
        g = torch.autograd.grad(out[0], params)
        outs.append((out.detach(), torch.cat([x.flatten() for x in g])))
    (eager, g_eager), (compiled, g_compiled) = outs
    assert eager.shape == (len(tr.c.terms) + 1,)  # the terms, then causal_min/pde
    assert float(eager[-1]) < 0.9
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-8, atol=1e-12)
