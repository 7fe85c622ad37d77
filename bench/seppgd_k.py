"""Choosing k: SepPGD on the 2-D multi-scale fit of bench/seppgd.py at several fractions
k/n of the axis' points, for n = 32 and 64, over seeds (mean rel L2 after a fixed budget).

    python bench/seppgd_k.py [--seeds 0 1 2] [--iterations 1500] [--fractions 0 0.1 0.25 0.5 0.75]
"""

from __future__ import annotations

import argparse

import numpy as np

import seppinn
from seppinn.compile.plan import AUTO_FRACTION

from seppgd import multiscale_problem  # type: ignore[import-not-found]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 0.75])
    args = ap.parse_args()
    print(f"current AUTO_FRACTION = {AUTO_FRACTION}")
    print("| n | k/n | k | rel L2 (mean ± std) |")
    print("|---|---|---|---|")
    for n in args.sizes:
        for frac in args.fractions:
            k = int(round(frac * n))
            errs = []
            for seed in args.seeds:
                ov = {"model.rank": 64, "model.width": 64, "model.depth": 4, "model.activation": "sin",
                      "train.lr": 1e-4, "train.iterations": args.iterations, "train.points": n,
                      "train.test_points": 64, "train.eval_every": args.iterations, "train.seed": seed,
                      "precondition.method": "seppgd" if k > 1 else "none", "precondition.k": max(k, 0),
                      "precondition.update_every": 10}
                errs.append(seppinn.solve(multiscale_problem(), overrides=ov, progress=False).metrics["u"]["rel_l2"])
            print(f"| {n} | {frac:g} | {k} | {np.mean(errs):.3e} ± {np.std(errs):.1e} |", flush=True)


if __name__ == "__main__":
    main()
