"""The Python surface is the CLI's machinery: same problems, same messages, same outputs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import sympy as sp
import torch

import seppinn
from seppinn.api import prepare
from seppinn.cli import main
from seppinn.problem.expressions import OPERATOR_DOCS, OPERATORS
from seppinn.problem.problem_file import load_problem
from seppinn.problem.solver_config import resolve
from seppinn.train.loop import Trainer

from .conftest import HELMHOLTZ_SMALL, ROOT, write

# ------------------------------------------------------------------ every shipped problem, in code
HELMHOLTZ_EXACT = "sin(4*pi*x)*sin(4*pi*y)*sin(3*pi*z)"


def helmholtz(name: str, with_data: bool) -> seppinn.Problem:
    p = seppinn.Problem(name, axes={"x": (-1.0, 1.0), "y": (-1.0, 1.0), "z": (-1.0, 1.0)}, fields=["u"],
                        parameters={"k": 1.0}, definitions={"exact": HELMHOLTZ_EXACT},
                        solver_table={"train": {"weights": {"walls": 100.0}}})
    x, y, z, k = p.symbols("x", "y", "z", "k")
    exact, u = p.expr("exact"), p.field("u")
    q = sum(sp.diff(exact, s, 2) for s in (x, y, z)) + k**2 * exact
    p.add_equation(sum(sp.diff(u, s, 2) for s in (x, y, z)) + k**2 * u - q, name="pde")
    p.add_condition(on="boundary", value=exact, name="walls")
    if with_data:
        p.add_data("u", "exact")
    p.set_reference(u="exact")
    return p


def klein_gordon(name: str, velocity: bool) -> seppinn.Problem:
    p = seppinn.Problem(name, axes={"t": seppinn.TimeAxis(0.0, 10.0), "x": (-1.0, 1.0), "y": (-1.0, 1.0)},
                        fields=["u"], definitions={"exact": "(x + y)*cos(2*t) + x*y*sin(2*t)"})
    t, x, y = p.symbols("t", "x", "y")
    exact, u = p.expr("exact"), p.field("u")
    kg = lambda w: sp.diff(w, t, 2) - sp.diff(w, x, 2) - sp.diff(w, y, 2) + w**2  # noqa: E731
    p.add_equation(kg(u) - kg(exact), name="pde")
    p.add_condition(on="boundary", value="exact", name="walls")
    p.add_condition(on="t = 0", value=x + y, name="initial")
    if velocity:
        p.add_condition(on="t = 0", expr=sp.diff(u, t), value="2*x*y", name="initial_velocity")
    p.set_reference(u="exact")
    return p


def diffusion() -> seppinn.Problem:
    u0 = ("0.25*exp(-10*((x - 0.3)**2 + (y - 0.2)**2)) + 0.4*exp(-15*((x + 0.5)**2 + (y + 0.1)**2))"
          " + 0.3*exp(-20*(x**2 + (y + 0.5)**2))")
    p = seppinn.Problem("diffusion3d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (-1.0, 1.0), "y": (-1.0, 1.0)},
                        fields=["u"], parameters={"D": 0.05}, definitions={"u0": u0})
    p.add_equation(lhs="diff(u, t)", rhs="D*(grad2(u) + u*lap(u))", name="pde")
    p.add_condition(on="boundary", value=0, name="walls")
    p.add_condition(on="t = 0", value="u0", name="initial")
    p.set_reference(u={"solver": "nonlinear_diffusion2d"})
    return p


def advection_diffusion() -> seppinn.Problem:
    p = seppinn.Problem("advection_diffusion1d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)},
                        fields=["u"], parameters={"c": 0.5, "nu": 0.01},
                        definitions={"exact": "exp(-nu*pi**2*t)*sin(pi*(x - c*t))"})
    t, x, c, nu = p.symbols("t", "x", "c", "nu")
    u = p.field("u")
    p.add_equation(sp.diff(u, t) + c * sp.diff(u, x) - nu * sp.diff(u, x, 2), name="pde")
    p.add_condition(on="t = 0", value="sin(pi*x)", name="initial")
    p.add_condition(on="boundary", value="exact", name="walls")
    p.set_reference(u="exact")
    return p


DATA = ROOT / "problems" / "data"


def image(name: str, keep: float | None) -> seppinn.Problem:
    p = seppinn.Problem(name, axes={"row": (0.0, 1.0), "col": (0.0, 1.0)}, fields={"rgb": 3}, kind="data",
                        solver="inr-image-cpu")
    photo = str(DATA / "photo_256.png")
    p.add_data("rgb", {"file": photo} if keep is None else {"file": photo, "keep": keep, "seed": 0})
    p.set_reference(rgb={"file": photo})
    return p


def occupancy() -> seppinn.Problem:
    p = seppinn.Problem("occupancy", axes={a: (-1.0, 1.0) for a in "xyz"}, fields=["occupancy"], kind="data",
                        solver="inr-occupancy")
    volume = {"file": str(DATA / "occupancy_128.h5"), "dataset": "occupancy"}
    p.add_data("occupancy", volume)
    p.set_reference(occupancy=volume)
    return p


def sensors() -> seppinn.Problem:
    p = seppinn.Problem("sensors", axes={"x": (-1.0, 1.0), "y": (-1.0, 1.0)}, fields=["u"],
                        definitions={"exact": "sin(pi*x)*cosh(y) + x*y/2"})
    x, y = p.symbols("x", "y")
    u, exact = p.field("u"), p.expr("exact")
    p.add_equation(sp.diff(u, x, 2) + sp.diff(u, y, 2) - (sp.diff(exact, x, 2) + sp.diff(exact, y, 2)), name="pde")
    p.add_data("u", {"points": str(DATA / "sensors.csv")})
    p.set_reference(u="exact")
    return p


def poisson_robin() -> seppinn.Problem:
    p = seppinn.Problem("poisson_robin2d", axes={"x": (0.0, 2.0), "y": (-1.0, 1.0)}, fields=["u"],
                        definitions={"exact": "sin(pi*x)*cos(pi*y/2) + x*y/2"})
    p.add_equation("lap(u) - lap(exact)", name="pde")
    p.add_condition(on=["x = min", "y = min", "y = max"], value="exact", name="dirichlet")
    x = p.symbols("x")
    p.add_condition(on="x = max", expr=sp.diff(p.field("u"), x) + p.field("u"),  # dn(u) on x = max
                    value="diff(exact, x) + exact", name="robin")
    p.set_reference(u="exact")
    return p


def wave() -> seppinn.Problem:
    p = seppinn.Problem("wave1d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)}, fields=["u"],
                        parameters={"c": 1.0},
                        definitions={"exact": "sin(pi*x)*cos(pi*c*t) + sin(2*pi*x)*sin(2*pi*c*t)/(2*pi*c)"})
    p.add_equation("diff(u, t, 2) - c**2*diff(u, x, 2)", name="pde")
    p.add_condition(on="boundary", value=0, name="walls")
    p.add_condition(on="t = min", value="sin(pi*x)", name="initial")
    p.add_condition(on="t = min", expr="diff(u, t)", value="sin(2*pi*x)", name="velocity")
    p.set_reference(u="exact")
    return p


def biharmonic() -> seppinn.Problem:
    p = seppinn.Problem("biharmonic2d", axes={"x": (0.0, 1.0), "y": (0.0, 1.0)}, fields=["u", "v"],
                        definitions={"exact": "sin(pi*x)*sin(pi*y)"})
    p.add_equation("lap(v) - 4*pi**4*exact", name="plate")
    p.add_equation("v - lap(u)", name="split")
    p.add_condition(on="boundary", expr="u", value=0, name="u_walls")
    p.add_condition(on="boundary", expr="v", value=0, name="v_walls")
    p.set_reference(u="exact", v="-2*pi**2*exact")
    return p


def heat() -> seppinn.Problem:
    p = seppinn.Problem("heat3d", axes={"t": seppinn.TimeAxis(0.0, 1.0), **{a: (0.0, 1.0) for a in "xyz"}},
                        fields=["u"], parameters={"kappa": 0.1},
                        definitions={"exact": "exp(-3*kappa*pi**2*t)*sin(pi*x)*sin(pi*y)*sin(pi*z)"})
    p.add_equation("diff(u, t) - kappa*lap(u)", name="pde")
    p.add_condition(on="boundary", value=0, name="walls")
    p.add_condition(on="t = min", value="sin(pi*x)*sin(pi*y)*sin(pi*z)", name="initial")
    p.set_reference(u="exact")
    return p


def klein_gordon4d() -> seppinn.Problem:
    p = seppinn.Problem("klein_gordon4d", axes={"t": seppinn.TimeAxis(0.0, 10.0), **{a: (-1.0, 1.0) for a in "xyz"}},
                        fields=["u"], definitions={"exact": "(x + y + z)*cos(2*t) + x*y*z*sin(2*t)",
                                                   "f": "diff(exact, t, 2) - lap(exact) + exact**2"})
    p.add_equation("diff(u, t, 2) - lap(u) + u**2 - f", name="pde")
    p.add_condition(on="boundary", value="exact", name="walls")
    p.add_condition(on="t = min", value="x + y + z", name="initial")
    p.set_reference(u="exact")
    return p


def inverse_heat() -> seppinn.Problem:  # the README's Python example (its data path from the tests)
    p = seppinn.Problem("inverse_heat1d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)}, fields=["u"],
                        definitions={"exact": "sin(pi*x)*exp(-0.3*pi**2*t) + sin(2*pi*x)*exp(-1.2*pi**2*t)/2"})
    k = p.parameter("k", 1.0, learn=True, positive=True)
    t, x = p.symbols("t", "x")
    u = p.field("u")
    p.add_equation(sp.diff(u, t) - k * sp.diff(u, x, 2), name="pde")
    p.add_condition(on="boundary", value=0, name="ends")
    p.add_condition(on="t = min", value="sin(pi*x) + sin(2*pi*x)/2", name="initial")
    p.add_data("u", {"points": str(DATA / "heat_readings.csv")})
    p.set_reference(u="exact")
    return p


def inverse_poisson() -> seppinn.Problem:
    p = seppinn.Problem("inverse_poisson2d", axes={"x": (0.0, 1.0), "y": (0.0, 1.0)}, fields=["u", "a"],
                        definitions={"u_true": "sin(pi*x)*sin(pi*y)",
                                     "a_true": "1 + exp(-((x - 0.6)**2 + (y - 0.4)**2)/0.1)"})
    p.set_positive("a")
    x, y = p.symbols("x", "y")
    u, a = p.field("u"), p.field("a")
    u_true, a_true = p.expr("u_true"), p.expr("a_true")
    div = lambda c, v: sp.diff(c * sp.diff(v, x), x) + sp.diff(c * sp.diff(v, y), y)  # noqa: E731
    p.add_equation(-div(a, u) + div(a_true, u_true), name="pde")
    p.add_condition(on="boundary", expr="u", value=0, name="u_walls")
    p.add_condition(on="boundary", expr="a", value="a_true", name="a_walls")
    p.add_data("u", "u_true")
    p.set_reference(u="u_true", a="a_true")
    return p


def parametric_helmholtz() -> seppinn.Problem:
    p = seppinn.Problem("parametric_helmholtz2d", fields=["u"], definitions={"exact": "sin(k*x)*sin(pi*y)"},
                        axes={"x": (0.0, 1.0), "y": (0.0, 1.0), "k": seppinn.Axis("k", 1.0, 3.0, parameter=True)})
    p.add_equation("lap(u) + k**2*u - (lap(exact) + k**2*exact)", name="pde")
    p.add_condition(on="boundary", value="exact", name="walls")
    p.set_reference(u="exact")
    return p


def burgers() -> seppinn.Problem:
    p = seppinn.Problem("burgers1d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (-1.0, 1.0)}, fields=["u"],
                        parameters={"nu": "0.01/pi"},
                        solver_table={"train": {"points": {"t": 64, "x": 512}, "test_points": {"t": 101, "x": 256},
                                                "iterations": 10000, "lbfgs_iterations": 30000}})
    p.add_equation("diff(u, t) + u*diff(u, x) - nu*diff(u, x, 2)", name="pde")
    p.add_condition(on=["x = min", "x = max"], value=0, name="walls")
    p.add_condition(on="t = min", value="-sin(pi*x)", name="initial", enforce="hard")
    p.set_reference(u={"solver": "burgers1d"})
    return p


def periodic_1d(name: str, parameters: dict[str, float], residual: str, initial: str,
                train: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
                fade: float | None = None) -> seppinn.Problem:
    p = seppinn.Problem(name, axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": seppinn.Axis("x", -1.0, 1.0, periodic=True)},
                        fields=["u"], parameters=parameters,
                        solver_table={"train": {"test_points": {"t": 101, "x": 256}, **(train or {})},
                                      **({"model": model} if model else {})})
    p.add_equation(residual, name="pde")
    p.add_condition(on="t = min", value=initial, name="initial", enforce="hard", fade=fade)
    p.set_reference(u={"solver": name})
    return p


def beltrami() -> seppinn.Problem:
    decay = "exp(-nu*d**2*t)"
    cyc = {"u": ("x", "y", "z"), "v": ("y", "z", "x"), "w": ("z", "x", "y")}
    defs = {f"{f}e": f"-a*(exp(a*{p})*sin(a*{q} + d*{r}) + exp(a*{r})*cos(a*{p} + d*{q}))*{decay}"
            for f, (p, q, r) in cyc.items()}
    pb = seppinn.Problem("beltrami4d", axes={"t": seppinn.TimeAxis(0.0, 1.0), **{a: (-1.0, 1.0) for a in "xyz"}},
                         fields=["u", "v", "w", "p"], parameters={"a": 1.0, "d": 1.0, "nu": 1.0},
                         definitions={"decay": decay, **{k: v.replace(decay, "decay") for k, v in defs.items()}})
    for f, axis in zip("uvw", "xyz"):
        pb.add_equation(f"diff({f}, t) + u*diff({f}, x) + v*diff({f}, y) + w*diff({f}, z) + diff(p, {axis}) - nu*lap({f})",
                        name=f"momentum_{axis}")
    pb.add_equation("diff(u, x) + diff(v, y) + diff(w, z)", name="continuity")
    faces = [f"{a} = {s}" for a in "xyz" for s in ("min", "max")]
    for f in "uvw":
        pb.add_condition(on=faces, expr=f, value=f"{f}e", name=f"walls_{f}")
    for f in "uvw":
        pb.add_condition(on="t = min", expr=f, value=f"{f}e", name=f"initial_{f}", enforce="hard")
    pb.set_reference(u="ue", v="ve", w="we")
    return pb


def cavity() -> seppinn.Problem:
    walls = {"lid": 10.0, "walls_u": 10.0, "walls_v": 10.0}
    train = {"balance": "none", "weights": walls, "points": 128, "iterations": 50000, "schedule": "cosine",
             "lbfgs_iterations": 15000}
    p = seppinn.Problem("cavity2d", axes={"x": (0.0, 1.0), "y": (0.0, 1.0)}, fields=["u", "v", "p"],
                        parameters={"Re": 100, "C": 50}, solver_table={"train": train})
    for f, axis in (("u", "x"), ("v", "y")):
        p.add_equation(f"u*diff({f}, x) + v*diff({f}, y) + diff(p, {axis}) - lap({f})/Re", name=f"momentum_{axis}")
    p.add_equation("diff(u, x) + diff(v, y)", name="continuity")
    p.add_condition(on="y = max", expr="u", value="1 - cosh(C*(x - 1/2))/cosh(C/2)", name="lid")
    p.add_condition(on=["x = min", "x = max", "y = min"], expr="u", value=0, name="walls_u")
    p.add_condition(on="boundary", expr="v", value=0, name="walls_v")
    return p


def navier_stokes2d() -> seppinn.Problem:
    box = seppinn.Axis("x", 0.0, 2 * np.pi, periodic=True)
    p = seppinn.Problem("navier_stokes2d", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": box,
                                                 "y": seppinn.Axis("y", 0.0, 2 * np.pi, periodic=True)},
                        fields=["u", "v", "w"], parameters={"nu": 0.01},
                        solver_table={"train": {"points": {"t": 32, "x": 128, "y": 128}}},
                        definitions={"u0": "sin(x)*cos(y) - sin(2*x + y)/2", "v0": "-cos(x)*sin(y) + sin(2*x + y)",
                                     "w0": "2*sin(x)*sin(y) + 5*cos(2*x + y)/2"})
    p.add_equation("diff(w, t) + u*diff(w, x) + v*diff(w, y) - nu*(diff(w, x, 2) + diff(w, y, 2))", name="vorticity")
    p.add_equation("w - (diff(v, x) - diff(u, y))", name="curl")
    p.add_equation("diff(u, x) + diff(v, y)", name="continuity")
    for f in "uvw":
        p.add_condition(on="t = min", expr=f, value=f"{f}0", name=f"initial_{f}", enforce="hard")
    p.set_reference(u={"solver": "vorticity2d_u"}, v={"solver": "vorticity2d_v"}, w={"solver": "vorticity2d"})
    return p


TWINS: dict[str, Callable[[], seppinn.Problem]] = {
    "navier_stokes2d": navier_stokes2d,
    "cavity2d": cavity,
    "burgers1d": burgers,
    "allen_cahn1d": lambda: periodic_1d("allen_cahn1d", {"eps": 1e-4, "a": 5.0},
                                        "diff(u, t) - eps*diff(u, x, 2) + a*u**3 - a*u", "x**2*cos(pi*x)",
                                        {"points": {"t": 100, "x": 512}, "causal": {"chunks": 32, "tol": 1.0},
                                         "windows": 4, "iterations": 5000, "lbfgs_iterations": 2000},
                                        {"weight_factorization": True, "width": 128}, fade=0.05),
    "kdv1d": lambda: periodic_1d("kdv1d", {"delta": 0.022}, "diff(u, t) + u*diff(u, x) + delta**2*diff(u, x, 3)",
                                 "cos(pi*x)", {"points": {"t": 100, "x": 256}, "windows": 16, "iterations": 5000,
                                               "causal": {"chunks": 32, "tol": 1.0}}, {"weight_factorization": True}),
    "beltrami4d": beltrami,
    "inverse_heat1d": inverse_heat,
    "inverse_poisson2d": inverse_poisson,
    "parametric_helmholtz2d": parametric_helmholtz,
    "poisson_robin2d": poisson_robin,
    "wave1d": wave,
    "biharmonic2d": biharmonic,
    "heat3d": heat,
    "klein_gordon4d": klein_gordon4d,
    "helmholtz3d": lambda: helmholtz("helmholtz3d", False),
    "helmholtz3d_data": lambda: helmholtz("helmholtz3d_data", True),
    "klein_gordon3d": lambda: klein_gordon("klein_gordon3d", False),
    "klein_gordon3d_velocity": lambda: klein_gordon("klein_gordon3d_velocity", True),
    "diffusion3d": diffusion,
    "advection_diffusion1d": advection_diffusion,
    "image": lambda: image("image", None),
    "inpainting": lambda: image("inpainting", 0.7),
    "occupancy": occupancy,
    "sensors": sensors,
}
SMALL = {"train.points": 6, "train.dtype": "float64", "train.test_points": 5, "model.rank": 4, "model.width": 8}


def test_every_shipped_problem_has_a_twin():
    shipped = sorted(p.stem for p in (ROOT / "problems").glob("*.toml"))
    assert sorted(TWINS) == shipped


@pytest.mark.parametrize("name", sorted(TWINS))
def test_file_and_python_routes_build_identical_problems(name):
    path = ROOT / "problems" / f"{name}.toml"
    file_prep = prepare(path, "quick", SMALL)
    code_prep = prepare(TWINS[name](), "quick", SMALL)
    assert [t.name for t in file_prep.compiled.terms] == [t.name for t in code_prep.compiled.terms]
    assert file_prep.config == code_prep.config  # [solver] tables of the file = solver_table in code
    shipped = [resolve(p.solver_table, p.source, None, None, p.solver) for p in (load_problem(path), TWINS[name]())]
    assert shipped[0] == shipped[1]  # also the settings the "quick" preset replaces (iterations, ...)
    losses = []
    for prep in (file_prep, code_prep):
        tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=torch.device("cpu"), progress=False)
        losses.append({k: v.item() for k, v in tr.losses().items()})
    assert losses[0].keys() == losses[1].keys()
    for k in losses[0]:
        assert losses[1][k] == pytest.approx(losses[0][k], rel=1e-12, abs=1e-300), k
        assert losses[0][k] > 0


# ------------------------------------------------------------------ user operators
@pytest.fixture
def user_ops():
    """Remove the operators a test registers, so tests stay independent."""
    before = set(OPERATORS)
    yield
    for name in set(OPERATORS) - before:
        del OPERATORS[name], OPERATOR_DOCS[name]


def test_registered_operator_works_from_a_file(tmp_path, user_ops):
    @seppinn.operator("adv", "adv(f, c, x): c * df/dx")
    def adv(f, c, axis):
        return c * sp.diff(f, axis)

    twin = (ROOT / "problems/advection_diffusion1d.toml").read_text()
    with_op = twin.replace('residual = "diff(u, t) + c*diff(u, x) - nu*diff(u, x, 2)"',
                           'residual = "diff(u, t) + adv(u, c, x) - nu*diff(u, x, 2)"')
    assert with_op != twin
    a = seppinn.load_problem(write(tmp_path / "a.toml", twin))
    b = seppinn.load_problem(write(tmp_path / "b.toml", with_op))
    assert sp.simplify(a.equations[0].residual - b.equations[0].residual) == 0
    assert "adv" in seppinn.catalog()["operators"]


def test_operator_failures_are_problem_errors(tmp_path, user_ops):
    @seppinn.operator("half")
    def half(f):
        """half(f): f / 2"""
        return f / 2

    @seppinn.operator("broken")
    def broken(f):
        return "not sympy"

    assert seppinn.catalog()["operators"]["half"] == "half(f): f / 2"
    text = HELMHOLTZ_SMALL.replace('"lap(u) - lap(exact)"', '"lap(u) - half(x, y)"')
    with pytest.raises(seppinn.ProblemError, match=r"p.toml: equations\[0\].residual: operator half: .*argument"):
        seppinn.load_problem(write(tmp_path / "p.toml", text))
    text = HELMHOLTZ_SMALL.replace('"lap(u) - lap(exact)"', '"lap(u) - broken(x)"')
    with pytest.raises(seppinn.ProblemError, match="operator broken: returned str, not a sympy expression"):
        seppinn.load_problem(write(tmp_path / "p.toml", text))
    for bad in ("lap", "sin", "pi", "2x"):
        with pytest.raises(ValueError):
            seppinn.operator(bad)


def test_cli_plugin_registers_operators(tmp_path, monkeypatch, capsys, user_ops):
    write(tmp_path / "my_ops.py", textwrap.dedent("""
        import sympy as sp
        import seppinn

        @seppinn.operator("adv", "adv(f, c, x): c * df/dx")
        def adv(f, c, axis):
            return c*sp.diff(f, axis)
    """))
    text = (ROOT / "problems/advection_diffusion1d.toml").read_text().replace("c*diff(u, x)", "adv(u, c, x)")
    problem = write(tmp_path / "p.toml", text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_ops", raising=False)
    assert main(["check", str(problem)]) == 2
    assert "unknown function 'adv'" in capsys.readouterr().err
    assert main(["check", str(problem), "--plugin", "my_ops"]) == 0
    assert "term pde" in capsys.readouterr().out
    assert main(["list", "--plugin", "my_ops"]) == 0
    assert re.search(r"^  adv +adv\(f, c, x\): c \* df/dx$", capsys.readouterr().out, re.M)
    assert main(["check", str(problem), "--plugin", "no_such_module"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "--plugin: cannot import 'no_such_module': ModuleNotFoundError: No module named 'no_such_module'"


def test_list_reads_the_registries(capsys):
    from seppinn.formats import FORMATS
    from seppinn.model.activations import ACTIVATIONS
    from seppinn.problem.solver_config import PRECONDITIONERS
    from seppinn.registry import ACTIVATIONS as ACTIVATION_NAMES
    from seppinn.registry import MODEL_KINDS

    assert ACTIVATIONS.keys() == ACTIVATION_NAMES.keys()  # every listed name is implemented, and no more

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = {m.group(1) for m in re.finditer(r"^  (\S+)", out, re.M)}
    for registry in (OPERATORS, ACTIVATIONS, MODEL_KINDS, PRECONDITIONERS, FORMATS):
        assert set(registry) <= listed
    assert {"lap", "sin", "tucker", "seppgd", "vtu", "nonlinear_diffusion2d", "spinn"} <= listed


# ------------------------------------------------------------------ results and errors
def test_evaluate_grid_matches_pointwise_evaluation():
    p = seppinn.Problem("adv", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)}, fields=["u"],
                        definitions={"exact": "exp(-0.01*pi**2*t)*sin(pi*(x - 0.5*t))"})
    p.add_equation("diff(u, t) + 0.5*diff(u, x) - 0.01*diff(u, x, 2)")
    p.add_condition(on="t = 0", value="sin(pi*x)", name="initial")
    p.add_condition(on=["x = min", "x = max"], value="exact", enforce="hard", name="walls")  # a lift
    result = seppinn.solve(p, "quick", {"train.iterations": 30, "model.rank": 8}, progress=False)
    t = np.array([0.0, 0.37, 1.0])
    x = np.linspace(0.0, 1.0, 7) ** 1.5
    grid = result.evaluate({"t": t, "x": x})["u"]
    assert grid.shape == (3, 7)
    T, X = np.meshgrid(t, x, indexing="ij")
    points = result.evaluate_points({"t": T.ravel(), "x": X.ravel()})["u"]
    assert points.shape == (21,)
    np.testing.assert_allclose(points.reshape(3, 7), grid, rtol=1e-5, atol=1e-6)
    # the hard condition holds exactly at x = 0 through the lift
    exact = np.exp(-0.01 * np.pi**2 * t) * np.sin(np.pi * (0 - 0.5 * t))
    np.testing.assert_allclose(grid[:, 0], exact, atol=1e-6)
    with pytest.raises(seppinn.SeppinnError, match="evaluate_points: every axis needs a 1-D array of the same length"):
        result.evaluate_points({"t": [0.0, 1.0], "x": [0.5]})


@pytest.mark.parametrize("mutate, overrides", [
    (lambda s: s.replace("lap(u) - lap(exact)", "lap(u) - kk"), None),
    (lambda s: s.replace('on = "boundary"', 'on = "z = 0"'), None),
    (lambda s: s, {"train.iteratons": 3}),
    (lambda s: s, {"model.activation": "relux"}),
])
def test_api_errors_are_the_cli_messages(tmp_path, capsys, mutate, overrides):
    path = write(tmp_path / "p.toml", mutate(HELMHOLTZ_SMALL))
    with pytest.raises(seppinn.SeppinnError) as info:
        seppinn.solve(path, overrides=overrides, progress=False)
    args = [f"--set={k}={v}" for k, v in (overrides or {}).items()]
    assert main(["solve", str(path), "--out", str(tmp_path / "out"), *args]) == 2
    assert capsys.readouterr().err.strip() == str(info.value)


# ------------------------------------------------------------------ the README example
def _readme_block(after: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after):]
    start = section.index(f"```{lang}\n") + len(lang) + 4
    return section[start: section.index("```", start)]


def test_readme_adding_an_equation_runs_as_written(tmp_path):
    code = _readme_block("## Adding an equation", "python")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    stated = re.search(r"# rel L2 \S+ \(below (\S+)\)", code)
    assert stated, "the README states the error the example reaches"
    reached = float(re.search(r"rel L2 (\S+)", proc.stdout).group(1))
    assert reached < float(stated.group(1))
    assert (tmp_path / "runs/advection_diffusion1d/solution.h5").exists()
    # the problem-file twin: the same settings reach the same error
    twin = seppinn.solve(ROOT / "problems/advection_diffusion1d.toml", "quick", {"train.iterations": 2000},
                         progress=False)
    assert twin.metrics["u"]["rel_l2"] == pytest.approx(reached, rel=0.02)
