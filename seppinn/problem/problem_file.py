"""Problem files (TOML, problem-files.md) -> ``Problem``, with every key checked."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ProblemError, did_you_mean
from ..safe_files import MAX_TEXT_BYTES, read_text
from .resources import shipped_names
from .spec import Axis, Problem

TOP_KEYS = ("problem", "axes", "fields", "parameters", "definitions", "equations",
            "conditions", "data", "reference", "solver")
PROBLEM_KEYS = ("name", "title", "kind", "solver")
AXIS_KEYS = ("range", "time", "periodic", "parameter")
FIELD_KEYS = ("components", "scale", "positive")
EQUATION_KEYS = ("name", "residual", "lhs", "rhs")
CONDITION_KEYS = ("name", "on", "expr", "value", "enforce", "fade")


def check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], file: str, prefix: str,
               error: type[ProblemError] = ProblemError) -> None:
    """Unknown keys are mistakes: name the closest known ones and list the valid keys."""
    for k in table:
        if k not in allowed:
            key = f"{prefix}.{k}" if prefix else k
            raise error(f"unknown key '{k}'{did_you_mean(k, allowed)} (valid: {', '.join(allowed)})",
                        file=file, key=key)


def read_toml(path: Path, error: type[ProblemError] = ProblemError) -> tuple[dict[str, Any], str]:
    """Parse a TOML file (a regular file of at most MAX_TEXT_BYTES, UTF-8 with or without a
    byte-order mark); unreadable files and syntax errors become one-line errors."""
    def err(message: str) -> ProblemError:
        return error(message, file=str(path))

    if not path.exists():
        raise err("file not found")
    text = read_text(path, err, what="TOML file", max_bytes=MAX_TEXT_BYTES)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise err(f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise err("TOML nested too deeply") from None


def _table(doc: Mapping[str, Any], key: str, file: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ProblemError(f"expected a table [{key}]", file=file, key=key)
    return value


def _array_of_tables(doc: Mapping[str, Any], key: str, file: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProblemError(f"expected an array of tables [[{key}]]", file=file, key=key)
    return value


def load_problem(path: str | Path) -> Problem:
    """Read and validate a problem file. Raises ``ProblemError`` naming file and key."""
    doc, text = read_toml(Path(path))
    return problem_from_toml(doc, text, str(path))


def load_problem_text(text: str, source: str) -> Problem:
    """A problem from its TOML text (as stored in run outputs); ``source`` names it in messages
    and anchors relative data paths."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(f"TOML syntax error: {exc}", file=source) from None
    except RecursionError:
        raise ProblemError("TOML nested too deeply", file=source) from None
    return problem_from_toml(doc, text, source)


def _solver_name(value: Any, file: str) -> str:
    """``[problem] solver``: a shipped preset's name, or a solver file relative to the problem file
    (returned absolute); "" when absent."""
    if value == "":
        return ""
    if not isinstance(value, str):
        raise ProblemError(f"expected a preset name or a solver file path, got {value!r}", file=file, key="problem.solver")
    path = Path(file).parent / value
    if path.is_file():
        return str(path.resolve())
    names = shipped_names("solvers")
    if value not in names:
        raise ProblemError(f"no such preset or file '{value}'{did_you_mean(value, names)} (presets: {', '.join(names)}; "
                           "a file is looked up beside the problem file)", file=file, key="problem.solver")
    return value


def problem_from_toml(doc: dict[str, Any], text: str, file: str) -> Problem:
    check_keys(doc, TOP_KEYS, file, "")
    head = _table(doc, "problem", file)
    check_keys(head, PROBLEM_KEYS, file, "problem")
    if "name" not in head:
        raise ProblemError("required key missing: name = \"...\"", file=file, key="problem.name")

    axes: dict[str, Any] = {}
    for name, spec in _table(doc, "axes", file).items():
        if isinstance(spec, dict):
            check_keys(spec, AXIS_KEYS, file, f"axes.{name}")
            if "range" not in spec:
                raise ProblemError("required key missing: range = [lo, hi]", file=file, key=f"axes.{name}.range")
            rng = spec["range"]
            for flag in ("time", "periodic", "parameter"):
                if not isinstance(spec.get(flag, False), bool):
                    raise ProblemError(f"expected true or false, got {spec[flag]!r}", file=file, key=f"axes.{name}.{flag}")
            if not (isinstance(rng, list) and len(rng) == 2):
                raise ProblemError(f"expected [lo, hi], got {rng!r}", file=file, key=f"axes.{name}.range")
            axes[name] = Axis(name, rng[0], rng[1], spec.get("time", False), spec.get("periodic", False),
                              spec.get("parameter", False))
            for v in rng:  # Problem re-checks types; here only to keep Axis(...) honest
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ProblemError(f"interval ends must be finite numbers, got {v!r}", file=file, key=f"axes.{name}.range")
        else:
            axes[name] = spec

    fields: dict[str, Any] = {}
    scales: dict[str, Any] = {}
    positive: dict[str, Any] = {}
    for name, spec in _table(doc, "fields", file).items():
        if not isinstance(spec, dict):
            raise ProblemError("expected a table, e.g. u = {} or rgb = { components = 3 }", file=file, key=f"fields.{name}")
        check_keys(spec, FIELD_KEYS, file, f"fields.{name}")
        fields[name] = spec.get("components", 1)
        if "scale" in spec:
            scales[name] = spec["scale"]
        if "positive" in spec:
            positive[name] = spec["positive"]

    solver = _table(doc, "solver", file)
    problem = Problem(
        solver=_solver_name(head.get("solver", ""), file),
        name=head["name"],
        title=head.get("title", ""),
        kind=head.get("kind", "pde"),
        axes=axes,
        fields=fields,
        parameters=_table(doc, "parameters", file),
        definitions=_table(doc, "definitions", file),
        source=file,
        text=text,
        solver_table=solver,
    )
    for i, eq in enumerate(_array_of_tables(doc, "equations", file)):
        check_keys(eq, EQUATION_KEYS, file, f"equations[{i}]")
        problem.add_equation(eq.get("residual"), lhs=eq.get("lhs"), rhs=eq.get("rhs"), name=eq.get("name"))
    for i, cond in enumerate(_array_of_tables(doc, "conditions", file)):
        check_keys(cond, CONDITION_KEYS, file, f"conditions[{i}]")
        if "on" not in cond:
            raise ProblemError("required key missing: on = \"boundary\" or a face like \"x = -1\"", file=file, key=f"conditions[{i}].on")
        problem.add_condition(cond["on"], cond.get("value"), cond.get("expr"),
                              name=cond.get("name"), enforce=cond.get("enforce"), fade=cond.get("fade"))
    for f, spec in _table(doc, "data", file).items():
        problem.add_data(f, spec)
    problem.set_reference(**_table(doc, "reference", file))
    for f, value in scales.items():
        problem.set_scale(f, value)
    for f, value in positive.items():
        problem.set_positive(f, value)
    return problem.validate()
