"""SepPGD in the loop: the factor preconditioners S_d of every preconditioned term part (by its
(term, part) index) and free axis, rebuilt from the current factor networks and points."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..compile.compiler import CompiledProblem, PointSetKey
from ..compile.plan import Plan
from ..model.separable import SeparableModel
from .points import PointSets
from .progress import Progress
from .seppgd import FactorPreconditioner, build_all

PartIndex = tuple[int, int]
Built = dict[tuple[int, int], tuple[torch.Tensor | None, ...]]


class Preconditioners:
    def __init__(self, compiled: CompiledProblem, plan: Plan, model: SeparableModel, points: PointSets,
                 modulation: str, normalized: bool) -> None:
        self.compiled, self.plan, self.model, self.points = compiled, plan, model, points
        self.modulation, self.normalized = modulation, normalized
        self.active = bool(plan.preconditioned)  # switched off for the L-BFGS phase
        self.factors: dict[PartIndex, dict[int, FactorPreconditioner]] = {}
        self.scales: dict[PartIndex, float] = {}  # each part's c: 1 / (free axes) when normalized
        self.seconds = 0.0
        # the rebuild (pseudo-NTKs, eigh, S_d) as a graph of its own: ~1.4 ms per rebuild at 64^3
        # against ~3 eager (`bench/seppgd.py --cost [--compile]`: rebuild share x step time x 10)
        self._compiled: Callable[..., Built] | None = (
            torch.compile(self._build) if plan.compiles and self.active else None)

    def _build(self, field: str, xs: list[torch.Tensor], wanted: tuple[tuple[int, tuple[int, ...]], ...]) -> Built:
        Ks = [K.detach() for K in self.model[field].pseudo_ntks(xs)]
        return build_all(Ks, wanted, self.modulation)

    def rebuild(self, progress: Progress | None = None) -> None:
        """S_d for every preconditioned term part from the current factor networks and points."""
        start = time.perf_counter()
        pre = self.plan.preconditioned
        # faces reuse the interior's points on their free axes: one K_d and one S_d per
        # (field, axis, point set, k), however many terms and faces share them
        terms = [(ti, t) for ti, t in enumerate(self.compiled.terms) if t.name in pre]
        wanted: dict[str, list[dict[PointSetKey, set[int]]]] = {}  # field -> per axis: point set -> k values
        for ti, t in terms:
            per = wanted.setdefault(t.parts[0].residual.derivs[0][0], [{} for _ in self.compiled.axes])
            for pi, part in enumerate(t.parts):
                for d, key in enumerate(part.grid):
                    if key[0] != "face":
                        per[d].setdefault(key, set()).add(self.plan.part(ti, pi).k[d])
        built: dict[tuple[Any, ...], FactorPreconditioner] = {}
        for field, per in wanted.items():
            for i in range(max(len(sets) for sets in per)):  # one pseudo-NTK pass per point set and axis
                keys = [list(sets)[i] if i < len(sets) else ("face", d, "min") for d, sets in enumerate(per)]
                plan = tuple((d, tuple(sorted(per[d][keys[d]]))) for d in range(len(per)) if i < len(per[d]))
                xs = [self.points[k] for k in keys]
                tensors = None
                if self._compiled is not None:
                    try:
                        tensors = self._compiled(field, xs, plan)
                    except Exception as exc:  # a backend that cannot compile it: eager is always right
                        if progress is not None:
                            progress.note(f"torch.compile of the SepPGD rebuild failed ({type(exc).__name__}); "
                                          "continuing eager")
                        self._compiled = None
                if tensors is None:
                    tensors = self._build(field, xs, plan)
                for (d, k), ts in tensors.items():
                    built[(field, d, keys[d], k)] = FactorPreconditioner(*ts)  # type: ignore[arg-type]
        for ti, t in terms:
            field = t.parts[0].residual.derivs[0][0]
            for pi, part in enumerate(t.parts):
                self.factors[(ti, pi)] = {
                    d: built[(field, d, key, self.plan.part(ti, pi).k[d])]
                    for d, key in enumerate(part.grid) if key[0] != "face"}
        self._set_scales()
        self.seconds += time.perf_counter() - start

    def _set_scales(self) -> None:
        self.scales = {i: 1.0 / len(fs) if self.normalized else 1.0 for i, fs in self.factors.items()}

    def current(self) -> tuple[dict[PartIndex, dict[int, FactorPreconditioner]] | None, dict[PartIndex, float]]:
        """(the factors the loss applies, or None; each part's scale c: 1 / (free axes) when normalized)."""
        return (self.factors, self.scales) if self.active else (None, {})

    def state(self) -> dict[PartIndex, dict[int, tuple[torch.Tensor, ...]]]:
        return {i: {d: (S.V.clone(), S.coef.clone(), S.eigvals.clone(), S.modulated.clone()) for d, S in fs.items()}
                for i, fs in self.factors.items()}

    def load_state(self, factors: Mapping[PartIndex, Mapping[int, tuple[torch.Tensor, ...]]], active: bool) -> None:
        self.factors = {tuple(i): {d: FactorPreconditioner(*(x.to(self.points.device) for x in tensors))  # type: ignore[misc]
                                   for d, tensors in fs.items()} for i, fs in factors.items()}
        self._set_scales()
        self.active = active
