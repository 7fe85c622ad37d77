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


def sum_of_squares(factors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """sum_i w_i r_i^2 (float64, scalar) of the CP tensor r with ``factors`` (n_d, rho, C)."""
    g64 = [g.to(torch.float64) for g in factors]
    return _hadamard_sum([_gram(g, g, w) for g, w in zip(g64, weights)])


def preconditioned_sum(factors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                       precond: Mapping[int, FactorPreconditioner], c: float) -> torch.Tensor:
    """Value sum_i w_i r_i^2; gradient that of 2 <W r, stopgrad(P)> with P = c sum_{d in precond} r x_d S_d
    (the grid path's surrogate, ``training``), float64 scalar."""
    g64 = [g.to(torch.float64) for g in factors]
    fixed = [g.detach() for g in g64]
    grams, corrs = [], {}
    for d, (g, h, w) in enumerate(zip(g64, fixed, weights)):
        S = precond.get(d)
        if S is None or S.V.shape[1] == 0:
            grams.append(_gram(g, h, w))  # value: G^T W G
            continue
        # r x_d S_d = r - r x_d V diag(coef) V^T: the fixed factor d -> V diag(coef) V^T G_d; one Gram
        # product for both the factor and its correction
        n, rho, C = h.shape
        if S.M is not None:
            corr = (S.M.to(torch.float64) @ h.reshape(n, -1)).reshape(n, rho, C)
        else:
            assert S.V_coef is not None
            V, Vc = S.V.to(torch.float64), S.V_coef.to(torch.float64)
            corr = (V @ (Vc.T @ h.reshape(n, -1))).reshape(n, rho, C)
        both = _gram(g, torch.cat([h, corr], dim=1), w)
        grams.append(both[..., :rho])
        corrs[d] = both[..., rho:]
    inner = _hadamard_sum(grams)  # <W r, r^> (gradient through the first argument only)
    surrogate = c * len(precond) * inner
    for d, B in corrs.items():
        surrogate = surrogate - c * _hadamard_sum([B if e == d else grams[e] for e in range(len(grams))])
    surrogate = 2 * surrogate
    value = inner.detach()
    return value + (surrogate - surrogate.detach())
