"""Parameter axes (``k = { range = [1, 3], parameter = true }``): no lap/grad2 along them, no faces,
diff(u, k) allowed, the family's worst member in the metrics, ``export --at``, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import sympy as sp
import torch

import seppinn
from seppinn import ProblemError
from seppinn.cli import main
from seppinn.problem.problem_file import load_problem_text
from seppinn.train.metrics import member_sums, worst_member

from .conftest import PLAIN, ROOT, write

FAMILY = (ROOT / "problems" / "parametric_helmholtz2d.toml").read_text()
SMALL = {**PLAIN, "train.points": 8, "model.width": 8, "model.rank": 4, "train.test_points": 5,
         "train.iterations": 3, "train.eval_every": 3}


def test_lap_and_boundary_skip_a_parameter_axis_and_diff_along_it_is_allowed():
    p = load_problem_text(FAMILY, "family.toml")
    x, y, k = p.symbols("x", "y", "k")
    u = p.field("u")
    assert p.axis_list[2].parameter
    assert sp.simplify(p.expr("lap(u)") - (sp.diff(u, x, 2) + sp.diff(u, y, 2))) == 0
    assert sp.simplify(p.expr("grad2(u)") - (sp.diff(u, x) ** 2 + sp.diff(u, y) ** 2)) == 0
    walls = p.conditions[0]
    assert {f.axis for f in walls.faces} == {0, 1} and len(walls.faces) == 4
    p2 = load_problem_text(FAMILY.replace('residual = "lap(u) + k**2*u', 'residual = "diff(u, k) + lap(u) + k**2*u'),
                           "sens.toml")
    assert p2.equations[0].residual.has(sp.Derivative(u, k))


@pytest.mark.parametrize("change, key, message", [
    ("k = { range = [1.0, 3.0], parameter = true }", "axes.k",
     "a parameter axis cannot also be the time axis"),
    ('on    = "boundary"          # the faces of x and y: a parameter axis has none', "conditions[0].on",
     "'k = 1': k is a parameter axis, which has no faces"),
    ("k = { range = [1.0, 3.0], parameter = true }", "axes.k.parameter", "expected true or false"),
])
def test_bad_parameter_axes_get_one_message(tmp_path, capsys, change, key, message):
    new = {"axes.k": "k = { range = [1.0, 3.0], parameter = true, time = true }",
           "conditions[0].on": 'on    = ["x = 0", "k = 1"]',
           "axes.k.parameter": 'k = { range = [1.0, 3.0], parameter = "yes" }'}[key]
    path = write(tmp_path / "bad.toml", FAMILY.replace(change, new))
    with pytest.raises(ProblemError) as exc:
        seppinn.load_problem(path)
    assert key in str(exc.value) and message in str(exc.value)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_worst_parameter_finds_the_worst_member():
    ref = torch.ones(4, 3, 5, 1, dtype=torch.float64)  # (x, k, y, C); k is axis 1
    pred = ref.clone()
    pred[:, 2] += 0.1  # member k[2] is off by 10 %, the others exact
    pred[:, 0] += 0.01
    out = worst_member(member_sums(pred, ref, [1]), ["k"], [np.array([1.0, 2.0, 3.0])])
    assert out == {"rel_l2_worst": pytest.approx(0.1), "worst_k": 3.0}


def test_family_metrics_and_export_at_one_member(tmp_path):
    path = write(tmp_path / "family.toml", FAMILY)
    r = seppinn.solve(path, overrides=SMALL, out=tmp_path / "run", progress=False)
    m = r.metrics["u"]
    assert m["rel_l2_worst"] >= m["rel_l2"] and m["worst_k"] in np.linspace(1, 3, 5)
    assert "rel_l2_worst/u" in r.history and "worst_k/u" in r.history
    assert main(["export", str(tmp_path / "run"), "--at", "k=2.5", "--points", "6"]) == 0
    with h5py.File(tmp_path / "run" / "export_6_k2.5.h5") as f:
        assert list(f["axes/k"][:]) == [2.5] and f["fields/u"].shape == (6, 6, 1)
        grid = {"x": f["axes/x"][:], "y": f["axes/y"][:], "k": [2.5]}
        np.testing.assert_allclose(f["fields/u"][:], r.evaluate(grid)["u"], rtol=1e-6, atol=1e-7)
        exact = np.sin(2.5 * grid["x"])[:, None, None] * np.sin(np.pi * grid["y"])[None, :, None]
        np.testing.assert_allclose(f["reference/u"][:], exact, rtol=1e-12, atol=1e-12)
    assert main(["export", str(tmp_path / "run"), "--at", "k=7"]) == 2
    assert main(["export", str(tmp_path / "run"), "--at", "q=1"]) == 2


def test_a_parameter_axis_mixes_with_a_time_axis():
    p = seppinn.Problem("mixed", axes={"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0),
                                       "mu": seppinn.Axis("mu", 0.5, 2.0, parameter=True)}, fields=["u"])
    p.add_equation("diff(u, t) - mu*lap(u)", name="pde")
    p.add_condition(on="boundary", value=0, name="walls")
    p.add_condition(on="t = min", value="sin(pi*x)", name="initial")
    t, x, mu = p.symbols("t", "x", "mu")
    u = p.field("u")
    assert sp.simplify(p.equations[0].residual - (sp.diff(u, t) - mu * sp.diff(u, x, 2))) == 0
    assert [f.axis for f in p.conditions[0].faces] == [1, 1]
    prep = seppinn.prepare(p, overrides={**SMALL, "train.points": {"t": 5, "x": 6, "mu": 4}})
    assert list(prep.plan.parts[0][0].sizes) == [5, 6, 4]
