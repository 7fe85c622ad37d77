"""Error metrics of a predicted field against its reference on the test grid.

Every field gets ``rel_l2`` (||pred - ref|| / ||ref||) and ``mse``; image fields (data or
reference read from an image) also ``psnr`` = 10 log10(1 / mse) in dB with peak 1 (images are
scaled to [0, 1]) of the prediction clipped to [0, 1], as the written PNG is; occupancy fields (a
reference file holding only 0 and 1) also ``iou`` = |{pred > 0.5} ∩ {ref > 0.5}| / |{pred > 0.5} ∪
{ref > 0.5}|. With a held-out set (the points a ``keep`` data term does not train on), each metric
is repeated on those points alone as ``<metric>_heldout``. With parameter axes, ``rel_l2`` is over
the whole family and ``rel_l2_worst`` the largest rel L2 at one parameter value (one test point per
parameter axis), found at ``worst_<axis>``. Every metric is made of sums over points
(``metric_sums``, ``member_sums``): ranks that each hold rows of the test grid add theirs with one
all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

IOU_THRESHOLD = 0.5


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; inf for a perfect fit."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


@dataclass
class MetricSpec:
    """Which metrics a field gets; ``heldout``: bool mask broadcastable to (n_1, ..., n_D, C)."""

    psnr: bool = False
    iou: bool = False
    heldout: torch.Tensor | None = None


SUMS = 6  # per point set: sum err^2, sum ref^2, points, sum clipped err^2, |A & B|, |A | B|


def metric_sums(pred: torch.Tensor, ref: torch.Tensor, spec: MetricSpec) -> torch.Tensor:
    """(2 SUMS,) float64: the sums every metric is made of, over all points then over the held-out
    ones (zeros without). pred, ref: (n_1, ..., n_D, C) on the test grid, or on rows of it: sums of
    rows add up, so ranks that each hold some rows all-reduce these and agree on the metrics."""
    whole = _sums(pred, ref)
    if spec.heldout is None:
        return torch.cat([whole, torch.zeros_like(whole)])
    mask = spec.heldout.expand_as(ref)
    return torch.cat([whole, _sums(pred[mask], ref[mask])])


def _sums(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    err, clipped = pred - ref, pred.clamp(0.0, 1.0) - ref
    a, b = pred > IOU_THRESHOLD, ref > IOU_THRESHOLD
    return torch.stack([(err * err).sum(), (ref * ref).sum(), torch.tensor(float(ref.numel()), device=ref.device),
                        (clipped * clipped).sum(), (a & b).sum(), (a | b).sum()]).to(torch.float64)


def metrics_from_sums(sums: torch.Tensor, spec: MetricSpec) -> dict[str, float]:
    """The metrics of ``metric_sums`` (summed over rows or ranks)."""
    values = sums.tolist()
    out = _metrics(values[:SUMS], spec)
    if spec.heldout is not None:
        out.update({f"{k}_heldout": v for k, v in _metrics(values[SUMS:], spec).items()})
    return out


def _metrics(s: Sequence[float], spec: MetricSpec) -> dict[str, float]:
    err_sq, ref_sq, n, clipped_sq, inter, union = s
    out = {"rel_l2": math.sqrt(err_sq / ref_sq) if ref_sq > 0 else math.nan, "mse": err_sq / n if n else math.nan}
    if spec.psnr:
        out["psnr"] = psnr(clipped_sq / n) if n else math.nan
    if spec.iou:
        out["iou"] = 1.0 if union == 0 else inter / union
    return out


def field_metrics(pred: torch.Tensor, ref: torch.Tensor, spec: MetricSpec) -> dict[str, float]:
    """pred, ref: (n_1, ..., n_D, C) float64 on the test grid."""
    return metrics_from_sums(metric_sums(pred, ref, spec), spec)


def member_sums(pred: torch.Tensor, ref: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """(2, *sizes) float64: sum err^2 and sum ref^2 at each parameter value (each combination of the
    parameter ``axes``' test points, in the order of ``axes``)."""
    err = (pred - ref).movedim(list(axes), list(range(len(axes))))
    r = ref.movedim(list(axes), list(range(len(axes))))
    dims = tuple(range(len(axes), err.dim()))
    return torch.stack([(err * err).sum(dims), (r * r).sum(dims)]).to(torch.float64)


def worst_member(sums: torch.Tensor, names: Sequence[str], coords: Sequence[Any]) -> dict[str, float]:
    """From ``member_sums``: the largest rel L2 at one parameter value as ``rel_l2_worst`` and where,
    ``worst_<name>`` (``coords[i]``: the test points of the i-th parameter axis)."""
    sizes = list(sums.shape[1:])
    num, den = sums[0].reshape(-1).sqrt(), sums[1].reshape(-1).sqrt()
    rel = torch.where(den > 0, num / den, torch.full_like(num, math.nan))
    j = int(torch.nan_to_num(rel, nan=-1.0).argmax())
    out = {"rel_l2_worst": float(rel[j])}
    for name, c, i in zip(names, coords, torch.unravel_index(torch.tensor(j), sizes)):
        out[f"worst_{name}"] = float(c[int(i)])
    return out

