"""Cross-check of the built-in nonlinear-diffusion reference against the one SPINN ships
(../shared/reference/diffusion3d_spinn.npz: u (101, 101, 101) on t, x, y = linspace grids).

    python bench/diffusion_reference.py [--npz PATH] [--refine 1 2]

Prints the relative L2 difference over the whole 101^3 grid for each refinement (the FD grid
has refine * 100 + 1 points per spatial axis) and at t = 0 and t > 0 separately.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from seppinn import load_problem
from seppinn.compile.lowering import evaluate_numpy
from seppinn.reference_solvers import REFERENCE_SOLVERS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", default=str(ROOT.parent / "shared/reference/diffusion3d_spinn.npz"))
    ap.add_argument("--refine", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    ref = np.load(args.npz)
    t, x, y, u = ref["t"], ref["x"], ref["y"], ref["u"]
    problem = load_problem(ROOT / "problems/diffusion3d.toml")
    solve = REFERENCE_SOLVERS["nonlinear_diffusion2d"][0]
    os.environ["SEPPINN_CACHE"] = tempfile.mkdtemp()  # measure the solve, not the cache
    for refine in args.refine:
        start = time.perf_counter()
        ours = solve(problem, [t, x, y], evaluate_numpy, refine=refine)
        secs = time.perf_counter() - start
        rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
        print(f"refine {refine} ({refine * (len(x) - 1) + 1}^2 FD grid, {secs:.1f} s): rel L2 vs SPINN "
              f"{rel(ours, u):.3e} (t = 0: {rel(ours[0], u[0]):.3e}, t > 0: {rel(ours[1:], u[1:]):.3e})")


if __name__ == "__main__":
    main()
