"""The NTK trace of every term (``train.balance = "ntk"``), from per-axis quantities.

A term's NTK is K = J J^T with J = dr/dtheta over its points, so tr K = sum_x |dr(x)/dtheta|^2.
For a separable model the parameters split by axis, theta = (theta_1, ..., theta_D), and axis d's
network sees only the coordinate x_d, so

    |dr(x)/dtheta|^2 = sum_d |dr(x)/dtheta_d|^2,  dr(x)/dtheta_d = sum_{a,k} dr(x)/dF_d^(a)[x_d, k] dF_d^(a)[x_d, k]/dtheta_d

(F_d^(a): the a-th derivative of axis d's factor outputs k). Evaluating the residual at points x_n
with one network row per point and axis (the scattered-point contraction), each row reaches only
r(x_n), so one backward pass of sum_n r(x_n) gives every point's backprop signal delta at every
linear layer and jet entry at once. A layer z^(m) = W h^(m) (+ b for m = 0) then adds

    |dr(x_n)/dW|^2 + |dr(x_n)/db|^2 = sum_{m,m'} (delta^(m) . delta^(m')) (h^(m) . h^(m')) + |delta^(0)|^2

per point and axis: the factor pseudo-NTK's layer-wise Gram form (``FactorBank.pseudo_ntk``),
taken along jets. No gradient of length P and no n^D grid is formed: the cost is one forward and
one backward pass of the factor networks per component at the points used, and nothing depends on
whether the residual is linear. Up to ``SAMPLE`` points per term part that is all of them (exact);
beyond, a seeded uniform sample (an unbiased estimate of the mean).

The value per term is its user weight times the NTK's mean diagonal, normalised as the loss is
(weights w of Gauss sampling and keep-masks included): w_i tr(K_i) / N_i.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model.factor_nets import Tape
from .loss import Losses, PartLoss

SAMPLE = 2048  # points per term part at most; beyond, a seeded random sample


def _sample(loss: PartLoss, generator: torch.Generator) -> tuple[list[np.ndarray], int]:
    """(per axis the point indices of the sample, the part's point count)."""
    sets = [loss.points[key] for key in loss.part.grid]
    if loss.part.pointwise:
        total = len(sets[0])
        flat = np.arange(total) if total <= SAMPLE else \
            torch.randint(total, (SAMPLE,), generator=generator).numpy()
        return [flat] * len(sets), total
    sizes = [len(s) for s in sets]
    total = math.prod(sizes)
    flat = np.arange(total) if total <= SAMPLE else torch.randint(total, (SAMPLE,), generator=generator).numpy()
    return list(np.unravel_index(flat, sizes)), total


def part_trace(loss: PartLoss, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """(sum over the part's points of w m sum_c |dr_c(x)/dtheta|^2, the part's count as in ``PartLoss.sum``)."""
    part, points = loss.part, loss.points
    index, total = _sample(loss, generator)
    device = points.device
    coords = [points[key][torch.as_tensor(i, device=device)] for key, i in zip(part.grid, index)]
    n = len(index[0])
    weight = torch.ones(n, dtype=torch.float64, device=device)
    for key, i in zip(part.grid, index):
        if not part.pointwise and key in points.weights:
            weight = weight * points.weights[key][torch.as_tensor(i, device=device)].to(torch.float64)
    count = float(total)
    if part.mask is not None:
        weight = weight * torch.as_tensor(part.mask[tuple(index)][:, 0], dtype=torch.float64, device=device)
        count = float(part.mask.sum())
    res = part.residual
    at = index[0] if part.pointwise else tuple(index)
    consts = res.prepare([c.to(torch.float64)[:, None] for c in coords], points.dtype,
                         arrays={s: a[at] for s, a in res.arrays.items()})
    tapes: dict[str, Tape] = {}
    jets: dict[str, list[torch.Tensor]] = {}
    with torch.enable_grad():
        for f in dict.fromkeys(f for f, _ in res.derivs):
            model = loss.model[f]
            order = max(max(a) for g, a in res.derivs if g == f)
            probes = [torch.zeros(len(coords), order + 1, n, layer.out_features, dtype=points.dtype, device=device,
                                  requires_grad=True) for layer in model.bank.layers()]
            tapes[f] = Tape(probes, jets=True)
            jets[f] = model.all_jets(coords, order, tapes[f])
        values = [loss.model[f].contract_points([jets[f][d][a] for d, a in enumerate(alpha)]) for f, alpha in res.derivs]
        r = res(values, consts, loss.learned())
        r = r.expand(n, r.shape[-1]) if r.dim() == 2 else r.reshape(n, -1)
        probes = [p for t in tapes.values() for p in t.probes]
        inputs = [h.detach() for t in tapes.values() for h in t.inputs]
        per_point = torch.zeros(n, dtype=torch.float64, device=device)
        for c in range(r.shape[1]):
            deltas = torch.autograd.grad(r[:, c].sum(), probes, retain_graph=c < r.shape[1] - 1, allow_unused=True)
            for h, delta in zip(inputs, deltas):
                if delta is None:
                    continue
                g_delta = torch.einsum("dmno,dkno->dnmk", delta, delta)
                g_h = torch.einsum("dmni,dkni->dnmk", h, h)
                per_point = per_point + ((g_delta * g_h).sum((2, 3)) + g_delta[..., 0, 0]).sum(0).to(torch.float64)
    components = int(r.shape[1])
    return (weight * per_point).sum() * (total / n), count * components


def term_traces(losses: Losses, generator: torch.Generator) -> torch.Tensor:
    """(T,) float64: each term's user weight times its NTK's mean diagonal, normalised like its loss."""
    out = []
    for t, parts in zip(losses.compiled.terms, losses.parts):
        sums, counts = zip(*(part_trace(p, generator) for p in parts))
        if t.reduction == "sum":
            value = torch.stack([s / c * p.part.faces for s, c, p in zip(sums, counts, parts)]).sum()
        else:
            value = torch.stack(list(sums)).sum() / sum(counts)
        out.append(t.weight * value)
    return torch.stack(out)
