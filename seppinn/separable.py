"""Separable models: per-axis factor networks combined by a CP product (the paper's eq. 2).

The model knows nothing about PDEs: it maps per-axis points to per-axis factor jets, and
contracts factor matrices (one per axis) into values on the tensor grid or at scattered points.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import torch
from torch import nn

from .factor_nets import FactorBank

MODEL_KINDS = {"cp": "CP: u = s * sum_r prod_d f_d(x_d)_r  (s = 1/sqrt(R) or 1; the paper's eq. 2)"}
SCALES = {"sqrt_rank": "output scale 1/sqrt(R), as in the paper", "none": "no output scale, as SPINN's code"}


def _pad(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-axis points into (D, n_max), padding short lists with their first point
    (points never interact, so padding changes nothing and is cut off again)."""
    n = max(len(x) for x in xs)
    return torch.stack([x if len(x) == n else torch.cat([x, x[:1].expand(n - len(x))]) for x in xs])


class CPModel(nn.Module):
    """One field: D factor networks with R*C outputs each; C = number of components.

    Factor matrices have shape (n_d, R, C); contractions return (n_1, ..., n_D, C).
    """

    def __init__(
        self,
        ranges: Sequence[tuple[float, float]],
        rank: int,
        components: int,
        scale: str,
        net_kwargs: dict[str, object],
    ) -> None:
        super().__init__()
        self.rank, self.components, self.n_axes = rank, components, len(ranges)
        self.scale = 1 / math.sqrt(rank) if scale == "sqrt_rank" else 1.0
        self.bank = FactorBank(ranges, rank * components, **net_kwargs)  # type: ignore[arg-type]

    def all_jets(self, xs: Sequence[torch.Tensor], order: int) -> list[torch.Tensor]:
        """Jets of every factor at its axis' points xs[d] (n_d,): list of (order+1, n_d, R, C).

        Axes are evaluated as one batch; shorter point lists are padded (and cut off again)."""
        out = self.bank.jets(_pad(xs), order)
        return [out[d, :, : len(x)].reshape(order + 1, len(x), self.rank, self.components)
                for d, x in enumerate(xs)]

    def pseudo_ntks(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Factor pseudo-NTK of every axis at its points xs[d] (sum of logits): list of (n_d, n_d)."""
        K = self.bank.pseudo_ntk(_pad(xs))
        return [K[d, : len(x), : len(x)] for d, x in enumerate(xs)]

    def factor_jets(self, axis: int, x: torch.Tensor, order: int) -> torch.Tensor:
        """Jets of factor ``axis`` at points x (n,): shape (order+1, n, R, C)."""
        return self.all_jets([x] * self.n_axes, order)[axis]

    def contract(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Grid values from factor matrices (n_d, R, C): shape (n_1, ..., n_D, C)."""
        letters = string.ascii_lowercase[: len(mats)]
        out = torch.einsum(",".join(f"{c}rz" for c in letters) + f"->{letters}z", *mats)
        return out * self.scale if self.scale != 1.0 else out

    def contract_points(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Values at scattered points from factor matrices (N, R, C), row i = point i: (N, C)."""
        prod = mats[0]
        for m in mats[1:]:
            prod = prod * m
        out = prod.sum(1)
        return out * self.scale if self.scale != 1.0 else out

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        """Values on the tensor grid of per-axis points: shape (n_1, ..., n_D, C)."""
        return self.contract([j[0] for j in self.all_jets(points, 0)])


class SeparableModel(nn.Module):
    """All fields of a problem: one separable model per field (``fields[name]``)."""

    def __init__(self, fields: dict[str, CPModel]) -> None:
        super().__init__()
        self.fields = nn.ModuleDict(fields)

    def evaluate_grid(self, points: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: m(points) for name, m in self.fields.items()}


def build_model(
    ranges: Sequence[tuple[float, float]],
    fields: dict[str, int],
    *,
    kind: str,
    rank: int,
    scale: str,
    net_kwargs: dict[str, object],
) -> SeparableModel:
    """One ``kind`` model per field (``fields``: name -> number of components)."""
    if kind != "cp":
        raise ValueError(f"unknown model kind {kind!r}")
    return SeparableModel(
        {name: CPModel(ranges, rank, comps, scale, net_kwargs) for name, comps in fields.items()}
    )
