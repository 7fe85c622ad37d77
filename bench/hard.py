"""The hard PINN benchmarks (issue 20) with their shipped settings: relative L2 error (final and at
the lowest training loss; the worst field) against the built-in references, wall seconds, and the
published anchor. The cavity has no reference field: its error is the largest deviation from Ghia
et al.'s centre-line velocities (problems/data/ghia_re100.csv) in units of the lid speed; a line
under its row gives the same against the converged finite-difference solution at those points
(bench/cavity_fd.py, exact lid), which Ghia's table itself misses by up to 0.009.

    python bench/hard.py [--problems burgers1d allen_cahn1d ...] [--seeds 0 1 2] [--set KEY=VALUE ...] [--detail]

``--detail`` also prints, after each run, the term losses at a dozen evaluations and, for (t, x)
problems, u's rel L2 in each tenth of the time axis (by its first time) with the x of the largest
errors (the figures behind RESULTS' error-by-time remarks); for the cavity, its five largest
deviations from Ghia's table beside the finite-difference values there.

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
from cavity_fd import at_ghia, exact_lid, ghia_rows, richardson, steady_cavity  # bench/: the script's directory

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


GHIA = ghia_rows()
GHIA_VALUES = np.array([v for *_, v in GHIA])


def centre_lines(r: seppinn.Result) -> np.ndarray:
    """u on x = 0.5 and v on y = 0.5 at Ghia's points (Re = 100), in units of the lid speed."""
    out = []
    for line, coord, _ in GHIA:
        at = {"x": np.array([0.5 if line == "u" else coord]), "y": np.array([coord if line == "u" else 0.5])}
        out.append(float(r.evaluate_points(at)[line][0]))
    return np.array(out)


def ghia_error(lines: np.ndarray) -> float:
    """The largest |u - Ghia| on x = 0.5 and |v - Ghia| on y = 0.5 (``lines``: ``centre_lines``)."""
    return float(np.abs(lines - GHIA_VALUES).max())


def fd_centre_lines() -> np.ndarray:
    """The exact-lid cavity by finite differences at Ghia's points, Richardson-extrapolated from
    N = 64 and 128 (bench/cavity_fd.py; about a minute): the converged solution, which Ghia's table
    misses by up to 0.009."""
    coarse, fine = (at_ghia(*steady_cavity(n, exact_lid), GHIA) for n in (64, 128))
    return richardson(coarse, fine, 2)


def worst(metrics: dict[str, dict[str, float]]) -> float:
    return max(m["rel_l2"] for k, m in metrics.items() if isinstance(m, dict) and "rel_l2" in m)


def detail(r: seppinn.Result) -> None:
    """The loss history (a dozen evaluations) and, for one field on (t, x), the error by time."""
    h = r.history
    n = len(h["iteration"])
    for i in sorted({*range(0, n, max(1, n // 12)), n - 1}):
        print(f"    it {int(h['iteration'][i])}: " + " ".join(f"{k[5:]} {h[k][i]:.2e}" for k in h if k.startswith("loss/")))
    ev = r.trainer.evaluator
    if len(ev.test_axes) != 2 or "u" not in ev.reference:
        return
    err = (ev.predict(ev.test_axes)["u"] - ev.reference["u"])[..., 0].cpu().numpy()
    ref = ev.reference["u"][..., 0].cpu().numpy()
    t, x = ev.test_axes
    tenths = np.array_split(np.arange(len(t) - 1), 10)  # [t_a, t_b): the last test time is left out
    print("    rel L2 by time: " + " ".join(f"t {t[i[0]]:.2f}: {np.linalg.norm(err[i]) / np.linalg.norm(ref[i]):.1e}"
                                       for i in tenths))
    print(f"    x of the largest errors: {np.round(x[np.argsort(-np.abs(err).sum(0))[:5]], 4).tolist()}")


def worst_points(ours: np.ndarray, fd: np.ndarray) -> None:
    """The cavity's five largest deviations from Ghia's table, with the finite-difference value there."""
    for i in np.argsort(-np.abs(ours - GHIA_VALUES))[:5]:
        line, coord, ghia = GHIA[i]
        print(f"    {line}({coord:.4f}): ours {ours[i]:+.5f}, Ghia {ghia:+.5f}, FD {fd[i]:+.5f}: "
              f"off Ghia {ours[i] - ghia:+.5f}, off FD {ours[i] - fd[i]:+.5f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=list(ROWS),
                   help="shipped problem names, or paths to .toml files (a variant named like its row: DIR/kdv1d.toml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--detail", action="store_true", help="loss history and error by time after each run")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
          + f"; torch {torch.__version__}; seeds {args.seeds}" + (f"; --set {' '.join(args.set)}" if args.set else ""))
    print("| problem | rel L2 final | rel L2 at min loss | wall s | target | anchor |")
    print("|---|---|---|---|---|---|")
    fd = None
    for name in args.problems:
        path = Path(name) if name.endswith(".toml") else ROOT / "problems" / f"{name}.toml"
        name = path.stem
        finals, bests, walls, off_fd = [], [], [], []
        for seed in args.seeds:
            start = time.perf_counter()
            r = seppinn.solve(path, None, [f"train.seed={seed}", *args.set], progress=False)
            walls.append(time.perf_counter() - start)
            if args.detail:
                detail(r)
            if name == "cavity2d":  # no reference field: the table of centre-line values
                lines = centre_lines(r)
                finals.append(ghia_error(lines))
                fd = fd_centre_lines() if fd is None else fd
                off_fd.append(float(np.abs(lines - fd).max()))
                if args.detail:
                    worst_points(lines, fd)
                r.use_state("best")
                bests.append(ghia_error(centre_lines(r)))
                continue
            finals.append(worst(r.metrics))
            bests.append(worst({k: v for k, v in r.metrics_at_min_loss.items() if k != "iteration"}))
        anchor, target = ROWS.get(name, ("", float("nan")))
        fmt = lambda xs: " / ".join(f"{x:.2e}" for x in xs)  # noqa: E731
        print(f"| {name} | {fmt(finals)} | {fmt(bests)} | {statistics.median(walls):.0f} | ≤ {target:g} | {anchor} |",
              flush=True)
        if off_fd:
            print(f"  ({name}, final, against the extrapolated finite-difference solution instead of Ghia's table: "
                  f"{fmt(off_fd)})", flush=True)


if __name__ == "__main__":
    main()
