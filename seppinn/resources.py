"""Where the shipped problem files and solver presets live (package data after a pip install,
the repository's ``problems/`` and ``solvers/`` folders in a source checkout)."""

from __future__ import annotations

import shutil
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


def copy_examples(dest: Path) -> list[str]:
    """Copy the shipped problem files and solver presets into ``dest``; the copied names."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for kind in ("problems", "solvers"):
        (dest / kind).mkdir(exist_ok=True)
        for f in sorted(shipped_dir(kind).glob("*.toml")):
            shutil.copy(f, dest / kind / f.name)
            copied.append(f"{kind}/{f.name}")
    data = shipped_dir("problems") / "data"
    if data.is_dir():  # the image, volume and sensor files the INR problems read
        (dest / "problems" / "data").mkdir(exist_ok=True)
        for f in sorted(data.iterdir()):
            if f.is_file() and f.suffix in (".png", ".h5", ".csv"):
                shutil.copy(f, dest / "problems" / "data" / f.name)
                copied.append(f"problems/data/{f.name}")
    return copied
