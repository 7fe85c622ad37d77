"""Safe expression parsing: Python's ``ast`` walked node by node into sympy.

User text is never given to ``eval``, ``exec``, ``sympify`` or ``parse_expr``. Only numbers,
``+ - * / **``, unary signs, known names and calls of registered functions/operators are
accepted; sizes are capped (characters, nesting depth, exponents, node count after expansion)
so that no expression can run code or exhaust the machine.
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from ..errors import ProblemError, did_you_mean

MAX_CHARS = 10_000
MAX_DEPTH = 60  # AST nesting depth
MAX_EXPONENT = 64  # |n| in a**n for a numeric n
MAX_NODES = 5_000  # sympy tree size after definitions and derivatives are expanded
MAX_DIFF_NODES = MAX_NODES // 4  # largest expression a derivative is taken of (derivatives grow)
MAX_DIFF_COUNT = 4  # diff(f, x, n): n per axis (jets carry derivatives up to order 4)
MAX_MAGNITUDE = 1e300
MAX_EXPANDED_TERMS = 5_000  # sympy.expand is only called when the result has at most this many terms
SYMBOLIC_SECONDS = 60.0  # symbolic work (parsing, separability, lowering) of one problem at most

CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}

# Elementwise functions a problem file may call: name -> (sympy function, number of arguments).
# compiler.lower_to_torch must handle every one of them (tests loop over this registry).
FUNCTIONS: dict[str, Callable[..., sp.Expr]] = {
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "abs": sp.Abs,
    "atan": sp.atan,
    "erf": sp.erf,
}


@dataclass
class ExprContext:
    """The names an expression may use. Symbols are sympy objects; nothing here is torch."""

    axes: dict[str, sp.Symbol]
    spatial: list[sp.Symbol]  # the non-time axes (lap, grad2)
    fields: dict[str, sp.Expr] = field(default_factory=dict)  # name -> u(x, y, ...)
    parameters: dict[str, sp.Symbol] = field(default_factory=dict)
    definitions: dict[str, sp.Expr] = field(default_factory=dict)  # already expanded

    def names(self) -> dict[str, sp.Expr]:
        out: dict[str, sp.Expr] = dict(CONSTANTS)
        out.update(self.axes)
        out.update(self.parameters)
        out.update(self.definitions)
        out.update(self.fields)
        return out


# Operators: sympy-level macros callable from expressions. Built-ins get the context
# (lap needs to know the spatial axes); user operators registered with seppinn.operator get
# only their sympy arguments.
OperatorFn = Callable[[ExprContext, list[sp.Expr]], sp.Expr]
OPERATORS: dict[str, OperatorFn] = {}
OPERATOR_DOCS: dict[str, str] = {}


def register_operator(name: str, doc: str) -> Callable[[OperatorFn], OperatorFn]:
    def deco(fn: OperatorFn) -> OperatorFn:
        OPERATORS[name] = fn
        OPERATOR_DOCS[name] = doc
        return fn

    return deco


NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def operator(name: str, doc: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a sympy-level operator usable in problem files and ``Problem`` expressions.

    The decorated function receives the call's arguments as sympy objects (axes as Symbols,
    numbers as sympy numbers) and returns a sympy expression::

        @seppinn.operator("adv", "adv(f, c, x): c * df/dx")
        def adv(f, c, axis):
            return c * sp.diff(f, axis)

    Registering a name again replaces the earlier user operator; built-in operators, functions
    and constants cannot be replaced (ValueError). Errors raised inside the operator reach the
    user as ``ProblemError("operator adv: ...")`` naming the file and key.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"operator name {name!r} is not an identifier")
    if name in BUILTIN_OPERATORS or name in FUNCTIONS or name in CONSTANTS:
        raise ValueError(f"'{name}' is a built-in name and cannot be redefined")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(ctx: ExprContext, args: list[sp.Expr]) -> sp.Expr:
            out = fn(*args)
            if isinstance(out, (int, float)):
                return sp.Float(out) if isinstance(out, float) else sp.Integer(out)
            if not isinstance(out, sp.Expr):
                raise ProblemError(f"operator {name}: returned {type(out).__name__}, not a sympy expression")
            return out

        OPERATORS[name] = call
        OPERATOR_DOCS[name] = doc or (fn.__doc__ or "").strip().split("\n")[0] or f"{name}(...): user operator"
        return fn

    return deco


def _axis_arg(ctx: ExprContext, arg: sp.Expr, op: str) -> sp.Symbol:
    if isinstance(arg, sp.Symbol) and arg in ctx.axes.values():
        return arg
    raise ProblemError(f"{op}: '{arg}' is not an axis (axes: {', '.join(ctx.axes)})")


@register_operator("diff", "diff(f, x), diff(f, x, 2), diff(f, x, y): partial derivatives")
def _diff(ctx: ExprContext, args: list[sp.Expr]) -> sp.Expr:
    if len(args) < 2:
        raise ProblemError("diff needs an expression and at least one axis: diff(f, x)")
    f, rest = _differentiable(args[0], "diff"), args[1:]
    spec: list[tuple[sp.Symbol, int]] = []
    for a in rest:
        if isinstance(a, sp.Integer):
            if not spec:
                raise ProblemError("diff: a derivative count must follow an axis: diff(f, x, 2)")
            n = int(a)
            if not 1 <= n <= MAX_DIFF_COUNT:
                raise ProblemError(f"diff: derivative count {n} is outside 1..{MAX_DIFF_COUNT}")
            spec[-1] = (spec[-1][0], spec[-1][1] + n - 1)
        else:
            spec.append((_axis_arg(ctx, a, "diff"), 1))
    totals: dict[sp.Symbol, int] = {}
    for sym, n in spec:
        totals[sym] = totals.get(sym, 0) + n
    for sym, n in totals.items():
        if n > MAX_DIFF_COUNT:
            raise ProblemError(f"diff: order {n} along {sym}; at most {MAX_DIFF_COUNT} per axis")
    out = f
    for sym, n in spec:
        out = sp.diff(out, sym, n)
    return check_derivative_orders(out)


def check_derivative_orders(expr: sp.Expr) -> sp.Expr:
    """``expr`` when no field derivative in it exceeds order MAX_DIFF_COUNT along any axis (the
    jets carry derivatives up to that order); nested operators add up (lap(lap(lap(u))) is 6)."""
    for d in sorted(expr.atoms(sp.Derivative), key=str):  # sorted: the same message every run
        for sym, n in d.variable_count:
            if n > MAX_DIFF_COUNT:
                raise ProblemError(f"a derivative of order {n} along {sym}; at most {MAX_DIFF_COUNT} per axis")
    return expr


@register_operator("lap", "lap(f): sum of second derivatives over the non-time axes")
def _lap(ctx: ExprContext, args: list[sp.Expr]) -> sp.Expr:
    if len(args) != 1:
        raise ProblemError("lap takes one argument: lap(f)")
    f = _differentiable(args[0], "lap")
    return check_derivative_orders(sp.Add(*[sp.diff(f, s, 2) for s in ctx.spatial]))


@register_operator("grad2", "grad2(f): |grad f|^2 over the non-time axes")
def _grad2(ctx: ExprContext, args: list[sp.Expr]) -> sp.Expr:
    if len(args) != 1:
        raise ProblemError("grad2 takes one argument: grad2(f)")
    f = _differentiable(args[0], "grad2")
    return check_derivative_orders(sp.Add(*[sp.diff(f, s) ** 2 for s in ctx.spatial]))


# dn(f) stays unevaluated in the spec: on a condition's faces the compiler replaces it by the
# derivative along that face's outward normal (compile.compiler.outward_normal)
NormalDerivative = sp.Function("dn")


@register_operator("dn", "dn(f): the outward normal derivative on a condition's face (d/dx on x = max, -d/dx on x = min)")
def _dn(ctx: ExprContext, args: list[sp.Expr]) -> sp.Expr:
    if len(args) != 1:
        raise ProblemError("dn takes one argument: dn(u)")
    return NormalDerivative(_differentiable(args[0], "dn"))


BUILTIN_OPERATORS = frozenset(OPERATORS)  # users may add operators, never replace these


def count_nodes(expr: sp.Expr, limit: int = MAX_NODES) -> int:
    """Size of the sympy tree, counting no further than ``limit + 1``."""
    n = 0
    for _ in sp.preorder_traversal(expr):
        n += 1
        if n > limit:
            break
    return n


def _check_size(expr: sp.Expr) -> sp.Expr:
    if count_nodes(expr) > MAX_NODES:
        raise ProblemError(f"expression too large after expansion (more than {MAX_NODES} nodes)")
    return expr


def expanded_terms(expr: sp.Expr, limit: int = MAX_EXPANDED_TERMS) -> int:
    """An upper bound on the number of terms ``sympy.expand(expr)`` gives, counting no further
    than ``limit + 1``: sums add, products multiply, an integer power n of a k-term sum gives
    C(n + k - 1, k - 1) terms (the multinomial count). Arguments of functions are expanded too,
    so each of them must stay within ``limit`` as well."""
    if expr.is_Add:
        total = 0
        for a in expr.args:
            total += expanded_terms(a, limit)
            if total > limit:
                return limit + 1
        return total
    if expr.is_Mul:
        prod = 1
        for a in expr.args:
            prod *= expanded_terms(a, limit)
            if prod > limit:
                return limit + 1
        return prod
    if expr.is_Pow:
        base, exp = expr.args
        k = expanded_terms(base, limit)
        if exp.is_Integer and int(exp) > 1:
            n = int(exp)
            return limit + 1 if k > limit else min(math.comb(n + k - 1, k - 1), limit + 1)
        return limit + 1 if k > limit or expanded_terms(exp, limit) > limit else 1
    if any(expanded_terms(a, limit) > limit for a in expr.args):
        return limit + 1
    return 1


def expand_bounded(expr: sp.Expr, limit: int = MAX_EXPANDED_TERMS) -> sp.Expr | None:
    """``sympy.expand(expr)``, or None when it would have more than ``limit`` terms (checked
    before expanding, so a 6-term sum to the 64th power costs nothing)."""
    if expanded_terms(expr, limit) > limit:
        return None
    return sp.expand(expr)


class _OutOfTime(BaseException):
    """Raised by the SIGALRM handler of ``symbolic_budget`` (a BaseException: no ``except
    Exception`` on the way may swallow it)."""


@contextlib.contextmanager
def symbolic_budget(what: str, seconds: float | None = None) -> Iterator[None]:
    """Raise ProblemError when the block runs longer than ``seconds`` (default SYMBOLIC_SECONDS):
    the backstop for symbolic work that no size cap foresaw. Uses SIGALRM, so it only applies
    in the main thread on POSIX; nested budgets keep the outer one."""
    seconds = SYMBOLIC_SECONDS if seconds is None else seconds
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or signal.getsignal(signal.SIGALRM) is _on_alarm:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _OutOfTime:
        raise ProblemError(f"{what} took more than {seconds:g} s of symbolic work (expansion, "
                           "differentiation); simplify the expressions") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _on_alarm(signum: int, frame: object) -> None:
    raise _OutOfTime


def derivative_hint(name: str, ctx: ExprContext) -> str:
    """' (did you mean diff(u, x, 2)?)' for a subscript name like u_xx of a field u and axes x..., else ""."""
    field_name, _, sub = name.partition("_")
    if field_name not in ctx.fields or not sub:
        return ""
    axes = [sub] if sub in ctx.axes else list(sub) if all(c in ctx.axes for c in sub) else []
    if not axes:
        return ""
    if len(set(axes)) == 1 and len(axes) > 1:
        return f" (did you mean diff({field_name}, {axes[0]}, {len(axes)})?)"
    return f" (did you mean diff({field_name}, {', '.join(axes)})?)"


def _differentiable(expr: sp.Expr, op: str) -> sp.Expr:
    """Refuse to differentiate an expression so large that its derivative would blow the cap."""
    if count_nodes(expr, MAX_DIFF_NODES) > MAX_DIFF_NODES:
        raise ProblemError(f"{op}: expression too large to differentiate (more than {MAX_DIFF_NODES} nodes)")
    return expr


_NODE_NAMES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Starred: "starred arguments",
    ast.NamedExpr: "assignments",
    ast.JoinedStr: "strings",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}

_BINOPS: dict[type, Callable[[sp.Expr, sp.Expr], sp.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Builder:
    def __init__(self, ctx: ExprContext, extra_names: Mapping[str, sp.Expr] | None) -> None:
        self.ctx = ctx
        self.names = ctx.names()
        if extra_names:
            self.names.update(extra_names)

    def build(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise ProblemError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.build(node.body, d)
        if isinstance(node, ast.Constant):
            return self._constant(node.value)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.build(node.operand, d)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, d)
            raise ProblemError(f"operator '{type(node.op).__name__}' is not allowed")
        if isinstance(node, ast.BinOp):
            left = self.build(node.left, d)
            right = self.build(node.right, d)
            if isinstance(node.op, ast.Pow):
                return self._pow(left, right)
            op = _BINOPS.get(type(node.op))
            if op is None:
                sym = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitXor: "^"}
                shown = sym.get(type(node.op), type(node.op).__name__)
                hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
                raise ProblemError(f"operator '{shown}' is not allowed{hint}")
            return op(left, right)
        if isinstance(node, ast.Call):
            return self._call(node, d)
        what = _NODE_NAMES.get(type(node), f"'{type(node).__name__}'")
        raise ProblemError(f"{what} are not allowed in an expression")

    def _constant(self, value: object) -> sp.Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "strings" if isinstance(value, (str, bytes)) else f"'{value!r}'"
            raise ProblemError(f"{kind} are not allowed in an expression")
        if isinstance(value, float) and math.isnan(value):
            raise ProblemError("NaN is not a usable number")
        if isinstance(value, float) and math.isinf(value):
            raise ProblemError("infinite numbers are not allowed")
        if abs(value) > MAX_MAGNITUDE:
            raise ProblemError(f"number {value!r} is too large")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def _name(self, name: str) -> sp.Expr:
        if name in self.names:
            return self.names[name]
        if name in FUNCTIONS or name in OPERATORS:
            raise ProblemError(f"'{name}' is a function: call it, e.g. {name}(x)")
        known = list(self.names) + list(FUNCTIONS) + list(OPERATORS)
        raise ProblemError(f"unknown name '{name}'{derivative_hint(name, self.ctx) or did_you_mean(name, known)}")

    def _pow(self, base: sp.Expr, exp: sp.Expr) -> sp.Expr:
        if exp.is_number:
            e = complex(exp)
            if e.imag != 0 or abs(e.real) > MAX_EXPONENT:
                raise ProblemError(f"exponent {exp} is too large (|exponent| <= {MAX_EXPONENT})")
            if base.is_number:
                b = abs(complex(base))
                if b > 0 and math.log10(b) * e.real > math.log10(MAX_MAGNITUDE):
                    raise ProblemError(f"number {base}**{exp} is too large")
        return _check_size(base**exp)

    def _call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            what = _NODE_NAMES.get(type(node.func), "calls of computed values")
            raise ProblemError(f"{what} are not allowed in an expression")
        name = node.func.id
        if name not in OPERATORS and name not in FUNCTIONS:
            if name in self.names:
                raise ProblemError(f"'{name}' is not a function and cannot be called")
            known = list(FUNCTIONS) + list(OPERATORS)
            raise ProblemError(f"unknown function '{name}'{did_you_mean(name, known)}")
        if node.keywords:
            raise ProblemError(f"{name}: keyword arguments are not allowed")
        args = [self.build(a, depth) for a in node.args]
        if name in OPERATORS:
            try:
                return _check_size(OPERATORS[name](self.ctx, args))
            except ProblemError:
                raise
            except Exception as exc:  # a user operator's own failure
                raise ProblemError(f"operator {name}: {exc}") from None
        if len(args) != 1:
            raise ProblemError(f"{name} takes one argument, got {len(args)}")
        return _check_size(FUNCTIONS[name](args[0]))


def parse_expression(
    text: object, ctx: ExprContext, extra_names: Mapping[str, sp.Expr] | None = None
) -> sp.Expr:
    """Parse ``text`` (a str, number or sympy expression) into a sympy expression.

    Raises ProblemError (without file/key; the caller adds them) for anything not allowed.
    """
    if isinstance(text, sp.Expr):
        return _check_size(text)  # already a sympy object, not user text
    if isinstance(text, bool):
        raise ProblemError("expected an expression, got a boolean")
    if isinstance(text, (int, float)):
        return _Builder(ctx, extra_names)._constant(text)
    if not isinstance(text, str):
        raise ProblemError(f"expected an expression string, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ProblemError(f"expression longer than {MAX_CHARS} characters")
    if not text.strip():
        raise ProblemError("empty expression")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ProblemError(f"syntax error in '{text}': {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ProblemError("expression nested too deeply or too long") from None
    try:
        expr = _Builder(ctx, extra_names).build(tree)
    except RecursionError:
        raise ProblemError("expression nested too deeply") from None
    except ArithmeticError as exc:  # sympy's own 1.0/0.0, overflow in constant folding
        raise ProblemError(f"'{text}' cannot be evaluated: {type(exc).__name__}: {exc}") from None
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ProblemError(f"'{text}' is not finite (division by zero?)")
    return _check_size(expr)


def check_names_are_free(names: Sequence[str]) -> str | None:
    """The first name that clashes with a reserved word, or None."""
    for n in names:
        if n in FUNCTIONS or n in OPERATORS or n in CONSTANTS:
            return n
    return None
