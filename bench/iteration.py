"""Milliseconds per training iteration: seppinn (SPINN preset) on Helmholtz 3-D at 16-128
points per axis, against a dense (non-separable) PINN of the same width on the same points.

    python bench/iteration.py [--sizes 16 32 64 128] [--dense-max 64] [--repeats 20]

The dense PINN is an MLP 3 -> 64 x 3 -> 1 (tanh, SPINN's PINN baseline) whose Laplacian comes
from nested autograd; its loss has the same terms (interior residual on all n^3 points, the six
faces with n^2 points each, boundary weight 100). Prints a table and the ratio; times are the
median of ``--repeats`` iterations after warm-up, on this machine (``--threads`` torch threads).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from seppinn.api import prepare
from seppinn.progress import Progress
from seppinn.training import Trainer

ROOT = Path(__file__).resolve().parent.parent
SPINN_JAX_MS = {16: 1.32, 32: 3.51, 64: 4.41, 128: 32.4}  # from the issue: SPINN's JAX code, this machine type


def time_steps(step, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def seppinn_step(n: int, compiled: bool = False, problem: str = "helmholtz3d", device: str = "cpu"):
    """One Adam step of ``problem`` with the spinn preset; ``compiled``: the loss and its backward
    through train.compile (the first call compiles it; time it separately)."""
    prep = prepare(ROOT / "problems" / f"{problem}.toml", "spinn",
                   [f"train.points={n}", f"train.device=\"{device}\"", f"train.compile={str(compiled).lower()}",
                    "train.test_points=8"])
    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=prep.device, progress=False)
    opt = torch.optim.Adam(tr.model.parameters(), lr=1e-3)
    progress = Progress(0, enabled=False)

    def step() -> None:
        total = tr._loss_vector(progress).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    return step


def dense_step(n: int, width: int = 64):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                              torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(),
                              torch.nn.Linear(width, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    axes = [torch.rand(n) * 2 - 1 for _ in range(3)]
    X = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    s = torch.sin
    q = -(16 + 16 + 9) * math.pi**2 * s(4 * math.pi * X[:, 0]) * s(4 * math.pi * X[:, 1]) * s(3 * math.pi * X[:, 2])
    q = q + s(4 * math.pi * X[:, 0]) * s(4 * math.pi * X[:, 1]) * s(3 * math.pi * X[:, 2])
    faces = []
    for d in range(3):
        for v in (-1.0, 1.0):
            other = [axes[e] for e in range(3) if e != d]
            g = torch.stack(torch.meshgrid(*other, indexing="ij"), -1).reshape(-1, 2)
            faces.append(torch.cat([g[:, :d], torch.full((len(g), 1), v), g[:, d:]], 1))

    def step() -> None:
        x = X.clone().requires_grad_(True)
        u = net(x)[:, 0]
        g = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
        lap = sum(torch.autograd.grad(g[:, d].sum(), x, create_graph=True)[0][:, d] for d in range(3))
        loss = ((lap + u - q) ** 2).mean() + 100 * sum((net(f) ** 2).mean() for f in faces)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--dense-max", type=int, default=64, help="largest n for the dense PINN (memory, time)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compile", action="store_true", help="also time the train.compile step (compiles once per size)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, float32")
    print("| points/axis | seppinn eager ms/it | seppinn compiled ms/it | SPINN-JAX ms/it (issue) | dense PINN ms/it | dense / seppinn eager |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        ours = time_steps(seppinn_step(n), args.repeats)
        comp = time_steps(seppinn_step(n, compiled=True), args.repeats) if args.compile else float("nan")
        dense = time_steps(dense_step(n), max(3, args.repeats // 5), warmup=1) if n <= args.dense_max else float("nan")
        ratio = f"{dense / ours:.0f}x" if math.isfinite(dense) else "-"
        dense_s = f"{dense:.1f}" if math.isfinite(dense) else "skipped"
        comp_s = f"{comp:.2f}" if math.isfinite(comp) else "-"
        print(f"| {n}^3 | {ours:.2f} | {comp_s} | {SPINN_JAX_MS.get(n, float('nan')):.2f} | {dense_s} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
