"""seppinn export: the saved model re-evaluated on any grid, read back by VTK's readers at known
coordinates (asymmetric domain, so a transposed or mirrored axis fails)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLUnstructuredGridReader

import seppinn
from seppinn.cli import main

from .conftest import PLAIN, write

PROBLEM = """
[problem]
name = "box"
[axes]
x = [0.0, 1.0]
y = [-2.0, 1.0]
z = [1.0, 1.5]
[fields]
u = {}
[definitions]
exact = "x + 2*y**2 + 3*z*x"
[[equations]]
residual = "lap(u) - lap(exact)"
[[conditions]]
on = "boundary"
value = "exact"
[reference]
u = "exact"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    path = write(d / "box.toml", PROBLEM)
    result = seppinn.solve(path, out=d / "run", progress=False,
                           overrides={"train.iterations": 5, "train.eval_every": 5, "model.rank": 4,
                                      "model.width": 8, "model.activation": "tanh", "model.weight_factorization": True})
    return d / "run", result


def _check(data, result, n):
    x, y, z = np.linspace(0, 1, n), np.linspace(-2, 1, n), np.linspace(1, 1.5, n)
    want = result.evaluate({"x": x, "y": y, "z": z})["u"]
    pts = vtk_to_numpy(data.GetPoints().GetData()) if hasattr(data, "GetPoints") and data.GetPoints() else None
    u = vtk_to_numpy(data.GetPointData().GetArray("u"))
    ref = vtk_to_numpy(data.GetPointData().GetArray("u_reference"))
    for i, j, k in [(0, 0, 0), (n - 1, 1, 2), (2, n - 1, 0), (1, 2, n - 1)]:
        if pts is None:
            pid = data.FindPoint(x[i], y[j], z[k])
        else:
            pid = int(np.argmin(np.linalg.norm(pts - [x[i], y[j], z[k]], axis=1)))
        assert u[pid] == pytest.approx(want[i, j, k], rel=1e-5, abs=1e-6)
        assert ref[pid] == pytest.approx(x[i] + 2 * y[j] ** 2 + 3 * z[k] * x[i], rel=1e-12)


def test_vtu_and_vti_read_back(run, capsys):
    out, result = run
    assert main(["export", str(out), "--format", "vtu", "--points", "6"]) == 0
    r = vtkXMLUnstructuredGridReader()
    r.SetFileName(str(out / "export_6.vtu"))
    r.Update()
    assert r.GetOutput().GetNumberOfCells() == 5**3
    _check(r.GetOutput(), result, 6)
    assert main(["export", str(out), "--format", "vti", "--points", "7"]) == 0
    r = vtkXMLImageDataReader()
    r.SetFileName(str(out / "export_7.vti"))
    r.Update()
    _check(r.GetOutput(), result, 7)


def test_xdmf_export_and_bad_run_folder(run, tmp_path, capsys):
    out, _ = run
    assert main(["export", str(out), "--points", "4"]) == 0
    assert (out / "export_4.xdmf").exists() and (out / "export_4.h5").exists()
    assert main(["export", str(tmp_path)]) == 2
    assert "no model.pt" in capsys.readouterr().err
    assert main(["plot", str(out), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_open_run_gives_the_runs_model_and_settings(run):
    """api.open_run: the problem prepared with the run's own settings and a model that predicts
    what the run's Result predicts."""
    out, result = run
    opened = seppinn.api.open_run(out)
    assert opened.prepared.config.model.rank == 4 and opened.stored.where == str(out / "model.pt")
    assert sum("log_scale" in name for name in opened.model.state_dict()) == 7  # RWF: 3 encoders, 3 hidden, output
    for (name, a), b in zip(opened.model.state_dict().items(), result.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.cpu().numpy()), name
    grid = {"x": np.linspace(0, 1, 3), "y": np.linspace(-2, 1, 4), "z": np.linspace(1, 1.5, 2)}
    import torch
    with torch.no_grad():
        u = opened.model["u"]([torch.as_tensor(v, dtype=torch.float32) for v in grid.values()])
    np.testing.assert_allclose(u.squeeze(-1).numpy(), result.evaluate(grid)["u"], rtol=1e-6, atol=1e-6)


def _datasets(path) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("axes", ["x = [0.0, 1.0]\ny = [-2.0, 1.0]\nz = [1.0, 1.5]",
                                  "t = { range = [0.0, 1.0], time = true }\nx = [0.0, 1.0]\ny = [-2.0, 1.0]",
                                  "x = [0.0, 1.0]\nt = { range = [0.0, 1.0], time = true }\ny = [-2.0, 1.0]"],
                         ids=["space", "time first", "time second"])
def test_xdmf_export_slab_by_slab_equals_whole(tmp_path, monkeypatch, axes):
    import seppinn.export

    text = PROBLEM.replace('x = [0.0, 1.0]\ny = [-2.0, 1.0]\nz = [1.0, 1.5]', axes).replace("z", "t" if "t =" in axes else "z")
    result = seppinn.solve(write(tmp_path / "p.toml", text), out=tmp_path / "run", progress=False,
                           overrides={"train.iterations": 3, "model.rank": 4, "model.width": 8})
    seppinn.export.export(tmp_path / "run", "xdmf", 9)
    whole = _datasets(tmp_path / "run/export_9.h5")
    monkeypatch.setattr(seppinn.export, "SLAB_POINTS", 20)  # one row of axis 0 at a time (9 x 9 = 81 > 20)
    seppinn.export.export(tmp_path / "run", "xdmf", 9)
    slabs = _datasets(tmp_path / "run/export_9.h5")
    assert whole.keys() == slabs.keys() and any(k.startswith("vtk/") for k in whole)
    for k in whole:  # the float32 model may round differently on a different batch shape
        np.testing.assert_allclose(whole[k], slabs[k], rtol=1e-6, atol=1e-6, err_msg=k)
        if "reference" in k or k.startswith("axes/"):
            np.testing.assert_array_equal(whole[k], slabs[k], err_msg=k)
    names = list(result.problem.ctx.axes)
    grid = {a: np.linspace(*r, 9) for a, r in zip(names, result.prepared.compiled.ranges)}
    np.testing.assert_allclose(slabs["fields/u"], result.evaluate(grid)["u"], rtol=1e-6, atol=1e-7)


def test_best_state_for_outputs_export_and_the_api(tmp_path):
    """train.outputs_from = "best": solution.h5 and Result.evaluate use the lowest-loss weights
    (best.pt), model.pt keeps the final ones; export --state best and use_state agree."""
    import h5py
    import torch

    from seppinn.cli import main

    # unscaled (u reaches 13.5, which would get a field scale): a run whose loss is not monotone
    path = write(tmp_path / "box.toml", PROBLEM.replace("u = {}", "u = { scale = 1 }"))
    ov = {**PLAIN, "model.body": "mlp", "model.scale": "sqrt_rank", "train.points": 16, "train.iterations": 12,
          "train.eval_every": 1, "model.rank": 4, "model.width": 8,
          "model.activation": "tanh", "train.lr": 0.05, "train.outputs_from": "best", "train.test_points": 5}
    r = seppinn.solve(path, out=tmp_path / "run", progress=False, overrides=ov)
    assert r.state.best.iteration < r.iterations  # a run whose best is not its end
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    final = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    assert not all(torch.equal(best[k], final[k]) for k in best)
    grid = {"x": np.linspace(0, 1, 5), "y": np.linspace(-2, 1, 5), "z": np.linspace(1, 1.5, 5)}
    u_best = r.evaluate(grid)["u"]
    with h5py.File(tmp_path / "run" / "solution.h5") as f:
        np.testing.assert_allclose(f["fields/u"][()], u_best, rtol=1e-6, atol=1e-7)
        assert f.attrs["outputs_from"] == "best"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["outputs_from"] == "best"
    r.use_state("final")
    u_final = r.evaluate(grid)["u"]
    assert np.abs(u_final - u_best).max() > 1e-4
    assert main(["export", str(tmp_path / "run"), "--points", "5", "--state", "best"]) == 0
    assert main(["export", str(tmp_path / "run"), "--points", "5"]) == 0
    with h5py.File(tmp_path / "run" / "export_best_5.h5") as fb, h5py.File(tmp_path / "run" / "export_5.h5") as ff:
        np.testing.assert_allclose(fb["fields/u"][()], u_best, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ff["fields/u"][()], u_final, rtol=1e-6, atol=1e-7)
