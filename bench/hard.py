"""The hard PINN benchmarks (issue 20) with their shipped settings: relative L2 error (final and at
the lowest training loss; the worst field) against the built-in references, wall seconds, and the
published anchor. The cavity has no reference field: its error is the largest deviation from Ghia
et al.'s centre-line velocities (problems/data/ghia_re100.csv) in units of the lid speed.

    python bench/hard.py [--problems burgers1d allen_cahn1d ...] [--seeds 0 1 2] [--set KEY=VALUE ...]

Each row is ``seppinn solve problems/<name>.toml`` with no flags but the seed (and ``--set``),
one process; the table goes to stdout in Markdown (bench/RESULTS.md, README).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import seppinn

ROOT = Path(__file__).resolve().parent.parent
# name -> (anchor, target); rel L2 over the fields with references
ROWS = {
    "burgers1d": ("Raissi et al. 2019 PINN 6.7e-4", 5e-4),
    "allen_cahn1d": ("jaxpi 5.37e-5, PirateNet 2.24e-5", 1e-3),
    "kdv1d": ("jaxpi 1.96e-3, PirateNet 4.27e-4", 1e-3),
    "navier_stokes2d": ("SPINN navier_stokes3d (its initial field differs)", 1e-2),
    "beltrami4d": ("SPINN navier_stokes4d (32 points per axis)", 1e-3),
    "cavity2d": ("Ghia, Ghia & Shin 1982 centre lines (max |error| / lid speed)", 1e-2),
}


def ghia_error(r: seppinn.Result) -> float:
    """The largest |u - Ghia| on x = 0.5 and |v - Ghia| on y = 0.5 (Re = 100), in units of the lid speed."""
    rows = np.genfromtxt(ROOT / "problems/data/ghia_re100.csv", delimiter=",", comments="#", skip_header=4,
                         dtype=None, encoding="utf-8")
    worst_err = 0.0
    for line, coord, value in rows:
        at = {"x": np.array([0.5 if line == "u" else coord]), "y": np.array([coord if line == "u" else 0.5])}
        worst_err = max(worst_err, abs(float(r.evaluate_points(at)[line][0]) - value))
    return worst_err


def worst(metrics: dict[str, dict[str, float]]) -> float:
    return max(m["rel_l2"] for k, m in metrics.items() if isinstance(m, dict) and "rel_l2" in m)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
          + f"; torch {torch.__version__}; seeds {args.seeds}" + (f"; --set {' '.join(args.set)}" if args.set else ""))
    print("| problem | rel L2 final | rel L2 at min loss | wall s | target | anchor |")
    print("|---|---|---|---|---|---|")
    for name in args.problems:
        finals, bests, walls = [], [], []
        for seed in args.seeds:
            start = time.perf_counter()
            r = seppinn.solve(ROOT / "problems" / f"{name}.toml", None, [f"train.seed={seed}", *args.set], progress=False)
            walls.append(time.perf_counter() - start)
            if name == "cavity2d":  # no reference field: the table of centre-line values
                finals.append(ghia_error(r))
                r.use_state("best")
                bests.append(ghia_error(r))
                continue
            finals.append(worst(r.metrics))
            bests.append(worst({k: v for k, v in r.metrics_at_min_loss.items() if k != "iteration"}))
        anchor, target = ROWS.get(name, ("", float("nan")))
        fmt = lambda xs: " / ".join(f"{x:.2e}" for x in xs)  # noqa: E731
        print(f"| {name} | {fmt(finals)} | {fmt(bests)} | {statistics.median(walls):.0f} | ≤ {target:g} | {anchor} |",
              flush=True)


if __name__ == "__main__":
    main()
