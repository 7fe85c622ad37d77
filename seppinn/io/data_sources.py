"""Loading gridded observations and references: HDF5, .npy and images -> numpy arrays.

An array for a field with C components on D axes has shape (n_1, ..., n_D) when C == 1 or
(n_1, ..., n_D, C). Images: rows run along the first axis (top row at lo), columns along the
second; 8-bit values are divided by 255, 16-bit by 65535, floats are kept as stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..problem.spec import DataSource, Problem
from ..safe_files import MAX_CSV_BYTES, MAX_DATA_BYTES, MAX_IMAGE_PIXELS, read_text, regular_file


def _resolve(problem: Problem, src: DataSource) -> Path:
    assert src.path is not None
    path = Path(src.path)
    if not path.is_absolute() and problem.source != "<python>":
        path = Path(problem.source).parent / path
    return path


def _error_for(problem: Problem, src: DataSource) -> Callable[[str], DataError]:
    def err(msg: str) -> DataError:
        return DataError(msg, file=problem.source, key=src.key)
    return err


def _h5_member(group: Any, name: str, path: Path, err: Callable[[str], DataError]) -> Any:
    """``group[name]`` (``name`` may be a path ``a/b``), or None when it does not exist. Every
    link on the way must be a hard link: external and soft links are refused before they are
    followed (an external link may name a FIFO, a device or any file on the machine)."""
    import h5py
    from h5py import h5l

    obj = group
    for part in (p for p in name.split("/") if p):
        if not isinstance(obj, h5py.Group) or not obj.id.links.exists(part.encode()):
            return None
        kind = obj.id.links.get_info(part.encode()).type
        if kind != h5l.TYPE_HARD:
            what = "an external link" if kind == h5l.TYPE_EXTERNAL else "a soft link"
            raise err(f"'{path}': '{name}' is {what}; a data file must hold its datasets itself")
        obj = obj[part]
    return obj


def _h5_values(ds: Any, path: Path, err: Callable[[str], DataError]) -> np.ndarray:
    """A dataset's values, after refusing external storage (raw bytes of another file), virtual
    datasets (views of other files) and a declared size beyond MAX_DATA_BYTES (a compressed bomb)."""
    if ds.external:
        raise err(f"'{path}': '{ds.name}' keeps its values in external files; store them in the HDF5 file itself")
    if ds.is_virtual:
        raise err(f"'{path}': '{ds.name}' is a virtual dataset (a view of other files); store its values instead")
    if ds.size * ds.dtype.itemsize > MAX_DATA_BYTES:
        raise err(f"'{path}': '{ds.name}' declares {ds.size * ds.dtype.itemsize / 2**30:.1f} GiB of values, more "
                  f"than the {MAX_DATA_BYTES / 2**30:.0f} GiB a data file may hold")
    return np.asarray(ds[()])


def _check_image_size(path: Path, err: Callable[[str], DataError]) -> None:
    """Refuse an image whose header declares more than MAX_IMAGE_PIXELS, before decoding it
    (matplotlib's reader skips Pillow's decompression-bomb check)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = f"{im.size[0]} x {im.size[1]}" if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS else ""
    except Image.DecompressionBombError:  # Pillow's own cap (above ours) is checked on opening
        size = "far more"
    if size:
        raise err(f"'{path}' declares {size} pixels; images of more than {MAX_IMAGE_PIXELS:,} pixels are "
                  "refused before they are decoded")


def _read(path: Path, src: DataSource, problem: Problem) -> np.ndarray:
    err = _error_for(problem, src)
    regular_file(path, err, what="data file", max_bytes=MAX_DATA_BYTES)  # also: "data file '...' not found"
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                name = src.dataset or src.field
                obj = _h5_member(f, name, path, err)
                if obj is None:
                    names = [k for k in f.keys() if isinstance(_h5_member(f, k, path, err), h5py.Dataset)]
                    if src.dataset is None and len(names) == 1:
                        name = names[0]
                        obj = f[name]
                    else:
                        raise err(f"'{path}' has no dataset '{name}' (datasets: {', '.join(names) or 'none'})")
                if not isinstance(obj, h5py.Dataset):
                    raise err(f"'{path}': '{name}' is a group, not a dataset")
                return _h5_values(obj, path, err)
        if suffix in (".png", ".jpg", ".jpeg"):
            import matplotlib.image as mpimg

            _check_image_size(path, err)
            img = np.asarray(mpimg.imread(path))
            if img.dtype == np.uint8:
                return img.astype(np.float64) / 255.0
            if img.dtype == np.uint16:
                return img.astype(np.float64) / 65535.0
            return img
    except DataError:
        raise
    except Exception as exc:  # truncated or corrupt files: h5py/numpy/PIL raise many types
        raise err(f"cannot read '{path}': {exc}") from None
    raise err(f"unsupported data file type '{suffix}' (use .h5, .hdf5, .npy, .png, .jpg)")


def load_array(problem: Problem, src: DataSource) -> np.ndarray:
    """The array of a file/image source, checked against the problem's axes and components."""
    err = _error_for(problem, src)
    path = _resolve(problem, src)
    a = _read(path, src, problem)
    if a.dtype.kind not in "fiub":
        raise err(f"'{path}': expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    n_axes, comps = len(problem.axis_list), problem.components[src.field]
    if src.kind == "image":
        if n_axes != 2:
            raise err(f"an image needs a problem with 2 axes, this one has {n_axes}")
        if a.ndim == 3 and a.shape[2] == 4 and comps != 4:
            a = a[..., :3]
        if a.ndim == 3 and comps == 1:
            a = a[..., :3].mean(axis=2)
    if comps == 1 and a.ndim == n_axes + 1 and a.shape[-1] == 1:
        a = a[..., 0]
    want = n_axes + (1 if comps > 1 else 0)
    if a.ndim != want or (comps > 1 and a.shape[-1] != comps):
        shape = "(n_1, ..., n_D)" if comps == 1 else f"(n_1, ..., n_D, {comps})"
        raise err(f"'{path}' has shape {a.shape}; field '{src.field}' on {n_axes} axes needs {shape}")
    if min(a.shape[:n_axes]) < 2:
        raise err(f"'{path}' has shape {a.shape}: every axis needs at least 2 points")
    if not np.all(np.isfinite(a)):
        raise err(f"'{path}' contains {int(np.size(a) - np.isfinite(a).sum())} non-finite values (NaN or inf)")
    return a if comps > 1 else a[..., None]


def point_columns(problem: Problem, field_name: str) -> list[str]:
    """Column names of a scattered-observations file: the axes, then the field (``u``) or its
    components (``rgb_0``, ``rgb_1``, ...)."""
    comps = problem.components[field_name]
    names = [field_name] if comps == 1 else [f"{field_name}_{c}" for c in range(comps)]
    return [a.name for a in problem.axis_list] + names


def load_points(problem: Problem, src: DataSource) -> np.ndarray:
    """Scattered observations (N, D + C): coordinates in axis order, then the field's components.

    CSV: a header row naming the columns (any order, no others), one observation per row.
    HDF5: one 1-D dataset per column, in the file's root or in the group ``dataset``."""
    err = _error_for(problem, src)
    path = _resolve(problem, src)
    want = point_columns(problem, src.field)
    suffix = path.suffix.lower()
    if suffix != ".csv":  # a CSV is checked as it is read
        regular_file(path, err, what="data file", max_bytes=MAX_DATA_BYTES)
    try:
        if suffix == ".csv":
            lines = read_text(path, err, what="data file", max_bytes=MAX_CSV_BYTES).splitlines()
            header = [h.strip() for h in lines[0].split(",")] if lines else []
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise err(f"'{path}': column {', '.join(twice)} appears more than once in the header")
            rows = [line for line in lines[1:] if line.strip()]
            table = np.loadtxt(rows, delimiter=",", ndmin=2, dtype=np.float64) if rows else np.zeros((0, len(header)))
            columns = dict(zip(header, table.T))
            if table.shape[1] != len(header):
                raise err(f"'{path}': the header names {len(header)} columns, the rows have {table.shape[1]}")
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                group = _h5_member(f, src.dataset, path, err) if src.dataset else f
                if group is None:
                    raise err(f"'{path}' has no group '{src.dataset}'")
                if not isinstance(group, h5py.Group):
                    raise err(f"'{path}': '{src.dataset}' is not a group of 1-D datasets")
                header = list(group.keys())
                columns = {}
                for k in header:
                    obj = _h5_member(group, k, path, err)
                    if not isinstance(obj, h5py.Dataset) or obj.ndim != 1:
                        raise err(f"'{path}': '{k}' is not a 1-D dataset (one value per observation)")
                    if obj.dtype.kind not in "fiu":
                        raise err(f"'{path}': '{k}': expected numbers, got dtype {obj.dtype}")
                    columns[k] = np.asarray(_h5_values(obj, path, err), dtype=np.float64)
        else:
            raise err(f"unsupported file type '{suffix}' for scattered observations (use .csv, .h5, .hdf5)")
    except DataError:
        raise
    except Exception as exc:  # malformed CSV rows, truncated HDF5
        raise err(f"cannot read '{path}': {exc}") from None
    missing = [c for c in want if c not in columns]
    extra = [c for c in columns if c not in want]
    if missing or extra:
        raise err(f"'{path}' has columns {', '.join(columns) or 'none'}; expected {', '.join(want)}"
                  + (f" (missing {', '.join(missing)})" if missing else "")
                  + (f" (unknown {', '.join(extra)})" if extra else ""))
    lengths = {len(columns[c]) for c in want}
    if len(lengths) != 1:
        raise err(f"'{path}': the columns have different lengths {sorted(lengths)}")
    obs = np.stack([columns[c] for c in want], axis=1)
    if len(obs) == 0:
        raise err(f"'{path}' holds no observations")
    bad = ~np.isfinite(obs).all(axis=1)
    if bad.any():
        raise err(f"'{path}': observation {int(np.argmax(bad)) + 1} has a non-finite value (NaN or inf)")
    for d, a in enumerate(problem.axis_list):
        x = obs[:, d]
        out = (x < a.lo) | (x > a.hi)
        if out.any():
            i = int(np.argmax(out))
            raise err(f"'{path}': observation {i + 1} has {a.name} = {x[i]:g}, outside [{a.lo:g}, {a.hi:g}]")
    return obs


def load_all(problem: Problem) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every file-based data and reference array (raises DataError before any compute).
    Scattered observations come as (N, D + C) arrays (``load_points``)."""
    data = {f: load_array(problem, s) for f, s in problem.data.items() if s.kind in ("file", "image")}
    data.update({f: load_points(problem, s) for f, s in problem.data.items() if s.kind == "points"})
    ref = {f: load_array(problem, s) for f, s in problem.reference.items() if s.kind in ("file", "image")}
    shapes = {tuple(a.shape[:-1]) for a in ref.values()}
    if len(shapes) > 1:
        f = next(iter(ref))
        raise DataError(f"reference files have different grids: {sorted(shapes)}",
                        file=problem.source, key=f"reference.{f}")
    return data, ref
