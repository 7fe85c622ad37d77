"""Colour images: one field with 3 components (shared factor networks, each factor giving R x 3
outputs: the shipped image.toml) against three one-component fields (a separate CP model with
its own factor networks per channel), same preset (inr-image-cpu), same iterations.

Prints PSNR over all pixels and channels (from the unclipped MSE, so both layouts are scored
alike; mean ± std over seeds), parameters and training seconds.

    python bench/inr_channels.py [--seeds 0 1] [--iterations 1000] [--methods none seppgd]
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import torch

import seppinn

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "problems/data/photo_256.png"


def per_channel_problem(folder: Path) -> seppinn.Problem:
    img = mpimg.imread(PHOTO)[..., :3].astype(np.float64)
    p = seppinn.Problem("image_channels", axes={"row": (0.0, 1.0), "col": (0.0, 1.0)}, fields=["r", "g", "b"],
                        kind="data")
    for c, name in enumerate("rgb"):
        np.save(folder / f"{name}.npy", img[..., c])
        p.add_data(name, {"file": str(folder / f"{name}.npy")})
        p.set_reference(**{name: {"file": str(folder / f"{name}.npy")}})
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--methods", nargs="+", default=["none", "seppgd"])
    args = ap.parse_args()
    print(f"# bench/inr_channels.py: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.iterations} iterations, seeds {args.seeds}")
    print("| model | method | PSNR (dB) | parameters | training s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        separate = per_channel_problem(Path(tmp))
        for label, problem in (("shared (1 field, 3 components)", ROOT / "problems/image.toml"),
                               ("separate (3 fields)", separate)):
            for method in args.methods:
                psnrs, secs = [], []
                for seed in args.seeds:
                    r = seppinn.solve(problem, "inr-image-cpu", progress=False,
                                      overrides={"train.seed": seed, "train.iterations": args.iterations,
                                                 "train.eval_every": args.iterations, "precondition.method": method})
                    mse = float(np.mean([m["mse"] for m in r.metrics.values()]))  # equal pixel counts per field
                    psnrs.append(10 * math.log10(1 / mse))  # unclipped, the same for both layouts
                    secs.append(float(r.history["seconds"][-1]))
                    n_params = sum(p.numel() for p in r.model.parameters())
                print(f"| {label} | {'Adam' if method == 'none' else 'SepPGD'} | {np.mean(psnrs):.2f} ± {np.std(psnrs):.2f} "
                      f"| {n_params:,} | {np.mean(secs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
