"""Observations and references of a field: where they come from (``DataSource``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sympy as sp

from ..errors import did_you_mean
from ..reference_solvers import REFERENCE_SOLVERS

if TYPE_CHECKING:
    from .spec import Problem


@dataclass
class DataSource:
    """Observations or a reference for one field.

    kind: "expr" (an expression of the axes), "file" (HDF5 / .npy), "image" (PNG/JPEG),
    "points" (scattered observations, CSV/HDF5), "solver" (a built-in reference solver).
    """

    field: str
    kind: str
    key: str
    expr: sp.Expr | None = None
    path: str | None = None
    dataset: str | None = None
    keep: float | None = None
    seed: int = 0
    solver: str | None = None


def make_source(problem: Problem, field_name: str, spec: Any, key: str, table: str) -> DataSource:
    """A ``[data]`` or ``[reference]`` entry of a field: an expression, a file, scattered points or a
    built-in reference solver (``table``: "data" or "reference")."""
    if field_name not in problem.components:
        raise problem.error(key, f"unknown field '{field_name}'{did_you_mean(field_name, problem.components)}")
    if isinstance(spec, (str, int, float, sp.Expr)) and not isinstance(spec, bool):
        expr = problem.parse(spec, key)
        if problem.fields_in(expr):
            raise problem.error(key, f"the {table} must not depend on fields")
        return DataSource(field_name, "expr", key, expr=expr)
    if not isinstance(spec, Mapping):
        raise problem.error(key, f"expected an expression or a table, got {spec!r}")
    allowed = {"file", "dataset", "keep", "seed", "points"} if table == "data" else {"file", "dataset", "solver"}
    for k in spec:
        if k not in allowed:
            raise problem.error(f"{key}.{k}", f"unknown key '{k}'{did_you_mean(k, allowed)} (valid: {', '.join(sorted(allowed))})")
    src = [k for k in ("file", "points", "solver") if k in spec]
    if len(src) != 1:
        raise problem.error(key, f"give exactly one of {', '.join(k for k in ('file', 'points', 'solver') if k in allowed)}")
    kind = src[0]
    path = spec.get(kind) if kind != "solver" else None
    if kind != "solver" and not isinstance(path, str):
        raise problem.error(f"{key}.{kind}", "expected a file path string")
    if kind == "file" and path is not None and path.lower().endswith((".png", ".jpg", ".jpeg")):
        kind = "image"
    if kind == "points" and spec.get("keep") is not None:
        raise problem.error(f"{key}.keep", "'keep' selects points of a gridded file; thin a points file instead")
    if kind == "solver":
        name = spec["solver"]
        if not isinstance(name, str) or name not in REFERENCE_SOLVERS:
            raise problem.error(f"{key}.solver", f"unknown reference solver {name!r}{did_you_mean(str(name), REFERENCE_SOLVERS)} "
                             f"(built in: {', '.join(REFERENCE_SOLVERS)})")
        return DataSource(field_name, "solver", key, solver=name)
    ds = spec.get("dataset")
    if ds is not None and not isinstance(ds, str):
        raise problem.error(f"{key}.dataset", "expected a dataset name string")
    keep = spec.get("keep")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise problem.error(f"{key}.keep", f"expected a fraction in (0, 1], got {keep!r}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise problem.error(f"{key}.seed", f"expected an integer in [0, 2^63), got {seed!r}")
    return DataSource(field_name, kind, key, path=path, dataset=ds, keep=keep, seed=seed)

