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

per point and axis (``StackedLinear.jet_trace``, which also covers factorised weights): the factor
pseudo-NTK's layer-wise Gram form (``FactorBank.pseudo_ntk``), taken along jets. No gradient of
length P and no n^D grid is formed, and nothing depends on whether the residual is linear. The
cost is one forward pass of each field's factor networks over every term part's points together
(one row per point and axis, where a training step has one per axis point) and one backward pass
per residual component. Up to ``SAMPLE`` points per term part
that is all of them (exact); beyond, a seeded uniform sample (an unbiased estimate of the mean).

The value per term is its user weight times the NTK's mean diagonal, normalised as the loss is
(weights w of Gauss sampling and keep-masks included): w_i tr(K_i) / N_i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..model.factor_nets import Tape
from .loss import Losses, PartLoss

SAMPLE = 32  # points per term part at most; beyond, a seeded random sample (cost: bench/balance_cost.py)


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


@dataclass
class PartSample:
    """One term part's sampled points: per axis their coordinates, each point's weight (Gauss
    weights, keep-mask), the residual's constants there, and the part's count as in ``PartLoss.sum``."""

    loss: PartLoss
    coords: list[torch.Tensor]
    weight: torch.Tensor
    consts: dict[Any, torch.Tensor]
    scale: float  # the part's points / the sampled ones
    count: float


def part_sample(loss: PartLoss, generator: torch.Generator) -> PartSample:
    part, points = loss.part, loss.points
    index, total = _sample(loss, generator)
    device = points.device
    at = [torch.as_tensor(i, device=device) for i in index]
    coords = [points[key][i] for key, i in zip(part.grid, at)]
    n = len(index[0])
    weight = torch.ones(n, dtype=torch.float64, device=device)
    for key, i in zip(part.grid, at):
        if not part.pointwise and key in points.weights:
            weight = weight * points.weights[key][i].to(torch.float64)
    count = float(total)
    if part.mask is not None:
        weight = weight * torch.as_tensor(part.mask[tuple(index)][:, 0], dtype=torch.float64, device=device)
        count = float(part.mask.sum())
    res = part.residual
    where = index[0] if part.pointwise else tuple(index)
    consts = res.prepare([c.to(torch.float64)[:, None] for c in coords], points.dtype,
                         arrays={s: a[where] for s, a in res.arrays.items()})
    return PartSample(loss, coords, weight, consts, total / n, count * loss.components)


def point_traces(samples: Sequence[PartSample]) -> list[torch.Tensor]:
    """Per sample, each point's sum_c |dr_c(x)/dtheta|^2: every part's points in one pass of each
    field's factor networks (one row per point and axis) and one backward pass per component."""
    sizes = [len(s.weight) for s in samples]
    coords = [torch.cat([s.coords[d] for s in samples]) for d in range(len(samples[0].coords))]
    model, dtype, device = samples[0].loss.model, samples[0].loss.points.dtype, samples[0].weight.device
    orders: dict[str, int] = {}
    for s in samples:
        for f, alpha in s.loss.part.residual.derivs:
            orders[f] = max(orders.get(f, 0), max(alpha))
    total = sum(sizes)
    with torch.enable_grad():
        tapes, jets = {}, {}
        for f, order in orders.items():
            probes = [torch.zeros(len(coords), order + 1, total, layer.out_features, dtype=dtype, device=device,
                                  requires_grad=True) for layer in model[f].bank.layers()]
            tapes[f] = Tape(probes, jets=True)
            jets[f] = model[f].all_jets(coords, order, tapes[f])
        residuals, start = [], 0
        for s, n in zip(samples, sizes):
            res = s.loss.part.residual
            values = [model[f].contract_points([jets[f][d][a, start:start + n] for d, a in enumerate(alpha)])
                      for f, alpha in res.derivs]
            r = res(values, s.consts, s.loss.learned())
            residuals.append(r.expand(n, r.shape[-1]) if r.dim() == 2 else r.reshape(n, -1))
            start += n
        probes = [p for t in tapes.values() for p in t.probes]
        inputs = [h.detach() for t in tapes.values() for h in t.inputs]
        layers = [layer for f in tapes for layer in model[f].bank.layers()]
        per_point = torch.zeros(total, dtype=torch.float64, device=device)
        components = max(r.shape[1] for r in residuals)
        for c in range(components):
            out = torch.stack([r[:, c].sum() for r in residuals if r.shape[1] > c]).sum()
            deltas = torch.autograd.grad(out, probes, retain_graph=c < components - 1, allow_unused=True)
            for layer, h, delta in zip(layers, inputs, deltas):
                if delta is not None:
                    per_point = per_point + layer.jet_trace(h, delta).sum(0).to(torch.float64)
    return list(torch.split(per_point, sizes))


def term_traces(losses: Losses, generator: torch.Generator) -> torch.Tensor:
    """(T,) float64: each term's user weight times its NTK's mean diagonal, normalised like its loss."""
    samples = [[part_sample(p, generator) for p in parts] for parts in losses.parts]
    traces = iter(point_traces([s for parts in samples for s in parts]))
    out = []
    for t, parts in zip(losses.compiled.terms, samples):
        sums = [(s.weight * next(traces)).sum() * s.scale for s in parts]
        if t.reduction == "sum":
            value = torch.stack([v / s.count * s.loss.part.faces for v, s in zip(sums, parts)]).sum()
        else:
            value = torch.stack(sums).sum() / sum(s.count for s in parts)
        out.append(t.weight * value)
    return torch.stack(out)
