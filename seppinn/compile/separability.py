"""Compile-time analysis: which part of a residual is a CP tensor in its own right.

A residual r = sum_j a_j(x) D^{alpha_j} u + b(x) whose coefficients a_j and source b are sums of
separable products (sum_m c_m prod_d g_{m,d}(x_d)) is, for a CP model u = s sum_r prod_d F_d, again
a CP tensor: r = sum_rho prod_d G_d[:, rho] with per-axis factors G_d built from the factor jets
(one rank block of R columns per separable product of each a_j, one column per product of b).
Blocks that agree on every axis but one are merged into one block by summing on that axis,
e.g. u_xx + k^2 u -> [F_x'' + k^2 F_x, F_y, F_z] (issue 8's fused contraction). When other terms
remain (u^3, u u_xx), the residual is evaluated on the grid anyway, and the source b stays with them
(one precomputed addition there, where rank columns would cost a contraction each).

Everything here is sympy; the trainer turns the blocks into tensors (``train.cp_residual``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..problem.expressions import expand_bounded
from .lowering import evaluate_numpy

MAX_SEPARABLE_TERMS = 64  # products after expansion; above this the grid path is used
BALANCE_LOG = 30.0  # a product's factor beyond e^±30 in magnitude is rebalanced (float32 overflows at e^88)
BALANCE_SAMPLES = 257  # points per axis interval at which a factor's magnitude is estimated

Box = Sequence[tuple[float, float]]  # per axis: (lo, hi)


@dataclass(frozen=True)
class Summand:
    """One summand of a block's factor on one axis: coef(x_d) * F_d^(order) (or coef alone in a
    source block). ``coef`` depends on this axis' coordinate only (or is a number)."""

    order: int
    coef: sp.Expr


@dataclass
class RankBlock:
    """A block of the residual's CP factors: for a field, R columns (the field's rank) whose axis-d
    factor is sum(s.coef * F_d^(s.order) for s in axes[d]); for a source (field None) one column
    whose axis-d factor is the sum of the coefficients."""

    field: str | None
    axes: list[list[Summand]]


@dataclass
class LinearPart:
    """r = (the CP tensor of ``blocks``) + remainder, with ``remainder`` the residual's terms
    that are not affine-separable (sp.S.Zero when there are none)."""

    blocks: list[RankBlock]
    remainder: sp.Expr

    @property
    def exact(self) -> bool:
        """The whole residual is a CP tensor (grid-free losses apply)."""
        return bool(self.remainder == 0)

    def terms(self) -> list[tuple[sp.Expr, str | None, tuple[int, ...]]]:
        """The blocks expanded: (coefficient, field or None for a source, multi-index) per product
        of one summand per axis."""
        return [(sp.Mul(*[s.coef for s in choice]), b.field, tuple(s.order for s in choice))
                for b in self.blocks for choice in itertools.product(*b.axes)]


Products = list[tuple[sp.Expr, list[sp.Expr]]]  # [(c_m, [g_{m,1}, ..., g_{m,D}])]: sum_m c_m prod_d g_{m,d}(x_d)


@dataclass
class SeparableReference:
    """A field's reference u* as separable products, and the target the model itself must match,
    u* - g (g: the lift of a hard condition; without one the target is u*). With a CP model the
    error's and the reference's squared norms on a tensor grid are Gram products (``gridfree``)."""

    reference: Products
    target: Products


def separable_reference(ref: sp.Expr, lift: sp.Expr | None, axes: Sequence[sp.Symbol],
                        box: Box | None = None) -> SeparableReference | None:
    """``ref`` and ``ref - lift`` as separable products, or None if either is not such a sum."""
    reference = separate(ref, axes, box=box)
    target = reference if lift is None else separate(ref - lift, axes, box=box)
    return None if reference is None or target is None else SeparableReference(reference, target)


def separate(expr: sp.Expr, axes: Sequence[sp.Symbol], constants: Collection[sp.Symbol] = (),
             box: Box | None = None) -> Products | None:
    """expr = sum_m c_m prod_d g_{m,d}(x_d) -> [(c_m, [g_{m,1}, ..., g_{m,D}])], or None when expr is
    not such a sum (or has more than MAX_SEPARABLE_TERMS products after expansion). ``constants``:
    symbols that count as numbers (learned parameters: they go into c_m). ``box``: the axes'
    intervals, where each product's factors are brought to one magnitude (``_balanced``)."""
    index = {s: d for d, s in enumerate(axes)}
    consts = set(constants)
    expanded = expand_bounded(expr)
    if expanded is None:
        return None
    terms = sp.Add.make_args(expanded)
    if len(terms) > MAX_SEPARABLE_TERMS:
        return None
    out: Products = []
    for term in terms:
        const: sp.Expr = sp.Integer(1)
        per: list[sp.Expr] = [sp.Integer(1)] * len(axes)
        for f in sp.Mul.make_args(term):
            syms = f.free_symbols
            if syms <= consts:
                const *= f
                continue
            if not syms <= set(axes):
                return None  # data arrays or other placeholders
            if len(syms) == 1:
                d = index[next(iter(syms))]
                per[d] *= f
                continue
            split = sp.separatevars(f, symbols=list(syms), dict=True, force=True)
            if not isinstance(split, dict):
                return None
            const *= split.pop("coeff")
            for s, g in split.items():
                per[index[s]] *= g
        if any(g.free_symbols - {axes[d]} for d, g in enumerate(per)):
            return None
        out.append(_balanced(const, per, axes, box) if box is not None and term.has(sp.exp) else (const, per))
    return out


def _log_magnitude(g: sp.Expr, x: sp.Symbol | None, interval: tuple[float, float] | None) -> float:
    """log max |g| over the interval (sampled; g a number when ``x`` is None), with its numeric
    coefficient's log taken in sympy and each exp(h) factor as h, so that nothing overflows or
    underflows float64 on the way (e^-800, e^(1600 y)); 0 where g vanishes."""
    c, rest = g.as_coeff_Mul()
    if c == 0:
        return 0.0
    env = {} if x is None or interval is None else {x: np.linspace(*interval, BALANCE_SAMPLES)}
    total = np.full(BALANCE_SAMPLES if env else 1, float(sp.log(abs(c)).evalf(30)))
    for f in sp.Mul.make_args(rest):
        if isinstance(f, sp.exp):
            total = total + np.real(evaluate_numpy(f.args[0], env))
        elif f != 1:
            with np.errstate(divide="ignore"):
                total = total + np.log(np.abs(evaluate_numpy(f, env)))
    finite = total[np.isfinite(total)]
    return float(finite.max()) if finite.size else 0.0


def _folded(term: sp.Expr, shift: float = 0.0) -> sp.Expr:
    """term * e^shift with its exponentials combined into one and, where it has one, its numeric
    coefficient and the shift moved into that exponent: e^-400 * e^(800 y) -> e^(800 y - 400), where
    the product of an underflow and an overflow would be 0 * inf."""
    term = sp.powsimp(term, combine="exp")
    c, rest = term.as_coeff_Mul()
    factors = sp.Mul.make_args(rest)
    exps = [f for f in factors if isinstance(f, sp.exp)]
    if not exps or c == 0:
        return term * sp.exp(sp.Float(shift))  # a sympy Float: no OverflowError on the way
    others = [f for f in factors if f is not exps[0]]
    k, h = exps[0].args[0].as_coeff_Add()
    # the constant exponent as a Rational: sympy pulls a Float one out of exp again (e^-400.0 * e^h)
    k = sp.Rational(float(k + sp.log(abs(c)).evalf(30)) + shift)
    return sp.sign(c) * sp.exp(h + k) * sp.Mul(*others)


def _balanced(const: sp.Expr, per: list[sp.Expr], axes: Sequence[sp.Symbol], box: Box) -> tuple[sp.Expr, list[sp.Expr]]:
    """The product const * prod_d per[d], where a factor's magnitude on its interval is beyond
    e^BALANCE_LOG, with every factor scaled to the same magnitude (the product unchanged). sympy's
    expansion splits a narrow Gaussian at a corner, exp(-(x^2 + (1 - y)^2)/0.05^2), into e^-400 *
    e^(-400 x^2) * e^(800 y - 400 y^2): e^400 overflows float32 (and its e^(800 y) float64), e^-400
    underflows; balanced, the product is e^(-400 x^2) * e^(800 y - 400 y^2 - 400)."""
    if const.free_symbols:  # a learned parameter: evaluated at every use, left as it is
        return const, per
    combined = [_folded(g) for g in per]
    logs = [_log_magnitude(g, x, box[d]) for d, (g, x) in enumerate(zip(combined, axes))] + [_log_magnitude(const, None, None)]
    if max(map(abs, logs)) <= BALANCE_LOG:
        return const, per
    mean = math.fsum(logs) / len(logs)
    scaled = [_folded(g, mean - lg) for g, lg in zip([*combined, const], logs)]
    return scaled[-1], scaled[:-1]


def _fold_extreme(term: sp.Expr) -> sp.Expr:
    """A term evaluated on the grid, where its numeric coefficient or the constant of one of its
    exponents is beyond e^BALANCE_LOG (e^-400 * e^(800 y), split by the expansion), with its
    exponentials folded into one (``_folded``); other terms as they are."""
    c, rest = term.as_coeff_Mul()
    if c == 0 or not rest.has(sp.exp):
        return term
    logs = [float(sp.log(abs(c)))] + [float(f.args[0].as_coeff_Add()[0]) for f in sp.Mul.make_args(rest)
                                      if isinstance(f, sp.exp)]
    return _folded(term) if max(map(abs, logs)) > BALANCE_LOG else term


def linear_part(body: sp.Expr, placeholders: Sequence[sp.Symbol], fields: Sequence[str],
                alphas: Sequence[tuple[int, ...]], axes: Sequence[sp.Symbol],
                constants: Collection[sp.Symbol] = (), box: Box | None = None) -> LinearPart | None:
    """Split a residual (placeholders[j] = D^{alphas[j]} of fields[j]) into its affine-separable
    terms as rank blocks, and the rest. None when no term qualifies. ``constants``: learned
    parameters, which may multiply a block (its coefficient on the first axis); ``box``: the
    axes' intervals (``separate``)."""
    raw: list[tuple[str | None, tuple[int, ...], sp.Expr, list[sp.Expr]]] = []  # field, alpha, const, per-axis g
    rest: list[sp.Expr] = []
    sources: list[sp.Expr] = []
    pset = set(placeholders)
    D = len(axes)
    expanded = expand_bounded(body)
    if expanded is None:  # too many terms to look at one by one: the whole residual stays on the grid
        return None
    for term in sp.Add.make_args(expanded):
        used = [j for j, p in enumerate(placeholders) if term.has(p)]
        if len(used) > 1:
            rest.append(term)
            continue
        if used:
            j = used[0]
            coef = sp.diff(term, placeholders[j])
            if coef.free_symbols & pset:  # not linear in the field (u**2, sin(u), ...)
                rest.append(term)
                continue
            field: str | None = fields[j]
            alpha = alphas[j]
        else:
            coef, field, alpha = term, None, (0,) * D
        products = separate(coef, axes, constants, box)
        if products is None:
            rest.append(term)
            continue
        if field is None:
            sources.append(term)
        raw.extend((field, alpha, c, g) for c, g in products)
    if rest:  # on the grid anyway: a source is one precomputed addition there, not rank columns
        raw = [r for r in raw if r[0] is not None]
        rest.extend(sources)
    if not raw:
        return None
    return LinearPart(_merge(raw, D), sp.Add(*[_fold_extreme(t) for t in rest]))


def combine(body: sp.Expr, placeholders: Sequence[sp.Symbol], fields: Sequence[str],
            alphas: Sequence[tuple[int, ...]]) -> tuple[sp.Expr, list[tuple[sp.Symbol, LinearPart]]]:
    """Derivatives of one field that ``body`` uses only in a fixed linear combination become one
    placeholder for the combination, contracted as one CP tensor (diffusion's u u_xx + u u_yy ->
    u (u_xx + u_yy): one grid for the Laplacian instead of two).

    Two placeholders a, b of one field qualify when d(body)/da = lam d(body)/db with a constant lam:
    body is then constant along (1, -lam) in the (a, b) plane, so body(a, b) = body(0, b + lam a).
    Returns the body in the remaining placeholders and the new ones, and per new placeholder its
    combination sum_j c_j D^{alphas[j]} as rank blocks (constant coefficients, merged as
    ``linear_part``'s)."""
    D = len(alphas[0]) if alphas else 0
    groups: dict[sp.Symbol, tuple[str, dict[int, sp.Expr]]] = {
        placeholders[j]: (fields[j], {j: sp.Integer(1)}) for j in range(len(placeholders)) if body.has(placeholders[j])}
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(list(groups), 2):
            if groups[a][0] != groups[b][0]:
                continue
            db = sp.diff(body, b)
            if db == 0:
                continue
            lam = sp.cancel(sp.diff(body, a) / db)
            if lam.free_symbols or not lam.is_number or lam == 0 or not lam.is_finite:
                continue
            if isinstance(lam, sp.Float):  # its exact value: 1.0 -> 1, so equal factors compare equal
                lam = sp.Rational(lam)
            q = sp.Dummy("sum")
            coefs = {**groups[b][1], **{j: lam * c for j, c in groups[a][1].items()}}  # a and b: disjoint
            body = body.xreplace({a: sp.Integer(0), b: q})
            groups[q] = (groups[b][0], coefs)
            del groups[a], groups[b]
            merged = True
            break
    ones = [sp.Integer(1)] * D
    sums = [(q, LinearPart(_merge([(f, alphas[j], c, ones) for j, c in coefs.items()], D), sp.S.Zero))
            for q, (f, coefs) in groups.items() if len(coefs) > 1]
    return body, sums


def _merge(raw: list[tuple[str | None, tuple[int, ...], sp.Expr, list[sp.Expr]]], D: int) -> list[RankBlock]:
    """Greedy: blocks of one field that agree (order and coefficient) on every axis but d become one
    block whose axis-d factor is the sum; constants go into the merged (or the first) axis."""
    left = list(range(len(raw)))
    blocks: list[RankBlock] = []
    for d in range(D):
        groups: dict[tuple[object, ...], list[int]] = {}
        for i in left:
            field, alpha, _, g = raw[i]
            key = (field, tuple((alpha[e], g[e]) for e in range(D) if e != d))
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            first = raw[members[0]]
            axes = [[Summand(first[1][e], first[3][e])] for e in range(D)]
            axes[d] = [Summand(raw[i][1][d], raw[i][2] * raw[i][3][d]) for i in members]
            blocks.append(RankBlock(first[0], axes))
            left = [i for i in left if i not in members]
    for i in left:
        field, alpha, c, g = raw[i]
        blocks.append(RankBlock(field, [[Summand(alpha[0], c * g[0])]] + [[Summand(alpha[e], g[e])] for e in range(1, D)]))
    return blocks


def rank(blocks: Sequence[RankBlock], ranks: dict[str, int]) -> int:
    """Columns of the residual's CP factors (``ranks``: CP rank per field)."""
    return sum(ranks[b.field] if b.field is not None else 1 for b in blocks)
