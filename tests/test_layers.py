"""The package's layering, read from the source (every import statement, at any depth, resolved
to the module it loads): the rules below must never break.

    problem/ (the spec: expressions, Problem, problem and solver files; sympy and TOML)
      -> compile/ (separability, lowering, the compiler) -> model/ (activations, jets, factor
      networks, separable models) -> train/ (the trainer, SepPGD, metrics) -> io/ (files)
      -> api, export, spectrum -> cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "seppinn"
LEAVES = ("seppinn.errors", "seppinn.safe_files", "seppinn.formats", "seppinn.registry", "seppinn.reference_solvers",
          "seppinn.reference_1d")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


@cache
def imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports (seppinn modules by full name, others by top-level name)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name if a.name.startswith("seppinn") else a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("seppinn"):
                out.add(target.split(".")[0])
                continue
            for a in node.names:  # `from .io import plots` loads seppinn.io.plots
                sub = f"{target}.{a.name}"
                out.add(sub if sub in MODULES else target)
    return frozenset(out)


def reachable(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        for dep in imports(m):
            if dep not in seen:
                seen.add(dep)
                if dep in MODULES:
                    todo.append(dep)
    return seen


def in_layer(name: str, *layers: str) -> bool:
    return any(name == f"seppinn.{layer}" or name.startswith(f"seppinn.{layer}.") for layer in layers)


def test_the_import_graph_is_read():
    assert "torch" in imports("seppinn.model.separable")
    assert "seppinn.io.plots" in imports("seppinn.api")  # `from .io import plots`
    assert "seppinn.problem.spec" in imports("seppinn.problem.problem_file")


@pytest.mark.parametrize("name", sorted(m for m in MODULES if in_layer(m, "problem") or m in LEAVES))
def test_the_problem_layer_and_the_leaves_never_import_torch(name):
    assert "torch" not in reachable(name), sorted(m for m in reachable(name) if m in MODULES)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if in_layer(m, "model")))
def test_models_know_no_pde(name):
    bad = [m for m in imports(name) if in_layer(m, "problem", "compile", "train", "io", "api", "cli", "export",
                                                  "spectrum")]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(m for m in MODULES if in_layer(m, "io")))
def test_io_never_imports_the_trainer_or_the_api(name):
    bad = [m for m in reachable(name) if in_layer(m, "train", "api", "cli", "export", "spectrum")]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(m for m in MODULES if in_layer(m, "problem", "compile", "model", "train")))
def test_the_stages_never_import_the_application(name):
    bad = [m for m in imports(name) if in_layer(m, "api", "cli", "export", "spectrum", "name_catalog")]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_the_package_root(name):
    assert "seppinn" not in imports(name)


def test_loading_a_problem_file_loads_no_torch():
    code = ("import sys; from seppinn.problem.problem_file import load_problem; "
            "from seppinn.problem.solver_config import resolve; "
            "p = load_problem('problems/diffusion3d.toml'); resolve(p.solver_table, p.source, 'spinn'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.strip()
    assert out == "False"
