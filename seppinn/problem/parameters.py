"""Parameters given as tables: ``k = { initial = 1.0, learn = true, range = [lo, hi] | positive = true,
lr = 1e-2 }`` (a learned scalar of an inverse problem), or ``learn = false`` (a fixed value)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ..errors import ProblemError, did_you_mean

LEARNED_KEYS = ("initial", "learn", "range", "positive", "lr")


@dataclass(frozen=True)
class LearnedParameter:
    """A scalar the training finds: it starts at ``initial`` and stays inside ``range`` (lo, hi) or
    above 0 (``positive``) by a smooth reparametrisation; ``lr``: its own Adam learning rate (None:
    ``train.lr``)."""

    name: str
    initial: float
    range: tuple[float, float] | None = None
    positive: bool = False
    lr: float | None = None


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def learned_parameter(name: str, spec: Mapping[str, Any], key: str,
                      error: Callable[[str | None, str], ProblemError]) -> LearnedParameter | None:
    """The checked table: a LearnedParameter, or None for ``learn = false`` (``spec["initial"]`` is then
    the parameter's fixed value). ``error(key, message)`` makes the ProblemError to raise."""
    unknown = [k for k in spec if k not in LEARNED_KEYS]
    if unknown:
        raise error(f"{key}.{unknown[0]}", f"unknown key{did_you_mean(unknown[0], LEARNED_KEYS)} "
                                           f"(keys: {', '.join(LEARNED_KEYS)})")
    learn, given = spec.get("learn", False), spec.get("initial")
    if not isinstance(learn, bool):
        raise error(f"{key}.learn", f"expected true or false, got {learn!r}")
    if not _number(given):
        raise error(f"{key}.initial", f"expected a finite number, got {given!r}")
    initial = float(cast(float, given))
    lr, positive, rng = spec.get("lr"), spec.get("positive", False), spec.get("range")
    if lr is not None and not (_number(lr) and lr > 0):
        raise error(f"{key}.lr", f"expected a positive number, got {lr!r}")
    if not isinstance(positive, bool):
        raise error(f"{key}.positive", f"expected true or false, got {positive!r}")
    if rng is not None:
        if positive:
            raise error(f"{key}.range", "give range or positive, not both (a range above 0 is positive)")
        if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(_number(v) for v in rng) and rng[0] < rng[1]):
            raise error(f"{key}.range", f"expected [lo, hi] with lo < hi, got {rng!r}")
        if not rng[0] < initial < rng[1]:
            raise error(f"{key}.range", f"the range {list(rng)} does not contain the initial value {initial:g} "
                                        "(strictly inside: the reparametrisation never reaches the ends)")
    if positive and initial <= 0:
        raise error(f"{key}.initial", f"positive = true needs an initial value above 0, got {initial:g}")
    if not learn:
        return None
    return LearnedParameter(name, float(initial), (float(rng[0]), float(rng[1])) if rng else None, positive,
                            float(lr) if lr is not None else None)
