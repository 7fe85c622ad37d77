"""Run outputs: ``solution.h5``, ``summary.json``, ``model.pt``/``best.pt``.

Every file is written to a temporary name in the same folder and renamed over the target, so
a crash or a full disk never leaves a truncated file where a good one was. The writer only
sees arrays and metadata.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..safe_files import write_atomic
from .xdmf import scalar_arrays, step_name, vtk_order, write_xdmf

Slab = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]  # (fields, references) on rows i0:i1 of axis 0


def write_solution_h5(
    target: Path,
    axes: Mapping[str, np.ndarray],
    fields: Mapping[str, np.ndarray] | Callable[[int, int], Slab],
    reference: Mapping[str, np.ndarray] | None,
    history: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    time_axis: int | None = None,
    rows_per_slab: int | None = None,
) -> None:
    """The self-describing result file of problem-files.md, and ``solution.xdmf`` beside it.

    ``fields``/``reference`` arrays have shape (n_1, ..., n_D) or (n_1, ..., n_D, C), axes in
    the problem's order; ``/error`` = prediction - reference; ``/vtk/<name>`` the same arrays
    in VTK order for the XDMF index (see xdmf.py). For grids too large to hold, ``fields`` may
    instead be a function (i0, i1) -> (fields, references) on rows i0:i1 of the first axis
    (``reference`` None), called slab by slab (``rows_per_slab`` rows at a time): memory then
    scales with one slab, not the grid.
    """
    import h5py

    names = list(axes)
    n_axes = len(names)
    n0 = len(axes[names[0]])
    if callable(fields):
        evaluate = fields
        step = rows_per_slab or n0
    else:
        full_f, full_r = fields, reference or {}

        def evaluate(i0: int, i1: int) -> Slab:
            return {k: a[i0:i1] for k, a in full_f.items()}, {k: a[i0:i1] for k, a in full_r.items()}
        step = n0
    n_spatial = n_axes - (time_axis is not None)
    vtk_names: list[str] = []

    def write(tmp: Path) -> None:
        # HDF5 does not survive a failed write (a full disk ends in a segfault while it closes the
        # file), so the file is built in memory and written with Python's I/O, which raises OSError.
        # A slab-by-slab export is too large for that: it checks the free space first instead.
        if not callable(fields):
            image = io.BytesIO()
            fill(image)
            tmp.write_bytes(image.getbuffer())
            return
        need = 8 * n0 * int(np.prod([len(x) for x in list(axes.values())[1:]])) * 6
        free = shutil.disk_usage(tmp.parent).free
        if free < need:
            raise OSError(errno.ENOSPC, f"about {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free", str(target))
        fill(tmp)

    def fill(dest: Path | io.BytesIO) -> None:
        nonlocal vtk_names
        with h5py.File(dest, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = str(v) if isinstance(v, str) else v
            g = f.create_group("axes")
            for name, x in axes.items():
                g.create_dataset(name, data=np.asarray(x, dtype=np.float64))
            g = f.create_group("history")
            for name, col in history.items():
                g.create_dataset(name, data=col)
            for i0 in range(0, n0, step):
                i1 = min(i0 + step, n0)
                fs, rs = evaluate(i0, i1)
                groups = {"fields": fs, "reference": rs, "error": {k: fs[k] - r for k, r in rs.items()}}
                for group, arrays in groups.items():
                    for name, a in arrays.items():
                        path = f"{group}/{name}"
                        if path not in f:
                            # one chunk per row of axis 0 (whole chunks per slab: HDF5 never re-reads
                            # a half-written compressed chunk, which grew the memory with the grid)
                            row = (1, *a.shape[1:]) if 0 < int(np.prod(a.shape[1:])) <= 2**20 else True
                            ds = f.create_dataset(path, shape=(n0, *a.shape[1:]), dtype=np.float64, chunks=row,
                                                  compression="gzip", compression_opts=4)
                            if group != "error":
                                ds.attrs["axes"] = ",".join(names)
                        f[path][i0:i1] = a
                if not 1 <= n_spatial <= 3:
                    continue
                slabs = scalar_arrays(groups, n_axes)
                vtk_names = list(slabs)
                for name, a in slabs.items():
                    _write_vtk_slab(f, name, np.asarray(a, dtype=np.float64), i0, n0, time_axis)

    write_atomic(target, write)
    if 1 <= n_spatial <= 3:
        text = write_xdmf(target.name, axes, time_axis, vtk_names)
        write_atomic(target.with_suffix(".xdmf"), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_vtk_slab(f: Any, name: str, a: np.ndarray, i0: int, n0: int, time_axis: int | None) -> None:
    """Rows i0:i0+len(a) of problem axis 0 into /vtk/<name> (VTK order, see xdmf.vtk_order):
    axis 0 is the last index of a spatial array, or the step index when it is the time axis."""
    v = vtk_order(a, time_axis)
    i1 = i0 + a.shape[0]
    if time_axis is None:
        if i0 == 0:
            f.create_dataset(f"vtk/{name}", shape=(*v.shape[:-1], n0), dtype=np.float64)
        f[f"vtk/{name}"][..., i0:i1] = v
    elif time_axis == 0:
        for i in range(i0, i1):
            f.create_dataset(f"vtk/{name}/{step_name(i)}", data=v[i - i0])
    else:
        for t in range(v.shape[0]):
            path = f"vtk/{name}/{step_name(t)}"
            if i0 == 0:
                f.create_dataset(path, shape=(*v.shape[1:-1], n0), dtype=np.float64)
            f[path][..., i0:i1] = v[t]


def write_json(target: Path, payload: Mapping[str, Any]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n", encoding="utf-8")

    write_atomic(target, write)


def write_torch(target: Path, payload: Mapping[str, Any]) -> None:
    import torch

    def write(tmp: Path) -> None:  # serialised in memory: a failed write then raises OSError
        image = io.BytesIO()
        torch.save(dict(payload), image)
        tmp.write_bytes(image.getbuffer())

    write_atomic(target, write)


def read_history(h5_path: Path) -> dict[str, np.ndarray]:
    """The ``/history`` columns of a solution.h5 ("loss/pde", "rel_l2/u", ...)."""
    import h5py

    cols: dict[str, np.ndarray] = {}
    with h5py.File(h5_path, "r") as f:
        f["history"].visititems(lambda name, obj: cols.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return cols
