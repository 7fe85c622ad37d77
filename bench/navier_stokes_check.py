"""Navier–Stokes (problems/navier_stokes2d.toml): is the built-in reference a solution, and does the
trained model drift in its mean velocity (the one freedom the velocity–vorticity form leaves)?

    python bench/navier_stokes_check.py [--reference-only] [--set KEY=VALUE ...]

Prints the reference's residuals (spectral derivatives in x, y on a 64^2 grid, a second-order
finite difference in t at dt 5e-3), then solves the file (with ``--set``) and prints the rel L2 of
u, v, w and the mean of u and v over the box at six times, beside the reference's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import seppinn
from seppinn.api import prepare
from seppinn.compile.lowering import evaluate_numpy
from seppinn.reference_1d import wavenumbers
from seppinn.reference_solvers import REFERENCE_SOLVERS

PROBLEM = Path(__file__).resolve().parent.parent / "problems" / "navier_stokes2d.toml"


def reference_residuals(n: int = 64) -> None:
    problem = prepare(PROBLEM, None, {"train.iterations": 1}).problem
    t = np.linspace(0.0, 1.0, 201)
    x = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    u, v, w = (REFERENCE_SOLVERS[name][0](problem, [t, x, x], evaluate_numpy)
               for name in ("vorticity2d_u", "vorticity2d_v", "vorticity2d"))
    k = wavenumbers(n, 2 * np.pi)

    def d(f: np.ndarray, axis: int) -> np.ndarray:
        kk = k.reshape([-1 if a == axis else 1 for a in range(3)])
        return np.real(np.fft.ifft(1j * kk * np.fft.fft(f, axis=axis), axis=axis))

    w_t = np.gradient(w, t, axis=0, edge_order=2)
    nu = float(problem.parameter_values["nu"])
    vort = w_t + u * d(w, 1) + v * d(w, 2) - nu * (d(d(w, 1), 1) + d(d(w, 2), 2))
    print(f"reference: vorticity residual {np.abs(vort[2:-2]).max():.1e} (max |w_t| {np.abs(w_t).max():.2f}), "
          f"curl {np.abs(w - (d(v, 1) - d(u, 2))).max():.1e}, continuity {np.abs(d(u, 1) + d(v, 2)).max():.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-only", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    reference_residuals()
    if args.reference_only:
        return
    start = time.perf_counter()
    r = seppinn.solve(PROBLEM, None, args.set, progress=False)
    ev = r.trainer.evaluator
    print(f"solved in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{f} {m['rel_l2']:.3e}" for f, m in ev.metrics().items()))
    pred = ev.predict(ev.test_axes)
    rows = np.linspace(0, len(ev.test_axes[0]) - 1, 6).astype(int)
    print("t:       " + " ".join(f"{ev.test_axes[0][i]:+.3f}" for i in rows))
    for f in ("u", "v"):
        for label, a in (("model", pred[f]), ("ref", ev.reference[f])):
            mean = a[..., 0].mean(dim=(1, 2)).numpy()
            print(f"mean {f} {label:>5}: " + " ".join(f"{mean[i]:+.3f}" for i in rows))


if __name__ == "__main__":
    main()
