"""Learned scalars (``[parameters] k = { initial = 1.0, learn = true }``): the gradient with respect to
k on every path (grid, fused CP block with k as its coefficient, grid-free, compiled) against
autograd of the grid loss, the reparametrisations, exact resume, the outputs, and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import sympy as sp
import torch

import seppinn
from seppinn import ProblemError
from seppinn.cli import main
from seppinn.compile.plan import make_plan
from seppinn.io.runs import storable
from seppinn.model.learned import LearnedScalars, ScalarSpec
from seppinn.train.loop import Trainer

from .conftest import PLAIN, trained, write

HEAT = """
[problem]
name = "inverse_heat"
[axes]
t = { range = [0.0, 1.0], time = true }
x = [0.0, 1.0]
[fields]
u = {}
[parameters]
k = { initial = 1.0, learn = true, positive = true }
[definitions]
exact = "sin(pi*x)*exp(-0.3*pi**2*t)"
[[equations]]
name = "pde"
residual = "diff(u, t) - k*diff(u, x, 2) + (k - 0.3)*x*(1 - x)"
[[conditions]]
name = "initial"
on = "t = min"
value = "exact"
[data]
u = "exact"
[reference]
u = "exact"
"""
OV = {**PLAIN, "train.dtype": "float64", "train.points": {"t": 9, "x": 8}, "model.rank": 4, "model.width": 10,
      "model.depth": 3, "model.activation": "tanh", "train.test_points": 5, "train.compile": False}


def trainer(tmp_path, mode=None, text=HEAT, **extra):
    prep = seppinn.prepare(write(tmp_path / "heat.toml", text), overrides={**OV, **extra})
    return Trainer(prep.compiled, prep.config, plan=make_plan(prep.compiled, prep.config, mode=mode),
                   device=torch.device("cpu"), progress=False)


def k_gradient(tr, fn=None):
    """(each term's loss, d(total)/d(raw k)) at the current parameters."""
    out = (fn or tr._loss_stack)()
    raw = tr.model.learned.raw["k"]
    (g,) = torch.autograd.grad(out[:len(tr.c.terms)].sum(), [raw])
    return out.detach(), g


@pytest.mark.parametrize("mode", ["fused", "grid_free"])
def test_k_gradient_on_every_path_equals_the_grid_path(tmp_path, mode):
    grid = trainer(tmp_path, "grid")
    other = trainer(tmp_path, mode)
    pde = [t.name for t in grid.c.terms].index("pde")
    assert grid.plan.parts[pde][0].mode == "grid" and other.plan.parts[pde][0].mode == mode
    # the whole residual is a CP tensor: k multiplies u_xx as a block's coefficient, and k x (1 - x) is a source
    lin = other.losses.parts[pde][0].cp[0].lin
    k = sp.Symbol("k", real=True)
    assert lin.exact and any(b.field == "u" and any(k in s.coef.free_symbols for axis in b.axes for s in axis)
                             for b in lin.blocks)
    with torch.no_grad():  # away from the initial value, so that k's reparametrisation is not trivial
        for tr in (grid, other):
            tr.model.learned.raw["k"].fill_(-0.7)
    (lg, gg), (lo, go) = k_gradient(grid), k_gradient(other)
    torch.testing.assert_close(lo, lg, rtol=1e-10, atol=0)
    torch.testing.assert_close(go, gg, rtol=1e-9, atol=1e-14)
    assert abs(float(gg)) > 1e-6


def test_k_gradient_compiled_equals_eager(tmp_path):
    tr = trainer(tmp_path, **{"train.compile": True})
    assert tr._compiled is not None
    (le, ge), (lc, gc) = k_gradient(tr), k_gradient(tr, tr._compiled)
    torch.testing.assert_close(lc, le, rtol=1e-10, atol=0)
    torch.testing.assert_close(gc, ge, rtol=1e-9, atol=1e-14)


def test_reparametrisations_keep_the_value_inside():
    specs = [ScalarSpec("a", 2.5), ScalarSpec("b", 0.3, positive=True), ScalarSpec("c", 0.2, range=(-1.0, 3.0))]
    m = LearnedScalars(specs)
    for n, v in m.numbers().items():
        assert v == pytest.approx({"a": 2.5, "b": 0.3, "c": 0.2}[n], rel=1e-12)
    with torch.no_grad():
        for p in m.raw.values():
            p.fill_(-50.0)
    values = m.numbers()
    assert values["a"] == -50.0 and 0 < values["b"] < 1e-20 and values["c"] == pytest.approx(-1.0)


def test_learned_k_trains_resumes_exactly_and_is_written(tmp_path, capsys):
    path = write(tmp_path / "heat.toml", HEAT.replace("positive = true", "positive = true, lr = 0.02"))
    ov = {**OV, "train.iterations": 40, "train.eval_every": 10, "train.checkpoint_every": 15}
    prep = seppinn.prepare(path, overrides=ov)
    full_tr, full = trained(prep)
    _, part = trained(prep, stop_at=15)
    torch.save(storable(part.last_good), tmp_path / "snap.pt")
    rest_tr, rest = trained(prep, resume=torch.load(tmp_path / "snap.pt", weights_only=True))
    for a, b in zip(full_tr.model.state_dict().values(), rest_tr.model.state_dict().values()):
        assert torch.equal(a, b)
    ks = [ev.diagnostics["parameter/k"] for ev in full.history]
    assert ks == [ev.diagnostics["parameter/k"] for ev in rest.history]
    assert ks[0] == pytest.approx(1.0) and ks[-1] < 0.9  # its own lr 0.02: 40 steps move it (towards 0.3)
    # the CLI: progress line, history, summary, solution.h5 attribute
    out = tmp_path / "run"
    assert main(["solve", str(path), "--out", str(out), "--set", "train.iterations=4", "--set", "train.eval_every=2",
                 "--set", "model.width=8", "--set", "train.points=8", "--set", "train.lbfgs_iterations=0"]) == 0
    assert " k " in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    k = summary["parameters"]["k"]
    assert set(k) == {"final", "at_min_loss"} and k["final"] < 1.0
    with h5py.File(out / "solution.h5") as f:
        assert f["history/parameter/k"].shape == (3,) and f["history/parameter/k"][0] == pytest.approx(1.0)
        assert f.attrs["parameter_k"] == pytest.approx(k["final"])


def test_python_api_parameter():
    p = seppinn.Problem("api", axes={"x": (0.0, 1.0)}, fields=["u"])
    k = p.parameter("k", 2.0, learn=True, range=(1.0, 4.0))
    u = p.field("u")
    p.add_equation(sp.diff(u, p.symbols("x"), 2) - k, name="pde")
    assert p.learned["k"].range == (1.0, 4.0) and "k" not in p.parameter_values
    assert p.parameter("c", 3.0) == p.symbols("c") and p.parameter_values["c"] == 3.0


@pytest.mark.parametrize("table, key, message", [
    ('k = { initial = "one", learn = true }', "parameters.k.initial", "expected a finite number, got 'one'"),
    ('k = { initial = 1.0, learn = "yes" }', "parameters.k.learn", "expected true or false, got 'yes'"),
    ('k = { initial = 1.0, learn = true, range = [2, 3] }', "parameters.k.range",
     "the range [2, 3] does not contain the initial value 1"),
    ('k = { initial = -1.0, learn = true, positive = true }', "parameters.k.initial",
     "positive = true needs an initial value above 0, got -1"),
    ('k = { initial = 1.0, learn = true, lr = 0 }', "parameters.k.lr", "expected a positive number, got 0"),
    ('k = { initial = 1.0, learn = true, step = 2 }', "parameters.k.step", "unknown key"),
    ('k = { initial = 1.0, learn = true }\nk2 = "2*k"', "parameters.k2", "cannot depend on the learned parameter 'k'"),
])
def test_bad_learned_parameters_get_one_message(tmp_path, capsys, table, key, message):
    text = HEAT.replace("k = { initial = 1.0, learn = true, positive = true }", table)
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ProblemError) as exc:
        seppinn.prepare(path)
    assert key in str(exc.value) and message in str(exc.value)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err


def test_a_reference_may_not_use_a_learned_parameter(tmp_path):
    text = HEAT.replace('[reference]\nu = "exact"', '[reference]\nu = "exact*k"')
    with pytest.raises(ProblemError, match="reference.u: a reference cannot use the learned parameter 'k'"):
        seppinn.prepare(write(tmp_path / "bad.toml", text))


POSITIVE = """
[problem]
name = "coef"
[axes]
x = [0.0, 1.0]
y = [-1.0, 1.0]
[fields]
a = { positive = true }
[[equations]]
name = "slope"
residual = "diff(a, x) + a*diff(a, y, 2) - 1"
[data]
a = "2 + x*y"
[reference]
a = "2 + x*y"
"""


def test_a_positive_field_is_softplus_of_its_model_in_every_residual_and_output(tmp_path):
    from torch.func import jvp

    tr = trainer(tmp_path, "grid", text=POSITIVE, **{"train.points": {"x": 7, "y": 6}})
    x, y = tr.points[("train", 0)], tr.points[("train", 1)]
    net = lambda x, y: tr.model["a"]([x, y])[..., 0]  # noqa: E731  the model's own product
    a = torch.nn.functional.softplus(net(x, y))
    a_x = jvp(lambda s: torch.nn.functional.softplus(net(s, y)), (x,), (torch.ones_like(x),))[1]
    a_yy = jvp(lambda s: jvp(lambda z: torch.nn.functional.softplus(net(x, z)), (s,), (torch.ones_like(y),))[1],
               (y,), (torch.ones_like(y),))[1]
    losses = tr.losses()
    torch.testing.assert_close(losses["slope"], ((a_x + a * a_yy - 1) ** 2).mean(), rtol=1e-10, atol=0)
    torch.testing.assert_close(losses["data"], ((a - (2 + x[:, None] * y[None])) ** 2).mean(), rtol=1e-10, atol=0)
    grid = [np.linspace(0, 1, 4), np.linspace(-1, 1, 3)]
    pred = tr.evaluator.predict(grid)["a"][..., 0]
    want = torch.nn.functional.softplus(net(*(torch.as_tensor(g) for g in grid)))
    torch.testing.assert_close(pred, want, rtol=1e-12, atol=0)
    assert bool((pred > 0).all())
    assert tr.plan.metric_modes["a"] == "grid" and "a on the grid" in seppinn.api.check_report(
        seppinn.prepare(write(tmp_path / "c.toml", POSITIVE), overrides={**OV, "train.points": 6}))


def test_positive_field_refusals(tmp_path):
    with pytest.raises(ProblemError, match=r"fields\.a\.positive: expected true or false, got 'yes'"):
        seppinn.prepare(write(tmp_path / "b.toml", POSITIVE.replace("positive = true", 'positive = "yes"')))
    hard = POSITIVE.replace("[data]", '[[conditions]]\non = ["x = 0", "x = 1"]\nexpr = "a"\nvalue = 1\n'
                                      'enforce = "hard"\n[data]')
    with pytest.raises(ProblemError, match="field 'a' is positive .* cannot also have a hard condition"):
        seppinn.prepare(write(tmp_path / "h.toml", hard))
