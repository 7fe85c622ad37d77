"""Compile a ``Problem`` into terms the trainer evaluates on grids.

Each residual becomes a ``Residual``: the derivative multi-indices it needs, the coordinate-only
subexpressions (evaluated once per grid, in float64, then cast) and a torch function of the
field derivatives. Each term owns its grid: interior terms use the training points, a face
pins one axis to a single point and reuses the free axes' training points, a data file brings
its own grid. No derivative is ever taken through the grid tensor: the trainer builds every
derivative as one contraction of per-axis jets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import sympy as sp
import torch

from ..errors import ProblemError
from ..problem.expressions import NormalDerivative, count_nodes
from ..problem.solver_config import SolverConfig
from ..problem.spec import Face, LearnedParameter, Problem
from .lowering import FUNCTIONS as LOWERABLE
from .lowering import CoordinateFunction, Lowered, lower, softplus, split_constants
from .scaling import FieldScale, estimate_scales
from .separability import LinearPart, SeparableReference, combine, linear_part, separable_reference

# A point set on one axis: ("train", d), ("face", d, side) with side "min", "max" or "both" (the two
# faces of axis d as one grid with 2 points on it), ("file", name, d), ("test", d).
PointSetKey = tuple[Any, ...]
Deriv = tuple[str, tuple[int, ...]]  # (field, multi-index)


@dataclass
class Residual:
    """r = F(derivatives of fields, coordinates) on one grid."""

    derivs: list[Deriv]
    consts: dict[sp.Symbol, sp.Expr]
    arrays: dict[sp.Symbol, np.ndarray]  # given data on the grid (e.g. observations)
    fn: Lowered  # lowered torch function of the placeholders and const symbols
    placeholders: list[sp.Symbol]
    nodes: int
    # the affine-separable terms as CP rank blocks (None: none qualify), and the rest of the
    # residual as a Residual of its own (None when the blocks are the whole residual)
    linear: LinearPart | None = None
    rest: Residual | None = None
    # (the rest only) combinations of one field's derivatives that fn takes, after the values of
    # derivs, as one value each: contracted as one CP tensor (``separability.combine``)
    sums: list[LinearPart] = field(default_factory=list)
    lowered: dict[sp.Symbol, Lowered] = field(default_factory=dict, repr=False)  # ``prepare``'s functions

    def prepare(self, coords: Sequence[torch.Tensor], dtype: torch.dtype,
                arrays: Mapping[sp.Symbol, np.ndarray] | None = None) -> dict[sp.Symbol, torch.Tensor]:
        """Evaluate coordinate-only parts on a grid. coords[d]: broadcastable float64 tensor;
        ``arrays``: the given data at these points instead of ``self.arrays`` (a sample of them)."""
        device = coords[0].device
        env: dict[sp.Symbol, torch.Tensor] = dict(zip(self.axis_symbols, coords))
        env.update({s: torch.as_tensor(a, dtype=torch.float64, device=device)
                    for s, a in (self.arrays if arrays is None else arrays).items()})
        if len(self.lowered) != len(self.consts):  # lowered once (a tree walk), evaluated at every call
            self.lowered = {s: lower(e) for s, e in self.consts.items()}
        return {s: torch.as_tensor(fn(env), dtype=torch.float64, device=device).to(dtype)
                for s, fn in self.lowered.items()}

    def __call__(self, values: Sequence[torch.Tensor], consts: Mapping[sp.Symbol, torch.Tensor],
                 learned: Mapping[sp.Symbol, torch.Tensor] | None = None) -> torch.Tensor:
        """r from the derivative values (``placeholders``' order), the prepared constants and the
        learned parameters' current values."""
        env = dict(consts)
        env.update(zip(self.placeholders, values))
        if learned:
            env.update(learned)
        return cast(torch.Tensor, self.fn(env))  # a residual always holds a field: a tensor

    axis_symbols: list[sp.Symbol] = field(default_factory=list)


@dataclass
class TermPart:
    """One grid of a term (a condition on several faces has one part per face)."""

    grid: list[PointSetKey]  # one point-set key per axis
    residual: Residual
    label: str
    mask: np.ndarray | None = None  # bool on the grid: points that count (keep-data)
    pointwise: bool = False  # scattered points: grid keys ("points", name, d) share one index
    faces: int = 1  # faces this part covers: both faces of an axis share one part (2 points on it)


@dataclass
class Term:
    name: str
    kind: str  # equation | condition | data
    key: str
    parts: list[TermPart]
    weight: float = 1.0
    reduction: str = "mean"  # over parts: mean over all points, or sum of per-part means


@dataclass(frozen=True)
class CompiledProblem:
    """A problem's terms lowered to residuals (settings enter only as term weights and the face
    reduction; how the terms are evaluated is the plan's, ``compile.plan``)."""

    problem: Problem
    axes: list[str]
    ranges: list[tuple[float, float]]
    components: dict[str, int]
    terms: list[Term]
    orders: dict[str, list[int]]  # highest derivative order per field and axis
    file_grids: dict[str, list[int]]  # data-file grid sizes: name -> n per axis
    point_sets: dict[str, np.ndarray] = field(default_factory=dict)  # scattered data: name -> (N, D) coordinates
    hard: dict[str, int] = field(default_factory=dict)  # field -> axis with a hard Dirichlet condition
    hard_sides: dict[str, str] = field(default_factory=dict)  # field -> its faces there: "both", "min" or "max"
    lifts: dict[str, sp.Expr] = field(default_factory=dict)  # field -> lift g (parameters substituted)
    hard_fades: dict[str, float] = field(default_factory=dict)  # field -> its hard condition's ``fade`` (if set)
    # expression references that are sums of separable products: field -> products (grid-free metrics)
    separable_references: dict[str, SeparableReference] = field(default_factory=dict)
    scales: dict[str, FieldScale] = field(default_factory=dict)  # field -> output scale (``scaling``)
    learned: dict[str, LearnedParameter] = field(default_factory=dict)  # the learned parameters, by name
    positive: frozenset[str] = frozenset()  # fields that are softplus of their models


def with_parameters(problem: Problem, expr: sp.Expr, key: str) -> sp.Expr:
    """``expr`` with the parameters' values substituted; a division by zero this makes (``1/(k - 1)``
    with k = 1) is a ProblemError naming the key and the definition where it happens."""
    params = {problem.ctx.parameters[p]: sp.Float(v, 17) for p, v in problem.parameter_values.items()}
    out = expr.xreplace(params)
    infinite = (sp.zoo, sp.oo, -sp.oo, sp.nan)
    if out.has(*infinite):
        where = [f"definitions.{n}" for n, d in problem.ctx.definitions.items() if d.xreplace(params).has(*infinite)]
        raise ProblemError("division by zero (or an infinite value) once the parameters' values are substituted"
                           + (f", in {where[0]}" if where else ""), file=problem.source, key=key)
    return out


def compile_residual(problem: Problem, expr: sp.Expr, key: str,
                     arrays: dict[sp.Symbol, np.ndarray] | None = None) -> Residual:
    """Lower a residual expression (fields as u(x, ...)) to a Residual."""
    axis_syms = list(problem.ctx.axes.values())
    expr = with_parameters(problem, expr, key)
    fields = {str(f.func): f for f in problem.ctx.fields.values()}
    replace: dict[sp.Expr, sp.Symbol] = {}
    derivs: list[Deriv] = []
    placeholders: list[sp.Symbol] = []

    def placeholder(name: str, alpha: tuple[int, ...]) -> sp.Symbol:
        if (name, alpha) not in derivs:
            derivs.append((name, alpha))
            placeholders.append(sp.Dummy(f"{name}_{''.join(map(str, alpha))}"))
        return placeholders[derivs.index((name, alpha))]

    bad = [d for d in expr.atoms(sp.Derivative) if not isinstance(d.expr, sp.core.function.AppliedUndef)
           or str(d.expr.func) not in fields]
    bad += [f for f in expr.atoms(sp.Function)
            if not isinstance(f, (sp.core.function.AppliedUndef, CoordinateFunction)) and type(f) not in LOWERABLE]
    if bad:
        raise ProblemError(f"cannot evaluate '{sorted(bad, key=str)[0]}' (no elementwise form; "
                           "e.g. a second derivative of abs)", file=problem.source, key=key)
    found: list[tuple[str, tuple[int, ...], sp.Expr]] = []
    for d in expr.atoms(sp.Derivative):
        if str(d.expr.func) in fields:
            counts = [0] * len(axis_syms)
            for sym, n in d.variable_count:
                counts[axis_syms.index(sym)] += int(n)
            found.append((str(d.expr.func), tuple(counts), d))
    for name, f in fields.items():
        if expr.has(f):
            found.append((name, (0,) * len(axis_syms), f))
    for name, alpha, atom in sorted(found, key=lambda x: (x[0], x[1])):
        replace[atom] = placeholder(name, alpha)
    body = expr.xreplace(replace)
    res = _lower_residual(problem, body, derivs, placeholders, key, arrays or {})
    res.linear = linear_part(body, placeholders, [f for f, _ in derivs], [a for _, a in derivs], axis_syms,
                             learned_symbols(problem), box(problem))
    if res.linear is not None and not res.linear.exact:
        rest, sums = combine(res.linear.remainder, placeholders, [f for f, _ in derivs], [a for _, a in derivs])
        used = [j for j, p in enumerate(placeholders) if rest.has(p)]
        res.rest = _lower_residual(problem, rest, [derivs[j] for j in used],
                                   [placeholders[j] for j in used] + [q for q, _ in sums], key, arrays or {})
        res.rest.sums = [lin for _, lin in sums]
    return res


def box(problem: Problem) -> list[tuple[float, float]]:
    """Per axis (in ``problem.ctx.axes`` order): its interval."""
    return [(a.lo, a.hi) for a in problem.axis_list]


def learned_symbols(problem: Problem) -> list[sp.Symbol]:
    """The sympy symbols of the learned parameters (they stay symbols in residuals)."""
    return [problem.ctx.parameters[n] for n in problem.learned]


def no_learned(problem: Problem, expr: sp.Expr, key: str, what: str) -> None:
    """Refuse a learned parameter where a value must be known before training."""
    used = sorted(str(s) for s in expr.free_symbols if str(s) in problem.learned)
    if used:
        raise ProblemError(f"{what} cannot use the learned parameter '{used[0]}': its value is found by training",
                           file=problem.source, key=key)


def _lower_residual(problem: Problem, body: sp.Expr, derivs: list[Deriv], placeholders: list[sp.Symbol],
                    key: str, arrays: dict[sp.Symbol, np.ndarray]) -> Residual:
    body, consts = split_constants(body, placeholders + learned_symbols(problem))
    try:
        fn = lower(body)
        for e in consts.values():
            lower(e)
    except ProblemError as exc:
        raise exc.located(problem.source, key)
    res = Residual(derivs, consts, {s: a for s, a in arrays.items() if body.has(s) or
                                    any(e.has(s) for e in consts.values())}, fn, placeholders, count_nodes(body))
    res.axis_symbols = list(problem.ctx.axes.values())
    return res


def _face_grid(n_axes: int, axis: int, side: str) -> list[PointSetKey]:
    return [("face", d, side) if d == axis else ("train", d) for d in range(n_axes)]


def outward_normal(expr: sp.Expr, x: sp.Symbol, lo: float, hi: float, side: str) -> sp.Expr:
    """``dn(f)`` on the faces ``side`` ("min", "max" or "both") of the axis x in [lo, hi]: -f_x on x = min, +f_x on
    x = max; on both faces (one part, 2 points on the axis) the factor (2x - lo - hi) / (hi - lo),
    which is -1 and +1 there and keeps the residual affine-separable."""
    if not expr.has(NormalDerivative):
        return expr
    sign = (-1 if side == "min" else 1) if side != "both" else (2 * x - lo - hi) / (hi - lo)
    return expr.replace(NormalDerivative, lambda f: sign * sp.diff(f, x))


def no_normal(expr: sp.Expr, problem: Problem, key: str) -> None:
    if expr.has(NormalDerivative):
        raise ProblemError("dn(...) is the derivative along a face's outward normal: use it in a condition "
                           "(on = a face), not here", file=problem.source, key=key)


def _face_groups(faces: Sequence[Face], axes: Sequence[Any]) -> list[tuple[int, str, str, int]]:
    """(axis, side, label, faces) per part: both faces of an axis become one part (side "both"),
    which halves the operations per face for the same sums."""
    out = []
    for f in faces:
        both = {g.side for g in faces if g.axis == f.axis} == {"min", "max"}
        if not both:
            out.append((f.axis, f.side, f.label(axes), 1))
        elif f.side == "min":
            out.append((f.axis, "both", f"{axes[f.axis].name} = min, max", 2))
    return out


def hard_lift(problem: Problem, field_name: str) -> tuple[int | None, sp.Expr, str]:
    """(axis, g, side) for a field with a hard condition on that axis: the model is b(x_d) * N + g.
    Both faces: b = (x_d - lo)(hi - x_d) and g the linear blend of the face values along x_d; one
    face (side "min" / "max"): b = x_d - lo or hi - x_d and g the value there. (None, 0, "") else."""
    for c in problem.conditions:
        if c.hard and c.field == field_name:
            assert c.axis is not None and c.value is not None
            ax = problem.axis_list[c.axis]
            x = problem.ctx.axes[ax.name]
            lo_val, hi_val = c.value.subs(x, ax.lo), c.value.subs(x, ax.hi)
            if c.side != "both":
                return c.axis, lo_val if c.side == "min" else hi_val, c.side
            return c.axis, ((ax.hi - x) * lo_val + (x - ax.lo) * hi_val) / (ax.hi - ax.lo), "both"
    return None, sp.Integer(0), ""


def fading(problem: Problem, field_name: str) -> tuple[float | None, sp.Expr]:
    """(fade, e^{-s/fade}) for a field whose hard condition on one face has ``fade`` set, s the
    distance from that face (the lift is g e^{-s/fade}, the model's factor 1 - e^{-s/fade});
    (None, 1) otherwise."""
    for c in problem.conditions:
        if c.hard and c.field == field_name and c.fade is not None:
            assert c.axis is not None
            ax = problem.axis_list[c.axis]
            x = problem.ctx.axes[ax.name]
            return c.fade, sp.exp(-((x - ax.lo) if c.side == "min" else (ax.hi - x)) / sp.Rational(repr(c.fade)))
    return None, sp.Integer(1)


def compile_problem(problem: Problem, config: SolverConfig,
                    data_arrays: Mapping[str, np.ndarray] | None = None) -> CompiledProblem:
    """Lower every term of a validated problem. ``data_arrays``: loaded data files per field."""
    data_arrays = data_arrays or {}
    axes = problem.axis_list
    n = len(axes)
    interior = [("train", d) for d in range(n)]
    # hard conditions: the model of field f is b(x_d) N + g; every residual sees u -> u + g
    hard, hard_sides, lifts, fades = {}, {}, {}, {}
    for f in problem.components:
        axis, g, side = hard_lift(problem, f)
        if axis is not None:
            no_learned(problem, g, "conditions", f"the hard condition of {f}")
            fade, factor = fading(problem, f)
            hard[f], hard_sides[f], lifts[f] = axis, side, g * factor
            if fade is not None:
                fades[f] = fade
    shift = {problem.ctx.fields[f]: problem.ctx.fields[f] + g for f, g in lifts.items()}
    for f in sorted(problem.positive):  # a positive field a is softplus(a_model) in every residual
        if f in lifts:
            raise ProblemError(f"field '{f}' is positive (softplus of its networks) and cannot also have a hard "
                               "condition: make the condition a loss term", file=problem.source, key=f"fields.{f}.positive")
        shift[problem.ctx.fields[f]] = softplus(problem.ctx.fields[f])

    def lifted(expr: sp.Expr) -> sp.Expr:
        """``expr`` in terms of the models: the lifts of hard conditions added, positive fields mapped."""
        return expr.subs(shift).doit() if shift else expr

    terms: list[Term] = []
    for eq in problem.equations:
        no_normal(eq.residual, problem, f"{eq.key}.residual")
        res = compile_residual(problem, lifted(eq.residual), f"{eq.key}.residual")
        terms.append(Term(eq.name, "equation", eq.key, [TermPart(interior, res, "interior")]))
    for c in problem.conditions:
        if c.hard:
            continue
        parts = [TermPart(_face_grid(n, axis, side),
                          compile_residual(problem, outward_normal(lifted(c.residual), problem.ctx.axes[axes[axis].name],
                                                                   axes[axis].lo, axes[axis].hi, side), f"{c.key}.expr"),
                          label, faces=count) for axis, side, label, count in _face_groups(c.faces, axes)]
        terms.append(Term(c.name, "condition", c.key, parts, reduction=config.train.face_reduction))
    file_grids: dict[str, list[int]] = {}
    point_sets: dict[str, np.ndarray] = {}
    kept: dict[str, np.ndarray] = {}  # data fields with a keep-mask: the points trained on
    for fname, src in problem.data.items():
        u = problem.ctx.fields[fname]
        name = problem.data_term_name(fname)
        mask = None
        grid: list[PointSetKey]
        if src.kind == "expr":
            assert src.expr is not None
            no_learned(problem, src.expr, src.key, "data")
            res = compile_residual(problem, lifted(u - src.expr), src.key)
            grid = interior
            if src.keep is not None:
                raise ProblemError("'keep' needs a data file (its grid is fixed)", file=problem.source, key=f"{src.key}")
        elif src.kind == "points":  # (N, D + C): coordinates, then the observed components
            obs = np.asarray(data_arrays[fname])
            target = sp.Dummy("observed")
            res = compile_residual(problem, lifted(u - target), src.key, arrays={target: obs[:, n:]})
            point_sets[fname] = obs[:, :n]
            terms.append(Term(name, "data", src.key, [TermPart([("points", fname, d) for d in range(n)], res,
                                                                "data", pointwise=True)]))
            continue
        else:
            y = np.asarray(data_arrays[fname])
            target = sp.Dummy("observed")
            res = compile_residual(problem, lifted(u - target), src.key, arrays={target: y.reshape(*y.shape[:n], -1)})
            file_grids[fname] = list(y.shape[:n])
            grid = [("file", fname, d) for d in range(n)]
            if src.keep is not None:
                rng = np.random.default_rng(src.seed)
                mask = (rng.random(y.shape[:n]) < src.keep)[..., None]
                kept[fname] = mask[..., 0]
                if not mask.any():
                    raise ProblemError(f"keep = {src.keep:g} keeps none of the file's {mask.size} points; "
                                       "raise it", file=problem.source, key=f"{src.key}.keep")
        terms.append(Term(name, "data", src.key, [TermPart(grid, res, "data", mask)]))

    for t in terms:
        t.weight = config.train.weights.get(t.name, 1.0)
    orders = {f: [0] * n for f in problem.components}
    for t in terms:
        for part in t.parts:
            for f, alpha in part.residual.derivs:
                orders[f] = [max(a, b) for a, b in zip(orders[f], alpha)]
    lifts = {f: with_parameters(problem, g, f"conditions (the hard condition of {f})") for f, g in lifts.items()}
    separable_refs = _separable_references(problem, lifts)
    return CompiledProblem(problem, [a.name for a in axes], [(a.lo, a.hi) for a in axes],
                           dict(problem.components), terms, orders, file_grids, point_sets, hard=hard, hard_sides=hard_sides,
                           lifts=lifts, hard_fades=fades, separable_references=separable_refs,
                           scales=estimate_scales(problem, data_arrays, kept), learned=dict(problem.learned),
                           positive=frozenset(problem.positive))


def _separable_references(problem: Problem, lifts: Mapping[str, sp.Expr]) -> dict[str, SeparableReference]:
    """The expression references, checked (finite, no learned parameter), and those that are sums of
    separable products, by field (grid-free metrics)."""
    out = {}
    for f, src in problem.reference.items():
        if src.kind == "expr" and src.expr is not None:
            no_learned(problem, src.expr, src.key, "a reference")
            ref = with_parameters(problem, src.expr, src.key)
            try:
                lower(ref)  # constants beyond float range are refused now, not at the first evaluation
            except ProblemError as exc:
                raise exc.located(problem.source, src.key)
            sep = separable_reference(ref, lifts.get(f), list(problem.ctx.axes.values()), box(problem))
            if sep is not None:
                out[f] = sep
    return out


def part_sizes(compiled: CompiledProblem, part: TermPart, n_train: Sequence[int]) -> list[int]:
    """Points per axis of a term part's grid; [N] for N scattered points."""
    if part.pointwise:
        return [len(compiled.point_sets[part.grid[0][1]])]
    sizes = []
    for d, key in enumerate(part.grid):
        sizes.append(n_train[d] if key[0] == "train" else (2 if key[2] == "both" else 1) if key[0] == "face"
                     else compiled.file_grids[key[1]][d])
    return sizes


# train.points = "auto": points per axis by the number of axes, 4k-65k collocation points in all
# (the budgets of the defaults tournament, bench/defaults.py)
AUTO_POINTS = {1: 256, 2: 64, 3: 32, 4: 16}


def per_axis(value: int | str | Mapping[str, int], axes: Sequence[str]) -> list[int]:
    """An int for every axis, a table per axis name, or "auto" (AUTO_POINTS) -> list in axis order."""
    if isinstance(value, Mapping):
        return [int(value[a]) for a in axes]
    if value == "auto":
        return [AUTO_POINTS.get(len(axes), 8)] * len(axes)
    return [int(value)] * len(axes)
