"""Adam vs SepPGD at the same budget, over several seeds:
  (a) 3-D Helmholtz with the paper's data term (problems/helmholtz3d_data.toml, solvers/seppgd.toml
      with k = 5 for data and 2 for the walls vs solvers/adam.toml);
  (b) a 2-D multi-scale data fit on a 64^2 grid (CP-SIREN rank 64, Adam lr 1e-4).
Prints test error at equal iterations and at equal wall time (mean +- std over seeds), the
preconditioner's share of wall time, and writes bench/seppgd_<settings>.png.

    python bench/seppgd.py [--seeds 0 1 2] [--iterations-a 5000] [--iterations-b 1500] [--k-b 40]
    python bench/seppgd.py --cost [--points 64] [--compile]   # SepPGD's share of a training run's wall time

``--cost`` trains helmholtz3d_data with the spinn preset (SPINN's network, fused Adam; with
``--compile`` the project's fastest step: compiled, grid-free where a term allows) at 64 points per
axis, without and with SepPGD (update_every = 10, k = 5 data / 2 walls), the two runs alternating
in blocks of 10 iterations in one process, and prints the rebuild time and the total overhead
(rebuilds plus applying P every iteration) as shares of SepPGD's time per iteration.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import seppinn

ROOT = Path(__file__).resolve().parent.parent
MULTISCALE = "sin(2*pi*x)*sin(2*pi*y) + 0.5*sin(10*pi*x)*cos(8*pi*y) + 0.2*cos(24*pi*x)*sin(20*pi*y)"


def multiscale_problem() -> seppinn.Problem:
    p = seppinn.Problem("multiscale2d", {"x": (0.0, 1.0), "y": (0.0, 1.0)}, ["u"], kind="data",
                        definitions={"target": MULTISCALE})
    p.add_data("u", "target")
    p.set_reference(u="target")
    return p


def run(setting: str, method: str, seed: int, args: argparse.Namespace) -> seppinn.Result:
    if setting == "a":
        solver = "seppgd" if method == "seppgd" else "adam"
        ov = {"train.seed": seed, "train.iterations": args.iterations_a, "train.eval_every": 100,
              "precondition.k": {"data": 5, "walls": 2}} if method == "seppgd" else \
             {"train.seed": seed, "train.iterations": args.iterations_a, "train.eval_every": 100}
        return seppinn.solve(ROOT / "problems/helmholtz3d_data.toml", solver=solver, overrides=ov, progress=False)
    ov = {"model.rank": 64, "model.width": 64, "model.depth": 4, "model.activation": "sin", "train.lr": 1e-4,
          "train.iterations": args.iterations_b, "train.points": 64, "train.test_points": 64, "train.eval_every": 50,
          "train.seed": seed, "precondition.method": method, "precondition.k": args.k_b,
          "precondition.update_every": 10}
    return seppinn.solve(multiscale_problem(), overrides=ov, progress=False)


def at_seconds(result: seppinn.Result, seconds: float) -> float:
    h = result.history
    i = np.searchsorted(h["seconds"], seconds, side="right") - 1
    return float(h["rel_l2/u"][max(i, 0)])


def cost(points: int, blocks: int = 30, compiled: bool = False) -> None:
    """Adam and SepPGD trainers on helmholtz3d_data side by side in one process, timed in
    alternating blocks of 10 iterations (one rebuild per SepPGD block: update_every = 10), so that
    the shared machine's drift hits all alike; medians over the blocks. Besides SepPGD on both terms
    (k = 5 data / 2 walls), SepPGD on the data term only and on the walls only, for the split."""
    from seppinn.train.progress import Progress
    from seppinn.train.loop import Trainer
    from seppinn.train.optimizers import make_adam

    ov = {"train.points": points, "train.test_points": 8, "precondition.update_every": 10, "train.compile": compiled,
          "precondition.method": "seppgd"}
    variants = {"none": {"precondition.method": "none"}, "seppgd": {"precondition.k": {"data": 5, "walls": 2}},
                "data only": {"precondition.terms": ["data"], "precondition.k": {"data": 5}},
                "walls only": {"precondition.terms": ["walls"], "precondition.k": {"walls": 2}}}
    runs = {}
    for name, extra in variants.items():
        prep = seppinn.prepare(ROOT / "problems/helmholtz3d_data.toml", "spinn", {**ov, **extra})
        tr = Trainer(prep.compiled, prep.config, device=prep.device, progress=False)
        runs[name] = (tr, make_adam(list(tr.model.parameters()), 1e-3))
    progress = Progress(0, enabled=False)
    modes = sorted({pp.mode.replace("_", "-") for tr, _ in runs.values() for parts in tr.plan.parts for pp in parts})

    def block(name: str) -> tuple[float, float]:
        tr, opt = runs[name]
        t0 = time.perf_counter()
        if tr.preconditioners.active:
            tr.preconditioners.rebuild()
        t1 = time.perf_counter()
        for _ in range(10):
            total = tr._loss_vector(progress).sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        return (time.perf_counter() - t0) / 10, t1 - t0

    for _ in range(3):  # warm-up (compiles)
        for name in runs:
            block(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    rebuild: list[float] = []
    for b in range(blocks):
        for name in (list(runs) if b % 2 == 0 else list(runs)[::-1]):
            per_it, build = block(name)
            times[name].append(per_it)
            if name == "seppgd":
                rebuild.append(build)
    ms = {name: 1000 * float(np.median(t)) for name, t in times.items()}
    t0, t1 = ms["none"], ms["seppgd"]
    share = float(np.median(rebuild)) * 1000 / 10 / t1
    print(f"| {points}^3, {'compiled' if compiled else 'eager'} ({', '.join(modes)}) | Adam {t0:.2f} ms/it "
          f"| SepPGD {t1:.2f} ms/it | rebuilds {100 * share:.1f} % | total overhead {100 * (t1 - t0) / t1:.1f} % "
          f"| data only {ms['data only']:.2f}, walls only {ms['walls only']:.2f} ms/it |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--compile", action="store_true", help="with --cost: train.compile = true for both runs")
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations-a", type=int, default=5000)
    ap.add_argument("--iterations-b", type=int, default=1500)
    ap.add_argument("--k-b", type=int, default=40)
    ap.add_argument("--settings", nargs="+", default=["a", "b"])
    args = ap.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.cost:
        cost(args.points, compiled=args.compile)
        return
    print("| setting | method | rel L2 at equal iterations | rel L2 at the other's wall time | wall s | preconditioner share |")
    print("|---|---|---|---|---|---|")
    curves = {}
    for setting in args.settings:
        res = {m: [run(setting, m, s, args) for s in args.seeds] for m in ("none", "seppgd")}
        curves[setting] = res
        for m, other in (("none", "seppgd"), ("seppgd", "none")):
            fin = [r.metrics["u"]["rel_l2"] for r in res[m]]
            # the error this method had reached when the other method finished (same seed)
            eq_t = [at_seconds(r, o.history["seconds"][-1]) for r, o in zip(res[m], res[other])]
            wall = [r.history["seconds"][-1] for r in res[m]]
            share = [r.trainer.preconditioners.seconds / r.history["seconds"][-1] for r in res[m]]
            print(f"| ({setting}) | {'Adam' if m == 'none' else 'SepPGD'} | {np.mean(fin):.3e} ± {np.std(fin):.1e} | "
                  f"{np.mean(eq_t):.3e} ± {np.std(eq_t):.1e} | {np.mean(wall):.1f} | {100 * np.mean(share):.1f} % |",
                  flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 2, figsize=(10, 4 * len(curves)), squeeze=False)
    for row, (setting, res) in enumerate(curves.items()):
        for m, color in (("none", "C0"), ("seppgd", "C3")):
            for i, r in enumerate(res[m]):
                label = ("Adam" if m == "none" else "SepPGD") if i == 0 else None
                axes[row, 0].semilogy(r.history["iteration"], r.history["rel_l2/u"], color=color, label=label)
                axes[row, 1].semilogy(r.history["seconds"], r.history["rel_l2/u"], color=color, label=label)
        axes[row, 0].set(title=f"({setting}) error vs iteration", xlabel="iteration", ylabel="rel L2")
        axes[row, 1].set(title=f"({setting}) error vs seconds", xlabel="seconds")
        axes[row, 0].legend()
    fig.tight_layout()
    fig.savefig(ROOT / f"bench/seppgd_{''.join(curves)}.png", dpi=100)


if __name__ == "__main__":
    main()
