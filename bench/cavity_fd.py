"""An independent check of the cavity's reference: the steady lid-driven cavity at Re = 100 by second-
order finite differences (stream function and vorticity, Thom's wall vorticity, explicit pseudo-time
to a steady state, the Poisson equation by a sine transform), against Ghia, Ghia & Shin's centre
lines (problems/data/ghia_re100.csv), with the exact lid (u = 1 up to the corners) and with
problems/cavity2d.toml's regularised lid u = 1 - cosh(C (x - 1/2)) / cosh(C / 2).

    python bench/cavity_fd.py [--n 64 128] [--c 50]

Prints, per grid and lid, the largest deviation from Ghia's table and the deviation at each of its
points; then the change the regularised lid makes on the finest grid, and the Richardson estimate of
the finest grid's own error (second order: (f_N - f_{N/2}) / 3). numpy only; N = 128 takes about
a minute on one core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RE = 100.0


def ghia_rows() -> np.ndarray:
    """Ghia et al.'s Re = 100 table: rows (line "u" or "v", coordinate, value)."""
    return np.genfromtxt(ROOT / "problems/data/ghia_re100.csv", delimiter=",", comments="#", skip_header=4,
                         dtype=None, encoding="utf-8")


def exact_lid(s: np.ndarray) -> np.ndarray:
    """u = 1 on the whole lid (the corners are wall nodes)."""
    return np.ones_like(s)


def richardson(coarse: np.ndarray, fine: np.ndarray, ratio: float) -> np.ndarray:
    """The fine grid's values with its second-order error estimate removed (grids ``ratio`` apart)."""
    return fine + (fine - coarse) / (ratio**2 - 1)


def dst1(a: np.ndarray, axis: int) -> np.ndarray:
    """The type-I sine transform along ``axis``: X_k = sum_j a_j sin(pi j k / n), j, k = 1 .. n - 1."""
    a = np.moveaxis(a, axis, -1)
    zero = np.zeros(a.shape[:-1] + (1,))
    odd = np.concatenate([zero, a, zero, -a[..., ::-1]], axis=-1)  # length 2n, odd about 0 and n
    out = -np.fft.rfft(odd, axis=-1).imag[..., 1:a.shape[-1] + 1] / 2
    return np.moveaxis(out, -1, axis)


def steady_cavity(n: int, lid: Callable[[np.ndarray], np.ndarray], tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """The stream function psi[i, j] at (x_i, y_j) on the (n + 1)^2 grid of [0, 1]^2 (u = psi_y,
    v = -psi_x), with u = lid(x) on y = 1 at the interior lid nodes; returns (x, psi)."""
    h = 1.0 / n
    x = np.linspace(0.0, 1.0, n + 1)
    lid_u = lid(x[1:-1])
    psi = np.zeros((n + 1, n + 1))
    w = np.zeros((n + 1, n + 1))  # vorticity v_x - u_y = -lap psi
    lam = (2 * np.cos(np.pi * np.arange(1, n) / n) - 2) / h**2
    eig = lam[:, None] + lam[None, :]
    dt = min(0.2 * h * h * RE, 0.5 * h)  # explicit diffusion and advection limits
    for it in range(10**6):
        rhs = dst1(dst1(-w[1:-1, 1:-1], 0), 1)
        psi[1:-1, 1:-1] = dst1(dst1(rhs / eig, 0), 1) * (2 / n) ** 2
        w[1:-1, -1] = -2 * psi[1:-1, -2] / h**2 - 2 * lid_u / h  # Thom, the moving lid
        w[1:-1, 0] = -2 * psi[1:-1, 1] / h**2
        w[0, 1:-1] = -2 * psi[1, 1:-1] / h**2
        w[-1, 1:-1] = -2 * psi[-2, 1:-1] / h**2
        u = (psi[1:-1, 2:] - psi[1:-1, :-2]) / (2 * h)
        v = -(psi[2:, 1:-1] - psi[:-2, 1:-1]) / (2 * h)
        wx = (w[2:, 1:-1] - w[:-2, 1:-1]) / (2 * h)
        wy = (w[1:-1, 2:] - w[1:-1, :-2]) / (2 * h)
        lap = (w[2:, 1:-1] + w[:-2, 1:-1] + w[1:-1, 2:] + w[1:-1, :-2] - 4 * w[1:-1, 1:-1]) / h**2
        dw = -u * wx - v * wy + lap / RE
        w[1:-1, 1:-1] += dt * dw
        if it % 1000 == 0 and np.abs(dw).max() < tol:
            break
    return x, psi


def at_ghia(x: np.ndarray, psi: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """u(0.5, y) and v(x, 0.5) at Ghia's points (second-order differences, linear interpolation)."""
    n = len(x) - 1
    u = np.gradient(psi[n // 2, :], x, edge_order=2)
    v = -np.gradient(psi[:, n // 2], x, edge_order=2)
    return np.array([np.interp(c, x, u if line == "u" else v) for line, c, _ in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[64, 128], help="grid cells per side (even)")
    p.add_argument("--c", type=float, default=50.0, help="the regularised lid's C (problems/cavity2d.toml)")
    args = p.parse_args()
    rows = ghia_rows()
    ghia = np.array([value for *_, value in rows])
    lids = {"exact": exact_lid,
            f"C = {args.c:g}": lambda s: 1 - np.cosh(args.c * (s - 0.5)) / np.cosh(args.c / 2)}
    found: dict[tuple[str, int], np.ndarray] = {}
    labels = " ".join(f"{line}({c:.4f})" for line, c, _ in rows)
    print(f"deviations from Ghia at: {labels}")
    for name, lid in lids.items():
        for n in args.n:
            start = time.perf_counter()
            found[name, n] = at_ghia(*steady_cavity(n, lid), rows)
            dev = found[name, n] - ghia
            print(f"lid {name}, N = {n}: largest |FD - Ghia| {np.abs(dev).max():.4f} "
                  f"({time.perf_counter() - start:.0f} s)\n  " + " ".join(f"{d:+.4f}" for d in dev), flush=True)
    fine = max(args.n)
    reg = found[f"C = {args.c:g}", fine] - found["exact", fine]
    print(f"regularised minus exact lid, N = {fine}: largest |difference| {np.abs(reg).max():.4f}")
    if len(args.n) > 1:
        coarse = sorted(args.n)[-2]
        converged = richardson(found["exact", coarse], found["exact", fine], fine / coarse)
        print(f"N = {fine}'s own error (Richardson, from N = {coarse}): largest "
              f"{np.abs(converged - found['exact', fine]).max():.4f}; "
              f"extrapolated largest |FD - Ghia| {np.abs(converged - ghia).max():.4f}")


if __name__ == "__main__":
    main()
