"""The loss: factor jets -> per term part one evaluator of its mode -> weighted term losses.

Each term part is evaluated by the class of its planned mode:
- ``GridPart``: every field derivative contracted on the grid (or at scattered points), the
  residual evaluated there;
- ``FusedPart``: the affine-separable terms as one CP contraction (``cp_residual``), any rest
  per derivative on the grid;
- ``GridFreePart``: the mean square from per-axis Gram products (``gridfree``), no grid.
A part's ``sum`` is (sum of w r^2 over its points, their count); with SepPGD factors its gradient
is that of 2 <w r, stopgrad(P)> while its value stays the true sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import sympy as sp
import torch

from ..compile.compiler import CompiledProblem, PointSetKey, Residual, TermPart
from ..compile.plan import PartPlan, Plan
from ..errors import ProblemError
from ..model.separable import SeparableModel
from .cp_residual import CPTensor, Jets
from .causal import causal_mean, slice_matrix
from .gridfree import preconditioned_sum, row_sums, sum_of_squares
from .points import PointSets
from .preconditioning import Preconditioners
from .seppgd import FactorPreconditioner, precondition

Cache = dict[tuple[Any, ...], torch.Tensor]
Factors = Mapping[int, FactorPreconditioner] | None  # SepPGD: per free axis, or None


class PartLoss:
    """Shared by the three modes: the part, its plan, the model and the point sets."""

    def __init__(self, part: TermPart, plan: PartPlan, model: SeparableModel, points: PointSets,
                 components: int, rank: int) -> None:
        self.part, self.plan, self.model, self.points = part, plan, model, points
        self.components = components  # the residual's channels
        self.scales = {f: float(getattr(m, "scale", 1.0)) for f, m in model.items()}
        self.learned_symbols = {sp.Symbol(spec.name, real=True): spec.name for spec in model.learned.specs}
        self.mask = torch.as_tensor(part.mask, device=points.device) if part.mask is not None else None
        self.consts: dict[sp.Symbol, torch.Tensor] = {}
        self.sizes: list[int] = []
        self.axis_weights: list[torch.Tensor | None] = []  # sampling = "gauss": quadrature weights per axis
        lin, rest = part.residual.linear, part.residual.rest
        self.cp = [CPTensor(x, part.grid, rank, components, points.device)
                   for x in ([lin] + (rest.sums if rest is not None else []) if plan.mode != "grid" and lin else [])]

    @property
    def grid_residual(self) -> Residual | None:
        """The residual evaluated on the grid: the whole one (grid path), the rest (fused) or none."""
        return self.part.residual if self.plan.mode == "grid" else self.part.residual.rest

    def prepare(self) -> None:
        """Coordinate-only parts on the part's points: the grid residual's constants, the CP coefficients."""
        res = self.grid_residual
        self.consts = res.prepare(self.points.part_coords(self.part), self.points.dtype) if res is not None else {}
        self.sizes = [len(self.points[key]) for key in self.part.grid]
        self.axis_weights = [self.points.weights.get(key) for key in self.part.grid] if not self.part.pointwise else []
        if self.cp:
            coords = [self.points[key].to(torch.float64) for key in self.part.grid]
            for cp in self.cp:
                cp.prepare(coords, self.part.residual.axis_symbols, self.points.dtype, self.learned_symbols)

    def learned(self) -> dict[sp.Symbol, torch.Tensor]:
        """The learned parameters' current values by symbol (empty for most problems)."""
        if not self.learned_symbols:
            return {}
        values = self.model.learned.values()
        return {sym: values[name] for sym, name in self.learned_symbols.items()}

    def inputs(self) -> list[torch.Tensor]:
        """Every coordinate-only tensor the part uses (sources, coefficients, values): for the finite check."""
        return list(self.consts.values()) + [c for cp in self.cp for c in cp.coefficient_tensors()]

    def contractions(self, derivs: Sequence[tuple[str, tuple[int, ...]]], jets: Jets, cache: Cache) -> list[torch.Tensor]:
        """Every field derivative on the part's grid (or at its scattered points), shared through ``cache``."""
        values = []
        for f, alpha in derivs:
            ck = (f, alpha, tuple(self.part.grid))
            if ck not in cache:
                mats = [jets[(f, d)][k][a] for d, (k, a) in enumerate(zip(self.part.grid, alpha))]
                model = self.model[f]
                cache[ck] = model.contract_points(mats) if self.part.pointwise else model.contract(mats)
            values.append(cache[ck])
        return values

    def residual(self, jets: Jets, cache: Cache) -> torch.Tensor:
        raise NotImplementedError

    def sum(self, jets: Jets, cache: Cache, factors: Factors, scale: float) -> tuple[torch.Tensor, torch.Tensor | int]:
        """(sum of w r^2 over the part's points, their count). Weights w: quadrature weights of
        ``sampling = "gauss"`` (mean 1), the keep-mask of data, or 1."""
        r = self.residual(jets, cache)
        if self.mask is not None:
            r = r * self.mask
            n: torch.Tensor | int = self.mask.sum() * r.shape[-1]
        else:
            n = r.numel()
        wr = self._weighted(r)
        s = (wr * r).sum()
        if factors is not None:
            # value: the true sum of squares; gradient: that of 2 <w r, stopgrad(P)>
            P = precondition(r.detach(), factors, scale, self.part.pointwise)
            if self.mask is not None:
                P = P * self.mask
            surrogate = 2 * (wr * P).sum()
            s = s.detach() + (surrogate - surrogate.detach())  # value exactly s
        return s, n


    def _weighted(self, r: torch.Tensor) -> torch.Tensor:
        """w r: quadrature weights broadcast along their axes (r: (n_1, ..., n_D, C))."""
        for d, w in enumerate(self.axis_weights):
            if w is not None:
                r = r * w.reshape([-1 if i == d else 1 for i in range(len(self.axis_weights))] + [1])
        return r

    def row_sums(self, jets: Jets, cache: Cache, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of w r^2 at each index of ``axis``, the points at each), both (n_axis,): causal training."""
        r = self.residual(jets, cache)
        rows = (self._weighted(r) * r).movedim(axis, 0).reshape(r.shape[axis], -1).sum(1)
        return rows, torch.full_like(rows, r.numel() / r.shape[axis])


class GridPart(PartLoss):
    def residual(self, jets: Jets, cache: Cache) -> torch.Tensor:
        values = self.contractions(self.part.residual.derivs, jets, cache)
        return self.part.residual(values, self.consts, self.learned())


class FusedPart(PartLoss):
    def residual(self, jets: Jets, cache: Cache) -> torch.Tensor:
        sizes, learned = self.sizes, self.learned()
        r = self.cp[0].contract(jets, self.scales, sizes, learned)
        rest = self.part.residual.rest
        if rest is not None:
            values = self.contractions(rest.derivs, jets, cache)
            values += [cp.contract(jets, self.scales, sizes, learned) for cp in self.cp[1:]]
            r = r + rest(values, self.consts, learned)
        return r


class GridFreePart(PartLoss):
    def sum(self, jets: Jets, cache: Cache, factors: Factors, scale: float) -> tuple[torch.Tensor, torch.Tensor | int]:
        cp = self.cp[0]
        U = cp.factors(jets, self.scales, distinct_axes=range(len(self.part.grid)), learned=self.learned())
        n_free = math.prod([u.shape[0] for u in U]) * U[0].shape[-1]
        if factors is not None:
            s = preconditioned_sum(U, self.axis_weights, factors, scale, cp.columns)
        else:
            s = sum_of_squares(U, self.axis_weights, cp.columns)
        return s.to(self.points.dtype), n_free

    def row_sums(self, jets: Jets, cache: Cache, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        cp = self.cp[0]
        U = cp.factors(jets, self.scales, distinct_axes=range(len(self.part.grid)), learned=self.learned())
        rows = row_sums(U, self.axis_weights, axis, cp.columns)
        n_free = math.prod([u.shape[0] for u in U]) * U[0].shape[-1]
        return rows, torch.full_like(rows, n_free / U[axis].shape[0])


PART_LOSSES: dict[str, type[PartLoss]] = {"grid": GridPart, "fused": FusedPart, "grid_free": GridFreePart}


class Losses:
    """The weighted mean-square loss of every term: one evaluator per term part (``parts[t][p]``)."""

    def __init__(self, compiled: CompiledProblem, plan: Plan, model: SeparableModel, points: PointSets,
                 rank: int, preconditioners: Preconditioners | None = None) -> None:
        self.compiled, self.plan, self.model, self.points = compiled, plan, model, points
        self.preconditioners = preconditioners
        self.parts = [[PART_LOSSES[pp.mode](part, pp, model, points, self._components(part), rank)
                       for part, pp in zip(t.parts, plans)] for t, plans in zip(compiled.terms, plan.parts)]
        self.jet_passes = {f: list(passes) for f, passes in plan.jet_passes.items()}
        self.causal = plan.causal
        self.slices: torch.Tensor | None = None  # causal training: (M, n_t) slice matrix of the time points
        self.diagnostic_names = [f"causal_min/{compiled.terms[ti].name}" for ti in plan.causal.terms] \
            if plan.causal is not None else []
        self.prepare()

    def _components(self, part: TermPart) -> int:
        fields = [f for f, _ in part.residual.derivs]
        return self.compiled.components[fields[0]] if fields else 1

    def prepare(self) -> None:
        """Coordinate-only parts of every residual on its points (again after the points change)."""
        for parts in self.parts:
            for p in parts:
                p.prepare()
        if self.causal is not None:
            lo, hi = self.compiled.ranges[self.causal.axis]
            self.slices = slice_matrix(self.points[("train", self.causal.axis)], lo, hi, self.causal.chunks)

    def check_finite(self, dtype: str) -> None:
        """Refuse (ProblemError, before any training) sources, coefficients and condition values that
        are NaN or infinite on their points (log(x) on [-1, 1], exp(x) beyond the dtype's range)."""
        for t, parts in zip(self.compiled.terms, self.parts):
            for p in parts:
                if not all(bool(torch.isfinite(v).all()) for v in p.inputs()):
                    raise ProblemError(f"term '{t.name}' ({p.part.label}): its sources, coefficients or values are "
                                       f"not finite in {dtype} (NaN or inf) at some of its points",
                                       file=self.compiled.problem.source, key=t.key)

    def jets(self) -> dict[tuple[str, int], dict[PointSetKey, torch.Tensor]]:
        """(field, axis) -> point-set key -> jet (order+1, n, *factor shape)."""
        out: dict[tuple[str, int], dict[PointSetKey, torch.Tensor]] = {}
        for f, model in self.model.items():
            for order, keys in self.jet_passes[f]:
                # an axis with no set at this order gets one placeholder point, cut off again
                sets = [[self.points[k] for k in ks] or [self.points[("face", d, "min")]] for d, ks in enumerate(keys)]
                jets = model.all_jets([torch.cat(s) for s in sets], order)
                for d, (ks, jet) in enumerate(zip(keys, jets)):
                    split = torch.split(jet, [len(x) for x in sets[d]], dim=1)
                    out.setdefault((f, d), {}).update(zip(ks, split))
        return out

    def __call__(self) -> dict[str, torch.Tensor]:
        """Weighted loss per term name at the current parameters (with SepPGD's gradient while its
        preconditioners are active, and the causal gradient of causal terms)."""
        return self.evaluate()[0]

    def evaluate(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(the weighted loss per term name, the diagnostics: ``diagnostic_names`` -> value)."""
        factors, scale = self.preconditioners.current() if self.preconditioners is not None else (None, {})
        jets = self.jets()
        cache: Cache = {}
        out: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        for ti, (t, parts) in enumerate(zip(self.compiled.terms, self.parts)):
            if self.causal is not None and ti in self.causal.terms:
                assert self.slices is not None
                rows = [p.row_sums(jets, cache, self.causal.axis) for p in parts]
                loss, w_min = causal_mean(torch.stack([r for r, _ in rows]).sum(0),
                                          torch.stack([c for _, c in rows]).sum(0), self.slices, self.causal.tol)
                out[t.name] = t.weight * loss.to(self.points.dtype)
                diagnostics[f"causal_min/{t.name}"] = w_min.to(self.points.dtype)
                continue
            sums: list[torch.Tensor] = []
            counts: list[torch.Tensor | int] = []
            means: list[torch.Tensor] = []
            for pi, p in enumerate(parts):
                f = factors.get((ti, pi)) if factors is not None else None
                s, n = p.sum(jets, cache, f, scale[(ti, pi)] if f is not None else 1.0)
                sums.append(s)
                counts.append(n)
                means.append(s / n * p.part.faces)  # a part of two faces: the sum of their means
            loss = torch.stack(means).sum() if t.reduction == "sum" else torch.stack(sums).sum() / sum(counts)
            out[t.name] = t.weight * loss
        return out, diagnostics
