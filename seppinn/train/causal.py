"""Causal training (``train.causal = { chunks = M, tol = eps }``; Wang, Sankaran & Perdikaris 2022):
the PDE loss of an evolution problem is split into M time slices, L_k = mean of r^2 over the points
whose time falls in slice k, and weighted

    w_k = exp(-eps sum_{j<k} L_j)      (held constant: no gradient through w),

so that a slice trains only once the slices before it are solved. The term's gradient is that of
mean_k w_k L_k; its logged value stays the true mean square over all points (as with SepPGD's
surrogate), so losses stay comparable between runs. Slices are fixed intervals of the time axis'
range, whatever the points (random points keep their slice by value).
"""

from __future__ import annotations

import torch


def slice_matrix(times: torch.Tensor, lo: float, hi: float, chunks: int) -> torch.Tensor:
    """(M, n_t) 0/1 matrix: row k marks the time points in slice k of [lo, hi] (the end in the last)."""
    k = ((times.to(torch.float64) - lo) / (hi - lo) * chunks).floor().clamp(0, chunks - 1).long()
    return torch.nn.functional.one_hot(k, chunks).T.to(torch.float64)


def causal_mean(rows: torch.Tensor, counts: torch.Tensor, A: torch.Tensor, tol: float,
                every: torch.Tensor | None = None, weighted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, min weight) from per-time-point sums of r^2 ``rows`` (n_t,) and their point counts
    (n_t,), with slice matrix ``A`` (M, n_t). The loss's value is sum(rows) / sum(counts); its
    gradient that of mean_k w_k L_k, or (``weighted`` False: the L-BFGS phase, whose line search
    needs the gradient of the value it measures) that of the value. ``every``: the rows of every
    rank, which set the weights, where ``rows`` are one rank's part of them (``distributed``; the
    parts' losses then add up)."""
    rows64 = rows.to(torch.float64)
    n = (A @ counts.to(torch.float64)).clamp_min(1)  # (M,); an empty slice: 0
    L = (A @ rows64) / n
    L_every = L if every is None else (A @ every.to(torch.float64)) / n
    before = (torch.cumsum(L_every, 0) - L_every).detach()
    w = torch.exp(-tol * before)
    value = rows64.sum() / counts.to(torch.float64).sum()
    if not weighted:
        return value, w.min()
    surrogate = (w * L).mean()
    return value.detach() + (surrogate - surrogate.detach()), w.min()
