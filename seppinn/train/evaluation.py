"""Predictions, references and metrics on the test grid.

References are prepared once: reference files as given, expressions and reference solvers on the
test grid, and for a CP model with a separable expression reference its factors on the test axes,
so that ``rel_l2`` and ``mse`` come from Gram products without forming the grid (``gridfree``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from ..compile.compiler import CompiledProblem
from ..compile.lowering import evaluate_numpy, lower
from ..compile.plan import Plan
from ..compile.separability import Products
from ..errors import ProblemError
from ..model.separable import SeparableModel
from ..reference_solvers import REFERENCE_SOLVERS
from .gridfree import squared_error, sum_of_squares
from .metrics import MetricSpec, member_sums, metric_sums, metrics_from_sums, worst_member
from .distributed import World
from .points import PointSets


def squeeze_components(a: np.ndarray, components: int) -> np.ndarray:
    """(n_1, ..., n_D, 1) -> (n_1, ..., n_D) for scalar fields."""
    return a[..., 0] if components == 1 else a


class Evaluator:
    def __init__(self, compiled: CompiledProblem, plan: Plan, model: SeparableModel, points: PointSets,
                 ref_arrays: Mapping[str, np.ndarray], world: World = World()) -> None:
        self.c, self.model, self.points, self.device = compiled, model, points, points.device
        self.test_axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(compiled.ranges, plan.test_sizes)]
        points.set_test(self.test_axes)
        # distributed: each rank evaluates the metrics on its rows [lo, hi) of the first test axis
        # and the sums are all-reduced; rank 0 (which writes the outputs) keeps whole references,
        # the other ranks their rows only
        self.world = world
        n0 = len(self.test_axes[0])
        self.rows = world.slab(n0) if world.active else (0, n0)
        lo, hi = self.rows
        own = [self.test_axes[0][lo:hi], *self.test_axes[1:]]
        # separable expression references with a CP model: metrics from Gram products, and the
        # reference on the grid only when the outputs ask for it (``test_solution``)
        self.gridfree_metrics: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {
            f: self._target_factors(f) for f, mode in plan.metric_modes.items() if mode == "grid_free"}
        files = {f: torch.as_tensor(a, device=self.device) for f, a in ref_arrays.items()}
        self.metric_specs = {f: self._metric_spec(f, files.get(f)) for f in compiled.problem.reference}
        whole = world.writes
        self.reference: dict[str, torch.Tensor] = {f: a if whole else a[lo:hi] for f, a in files.items()}
        self.reference.update(self.reference_on(self.test_axes if whole else own, skip=self.gridfree_metrics))
        self._rows_ref = {f: r[lo:hi] if whole else r for f, r in self.reference.items()}  # views
        self._rows_spec = {f: MetricSpec(s.psnr, s.iou, None if s.heldout is None else
                                         s.heldout[lo:hi] if s.heldout.shape[0] == n0 else s.heldout)
                           for f, s in self.metric_specs.items()}

    def check_finite(self) -> None:
        """Refuse, before any training, references that are NaN or infinite at test-grid points."""
        refs = dict(self.reference)
        refs.update({f: torch.cat([g.flatten() for g in factors]) for f, (factors, _) in self.gridfree_metrics.items()})
        for f, r in refs.items():
            if not bool(torch.isfinite(r).all()):
                raise ProblemError(f"the reference of '{f}' is not finite (NaN or inf) at some test-grid points",
                                   file=self.c.problem.source, key=f"reference.{f}")

    def _target_factors(self, f: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The separable reference of field f on the test axes: the target's CP factors
        (n_d, m, 1) float64 (the products' constants on the first axis) and sum(ref^2)."""
        sep = self.c.separable_references[f]
        syms = list(self.c.problem.ctx.axes.values())
        xs = [torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device) for x in self.test_axes]

        def factors(products: Products) -> list[torch.Tensor]:
            cols = [[torch.broadcast_to(torch.as_tensor(lower(g * c if d == 0 else g)({syms[d]: x}), dtype=torch.float64,
                                                        device=self.device), x.shape)
                     for d, (g, x) in enumerate(zip(gs, xs))] for c, gs in products]
            return [torch.stack([col[d] for col in cols], dim=1)[..., None] for d in range(len(xs))]

        return factors(sep.target), sum_of_squares(factors(sep.reference), [None] * len(xs))

    def reference_on(self, axes_points: Sequence[Any], kinds: Sequence[str] = ("expr", "solver"),
                     skip: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """Expression and reference-solver references (of fields not in ``skip``) on the tensor grid
        of ``axes_points``: field -> (n_1, ..., n_D, C) float64 (file references exist on their own
        grid only)."""
        problem = self.c.problem
        out: dict[str, torch.Tensor] = {}
        env = dict(zip(problem.ctx.axes.values(), self.points.exact_coords(axes_points)))
        params = {problem.ctx.parameters[p]: sp.Float(v, 17) for p, v in problem.parameter_values.items()}
        for f, src in problem.reference.items():
            if src.kind not in kinds or f in skip:
                continue
            if src.kind == "solver":
                fn = REFERENCE_SOLVERS[str(src.solver)][0]
                try:
                    arr = fn(problem, [np.asarray(x, dtype=np.float64) for x in axes_points], evaluate_numpy)
                except ValueError as exc:
                    raise ProblemError(f"reference solver {src.solver!r}: {exc}", file=problem.source,
                                       key=f"{src.key}.solver") from None
                out[f] = torch.as_tensor(arr, device=self.device)[..., None]
            elif src.kind == "expr":
                assert src.expr is not None
                v = lower(src.expr.xreplace(params))(env)
                shape = [len(x) for x in axes_points] + [self.c.components[f]]
                out[f] = torch.broadcast_to(torch.as_tensor(v, dtype=torch.float64, device=self.device), shape)
        return out

    def _metric_spec(self, f: str, file: torch.Tensor | None) -> MetricSpec:
        """psnr for image fields, iou for occupancy (a 0/1 reference file), held-out points of keep-data."""
        if f in self.gridfree_metrics:
            return MetricSpec()
        problem = self.c.problem
        sources = [s for s in (problem.data.get(f), problem.reference.get(f)) if s is not None]
        spec = MetricSpec(psnr=any(s.kind == "image" for s in sources),
                          iou=file is not None and problem.reference[f].kind == "file" and bool(((file == 0) | (file == 1)).all()))
        shape = [len(x) for x in self.test_axes]
        for t in self.c.terms:
            part = t.parts[0]
            if t.kind == "data" and part.mask is not None and part.residual.derivs[0][0] == f \
                    and list(part.mask.shape[:-1]) == shape:
                spec.heldout = ~torch.as_tensor(part.mask, device=self.device)
        return spec

    @torch.no_grad()
    def predict(self, axes_points: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Fields on the tensor grid of the given per-axis points: name -> (n_1, ..., n_D, C)
        (with the lift of a hard condition added; softplus of the model for positive fields)."""
        pts = [self.points.tensor(x) for x in axes_points]
        out = {f: m(pts).to(torch.float64) for f, m in self.model.items()}
        if self.c.lifts:
            env = dict(zip(self.c.problem.ctx.axes.values(), self.points.exact_coords(axes_points)))
            for f, g in self.c.lifts.items():
                out[f] = out[f] + torch.as_tensor(lower(g)(env), dtype=torch.float64, device=self.device)
        return self._positive(out)

    def _positive(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Positive fields are softplus of their models' values."""
        for f in self.c.positive:
            out[f] = torch.nn.functional.softplus(out[f])
        return out

    @torch.no_grad()
    def predict_points(self, coords: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Fields at N scattered points, coords[d] (N,) per axis: name -> (N, C). Each factor is
        evaluated at the points' own coordinates; no grid is formed."""
        pts = [self.points.tensor(x) for x in coords]
        out: dict[str, torch.Tensor] = {}
        for f, m in self.model.items():
            mats = [j[0] for j in m.all_jets(pts, 0)]
            out[f] = m.contract_points(mats).to(torch.float64)
        if self.c.lifts:
            env = {s: torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
                   for s, x in zip(self.c.problem.ctx.axes.values(), coords)}
            for f, g in self.c.lifts.items():
                lift = torch.as_tensor(lower(g)(env), dtype=torch.float64, device=self.device)
                out[f] = out[f] + lift.expand(out[f].shape[0]).unsqueeze(-1)
        return self._positive(out)

    def test_solution(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(fields, references) on the test grid as host arrays, (n_1, ..., n_D) for scalar
        fields and (n_1, ..., n_D, C) otherwise: what the outputs and exports write."""
        comps = self.c.components
        fields = {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in self.predict(self.test_axes).items()}
        refs = {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in self.reference.items()}
        lazy = self.reference_on(self.test_axes, skip=self.reference) if self.gridfree_metrics else {}
        refs.update({f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in lazy.items()})
        return fields, refs

    @torch.no_grad()
    def metrics(self) -> dict[str, dict[str, float]]:
        """Per field with a reference: rel_l2, mse (and psnr, iou, held-out variants) on the test grid.
        Distributed: each rank predicts its rows, and one all-reduce adds the sums (``metric_sums``)."""
        lo, hi = self.rows
        pred = self.predict([self.test_axes[0][lo:hi], *self.test_axes[1:]]) if self.reference else {}
        sums = {f: metric_sums(pred[f], ref, self._rows_spec[f]) for f, ref in self._rows_ref.items()}
        params = [d for d, a in enumerate(self.c.problem.axis_list) if a.parameter]
        if params:  # the family's worst member (metric_mode keeps such fields on the grid)
            sizes = [len(self.test_axes[d]) for d in params]
            for f, ref in self._rows_ref.items():
                own = member_sums(pred[f], ref, params)
                if params[0] == 0:  # this rank's rows of the first axis among all its test points
                    own = torch.nn.functional.pad(own, [0, 0] * (len(params) - 1) + [lo, sizes[0] - hi])
                sums[f"{f} members"] = own.reshape(-1)
        if sums:
            flat = self.world.all_reduce(torch.cat(list(sums.values())))
            sums = dict(zip(sums, flat.split([len(v) for v in sums.values()])))
        out = {f: metrics_from_sums(sums[f], self.metric_specs[f]) for f in self._rows_ref}
        if params:
            names, coords = [self.c.axes[d] for d in params], [self.test_axes[d] for d in params]
            for f in self._rows_ref:
                out[f].update(worst_member(sums[f"{f} members"].reshape(2, *sizes), names, coords))
        for f, (target, ref_sq) in self.gridfree_metrics.items():
            model = self.model[f]
            factors = [j[0] for j in model.all_jets([self.points.tensor(x) for x in self.test_axes], 0)]
            factors[0] = factors[0] * getattr(model, "scale", 1.0)
            err_sq = squared_error(factors, target).item()
            n = math.prod(len(x) for x in self.test_axes) * self.c.components[f]
            out[f] = {"rel_l2": math.sqrt(err_sq / ref_sq.item()) if ref_sq.item() > 0 else math.nan, "mse": err_sq / n}
        return {f: out[f] for f in self.c.problem.reference if f in out}
