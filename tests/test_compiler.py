"""Compiled residuals: exact solutions plugged in vanish; nonlinear terms match hand-written code."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

import seppinn
from seppinn.compile.compiler import compile_residual
from seppinn.problem.expressions import FUNCTIONS
from seppinn.problem.resources import shipped_dir

from .conftest import eps_tol


def grid_coords(points):
    D = len(points)
    return [p.reshape([-1 if i == d else 1 for i in range(D)] + [1]) for d, p in enumerate(points)]


def sine_factor(c: float, x: torch.Tensor, a: int) -> torch.Tensor:
    """a-th derivative of sin(c*pi*x) at x, as a rank-1 factor matrix (n, 1, 1)."""
    w = c * math.pi
    return (w**a * torch.sin(w * x + a * math.pi / 2))[:, None, None]


def test_helmholtz_residual_of_exact_rank1_solution_vanishes(f64):
    prep = seppinn.prepare(shipped_dir("problems") / "helmholtz3d.toml")
    freqs = [4.0, 4.0, 3.0]  # exact u = sin(4 pi x) sin(4 pi y) sin(3 pi z), a rank-1 CP tensor
    torch.manual_seed(0)
    pts = [torch.rand(11) * 2 - 1, torch.rand(9) * 2 - 1, torch.rand(7) * 2 - 1]
    for term in prep.compiled.terms:
        for part in term.parts:
            axis_pts = [torch.tensor({"min": [-1.0], "max": [1.0], "both": [-1.0, 1.0]}[key[2]]) if key[0] == "face" else pts[d]
                        for d, key in enumerate(part.grid)]
            consts = part.residual.prepare(grid_coords(axis_pts), torch.float64)
            values = [torch.einsum("arz,brz,crz->abcz", *[sine_factor(c, x, a) for c, x, a in zip(freqs, axis_pts, alpha)])
                      for _, alpha in part.residual.derivs]
            r = part.residual(values, consts)
            scale = max(v.abs().max().item() for v in values) * (48 * math.pi**2 if term.kind == "equation" else 1)
            assert r.abs().max().item() <= eps_tol(f64, 100) * max(scale, 1.0), (term.name, part.label)
    pde = prep.compiled.terms[0].parts[0]
    assert sorted(a for _, a in pde.residual.derivs) == [(0, 0, 0), (0, 0, 2), (0, 2, 0), (2, 0, 0)]


def test_nonlinear_residual_with_two_fields_matches_hand_written(f64):
    p = seppinn.Problem("nl", {"x": (0.0, 2.0), "y": (-1.0, 1.0)}, ["u", "v"], {"a": 0.3})
    p.add_equation("u*diff(u, x, 2) + grad2(u) + u**2 - a*v*exp(x) + diff(v, x, y) - sin(x*y)")
    p.add_equation("v - u", name="link")
    res = compile_residual(p, p.equations[0].residual, "equations[0]")
    names = {(f, a) for f, a in res.derivs}
    assert names == {("u", (2, 0)), ("u", (1, 0)), ("u", (0, 1)), ("u", (0, 0)), ("v", (0, 0)), ("v", (1, 1))}
    torch.manual_seed(0)
    x, y = torch.rand(5) * 2, torch.rand(4) * 2 - 1
    X, Y = grid_coords([x, y])
    vals = {k: torch.randn(5, 4, 1) for k in res.derivs}
    got = res([vals[k] for k in res.derivs], res.prepare([X, Y], torch.float64))
    u, v = vals[("u", (0, 0))], vals[("v", (0, 0))]
    want = (u * vals[("u", (2, 0))] + vals[("u", (1, 0))] ** 2 + vals[("u", (0, 1))] ** 2 + u**2
            - 0.3 * v * torch.exp(X) + vals[("v", (1, 1))] - torch.sin(X * Y))
    torch.testing.assert_close(got, want, rtol=eps_tol(f64), atol=eps_tol(f64))


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_registered_function_lowers_with_its_derivatives(name, f64):
    p = seppinn.Problem("f", {"x": (0.2, 0.9)}, ["u"])
    order = 1 if name == "abs" else 2  # |.|'' is a Dirac delta: refused (see below)
    expr = p.expr(f"{name}(x*u) + diff({name}(u + x), x, {order})")
    res = compile_residual(p, expr, "k")
    xs = torch.linspace(0.2, 0.9, 6)
    vals = {k: 0.3 + 0.1 * torch.rand(6, 1) for k in res.derivs}
    got = res([vals[k] for k in res.derivs], res.prepare(grid_coords([xs]), torch.float64))
    # the same expression evaluated by sympy at each point
    xsym = p.symbols("x")
    u = p.field("u")
    subs = {sp.Derivative(u, (xsym, 2)): sp.Symbol("uxx"), sp.Derivative(u, xsym): sp.Symbol("ux"), u: sp.Symbol("u0")}
    f = sp.lambdify([xsym, sp.Symbol("u0"), sp.Symbol("ux"), sp.Symbol("uxx")], expr.subs(subs), "math")
    for i in range(6):
        arg = {a: vals[(("u", (a,)))][i, 0].item() for a in (0, 1, 2) if ("u", (a,)) in vals}
        want = f(xs[i].item(), arg.get(0, 0.0), arg.get(1, 0.0), arg.get(2, 0.0))
        assert got[i, 0].item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_non_differentiable_derivative_is_refused():
    p = seppinn.Problem("f", {"x": (0.0, 1.0)}, ["u"])
    with pytest.raises(seppinn.ProblemError, match=r"k: cannot evaluate 'DiracDelta\(x \+ u\(x\)\)'"):
        compile_residual(p, p.expr("diff(abs(u + x), x, 2)"), "k")


def test_dn_is_the_outward_normal_derivative_on_each_face(f64):
    """dn(u) on both faces of x (one part) and of y equals -u_x / +u_x and -u_y / +u_y written per
    face: with face_reduction = "sum" the term's loss is the sum of the per-face terms'."""
    import torch

    import seppinn
    from seppinn.train.loop import Trainer

    def problem(conditions):
        p = seppinn.Problem("n", {"x": (0.0, 2.0), "y": (-1.0, 1.0)}, ["u"])
        p.add_equation("lap(u) - 1")
        for name, on, expr in conditions:
            p.add_condition(on=on, expr=expr, value="x*y + 1", name=name)
        return p

    ov = {"train.dtype": "float64", "train.points": 6, "model.rank": 3, "model.width": 8, "model.activation": "tanh",
          "train.face_reduction": "sum"}
    losses = []
    for conds in ([("flux", ["x = min", "x = max", "y = min", "y = max"], "dn(u) + u")],
                  [("a", "x = min", "-diff(u, x) + u"), ("b", "x = max", "diff(u, x) + u"),
                   ("c", "y = min", "-diff(u, y) + u"), ("d", "y = max", "diff(u, y) + u")]):
        prep = seppinn.prepare(problem(conds), overrides=ov)
        tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
        losses.append({k: float(v) for k, v in tr.losses().items()})
    assert losses[0]["flux"] == pytest.approx(sum(losses[1][k] for k in "abcd"), rel=1e-12)
    assert losses[0]["flux"] > 1e-3
    p = seppinn.Problem("n", {"x": (0.0, 2.0)}, ["u"])
    p.add_equation("dn(u) - 1")
    with pytest.raises(seppinn.ProblemError, match=r"equations\[0\].residual: dn\(\.\.\.\) is the derivative along a "
                                                   r"face's outward normal: use it in a condition"):
        seppinn.prepare(p)
