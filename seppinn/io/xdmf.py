"""``solution.xdmf``: a small XDMF (v2) index that ParaView opens directly, pointing into the
arrays that ``solution.h5`` keeps in VTK order under ``/vtk/``.

VTK reads the fastest-varying array index as X, so ``/vtk/<name>`` holds each array with the
spatial axes reversed (problem axis 1 varies fastest); with a time axis ``/vtk/<name>`` is a
group with one such dataset per time step (``00000``, ``00001``, ...: ParaView's XDMF3 reader
does not take hyperslabs of one array) and the file is a temporal collection, one grid per
time step (ParaView's time slider). Fields with several components become one scalar per
component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np


def vtk_order(a: np.ndarray, time_axis: int | None) -> np.ndarray:
    """(n_1, ..., n_D) in problem order -> (n_t,) + spatial axes reversed, C-contiguous."""
    spatial = [d for d in range(a.ndim) if d != time_axis]
    order = ([time_axis] if time_axis is not None else []) + spatial[::-1]
    return np.ascontiguousarray(np.transpose(a, order))


def step_name(step: int) -> str:
    return f"{step:05d}"


def scalar_arrays(groups: Mapping[str, Mapping[str, np.ndarray]], n_axes: int) -> dict[str, np.ndarray]:
    """{'fields': {'u': a}, 'reference': ..., 'error': ...} -> {'u': a, 'u_reference': ..., ...}
    with components split into scalars ('rgb_0', 'rgb_1', ...)."""
    out: dict[str, np.ndarray] = {}
    for group, arrays in groups.items():
        suffix = "" if group == "fields" else f"_{group}"
        for name, a in arrays.items():
            if a.ndim == n_axes:
                out[f"{name}{suffix}"] = a
            else:
                for c in range(a.shape[-1]):
                    out[f"{name}_{c}{suffix}"] = a[..., c]
    return out


def write_xdmf(h5_name: str, axes: Mapping[str, np.ndarray], time_axis: int | None,
               arrays: Sequence[str]) -> str:
    """The XDMF text for arrays stored at ``h5_name:/vtk/<name>`` (see ``vtk_order``)."""
    names = list(axes)
    spatial = [n for i, n in enumerate(names) if i != time_axis]
    if not 1 <= len(spatial) <= 3:
        raise ValueError("XDMF rectilinear grids have 1 to 3 spatial axes")
    coords = [np.asarray(axes[n], dtype=np.float64) for n in spatial]
    if len(coords) == 1:
        coords.append(np.zeros(1))
    dims = [len(c) for c in coords]
    topo = "3DRectMesh" if len(coords) == 3 else "2DRectMesh"
    geo = "VXVYVZ" if len(coords) == 3 else "VXVY"
    rev = " ".join(str(n) for n in dims[::-1])

    def vec(c: np.ndarray) -> str:
        return (f'<DataItem Dimensions="{len(c)}" NumberType="Float" Precision="8" Format="XML">'
                + " ".join(repr(float(v)) for v in c) + "</DataItem>")

    geometry = f'<Geometry GeometryType="{geo}">' + "".join(vec(c) for c in coords) + "</Geometry>"
    topology = f'<Topology TopologyType="{topo}" Dimensions="{rev}"/>'

    def attribute(name: str, step: int | None) -> str:
        path = f"/vtk/{name}" if step is None else f"/vtk/{name}/{step_name(step)}"
        return (f'<Attribute Name={quoteattr(name)} AttributeType="Scalar" Center="Node">'
                f'<DataItem NumberType="Float" Precision="8" Format="HDF" Dimensions="{rev}">{h5_name}:{path}'
                "</DataItem></Attribute>")

    lines = ['<?xml version="1.0" ?>', '<Xdmf Version="2.0">', "<Domain>"]
    if time_axis is None:
        lines.append(f'<Grid Name="solution" GridType="Uniform">{topology}{geometry}')
        lines.extend(attribute(a, None) for a in arrays)
        lines.append("</Grid>")
    else:
        lines.append('<Grid Name="solution" GridType="Collection" CollectionType="Temporal">')
        for i, t in enumerate(np.asarray(axes[names[time_axis]], dtype=np.float64)):
            lines.append(f'<Grid Name="step{i}" GridType="Uniform"><Time Value="{float(t)!r}"/>{topology}{geometry}')
            lines.extend(attribute(a, i) for a in arrays)
            lines.append("</Grid>")
        lines.append("</Grid>")
    lines += ["</Domain>", "</Xdmf>", ""]
    return "\n".join(lines)
