"""Wall and CPU seconds of training at each thread count (``train.threads``), for choosing its default.

    python bench/threads.py [--problems ...] [--threads 1 2 ...] [--iterations 300] [--compile] [--points N]

Each cell is a fresh process: ``seppinn solve`` with the defaults, ``--threads N``, a fixed number of
Adam iterations and no L-BFGS; it prints the training seconds (``summary.json``'s ``train_seconds``)
and the process's CPU seconds (user + system, compiling included when compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=["poisson_robin2d", "wave1d", "helmholtz3d", "heat3d"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--points", type=int, help="train.points (default: the defaults' auto)")
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores; {args.iterations} Adam iterations, defaults, "
          f"{'compiled' if args.compile else 'eager'}" + (f", {args.points} points per axis" if args.points else "")
          + "; train s / CPU s of the process")
    print("| problem | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}" for n in args.threads) + " |")
    print("|---|" + "---|" * len(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems:
            cells = []
            for n in args.threads:
                out = Path(tmp) / f"{problem}-{n}"
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([sys.executable, "-m", "seppinn", "solve", str(ROOT / "problems" / f"{problem}.toml"),
                                "--out", str(out), "--quiet", "--threads", str(n),
                                "--set", f"train.iterations={args.iterations}", "--set", "train.lbfgs_iterations=0",
                                "--set", f"train.compile={str(args.compile).lower()}"]
                               + (["--set", f"train.points={args.points}"] if args.points else []),
                               check=True, stdout=subprocess.DEVNULL)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                train = json.loads((out / "summary.json").read_text())["train_seconds"]
                cells.append(f"{train:.1f} / {cpu:.1f}")
            print(f"| {problem} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
