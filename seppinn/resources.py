"""Where the shipped problem files and solver presets live (package data after a pip install,
the repository's ``problems/`` and ``solvers/`` folders in a source checkout)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_dir(kind: str) -> Path:
    """The folder of shipped ``problems`` or ``solvers``."""
    try:
        path = Path(str(resources.files(f"seppinn.{kind}")))
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / kind


def shipped_names(kind: str) -> list[str]:
    return sorted(p.stem for p in shipped_dir(kind).glob("*.toml"))
