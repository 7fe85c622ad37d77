"""Property-based tests (hypothesis) of everything a user can type or hand us: expressions,
solver overrides and data files. Thousands of random and adversarial inputs must either be
accepted or raise the one documented error type; nothing may run code, and parsed expressions
stay within the parser's caps. The work is bounded by example counts, never by timing."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seppinn
from seppinn.io.data_sources import load_all
from seppinn.errors import DataError, ProblemError, SolverConfigError
from seppinn.problem.expressions import MAX_DEPTH, MAX_NODES, count_nodes, parse_expression
from seppinn.problem.solver_config import CHECKS, resolve

from .conftest import DATA_PROBLEM

SETTINGS = settings(max_examples=1500, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SENTINEL = "seppinn_pwned_sentinel"


def problem() -> seppinn.Problem:
    p = seppinn.Problem("h", axes={"x": (0.0, 1.0), "t": seppinn.TimeAxis(0.0, 1.0)}, fields=["u"],
                        parameters={"k": 2.0}, definitions={"g": "sin(k*x)"})
    return p


NAMES = ["x", "t", "u", "k", "g", "pi", "E", "nope", "__import__", "os", "eval", "exec", "open", "__builtins__",
         "self", "lambda", "None", "True"]
FUNCS = ["sin", "exp", "log", "sqrt", "abs", "erf", "diff", "lap", "grad2", "getattr", "eval", "__import__", "open",
         "print", "u", "k"]
BINOPS = ["+", "-", "*", "/", "**", "%", "//", "@", "<", "==", " and ", " or ", "&", "^", ">>"]
ATOMS = st.one_of(
    st.sampled_from(NAMES),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "1e999", "9" * 400, "0", "0.0", "'s'", "b'x'", "[1]", "{}", "...", "1j", "x.real",
                     "x[0]", "f'{x}'", "(lambda: 1)()", "().__class__.__bases__[0].__subclasses__()",
                     f"__import__('os').system('touch {SENTINEL}')", f"open('{SENTINEL}', 'w')"]),
)


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(BINOPS), inner).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
            st.tuples(st.sampled_from(["-", "+", "not ", "~"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(FUNCS), st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.tuples(inner, st.sampled_from(["x", "t", "k", "2", "x, 2", "t, x", "x, 5", "u"])).map(
                lambda t: f"diff({t[0]}, {t[1]})"),
            inner.map(lambda s: f"({s})"),
            st.tuples(inner, st.integers(-200, 200)).map(lambda t: f"({t[0]})**{t[1]}"),
        ),
        max_leaves=40,
    )


def check_parse(text: str) -> None:
    p = problem()
    for build in (lambda: parse_expression(text, p.ctx), lambda: p.add_equation(text), lambda: p.expr(text)):
        try:
            out = build()
        except ProblemError:
            continue
        expr = out.residual if hasattr(out, "residual") else out
        assert isinstance(expr, sp.Expr)
        assert count_nodes(expr) <= MAX_NODES


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / SENTINEL).exists(), "an expression ran code"


@SETTINGS
@given(expressions())
def test_random_expressions_parse_or_raise_problem_error(text):
    check_parse(text)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_problem_error(text):
    check_parse(text)


@pytest.mark.parametrize("text", [
    "(" * 5000 + "x" + ")" * 5000,
    "-" * 5000 + "x",
    "x" + "+x" * 6000,
    "2**2**2**2**2**2",
    "x**(10**10)",
    "(x+1)**64 * (t+1)**64",
    "diff(" * 30 + "u" + ", x)" * 30,
    "lap(lap(lap(lap(lap(g)))))",
    "exp(exp(exp(exp(exp(exp(x))))))",
    "sin(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5),
    "1/0", "0**-1", "log(0)", "x" * 20000,
    f"__import__('os').system('touch {SENTINEL}')",
    "().__class__.__bases__[0].__subclasses__()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "\x00", "\u202e x", "x\n+1", "x # comment", "x;import os",
])
def test_adversarial_expressions(text):
    check_parse(text)


# ------------------------------------------------------------------ solver overrides
KEYS = [f"{table}.{key}" for table, keys in CHECKS.items() for key in keys]


@SETTINGS
@given(st.one_of(st.sampled_from(KEYS), st.text(max_size=30)),
       st.one_of(st.text(max_size=40), st.sampled_from(["1", "-1", "0", "1e999", "nan", "inf", "true", "[1, 2]",
                                                        "{ a = 1 }", '"auto"', "1e-300", "2.5", "[]", "{}", "'x'"])))
def test_random_overrides_resolve_or_raise_solver_config_error(key, value):
    try:
        resolve(overrides=[f"{key}={value}"])
    except SolverConfigError:
        pass


# ------------------------------------------------------------------ data files
def valid_files(folder: Path) -> dict[str, bytes]:
    """Good files of every supported type, as bytes to mutate."""
    arr = np.random.default_rng(0).random((5, 6))
    buf = io.BytesIO()
    np.save(buf, arr)
    with h5py.File(folder / "v.h5", "w") as f:
        f["u"] = arr
    import matplotlib.image as mpimg

    mpimg.imsave(folder / "v.png", arr, cmap="gray")
    csv = "x,y,u\n" + "\n".join(f"{a},{b},{c}" for a, b, c in np.random.default_rng(1).random((6, 3)))
    return {".npy": buf.getvalue(), ".h5": (folder / "v.h5").read_bytes(), ".png": (folder / "v.png").read_bytes(),
            ".csv": csv.encode()}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    return valid_files(tmp_path_factory.mktemp("valid"))


def load(folder: Path, suffix: str, content: bytes) -> None:
    name = f"f{suffix}"
    (folder / name).write_bytes(content)
    spec = f'points = "{name}"' if suffix == ".csv" else f'file = "{name}"'
    try:
        p = seppinn.load_problem(_write(folder / "p.toml", DATA_PROBLEM.replace("SPEC", f"{{ {spec} }}")))
        load_all(p)
    except DataError:
        pass


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@settings(max_examples=800, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([".npy", ".h5", ".png", ".csv"]), st.data())
def test_mutated_data_files_load_or_raise_data_error(tmp_path, good_files, suffix, data):
    content = bytearray(good_files[suffix])
    action = data.draw(st.sampled_from(["truncate", "flip", "random", "empty"]))
    if action == "truncate":
        content = content[: data.draw(st.integers(0, len(content)))]
    elif action == "flip":
        for _ in range(data.draw(st.integers(1, 20))):
            i = data.draw(st.integers(0, len(content) - 1))
            content[i] = data.draw(st.integers(0, 255))
    elif action == "random":
        content = bytearray(data.draw(st.binary(max_size=2000)))
    else:
        content = bytearray()
    load(tmp_path, suffix, bytes(content))


@pytest.mark.parametrize("array", [
    np.full((4, 4), np.nan), np.array([[1.0, np.inf], [0.0, 1.0]]), np.zeros((4, 4), dtype=complex),
    np.array([["a", "b"], ["c", "d"]]), np.zeros((1, 4)), np.zeros((4, 4, 4, 4)), np.zeros(0),
    np.array([[None, 1], [2, 3]], dtype=object),
])
def test_bad_arrays_raise_data_error(tmp_path, array):
    np.save(tmp_path / "a.npy", array, allow_pickle=True)
    p = seppinn.load_problem(_write(tmp_path / "p.toml", DATA_PROBLEM.replace("SPEC", '{ file = "a.npy" }')))
    with pytest.raises(DataError):
        load_all(p)
