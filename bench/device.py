"""Milliseconds per training step for the three shipped PDEs on whatever device is present
(CUDA when available, else CPU), eager and with train.compile, beside SPINN-JAX's figures from
issue 8 (measured on the 2-core CPU machine). A short check to run when a GPU machine is lent.

    python bench/device.py [--sizes 64 128 256 512] [--problems helmholtz3d klein_gordon3d diffusion3d]
                           [--repeats 20] [--no-compile]

One step = the loss and its backward (compiled or eager) plus an eager Adam step, on the `spinn`
preset's network with n points per axis; median of ``repeats`` after warm-up (which compiles).
Sizes whose estimated memory exceeds the device's limit are skipped with the estimate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import seppinn
from seppinn.progress import Progress
from seppinn.training import Trainer

ROOT = Path(__file__).resolve().parent.parent
SPINN_JAX_MS = {  # issue 8, 2-core CPU, compiled JAX
    "helmholtz3d": {16: 1.32, 32: 3.51, 64: 4.41, 128: 32.4, 256: 250},
    "klein_gordon3d": {16: 2.21, 32: 2.69, 64: 5.43, 128: 48.3, 256: 489},
    "diffusion3d": {16: 1.23, 32: 2.55, 64: 7.22},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(problem: str, n: int, compiled: bool, repeats: int) -> float:
    prep = seppinn.prepare(ROOT / "problems" / f"{problem}.toml", "spinn",
                           {"train.points": n, "train.test_points": 8, "train.compile": compiled})
    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=prep.device, progress=False)
    opt = torch.optim.Adam(tr.model.parameters(), lr=1e-3)
    progress = Progress(0, enabled=False)

    def step() -> None:
        total = tr._loss_vector(progress).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        sync(prep.device)
        t = time.perf_counter()
        step()
        sync(prep.device)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--problems", nargs="+", default=list(SPINN_JAX_MS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# bench/device.py on {name}, torch {torch.__version__}, float32")
    print("| problem | points/axis | eager ms/step | compiled ms/step | SPINN-JAX ms (2-core CPU, issue 8) |")
    print("|---|---|---|---|---|")
    for problem in args.problems:
        for n in args.sizes:
            jax = SPINN_JAX_MS.get(problem, {}).get(n)
            try:
                eager = time_step(problem, n, False, args.repeats)
                comp = float("nan") if args.no_compile else time_step(problem, n, True, args.repeats)
            except seppinn.SolverConfigError as exc:  # the memory guard
                print(f"| {problem} | {n}^3 | skipped: {exc.message.split(';')[0]} | | |", flush=True)
                continue
            print(f"| {problem} | {n}^3 | {eager:.2f} | {comp:.2f} | {jax if jax is not None else '-'} |", flush=True)


if __name__ == "__main__":
    main()
