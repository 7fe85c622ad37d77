"""Sympy expressions -> torch functions, by walking the sympy tree (no code generation).

``lower(expr)`` returns ``f(env)`` where ``env`` maps each free symbol to a tensor (or float);
``split_constants`` pulls every subexpression that does not involve the given symbols out into
fresh symbols, so that coordinate-only parts (source terms, coefficients) are evaluated once per
grid instead of at every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from ..errors import ProblemError

Env = Mapping[sp.Symbol, torch.Tensor | float]
Lowered = Callable[[Env], torch.Tensor | float]

class sigmoid(sp.Function):  # type: ignore[misc]  # noqa: N801 (printed as the function it is)
    """1 / (1 + exp(-z)), with its derivative for sympy's chain rule."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):  # type: ignore[misc]  # noqa: N801
    """log(1 + exp(z)) (a positive field's map, ``fields.a = { positive = true }``); d/dz = sigmoid."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        return sigmoid(self.args[0])


class CoordinateFunction(sp.Function):  # type: ignore[misc]
    """A function of coordinates that torch code computes (time marching's frozen window,
    ``seppinn.marching``): subclasses set ``torch_fn(*args) -> tensor`` (elementwise over
    broadcastable coordinate tensors) and ``fdiff``; it is real-valued."""

    torch_fn: Callable[..., torch.Tensor]

    def _eval_is_real(self) -> bool:
        return True


FUNCTIONS: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    softplus: torch.nn.functional.softplus, sigmoid: torch.sigmoid,
    sp.sin: torch.sin, sp.cos: torch.cos, sp.tan: torch.tan, sp.exp: torch.exp,
    sp.log: torch.log, sp.tanh: torch.tanh, sp.sinh: torch.sinh, sp.cosh: torch.cosh,
    sp.Abs: torch.abs, sp.atan: torch.atan, sp.erf: torch.erf, sp.sign: torch.sign,
}


def _as_tensor(v: torch.Tensor | float) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.get_default_dtype())


def _pow(base: Lowered, exp: sp.Expr) -> Lowered:
    if exp.is_Integer:
        n = int(exp)
        if n == 2:
            return lambda env: (lambda b: b * b)(base(env))
        if n == -1:
            return lambda env: 1 / base(env)
        return lambda env: base(env) ** n
    if exp == sp.Rational(1, 2):
        return lambda env: torch.sqrt(_as_tensor(base(env)))
    if exp == sp.Rational(-1, 2):
        return lambda env: torch.rsqrt(_as_tensor(base(env)))
    if exp.is_number:
        e = float(exp)
        return lambda env: base(env) ** e
    ex = lower(exp)
    return lambda env: torch.pow(_as_tensor(base(env)), ex(env))


def lower(expr: sp.Expr) -> Lowered:
    """A torch function of ``env`` computing ``expr`` elementwise with broadcasting."""
    if expr.is_number:
        if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            raise ProblemError(f"'{expr}' is not finite (a division by zero?)")
        value = complex(expr)
        if value.imag != 0:
            raise ProblemError(f"'{expr}' is not real")
        if not math.isfinite(value.real):
            raise ProblemError(f"'{str(expr)[:40]}' is beyond double precision (about 1.8e308)")
        v = value.real
        return lambda env: v
    if isinstance(expr, sp.Symbol):
        return lambda env: env[expr]
    if isinstance(expr, sp.Add):
        parts = [lower(a) for a in expr.args]
        def add(env: Env) -> torch.Tensor | float:
            out = parts[0](env)
            for p in parts[1:]:
                out = out + p(env)
            return out
        return add
    if isinstance(expr, sp.Mul):
        parts = [lower(a) for a in expr.args]
        def mul(env: Env) -> torch.Tensor | float:
            out = parts[0](env)
            for p in parts[1:]:
                out = out * p(env)
            return out
        return mul
    if isinstance(expr, sp.Pow):
        return _pow(lower(expr.base), expr.exp)
    if isinstance(expr, CoordinateFunction):
        args = [lower(a) for a in expr.args]
        torch_fn = type(expr).torch_fn
        return lambda env: torch_fn(*[_as_tensor(a(env)) for a in args])
    fn = FUNCTIONS.get(type(expr))
    if fn is not None and len(expr.args) == 1:
        arg = lower(expr.args[0])
        return lambda env: fn(_as_tensor(arg(env)))
    raise ProblemError(f"cannot evaluate '{expr}' ({type(expr).__name__} is not supported)")


def split_constants(expr: sp.Expr, variables: Sequence[sp.Symbol]) -> tuple[sp.Expr, dict[sp.Symbol, sp.Expr]]:
    """Replace each maximal subexpression free of ``variables`` that is not a plain number by
    a fresh symbol. Returns (new expression, {symbol: subexpression})."""
    consts: dict[sp.Symbol, sp.Expr] = {}
    var = set(variables)

    def const(e: sp.Expr) -> sp.Expr:
        if e.is_number:
            return e
        s = sp.Dummy(f"c{len(consts)}")
        consts[s] = e
        return s

    def walk(e: sp.Expr) -> sp.Expr:
        if not (e.free_symbols & var):
            return const(e)
        if isinstance(e, (sp.Add, sp.Mul)):
            fixed = [a for a in e.args if not (a.free_symbols & var)]
            moving = [walk(a) for a in e.args if a.free_symbols & var]
            if fixed:
                moving.insert(0, const(e.func(*fixed)))
            return e.func(*moving, evaluate=False)
        if not e.args:
            return e
        return e.func(*[walk(a) for a in e.args], evaluate=False)

    return walk(expr), consts


def evaluate_numpy(expr: sp.Expr, env: Mapping[sp.Symbol, Any]) -> np.ndarray:
    """``expr`` evaluated (float64) on numpy coordinates {symbol: broadcastable array}."""
    values = {s: torch.as_tensor(np.asarray(v, dtype=np.float64)) for s, v in env.items()}
    return np.asarray(torch.as_tensor(lower(expr)(values), dtype=torch.float64).numpy())
