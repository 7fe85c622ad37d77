"""Cost of one evaluation of the metrics (rel_l2, mse) against a separable reference: on the test
grid vs grid-free (Gram products of the CP factors and the reference's factors, issue 8).

    python bench/metrics.py [--sizes 100 200 400] [--repeats 5]

Helmholtz 3-D with the `spinn` preset (its reference sin(4 pi x) sin(4 pi y) sin(3 pi z) is one
separable product), an untrained model; `train.grid_free = true` vs `false` changes only how the
metrics are computed here. Prints ms per `Trainer.metrics()` call (median over --repeats, after one
warm-up call) and the two rel_l2 values, which agree to rounding.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

import seppinn
from seppinn.train.loop import Trainer

ROOT = Path(__file__).resolve().parent.parent


def evaluation(n: int, grid_free: bool, repeats: int) -> tuple[float, float]:
    """(ms per metrics() call, rel_l2) on an n^3 test grid."""
    prep = seppinn.prepare(ROOT / "problems/helmholtz3d.toml", "spinn",
                           {"train.test_points": n, "train.grid_free": grid_free})
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    assert ("u" in tr.evaluator.gridfree_metrics) == grid_free
    rel = tr.evaluator.metrics()["u"]["rel_l2"]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tr.evaluator.metrics()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, rel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          "helmholtz3d, spinn preset, ms per metrics() call")
    print("| test grid | on the grid | grid-free | ratio | rel_l2 (grid / grid-free) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        grid_ms, grid_rel = evaluation(n, False, args.repeats)
        free_ms, free_rel = evaluation(n, True, args.repeats)
        print(f"| {n}^3 | {grid_ms:.1f} | {free_ms:.2f} | {grid_ms / free_ms:.0f} | "
              f"{grid_rel:.12f} / {free_rel:.12f} |", flush=True)


if __name__ == "__main__":
    main()
