"""The data files the shipped INR problems use, made reproducibly (nothing is downloaded).

``python -m seppinn.sample_data DIR [--photo-size N] [--volume-size N]`` writes

- ``photo_<N>.png``: matplotlib's bundled sample photograph (Grace Hopper, 512 x 600, a US Navy
  photograph in the public domain), its central 512 x 512 square, box-averaged down to N x N
  (N divides 512), 8-bit RGB;
- ``occupancy_<N>.h5`` (dataset ``occupancy``, uint8, gzip): a synthetic solid on [-1, 1]^3 sampled
  at linspace(-1, 1, N) per axis, 1 inside and 0 outside. The solid is the union of a torus (a through-hole),
  a thin torus linked through it (tube radius 0.06: about 2 voxels at N = 64), a thin rod (radius
  0.045) and a hollow sphere shell (thickness 0.08) pierced by a cylindrical hole: thin
  features, holes and a cavity, which an occupancy fit gets wrong first;
- ``sensors.csv``: 2,000 noisy readings (x, y, u) of u = sin(pi x) cosh(y) + x y / 2 at uniform
  random points of [-1, 1]^2 (noise N(0, 0.01^2), seed 0), for ``problems/sensors.toml``;
- ``heat_readings.csv``: 200 readings (t, x, u) of the heat equation u_t = k u_xx on [0, 1]^2 with
  k = HEAT_K = 0.3, u = sin(pi x) exp(-k pi^2 t) + sin(2 pi x) exp(-4 k pi^2 t) / 2, at uniform random
  points, with 1 % relative noise (N(0, (0.01 |u|)^2), seed 0), for ``problems/inverse_heat1d.toml``.

The shipped ``problems/data/`` files were made with the defaults (``--photo-size 256 --volume-size 128``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def photo(size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: the sample photograph's central square, box-averaged to ``size``."""
    import matplotlib
    import matplotlib.image as mpimg

    if size < 1 or 512 % size:
        raise ValueError(f"size must divide 512, got {size}")
    src = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    img = np.asarray(mpimg.imread(src), dtype=np.float64)  # (600, 512, 3)
    top = (img.shape[0] - 512) // 2
    square = img[top: top + 512, :512, :3]
    f = 512 // size
    small = square.reshape(size, f, size, f, 3).mean(axis=(1, 3))
    return np.asarray(np.clip(np.rint(small), 0, 255), dtype=np.uint8)


def _torus(p: np.ndarray, major: float, minor: float) -> np.ndarray:
    """Signed distance of a torus around the z axis through the origin; p (..., 3)."""
    q = np.hypot(p[..., 0], p[..., 1]) - major
    return np.asarray(np.hypot(q, p[..., 2]) - minor)


def occupancy(size: int = 128) -> np.ndarray:
    """(size, size, size) uint8 occupancy of the synthetic solid, axes (x, y, z), points linspace(-1, 1, size)."""
    c = np.linspace(-1.0, 1.0, size)  # where seppinn puts a file's grid: linspace(lo, hi, n)
    p = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)
    ring = _torus(p - [0.0, -0.15, 0.0], 0.45, 0.14)
    # a thin torus in the x-z plane, linked through the first one
    q = (p - [0.45, -0.15, 0.0])[..., [0, 2, 1]]
    link = _torus(q, 0.32, 0.06)
    rod = np.maximum(np.hypot(p[..., 0] + 0.6, p[..., 1] - 0.6) - 0.045, np.abs(p[..., 2]) - 0.8)
    r = np.linalg.norm(p - [-0.35, 0.45, 0.35], axis=-1)
    shell = np.abs(r - 0.3) - 0.04
    hole = 0.12 - np.hypot(p[..., 0] + 0.35, p[..., 2] - 0.35)  # drilled along y
    shell = np.maximum(shell, hole)
    sdf = np.minimum.reduce([ring, link, rod, shell])
    return np.asarray(sdf < 0, dtype=np.uint8)


SENSOR_FIELD = "sin(pi*x)*cosh(y) + x*y/2"


def sensors(n: int = 2000, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """(n, 3) rows (x, y, u): noisy samples of SENSOR_FIELD at uniform random points of [-1, 1]^2."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-1.0, 1.0, size=(n, 2))
    u = np.sin(np.pi * xy[:, 0]) * np.cosh(xy[:, 1]) + xy[:, 0] * xy[:, 1] / 2
    return np.column_stack([xy, u + noise * rng.standard_normal(n)])


def write_sensors(path: Path) -> None:
    np.savetxt(path, sensors(), delimiter=",", header="x,y,u", comments="", fmt="%.9g")


HEAT_K = 0.3
HEAT_FIELD = "sin(pi*x)*exp(-k*pi**2*t) + sin(2*pi*x)*exp(-4*k*pi**2*t)/2"


def heat_readings(n: int = 200, noise: float = 0.01, k: float = HEAT_K, seed: int = 0) -> np.ndarray:
    """(n, 3) rows (t, x, u): HEAT_FIELD at uniform random points of [0, 1]^2, relative noise ``noise``."""
    rng = np.random.default_rng(seed)
    tx = rng.uniform(0.0, 1.0, size=(n, 2))
    t, x = tx[:, 0], tx[:, 1]
    u = np.sin(np.pi * x) * np.exp(-k * np.pi**2 * t) + np.sin(2 * np.pi * x) * np.exp(-4 * k * np.pi**2 * t) / 2
    return np.column_stack([tx, u * (1 + noise * rng.standard_normal(n))])


def write_heat_readings(path: Path) -> None:
    np.savetxt(path, heat_readings(), delimiter=",", header="t,x,u", comments="", fmt="%.9g")


def write_photo(path: Path, size: int) -> None:
    import matplotlib.image as mpimg

    mpimg.imsave(path, photo(size), format="png")


def write_occupancy(path: Path, size: int) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("occupancy", data=occupancy(size), compression="gzip", compression_opts=9)
        f.attrs["description"] = "synthetic solid (seppinn.sample_data.occupancy): 1 inside, 0 outside"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seppinn.sample_data", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--photo-size", type=int, default=256)
    ap.add_argument("--volume-size", type=int, default=128)
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    write_photo(args.dir / f"photo_{args.photo_size}.png", args.photo_size)
    write_occupancy(args.dir / f"occupancy_{args.volume_size}.h5", args.volume_size)
    write_sensors(args.dir / "sensors.csv")
    write_heat_readings(args.dir / "heat_readings.csv")
    print(f"wrote {args.dir}/photo_{args.photo_size}.png, {args.dir}/occupancy_{args.volume_size}.h5, "
          f"{args.dir}/sensors.csv, {args.dir}/heat_readings.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
