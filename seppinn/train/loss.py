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
from .distributed import World, shard_dim
from .gridfree import Rows, preconditioned_sum, row_sums, sum_of_squares
from .points import PointSets
from .preconditioning import Preconditioners
from .seppgd import FactorPreconditioner, precondition

Cache = dict[tuple[Any, ...], torch.Tensor]
Factors = Mapping[int, FactorPreconditioner] | None  # SepPGD: per free axis, or None


class PartLoss:
    """Shared by the three modes: the part, its plan, the model and the point sets."""

    cuts = True  # sharded: the part's inputs (coordinates, constants, jets) are this rank's slab only

    def __init__(self, part: TermPart, plan: PartPlan, model: SeparableModel, points: PointSets,
                 components: int, rank: int, world: World = World(), shard_axis: int = 0) -> None:
        self.part, self.plan, self.model, self.points = part, plan, model, points
        self.world, self.shard_axis = world, shard_axis
        self.components = components  # the residual's channels
        self.scales = {f: float(getattr(m, "scale", 1.0)) for f, m in model.items()}
        self.learned_symbols = {sp.Symbol(spec.name, real=True): spec.name for spec in model.learned.specs}
        self.full_mask = torch.as_tensor(part.mask, device=points.device) if part.mask is not None else None
        self.mask = self.full_mask  # this rank's slab of it
        self.consts: dict[sp.Symbol, torch.Tensor] = {}
        self.sizes: list[int] = []  # this rank's points per axis
        self.axis_weights: list[torch.Tensor | None] = []  # sampling = "gauss": quadrature weights per axis (slab)
        # the slab this rank contracts: rows [lo, hi) of grid axis ``dim`` (scattered points: of the
        # point index) among ``n`` (``distributed``; one process: all of them)
        self.dim, self.lo, self.hi, self.n = 0, 0, 0, 0
        lin, rest = part.residual.linear, part.residual.rest
        self.cp = [CPTensor(x, part.grid, rank, components, points.device)
                   for x in ([lin] + (rest.sums if rest is not None else []) if plan.mode != "grid" and lin else [])]

    @property
    def grid_residual(self) -> Residual | None:
        """The residual evaluated on the grid: the whole one (grid path), the rest (fused) or none."""
        return self.part.residual if self.plan.mode == "grid" else self.part.residual.rest

    def _slab_dims(self) -> range:
        """The grid axes this rank's slab cuts: ``dim``, or every axis at scattered points."""
        return range(len(self.part.grid)) if self.part.pointwise else range(self.dim, self.dim + 1)

    def _cut(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.narrow(dim, self.lo, self.hi - self.lo)

    def prepare(self) -> None:
        """Coordinate-only parts on this rank's points of the part: the grid residual's constants,
        the CP coefficients, the weights and the mask."""
        full = [len(self.points[key]) for key in self.part.grid]
        self.dim = shard_dim(self.part.grid, full, self.part.pointwise, self.shard_axis)
        self.n = full[self.dim]
        self.lo, self.hi = self.world.slab(self.n)
        cut = self._slab_dims() if self.world.active and self.cuts else range(0)
        self.sizes = [self.hi - self.lo if d in cut else n for d, n in enumerate(full)]
        res = self.grid_residual
        coords = self.points.part_coords(self.part)
        coords = [self._cut(c, 0 if self.part.pointwise else d) if d in cut else c for d, c in enumerate(coords)]
        arrays = None
        if res is not None and cut:  # given data on this rank's points
            where = (slice(None),) * self.dim + (slice(self.lo, self.hi),)
            arrays = {s: a[where] for s, a in res.arrays.items()}
        self.consts = res.prepare(coords, self.points.dtype, arrays) if res is not None else {}
        self.axis_weights = [self.points.weights.get(key) for key in self.part.grid] if not self.part.pointwise else []
        self.axis_weights = [self._cut(w, 0) if w is not None and d in cut else w
                             for d, w in enumerate(self.axis_weights)]
        if self.full_mask is not None and cut:
            self.mask = self._cut(self.full_mask, self.dim)
        if self.cp:
            xs = [self.points[key].to(torch.float64) for key in self.part.grid]
            xs = [self._cut(x, 0) if d in cut else x for d, x in enumerate(xs)]
            for cp in self.cp:
                cp.prepare(xs, self.part.residual.axis_symbols, self.points.dtype, self.learned_symbols)

    def view(self, jets: Jets) -> Jets:
        """``jets`` with this rank's rows only on the axes its slab cuts (one process: ``jets``)."""
        if not self.world.active or not self.cuts:
            return jets
        out = dict(jets)
        for d in self._slab_dims():
            key = self.part.grid[d]
            for (f, e), per_set in jets.items():
                if e == d and key in per_set:
                    out[(f, e)] = {**per_set, key: self._cut(per_set[key], 1)}
        return out

    def count(self, r: torch.Tensor) -> torch.Tensor | int:
        """The part's points times components over every rank (``r``: this rank's residual)."""
        if self.full_mask is not None:
            return self.full_mask.sum() * r.shape[-1]
        if not self.world.active:
            return r.numel()
        return math.prod(r.shape[:self.dim]) * self.n * math.prod(r.shape[self.dim + 1:])

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
        n = self.count(r)
        wr = self._weighted(r)
        s = (wr * r).sum()
        if factors is not None:
            # value: the true sum of squares; gradient: that of 2 <w r, stopgrad(P)>. Sharded, the
            # product along the slab's axis needs the whole residual there
            full = None
            if self.world.active and any(S.V.shape[1] and (self.part.pointwise or d == self.dim)
                                         for d, S in factors.items()):
                full = (self.dim, self.world.gather(r, self.dim, self.n), self.lo, self.hi)
            P = precondition(r.detach(), factors, scale, self.part.pointwise, full)
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
        counts = torch.full_like(rows, r.numel() / max(r.shape[axis], 1))
        return self._pad(rows, axis), self._pad(counts, axis)

    def _pad(self, rows: torch.Tensor, axis: int) -> torch.Tensor:
        """Rows of this rank's slab along ``axis`` placed among all ``n`` (zeros elsewhere)."""
        if not self.world.active or axis != self.dim:
            return rows
        return torch.nn.functional.pad(rows, (self.lo, self.n - self.hi))


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
    """The factors G_d come from every row (they are small); the slab enters as the rows of G_dim
    summed in the Gram product of that axis (``gridfree``: ``rows``)."""

    cuts = False

    def _factors(self, jets: Jets) -> tuple[list[torch.Tensor], Rows, int]:
        cp = self.cp[0]
        U = cp.factors(jets, self.scales, distinct_axes=range(len(self.part.grid)), learned=self.learned())
        rows = (self.dim, self.lo, self.hi) if self.world.active else None
        return U, rows, math.prod([u.shape[0] for u in U]) * U[0].shape[-1]

    def sum(self, jets: Jets, cache: Cache, factors: Factors, scale: float) -> tuple[torch.Tensor, torch.Tensor | int]:
        U, rows, n_free = self._factors(jets)
        if factors is not None:
            s = preconditioned_sum(U, self.axis_weights, factors, scale, self.cp[0].columns, rows)
        else:
            s = sum_of_squares(U, self.axis_weights, self.cp[0].columns, rows)
        return s.to(self.points.dtype), n_free

    def row_sums(self, jets: Jets, cache: Cache, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        U, rows, n_free = self._factors(jets)
        r = row_sums(U, self.axis_weights, axis, self.cp[0].columns, rows)
        # per row: every rank's points along ``axis`` (the slab's axis), else all on rank 0
        counts = torch.full_like(r, n_free / U[axis].shape[0] if axis == self.dim or self.world.rank == 0 else 0)
        return self._pad(r, axis), self._pad(counts, axis)


PART_LOSSES: dict[str, type[PartLoss]] = {"grid": GridPart, "fused": FusedPart, "grid_free": GridFreePart}


class Losses:
    """The weighted mean-square loss of every term: one evaluator per term part (``parts[t][p]``)."""

    def __init__(self, compiled: CompiledProblem, plan: Plan, model: SeparableModel, points: PointSets,
                 rank: int, preconditioners: Preconditioners | None = None, world: World = World(),
                 shard_axis: int = 0) -> None:
        self.compiled, self.plan, self.model, self.points = compiled, plan, model, points
        self.preconditioners, self.world = preconditioners, world
        self.parts = [[PART_LOSSES[pp.mode](part, pp, model, points, self._components(part), rank, world, shard_axis)
                       for part, pp in zip(t.parts, plans)] for t, plans in zip(compiled.terms, plan.parts)]
        self.jet_passes = {f: list(passes) for f, passes in plan.jet_passes.items()}
        self.causal = plan.causal
        self.slices: torch.Tensor | None = None  # causal training: (M, n_t) slice matrix of the time points
        self.causal_weights = True  # False: causal terms take the gradient of their plain mean square (L-BFGS)
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
                rows = [p.row_sums(p.view(jets), cache, self.causal.axis) for p in parts]
                mine, per_row = torch.stack([r for r, _ in rows]).sum(0), torch.stack([c for _, c in rows]).sum(0)
                every = None
                if self.world.active:  # the weights need every rank's rows; the gradient only this rank's
                    every, per_row = self.world.all_reduce(torch.stack([mine.detach(), per_row]))
                loss, w_min = causal_mean(mine, per_row, self.slices, self.causal.tol, every, self.causal_weights)
                out[t.name] = t.weight * loss.to(self.points.dtype)
                diagnostics[f"causal_min/{t.name}"] = w_min.to(self.points.dtype)
                continue
            sums: list[torch.Tensor] = []
            counts: list[torch.Tensor | int] = []
            means: list[torch.Tensor] = []
            for pi, p in enumerate(parts):
                f = factors.get((ti, pi)) if factors is not None else None
                s, n = p.sum(p.view(jets), cache, f, scale[(ti, pi)] if f is not None else 1.0)
                sums.append(s)
                counts.append(n)
                means.append(s / n * p.part.faces)  # a part of two faces: the sum of their means
            loss = torch.stack(means).sum() if t.reduction == "sum" else torch.stack(sums).sum() / sum(counts)
            out[t.name] = t.weight * loss
        return out, diagnostics
