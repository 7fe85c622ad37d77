"""The run folder: its checkpoint format and who owns it.

``model.pt`` / ``best.pt`` hold only tensors, numbers, strings, lists, tuples, dicts and None
(numpy arrays are stored as tensors), so they load with ``torch.load(weights_only=True)``: a
crafted checkpoint cannot run code. Nothing here unpickles anything else.

``run.json`` names the problem a folder's run belongs to. It is written with every checkpoint
and with the outputs, and deciding whether a folder may be written into reads that small JSON
file (or ``summary.json``), never the checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, SeppinnError, one_line
from ..problem.spec import Problem
from ..safe_files import MAX_CHECKPOINT_BYTES, MAX_TEXT_BYTES, read_bytes, read_text
from .output import write_json, write_torch

CHECKPOINT_FORMAT = "seppinn-checkpoint"
RUN_MARKER = "run.json"
RUN_FILES = ("solution.h5", "solution.xdmf", "summary.json", "model.pt", "best.pt", "convergence.png",
             "slices.png", RUN_MARKER)  # plus <field>.png for image fields
SNAPSHOT_KEYS = ("iteration", "seconds", "lr_scale", "model", "adam", "schedule", "lbfgs", "sampler", "points",
                 "factors", "use_preconditioner", "history", "best", "best_state")


def seppinn_version() -> str:
    """The installed package's version (``importlib.metadata``), or "unknown" in an uninstalled tree."""
    try:
        return importlib.metadata.version("seppinn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def storable(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers: what
    ``torch.load(weights_only=True)`` reads back. Other types are a bug (TypeError)."""
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {storable(k): storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [storable(v) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"a checkpoint cannot hold {type(obj).__name__}")


def checkpoint_payload(problem: Problem, solver_toml: str, model_state: Mapping[str, torch.Tensor], iteration: int,
                       history: Mapping[str, np.ndarray], training: Mapping[str, Any] | None) -> dict[str, Any]:
    """model.pt / best.pt: weights, settings, problem text and history; ``training`` (a
    ``Trainer.snapshot``) is what ``--resume`` continues from."""
    return {
        "format": CHECKPOINT_FORMAT, "seppinn_version": seppinn_version(),
        "iteration": iteration, "model": dict(model_state), "problem_name": problem.name,
        "problem": problem.text, "problem_file": str(Path(problem.source).resolve())
        if problem.source != "<python>" else "", "solver": solver_toml,
        "history": dict(history), "training": dict(training) if training is not None else None,
    }


def write_checkpoint(target: Path, payload: Mapping[str, Any]) -> None:
    """``payload`` (``checkpoint_payload``) into ``target`` atomically, with the folder's run.json."""
    write_marker(target.parent, str(payload["problem_name"]))
    write_torch(target, storable(payload))


def _expect(ckpt: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], what: str, where: str) -> Any:
    if key not in ckpt:
        raise DataError(f"the checkpoint has no '{key}' ({what})", file=where)
    value = ckpt[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and kinds is int:
        raise DataError(f"the checkpoint's '{key}' is {type(value).__name__}, not {what}", file=where)
    return value


def _is_column(v: object) -> bool:
    return isinstance(v, torch.Tensor) and v.ndim == 1 and (v.dtype.is_floating_point or v.dtype == torch.int64)


def read_checkpoint(run_dir: str | Path, name: str = "model.pt") -> dict[str, Any]:
    """A run folder's checkpoint, loaded without unpickling code and checked key by key (one-line
    ``DataError`` when missing, foreign, corrupt or malformed); ``history`` as numpy arrays."""
    path = Path(run_dir) / name
    where = str(path)
    if not Path(run_dir).is_dir():
        raise DataError(f"'{run_dir}' is not a folder (a seppinn run folder holds {name})", file=str(run_dir))
    if not os.path.lexists(path):
        raise DataError(f"no {name} in '{run_dir}' (is it a seppinn run folder?)", file=str(run_dir))
    data = read_bytes(path, lambda m: DataError(m, file=where), what="checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files, and pickles that would run code
        raise DataError(f"cannot read the checkpoint (only tensors, numbers, strings, lists and dicts are "
                        f"loaded): {_load_failure(exc)}", file=where) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError("not a seppinn checkpoint", file=where)
    _expect(ckpt, "iteration", int, "an iteration number", where)
    model = _expect(ckpt, "model", dict, "the model weights", where)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise DataError("the checkpoint's 'model' is not a table of named tensors", file=where)
    for key in ("problem_name", "problem", "solver"):
        _expect(ckpt, key, str, "text", where)
    try:
        tomllib.loads(ckpt["solver"])
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"the checkpoint's solver settings are not TOML: {exc}", file=where) from None
    if not isinstance(ckpt.get("problem_file", ""), str):
        raise DataError("the checkpoint's 'problem_file' is not text", file=where)
    history = _expect(ckpt, "history", dict, "a table of history columns", where)
    if not all(isinstance(k, str) and _is_column(v) for k, v in history.items()):
        raise DataError("the checkpoint's 'history' is not a table of 1-D numeric columns", file=where)
    ckpt["history"] = {k: v.numpy() for k, v in history.items()}
    training = ckpt.get("training")
    if training is not None:
        missing = [k for k in SNAPSHOT_KEYS if not isinstance(training, dict) or k not in training]
        if missing:
            raise DataError(f"the checkpoint's training state is incomplete (missing {', '.join(missing)})", file=where)
    return ckpt


def _load_failure(exc: Exception) -> str:
    """The informative line of a ``torch.load`` failure, without torch's advice to load unsafely."""
    boilerplate = ("Weights only load failed", "Check the documentation", "(1)", "(2)")
    lines = [re.sub(r"^.*?WeightsUnpickler error:\s*", "", ln.strip()) for ln in str(exc).splitlines()]
    useful = [ln.split(". Please use")[0] for ln in lines if ln and not ln.startswith(boilerplate)]
    return useful[0][:200] if useful else type(exc).__name__


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model are a one-line DataError."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise DataError("the checkpoint's weights do not fit the model its settings build: "
                        + one_line("; ".join(lines[:3]), 400), file=where) from None


def write_marker(out: Path, problem_name: str) -> None:
    write_json(out / RUN_MARKER, {"format": "seppinn-run", "problem": problem_name, "seppinn_version": seppinn_version()})


def run_owner(run_dir: str | Path) -> str | None:
    """The problem name of the run stored in ``run_dir`` (from run.json, else summary.json; None
    when the folder holds neither). The checkpoint is never opened."""
    for name in (RUN_MARKER, "summary.json"):
        path = Path(run_dir) / name
        if not os.path.lexists(path):
            continue
        try:
            doc = json.loads(read_text(path, lambda m: DataError(m), what=name, max_bytes=MAX_TEXT_BYTES))
            owner = doc["problem"]
            if isinstance(owner, str):
                return owner
        except (DataError, ValueError, KeyError, TypeError, RecursionError):
            pass
        return f"<unreadable {name}>"
    return None


def _check_path(out: Path) -> None:
    """Refuse an output path that names a file, or has a component the file system cannot hold."""
    for part in out.parts:
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise SeppinnError(f"'{one_line(part[:60])}...' is {len(part)} characters long: more than a file "
                               "name may have (255 bytes)", key="--out")
    if out.exists() and not out.is_dir():
        raise SeppinnError(f"'{out}' is an existing file, not a folder", key="--out")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SeppinnError(f"'{parent}' is a file: cannot create the folder '{out}' inside it", key="--out")


def check_run_dir(out: str | Path, problem: Problem, force: bool = False) -> None:
    """Refuse to write into ``out`` when it holds another problem's run, or files a run would
    replace (solution.h5, model.pt, ...) without a run.json or summary.json naming this problem,
    unless ``force``."""
    out = Path(out)
    _check_path(out)
    if force or not out.is_dir():
        return
    owner = run_owner(out)
    if owner == problem.name:
        return
    if owner is not None:
        raise SeppinnError(f"'{out}' holds a run of problem '{owner}', not '{problem.name}'; "
                           "choose another --out or pass --force to overwrite it", key="--out")
    ours = [*RUN_FILES, *(f"{f}.png" for f in problem.components)]
    taken = [n for n in ours if os.path.lexists(out / n)]
    if taken:
        raise SeppinnError(f"'{out}' is not a seppinn run folder but holds {', '.join(taken)}, which the run "
                           "would replace; choose another --out or pass --force to overwrite them", key="--out")


@dataclass(frozen=True)
class StoredRun:
    """A run folder read back: its checkpoint (``read_checkpoint``), the problem it was made from,
    and its settings as tables (what ``prepare`` takes)."""

    checkpoint: dict[str, Any]
    problem: Problem
    settings: dict[str, Any]
    where: str  # the checkpoint's path, for messages


def _same_text(path: str, text: str) -> bool:
    """Whether ``path`` (as a checkpoint names it: not trusted) is a regular file holding ``text``."""
    if not path:
        return False
    try:
        return read_text(path, lambda m: DataError(m), what="problem file") == text
    except DataError:
        return False


def load_run(run_dir: str | Path, problem: Problem | str | Path | None = None,
             checkpoint: str = "model.pt") -> StoredRun:
    """The run in ``run_dir``. ``problem``: the one the caller means (``--resume``), which must be the
    one the run was made from (name and text); None: the run's own, read from the file it names when
    that still holds the same text (so relative data paths resolve), else from its stored text.
    ``checkpoint``: ``model.pt`` (the final state) or ``best.pt`` (the lowest-loss state)."""
    from ..problem.problem_file import load_problem, load_problem_text

    ckpt = read_checkpoint(run_dir, checkpoint)
    where = str(Path(run_dir) / checkpoint)
    settings = tomllib.loads(ckpt["solver"])  # read_checkpoint checked that it parses
    if problem is None:
        src = ckpt.get("problem_file") or ""
        stored = (load_problem(src) if _same_text(src, ckpt["problem"])
                  else load_problem_text(ckpt["problem"], src or str(Path(run_dir) / "problem.toml")))
        return StoredRun(ckpt, stored, settings, where)
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    if ckpt["problem_name"] != problem.name or (problem.text and ckpt["problem"] != problem.text):
        raise DataError(f"this run was made from problem '{ckpt['problem_name']}' with a different "
                        f"problem text; resume it with the problem file it was made from", file=where)
    return StoredRun(ckpt, problem, settings, where)
