"""The safe expression parser: what it accepts, and one clear message for what it refuses."""

from __future__ import annotations

import pytest
import sympy as sp

from seppinn import Problem, ProblemError, TimeAxis
from seppinn.problem.expressions import MAX_NODES, ExprContext, parse_expression


@pytest.fixture
def problem() -> Problem:
    return Problem("p", {"t": (0.0, 1.0), "x": (-1.0, 2.0)}, ["u"], {"k": 2.0}, {"g": "sin(x)"})


def test_grammar(problem):
    t, x = problem.symbols("t", "x")
    u = problem.field("u")
    k = problem.symbols("k")
    assert problem.expr("diff(u, x, 2) + k*u - g") == sp.diff(u, x, 2) + k * u - sp.sin(x)
    assert problem.expr("diff(u, t, x)") == sp.diff(u, t, x)
    assert problem.expr("-x**2 / 4 + E + pi") == -x**2 / 4 + sp.E + sp.pi
    for name in ("sin", "cos", "tan", "exp", "log", "sqrt", "tanh", "sinh", "cosh", "abs"):
        problem.expr(f"{name}(x + 2)")


def test_lap_and_grad2_skip_the_time_axis():
    p = Problem("p", {"t": TimeAxis(0.0, 1.0), "x": (0.0, 1.0), "y": (0.0, 1.0)}, ["u"])
    t, x, y = p.symbols("t", "x", "y")
    u = p.field("u")
    assert p.expr("lap(u)") == sp.diff(u, x, 2) + sp.diff(u, y, 2)
    assert p.expr("grad2(u)") == sp.diff(u, x) ** 2 + sp.diff(u, y) ** 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("kk*u", r"unknown name 'kk' \(did you mean 'k'\?\)"),
        ("u.real", "attribute access are not allowed"),
        ("u[0]", "subscripts are not allowed"),
        ("open('f')", "unknown function 'open'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("(lambda: 1)()", "lambdas are not allowed"),
        ("(x + 1)(2)", "calls of computed values are not allowed"),
        ("lambda: 1", "lambdas are not allowed"),
        ("'u'", "strings are not allowed"),
        ("[u for u in x]", "comprehensions are not allowed"),
        ("x if x else u", "conditional expressions are not allowed"),
        ("x < 1", "comparisons are not allowed"),
        ("10**10**10", "exponent 10000000000 is too large"),
        ("2**2**2**2**2", "is too large"),
        ("x**1000", "exponent 1000 is too large"),
        ("10.0**300*10**300", "too large"),
        ("1e400", "infinite numbers are not allowed"),
        ("x^2", r"operator '\^' is not allowed \(use \*\* for powers\)"),
        ("x // 2", "operator '//' is not allowed"),
        ("sin(x, x)", "sin takes one argument"),
        ("sin(x=1)", "keyword arguments are not allowed"),
        ("k(x)", "'k' is not a function"),
        ("sin", "'sin' is a function"),
        ("diff(u, k)", "'k' is not an axis"),
        ("diff(u, x, 7)", r"derivative count 7 is outside 1..4"),
        ("1/0", "is not finite"),
        ("sin(" * 70 + "x" + ")" * 70, "nested too deeply"),
        ("-" * 200 + "x", "nested too deeply"),
        ("x +", "syntax error"),
        ("", "empty expression"),
        ("x" * 20000, "longer than"),
    ],
)
def test_refused(problem, text, message):
    with pytest.raises(ProblemError, match=message):
        problem.expr(text)


def test_node_count_caps_chained_definitions():
    defs = {"d0": "sin(x)*cos(x) + x"}
    for i in range(1, 30):
        defs[f"d{i}"] = f"d{i - 1}*d{i - 1} + sin(d{i - 1})"
    with pytest.raises(ProblemError, match=f"more than {MAX_NODES} nodes") as info:
        Problem("p", {"x": (0.0, 1.0)}, ["u"], definitions=defs)
    assert info.value.key is not None and info.value.key.startswith("definitions.d")


def test_nested_laplacians_are_capped():
    ctx = ExprContext(axes={"x": sp.Symbol("x")}, spatial=[sp.Symbol("x")])
    text = "exp(sin(x)*cos(x)*x**3)"
    for _ in range(12):
        text = f"lap({text})"
    with pytest.raises(ProblemError, match="lap: expression too large to differentiate"):
        parse_expression(text, ctx)


def test_error_names_file_and_key(problem):
    with pytest.raises(ProblemError) as info:
        problem.add_equation("lap(u) + kk")
    assert str(info.value) == "<python>: equations[0].residual: unknown name 'kk' (did you mean 'k'?)"
