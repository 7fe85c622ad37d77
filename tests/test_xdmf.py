"""solution.xdmf read back by VTK's own XDMF reader (ParaView's): names, time steps and values
at known coordinates of an asymmetric field, so a transposed or mirrored axis cannot pass."""

from __future__ import annotations

import numpy as np
import pytest

from seppinn.io.output import write_solution_h5

from vtkmodules import vtkIOXdmf2 as vtk_xdmf
from vtkmodules.util.numpy_support import vtk_to_numpy


def field(*coords: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*coords, indexing="ij")
    return sum((d + 1) * 10.0**d * g for d, g in enumerate(grids)) + grids[0] ** 2


def read(path):
    reader = vtk_xdmf.vtkXdmfReader()
    reader.SetFileName(str(path))
    reader.UpdateInformation()
    return reader


def point_value(data, name, coords_xyz):
    pts = vtk_to_numpy(data.GetPoints().GetData()) if data.GetPoints() else None
    arr = vtk_to_numpy(data.GetPointData().GetArray(name))
    if pts is None:  # rectilinear grid
        xs = [vtk_to_numpy(c) for c in (data.GetXCoordinates(), data.GetYCoordinates(), data.GetZCoordinates())]
        dims = [len(x) for x in xs]
        idx = [int(np.argmin(np.abs(x - c))) for x, c in zip(xs, coords_xyz)]
        return arr[idx[0] + dims[0] * (idx[1] + dims[1] * idx[2])]
    i = int(np.argmin(np.linalg.norm(pts - np.asarray(coords_xyz), axis=1)))
    return arr[i]


def test_3d_grid_values_at_known_coordinates(tmp_path):
    x, y, z = np.linspace(0, 1, 4), np.linspace(-1, 2, 5), np.linspace(2, 3, 3)
    u = field(x, y, z)
    ref = u + 0.5
    write_solution_h5(tmp_path / "solution.h5", {"x": x, "y": y, "z": z}, {"u": u}, {"u": ref},
                      {"iteration": np.arange(2)}, {"seed": 0})
    reader = read(tmp_path / "solution.xdmf")
    reader.Update()
    data = reader.GetOutputDataObject(0)
    names = {data.GetPointData().GetArrayName(i) for i in range(data.GetPointData().GetNumberOfArrays())}
    assert names == {"u", "u_reference", "u_error"}
    for i, j, k in [(0, 0, 0), (3, 1, 2), (1, 4, 0), (2, 2, 1)]:
        assert point_value(data, "u", (x[i], y[j], z[k])) == pytest.approx(u[i, j, k])
        assert point_value(data, "u_error", (x[i], y[j], z[k])) == pytest.approx(-0.5)


def test_time_series_one_step_per_test_time(tmp_path):
    t, x, y = np.linspace(0, 1, 6), np.linspace(-1, 1, 4), np.linspace(0, 2, 3)
    u = field(t, x, y)
    rgb = np.stack([u, 2 * u, 3 * u], -1)
    write_solution_h5(tmp_path / "solution.h5", {"t": t, "x": x, "y": y}, {"u": u, "rgb": rgb}, {},
                      {"iteration": np.arange(2)}, {}, time_axis=0)
    reader = read(tmp_path / "solution.xdmf")
    info = reader.GetOutputInformation(0)
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline as SDDP

    steps = np.asarray(info.Get(SDDP.TIME_STEPS()))
    np.testing.assert_allclose(steps, t)
    for n, tn in enumerate(t):
        reader.UpdateTimeStep(tn)
        data = reader.GetOutputDataObject(0)
        for i, j in [(0, 0), (3, 2), (1, 2)]:
            assert point_value(data, "u", (x[i], y[j], 0.0)) == pytest.approx(u[n, i, j])
            assert point_value(data, "rgb_2", (x[i], y[j], 0.0)) == pytest.approx(3 * u[n, i, j])
