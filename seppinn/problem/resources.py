"""Where the shipped problem files and solver presets live (package data after a pip install,
the repository's ``problems/`` and ``solvers/`` folders in a source checkout)."""

from __future__ import annotations

import os
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
    return Path(__file__).resolve().parents[2] / kind


def shipped_names(kind: str) -> list[str]:
    return sorted(p.stem for p in shipped_dir(kind).glob("*.toml"))


def copy_examples(dest: Path, force: bool = False) -> tuple[list[str], list[str]]:
    """Copy the shipped problem files, solver presets and data files into ``dest``: (copied,
    kept) relative names. A file already there (perhaps edited) is kept unless ``force``."""
    from ..safe_files import write_atomic

    files = [(f"{kind}/{f.name}", f) for kind in ("problems", "solvers") for f in sorted(shipped_dir(kind).glob("*.toml"))]
    data = shipped_dir("problems") / "data"
    if data.is_dir():  # the image, volume and sensor files the INR problems read
        files += [(f"problems/data/{f.name}", f) for f in sorted(data.iterdir())
                  if f.is_file() and f.suffix in (".png", ".h5", ".csv")]
    copied, kept = [], []
    for name, src in files:
        target = dest / name
        if os.path.lexists(target) and not force:
            kept.append(name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()  # --force replaces the link itself, never the file it points to
        write_atomic(target, lambda tmp, src=src: shutil.copyfile(src, tmp))  # type: ignore[misc]
        copied.append(name)
    return copied, kept
