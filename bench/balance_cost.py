"""What loss balancing (train.balance) costs per step: the three shipped PDEs with the spinn preset at
n^3, a plain training step against one whose balance weights are updated too, and the amortised
share at the default cadence (train.balance_every). ``grad_norm``: one backward pass per term (the
step's own gradient is made from them), compiled also one forward per term after the first;
``ntk``: the terms' NTK traces (``train/ntk_trace.py``), then the plain step.

    python bench/balance_cost.py [--method grad_norm|ntk] [--problems ...] [--size 64] [--repeats 20] [--compiled]

Each step = loss, backward and Adam; median of ``--repeats`` after warm-up, in this process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from iteration import time_steps  # bench/iteration.py: median ms of a step after warm-up

from seppinn.api import prepare
from seppinn.problem.solver_config import TrainConfig
from seppinn.train.loop import Trainer
from seppinn.train.optimizers import make_adam
from seppinn.train.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=["helmholtz3d", "klein_gordon3d", "diffusion3d"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--compiled", action="store_true")
    ap.add_argument("--method", choices=["grad_norm", "ntk"], default="grad_norm")
    args = ap.parse_args()
    every = TrainConfig().balance_every
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}, {args.size}^3, "
          f"{'compiled' if args.compiled else 'eager'}; ms per step; {args.method} every {every}")
    print("| problem | terms | plain step | step + balance update | amortised cost per step |")
    print("|---|---|---|---|---|")
    for problem in args.problems:
        prep = prepare(ROOT / "problems" / f"{problem}.toml", "spinn",
                       {"train.points": args.size, "train.compile": args.compiled, "train.balance": args.method,
                        "train.test_points": 8})
        tr = Trainer(prep.compiled, prep.config, device=prep.device, progress=False)
        params = list(tr.model.parameters())
        opt = make_adam(params, 1e-3)
        progress = Progress(0, enabled=False)

        def step(update: bool) -> None:
            stacked = tr._loss_vector(progress)[:len(tr.c.terms)]
            opt.zero_grad(set_to_none=True)
            if update:  # as the loop does it
                tr.balance(stacked, progress, 0)
            else:
                tr.balancer.apply(stacked).backward()
            opt.step()

        plain = time_steps(lambda: step(False), args.repeats, warmup=3)
        with_update = time_steps(lambda: step(True), args.repeats, warmup=3)
        share = (with_update - plain) / every / plain * 100
        print(f"| {problem} | {len(tr.c.terms)} | {plain:.2f} | {with_update:.2f} | {share:+.1f} % |", flush=True)


if __name__ == "__main__":
    main()
