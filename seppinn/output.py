"""Run outputs: ``solution.h5``, ``summary.json``, ``model.pt``/``best.pt``.

Every file is written to a temporary name in the same folder and renamed over the target, so
a crash or a full disk never leaves a truncated file where a good one was. The writer only
sees arrays and metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .xdmf import scalar_arrays, step_name, vtk_order, write_xdmf


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(target: Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(target) as tmp:
        writer(tmp)


def write_solution_h5(
    target: Path,
    axes: Mapping[str, np.ndarray],
    fields: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    history: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    time_axis: int | None = None,
) -> None:
    """The self-describing result file of problem-files.md, and ``solution.xdmf`` beside it.

    ``fields``/``reference`` arrays have shape (n_1, ..., n_D) or (n_1, ..., n_D, C), axes in
    the problem's order; ``/error`` = prediction - reference; ``/vtk/<name>`` the same arrays
    in VTK order for the XDMF index (see xdmf.py).
    """
    import h5py

    errors = {name: fields[name] - ref for name, ref in reference.items()}
    vtk_arrays = scalar_arrays({"fields": fields, "reference": reference, "error": errors}, len(axes))
    n_spatial = len(axes) - (time_axis is not None)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = str(v) if isinstance(v, str) else v
            g = f.create_group("axes")
            for name, x in axes.items():
                g.create_dataset(name, data=np.asarray(x, dtype=np.float64))
            for group, arrays in (("fields", fields), ("reference", reference)):
                if arrays:
                    g = f.create_group(group)
                    for name, a in arrays.items():
                        ds = g.create_dataset(name, data=a, compression="gzip", compression_opts=4)
                        ds.attrs["axes"] = ",".join(axes)
            if reference:
                g = f.create_group("error")
                for name, err in errors.items():
                    g.create_dataset(name, data=err, compression="gzip", compression_opts=4)
            g = f.create_group("history")
            for name, col in history.items():
                g.create_dataset(name, data=col)
            if 1 <= n_spatial <= 3:
                g = f.create_group("vtk")
                for name, a in vtk_arrays.items():
                    v = vtk_order(np.asarray(a, dtype=np.float64), time_axis)
                    if time_axis is None:
                        g.create_dataset(name, data=v)
                    else:
                        steps = g.create_group(name)
                        for i in range(v.shape[0]):
                            steps.create_dataset(step_name(i), data=v[i])

    write_atomic(target, write)
    if 1 <= n_spatial <= 3:
        text = write_xdmf(target.name, axes, time_axis, list(vtk_arrays))
        write_atomic(target.with_suffix(".xdmf"), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(target: Path, payload: Mapping[str, Any]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n", encoding="utf-8")

    write_atomic(target, write)


def write_torch(target: Path, payload: Mapping[str, Any]) -> None:
    import torch

    write_atomic(target, lambda tmp: torch.save(dict(payload), tmp))


def squeeze_components(a: np.ndarray, components: int) -> np.ndarray:
    """(n_1, ..., n_D, 1) -> (n_1, ..., n_D) for scalar fields."""
    return a[..., 0] if components == 1 else a


def read_history(h5_path: Path) -> dict[str, np.ndarray]:
    """The ``/history`` columns of a solution.h5 ("loss/pde", "rel_l2/u", ...)."""
    import h5py

    cols: dict[str, np.ndarray] = {}
    with h5py.File(h5_path, "r") as f:
        f["history"].visititems(lambda name, obj: cols.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return cols
