"""How well a rank-R separable product can fit each hard benchmark's reference at all: the best
rank-R approximation of the (t, x) reference on the file's test grid (truncated SVD, Eckart-Young),
as a relative L2 error. A CP model of rank R cannot do better; if these are far below the target,
the rank is not what limits training.

    python bench/reference_rank.py [--problems burgers1d allen_cahn1d kdv1d] [--ranks 8 16 32 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import seppinn
from seppinn.compile.lowering import evaluate_numpy
from seppinn.reference_solvers import REFERENCE_SOLVERS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=["burgers1d", "allen_cahn1d", "kdv1d"])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 24, 32, 64])
    args = p.parse_args()
    print("| problem | test grid | " + " | ".join(f"rank {r}" for r in args.ranks) + " |")
    print("|---|---|" + "---|" * len(args.ranks))
    for name in args.problems:
        prep = seppinn.prepare(ROOT / "problems" / f"{name}.toml")
        problem = prep.problem
        axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(prep.compiled.ranges, prep.plan.test_sizes)]
        U = REFERENCE_SOLVERS[str(problem.reference["u"].solver)][0](problem, axes, evaluate_numpy)
        s = np.linalg.svd(U, compute_uv=False)
        errors = [np.sqrt((s[r:] ** 2).sum()) / np.linalg.norm(U) for r in args.ranks]
        print(f"| {name} | {U.shape[0]} x {U.shape[1]} | " + " | ".join(f"{e:.1e}" for e in errors) + " |",
              flush=True)


if __name__ == "__main__":
    main()
