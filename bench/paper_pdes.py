"""The paper's three PDEs with SPINN's settings and with the SepPGD preset: relative L2 (final
and at the lowest training loss), iterations and wall time.

    python bench/paper_pdes.py [--solvers spinn seppgd] [--iterations N] [--points 64] [--out runs/paper]

Each run is a plain `seppinn solve` (its folder under --out holds everything); the table at the
end is postprocess/compare_runs.py over them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = ["helmholtz3d", "klein_gordon3d", "diffusion3d"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--solvers", nargs="+", default=["spinn", "seppgd"])
    ap.add_argument("--problems", nargs="+", default=PROBLEMS)
    ap.add_argument("--iterations", type=int, default=None, help="override train.iterations")
    ap.add_argument("--points", type=int, default=None, help="override train.points")
    ap.add_argument("--out", default="runs/paper")
    args = ap.parse_args()
    runs = []
    for solver in args.solvers:
        for problem in args.problems:
            out = Path(args.out) / f"{problem}-{solver}"
            cmd = [sys.executable, "-m", "seppinn", "solve", str(ROOT / "problems" / f"{problem}.toml"),
                   "--solver", solver, "--out", str(out), "--quiet"]
            if args.iterations:
                cmd += ["--set", f"train.iterations={args.iterations}"]
            if args.points:
                cmd += ["--set", f"train.points={args.points}"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            runs.append(str(out))
    subprocess.run([sys.executable, str(ROOT / "postprocess/compare_runs.py"), *runs], check=True)


if __name__ == "__main__":
    main()
