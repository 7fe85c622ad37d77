"""Every shipped problem solved as a new user would: ``seppinn solve problems/NAME.toml`` with no flags
(the defaults, or the settings the file names), each in its own process, against the result the
README's problem table states ("no flags" column).

    python bench/no_flags.py [--problems NAME ...] [--out DIR] [--set KEY=VALUE ...]

``--set`` passes settings to every run (to measure one setting across the suite; then the rows
are no longer "no flags").

Prints one row per problem: the settings used, iterations, the metric at the end (the worst field's
rel L2; PSNR and IoU for images and volumes), the seconds, and whether the stated result was reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# the README's "no flags" column: (metric, bound); rel_l2 is at most, psnr / psnr_heldout / iou at least
TARGETS: dict[str, tuple[str, float]] = {
    "poisson_robin2d": ("rel_l2", 1e-2),
    "wave1d": ("rel_l2", 5e-2),
    "biharmonic2d": ("rel_l2", 1e-2),
    "advection_diffusion1d": ("rel_l2", 1e-2),
    "sensors": ("rel_l2", 1e-2),
    "helmholtz3d": ("rel_l2", 5e-2),
    "helmholtz3d_data": ("rel_l2", 5e-2),
    "klein_gordon3d": ("rel_l2", 5e-2),
    "klein_gordon3d_velocity": ("rel_l2", 5e-2),
    "diffusion3d": ("rel_l2", 5e-2),
    "heat3d": ("rel_l2", 5e-2),
    "klein_gordon4d": ("rel_l2", 5e-2),
    "inverse_heat1d": ("rel_l2", 1e-2),
    "inverse_poisson2d": ("rel_l2", 5e-2),
    "parametric_helmholtz2d": ("rel_l2", 1e-2),
    "image": ("psnr", 27.0),
    "inpainting": ("psnr_heldout", 22.5),
    "occupancy": ("iou", 0.95),
}


def metric(summary: dict, name: str) -> float:
    """The worst field's value of ``name`` in summary.json's final metrics."""
    values = [m[name] for m in summary["metrics"].values() if name in m]
    return max(values) if name == "rel_l2" else min(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=list(TARGETS))
    ap.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for every run")
    args = ap.parse_args()
    flags = [a for kv in args.set for a in ("--set", kv)]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"seppinn solve problems/NAME.toml {' '.join(flags) or 'with no flags'}")
    print("| problem | settings | iterations | result (target) | reached | wall |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        for name in args.problems:
            out = base / name
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "seppinn", "solve", str(ROOT / "problems" / f"{name}.toml"),
                                  "--out", str(out), "--quiet", *flags], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if run.returncode != 0:
                print(f"| {name} | failed: {(run.stderr.strip().splitlines() or ['?'])[-1]} | | | no | {wall:.0f} s |")
                continue
            summary = json.loads((out / "summary.json").read_text())
            which, bound = TARGETS[name]
            value = metric(summary, which)
            ok = value <= bound if which == "rel_l2" else value >= bound
            text = f"{which} {value:.3g}" if which != "rel_l2" else f"rel L2 {value:.2e}"
            target = f"≤ {bound:g}" if which == "rel_l2" else f"≥ {bound:g}"
            solver = next((line.split("=", 1)[1].strip().strip('"') for line in
                           (ROOT / "problems" / f"{name}.toml").read_text().splitlines()
                           if line.startswith("solver")), "defaults")
            print(f"| {name} | {solver} | {summary['iterations']} | {text} ({target}) | {'yes' if ok else 'NO'} "
                  f"| {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
