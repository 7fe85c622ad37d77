"""Data files: HDF5, .npy and images read into grid arrays with the contract's orientation."""

from __future__ import annotations

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest

import seppinn
from seppinn import DataError
from seppinn.io.data_sources import load_array

from .conftest import write

IMAGE_PROBLEM = """
[problem]
name = "img"
kind = "data"
[axes]
r = [0.0, 1.0]
c = [0.0, 2.0]
[fields]
rgb = { components = 3 }
[data]
rgb = { file = "img.png" }
"""


def test_png_rows_along_first_axis_scaled_to_unit(tmp_path):
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    img[0, :, 0] = 255  # top row red
    img[:, -1, 2] = 51  # last column a little blue
    mpimg.imsave(tmp_path / "img.png", img)
    p = seppinn.load_problem(write(tmp_path / "img.toml", IMAGE_PROBLEM))
    a = load_array(p, p.data["rgb"])
    assert a.shape == (4, 6, 3)  # alpha dropped
    np.testing.assert_allclose(a[0, :, 0], 1.0)  # top row at r = lo
    np.testing.assert_allclose(a[1:, :-1], 0.0)
    np.testing.assert_allclose(a[:, -1, 2], 0.2, atol=1e-6)
    prep = seppinn.prepare(p)
    assert prep.compiled.file_grids == {"rgb": [4, 6]}


def test_hdf5_dataset_by_name_and_single_dataset_default(tmp_path):
    text = IMAGE_PROBLEM.replace('rgb = { components = 3 }', 'u = {}').replace(
        'rgb = { file = "img.png" }', 'u = { file = "obs.h5", dataset = "field" }')
    arr = np.arange(12.0).reshape(3, 4)
    with h5py.File(tmp_path / "obs.h5", "w") as f:
        f["field"] = arr
        f["other"] = arr.T
    p = seppinn.load_problem(write(tmp_path / "p.toml", text))
    np.testing.assert_array_equal(load_array(p, p.data["u"])[..., 0], arr)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["anything"] = arr
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace('"obs.h5", dataset = "field"', '"one.h5"')))
    np.testing.assert_array_equal(load_array(p, p.data["u"])[..., 0], arr)
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace('dataset = "field"', 'dataset = "nope"')))
    with pytest.raises(DataError, match=r"data\.u: '.*obs\.h5' has no dataset 'nope' \(datasets: field, other\)"):
        load_array(p, p.data["u"])
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    p = seppinn.load_problem(write(tmp_path / "p.toml", text.replace('"obs.h5", dataset = "field"', '"s.npy"')))
    with pytest.raises(DataError, match="expected numbers"):
        load_array(p, p.data["u"])


def test_data_problem_fits_a_gridded_file(tmp_path):
    x, y = np.linspace(0, 1, 12), np.linspace(0, 2, 10)
    np.save(tmp_path / "obs.npy", np.cos(2 * x)[:, None] * (1 + y[None, :]))
    text = IMAGE_PROBLEM.replace('rgb = { components = 3 }', 'u = {}').replace(
        'rgb = { file = "img.png" }', 'u = { file = "obs.npy" }') + '[reference]\nu = { file = "obs.npy" }\n'
    r = seppinn.solve(write(tmp_path / "p.toml", text), progress=False,
                      overrides={"train.iterations": 300, "model.rank": 8, "model.width": 32, "model.depth": 3,
                                 "model.activation": "sin", "model.omega0": 3.0, "train.lr": 3e-3,
                                 "train.eval_every": 100})
    assert r.metrics["u"]["rel_l2"] < 0.01
    assert r.trainer.evaluator.test_axes[0].shape == (12,)  # the test grid is the reference file's grid
