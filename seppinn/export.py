"""``seppinn export RUN_DIR --format xdmf|vtu|vti --points N``: evaluate a finished run's model
on an N-per-axis grid and write it for ParaView. xdmf: ``export_N.h5`` + ``export_N.xdmf`` (a
time series when there is a time axis), evaluated and written slab by slab along the first axis
(SLAB_POINTS points at a time), so memory stays bounded at any N; vtu (meshio,
hexahedra/quads/lines) and vti (VTK ImageData) hold whole arrays: one file per time step plus a
``.pvd`` collection when there is a time axis."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np
import torch

from .errors import SeppinnError, did_you_mean
from .formats import FORMATS
from .io.output import Slab, write_solution_h5
from .io.xdmf import scalar_arrays, vtk_order
from .safe_files import write_atomic

if TYPE_CHECKING:
    from .api import Prepared

SLAB_POINTS = 2**21  # grid points evaluated at once by an XDMF export (16 MiB per float64 array)


def _cells(dims: list[int]) -> tuple[str, np.ndarray]:
    """meshio cell type and connectivity of a structured grid, points numbered x fastest."""
    ids = np.arange(int(np.prod(dims))).reshape(dims[::-1])  # [z, y, x]
    if len(dims) == 1:
        return "line", np.stack([ids[:-1], ids[1:]], -1)
    if len(dims) == 2:
        a = ids[:-1, :-1]
        return "quad", np.stack([a, ids[:-1, 1:], ids[1:, 1:], ids[1:, :-1]], -1).reshape(-1, 4)
    c = [ids[k:k + dims[2] - 1 or None, j:j + dims[1] - 1 or None, i:i + dims[0] - 1 or None]
         for (i, j, k) in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]]
    return "hexahedron", np.stack(c, -1).reshape(-1, 8)


def _write_vtu(target: Path, coords: list[np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    import meshio

    grids = np.meshgrid(*coords[::-1], indexing="ij")[::-1]  # x, y, z arrays in [z, y, x] layout
    pts = np.stack([g.ravel() for g in grids] + [np.zeros(grids[0].size)] * (3 - len(grids)), -1)
    kind, conn = _cells([len(c) for c in coords])
    mesh = meshio.Mesh(pts, [(kind, conn)], point_data={k: v.ravel() for k, v in arrays.items()})
    write_atomic(target, lambda tmp: meshio.write(tmp, mesh, file_format="vtu"))


def _write_vti(target: Path, coords: list[np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    dims = [len(c) for c in coords] + [1] * (3 - len(coords))
    origin = [float(c[0]) for c in coords] + [0.0] * (3 - len(coords))
    spacing = [float(c[1] - c[0]) if len(c) > 1 else 1.0 for c in coords] + [1.0] * (3 - len(coords))
    extent = " ".join(f"0 {n - 1}" for n in dims)
    body = "".join(
        f'<DataArray type="Float64" Name={quoteattr(k)} format="ascii">'
        + " ".join(repr(float(x)) for x in v.ravel()) + "</DataArray>" for k, v in arrays.items())
    text = (f'<?xml version="1.0"?>\n<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian">'
            f'<ImageData WholeExtent="{extent}" Origin="{" ".join(map(repr, origin))}" '
            f'Spacing="{" ".join(map(repr, spacing))}"><Piece Extent="{extent}"><PointData>{body}</PointData>'
            f"</Piece></ImageData></VTKFile>\n")
    write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def export_bytes(sizes: list[int], fmt: str, arrays: int, solver_arrays: int, rank: int) -> float:
    """Rough peak bytes of an export on a grid of ``sizes``: ``arrays`` float64 arrays (fields,
    references, errors, one per component) written, ``solver_arrays`` of them computed on the
    whole grid by a reference solver. xdmf holds one slab at a time; vtu (points, cells) and vti
    (ASCII text) hold every array whole."""
    n = float(np.prod(sizes))
    rest = float(np.prod(sizes[1:]))
    slab = n if fmt != "xdmf" else min(n, max(1, SLAB_POINTS // max(int(rest), 1)) * rest)
    per_point = {"xdmf": 8 * 4 * arrays, "vtu": 8 * 3 * arrays + 48 + 128, "vti": 75 * arrays}[fmt]
    return slab * (per_point + 8 * rank) + n * 8 * solver_arrays


def check_export_memory(prep: Prepared, run: Path, fmt: str, points: int) -> None:
    """Refuse an export whose files would not fit on the disk of ``run``, or whose estimated memory
    (``export_bytes``) exceeds the run's memory limit."""
    from .train.device import memory_limit

    c = prep.compiled
    sizes = list(prep.plan.test_sizes) if prep.ref_arrays else [points] * len(c.axes)
    comps = {f: c.components[f] for f in c.components}
    refs = {f: comps[f] for f in prep.problem.reference}
    solver_refs = sum(comps[f] for f, s in prep.problem.reference.items() if s.kind == "solver")
    rank = prep.config.model.rank if isinstance(prep.config.model.rank, int) else max(prep.config.model.rank)
    arrays = sum(comps.values()) + 2 * sum(refs.values())
    need = export_bytes(sizes, fmt, arrays, solver_refs, rank)
    limit, source = memory_limit(prep.config, torch.device("cpu"))
    n = float(np.prod(sizes))
    written = n * {"xdmf": 16 * arrays, "vtu": 8 * arrays + 100, "vti": 25 * arrays}[fmt]
    free = shutil.disk_usage(run).free
    if written > free:
        raise SeppinnError(f"exporting {' x '.join(map(str, sizes))} points as {fmt} writes about "
                           f"{written / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free in '{run}'; "
                           "use fewer --points", key="--points")
    if need > limit:
        raise SeppinnError(f"exporting {' x '.join(map(str, sizes))} points as {fmt} needs about "
                           f"{need / 2**30:.1f} GiB, more than the limit {limit / 2**30:.1f} GiB ({source}); "
                           "use fewer --points" + (" or --format xdmf (written slab by slab)" if fmt != "xdmf" else ""),
                           key="--points")


def export(run: str | Path, fmt: str = "xdmf", points: int = 64, state: str = "final",
           at: Mapping[str, float] | None = None) -> list[Path]:
    """Re-evaluate the model of ``run`` (``state``: its final weights, or the lowest-loss ``best``) on
    ``points`` per axis and write ``fmt`` files into it (``export_<n>``; ``export_best_<n>`` for best).
    ``at``: axes held at one value (``{"mu": 2.5}``: one member of a parametric family; the file
    name gets ``_mu2.5``)."""
    from .api import open_run
    from .train.evaluation import squeeze_components

    if fmt not in FORMATS:
        raise SeppinnError(f"'{fmt}' is not one of {', '.join(FORMATS)}", key="--format")
    if points < 2:
        raise SeppinnError("need at least 2 points per axis", key="--points")
    run = Path(run)
    opened = open_run(run, state=state)
    prep, ckpt, problem = opened.prepared, opened.stored.checkpoint, opened.stored.problem
    check_export_memory(prep, run, fmt, points)
    tr = opened.evaluator
    # a reference file fixes the grid (its values exist there only); otherwise points per axis
    grid = tr.test_axes if prep.ref_arrays else [np.linspace(lo, hi, points) for lo, hi in prep.compiled.ranges]
    names = prep.compiled.axes
    for name, value in (at or {}).items():
        if name not in names:
            raise SeppinnError(f"unknown axis '{name}'{did_you_mean(name, names)} (axes: {', '.join(names)})", key="--at")
        d = names.index(name)
        lo, hi = prep.compiled.ranges[d]
        if not lo <= value <= hi:
            raise SeppinnError(f"{name} = {value:g} is outside the axis' range [{lo:g}, {hi:g}]", key="--at")
        if prep.ref_arrays:
            raise SeppinnError("a reference file fixes the export grid; --at needs expression or solver references",
                               key="--at")
        grid[d] = np.array([float(value)])
    whole = {f: r for f, r in tr.reference.items() if f in prep.ref_arrays}
    whole.update(tr.reference_on(grid, kinds=("solver",)))  # solvers: once, on the whole grid
    comps = prep.compiled.components

    def slab(i0: int, i1: int) -> Slab:
        """Prediction and references on rows i0:i1 of the first axis, evaluated slab by slab."""
        sub_grid = [grid[0][i0:i1], *grid[1:]]
        refs = {f: r[i0:i1] for f, r in whole.items()}
        refs.update(tr.reference_on(sub_grid, kinds=("expr",)))
        pred = tr.predict(sub_grid)
        return ({f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in pred.items()},
                {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in refs.items()})

    axes = dict(zip(prep.compiled.axes, grid))
    time_axis = next((d for d, a in enumerate(problem.axis_list) if a.time), None)
    n = len(grid[0])
    stem = (f"export_{n}" if state == "final" else f"export_{state}_{n}") + "".join(
        f"_{name}{value:g}" for name, value in (at or {}).items())
    if fmt == "xdmf":
        target = run / f"{stem}.h5"
        rows = max(1, SLAB_POINTS // int(np.prod([len(x) for x in grid[1:]])))
        write_solution_h5(target, axes, slab, None, ckpt.get("history", {}), {"problem": ckpt["problem"]},
                          time_axis, rows_per_slab=rows)
        return [target, target.with_suffix(".xdmf")]
    fields, reference = slab(0, n)  # meshio writes whole arrays
    errors = {f: fields[f] - r for f, r in reference.items()}
    arrays = {k: vtk_order(v, time_axis) for k, v in
              scalar_arrays({"fields": fields, "reference": reference, "error": errors}, len(axes)).items()}
    spatial = [a for d, a in enumerate(axes) if d != time_axis]
    coords = [axes[a] for a in spatial]
    writer = _write_vtu if fmt == "vtu" else _write_vti
    if time_axis is None:
        target = run / f"{stem}.{fmt}"
        writer(target, coords, arrays)
        return [target]
    written = []
    times = axes[list(axes)[time_axis]]
    for i in range(len(times)):
        target = run / f"{stem}_{i:04d}.{fmt}"
        writer(target, coords, {k: v[i] for k, v in arrays.items()})
        written.append(target)
    pvd = run / f"{stem}.pvd"
    entries = "".join(f'<DataSet timestep="{float(t)!r}" file="{w.name}"/>' for t, w in zip(times, written))
    text = f'<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1"><Collection>{entries}</Collection></VTKFile>\n'
    write_atomic(pvd, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return [pvd, *written]
