"""Residuals as CP tensors (issue 8): the separability analysis, the fused contraction and the
grid-free Gram-product losses against the grid path, with and without SepPGD, and Gauss points."""

from __future__ import annotations

import dataclasses

import itertools

import numpy as np
import pytest
import sympy as sp
import torch

import seppinn
from seppinn.compile.separability import combine, linear_part, separate
from seppinn.compile.plan import make_plan, plan_passes
from seppinn.train.loop import Trainer

from .conftest import ROOT, eps_tol

x, y, z = sp.symbols("x y z")
AXES = [x, y, z]


@pytest.mark.parametrize("expr, products", [
    ("sin(x)*cos(y)", 1), ("exp(x + y)*z", 1), ("x*y + sin(z)", 2), ("(x + y)**2", 3), ("7", 1),
    ("exp(-10*((x - 0.3)**2 + (y - 0.2)**2))", 1), ("sin(x + y)", None), ("exp(x*y)", None),
    ("sin(x)*sin(x + z) + y", None),
])
def test_separate(expr, products):
    e = sp.sympify(expr)
    out = separate(e, AXES)
    if products is None:
        assert out is None
        return
    assert out is not None and len(out) == products
    for _, per in out:  # each factor depends on its own axis only
        assert all(g.free_symbols <= {AXES[d]} for d, g in enumerate(per))
    rebuilt = sum(c * sp.Mul(*per) for c, per in out)
    pts = {x: 0.31, y: -0.7, z: 1.3}
    assert float(rebuilt.subs(pts)) == pytest.approx(float(e.subs(pts)), rel=1e-12)


def _linear(expr: str):
    u, ux, uxx, uyy, uzz = sp.symbols("u ux uxx uyy uzz")
    ph = [u, ux, uxx, uyy, uzz]
    alphas = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 2, 0), (0, 0, 2)]
    return linear_part(sp.sympify(expr, locals={s.name: s for s in ph}), ph, ["u"] * 5, alphas, AXES)


def test_linear_part_merges_blocks_and_keeps_the_rest():
    helm = _linear("uxx + uyy + uzz + 2*u - sin(x)*sin(y)*sin(z)")
    assert helm.exact and len(helm.blocks) == 4  # [F'' + 2F, F, F], [F, F'', F], [F, F, F''], source
    merged = [b for b in helm.blocks if b.field == "u" and any(len(s) == 2 for s in b.axes)]
    assert len(merged) == 1 and sorted(s.order for s in merged[0].axes[0]) == [0, 2]
    kg = _linear("uxx - uyy + u**3 - x*y")  # the source joins the rest, which is on the grid anyway
    assert not kg.exact and len(kg.blocks) == 2 and all(b.field == "u" for b in kg.blocks)
    assert sp.simplify(kg.remainder - (sp.Symbol("u") ** 3 - x * y)) == 0
    assert _linear("u*ux + uxx**2") is None  # nothing affine
    coef = _linear("sin(x*y)*uxx + uyy")  # a non-separable coefficient stays on the grid
    assert len(coef.blocks) == 1 and coef.remainder != 0


@pytest.mark.parametrize("expr, summed", [
    ("-0.05*(ux**2 + u*uxx + u*uyy)", {"uxx", "uyy"}),  # diffusion's u*lap(u)
    ("u*sin(uxx + 2*uyy)", {"uxx", "uyy"}),
    ("(uxx + uyy + uzz)**2 + u*(uxx + uyy + uzz)", {"uxx", "uyy", "uzz"}),
    ("u*uxx + uyy", None),  # u_xx and u_yy enter differently
    ("u*(x*uxx + uyy)", None),  # a coordinate-dependent ratio
    ("u*(uxx + v)", None),  # another field
])
def test_combine_finds_derivatives_used_only_as_one_sum(expr, summed):
    names = ["u", "ux", "uxx", "uyy", "uzz", "v"]
    ph = sp.symbols(names)
    alphas = [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 2, 0), (0, 0, 2), (0, 0, 0)]
    body = sp.expand(sp.sympify(expr, locals=dict(zip(names, ph))))
    out, sums = combine(body, ph, ["u"] * 5 + ["v"], alphas)
    if summed is None:
        assert sums == [] and out == body
        return
    ((q, lin),) = sums
    # the blocks as a linear form in the placeholders: per block, the product over axes of its summands
    form = sp.Add(*[sp.Mul(*[s_.coef for s_ in choice]) * ph[alphas.index(tuple(s_.order for s_ in choice))]
                    for b in lin.blocks for choice in itertools.product(*b.axes)])
    assert {str(p_) for p_ in form.free_symbols} == summed
    assert not out.has(*[ph[names.index(n)] for n in summed])
    assert sp.expand(out.subs(q, form) - body) == 0  # the same residual


def _trainer(problem, **ov) -> Trainer:
    base = {"train.dtype": "float64", "model.rank": 5, "model.width": 12, "model.depth": 3,
            "train.sampling": "random", "train.points": 7}
    prep = seppinn.prepare(problem, "spinn", {**base, **ov})
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    if tr.preconditioners.active:
        tr.preconditioners.rebuild()
    return tr


def _grid_twin(tr: Trainer, dtype: str | None = None) -> Trainer:
    """A trainer with the same weights, points and SepPGD factors as ``tr`` that evaluates every
    part on the grid path (``make_plan(mode="grid")``), in ``dtype`` if given."""
    cfg = tr.cfg if dtype is None else dataclasses.replace(tr.cfg, train=dataclasses.replace(tr.cfg.train, dtype=dtype))
    twin = Trainer(tr.c, cfg, plan=make_plan(tr.c, cfg, mode="grid"), device=torch.device("cpu"), progress=False)
    twin.model.load_state_dict(tr.model.state_dict())
    twin.points.points = {k: v.to(twin.dtype) for k, v in tr.points.points.items()}
    twin.losses.prepare()
    twin.preconditioners.load_state(tr.preconditioners.state(), tr.preconditioners.active)
    return twin


def _modes(tr: Trainer) -> set[str]:
    return {pp.mode for parts in tr.plan.parts for pp in parts}


def _loss_and_grad(tr: Trainer, mode: str | None = None):
    """Losses and gradient as the trainer chose (None) or with every part on the grid path ("grid")."""
    if mode == "grid":
        tr = _grid_twin(tr)
    losses = tr.losses()
    total = torch.stack(list(losses.values())).sum()
    grads = torch.autograd.grad(total, list(tr.model.parameters()))
    return torch.stack(list(losses.values())), torch.cat([g.flatten() for g in grads])


def _assert_same(a, b):
    """(losses, gradient) pairs equal to float64 rounding (relative, the gradient against its largest entry)."""
    tol = eps_tol(torch.float64, 1e4)
    torch.testing.assert_close(a[0], b[0], rtol=tol, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=tol, atol=tol * b[1].abs().max().item())


@pytest.mark.parametrize("problem", ["helmholtz3d", "klein_gordon3d", "diffusion3d", "advection_diffusion1d"])
def test_fused_contraction_equals_per_term(problem):
    tr = _trainer(ROOT / "problems" / f"{problem}.toml", **{"train.grid_free": False})
    assert "fused" in _modes(tr)
    # Klein-Gordon's and Helmholtz's PDE blocks share last-axis factors: summed before the last product
    last_slots = tr.losses.parts[0][0].cp[0].slots[-1]
    assert (len(set(last_slots)) < len(last_slots)) == (problem in ("klein_gordon3d", "helmholtz3d"))
    _assert_same(_loss_and_grad(tr, None), _loss_and_grad(tr, "grid"))


def test_fused_grouped_contraction_of_a_vector_field():
    """Two components, blocks sharing their last-axis factor, a source block: fused = per derivative."""
    p = seppinn.Problem("vec", {"x": (0.0, 1.0), "y": (0.0, 1.0), "z": (0.0, 1.0)}, {"u": 2})
    p.add_equation("diff(u, x, 2) - diff(u, y, 2) - diff(u, z, 2) + u - sin(x)*y")
    tr = _trainer(p, **{"train.grid_free": False})
    assert tr.losses.parts[0][0].cp[0].slots[-1] == [0, 1, 0, 2]
    _assert_same(_loss_and_grad(tr, None), _loss_and_grad(tr, "grid"))


@pytest.mark.parametrize("components", [1, 2])
@pytest.mark.parametrize("order", ["txy", "xty", "xyt"])
def test_a_combination_is_one_grid_grouped_on_its_shared_axis(order, components):
    """u (u_xx + u_yy) with t first, in the middle and last: the sum's blocks share F_t and are
    contracted as one grid grouped on t; losses and gradients equal the per-derivative grid path's."""
    p = seppinn.Problem("nl", {a: (0.0, 1.0) for a in order}, {"u": components})
    p.add_equation("diff(u, t) - u*(diff(u, x, 2) + diff(u, y, 2)) - diff(u, x)**2 + sin(x)")
    tr = _trainer(p, **{"train.grid_free": False})
    part = tr.c.terms[0].parts[0]
    assert tr.plan.part(0, 0).mode == "fused"
    ((lin),) = part.residual.rest.sums
    (cp,) = tr.losses.parts[0][0].cp[1:]
    assert cp.lin is lin
    slots = cp.slots
    assert [len(set(s_)) for s_ in slots] == [1 if a == "t" else 2 for a in order]
    assert sorted(f"{f}{a}" for f, a in part.residual.rest.derivs) == ["u(0, 0, 0)", f"u{tuple(int(a == 'x') for a in order)}"]
    _assert_same(_loss_and_grad(tr, None), _loss_and_grad(tr, "grid"))


def test_factor_passes_merge_when_padding_makes_them_cheaper():
    t, f_t, x_, f_x = ("train", 0), ("face", 0, "min"), ("train", 1), ("face", 1, "both")
    sizes = {t: 64, f_t: 1, x_: 64, f_x: 2, ("points", "u", 0): 5000, ("points", "u", 1): 5000}
    # diffusion-like: order 1 on t, 2 on x: one order-2 pass (3 x 66 rows) instead of 2 x 65 + 3 x 66
    assert plan_passes({(0, t): 1, (0, f_t): 1, (1, x_): 2, (1, f_x): 2}, sizes, 2) == [(2, [[t, f_t], [x_, f_x]])]
    # 5,000 scattered points at order 0 beside a 64-point PDE grid at order 2: two passes
    scattered = {(0, ("points", "u", 0)): 0, (1, ("points", "u", 1)): 0, (0, t): 2, (1, x_): 2}
    assert [o for o, _ in plan_passes(scattered, sizes, 2)] == [0, 2]


def test_merged_factor_passes_give_the_per_order_jets():
    tr = _trainer(ROOT / "problems" / "diffusion3d.toml", **{"train.grid_free": False})
    ((order, keys),) = tr.plan.jet_passes["u"]  # one order-2 pass; t needs order 1
    assert order == 2
    merged = _loss_and_grad(tr)
    tr.losses.jet_passes["u"] = [(1, [keys[0], [], []]), (2, [[], keys[1], keys[2]])]  # a pass per order
    _assert_same(merged, _loss_and_grad(tr))


@pytest.mark.parametrize("extra", [
    {},
    {"train.sampling": "gauss"},
    {"precondition.method": "seppgd", "precondition.k": 3},
    {"precondition.method": "seppgd", "precondition.k": 3, "precondition.scale": "paper", "train.sampling": "gauss"},
    {"precondition.method": "seppgd", "precondition.k": 3, "precondition.modulation": "sqrt"},
])
def test_grid_free_equals_grid(extra):
    """helmholtz3d_data: the PDE, the data term and the six walls are all CP residuals."""
    tr = _trainer(ROOT / "problems" / "helmholtz3d_data.toml", **{"train.grid_free": True, **extra})
    assert _modes(tr) == {"grid_free"}
    # the PDE's repeated blocks ([F'' + k^2 F, F, F] on x) enter its Gram products once
    columns = tr.losses.parts[0][0].cp[0].columns
    assert [len(c.unique()) if c is not None else None for c in columns] == [11, 11, 11]
    _assert_same(_loss_and_grad(tr, None), _loss_and_grad(tr, "grid"))


def test_grid_free_seppgd_is_not_the_plain_gradient():
    """The Gram-product surrogate really preconditions (k = 3 against k = 0)."""
    g3 = _loss_and_grad(_trainer(ROOT / "problems" / "helmholtz3d_data.toml", **{
        "train.grid_free": True, "precondition.method": "seppgd", "precondition.k": 3}), None)[1]
    g0 = _loss_and_grad(_trainer(ROOT / "problems" / "helmholtz3d_data.toml", **{
        "train.grid_free": True, "precondition.method": "seppgd", "precondition.k": 0}), None)[1]
    plain = _loss_and_grad(_trainer(ROOT / "problems" / "helmholtz3d_data.toml", **{"train.grid_free": True}), None)[1]
    torch.testing.assert_close(g0, plain, rtol=1e-12, atol=1e-12 * plain.abs().max().item())
    assert (g3 - plain).norm() > 1e-3 * plain.norm()


def test_float32_grid_free_matches_float64():
    """The Gram products run in float64: a float32 model's grid-free loss is the float64 value of
    its own residual, to float32 rounding of the factors."""
    tr = _trainer(ROOT / "problems" / "helmholtz3d.toml", **{"train.grid_free": True, "train.dtype": "float32",
                                                              "train.points": 40})
    free = _loss_and_grad(tr, None)[0]
    ref = _loss_and_grad(_grid_twin(tr, "float64"))[0]
    torch.testing.assert_close(free.double(), ref, rtol=1e-5, atol=0)


CORNER = "exp(-(x**2 + (1 - y)**2)/0.05**2)"  # a narrow Gaussian at the corner (0, 1) of [0, 1]^2


def test_separate_balances_narrow_gaussians_on_the_box():
    """Expanded, the corner Gaussian is e^-400 e^(-400 x^2) e^(800 y - 400 y^2) (e^400 overflows
    float32, e^800 float64); on the box each factor is brought to one magnitude, the product unchanged."""
    e = sp.sympify(CORNER) * sp.sin(x) + sp.cos(y)
    out = separate(e, AXES[:2], box=[(0.0, 1.0), (0.0, 1.0)])
    assert out is not None and len(out) == 2
    grid = np.linspace(0.0, 1.0, 101)
    for c, per in out:
        assert abs(float(c)) < 1e30
        for g, s_ in zip(per, AXES[:2]):
            values = np.array([float(g.subs(s_, v)) for v in grid])
            assert np.all(np.isfinite(values)) and np.abs(values).max() < 1e30
    rebuilt = sum(c * sp.Mul(*per) for c, per in out)
    for pt in [{x: 0.01, y: 0.98}, {x: 0.3, y: 0.9}, {x: 0.0, y: 1.0}]:
        assert float(rebuilt.subs(pt)) == pytest.approx(float(e.subs(pt)), rel=1e-12)
    assert separate(sp.sympify("exp(-(x - 0.3)**2)*sin(y)"), AXES[:2], box=[(0.0, 1.0), (0.0, 1.0)]) == \
        separate(sp.sympify("exp(-(x - 0.3)**2)*sin(y)"), AXES[:2])  # moderate products: as they were


@pytest.mark.parametrize("corner", [CORNER, "exp(-400*(x**2 + (1 - y)**2))"])  # Float and exact exponents
@pytest.mark.parametrize("grid_free", [False, True])
def test_narrow_gaussian_coefficients_and_sources_stay_finite_in_float32(grid_free, corner):
    """A corner-weighted residual (source, coefficient of u_xx and of a nonlinear rest): the float32
    trainer's losses are finite and equal the float64 grid path's to float32 rounding (it was
    refused as 'not finite in float32')."""
    p = seppinn.Problem("corner", {"x": (0.0, 1.0), "y": (0.0, 1.0)}, {"u": 1})
    p.add_equation(f"{corner}*(diff(u, x, 2) + u**2) + diff(u, y, 2) - {corner}")
    p.add_condition("boundary", "u", 0.0)
    tr = _trainer(p, **{"train.grid_free": grid_free, "train.dtype": "float32", "train.points": 33})
    got = _loss_and_grad(tr, None)[0]
    ref = _loss_and_grad(_grid_twin(tr, "float64"))[0]
    assert torch.isfinite(got).all() and ref[0] > 1e-5  # the Gaussian source is felt
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=0)


def test_gauss_points_integrate_spectrally():
    """With Gauss-Legendre points the loss is the domain mean of r^2 by quadrature: 10 points per
    axis agree with 40 to 1e-8 for a smooth residual; uniform grids of those sizes differ by ~1e-2."""
    p = seppinn.Problem("smooth", {"x": (0.0, 1.0), "y": (-1.0, 2.0)}, ["u"], kind="data")
    p.add_data("u", "sin(2*x)*exp(y/2)")

    def loss(sampling: str, n: int) -> float:
        tr = _trainer(p, **{"train.sampling": sampling, "train.points": n, "train.grid_free": True,
                            "model.activation": "tanh", "model.body": "mlp"})
        assert _modes(tr) == {"grid_free"}
        return float(tr.losses()["data"].detach())
    g10, g40 = loss("gauss", 10), loss("gauss", 40)
    u10, u40 = loss("grid", 10), loss("grid", 40)
    assert abs(g10 - g40) < 1e-8 * g40
    assert abs(u10 - u40) > 1e-3 * u40


def test_check_reports_the_choice():
    prep = seppinn.prepare(ROOT / "problems" / "helmholtz3d.toml", "spinn", {"train.points": 256})
    report = seppinn.api.check_report(prep)
    assert "pde" in report and "grid-free (CP residual, rank 97)" in report
    prep = seppinn.prepare(ROOT / "problems" / "helmholtz3d.toml", "spinn", {"train.grid_free": False})
    assert "fused (CP residual, rank 97)" in seppinn.api.check_report(prep)
    prep = seppinn.prepare(ROOT / "problems" / "klein_gordon3d.toml", "spinn", {"model.kind": "tucker"})
    assert "grid-free" not in seppinn.api.check_report(prep) and "fused" not in seppinn.api.check_report(prep)


def test_grid_free_memory_estimate_allows_huge_grids():
    """2048^3 on the grid would need tens of GiB per tensor; grid-free Helmholtz needs megabytes."""
    prep = seppinn.prepare(ROOT / "problems" / "helmholtz3d.toml", "spinn", {"train.points": 2048})
    est = prep.plan.memory["total"]
    assert est < 2 * 2**30
    with pytest.raises(seppinn.SolverConfigError, match="estimated peak memory"):
        seppinn.prepare(ROOT / "problems" / "helmholtz3d.toml", "spinn",
                        {"train.points": 2048, "train.grid_free": False})
    np.testing.assert_array_less(0, est)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("grid_free", [False, True])
def test_face_pairs_give_per_face_sums(reduction, grid_free):
    """Both faces of an axis are one part (2 points on that axis); the walls loss still is the sum
    (or the mean over all points) of the six faces' mean squares, each face evaluated on its own."""
    tr = _trainer(ROOT / "problems" / "helmholtz3d.toml", **{"train.face_reduction": reduction,
                                                              "train.grid_free": grid_free})
    walls = next(t for t in tr.c.terms if t.name == "walls")
    assert [p.faces for p in walls.parts] == [2, 2, 2]
    pts = [tr.points[("train", d)].numpy() for d in range(3)]
    means = []
    for d in range(3):
        for v in (-1.0, 1.0):
            axes = [np.array([v]) if e == d else pts[e] for e in range(3)]
            u = tr.evaluator.predict(axes)["u"][..., 0].numpy()
            X = np.meshgrid(*axes, indexing="ij")
            exact = np.sin(4 * np.pi * X[0]) * np.sin(4 * np.pi * X[1]) * np.sin(3 * np.pi * X[2])
            means.append(np.mean((u - exact) ** 2))
    want = walls.weight * (sum(means) if reduction == "sum" else np.mean(means))
    assert float(tr.losses()["walls"].detach()) == pytest.approx(want, rel=1e-12)


def test_squared_error_of_cp_tensors_equals_the_grid():
    g = torch.Generator().manual_seed(0)
    u = [torch.randn(n, 4, 2, generator=g, dtype=torch.float64) for n in (5, 6, 7)]
    t = [torch.randn(n, 3, 1, generator=g, dtype=torch.float64) for n in (5, 6, 7)]
    grid = seppinn.model.separable.cp_contract(u) - seppinn.model.separable.cp_contract(t)
    torch.testing.assert_close(seppinn.train.gridfree.squared_error(u, t), (grid**2).sum(), rtol=1e-12, atol=0)


def _heat_with_lift(reference: str) -> seppinn.Problem:
    """u_t = u_xx + f on [0, 1]^2 with hard walls (a lift g) and the given exact solution."""
    p = seppinn.Problem("heat", {"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)}, ["u"],
                        definitions={"exact": reference})
    p.add_equation("diff(u, t) - diff(u, x, 2) - (diff(exact, t) - diff(exact, x, 2))")
    p.add_condition(on="t = 0", value="exact", name="initial")
    p.add_condition(on=["x = min", "x = max"], value="exact", enforce="hard", name="walls")
    p.set_reference(u="exact")
    return p


@pytest.mark.parametrize("problem, mode", [
    (ROOT / "problems" / "helmholtz3d.toml", "grid-free"),
    (ROOT / "problems" / "klein_gordon3d.toml", "grid-free"),  # three separable products
    (_heat_with_lift("exp(-t)*cos(2*x) + t*x**2"), "grid-free"),  # reference - lift is separable too
    (_heat_with_lift("sin(t + x)"), "grid"),  # not a sum of separable products as written
])
@pytest.mark.parametrize("scale", ["none", "sqrt_rank"])
def test_grid_free_metrics_equal_the_grid(problem, mode, scale):
    """rel_l2 and mse from Gram products = the same metrics on the test grid; the outputs still get
    the reference on the grid."""
    tr = _trainer(problem, **{"train.test_points": 9, "model.scale": scale})
    assert ("u" in tr.evaluator.gridfree_metrics) == (mode == "grid-free")
    for _ in range(2):  # at initialisation and after changing the model (error and reference comparable)
        grid = seppinn.train.metrics.field_metrics(tr.evaluator.predict(tr.evaluator.test_axes)["u"], tr.evaluator.reference_on(tr.evaluator.test_axes)["u"],
                                             seppinn.train.metrics.MetricSpec())
        free = tr.evaluator.metrics()["u"]
        assert free.keys() == grid.keys() and free["rel_l2"] > 1e-2
        for k in grid:
            assert free[k] == pytest.approx(grid[k], rel=1e-10)
        with torch.no_grad():
            for prm in tr.model.parameters():
                prm.mul_(0.3)
    fields, refs = tr.evaluator.test_solution()
    assert refs["u"].shape == fields["u"].shape == tuple(len(a) for a in tr.evaluator.test_axes)


def test_grid_free_metrics_follow_the_switch():
    tr = _trainer(ROOT / "problems" / "helmholtz3d.toml", **{"train.grid_free": False})
    assert not tr.evaluator.gridfree_metrics and "u" in tr.evaluator.reference
    prep = seppinn.prepare(ROOT / "problems" / "helmholtz3d.toml", "spinn")
    assert "metrics on the test grid 100 x 100 x 100: u grid-free (separable reference, 1 product)" \
        in seppinn.api.check_report(prep)
