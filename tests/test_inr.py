"""Data-only problems: image loaders, PSNR/IoU, inpainting masks, scattered observations
(pointwise evaluation and SepPGD's non-grid form), the shipped sample data, bad data files."""

from __future__ import annotations

import math

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from PIL import Image

import seppinn
from seppinn import sample_data
from seppinn.cli import main
from seppinn.io.data_sources import load_array, load_points
from seppinn.train.metrics import MetricSpec, field_metrics, psnr

from .conftest import ROOT, write
from .test_seppgd import flat_grad, jacobian, small_overrides, trainer_for

RGB = """
[problem]
name = "img"
kind = "data"
[axes]
r = [0.0, 1.0]
c = [0.0, 1.0]
[fields]
rgb = { components = 3 }
[data]
rgb = { file = "IMG" }
[reference]
rgb = { file = "IMG" }
"""


def rgb_problem(tmp_path, name: str, extra: str = "") -> seppinn.Problem:
    text = RGB.replace('rgb = { file = "IMG" }\n[reference]', f'rgb = {{ file = "{name}"{extra} }}\n[reference]')
    return seppinn.load_problem(write(tmp_path / "p.toml", text.replace("IMG", name)))


# ------------------------------------------------------------------ loaders
def test_jpeg_8bit_channel_order_and_scaling(tmp_path):
    img = np.zeros((16, 24, 3), dtype=np.uint8)
    img[:8, :, 0] = 255  # top half red
    img[8:, :, 2] = 128  # bottom half half-blue
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=100)
    a = load_array(p := rgb_problem(tmp_path, "a.jpg"), p.data["rgb"])
    assert a.shape == (16, 24, 3) and a.dtype == np.float64
    np.testing.assert_allclose(a[2, 5], [1.0, 0.0, 0.0], atol=3 / 255)  # row 0 = top of the file
    np.testing.assert_allclose(a[13, 5], [0.0, 0.0, 128 / 255], atol=3 / 255)


def test_16bit_png_scaled_by_65535(tmp_path):
    gray = np.array([[0, 1000, 65535], [32768, 65534, 7]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    text = RGB.replace("rgb = { components = 3 }", "g = {}").replace("rgb = { file", "g = { file")
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace("IMG", "g.png")))
    np.testing.assert_allclose(load_array(p, p.data["g"])[..., 0], gray / 65535.0, rtol=0, atol=1e-7)


def test_float_images_kept_as_stored_and_grey_to_one_component(tmp_path):
    arr = np.linspace(-0.5, 2.0, 20).reshape(4, 5)
    np.save(tmp_path / "f.npy", arr)
    text = RGB.replace("rgb = { components = 3 }", "u = {}").replace("rgb = { file", "u = { file")
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace("IMG", "f.npy")))
    np.testing.assert_array_equal(load_array(p, p.data["u"])[..., 0], arr)
    img = np.zeros((3, 4, 3), dtype=np.uint8)
    img[..., 1] = 255  # a green image read into a one-component field: the channel mean
    mpimg.imsave(tmp_path / "g.png", img)
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace("IMG", "g.png")))
    np.testing.assert_allclose(load_array(p, p.data["u"])[..., 0], 1 / 3)


# ------------------------------------------------------------------ metrics
def test_psnr_and_iou_hand_values():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1e-4, peak=2.0) == pytest.approx(10 * math.log10(4e4))
    assert psnr(0.0) == math.inf
    pred = torch.tensor([0.9, 0.6, 0.2, 0.7, 0.1])
    ref = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    occupancy = MetricSpec(iou=True)
    assert field_metrics(pred, ref, occupancy)["iou"] == pytest.approx(2 / 4)  # {0, 1, 3} vs {0, 2, 3}: 2 of 4
    assert field_metrics(torch.zeros(3), torch.zeros(3), occupancy)["iou"] == 1.0
    pred = torch.tensor([[0.5], [1.2], [0.0], [0.25]], dtype=torch.float64)
    ref = torch.tensor([[0.5], [1.0], [0.5], [0.0]], dtype=torch.float64)
    held = torch.tensor([[False], [True], [True], [False]])
    m = field_metrics(pred, ref, MetricSpec(psnr=True, heldout=held))
    assert m["mse"] == pytest.approx((0.04 + 0.25 + 0.0625) / 4)
    assert m["psnr"] == pytest.approx(10 * math.log10(4 / (0.25 + 0.0625)))  # clipped: 1.2 -> 1
    assert m["rel_l2_heldout"] == pytest.approx(math.sqrt(0.04 + 0.25) / math.sqrt(1.25))
    assert m["psnr_heldout"] == pytest.approx(10 * math.log10(2 / 0.25))


# ------------------------------------------------------------------ fitting images
SMALL_IMAGE = {"model.rank": 24, "model.width": 64, "model.depth": 3, "model.activation": "sin",
               "train.lr": 3e-3, "train.iterations": 300, "train.eval_every": 100}


def test_small_image_fit_exceeds_psnr_and_writes_the_png(tmp_path):
    Image.fromarray(sample_data.photo(32)).save(tmp_path / "photo.png")
    result = seppinn.solve(rgb_problem(tmp_path, "photo.png"), overrides=SMALL_IMAGE, out=tmp_path / "run",
                           progress=False)
    m = result.metrics["rgb"]
    assert m["psnr"] > 30.0, m  # measured 33.3 dB (1e-3: 26.0, with SepPGD k = 8: 31.6)
    with h5py.File(tmp_path / "run/solution.h5") as f:
        fitted = f["fields/rgb"][()]
        assert f["history/psnr/rgb"][-1] == pytest.approx(m["psnr"])
    png = mpimg.imread(tmp_path / "run/rgb.png")[..., :3]
    np.testing.assert_allclose(png, np.clip(fitted, 0, 1), atol=0.5 / 255 + 1e-6)


def test_inpainting_mask_from_seed_and_heldout_metrics(tmp_path):
    Image.fromarray(sample_data.photo(32)).save(tmp_path / "photo.png")
    p = rgb_problem(tmp_path, "photo.png", ", keep = 0.7, seed = 3")
    prep = seppinn.prepare(p, overrides=SMALL_IMAGE)
    mask = prep.compiled.terms[0].parts[0].mask[..., 0]
    np.testing.assert_array_equal(mask, np.random.default_rng(3).random((32, 32)) < 0.7)
    assert abs(mask.mean() - 0.7) < 0.05
    again = seppinn.prepare(rgb_problem(tmp_path, "photo.png", ", keep = 0.7, seed = 3"), overrides=SMALL_IMAGE)
    np.testing.assert_array_equal(again.compiled.terms[0].parts[0].mask[..., 0], mask)
    result = seppinn.run(prep, tmp_path / "run", progress=False)
    with h5py.File(tmp_path / "run/solution.h5") as f:
        err = f["error/rgb"][()]
        fitted, ref = f["fields/rgb"][()], f["reference/rgb"][()]
    m = result.metrics["rgb"]
    assert m["mse_heldout"] == pytest.approx(np.mean(err[~mask] ** 2), rel=1e-9)
    assert m["psnr_heldout"] == pytest.approx(psnr(float(np.mean((np.clip(fitted, 0, 1) - ref)[~mask] ** 2))))
    assert m["psnr_heldout"] < m["psnr"]  # the held-out pixels were never fitted


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_preconditioned_inpainting_never_touches_held_out_pixels(tmp_path, kind, f64):
    img = sample_data.photo(16).astype(np.float64) / 255
    np.save(tmp_path / "a.npy", img)
    changed = img.copy()
    mask = np.random.default_rng(1).random((16, 16)) < 0.7
    changed[~mask] = 5.0
    np.save(tmp_path / "b.npy", changed)
    grads = []
    for name in ("a.npy", "b.npy"):
        p = rgb_problem(tmp_path, name, ", keep = 0.7, seed = 1")
        p.reference.clear()
        torch.manual_seed(0)
        tr = trainer_for(p, **{"model.kind": kind, "precondition.k": 5})
        grads.append(flat_grad(tr.losses()["data"], list(tr.model.parameters())))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


# ------------------------------------------------------------------ scattered observations
POINTS = """
[problem]
name = "pts"
kind = "data"
[axes]
x = [0.0, 1.0]
y = [-1.0, 2.0]
[fields]
u = {}
[data]
u = { points = "obs.csv" }
"""


def write_csv(path, columns: dict[str, np.ndarray]) -> None:
    np.savetxt(path, np.column_stack(list(columns.values())), delimiter=",", header=",".join(columns), comments="")


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
def test_scattered_points_on_the_grid_give_the_grid_loss(tmp_path, kind, f64):
    x, y = np.linspace(0, 1, 5), np.linspace(-1, 2, 6)
    X, Y = np.meshgrid(x, y, indexing="ij")
    U = np.sin(3 * X) * np.cos(Y)
    write_csv(tmp_path / "obs.csv", {"y": Y.ravel(), "u": U.ravel(), "x": X.ravel()})  # any column order
    np.save(tmp_path / "obs.npy", U)
    losses = []
    for spec in ('{ points = "obs.csv" }', '{ file = "obs.npy" }'):
        p = seppinn.load_problem(write(tmp_path / "p.toml", POINTS.replace('{ points = "obs.csv" }', spec)))
        torch.manual_seed(0)
        tr = trainer_for(p, **{"model.kind": kind, "precondition.method": "none"})
        loss = tr.losses()["data"]
        losses.append((loss.item(), flat_grad(loss, list(tr.model.parameters()))))
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-12)
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("scale", ["normalized", "paper"])
def test_scattered_seppgd_is_the_non_grid_form(tmp_path, scale, f64):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, 40), rng.uniform(-1, 2, 40)
    u = np.sin(3 * x) + np.cos(2 * y)
    write_csv(tmp_path / "obs.csv", {"x": x, "y": y, "u": u})
    p = seppinn.load_problem(write(tmp_path / "p.toml", POINTS))
    tr = trainer_for(p, **{"precondition.k": 6, "precondition.scale": scale, "train.weights": {"data": 0.5}})
    params = list(tr.model.parameters())
    grad = flat_grad(tr.losses()["data"], params)
    Z = tr.evaluator.predict_points([x, y])["u"][:, 0]  # pointwise values, no grid
    with torch.enable_grad():
        mats = [j[0] for j in tr.model["u"].all_jets([torch.as_tensor(x), torch.as_tensor(y)], 0)]
        Zg = tr.model["u"].contract_points(mats)[:, 0]
    torch.testing.assert_close(Zg.detach(), Z)
    r = (Zg - torch.as_tensor(u)).detach()
    S = sum(tr.preconditioners.factors[(0, 0)][d].dense() for d in range(2))  # Appendix A.2: S~ = c sum_d S_d (N x N)
    c = 0.5 if scale == "normalized" else 1.0
    want = (2 * 0.5 / len(r)) * jacobian(Zg, params).T @ (c * S @ r)
    assert ((grad - want).norm() / want.norm()).item() <= 1e-10
    assert tr.preconditioners.factors[(0, 0)][0].dense().shape == (40, 40)


def test_scattered_points_hdf5_and_sensor_problem(tmp_path):
    rng = np.random.default_rng(1)
    cols = {"x": rng.uniform(0, 1, 30), "y": rng.uniform(-1, 2, 30)}
    cols["u"] = cols["x"] * cols["y"]
    with h5py.File(tmp_path / "obs.h5", "w") as f:
        for k, v in cols.items():
            f[f"grp/{k}"] = v
    p = seppinn.load_problem(write(tmp_path / "p.toml", POINTS.replace('{ points = "obs.csv" }',
                                                                     '{ points = "obs.h5", dataset = "grp" }')))
    obs = load_points(p, p.data["u"])
    np.testing.assert_array_equal(obs, np.column_stack([cols["x"], cols["y"], cols["u"]]))
    # the shipped sensor problem: PDE + 2,000 noisy readings, no boundary conditions
    r = seppinn.solve(ROOT / "problems/sensors.toml", "quick", {"train.iterations": 300}, progress=False)
    assert r.metrics["u"]["rel_l2"] < 0.1  # measured 0.044 (1,500 iterations: 0.018)


# ------------------------------------------------------------------ shipped data and ParaView
def test_sample_data_reproduces_the_shipped_files():
    data = ROOT / "problems" / "data"
    np.testing.assert_array_equal(mpimg.imread(data / "photo_256.png")[..., :3],
                                  sample_data.photo(256).astype(np.float32) / 255)
    with h5py.File(data / "occupancy_128.h5") as f:
        np.testing.assert_array_equal(f["occupancy"][()], sample_data.occupancy(128))
    np.testing.assert_allclose(np.loadtxt(data / "sensors.csv", delimiter=",", skiprows=1), sample_data.sensors(),
                               rtol=1e-8)
    occ = sample_data.occupancy(64)
    assert 0.01 < occ.mean() < 0.1


def test_occupancy_iou_and_paraview_contour(tmp_path):
    from vtkmodules import vtkIOXdmf2 as vtk_xdmf
    from vtkmodules.vtkFiltersCore import vtkContourFilter
    from vtkmodules.vtkFiltersGeometry import vtkGeometryFilter

    c = np.linspace(-1, 1, 12)
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    ball = (X**2 + Y**2 + Z**2 < 0.5**2).astype(np.uint8)
    np.save(tmp_path / "ball.npy", ball)
    text = (ROOT / "problems/occupancy.toml").read_text().replace(
        '{ file = "data/occupancy_128.h5", dataset = "occupancy" }', '{ file = "ball.npy" }')
    r = seppinn.solve(write(tmp_path / "o.toml", text), "inr-occupancy",
                      {"train.iterations": 10, "model.rank": 8, "model.width": 16}, out=tmp_path / "run", progress=False)
    assert "iou" in r.metrics["occupancy"] and 0.0 <= r.metrics["occupancy"]["iou"] <= 1.0
    reader = vtk_xdmf.vtkXdmfReader()
    reader.SetFileName(str(tmp_path / "run/solution.xdmf"))
    reader.Update()
    geometry = vtkGeometryFilter()  # ParaView's Contour on the reference volume at 0.5
    contour = vtkContourFilter()
    contour.SetInputConnection(reader.GetOutputPort())
    contour.SetInputArrayToProcess(0, 0, 0, 0, "occupancy_reference")
    contour.SetValue(0, 0.5)
    geometry.SetInputConnection(contour.GetOutputPort())
    geometry.Update()
    out = geometry.GetOutput()
    assert out.GetNumberOfPoints() > 0
    lo, hi = out.GetBounds()[0:2]
    assert -0.7 < lo < -0.4 and 0.4 < hi < 0.7  # the ball of radius 0.5, sampled on 12^3


# ------------------------------------------------------------------ bad data: one line, exit 2
BAD_POINTS = [
    ("x,y\n0.5,0.5\n", "has columns x, y; expected x, y, u (missing u)"),
    ("x,y,u,v\n0.5,0.5,1,2\n", "(unknown v)"),
    ("x,y,u\n0.5,0.5,nan\n", "observation 1 has a non-finite value"),
    ("x,y,u\n0.5,0.5,1\n1.5,0.0,1\n", "observation 2 has x = 1.5, outside [0, 1]"),
    ("x,y,u\n0.5,zero,1\n", "cannot read"),
    ("x,y,u\n", "holds no observations"),
]


@pytest.mark.parametrize("content, message", BAD_POINTS)
def test_bad_points_files(tmp_path, capsys, content, message):
    (tmp_path / "obs.csv").write_text(content)
    path = write(tmp_path / "p.toml", POINTS)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}: data.u: ") and message in err[0], err


BAD_GRIDDED = [
    (lambda d: (d / "v.npy").write_bytes(b"\x93NUMPY garbage"), "v.npy", "cannot read"),
    (lambda d: np.save(d / "v.npy", np.zeros((4, 4))), "v.npy", "has shape (4, 4); field 'occupancy' on 3 axes needs"),
    (lambda d: np.save(d / "v.npy", np.full((3, 3, 3), np.inf)), "v.npy", "27 non-finite values"),
    (lambda d: (d / "v.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40), "v.h5", "cannot read"),
    (lambda d: None, "missing.h5", "not found"),
    (lambda d: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "v.png"), "v.png",
     "an image needs a problem with 2 axes, this one has 3"),
]


@pytest.mark.parametrize("make, name, message", BAD_GRIDDED)
def test_bad_volume_files(tmp_path, capsys, make, name, message):
    make(tmp_path)
    text = (ROOT / "problems/occupancy.toml").read_text().replace(
        '{ file = "data/occupancy_128.h5", dataset = "occupancy" }', f'{{ file = "{name}" }}')
    path = write(tmp_path / "o.toml", text)
    out = tmp_path / "out"
    assert main(["solve", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"{path}: data.occupancy: "), err
    assert not out.exists()


def test_scattered_seppgd_refused_beyond_its_size(tmp_path):
    rng = np.random.default_rng(0)
    n = 4097
    write_csv(tmp_path / "obs.csv", {"x": rng.uniform(0, 1, n), "y": rng.uniform(-1, 2, n), "u": np.zeros(n)})
    p = seppinn.load_problem(write(tmp_path / "p.toml", POINTS))
    with pytest.raises(seppinn.SolverConfigError, match="4097 scattered points; .* limited to 4096 points"):
        seppinn.prepare(p, overrides=small_overrides())
