"""Problem files: the whole grammar parses, and every kind of bad input gives its one message."""

from __future__ import annotations

import numpy as np
import pytest

import seppinn
from seppinn import DataError, ProblemError, SolverConfigError, load_problem
from seppinn.problem.resources import shipped_dir

from .conftest import HELMHOLTZ_SMALL, write

GOOD = """
[problem]
name = "full-grammar"
title = "every construct of the contract"
[axes]
t = { range = [0.0, 1.0], time = true }
x = [0.0, 2.0]
y = { range = [-1.0, 1.0] }
[fields]
u = {}
v = { components = 1 }
[parameters]
c = 0.5
nu = "c/10"
[definitions]
exact = "exp(-nu*t)*sin(pi*x/2)*cos(pi*y/2)"
[[equations]]
name = "heat"
lhs = "diff(u, t)"
rhs = "nu*lap(u) + diff(exact, t) - nu*lap(exact)"
[[equations]]
residual = "v - u*diff(u, x, 2) - grad2(u) - u**2"
[[conditions]]
name = "walls"
on = "boundary"
expr = "u"
value = "exact"
[[conditions]]
name = "neumann"
on = ["x = max", "y = -1"]
expr = "diff(u, x) + 2*u"
value = "diff(exact, x) + 2*exact"
[[conditions]]
name = "initial"
on = "t = 0"
expr = "u"
value = "exact"
[[conditions]]
name = "initial_velocity"
on = "t = min"
expr = "diff(u, t)"
value = "diff(exact, t)"
[reference]
u = "exact"
[solver.train]
iterations = 10
"""


def test_full_grammar(tmp_path):
    p = load_problem(write(tmp_path / "full.toml", GOOD))
    assert [a.name for a in p.axis_list] == ["t", "x", "y"] and p.axis_list[0].time
    assert p.parameter_values["nu"] == pytest.approx(0.05)
    assert p.term_names == ["heat", "pde", "walls", "neumann", "initial", "initial_velocity"]
    walls = p.conditions[0]
    assert [f.label(p.axis_list) for f in walls.faces] == ["x = min", "x = max", "y = min", "y = max"]
    assert [f.label(p.axis_list) for f in p.conditions[1].faces] == ["x = max", "y = min"]
    assert seppinn.prepare(p).compiled.orders["u"] == [1, 2, 2]  # the highest order per axis over the terms
    assert p.solver_table == {"train": {"iterations": 10}}


@pytest.mark.parametrize("name", sorted(f.name for f in shipped_dir("problems").glob("*.toml")))
def test_shipped_problems_parse_and_compile(name):
    prep = seppinn.prepare(shipped_dir("problems") / name)
    assert prep.compiled.terms


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


BAD = [
    ("[problem\nname = 'x'", ProblemError, r"bad\.toml: TOML syntax error"),
    (_replace(HELMHOLTZ_SMALL, "[fields]", "[feilds]"), ProblemError, r"bad\.toml: feilds: unknown key 'feilds' \(did you mean 'fields'\?\)"),
    (_replace(HELMHOLTZ_SMALL, 'value = "exact"', 'valeu = "exact"'), ProblemError, r"conditions\[0\]\.valeu: unknown key 'valeu' \(did you mean 'value'\?\)"),
    (_replace(HELMHOLTZ_SMALL, "lap(u) - lap(exact)", "lap(u) - lap(exakt)"), ProblemError, r"equations\[0\]\.residual: unknown name 'exakt' \(did you mean 'exact'\?\)"),
    (_replace(HELMHOLTZ_SMALL, "lap(u) - lap(exact)", "lap(u) - exact.real"), ProblemError, r"equations\[0\]\.residual: attribute access"),
    (_replace(HELMHOLTZ_SMALL, "lap(u) - lap(exact)", "lap(u) - system(1)"), ProblemError, r"unknown function 'system'"),
    (_replace(HELMHOLTZ_SMALL, "lap(u) - lap(exact)", "lap(u)**(9**9**9)"), ProblemError, r"too large"),
    (_replace(HELMHOLTZ_SMALL, "lap(u) - lap(exact)", "lap(lap(lap(u)))"), ProblemError, r"derivative of order 6 along x; at most 4"),
    (_replace(HELMHOLTZ_SMALL, 'on = "boundary"', 'on = "x = 2"'), ProblemError, r"conditions\[0\]\.on: 'x = 2' is not a face: axis x spans \[-1, 1\]"),
    (_replace(HELMHOLTZ_SMALL, 'on = "boundary"', 'on = "z = 0"'), ProblemError, r"'z = 0' is not a face: unknown axis 'z'"),
    (_replace(HELMHOLTZ_SMALL, "y = [0.0, 2.0]", "y = [2.0, 0.0]"), ProblemError, r"axes\.y: interval \[2\.0, 0\.0\] is empty or reversed"),
    (_replace(HELMHOLTZ_SMALL, "x = [-1.0, 1.0]\ny = [0.0, 2.0]", "x = { range = [-1.0, 1.0], time = true }\ny = { range = [0.0, 2.0], time = true }"), ProblemError, r"axes\.y: only one axis may be the time axis \(also: x\)"),
    (_replace(_replace(HELMHOLTZ_SMALL, "u = {}", "u = {}\nw = {}"), 'on = "boundary"', 'on = "boundary"\nexpr = "u"'), ProblemError, r"fields\.w: field 'w' appears in no equation"),
    (_replace(HELMHOLTZ_SMALL, "[definitions]", "[parameters]\nk = nan\n[definitions]"), ProblemError, r"parameters\.k: NaN"),
    (_replace(HELMHOLTZ_SMALL, "[reference]\nu = \"exact\"", "[data]\nu = { file = \"missing.h5\" }"), DataError, r"data\.u: data file .*missing\.h5' not found"),
    (_replace(HELMHOLTZ_SMALL, "[reference]\nu = \"exact\"", "[data]\nu = \"exact\"\n[solver.model]\nactivation = \"relu\""), SolverConfigError, r"model\.activation: 'relu' has zero derivatives of order > 1 .* needs order 2 along y"),
    (_replace(HELMHOLTZ_SMALL, "[reference]", "[solver.train]\niteratons = 3\n[reference]"), SolverConfigError, r"bad\.toml: solver\.train\.iteratons: unknown key 'iteratons' \(did you mean 'iterations'"),
    (_replace(HELMHOLTZ_SMALL, "[reference]", "[solver.train.weights]\nwals = 3\n[reference]"), SolverConfigError, r"train\.weights\.wals: unknown term 'wals' \(did you mean 'walls'\?\)"),
]


@pytest.mark.parametrize("text, error, message", BAD, ids=range(len(BAD)))
def test_bad_input_message(tmp_path, text, error, message):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(error, match=message):
        seppinn.prepare(path)


def test_unreadable_and_wrong_data_files(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 20)  # truncated HDF5
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5, 6)))
    np.save(tmp_path / "nan.npy", np.full((4, 5), np.nan))
    for name, message in [("bad.h5", "cannot read"), ("wrong.npy", r"has shape \(4, 5, 6\)"),
                          ("nan.npy", "20 non-finite values")]:
        text = _replace(HELMHOLTZ_SMALL, "[reference]\nu = \"exact\"", f"[data]\nu = {{ file = \"{name}\" }}")
        with pytest.raises(DataError, match=message):
            seppinn.prepare(write(tmp_path / "p.toml", text))


def test_data_file_fixes_its_grid(tmp_path):
    x, y = np.linspace(-1, 1, 7), np.linspace(0, 2, 5)
    np.save(tmp_path / "obs.npy", np.sin(np.pi * x)[:, None] * np.sin(np.pi * y)[None, :])
    text = _replace(HELMHOLTZ_SMALL, "[reference]", "[data]\nu = { file = \"obs.npy\", keep = 0.5, seed = 3 }\n[reference]")
    prep = seppinn.prepare(write(tmp_path / "p.toml", text))
    assert prep.compiled.file_grids == {"u": [7, 5]}
    data = [t for t in prep.compiled.terms if t.kind == "data"][0]
    mask = data.parts[0].mask
    again = seppinn.prepare(tmp_path / "p.toml").compiled.terms[-1].parts[0].mask
    assert mask is not None and mask.shape == (7, 5, 1) and (mask == again).all() and 0 < mask.mean() < 1


def test_periodic_axis_and_hard_condition_rules(tmp_path):
    p = seppinn.Problem("per", {"x": seppinn.Axis("x", 0.0, 1.0, periodic=True),
                                "y": (0.0, 1.0)}, ["u"])
    p.add_equation("lap(u) - sin(2*pi*x)")
    walls = p.add_condition(on="boundary", value="0")
    assert [f.label(p.axis_list) for f in walls.faces] == ["y = min", "y = max"]  # periodic x has no walls
    with pytest.raises(ProblemError, match=r"conditions\[1\]\.on: enforce = 'hard' needs the faces of one axis"):
        p.add_condition(on=["y = min", "x = min"], value="0", enforce="hard")
    with pytest.raises(ProblemError, match=r"conditions\[1\]\.expr: enforce = 'hard' is for Dirichlet"):
        p.add_condition(on=["y = min", "y = max"], expr="diff(u, y)", enforce="hard")
    p.add_condition(on=["y = min", "y = max"], value="x", enforce="hard", name="h")
    with pytest.raises(ProblemError, match="already has a hard condition"):
        p.add_condition(on=["x = min", "x = max"], value="0", enforce="hard")
    assert p.term_names == ["pde", "condition"]
    q = seppinn.Problem("fade", {"t": seppinn.TimeAxis(0.0, 1.0), "x": (0.0, 1.0)}, ["u"])
    for kwargs, message in [(dict(on="t = min", enforce="hard", fade=0.0), "0.0 is not a positive number"),
                            (dict(on="t = min", enforce="hard", fade=True), "True is not a positive number"),
                            (dict(on="t = min", enforce="hard", fade="0.1"), "'0.1' is not a positive number"),
                            (dict(on="t = min", fade=0.1), "fade is for a hard condition on one face"),
                            (dict(on=["x = min", "x = max"], enforce="hard", fade=0.1), "fade is for a hard condition")]:
        with pytest.raises(ProblemError, match=rf"conditions\[0\]\.fade: {message}"):
            q.add_condition(value="x", **kwargs)
    assert q.add_condition(on="t = min", value="x", enforce="hard", fade=1).fade == 1.0
    with pytest.raises(ProblemError, match="the time axis cannot be periodic"):
        seppinn.Problem("t", {"t": seppinn.Axis("t", 0.0, 1.0, time=True, periodic=True)}, ["u"])
