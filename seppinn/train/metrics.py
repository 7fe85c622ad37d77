"""Error metrics of a predicted field against its reference on the test grid.

Every field gets ``rel_l2`` (||pred - ref|| / ||ref||) and ``mse``; image fields (data or
reference read from an image) also ``psnr`` = 10 log10(1 / mse) in dB with peak 1 (images are
scaled to [0, 1]) of the prediction clipped to [0, 1], as the written PNG is; occupancy fields (a
reference file holding only 0 and 1) also ``iou`` = |{pred > 0.5} ∩ {ref > 0.5}| / |{pred > 0.5} ∪
{ref > 0.5}|. With a held-out set (the points a ``keep`` data term does not train on), each metric
is repeated on those points alone as ``<metric>_heldout``. With parameter axes, ``rel_l2`` is over
the whole family and ``rel_l2_worst`` the largest rel L2 at one parameter value (one test point per
parameter axis), found at ``worst_<axis>``.
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


def iou(pred: torch.Tensor, ref: torch.Tensor, threshold: float = IOU_THRESHOLD) -> float:
    """Intersection over union of the sets {pred > threshold} and {ref > threshold}; 1 if both are empty."""
    a, b = pred > threshold, ref > threshold
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@dataclass
class MetricSpec:
    """Which metrics a field gets; ``heldout``: bool mask broadcastable to (n_1, ..., n_D, C)."""

    psnr: bool = False
    iou: bool = False
    heldout: torch.Tensor | None = None


def field_metrics(pred: torch.Tensor, ref: torch.Tensor, spec: MetricSpec) -> dict[str, float]:
    """pred, ref: (n_1, ..., n_D, C) float64 on the test grid."""
    out = _metrics(pred, ref, spec)
    if spec.heldout is not None:
        mask = spec.heldout.expand_as(ref)
        out.update({f"{k}_heldout": v for k, v in _metrics(pred[mask], ref[mask], spec).items()})
    return out


def _metrics(pred: torch.Tensor, ref: torch.Tensor, spec: MetricSpec) -> dict[str, float]:
    err = pred - ref
    ref_norm = ref.norm().item()
    out = {"rel_l2": err.norm().item() / ref_norm if ref_norm > 0 else math.nan, "mse": (err * err).mean().item()}
    if spec.psnr:
        clipped = pred.clamp(0.0, 1.0) - ref
        out["psnr"] = psnr((clipped * clipped).mean().item())
    if spec.iou:
        out["iou"] = iou(pred, ref)
    return out


def worst_parameter(pred: torch.Tensor, ref: torch.Tensor, axes: Sequence[int], names: Sequence[str],
                    coords: Sequence[Any]) -> dict[str, float]:
    """The rel L2 at each parameter value (each combination of the parameter ``axes``' test points,
    ``coords[i]`` along ``axes[i]``): the largest as ``rel_l2_worst`` and where, ``worst_<name>``."""
    err = (pred - ref).movedim(list(axes), list(range(len(axes))))
    r = ref.movedim(list(axes), list(range(len(axes))))
    sizes = list(err.shape[:len(axes)])
    num, den = err.reshape(math.prod(sizes), -1).norm(dim=1), r.reshape(math.prod(sizes), -1).norm(dim=1)
    rel = torch.where(den > 0, num / den, torch.full_like(num, math.nan))
    j = int(torch.nan_to_num(rel, nan=-1.0).argmax())
    out = {"rel_l2_worst": float(rel[j])}
    for name, c, i in zip(names, coords, torch.unravel_index(torch.tensor(j), sizes)):
        out[f"worst_{name}"] = float(c[int(i)])
    return out
