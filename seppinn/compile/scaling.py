"""Field scales: each field's model is s_f times its networks' product, with s_f estimated here from
the problem (or given: ``fields.v = { scale = 20 }``), so that a field of size 20 trains like one of
size 1 (the factor networks start at O(1) and Adam's steps are O(lr) whatever the field's size).

The estimate, in this order, on a sample of each term's points (``SAMPLES`` per axis):
1. **values**: the largest |value| of the field's value conditions (``expr = u``: Dirichlet,
   initial values, hard conditions) and of its data;
2. **equations**, for fields still unknown: an equation in which one field f is unknown, the others
   replaced by s_g * (their probe), is affine in f as R(f) = A f - b. Its "source" b = -R(0) gives
   the probe p = b / max|b|, and s_f = max|b| / max|A p|: exact when the source is an eigenfunction
   of the operator (Poisson's and Helmholtz's manufactured solutions, the biharmonic plate's two
   fields), and of the right size for smooth sources. Repeated until no field is added.
A field with no magnitude found keeps 1. An estimate between 1/BAND and BAND is not applied: the
networks reach that size from their initialisation, and problems already of size ~1 train as before.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch

from ..errors import ProblemError
from ..problem.spec import Problem
from .lowering import lower

SAMPLES = 17  # points per axis of the estimate's sample grids
MAX_POINTS = 50_000  # a sample grid with more points is thinned to a seeded random subset
ROUNDING = 1e-10  # face values below this share of the value expression's size inside count as zero
BAND = 4.0  # estimates within [1/BAND, BAND] leave the field unscaled


@dataclass(frozen=True)
class FieldScale:
    """``scale``: the factor applied; ``estimate``: the magnitude found (None: none, or given);
    ``source``: where it came from, for ``seppinn check``."""

    scale: float
    estimate: float | None
    source: str

    def describe(self) -> str:
        if self.estimate is None:
            return f"{self.scale:.3g} ({self.source})"
        applied = "" if self.scale != 1.0 else f", within [1/{BAND:g}, {BAND:g}]: not applied"
        return f"{self.scale:.3g} (estimate {self.estimate:.3g} from {self.source}{applied})"


def _sample(problem: Problem, fixed: Mapping[int, float]) -> dict[sp.Symbol, torch.Tensor]:
    """Coordinates (float64, (N,) each) of a SAMPLES^D grid of the box, with the axes in ``fixed``
    held at a value (a face); thinned to MAX_POINTS seeded random points."""
    axes = problem.axis_list
    lines = [torch.tensor([fixed[d]], dtype=torch.float64) if d in fixed else
             torch.linspace(a.lo, a.hi, SAMPLES, dtype=torch.float64) for d, a in enumerate(axes)]
    n = math.prod(len(x) for x in lines)
    if n > MAX_POINTS:
        g = torch.Generator().manual_seed(0)
        cols = [x[torch.randint(len(x), (MAX_POINTS,), generator=g)] for x in lines]
    else:
        cols = [c.reshape(-1) for c in torch.meshgrid(*lines, indexing="ij")]
    return {problem.ctx.axes[a.name]: c for a, c in zip(axes, cols)}


def _max_abs(expr: sp.Expr, points: Mapping[sp.Symbol, torch.Tensor]) -> float:
    """max |expr| over the points (finite values only; 0 where it cannot be evaluated)."""
    try:
        v = torch.as_tensor(lower(expr)(dict(points)), dtype=torch.float64)
    except (ProblemError, TypeError, ValueError, ZeroDivisionError, RuntimeError):
        return 0.0
    v = v.abs()[torch.isfinite(v)]
    return float(v.max()) if v.numel() else 0.0


def _params(problem: Problem, expr: sp.Expr) -> sp.Expr:
    """``expr`` with the parameters' values, the learned ones' initial values, substituted."""
    values = {**problem.parameter_values, **{n: p.initial for n, p in problem.learned.items()}}
    return expr.xreplace({problem.ctx.parameters[p]: sp.Float(v, 17) for p, v in values.items()})


def _values(problem: Problem, data_arrays: Mapping[str, np.ndarray], kept: Mapping[str, np.ndarray]
            ) -> dict[str, tuple[float, str, sp.Expr]]:
    """field -> (largest |value|, its source, probe = value / largest) over value conditions and data
    (of data with a keep-mask, the kept points only: held-out values never reach the training)."""
    found: dict[str, tuple[float, str, sp.Expr]] = {}

    def offer(f: str, m: float, source: str, probe: sp.Expr) -> None:
        if m > 0 and math.isfinite(m) and m > found.get(f, (0.0,))[0]:
            found[f] = (m, source, probe)

    interior = _sample(problem, {})
    for c in problem.conditions:
        fields = problem.fields_in(c.residual)
        if len(fields) != 1:
            continue
        f = fields.pop()
        value = -(c.residual - problem.ctx.fields[f])
        if value.has(problem.ctx.fields[f]):
            continue  # a derivative condition, not a value
        value = _params(problem, value)
        m = max(_max_abs(value, _sample(problem, {face.axis: face.value})) for face in c.faces)
        if m <= ROUNDING * _max_abs(value, interior):
            m = 0.0  # zero up to rounding on its faces: sin(pi x) on x = 1
        offer(f, m, f"the values of '{c.name}'", value / m if m > 0 else sp.Integer(0))
    for f, src in problem.data.items():
        name = problem.data_term_name(f)
        if src.kind == "expr" and src.expr is not None:
            value = _params(problem, src.expr)
            m = _max_abs(value, interior)
            offer(f, m, f"the data '{name}'", value / m if m > 0 else sp.Integer(0))
        elif f in data_arrays:
            arr = np.asarray(data_arrays[f], dtype=np.float64)
            arr = arr[:, len(problem.axis_list):] if src.kind == "points" else arr
            if f in kept:
                arr = arr.reshape(*kept[f].shape, -1)[kept[f]]
            finite = np.abs(arr[np.isfinite(arr)])
            offer(f, float(finite.max()) if finite.size else 0.0, f"the data '{name}'", sp.Integer(1))
    return found


def estimate_scales(problem: Problem, data_arrays: Mapping[str, np.ndarray] | None = None,
                    kept: Mapping[str, np.ndarray] | None = None) -> dict[str, FieldScale]:
    """Every field's scale (module docstring): given, from values, from equations, or 1. ``kept``:
    per data field with a keep-mask, the mask (grid-shaped bool)."""
    out: dict[str, FieldScale] = {f: FieldScale(s, None, "given") for f, s in problem.scales.items()}
    out.update({f: FieldScale(1.0, None, "positive field: softplus of its networks")
                for f in problem.positive if f not in out})
    probes: dict[str, sp.Expr] = {}
    magnitudes: dict[str, float] = {}
    for f, (m, source, probe) in _values(problem, data_arrays or {}, kept or {}).items():
        magnitudes[f], probes[f] = m, probe
        out.setdefault(f, FieldScale(m if not 1 / BAND <= m <= BAND else 1.0, m, source))
    for f, s in problem.scales.items():  # a given scale is also the size other fields are estimated from
        magnitudes[f], probes[f] = s, probes.get(f, sp.Integer(1))
    interior = _sample(problem, {})
    for _ in itertools.count():
        added = False
        for eq in problem.equations:
            unknown = problem.fields_in(eq.residual) - set(magnitudes)
            if len(unknown) != 1:
                continue
            f = unknown.pop()
            u = problem.ctx.fields[f]
            known = {problem.ctx.fields[g]: magnitudes[g] * probes[g] for g in problem.fields_in(eq.residual) if g != f}
            res = _params(problem, eq.residual).subs(known)
            source = -res.subs(u, 0).doit()
            b = _max_abs(source, interior)
            if b == 0.0:
                continue
            probe = source / b
            gain = _max_abs(res.subs(u, probe).doit() + source, interior)
            if gain == 0.0 or not math.isfinite(b / gain):
                continue
            m = b / gain
            magnitudes[f], probes[f] = m, probe
            out.setdefault(f, FieldScale(m if not 1 / BAND <= m <= BAND else 1.0, m, f"equation '{eq.name}'"))
            added = True
        if not added:
            break
    for f in problem.components:
        out.setdefault(f, FieldScale(1.0, None, "no magnitude found"))
    return {f: out[f] for f in problem.components}
