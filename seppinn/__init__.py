"""seppinn: separable physics-informed neural networks, trained with SepPGD."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Result as Result
from .api import check_report as check_report
from .api import prepare as prepare
from .api import resume as resume
from .api import run as run
from .api import solve as solve
from .catalog import catalog as catalog
from .catalog import load_plugin as load_plugin
from .errors import DataError as DataError
from .errors import ProblemError as ProblemError
from .errors import RunError as RunError
from .errors import SeppinnError as SeppinnError
from .errors import SolverConfigError as SolverConfigError
from .expressions import operator as operator
from .problem import Axis as Axis
from .problem import Problem as Problem
from .problem import TimeAxis as TimeAxis
from .problem_file import load_problem as load_problem
