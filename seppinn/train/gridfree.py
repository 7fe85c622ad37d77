"""Losses of residuals that are CP tensors, without the grid (issue 8).

A residual r = sum_rho prod_d G_d[:, rho] (factors G_d: (n_d, rho, C), see ``separability``) has,
with per-axis quadrature weights w_d (mean 1; uniform points: w = 1),

    sum_i w_i r_i^2 = sum_c 1^T (G_1^T W_1 G_1 (.) ... (.) G_D^T W_D G_D) 1          ((.) : Hadamard)

in O(sum_d n_d rho^2) instead of O(rho prod_d n_d), never forming the grid. SepPGD's
P = c sum_{d in A} R x_d S_d only replaces G_d by S_d G_d in one factor, so the surrogate
<W R, stopgrad(P)> is a sum of the same Gram products.

The Gram products run in float64 whatever the model's dtype: sum_ab prod_d A_d[a, b] adds terms
much larger than their sum once the residual is small (u_xx ~ 16 pi^2 u against r ~ 1e-3), and in
float32 that cancellation would leave no correct digit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .seppgd import FactorPreconditioner


def _gram(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """(C, rho, rho) = a^T diag(w) b per component; a, b: (n, rho, C) float64."""
    if w is not None:
        a = a * w[:, None, None]
    if a.shape[-1] == 1:  # one component: a plain matrix product (the batched einsum copies)
        return (a[..., 0].T @ b[..., 0])[None]
    return torch.einsum("nac,nbc->cab", a, b)


def _hadamard_sum(grams: Sequence[torch.Tensor]) -> torch.Tensor:
    out = grams[0]
    for g in grams[1:]:
        out = out * g
    return out.sum()


def _expand(gram: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    """The Gram matrix of the residual's columns from that of the distinct columns (C, m, m')."""
    if rows is not None:
        gram = gram.index_select(1, rows)
    return gram if cols is None else gram.index_select(2, cols)


Columns = Sequence[torch.Tensor | None] | None
# (axis, lo, hi): only rows [lo, hi) of that axis' factor count (one rank's slab, ``distributed``); the
# sums are linear in each axis' Gram product, so the slabs' sums and gradients add up to the whole
Rows = tuple[int, int, int] | None


def _slab(g64: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None], rows: Rows
          ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The (float64) factors and the weights with only ``rows`` on their axis."""
    g64, ws = list(g64), list(weights)
    if rows is not None:
        d, lo, hi = rows
        g64[d] = g64[d][lo:hi]
        ws[d] = ws[d][lo:hi] if ws[d] is not None else None  # type: ignore[index]
    return g64, ws


def sum_of_squares(factors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                   columns: Columns = None, rows: Rows = None) -> torch.Tensor:
    """sum_i w_i r_i^2 (float64, scalar) of the CP tensor r with ``factors`` (n_d, rho, C).

    ``columns``: per axis None, or the (rho,) index of r's factor columns among ``factors[d]``'s
    (n_d, m, C) distinct ones (repeated blocks enter the Gram products once: O(n m^2), not O(n rho^2))."""
    cols = list(columns) if columns is not None else [None] * len(factors)
    g64, weights = _slab([g.to(torch.float64) for g in factors], weights, rows)
    return _hadamard_sum([_expand(_gram(g, g, w), c, c) for g, w, c in zip(g64, weights, cols)])


def row_sums(factors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None], axis: int,
             columns: Columns = None, rows: Rows = None) -> torch.Tensor:
    """sum of w r^2 over each index of ``axis`` (n_axis,) float64: the Gram products of the other
    axes, then one quadratic form per row of G_axis, O(n_axis rho^2) (causal training's time slices).
    With ``rows`` on ``axis``: those rows' sums only."""
    cols = list(columns) if columns is not None else [None] * len(factors)
    g64, weights = _slab([g.to(torch.float64) for g in factors], weights, rows)
    idx = cols[axis]
    G = g64[axis] if idx is None else g64[axis].index_select(1, idx)  # (n, rho, C)
    others = [_expand(_gram(g, g, w), c, c) for e, (g, w, c) in enumerate(zip(g64, weights, cols)) if e != axis]
    M = others[0] if others else torch.ones(G.shape[2], G.shape[1], G.shape[1], dtype=torch.float64, device=G.device)
    for m in others[1:]:
        M = M * m
    out = torch.einsum("nac,cab,nbc->n", G, M, G)
    w = weights[axis]
    return out if w is None else out * w.to(torch.float64)


def preconditioned_sum(factors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                       precond: Mapping[int, FactorPreconditioner], c: float, columns: Columns = None,
                       rows: Rows = None) -> torch.Tensor:
    """Value sum_i w_i r_i^2; gradient that of 2 <W r, stopgrad(P)> with P = c sum_{d in precond} r x_d S_d
    (the grid path's surrogate, ``train.loss``), float64 scalar. ``columns``, ``rows``: as ``sum_of_squares``
    (S_d of the rows' axis acts on every row of its factor, then the rows are taken)."""
    cols = list(columns) if columns is not None else [None] * len(factors)
    full = [g.to(torch.float64) for g in factors]
    every = [g.detach() for g in full]  # S_d of the rows' axis acts on all its rows
    g64, weights = _slab(full, weights, rows)
    grams, corrs = [], {}
    for d, (g, h, w, idx) in enumerate(zip(g64, every, weights, cols)):
        S = precond.get(d)
        lo, hi = (rows[1], rows[2]) if rows is not None and rows[0] == d else (0, h.shape[0])
        if S is None or S.V.shape[1] == 0:
            h = h[lo:hi]
            grams.append(_expand(_gram(g, h, w), idx, idx))  # value: G^T W G
            continue
        # r x_d S_d = r - r x_d V diag(coef) V^T: the fixed factor d -> V diag(coef) V^T G_d; one Gram
        # product for both the factor and its correction
        n, m, C = h.shape
        if S.M is not None:
            corr = (S.M.to(torch.float64) @ h.reshape(n, -1)).reshape(n, m, C)
        else:
            assert S.V_coef is not None
            V, Vc = S.V.to(torch.float64), S.V_coef.to(torch.float64)
            corr = (V @ (Vc.T @ h.reshape(n, -1))).reshape(n, m, C)
        both = _gram(g, torch.cat([h[lo:hi], corr[lo:hi]], dim=1), w)
        grams.append(_expand(both[..., :m], idx, idx))
        corrs[d] = _expand(both[..., m:], idx, idx)
    inner = _hadamard_sum(grams)  # <W r, r^> (gradient through the first argument only)
    surrogate = c * len(precond) * inner
    for d, B in corrs.items():
        surrogate = surrogate - c * _hadamard_sum([B if e == d else grams[e] for e in range(len(grams))])
    surrogate = 2 * surrogate
    value = inner.detach()
    return value + (surrogate - surrogate.detach())


def squared_error(factors: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum (u - t)^2 (float64, scalar) over the tensor grid of CP tensors u (factors (n_d, R, C))
    and t (factors (n_d, m, C) or (n_d, m, 1): one target for every component): the CP tensor
    u - t has the factors [U_d, T_d] with T_1 negated."""
    C = factors[0].shape[-1]
    both = [torch.cat([u.to(torch.float64), (-t if d == 0 else t).to(torch.float64).expand(-1, -1, C)], dim=1)
            for d, (u, t) in enumerate(zip(factors, target))]
    return sum_of_squares(both, [None] * len(both))
