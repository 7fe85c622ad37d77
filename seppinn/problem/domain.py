"""The box a problem lives on: axes, fields and faces, checked as problem-files.md states."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProblemError, did_you_mean
from .expressions import NAME_RE, ExprContext, check_names_are_free, parse_expression

MAX_AXES = 10
MAX_COORDINATE = 1e30  # |lo|, |hi| of an axis
MIN_RELATIVE_WIDTH = 1e-6  # hi - lo against max(|lo|, |hi|): points must stay distinct in float32
Error = Callable[[str | None, str], ProblemError]  # (key, message) -> the error to raise


@dataclass(frozen=True)
class TimeAxis:
    """A time axis [lo, hi] (at most one per problem)."""

    lo: float
    hi: float


@dataclass(frozen=True)
class Axis:
    name: str
    lo: float
    hi: float
    time: bool = False
    periodic: bool = False
    parameter: bool = False  # a parameter axis: sampled like any axis, but no faces, lap or grad2


@dataclass(frozen=True)
class Face:
    """The face x_axis = value of the box; ``side`` is "min" or "max"."""

    axis: int
    side: str
    value: float

    def label(self, axes: Sequence[Axis]) -> str:
        return f"{axes[self.axis].name} = {self.side}"


def make_axes(axes: Any, error: Error) -> list[Axis]:
    """The ordered axes from ``{name: (lo, hi) | TimeAxis | Axis}``, every rule of problem-files.md checked."""
    if not isinstance(axes, Mapping) or not axes:
        raise error("axes", "at least one axis is needed, e.g. x = [-1.0, 1.0]")
    if len(axes) > MAX_AXES:
        raise error("axes", f"{len(axes)} axes; at most {MAX_AXES} are supported")
    out: list[Axis] = []
    for name, spec in axes.items():
        key = f"axes.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise error(key, f"{name!r} is not a valid axis name")
        time = periodic = parameter = False
        if isinstance(spec, Axis):
            lo, hi, time, periodic, parameter = spec.lo, spec.hi, spec.time, spec.periodic, spec.parameter
        elif isinstance(spec, TimeAxis):
            lo, hi, time = spec.lo, spec.hi, True
        elif isinstance(spec, (list, tuple)) and len(spec) == 2:
            lo, hi = spec
        else:
            raise error(key, f"expected [lo, hi] or a table with 'range', got {spec!r}")
        for v in (lo, hi):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise error(key, f"interval ends must be finite numbers, got {v!r}")
        if not lo < hi:
            raise error(key, f"interval [{lo}, {hi}] is empty or reversed: need lo < hi")
        if max(abs(lo), abs(hi)) > MAX_COORDINATE:
            raise error(key, f"interval [{lo}, {hi}]: ends beyond +-{MAX_COORDINATE:g} are not usable; "
                                  "rescale the axis")
        if hi - lo < MIN_RELATIVE_WIDTH * max(abs(lo), abs(hi)) or hi - lo < 1e-30:
            raise error(key, f"interval [{lo}, {hi}] is too narrow for its position (width {hi - lo:g}): "
                                  "its points would not be distinct; shift or rescale the axis")
        if periodic and time:
            raise error(key, "the time axis cannot be periodic")
        if parameter and (time or periodic):
            raise error(key, f"a parameter axis cannot also be {'the time axis' if time else 'periodic'}")
        if time:
            other = [a.name for a in out if a.time]
            if other:
                raise error(key, f"only one axis may be the time axis (also: {other[0]})")
        out.append(Axis(name, float(lo), float(hi), bool(time), bool(periodic), bool(parameter)))
    clash = check_names_are_free([a.name for a in out])
    if clash:
        raise error(f"axes.{clash}", f"'{clash}' is a reserved name (a function or constant)")
    return out

def make_fields(fields: Any, error: Error) -> dict[str, int]:
    """Field name -> components, from names or ``{name: components}``."""
    if isinstance(fields, str):
        fields = [fields]
    if isinstance(fields, Mapping):
        items = list(fields.items())
    elif isinstance(fields, Iterable):
        items = [(f, 1) for f in fields]
    else:
        raise error("fields", "expected field names")
    if not items:
        raise error("fields", "at least one field is needed, e.g. u = {}")
    out: dict[str, int] = {}
    for name, comps in items:
        key = f"fields.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise error(key, f"{name!r} is not a valid field name")
        if isinstance(comps, bool) or not isinstance(comps, int) or comps < 1:
            raise error(key, f"components must be a positive integer, got {comps!r}")
        out[name] = comps
    return out


def parse_faces(on: Any, axes: Sequence[Axis], error: Error, key: str) -> tuple[Face, ...]:
    """The faces a condition's ``on`` names: 'boundary' (every face of a non-time, non-periodic axis),
    a face like 'x = -1' or 'x = max', or a list of them."""
    items = [on] if isinstance(on, str) else on
    if not isinstance(items, (list, tuple)) or not items:
        raise error(key, "expected 'boundary', a face like 'x = -1', or a list of faces")
    faces: list[Face] = []
    for item in items:
        if not isinstance(item, str):
            raise error(key, f"expected a face string, got {item!r}")
        if item.strip() == "boundary":
            new = [Face(d, s, a.lo if s == "min" else a.hi)
                   for d, a in enumerate(axes) if not (a.time or a.periodic or a.parameter) for s in ("min", "max")]
            if not new:
                raise error(key, "'boundary' has no faces: every axis is the time axis, periodic or a parameter")
        else:
            new = [_parse_face(item, axes, error, key)]
        for f in new:
            if f in faces:
                raise error(key, f"face '{f.label(axes)}' is listed twice")
            faces.append(f)
    return tuple(faces)

def _parse_face(text: str, axes: Sequence[Axis], error: Error, key: str) -> Face:
    m = re.match(r"^\s*([A-Za-z_]\w*)\s*=\s*(\S.*?)\s*$", text)
    if not m:
        raise error(key, f"'{text}' is not a face: expected 'boundary' or e.g. 'x = -1', 'x = max'")
    axis_name, value = m.groups()
    names = [a.name for a in axes]
    if axis_name not in names:
        raise error(key, f"'{text}' is not a face: unknown axis '{axis_name}'{did_you_mean(axis_name, names)}")
    d = names.index(axis_name)
    ax = axes[d]
    if ax.parameter:
        raise error(key, f"'{text}': {ax.name} is a parameter axis, which has no faces (a condition holds for "
                         "every parameter value)")
    if value in ("min", "max"):
        return Face(d, value, ax.lo if value == "min" else ax.hi)
    try:
        v = parse_expression(value, ExprContext(axes={}, spatial=[]))
        num = float(v)
    except (ProblemError, TypeError, ValueError):
        raise error(key, f"'{text}' is not a face: '{value}' is not a number, 'min' or 'max'") from None
    tol = 1e-9 * max(1.0, abs(ax.lo), abs(ax.hi))
    if abs(num - ax.lo) <= tol:
        return Face(d, "min", ax.lo)
    if abs(num - ax.hi) <= tol:
        return Face(d, "max", ax.hi)
    raise error(key, f"'{text}' is not a face: axis {ax.name} spans [{ax.lo:g}, {ax.hi:g}]")

