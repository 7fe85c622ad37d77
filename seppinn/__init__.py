"""seppinn: separable physics-informed neural networks, trained with SepPGD.

The public names below are imported on first use (PEP 562), so ``import seppinn`` and the CLI's
start-up import neither torch nor sympy: a Ctrl-C while they load is then the CLI's to handle.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("seppinn")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"

_EXPORTS = {
    "Result": "api", "check_report": "api", "prepare": "api", "resume": "api", "run": "api", "solve": "api",
    "catalog": "name_catalog", "load_plugin": "name_catalog",
    "DataError": "errors", "ProblemError": "errors", "RunError": "errors", "SeppinnError": "errors",
    "SolverConfigError": "errors",
    "operator": "problem.expressions",
    "Axis": "problem.spec", "Problem": "problem.spec", "TimeAxis": "problem.spec",
    "load_problem": "problem.problem_file",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .api import Result as Result
    from .api import check_report as check_report
    from .api import prepare as prepare
    from .api import resume as resume
    from .api import run as run
    from .api import solve as solve
    from .errors import DataError as DataError
    from .errors import ProblemError as ProblemError
    from .errors import RunError as RunError
    from .errors import SeppinnError as SeppinnError
    from .errors import SolverConfigError as SolverConfigError
    from .name_catalog import catalog as catalog
    from .name_catalog import load_plugin as load_plugin
    from .problem.expressions import operator as operator
    from .problem.problem_file import load_problem as load_problem
    from .problem.spec import Axis as Axis
    from .problem.spec import Problem as Problem
    from .problem.spec import TimeAxis as TimeAxis


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'seppinn' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
