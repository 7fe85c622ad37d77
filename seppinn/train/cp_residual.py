"""A residual's affine-separable part as a CP tensor on one term part's grid (tensors in, tensors out).

Per rank block and axis the factor is the coefficient-weighted sum of the field's factor jets
(Helmholtz's [F_x'' + k^2 F_x, F_y, F_z]); a source block's factor is its coefficient column.
``Jets`` maps (field, axis) -> point-set key -> jet (order+1, n, R, C).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import sympy as sp
import torch

from ..compile.compiler import PointSetKey
from ..compile.lowering import lower
from ..compile.separability import LinearPart
from ..model.separable import cp_contract

Jets = Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]]
Learned = Mapping[sp.Symbol, torch.Tensor]  # the learned parameters' current values
NO_LEARNED: Learned = {}


class LearnedCoef:
    """A coefficient that holds a learned parameter (k, or k x^2 on one axis): evaluated on the
    axis' points from the parameters' current values at every use, (n_d, 1, 1) in ``dtype``."""

    def __init__(self, fn: Callable[[dict[sp.Symbol, torch.Tensor]], Any], symbol: sp.Symbol, x: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.fn, self.symbol, self.x, self.dtype = fn, symbol, x, dtype

    def __call__(self, learned: Learned) -> torch.Tensor:
        v = torch.as_tensor(self.fn({self.symbol: self.x, **learned}))
        return torch.broadcast_to(v.to(self.dtype), self.x.shape)[:, None, None]


Coef = float | torch.Tensor | LearnedCoef


def block_slots(lin: LinearPart) -> list[list[int]]:
    """Per axis and rank block of a CP tensor: the index of the block's axis-d factor among the
    distinct ones (same field, derivative orders and coefficients: Helmholtz's [F''+k^2 F, F, F]
    has two F blocks on x; a source block is always its own)."""
    out = []
    for d in range(len(lin.blocks[0].axes)):
        keys: dict[object, int] = {}
        out.append([keys.setdefault(("source", i) if b.field is None else
                                    (b.field, tuple((s.order, s.coef) for s in b.axes[d])), len(keys))
                    for i, b in enumerate(lin.blocks)])
    return out


class CPTensor:
    """The CP tensor of ``lin`` on the grid ``grid`` (per axis a point-set key). ``rank``: the
    model's CP rank; ``components``: the fields' component count C."""

    def __init__(self, lin: LinearPart, grid: Sequence[PointSetKey], rank: int, components: int,
                 device: torch.device) -> None:
        self.lin, self.grid, self.components = lin, list(grid), components
        self.slots = block_slots(lin)
        # the contraction's grouping axis: the fewest distinct factors, the last on ties (``contract``)
        self.group_axis = min(range(len(self.grid)), key=lambda d: (len(set(self.slots[d])), -d))
        self.columns = self._distinct_columns(rank, device)
        self.coefs: list[list[list[Coef]]] = []  # per block, axis, summand (``prepare``)

    def _distinct_columns(self, rank: int, device: torch.device) -> list[torch.Tensor | None]:
        """Per axis: None where the blocks' axis factors all differ, else the (rho,) index of each
        residual column among the distinct blocks' columns (``factors(distinct_axes=...)``), so that
        the Gram products run on the n_d x (distinct columns) factor."""
        widths = [1 if b.field is None else rank for b in self.lin.blocks]
        out: list[torch.Tensor | None] = []
        for slots in self.slots:
            if len(set(slots)) == len(slots):
                out.append(None)
                continue
            firsts = [slots.index(s) for s in range(max(slots) + 1)]  # slots are numbered by first use
            starts = list(itertools.accumulate([widths[i] for i in firsts], initial=0))
            index = [starts[s] + j for s, w in zip(slots, widths) for j in range(w)]
            out.append(torch.tensor(index, device=device))
        return out

    def prepare(self, coords: Sequence[torch.Tensor], symbols: Sequence[sp.Symbol], dtype: torch.dtype,
                learned: Collection[sp.Symbol] = ()) -> None:
        """The coefficients on the grid's points (``coords[d]``: float64 (n_d,)), per block, axis and
        summand: (n_d, 1, 1) in ``dtype``, or a number; a coefficient with a learned parameter
        (``learned``) is a ``LearnedCoef``, evaluated at every use. A source block has one entry per
        axis: the summands' sum."""
        self.coefs = []
        learned = set(learned)
        for block in self.lin.blocks:
            per_axis_coefs: list[list[Coef]] = []
            for d, summands in enumerate(block.axes):
                x = coords[d]
                coefs = [s.coef for s in summands]
                if block.field is None:
                    coefs = [sum(coefs, sp.Integer(0))]
                values: list[Coef] = []
                for c in coefs:
                    if c.free_symbols & learned:
                        values.append(LearnedCoef(lower(c), symbols[d], x, dtype))
                    elif c.free_symbols or block.field is None:
                        v = torch.as_tensor(lower(c)({symbols[d]: x}), dtype=torch.float64, device=x.device)
                        values.append(torch.broadcast_to(v, x.shape).to(dtype)[:, None, None])
                    else:
                        values.append(float(c))
                per_axis_coefs.append(values)
            self.coefs.append(per_axis_coefs)

    def coefficient_tensors(self) -> list[torch.Tensor]:
        return [c for block in self.coefs for axis in block for c in axis if isinstance(c, torch.Tensor)]

    def block_factor(self, jets: Jets, scales: Mapping[str, float], i: int, d: int,
                     learned: Learned = NO_LEARNED) -> torch.Tensor:
        """Rank block i's factor on axis d, (n_d, R or 1, C): the coefficient-weighted sum of the
        field's factor jets (its CP scale on the first axis), or for a source block its coefficient
        column. ``learned``: the learned parameters' current values (symbol -> 0-d tensor)."""
        block = self.lin.blocks[i]
        bc = [c(learned) if isinstance(c, LearnedCoef) else c for c in self.coefs[i][d]]
        if block.field is None:
            return cast(torch.Tensor, bc[0]).expand(-1, 1, self.components)
        jet = jets[(block.field, d)][self.grid[d]]
        acc: torch.Tensor | None = None
        for summand, c in zip(block.axes[d], bc):
            term = jet[summand.order] if isinstance(c, float) and c == 1.0 else jet[summand.order] * c
            acc = term if acc is None else acc + term
        assert acc is not None
        scale = scales.get(block.field, 1.0)
        return acc * scale if d == 0 and scale != 1.0 else acc

    def factors(self, jets: Jets, scales: Mapping[str, float], distinct_axes: Collection[int] = (),
                learned: Learned = NO_LEARNED) -> list[torch.Tensor]:
        """The CP factors G_d (n_d, rho, C): the blocks' factors side by side; on ``distinct_axes``
        each distinct block factor once (the columns ``columns`` indexes)."""
        out = []
        for d, slots in enumerate(self.slots):
            keep = [self.block_factor(jets, scales, i, d, learned) for i in range(len(slots))
                    if d not in distinct_axes or slots.index(slots[i]) == i]
            out.append(torch.cat(keep, dim=1) if len(keep) > 1 else keep[0])
        return out

    def contract(self, jets: Jets, scales: Mapping[str, float], sizes: Sequence[int],
                 learned: Learned = NO_LEARNED) -> torch.Tensor:
        """The tensor on the grid, (n_1, ..., n_D, C). Where blocks share their factor on an axis g
        (the axis with the fewest distinct factors, the last on ties), their Khatri-Rao products over
        the other axes are summed first: one matrix product of inner size (distinct factors on g) x R.
        Klein-Gordon's [F_t'', F_x, F_y] and [F_t, F_x'', F_y] share F_y: 2R instead of 3R;
        diffusion's u_xx + u_yy, [F_t, F_x'', F_y] + [F_t, F_x, F_y''], shares F_t: R."""
        D, g = len(self.grid), self.group_axis
        slots = self.slots[g]
        if len(set(slots)) == len(slots):
            return cp_contract(self.factors(jets, scales, learned=learned))
        others = [d for d in range(D) if d != g]
        prefix: dict[int, torch.Tensor] = {}
        for i, slot in enumerate(slots):
            p = self.block_factor(jets, scales, i, others[0], learned)
            for d in others[1:]:
                p = (p[:, None] * self.block_factor(jets, scales, i, d, learned)[None]).flatten(0, 1)
            prefix[slot] = prefix[slot] + p if slot in prefix else p
        P = torch.cat([prefix[s] for s in sorted(prefix)], dim=1)  # (prod of the other n_d, m, C)
        L = torch.cat([self.block_factor(jets, scales, slots.index(s), g, learned) for s in sorted(prefix)], dim=1)  # (n_g, m, C)
        C = P.shape[-1]
        if g == 0:  # (n_1, n_2 ... n_D): already the grid's layout
            out = L[..., 0] @ P[..., 0].T if C == 1 else torch.einsum("nmc,pmc->npc", L, P)
            return out.reshape(list(sizes) + [C])
        out = P[..., 0] @ L[..., 0].T if C == 1 else torch.einsum("pmc,nmc->pnc", P, L)
        return out.reshape([sizes[d] for d in others] + [sizes[g], C]).movedim(D - 1, g)
