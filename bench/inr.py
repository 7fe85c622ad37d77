"""INR benchmark: Adam vs SepPGD on the shipped data problems, over several seeds.

  image       problems/image.toml, solvers/inr-image-cpu.toml (256^2 photo, CP-SIREN rank/width 256,
              lr 1e-4, k = 35 rebuilt every 10 iterations): PSNR on all pixels
  inpainting  problems/inpainting.toml, same preset: PSNR on the 30 % held-out pixels and on all
  occupancy   problems/occupancy.toml, solvers/inr-occupancy.toml (128^3 volume, rank 200, width
              256, lr 3e-4, k = 20 every 10 iterations): IoU at 0.5

SepPGD runs N iterations; Adam (the same preset with precondition.method = "none") runs
ADAM_FACTOR x N, so both can be compared at equal iterations (Adam's history at N) and at equal
seconds (Adam's last evaluation within SepPGD's training time). Mean ± std over the seeds.
"At min loss": the metric at the evaluation with the lowest training loss within N iterations.
Writes bench/inr_<tasks>.md (the table) and bench/inr_<tasks>.png (metric against iteration and seconds).

    python bench/inr.py [--tasks image inpainting occupancy] [--seeds 0 1 2] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

import seppinn

ROOT = Path(__file__).resolve().parent.parent
ADAM_FACTOR = 2
TASKS = {  # problem, preset, field, metrics (first: the one plotted)
    "image": ("image", "inr-image-cpu", "rgb", ["psnr"]),
    "inpainting": ("inpainting", "inr-image-cpu", "rgb", ["psnr_heldout", "psnr"]),
    "occupancy": ("occupancy", "inr-occupancy", "occupancy", ["iou"]),
}


def train(task: str, method: str, seed: int, iterations: int) -> dict[str, np.ndarray]:
    problem, preset, _, _ = TASKS[task]
    its = iterations if method == "seppgd" else ADAM_FACTOR * iterations
    r = seppinn.solve(ROOT / "problems" / f"{problem}.toml", preset, progress=False,
                      overrides={"train.seed": seed, "train.iterations": its, "train.eval_every": 50,
                                 "precondition.method": method})
    return r.history


def value_at(h: dict[str, np.ndarray], column: str, key: str, limit: float) -> float:
    """The column's value at the last evaluation with h[key] <= limit."""
    i = int(np.searchsorted(h[key], limit, side="right")) - 1
    return float(h[column][max(i, 0)])


def at_min_loss(h: dict[str, np.ndarray], column: str, iterations: int) -> float:
    """The column at the evaluation with the lowest training loss within the first ``iterations``
    (the project's "best" rule: chosen by training loss, never by the test metric)."""
    n = int(np.searchsorted(h["iteration"], iterations, side="right"))
    return float(h[column][int(np.argmin(h["loss/total"][:n]))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=1000)
    args = ap.parse_args()
    header = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
              f"seeds {args.seeds}; SepPGD {args.iterations} iterations, Adam {ADAM_FACTOR * args.iterations}")
    lines = [f"# bench/inr.py: {header}", "",
             "| task | metric | Adam, equal iterations | SepPGD | Adam, equal seconds | Adam at min loss | SepPGD at min loss "
             "| SepPGD s | Adam s at the same iterations |",
             "|---|---|---|---|---|---|---|---|---|"]
    print(lines[0], flush=True)
    runs = {}
    for task in args.tasks:
        _, _, field, metrics = TASKS[task]
        runs[task] = {m: [train(task, m, s, args.iterations) for s in args.seeds] for m in ("none", "seppgd")}
        adam, sep = runs[task]["none"], runs[task]["seppgd"]
        for metric in metrics:
            col = f"{metric}/{field}"
            a_it = [value_at(h, col, "iteration", args.iterations) for h in adam]
            s_fin = [float(h[col][-1]) for h in sep]
            a_t = [value_at(ha, col, "seconds", hs["seconds"][-1]) for ha, hs in zip(adam, sep)]
            s_wall = [float(h["seconds"][-1]) for h in sep]
            a_wall = [value_at(h, "seconds", "iteration", args.iterations) for h in adam]
            a_min = [at_min_loss(h, col, args.iterations) for h in adam]
            s_min = [at_min_loss(h, col, args.iterations) for h in sep]
            fmt = lambda v: f"{np.mean(v):.4g} ± {np.std(v):.2g}"  # noqa: E731
            lines.append(f"| {task} | {metric} | {fmt(a_it)} | {fmt(s_fin)} | {fmt(a_t)} | {fmt(a_min)} | {fmt(s_min)} "
                         f"| {np.mean(s_wall):.1f} | {np.mean(a_wall):.1f} |")
            print(lines[-1], flush=True)
    (ROOT / f"bench/inr_{'_'.join(args.tasks)}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.6 * len(runs)), squeeze=False)
    for row, (task, res) in enumerate(runs.items()):
        col = f"{TASKS[task][3][0]}/{TASKS[task][2]}"
        for m, color in (("none", "C0"), ("seppgd", "C3")):
            for i, h in enumerate(res[m]):
                label = ("Adam" if m == "none" else "SepPGD") if i == 0 else None
                axes[row, 0].plot(h["iteration"], h[col], color=color, label=label, alpha=0.8)
                axes[row, 1].plot(h["seconds"], h[col], color=color, label=label, alpha=0.8)
        axes[row, 0].set(title=f"{task}: {col} vs iteration", xlabel="iteration")
        axes[row, 1].set(title=f"{task}: {col} vs training seconds", xlabel="seconds")
        axes[row, 0].legend()
    fig.tight_layout()
    name = f"bench/inr_{'_'.join(args.tasks)}"
    fig.savefig(ROOT / f"{name}.png", dpi=90)
    print(f"wrote {name}.md, {name}.png")


if __name__ == "__main__":
    main()
