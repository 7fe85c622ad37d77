"""The ``Problem``: axes, fields, parameters, definitions, equations, conditions, data and
reference, as sympy objects. No torch here; the compiler turns a Problem into torch code.

Problem files (problem_file.py) and Python code build a Problem through the same methods, so
both get the same validation and the same messages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union, cast

import sympy as sp

from ..errors import ProblemError, did_you_mean
from .domain import Axis, Face, TimeAxis, make_axes, make_fields, parse_faces
from .expressions import NAME_RE, ExprContext, check_derivative_orders, check_names_are_free, parse_expression
from .parameters import LearnedParameter, learned_parameter
from .sources import DataSource, make_source

__all__ = ["Axis", "Condition", "DataSource", "Equation", "Face", "LearnedParameter", "Problem", "TimeAxis"]

PROBLEM_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # also the default output folder's name
PROBLEM_KINDS = ("pde", "data")

ExprLike = Union[str, float, int, sp.Expr]


@dataclass
class Equation:
    name: str
    residual: sp.Expr
    key: str  # where it came from, for messages: "equations[0]"


@dataclass
class Condition:
    name: str
    faces: tuple[Face, ...]
    residual: sp.Expr  # expr - value
    key: str
    hard: bool = False  # enforce = "hard": built into the model, no loss term
    field: str | None = None  # hard: the field, its axis and the Dirichlet value
    axis: int | None = None
    value: sp.Expr | None = None
    side: str = "both"  # hard: the faces of ``axis`` it holds on: "both", or one ("min" / "max")
    fade: float | None = None  # hard, one face: the lift fades as e^{-|x - face|/fade} (``fade`` below)
    value_given: bool = True  # False: no value was written, so the condition means expr = 0


@dataclass
class Problem:
    """A PDE or data-fitting problem on a box, as sympy objects.

    Args:
        name: letters, digits, '_' and '-'.
        axes: ordered mapping name -> (lo, hi), ``TimeAxis(lo, hi)`` or ``Axis``.
        fields: field names, or a mapping name -> number of components.
        parameters: name -> number (or constant expression of earlier parameters), or a learned
            parameter's table ``{initial=, learn=True, range=, positive=, lr=}``.
        definitions: name -> expression (may use axes, parameters, fields, earlier definitions).
    """

    name: str
    axes: Mapping[str, Any]  # as given; ``axis_list`` is the checked form
    fields: Any  # a name, names, or {name: components}; ``components`` is the checked form
    parameters: Mapping[str, ExprLike | Mapping[str, Any]] | None = None
    definitions: Mapping[str, ExprLike] | None = None
    title: str = ""
    kind: str = "pde"
    source: str = "<python>"  # the file, for messages
    text: str = ""  # the problem file's text (stored in outputs)
    solver_table: dict[str, Any] = field(default_factory=dict)
    solver: str = ""  # the recommended settings: a shipped preset's name or a solver file's path ("" none)
    # built from the arguments above and by the add_* methods
    axis_list: list[Axis] = field(init=False)
    components: dict[str, int] = field(init=False)  # field -> number of components
    ctx: ExprContext = field(init=False)  # the names expressions may use
    parameter_values: dict[str, float] = field(init=False)  # the fixed parameters (substituted when compiling)
    learned: dict[str, LearnedParameter] = field(init=False)  # the learned ones (symbols until training)
    equations: list[Equation] = field(init=False, default_factory=list)
    conditions: list[Condition] = field(init=False, default_factory=list)
    data: dict[str, DataSource] = field(init=False, default_factory=dict)
    reference: dict[str, DataSource] = field(init=False, default_factory=dict)
    scales: dict[str, float] = field(init=False, default_factory=dict)  # given output scales (set_scale)
    positive: set[str] = field(init=False, default_factory=set)  # fields kept above 0 (set_positive)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not PROBLEM_NAME_RE.match(self.name):
            raise self.error("problem.name", f"{self.name!r} is not a valid name (1 to 100 letters, digits, '_' and '-')")
        if self.kind not in PROBLEM_KINDS:
            raise self.error("problem.kind", f"{self.kind!r} is not one of {', '.join(PROBLEM_KINDS)}")
        self.axis_list = make_axes(self.axes, self.error)
        self.components = make_fields(self.fields, self.error)
        syms = {a.name: sp.Symbol(a.name, real=True) for a in self.axis_list}
        self.ctx = ExprContext(axes=syms, spatial=[syms[a.name] for a in self.axis_list if not (a.time or a.parameter)])
        args = [syms[a.name] for a in self.axis_list]
        self.ctx.fields = {f: sp.Function(f, real=True)(*args) for f in self.components}
        self._check_new_names(self.components, "fields")
        self.parameter_values, self.learned = {}, {}
        for pname, pval in (self.parameters or {}).items():
            self._add_parameter(pname, pval)
        for dname, dval in (self.definitions or {}).items():
            self._add_definition(dname, dval)

    # ----------------------------------------------------------------- construction
    def error(self, key: str | None, message: str) -> ProblemError:
        return ProblemError(message, file=self.source, key=key)

    def _check_new_names(self, names: Iterable[str], table: str) -> None:
        taken = set(self.ctx.axes) | set(self.ctx.parameters) | set(self.ctx.definitions)
        taken |= set(self.ctx.fields) if table != "fields" else set()
        for n in names:
            if not isinstance(n, str) or not NAME_RE.match(n):
                raise self.error(f"{table}.{n}", f"{n!r} is not a valid name")
            if n in taken:
                raise self.error(f"{table}.{n}", f"'{n}' is already defined")
            if check_names_are_free([n]):
                raise self.error(f"{table}.{n}", f"'{n}' is a reserved name (a function or constant)")

    def _add_parameter(self, name: str, value: ExprLike | Mapping[str, Any]) -> None:
        key = f"parameters.{name}"
        self._check_new_names([name], "parameters")
        if isinstance(value, Mapping):  # a table: learned, or learn = false (a fixed value)
            learned = learned_parameter(name, value, key, self.error)
            self.ctx.parameters[name] = sp.Symbol(name, real=True)
            if learned is None:
                self.parameter_values[name] = float(value["initial"])
            else:
                self.learned[name] = learned
            return
        expr = self.parse(value, key)
        uses = sorted(str(s) for s in expr.free_symbols if str(s) in self.learned)
        if uses:
            raise self.error(key, f"a parameter cannot depend on the learned parameter '{uses[0]}' (its value is "
                                  "found by training): use [definitions]")
        expr = expr.xreplace({self.ctx.parameters[p]: sp.Float(v) for p, v in self.parameter_values.items()})
        if not expr.is_number:
            raise self.error(key, "a parameter must be a number (or use [definitions])")
        num = complex(expr)
        if num.imag != 0 or not math.isfinite(num.real):
            raise self.error(key, f"{value!r} is not a finite real number")
        self.parameter_values[name] = num.real
        self.ctx.parameters[name] = sp.Symbol(name, real=True)

    def parameter(self, name: str, initial: float, *, learn: bool = False, range: tuple[float, float] | None = None,
                  positive: bool = False, lr: float | None = None) -> sp.Symbol:
        """A parameter by keywords, learned when ``learn`` (the file's ``k = { initial = 1.0, learn = true }``):
        its sympy symbol."""
        spec: dict[str, Any] = {"initial": initial, "learn": learn, "positive": positive}
        if range is not None:
            spec["range"] = list(range)
        if lr is not None:
            spec["lr"] = lr
        self._add_parameter(name, spec)
        return cast(sp.Symbol, self.ctx.parameters[name])

    def _add_definition(self, name: str, value: ExprLike) -> None:
        key = f"definitions.{name}"
        self._check_new_names([name], "definitions")
        self.ctx.definitions[name] = self.parse(value, key)

    def parse(self, value: ExprLike, key: str) -> sp.Expr:
        try:
            return parse_expression(value, self.ctx)
        except ProblemError as exc:
            raise exc.located(self.source, key)

    # ----------------------------------------------------------------- public API
    def symbols(self, *names: str) -> Any:
        """Sympy symbols of axes or parameters: one symbol for one name, else a tuple."""
        known = {**self.ctx.axes, **self.ctx.parameters}
        out = []
        for n in names:
            if n not in known:
                raise self.error(None, f"unknown axis or parameter '{n}'{did_you_mean(n, known)}")
            out.append(known[n])
        return out[0] if len(out) == 1 else tuple(out)

    def field(self, name: str) -> sp.Expr:
        """The sympy expression u(x, y, ...) of a field."""
        if name not in self.ctx.fields:
            raise self.error(None, f"unknown field '{name}'{did_you_mean(name, self.ctx.fields)}")
        return self.ctx.fields[name]

    def expr(self, text: ExprLike, key: str = "expr") -> sp.Expr:
        """A definition by name, or any expression of the file grammar, as sympy."""
        if isinstance(text, str) and text in self.ctx.definitions:
            return self.ctx.definitions[text]
        return self.parse(text, key)

    @property
    def term_names(self) -> list[str]:
        names = [e.name for e in self.equations] + [c.name for c in self.conditions if not c.hard]
        return names + [self.data_term_name(f) for f in self.data]

    def _all_names(self) -> list[str]:
        return [e.name for e in self.equations] + [c.name for c in self.conditions]

    def data_term_name(self, field_name: str) -> str:
        return f"data_{field_name}" if len(self.data) > 1 else "data"

    def _term_name(self, name: str | None, default: str, existing: list[str], key: str) -> str:
        if name is None:
            name, i = default, 2
            while name in existing:
                name, i = f"{default}{i}", i + 1
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise self.error(f"{key}.name", f"{name!r} is not a valid term name")
        if name in existing:
            raise self.error(f"{key}.name", f"term name '{name}' is used twice")
        return name

    def add_equation(
        self,
        residual: ExprLike | None = None,
        *,
        lhs: ExprLike | None = None,
        rhs: ExprLike | None = None,
        name: str | None = None,
    ) -> Equation:
        """Add an interior residual (``residual``, or ``lhs - rhs``) driven to 0."""
        key = f"equations[{len(self.equations)}]"
        if residual is not None and (lhs is not None or rhs is not None):
            raise self.error(key, "give either 'residual' or 'lhs' and 'rhs', not both")
        if residual is None:
            if lhs is None or rhs is None:
                raise self.error(key, "an equation needs 'residual', or both 'lhs' and 'rhs'")
            res = self.parse(lhs, f"{key}.lhs") - self.parse(rhs, f"{key}.rhs")
        else:
            res = self.parse(residual, f"{key}.residual")
        label = f"{key}.residual" if residual is not None else f"{key}.lhs"
        self._check_derivatives(res, label)
        if not self.fields_in(res):
            raise self.error(label, "the residual does not involve any field")
        eq = Equation(self._term_name(name, "pde", self._all_names(), key), res, key)
        self.equations.append(eq)
        return eq

    def add_condition(
        self,
        on: str | Sequence[str],
        value: ExprLike | None = None,
        expr: ExprLike | None = None,
        *,
        name: str | None = None,
        enforce: str | None = None,
        fade: float | None = None,
    ) -> Condition:
        """Add ``expr - value = 0`` on faces: "boundary", "x = -1", "x = min|max", or a list (no
        value: 0, which ``seppinn check`` says). ``fade`` (a length in the axis' units; a hard
        condition on one face only): the model is e^{-s/fade} g + (1 - e^{-s/fade}) N, s the
        distance from the face, instead of g + s N, so g's influence fades over ``fade``: for a
        value whose kinks the solution smooths at once (a periodic value whose slope is not periodic)."""
        key = f"conditions[{len(self.conditions)}]"
        if enforce not in (None, "soft", "hard"):
            raise self.error(f"{key}.enforce", f"{enforce!r} is not one of 'soft', 'hard'")
        faces = parse_faces(on, self.axis_list, self.error, f"{key}.on")
        if expr is None:
            if len(self.components) != 1:
                raise self.error(f"{key}.expr", f"required when there are several fields ({', '.join(self.components)})")
            lhs = self.ctx.fields[next(iter(self.components))]
        else:
            lhs = self.parse(expr, f"{key}.expr")
        rhs = self.parse(0 if value is None else value, f"{key}.value")
        res = lhs - rhs
        self._check_derivatives(res, f"{key}.expr")
        if not self.fields_in(res):
            raise self.error(f"{key}.expr", "the condition does not involve any field")
        cond = Condition(self._term_name(name, "condition", self._all_names(), key), faces, res, key,
                         value_given=value is not None)
        if enforce == "hard":
            self._make_hard(cond, lhs, rhs, key)
        if fade is not None:
            if isinstance(fade, bool) or not isinstance(fade, (int, float)) or not 0 < fade < float("inf"):
                raise self.error(f"{key}.fade", f"{fade!r} is not a positive number (a length along the condition's axis)")
            if not cond.hard or cond.side == "both":
                raise self.error(f"{key}.fade", "fade is for a hard condition on one face (enforce = \"hard\", "
                                 "on = \"t = min\")")
            cond.fade = float(fade)
        self.conditions.append(cond)
        return cond

    def _make_hard(self, cond: Condition, lhs: sp.Expr, rhs: sp.Expr, key: str) -> None:
        """enforce = "hard": u = value on both faces of one axis, or on one face (an initial
        condition: u = g + (t - t0) N), exactly, through the model."""
        axes = {f.axis for f in cond.faces}
        if len(axes) != 1:
            raise self.error(f"{key}.on", "enforce = 'hard' needs the faces of one axis: both, e.g. on = "
                             "[\"x = min\", \"x = max\"], or one, e.g. on = \"t = min\"")
        if not (isinstance(lhs, sp.core.function.AppliedUndef) and str(lhs.func) in self.components):
            raise self.error(f"{key}.expr", "enforce = 'hard' is for Dirichlet conditions: expr must be a field")
        if self.fields_in(rhs):
            raise self.error(f"{key}.value", "enforce = 'hard' needs a value that does not depend on fields")
        field_name = str(lhs.func)
        if any(c.hard and c.field == field_name for c in self.conditions):
            raise self.error(f"{key}.enforce", f"field '{field_name}' already has a hard condition (one axis per field)")
        cond.hard, cond.field, cond.axis, cond.value = True, field_name, axes.pop(), rhs
        cond.side = cond.faces[0].side if len(cond.faces) == 1 else "both"

    def add_data(self, field_name: str, spec: Any) -> DataSource:
        """Observations of a field: an expression, or {file=, dataset=, keep=, seed=}."""
        key = f"data.{field_name}"
        if field_name in self.data:
            raise self.error(key, "data for this field is given twice")
        self.data[field_name] = make_source(self, field_name, spec, key, "data")
        return self.data[field_name]

    def set_reference(self, **fields: Any) -> None:
        """Ground truth per field: an expression, or {file=, dataset=}."""
        for f, spec in fields.items():
            self.reference[f] = make_source(self, f, spec, f"reference.{f}", "reference")

    def set_scale(self, field_name: str, scale: Any) -> None:
        """The field's output scale: the model is ``scale`` times its networks' product (default:
        estimated from the problem, ``compile.scaling``)."""
        key = f"fields.{field_name}.scale"
        if field_name not in self.components:
            raise self.error(key, f"'{field_name}' is not a field")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < math.inf):
            raise self.error(key, f"expected a positive number, got {scale!r}")
        self.scales[field_name] = float(scale)

    def set_positive(self, field_name: str, positive: Any = True) -> None:
        """Keep the field above 0: it is softplus of its networks' product (a coefficient field)."""
        problem = f"'{field_name}' is not a field" if field_name not in self.components else \
            f"expected true or false, got {positive!r}" if not isinstance(positive, bool) else ""
        if problem:
            raise self.error(f"fields.{field_name}.positive", problem)
        (self.positive.add if positive else self.positive.discard)(field_name)

    # ----------------------------------------------------------------- validation
    def fields_in(self, expr: sp.Expr) -> set[str]:
        return {str(f.func) for f in expr.atoms(sp.core.function.AppliedUndef) if str(f.func) in self.components}

    def _check_derivatives(self, expr: sp.Expr, key: str) -> None:
        """The parser's rule for sympy given directly (Python API): at most MAX_DIFF_COUNT per axis."""
        try:
            check_derivative_orders(expr)
        except ProblemError as exc:
            raise exc.located(self.source, key)

    def validate(self) -> Problem:
        """The checks that need the whole problem; returns self."""
        if self.kind == "pde" and not self.equations:
            raise self.error("equations", "a pde problem needs at least one [[equations]] entry")
        if self.kind == "data":
            if self.equations or self.conditions:
                raise self.error("equations" if self.equations else "conditions",
                                 "a data problem (kind = \"data\") has no equations or conditions")
            if not self.data:
                raise self.error("data", "a data problem needs a [data] table")
        used: set[str] = set(self.data)
        for t in self.equations:
            used |= self.fields_in(t.residual)
        for c in self.conditions:
            used |= self.fields_in(c.residual)
        for f in self.components:
            if f not in used:
                raise self.error(f"fields.{f}", f"field '{f}' appears in no equation, condition or data")
        return self
