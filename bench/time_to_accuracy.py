"""Time to a target relative L2 error on SPINN's Helmholtz benchmark (issue 8: SPINN-JAX needs
4 min 06 s on this 2-core machine type for its 50k iterations, reaching rel L2 0.0216).

    python bench/time_to_accuracy.py [--points 64] [--target 0.0216] [--iterations 20000]
                                     [--grid-free auto] [--compile true] [--sampling random]

Runs `seppinn solve problems/helmholtz3d.toml --solver spinn` through the API (64 random points per
axis resampled every 100 iterations, 100^3 test grid, evaluated every --eval-every iterations) and
prints the first evaluation at or below the target: iteration, training seconds (evaluations
excluded, compilation included) and wall seconds of the whole solve.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import seppinn

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--target", type=float, default=0.0216)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--grid-free", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--compile", default="true", choices=["auto", "true", "false"])
    ap.add_argument("--sampling", default="random", choices=["random", "grid", "gauss"],
                    help="train.sampling (random: the spinn preset's, resampled every 100 iterations)")
    args = ap.parse_args()
    flag = {"auto": "auto", "true": True, "false": False}
    t = time.perf_counter()
    r = seppinn.solve(ROOT / "problems/helmholtz3d.toml", "spinn", {
        "train.points": args.points, "train.iterations": args.iterations, "train.eval_every": args.eval_every,
        "train.grid_free": flag[args.grid_free], "train.compile": flag[args.compile],
        "train.sampling": args.sampling}, progress=False)
    wall = time.perf_counter() - t
    h = r.history
    err = h["rel_l2/u"]
    hit = np.nonzero(err <= args.target)[0]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"helmholtz3d, spinn preset, {args.points} points/axis, grid_free={args.grid_free}, compile={args.compile}, "
          f"sampling={args.sampling}")
    if len(hit):
        i = hit[0]
        print(f"rel L2 {err[i]:.4g} <= {args.target} at iteration {int(h['iteration'][i])}, "
              f"{h['seconds'][i]:.1f} s of training (compilation included)")
    else:
        print(f"target {args.target} not reached in {args.iterations} iterations (best {err.min():.4g})")
    print(f"end: rel L2 {err[-1]:.4g} after {int(h['iteration'][-1])} iterations, {h['seconds'][-1]:.1f} s of training "
          f"({1000 * h['seconds'][-1] / max(int(h['iteration'][-1]), 1):.2f} ms/iteration); whole solve {wall:.1f} s")


if __name__ == "__main__":
    main()
