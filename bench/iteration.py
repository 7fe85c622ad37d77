"""Milliseconds per training step and peak memory: the three shipped PDEs at 16^3-256^3, eager on
the grid, compiled on the grid, and compiled with grid-free losses where a term qualifies
(Helmholtz: every term; Klein-Gordon and diffusion: their faces), beside SPINN-JAX's figures
from issue 8 (its own JAX code on the 2-core machine type of that day, copied) and, with
``--jax PYTHON``, SPINN's step in JAX timed here in the same run (``bench/spinn_jax.py``, run by
that interpreter); then Helmholtz grid-free up to 4096 points per axis.

    python bench/iteration.py [--problems helmholtz3d klein_gordon3d diffusion3d]
                              [--sizes 16 32 64 128 256] [--gridfree-sizes 512 1024 2048 4096]
                              [--repeats 20] [--dense-max 0] [--networks] [--jax PYTHON]

One step = loss, backward and Adam step on the `spinn` preset's network (modified MLP 4 x 64,
rank 32, float32), n random points per axis; median of ``--repeats`` steps after warm-up (the
warm-up compiles). Every (problem, n, mode) runs in a fresh process so that its peak memory
(growth of the peak resident set over the process before the first step) is its own; so does
every SPINN-JAX measurement, right after ours of the same row.
``--networks``: also the compiled factor networks alone (the sum of their jets as the loss).
``--dense-max N``: also a dense PINN (3 -> 64 x 3 -> 1 tanh, nested-autograd Laplacian, same points)
up to N points per axis.
``--jax PYTHON``: an interpreter with jax and optax (e.g. ``python -m venv /tmp/jax &&
/tmp/jax/bin/pip install jax jaxlib optax``, then ``--jax /tmp/jax/bin/python``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from seppinn.api import prepare
from seppinn.train.progress import Progress
from seppinn.train.loop import Trainer
from seppinn.train.optimizers import make_adam

ROOT = Path(__file__).resolve().parent.parent
SPINN_JAX_MS = {  # issue 8: SPINN's JAX code, compiled, on this 2-core machine type
    "helmholtz3d": {16: 1.32, 32: 3.51, 64: 4.41, 128: 32.4, 256: 250},
    "klein_gordon3d": {16: 2.21, 32: 2.69, 64: 5.43, 128: 48.3, 256: 489},
    "diffusion3d": {16: 1.23, 32: 2.55, 64: 7.22},
}
MODES = {  # column -> (train.compile, train.grid_free)
    "eager": (False, False),
    "compiled": (True, False),
    "grid-free": (True, "auto"),
}
NETWORKS = "networks"  # --networks: the compiled factor networks alone (jets summed), no residuals


def time_steps(step, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def seppinn_step(n: int, compiled: bool = False, problem: str = "helmholtz3d", device: str = "cpu",
                 grid_free: bool | str = False, networks_only: bool = False):
    """One training step (loss, backward, Adam) of ``problem`` with the spinn preset; ``compiled``:
    the loss and its backward through train.compile (the first call compiles it). ``networks_only``:
    the "loss" is the sum of every factor jet (the factor networks' share of a step)."""
    prep = prepare(ROOT / "problems" / f"{problem}.toml", "spinn",
                   {"train.points": n, "train.device": device, "train.compile": compiled,
                    "train.grid_free": grid_free, "train.test_points": 8})
    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=prep.device, progress=False)
    opt = make_adam(list(tr.model.parameters()), 1e-3)
    progress = Progress(0, enabled=False)
    if networks_only:
        jets_sum = lambda: sum(j.sum() for per in tr.losses.jets().values() for j in per.values())  # noqa: E731
        run = torch.compile(jets_sum) if compiled else jets_sum
        tr._loss_vector = lambda _progress: run()  # type: ignore[method-assign]

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


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(problem: str, n: int, mode: str, repeats: int) -> dict[str, float]:
    """In this process: ms per step and peak memory growth (MiB) of one configuration."""
    if mode == "dense":
        step = dense_step(n)
        before = peak_mib()
        ms = time_steps(step, max(3, repeats // 5), warmup=1)
    else:
        compiled, grid_free = MODES.get(mode, (True, "auto"))
        step = seppinn_step(n, compiled, problem, grid_free=grid_free, networks_only=mode == NETWORKS)
        before = peak_mib()
        t = time.perf_counter()
        step()
        first = time.perf_counter() - t
        ms = time_steps(step, repeats, warmup=2)
        return {"ms": ms, "mib": peak_mib() - before, "first_s": first}
    return {"ms": ms, "mib": peak_mib() - before, "first_s": float("nan")}


def last_json(cmd: list[str]) -> dict[str, float] | str:
    """Run ``cmd`` in a fresh process: its last JSON line, or a string that says why it did not run."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return ((out.stderr.strip().splitlines() or ["failed"])[-1])[:120]
    return json.loads(lines[-1])


def measure(problem: str, n: int, mode: str, repeats: int) -> dict[str, float] | str:
    """``measure_one`` in a fresh process."""
    return last_json([sys.executable, __file__, "--one", problem, str(n), mode, str(repeats)])


def measure_jax(python: str, problem: str, n: int, repeats: int) -> dict[str, float] | str:
    """``bench/spinn_jax.py`` for one (problem, n) in a fresh process of ``python``."""
    return last_json([python, str(Path(__file__).with_name("spinn_jax.py")), "--problems", problem,
                      "--sizes", str(n), "--repeats", str(repeats)])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return names[0] if names else platform.machine()
    except OSError:
        return platform.processor() or platform.machine()


def cell(r: dict[str, float] | str) -> str:
    return f"{r['ms']:.2f} ({r['mib']:.0f} MiB)" if isinstance(r, dict) else f"- ({r})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=list(SPINN_JAX_MS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--gridfree-sizes", type=int, nargs="*", default=[512, 1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dense-max", type=int, default=0, help="largest n for the dense PINN (0: none)")
    ap.add_argument("--networks", action="store_true",
                    help="also the compiled factor networks alone (their share of a step), one more column")
    ap.add_argument("--jax", metavar="PYTHON", help="also SPINN's step in JAX (bench/spinn_jax.py) run by PYTHON")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        problem, n, mode, repeats = args.one
        print(json.dumps(measure_one(problem, int(n), mode, int(repeats))))
        return
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, float32; "
          "ms per step (peak memory growth)")
    head = ["problem", "points/axis", "eager", "compiled", "compiled, grid-free where it applies", "SPINN-JAX (issue)",
            "best / SPINN-JAX (issue)"]
    head += ["SPINN-JAX here", "best / SPINN-JAX here"] if args.jax else []
    head += ["dense PINN"] + (["networks alone"] if args.networks else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for problem in args.problems:
        for n in args.sizes:
            res = {mode: measure(problem, n, mode, args.repeats) for mode in MODES}
            best = min((r["ms"] for r in res.values() if isinstance(r, dict)), default=float("nan"))
            jax = SPINN_JAX_MS.get(problem, {}).get(n)
            row = [problem, f"{n}^3"] + [cell(res[m]) for m in MODES]
            row += [f"{jax}" if jax else "-", f"{best / jax:.2f}" if jax else "-"]
            if args.jax:
                here = measure_jax(args.jax, problem, n, args.repeats)
                row += ([f"{here['ms']:.2f}", f"{best / here['ms']:.2f}"] if isinstance(here, dict)
                        else [f"- ({here})", "-"])
            dense = measure(problem, n, "dense", args.repeats) if n <= args.dense_max else "skipped"
            row.append(cell(dense) if isinstance(dense, dict) else dense)
            if args.networks:
                row.append(cell(measure(problem, n, NETWORKS, args.repeats)))
            print("| " + " | ".join(row) + " |", flush=True)
    if "helmholtz3d" in args.problems:
        for n in args.gridfree_sizes:
            r = measure("helmholtz3d", n, "grid-free", args.repeats)
            print("| " + " | ".join(["helmholtz3d", f"{n}^3", "-", "-", cell(r)] + ["-"] * (len(head) - 5)) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
