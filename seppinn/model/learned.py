"""Learned scalars (inverse problems: a diffusivity, a wave speed): one raw parameter each, mapped
smoothly into its allowed set, so that every value Adam reaches is allowed.

- free:      k = raw                                  (raw starts at the initial value)
- positive:  k = softplus(raw)                        (raw = softplus^-1(initial))
- range:     k = lo + (hi - lo) sigmoid(raw)          (raw = logit((initial - lo) / (hi - lo)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class ScalarSpec:
    """One learned scalar: its initial value and its set (``range`` (lo, hi), ``positive``, or all reals)."""

    name: str
    initial: float
    range: tuple[float, float] | None = None
    positive: bool = False


def _raw(spec: ScalarSpec) -> float:
    if spec.range is not None:
        lo, hi = spec.range
        p = (spec.initial - lo) / (hi - lo)
        return math.log(p / (1 - p))
    if spec.positive:  # softplus^-1(y) = y + log(1 - exp(-y)), stable for large y
        return spec.initial + math.log(-math.expm1(-spec.initial))
    return spec.initial


class LearnedScalars(nn.Module):
    """The learned scalars of a problem, in order: ``values()`` -> name -> 0-d tensor."""

    def __init__(self, specs: Sequence[ScalarSpec] = ()) -> None:
        super().__init__()
        self.specs = list(specs)
        self.raw = nn.ParameterDict({s.name: nn.Parameter(torch.tensor(_raw(s), dtype=torch.float64))
                                     for s in self.specs})

    def value(self, spec: ScalarSpec) -> torch.Tensor:
        raw = self.raw[spec.name]
        if spec.range is not None:
            lo, hi = spec.range
            return lo + (hi - lo) * torch.sigmoid(raw)
        if spec.positive:
            return torch.nn.functional.softplus(raw)
        return cast(torch.Tensor, raw * 1)  # a new tensor, like the others (never the parameter itself)

    def values(self) -> dict[str, torch.Tensor]:
        return {s.name: self.value(s) for s in self.specs}

    def numbers(self) -> dict[str, float]:
        """The current values as Python floats (a host sync: for records, never inside a step)."""
        with torch.no_grad():
            return {n: float(v) for n, v in self.values().items()}
