"""SepPGD: separable NTK preconditioning of data, boundary and initial terms (Luo & Meng,
eqs. 7-8, Lemma 2; the recipe of architecture.md).

For a term with residual R on a grid whose free axes are A, the preconditioned residual is
P = c * sum_{d in A} R x_d S_d, with S_d = I - sum_{i<=k} (1 - g_i/lambda_i) v_i v_i^T built
from the eigendecomposition of the factor pseudo-NTK K_d on that axis' points, and the term's
gradient is that of the surrogate (2w/N) <R, stopgrad(P)> (Lemma 2: J^T S~ r with
S~ = c * sum_d I x ... x S_d x ... x I, never formed). c = 1/|A| ("normalized": k = 0 gives the
plain gradient) or 1 ("paper", eq. 8 as printed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


DENSE_MAX = 1024  # points per axis up to which I - S_d is kept as a dense matrix


@dataclass
class FactorPreconditioner:
    """S = I - V diag(coef) V^T on one axis (V: (n, k), coef: (k,)); eigenvalues of K kept
    for reports (``eigvals`` descending, ``modulated`` = g_i for i <= k, lambda_i after)."""

    V: torch.Tensor
    coef: torch.Tensor
    eigvals: torch.Tensor
    modulated: torch.Tensor
    # I - S = V diag(coef) V^T, built once per rebuild and used every iteration: V diag(coef), and the
    # dense (n, n) matrix up to DENSE_MAX points (one matrix product per application); computed when None
    V_coef: torch.Tensor | None = None
    M: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.V_coef is None:
            self.V_coef, self.M = applied(self.V, self.coef)

    def correction(self, r: torch.Tensor, axis: int, rows: tuple[int, int] | None = None) -> torch.Tensor | None:
        """r x_axis (I - S) = V diag(coef) V^T applied to every fibre of r along ``axis``
        (r: (n_1, ..., n_D, C)); None when S = I. ``rows``: only the rows [lo, hi) of the result
        along ``axis`` (one rank's slab)."""
        if self.V.shape[1] == 0:
            return None
        lo, hi = rows if rows is not None else (0, self.V.shape[0])
        M, V = self.M, self.V[lo:hi]
        # r viewed as (before, n, after): contracting the middle index needs no copy of r
        shape = r.shape
        before, n = math.prod(shape[:axis]), shape[axis]
        out_shape = shape[:axis] + (hi - lo,) + shape[axis + 1:]
        if math.prod(shape[axis + 1:]) == 1:
            flat = r.reshape(before, n)
            out = flat @ M[:, lo:hi] if M is not None else (flat @ self.V_coef) @ V.T  # type: ignore[operator]
            return out.reshape(out_shape)
        r3 = r.reshape(before, n, -1)
        out = M[lo:hi] @ r3 if M is not None else V @ (self.V_coef.T @ r3)  # type: ignore[union-attr]
        return out.reshape(out_shape)

    def dense(self) -> torch.Tensor:
        n = self.V.shape[0]
        eye = torch.eye(n, dtype=self.V.dtype, device=self.V.device)
        return eye - self.V @ torch.diag(self.coef) @ self.V.T


def eigen(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of factor pseudo-NTKs K (..., n, n), descending (1-indexed as in the paper), the
    eigenvalues clipped at a relative floor (n eps lambda_1, at least the dtype's tiny) so that
    every S built from them stays symmetric positive definite. No host synchronisation."""
    lam, V = torch.linalg.eigh(K)  # batched over leading dimensions
    lam, V = lam.flip(-1), V.flip(-1)
    info = torch.finfo(lam.dtype)
    floor = (lam[..., :1] * lam.shape[-1] * info.eps).clamp_min(info.tiny)
    return torch.maximum(lam, floor), V


def modulate(lam: torch.Tensor, V: torch.Tensor, k: int, modulation: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(V_k, coef, eigvals, modulated) of S = I - sum_{i<=k} (1 - g_i/lambda_i) v_i v_i^T. clamp:
    g_i = lambda_k for i <= k (the paper's g_1); sqrt: g_i = sqrt(lambda_i lambda_k), a scale-free
    form of the paper's g_2 = sqrt(lambda_i). k <= 1: S = I."""
    k = min(k, lam.shape[0])
    if k <= 1:
        return V[:, :0], lam[:0], lam, lam.clone()
    lk = lam[k - 1]
    g = lk.expand(k) if modulation == "clamp" else torch.sqrt(lam[:k] * lk)
    return V[:, :k].contiguous(), 1 - g / lam[:k], lam, torch.cat([g, lam[k:]])


def applied(V: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V diag(coef), the dense I - S up to DENSE_MAX points or None)."""
    V_coef = V * coef
    return V_coef, V_coef @ V.T if V.shape[0] <= DENSE_MAX and V.shape[1] else None


def build_all(Ks: Sequence[torch.Tensor], wanted: Sequence[tuple[int, Sequence[int]]], modulation: str
              ) -> dict[tuple[int, int], tuple[torch.Tensor | None, ...]]:
    """Every S_d a rebuild needs from one set of factor pseudo-NTKs (one per axis): ``wanted`` lists
    (axis, the k values wanted there); one batched eigh per size. Returns (axis, k) -> the tensors of a
    ``FactorPreconditioner`` (V, coef, eigvals, modulated, V_coef, M): pure tensors, so that the whole
    rebuild can be one torch.compile graph."""
    out: dict[tuple[int, int], tuple[torch.Tensor | None, ...]] = {}
    for n in sorted({Ks[d].shape[0] for d, _ in wanted}):
        same = [(d, ks) for d, ks in wanted if Ks[d].shape[0] == n]
        lams, Vs = eigen(torch.stack([Ks[d] for d, _ in same]))
        for j, (d, ks) in enumerate(same):
            for k in ks:
                V, coef, lam, modulated = modulate(lams[j], Vs[j], k, modulation)
                out[(d, k)] = (V, coef, lam, modulated, *applied(V, coef))
    return out


def factor_preconditioner(K: torch.Tensor, k: int, modulation: str) -> FactorPreconditioner:
    """S_d from a factor pseudo-NTK K (n, n) (``eigen``, then ``modulate``)."""
    return FactorPreconditioner(*modulate(*eigen(K), k, modulation))


def precondition(r: torch.Tensor, factors: Mapping[int, FactorPreconditioner], c: float,
                 pointwise: bool = False, full: tuple[int, torch.Tensor, int, int] | None = None) -> torch.Tensor:
    """P = c * sum over the free axes d of r x_d S_d = c * (|A| r - sum_d r x_d (I - S_d)).

    ``pointwise``: r (N, C) at N scattered points and S_d (N, N) from the factor NTK at the
    points' d-th coordinates, so every S_d acts on the point index (the paper's Appendix A.2).
    ``full``: (axis, R, lo, hi) where r is the rows [lo, hi) of R along ``axis`` (one rank's slab):
    the products along that axis take R and keep those rows."""
    corr = None
    for d, S in factors.items():
        axis = 0 if pointwise else d
        if full is not None and full[0] == axis:
            cd = S.correction(full[1], axis, (full[2], full[3]))
        else:
            cd = S.correction(r, axis)
        if cd is not None:
            corr = cd if corr is None else corr + cd
    base = r if c * len(factors) == 1.0 else r * (c * len(factors))
    if corr is None:
        return base
    return base - corr if c == 1.0 else base - c * corr
