"""Step time of a distributed run (torch.distributed) at 1, 2, ... processes, and the share of it
spent in collectives (all-reduce, all-gather).

    python bench/distributed.py [--problem helmholtz3d.toml] [--solver NAME] [--size 64]
                                [--nprocs 1 2] [--iterations 40] [--set KEY=VALUE ...]

Each process count is one launch of that many ranks (``torch.multiprocessing``, the environment
torchrun sets), gloo on CPU or NCCL on GPUs (``train.device = auto``: rank r on GPU r). Every rank
trains ``--iterations`` Adam steps after 3 warm-up steps; the step time is the training time
(evaluations excluded) per step, the collective time is measured around every all-reduce and
all-gather (the device synchronised before and after, so on a GPU it includes the wait for the step).
On CPU each rank runs one thread: on a 2-core machine 2 ranks use both cores, 1 rank one of them.

With SepPGD (``--solver seppgd``) it also times the two ways of giving every rank the factors S_d:
each rank rebuilding them from its identical replicated factors (what seppinn does), against rank 0
rebuilding and broadcasting them (the rebuild plus the broadcast of every V_d, coefficient and
eigenvalue tensor, timed here as one ``dist.broadcast`` per tensor).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Any, spent: list[float]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _sync()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync()
        spent[0] += time.perf_counter() - t0
        return out
    return wrapper


def _seconds(fn: Any) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def rank_main(rank: int, size: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from seppinn.api import prepare
    from seppinn.train import distributed
    from seppinn.train.loop import Trainer

    torch.set_num_threads(1)
    world = distributed.start() if size > 1 else distributed.World()
    spent = [0.0]
    dist.all_reduce = _timed(dist.all_reduce, spent)
    dist.all_gather = _timed(dist.all_gather, spent)
    overrides = [f"train.points={args.size}", "train.lbfgs_iterations=0", "train.threads=1",
                 "train.checkpoint_every=0", *args.set]
    reports = []
    for iterations in (3, 3 + args.iterations):  # warm-up, then the measured run from the same start
        prep = prepare(ROOT / "problems" / args.problem, args.solver, overrides +
                       [f"train.iterations={iterations}", f"train.eval_every={iterations}"], nproc=size)
        tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, plan=prep.plan, progress=False, world=world)
        spent[0] = 0.0
        state = tr.train()
        reports.append((state.seconds, spent[0], prep.config.train.iterations))
    (s0, c0, n0), (s1, c1, n1) = reports
    rebuild_ms = broadcast_ms = None
    if tr.preconditioners.factors:
        rebuild_ms = 1e3 * min(_seconds(tr.preconditioners.rebuild) for _ in range(5))
        tensors = [x for fs in tr.preconditioners.state().values() for ts in fs.values() for x in ts]
        if size > 1:
            broadcast_ms = 1e3 * min(_seconds(lambda: [dist.broadcast(x, 0) for x in tensors]) for _ in range(5))
    if rank == 0:
        Path(out).write_text(json.dumps({"ms": 1e3 * (s1 - s0) / (n1 - n0), "comm_ms": 1e3 * (c1 - c0) / (n1 - n0),
                                         "device": str(prep.device), "rebuild_ms": rebuild_ms,
                                         "broadcast_ms": broadcast_ms}))
    distributed.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", default="helmholtz3d.toml")
    p.add_argument("--solver")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    print(f"{args.problem} ({args.solver or 'defaults'}), {args.size} points per axis, {args.iterations} steps; "
          f"machine: {os.cpu_count()} CPUs, " + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"))
    print(f"{'processes':>9} {'ms/step':>9} {'collectives ms':>15} {'share':>6} {'speed-up':>8}")
    base = None
    for n in args.nprocs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "r.json")
            mp.start_processes(rank_main, args=(n, port, args, out), nprocs=n, start_method="spawn", join=True)
            r = json.loads(Path(out).read_text())
        base = base or r["ms"]
        print(f"{n:>9} {r['ms']:>9.2f} {r['comm_ms']:>15.2f} {r['comm_ms'] / r['ms']:>6.1%} {base / r['ms']:>8.2f}"
              f"   ({r['device']})")
        if r["broadcast_ms"] is not None:
            print(f"{'':>9} SepPGD factors: rebuilt on every rank {r['rebuild_ms']:.2f} ms; rank 0 rebuilding and "
                  f"broadcasting {r['rebuild_ms'] + r['broadcast_ms']:.2f} ms (broadcast {r['broadcast_ms']:.2f} ms)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
