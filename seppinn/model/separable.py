"""Separable models: per-axis factor networks combined by a CP, Tucker or tensor-train product.

The model knows nothing about PDEs: it maps per-axis points to per-axis factor jets, and
contracts factor tensors (one per axis) into values on the tensor grid or at scattered points.
Every derivative on the grid is the same contraction with the factors' derivative slices.

- CP (the paper's eq. 2):   u[i..] = s * sum_r prod_d F_d[i_d, r]            F_d: (n_d, R, C)
- Tucker:                   u = G x_1 F_1 x_2 ... x_D F_D                    F_d: (n_d, R_d), core G: (R_1, ..., R_D, C)
- TT (the paper's eq. 3):   u[i..] = G_1[i_1] G_2[i_2] ... G_D[i_D]          G_d: (n_d, R_{d-1}, R_d), R_0 = 1, R_D = C
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from . import jets as J
from .factor_nets import FactorBank, Tape
from .learned import LearnedScalars, ScalarSpec


def _pad(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-axis points into (D, n_max), padding short lists with their first point
    (points never interact, so padding changes nothing and is cut off again)."""
    n = max(len(x) for x in xs)
    return torch.stack([x if len(x) == n else torch.cat([x, x[:1].expand(n - len(x))]) for x in xs])


class SeparableField(nn.Module):
    """One field: D factor networks (one ``FactorBank``) and a contraction.

    Subclasses set ``shapes`` (the per-point factor shape of each axis) and implement
    ``contract`` and ``contract_points``. Axes whose factors are smaller than the bank's output
    width have the surplus outputs masked to exactly zero, so they neither contribute nor
    enter the pseudo-NTK."""

    shapes: list[tuple[int, ...]]

    def __init__(self, ranges: Sequence[tuple[float, float]], shapes: list[tuple[int, ...]],
                 net_kwargs: dict[str, object]) -> None:
        super().__init__()
        self.shapes, self.n_axes = shapes, len(ranges)
        self.hard_axis: int | None = None  # set_hard_axis: factor multiplied by (x - lo)(hi - x)
        self.hard_range = (0.0, 0.0)
        self.hard_side = "both"
        self.hard_fade: float | None = None
        self.axis_scale: torch.Tensor | None  # set_output_scale: (D,), the output scale on the first axis
        self.register_buffer("axis_scale", None, persistent=False)
        sizes = [math.prod(s) for s in shapes]
        width = max(sizes)
        self.bank = FactorBank(ranges, width, **net_kwargs)  # type: ignore[arg-type]
        if min(sizes) < width:
            mask = torch.zeros(len(sizes), width)
            for d, s in enumerate(sizes):
                mask[d, :s] = 1.0
            self.register_buffer("out_mask", mask)
        else:
            self.out_mask = None

    def set_hard_axis(self, axis: int, lo: float, hi: float, side: str = "both", fade: float | None = None) -> None:
        """Make the model vanish on both faces of ``axis``: factor ``axis`` times (x - lo)(hi - x);
        ``side`` "min" / "max": on that face only, times s = x - lo or hi - x, or with ``fade``
        times 1 - e^{-s/fade}. Every CP/Tucker/TT term contains that factor exactly once, so the
        whole field vanishes there."""
        self.hard_axis, self.hard_range, self.hard_side, self.hard_fade = axis, (lo, hi), side, fade

    def set_output_scale(self, scale: float) -> None:
        """Make the field ``scale`` times its networks' product: the first axis' factor jets are
        multiplied by it (every CP/Tucker/TT term holds that factor exactly once). Not a parameter,
        and not stored: it comes from the problem (``compile.scaling``)."""
        axis_scale = torch.ones(self.n_axes, dtype=torch.float64, device=self.bank.lo.device)
        axis_scale[0] = scale
        self.register_buffer("axis_scale", axis_scale, persistent=False)

    @property
    def output_scale(self) -> float:
        return float(self.axis_scale[0]) if self.axis_scale is not None else 1.0

    def _bubble(self, x: torch.Tensor, order: int) -> torch.Tensor:
        """Jet of b(x) = (x - lo)(hi - x), x - lo or hi - x (``hard_side``), or 1 - e^{-s/fade} for
        those s, on the hard axis (1 on the others): (D, order+1, n, 1)."""
        lo, hi = self.hard_range
        assert self.hard_axis is not None
        is_hard = torch.arange(x.shape[0], device=x.device).eq(self.hard_axis)
        x = torch.where(is_hard[:, None], x, lo)  # the other axes' rows are replaced by ones below
        if self.hard_fade is not None:  # d^k/ds^k (1 - e^{-s/f}) = -(-1/f)^k e^{-s/f}; ds/dx = -1 on "max"
            sign = 1.0 if self.hard_side == "min" else -1.0
            e = torch.exp(-(x - lo if self.hard_side == "min" else hi - x) / self.hard_fade)
            rows = [1 - e] + [-((-sign / self.hard_fade) ** k) * e for k in range(1, 5)]
        elif self.hard_side == "min":
            rows = [x - lo, torch.ones_like(x)] + [torch.zeros_like(x)] * 3
        elif self.hard_side == "max":
            rows = [hi - x, -torch.ones_like(x)] + [torch.zeros_like(x)] * 3
        else:
            rows = [(x - lo) * (hi - x), (lo + hi) - 2 * x, torch.full_like(x, -2.0)] + [torch.zeros_like(x)] * 2
        jet = torch.stack(rows[: order + 1], dim=1).unsqueeze(-1)
        ones = torch.zeros_like(jet)
        ones[:, 0] = 1.0
        return torch.where(is_hard[:, None, None, None], jet, ones)

    def _bank(self, x: torch.Tensor, order: int, tape: Tape | None = None) -> torch.Tensor:
        out = self.bank.jets(x, order, tape)
        if self.out_mask is not None:
            out = out * self.out_mask.to(out.dtype)[:, None, None, :]
        if self.hard_axis is not None:
            out = J.product(self._bubble(x, order), out)
        if self.axis_scale is not None:
            out = out * self.axis_scale.to(out.dtype)[:, None, None, None]
        return out

    def all_jets(self, xs: Sequence[torch.Tensor], order: int, tape: Tape | None = None) -> list[torch.Tensor]:
        """Jets of every factor at its axis' points xs[d] (n_d,): list of (order+1, n_d, *shape_d).
        ``tape``: see ``factor_nets.Tape``."""
        out = self._bank(_pad(xs), order, tape)
        return [out[d, :, : len(x), : math.prod(self.shapes[d])].reshape(order + 1, len(x), *self.shapes[d])
                for d, x in enumerate(xs)]

    def pseudo_ntks(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Factor pseudo-NTK of every axis at its points xs[d] (sum of logits): list of (n_d, n_d)."""
        x = _pad(xs)
        K = self.bank.pseudo_ntk(x, self.out_mask)
        if self.hard_axis is not None:  # the factor is b f_d: K -> diag(b) K diag(b)
            b = self._bubble(x, 0)[:, 0, :, 0]
            K = K * b[:, :, None] * b[:, None, :]
        if self.axis_scale is not None:
            K = K * self.axis_scale.to(K.dtype)[:, None, None] ** 2
        return [K[d, : len(x), : len(x)] for d, x in enumerate(xs)]

    def factor_jets(self, axis: int, x: torch.Tensor, order: int) -> torch.Tensor:
        """Jets of factor ``axis`` at points x (n,): (order+1, n, *shape)."""
        return self.all_jets([x] * self.n_axes, order)[axis]

    def contract(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Grid values (n_1, ..., n_D, C) from one factor tensor per axis (n_d, *shape_d)."""
        raise NotImplementedError

    def contract_points(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Values (N, C) at scattered points from factor tensors (N, *shape_d), row i = point i."""
        raise NotImplementedError

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        """Values on the tensor grid of per-axis points: (n_1, ..., n_D, C)."""
        return self.contract([j[0] for j in self.all_jets(points, 0)])


def cp_contract(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Grid values (n_1, ..., n_D, C) = sum_r prod_d mats[d][i_d, r, :] from factors (n_d, R, C)."""
    letters = string.ascii_lowercase[: len(mats)]
    return torch.einsum(",".join(f"{c}rz" for c in letters) + f"->{letters}z", *mats)


class CPModel(SeparableField):
    """CP: factors (n_d, R, C); u = s * sum_r prod_d F_d (the paper's eq. 2, s = 1/sqrt(R) or 1)."""

    def __init__(self, ranges: Sequence[tuple[float, float]], rank: int, components: int, scale: str,
                 net_kwargs: dict[str, object]) -> None:
        super().__init__(ranges, [(rank, components)] * len(ranges), net_kwargs)
        self.rank, self.components = rank, components
        self.scale = 1 / math.sqrt(rank) if scale == "sqrt_rank" else 1.0

    def contract(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = cp_contract(mats)
        return out * self.scale if self.scale != 1.0 else out

    def contract_points(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        prod = mats[0]
        for m in mats[1:]:
            prod = prod * m
        out = prod.sum(1)
        return out * self.scale if self.scale != 1.0 else out


class TuckerModel(SeparableField):
    """Tucker: factors (n_d, R_d), core (R_1, ..., R_D, C) initialised with variance 1/prod R_d
    so the output variance stays O(1). Grid cost O(prod R_d + R prod n_d)."""

    def __init__(self, ranges: Sequence[tuple[float, float]], ranks: Sequence[int], components: int,
                 net_kwargs: dict[str, object]) -> None:
        super().__init__(ranges, [(r,) for r in ranks], net_kwargs)
        self.core = nn.Parameter(torch.randn(*ranks, components) / math.sqrt(math.prod(ranks)))

    def contract(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.core
        for m in mats:  # contract the leading rank index with the factor: (R_d, ...) -> (..., n_d)
            out = torch.tensordot(out, m, dims=([0], [1]))
        return out.movedim(0, -1)  # the component axis ended up first

    def contract_points(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        letters = string.ascii_lowercase[: len(mats)]
        return torch.einsum(",".join(f"N{c}" for c in letters) + f",{letters}z->Nz", *mats, self.core)


class TTModel(SeparableField):
    """Tensor train: factors (n_d, R_{d-1}, R_d) with R_0 = 1 and R_D = C (components); each bond
    carries a 1/sqrt(R) scale so that the output variance stays O(1). Grid cost O(R^2 prod n_d)."""

    def __init__(self, ranges: Sequence[tuple[float, float]], bonds: Sequence[int], components: int,
                 net_kwargs: dict[str, object]) -> None:
        dims = [1, *bonds, components]
        super().__init__(ranges, [(dims[d], dims[d + 1]) for d in range(len(ranges))], net_kwargs)
        self.bond_scale = [1 / math.sqrt(b) for b in bonds]

    def contract(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = mats[0][:, 0, :]  # (n_1, R_1)
        for d, m in enumerate(mats[1:]):  # (..., R_{d}) x (n, R_d, R_{d+1}) -> (..., n, R_{d+1})
            out = torch.tensordot(out, m, dims=([-1], [1])) * self.bond_scale[d]
        return out

    def contract_points(self, mats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = mats[0][:, 0, :]
        for d, m in enumerate(mats[1:]):
            out = torch.einsum("Na,Nab->Nb", out, m) * self.bond_scale[d]
        return out




class SeparableModel(nn.Module):
    """All fields of a problem: one separable model per field (``model[name]``), and the learned
    scalars trained with them (``learned``; empty for most problems)."""

    def __init__(self, fields: dict[str, SeparableField], learned: LearnedScalars | None = None) -> None:
        super().__init__()
        self.fields = nn.ModuleDict(fields)
        self.learned = learned if learned is not None else LearnedScalars()

    def __getitem__(self, name: str) -> SeparableField:
        return cast(SeparableField, self.fields[name])

    def items(self) -> list[tuple[str, SeparableField]]:
        return [(name, self[name]) for name in self.fields]

    def field_parameters(self) -> list[nn.Parameter]:
        """The fields' parameters (the factor networks, Tucker cores), without the learned scalars."""
        return [p for f in self.fields.values() for p in f.parameters()]


def rank_list(kind: str, rank: int | Sequence[int], n_axes: int) -> list[int]:
    """Ranks per axis (Tucker) or per bond (TT) from one number or a list; ValueError if the
    list has the wrong length (CP takes one number)."""
    want = {"cp": 1, "tucker": n_axes, "tt": n_axes - 1}[kind]
    if isinstance(rank, int):
        return [rank] * want
    ranks = list(rank)
    if len(ranks) != want:
        what = {"cp": "one rank", "tucker": f"{want} ranks (one per axis)", "tt": f"{want} bond ranks"}[kind]
        raise ValueError(f"a {kind} model on {n_axes} axes takes {what}, got {ranks}")
    return ranks


def build_model(
    ranges: Sequence[tuple[float, float]],
    fields: dict[str, int],
    *,
    kind: str,
    rank: int | Sequence[int],
    scale: str,
    net_kwargs: dict[str, object],
    learned: Sequence[ScalarSpec] = (),
) -> SeparableModel:
    """One ``kind`` model per field (``fields``: name -> number of components), and the learned scalars."""
    ranks = rank_list(kind, rank, len(ranges))
    out: dict[str, SeparableField] = {}
    for name, comps in fields.items():
        if kind == "cp":
            out[name] = CPModel(ranges, ranks[0], comps, scale, net_kwargs)
        elif kind == "tucker":
            out[name] = TuckerModel(ranges, ranks, comps, net_kwargs)
        else:
            if len(ranges) < 2:
                raise ValueError("a tensor train needs at least 2 axes")
            out[name] = TTModel(ranges, ranks, comps, net_kwargs)
    return SeparableModel(out, LearnedScalars(learned))
