"""Milliseconds per training step for the three shipped PDEs on whatever device is present
(CUDA when available, else CPU), eager and with train.compile, beside SPINN-JAX's figures from
issue 8 (measured on the 2-core CPU machine). A short check to run when a GPU machine is lent.

    python bench/device.py [--sizes 64 128 256 512] [--problems helmholtz3d klein_gordon3d diffusion3d]
                           [--repeats 20] [--no-compile]

One step = the loss and its backward (compiled or eager) plus an eager Adam step, on the `spinn`
preset's network with n points per axis (bench/iteration.py's step); median of ``repeats`` after
warm-up; the first compiled step's seconds are the compilation. Eager and compiled evaluate every
term on its grid (train.grid_free = false); the grid-free column uses train.grid_free = "auto".
Sizes whose estimated memory exceeds the device's limit are skipped with the estimate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iteration import seppinn_step  # bench/ is on sys.path when this script runs

import seppinn

SPINN_JAX_MS = {  # issue 8, 2-core CPU, compiled JAX
    "helmholtz3d": {16: 1.32, 32: 3.51, 64: 4.41, 128: 32.4, 256: 250},
    "klein_gordon3d": {16: 2.21, 32: 2.69, 64: 5.43, 128: 48.3, 256: 489},
    "diffusion3d": {16: 1.23, 32: 2.55, 64: 7.22},
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_step(problem: str, n: int, compiled: bool, repeats: int, grid_free: bool | str = False) -> tuple[float, float]:
    """(seconds of the first step, which compiles when ``compiled``; median ms of the later steps)."""
    step = seppinn_step(n, compiled, problem, device="auto", grid_free=grid_free)
    sync()
    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return first, 1000 * statistics.median(times)


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
    print("| problem | points/axis | eager ms/step | compiled ms/step | first compiled step s "
          "| compiled, grid-free where it applies | SPINN-JAX ms (2-core CPU, issue 8) |")
    print("|---|---|---|---|---|---|---|")
    for problem in args.problems:
        for n in args.sizes:
            jax = SPINN_JAX_MS.get(problem, {}).get(n)
            try:
                eager = time_step(problem, n, False, args.repeats)[1]
                first, comp = (float("nan"),) * 2 if args.no_compile else time_step(problem, n, True, args.repeats)
                free = float("nan") if args.no_compile else time_step(problem, n, True, args.repeats, "auto")[1]
            except seppinn.SolverConfigError as exc:  # the memory guard
                print(f"| {problem} | {n}^3 | skipped: {exc.message.split(';')[0]} | | | |", flush=True)
                continue
            print(f"| {problem} | {n}^3 | {eager:.2f} | {comp:.2f} | {first:.1f} | {free:.2f} "
                  f"| {jax if jax is not None else '-'} |",
                  flush=True)


if __name__ == "__main__":
    main()
