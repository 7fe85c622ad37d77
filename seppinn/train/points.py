"""Every point set of a run, per axis, in the model's dtype on its device.

Keys: ("train", d) the training grid (uniform, random or Gauss-Legendre), ("face", d, "min" |
"max" | "both") the faces, ("file", name, d) a data file's grid, ("points", name, d) scattered
observations, ("test", d) the test grid. With ``sampling = "gauss"`` the training grid carries
its quadrature weights (normalised to mean 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..compile.compiler import CompiledProblem, PointSetKey, TermPart, per_axis
from ..problem.solver_config import SolverConfig


def broadcast_axes(xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-axis 1-D coordinates -> tensors shaped (1, .., n_d, .., 1, 1) that broadcast to the
    grid (n_1, ..., n_D, C)."""
    D = len(xs)
    return [x.reshape([-1 if i == d else 1 for i in range(D)] + [1]) for d, x in enumerate(xs)]


class PointSets:
    def __init__(self, compiled: CompiledProblem, config: SolverConfig, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.ranges, self.device, self.dtype = compiled.ranges, device, dtype
        self.sampling = config.train.sampling
        self.n_train = per_axis(config.train.points, compiled.axes)
        self.sampler = torch.Generator().manual_seed(config.train.seed + 1)
        self.points: dict[PointSetKey, torch.Tensor] = {}
        self.weights: dict[PointSetKey, torch.Tensor] = {}  # sampling = "gauss": quadrature weights, mean 1
        for d, (lo, hi) in enumerate(compiled.ranges):
            self.points[("face", d, "min")] = self.tensor([lo])
            self.points[("face", d, "max")] = self.tensor([hi])
            self.points[("face", d, "both")] = self.tensor([lo, hi])
        for name, sizes in compiled.file_grids.items():
            for d, ((lo, hi), n) in enumerate(zip(compiled.ranges, sizes)):
                self.points[("file", name, d)] = self.tensor(np.linspace(lo, hi, n))
        for name, coords in compiled.point_sets.items():
            for d in range(coords.shape[1]):
                self.points[("points", name, d)] = self.tensor(coords[:, d])
        self.sample_train(random=self.sampling == "random")

    def __getitem__(self, key: PointSetKey) -> torch.Tensor:
        return self.points[key]

    def tensor(self, values: Any) -> torch.Tensor:
        """Coordinates as a 1-D tensor in the model's dtype on its device."""
        return torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device).to(self.dtype)

    def sample_train(self, random: bool) -> None:
        """The training grid: Gauss-Legendre nodes, new random points per axis (SPINN style) or a uniform grid."""
        for d, ((lo, hi), n) in enumerate(zip(self.ranges, self.n_train)):
            if self.sampling == "gauss":
                nodes, w = np.polynomial.legendre.leggauss(n)
                self.points[("train", d)] = self.tensor(lo + (hi - lo) * (nodes + 1) / 2)
                self.weights[("train", d)] = self.tensor(w * n / w.sum())
            elif random:
                x = lo + (hi - lo) * torch.rand(n, generator=self.sampler, dtype=torch.float64)
                self.points[("train", d)] = x.to(device=self.device, dtype=self.dtype)
            else:
                self.points[("train", d)] = self.tensor(np.linspace(lo, hi, n))

    def set_test(self, axes: Sequence[np.ndarray]) -> None:
        for d, x in enumerate(axes):
            self.points[("test", d)] = self.tensor(x)

    def grid_coords(self, grid: Sequence[PointSetKey]) -> list[torch.Tensor]:
        """Float64 coordinates of a grid, each shaped to broadcast as (n_1, ..., n_D, 1)."""
        return broadcast_axes([self.points[key].to(torch.float64) for key in grid])

    def part_coords(self, part: TermPart) -> list[torch.Tensor]:
        """Float64 coordinates of a term part: its grid's, or (N, 1) per axis at scattered points."""
        if part.pointwise:
            return [self.points[key].to(torch.float64)[:, None] for key in part.grid]
        return self.grid_coords(part.grid)

    def exact_coords(self, axes_points: Sequence[Any]) -> list[torch.Tensor]:
        """Broadcast float64 coordinates straight from the given points (not rounded to the
        model's dtype): for references and lifts."""
        return broadcast_axes([torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
                               for x in axes_points])

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the current training points and the sampler's state."""
        return {"points": {k: v.clone() for k, v in self.points.items() if k[0] == "train"},
                "sampler": self.sampler.get_state()}

    def load_state(self, points: Mapping[PointSetKey, torch.Tensor], sampler: torch.Tensor) -> None:
        self.sampler.set_state(sampler)
        for key, x in points.items():
            self.points[key] = x.to(self.device, self.dtype)

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Every point set and quadrature weight in ``dtype`` from here on (the same values)."""
        self.dtype = dtype
        self.points = {k: v.to(dtype) for k, v in self.points.items()}
        self.weights = {k: v.to(dtype) for k, v in self.weights.items()}
