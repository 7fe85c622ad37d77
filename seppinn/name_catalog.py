"""Every name a user can write, read from the registries themselves (``seppinn list``), and the
``--plugin`` loader that adds user operators to them."""

from __future__ import annotations

import importlib

from .errors import SeppinnError
from .formats import FORMATS
from .model.activations import ACTIVATIONS
from .problem.expressions import CONSTANTS, FUNCTIONS, OPERATOR_DOCS
from .problem.resources import shipped_names
from .problem.solver_config import MODULATIONS, PRECONDITIONERS, SAMPLINGS, SCHEDULES
from .reference_solvers import REFERENCE_SOLVERS
from .registry import BODIES, MODEL_KINDS


def catalog() -> dict[str, dict[str, str]]:
    """Section -> {name: one-line description}, in the order ``seppinn list`` prints them."""
    return {
        "operators": dict(OPERATOR_DOCS),
        "functions": {n: f"{n}(a): elementwise" for n in FUNCTIONS},
        "constants": {n: str(v) for n, v in CONSTANTS.items()},
        "activations": {n: a.doc for n, a in ACTIVATIONS.items()},
        "model kinds": dict(MODEL_KINDS),
        "factor bodies": dict(BODIES),
        "preconditioners": dict(PRECONDITIONERS),
        "modulations": dict(MODULATIONS),
        "schedules": dict(SCHEDULES),
        "samplings": dict(SAMPLINGS),
        "output formats": dict(FORMATS),
        "reference solvers": {n: doc for n, (_, doc) in REFERENCE_SOLVERS.items()},
        "shipped problems": {n: "" for n in shipped_names("problems")},
        "solver presets": {n: "" for n in shipped_names("solvers")},
    }


def format_catalog(sections: dict[str, dict[str, str]]) -> str:
    lines = []
    for section, entries in sections.items():
        lines.append(f"{section}:")
        width = max((len(n) for n in entries), default=0)
        lines += [f"  {n.ljust(width)}  {doc}".rstrip() for n, doc in entries.items()]
    return "\n".join(lines)


def load_plugin(module: str) -> None:
    """Import ``module`` (a dotted name importable from the current directory or sys.path) so
    that the operators it registers with ``seppinn.operator`` become usable in problem files."""
    import sys

    if "" not in sys.path:  # like `python -m`, a module in the working directory is found
        sys.path.insert(0, "")
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or the module's own failure while registering
        raise SeppinnError(f"cannot import '{module}': {type(exc).__name__}: {exc}", key="--plugin") from None
