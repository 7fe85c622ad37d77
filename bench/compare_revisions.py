"""Step time of two git revisions, measured interleaved in one run: A, B, A, B, ... so that both see the
same machine load. Each measurement is ``bench/iteration.py --one`` of that revision, in a fresh
process whose ``seppinn`` is the revision's own (a temporary ``git worktree``).

    python bench/compare_revisions.py --before REV [--after REV] [--problems ...] [--size 64]
                                      [--modes eager compiled grid-free] [--rounds 5] [--repeats 30]

``--after`` defaults to the working tree as it is (uncommitted changes included). For each
(problem, mode) it prints the per-round medians (ms per step), the median and the fastest over the
rounds, and after / before for both; "best compiled" is, in each round, the faster of the compiled
columns of that revision (the cell issue 16 compares).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ("compiled", "grid-free")


def one(tree: Path, problem: str, n: int, mode: str, repeats: int) -> float:
    """ms per step of ``mode`` in ``tree``'s own bench/iteration.py, fresh process."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(tree / "bench" / "iteration.py"), "--one", problem, str(n), mode,
                          str(repeats)], capture_output=True, text=True, cwd=tree, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{tree}: {problem} {mode} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(json.loads(lines[-1])["ms"])


def summary(before: list[float], after: list[float]) -> str:
    mb, ma = statistics.median(before), statistics.median(after)
    fb, fa = min(before), min(after)
    rounds = " ".join(f"{b:.2f}/{a:.2f}" for b, a in zip(before, after))
    return (f"{rounds} | {mb:.2f} / {ma:.2f} ({(ma / mb - 1) * 100:+.0f} %) | "
            f"{fb:.2f} / {fa:.2f} ({(fa / fb - 1) * 100:+.0f} %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="git revision measured as 'before'")
    ap.add_argument("--after", help="git revision measured as 'after' (default: the working tree)")
    ap.add_argument("--problems", nargs="+", default=["helmholtz3d", "klein_gordon3d", "diffusion3d"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--modes", nargs="+", default=["eager", *COMPILED])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name, rev in (("before", args.before), ("after", args.after)):
            if rev is None:
                trees[name] = ROOT
                continue
            trees[name] = Path(tmp) / name
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees[name]), rev],
                           check=True, capture_output=True)
        try:
            commit = {k: subprocess.run(["git", "-C", str(t), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip() for k, t in trees.items()}
            print(f"# before {commit['before']}, after {commit['after']}"
                  f"{' + working tree' if args.after is None else ''}; {args.size}^3, {args.rounds} rounds "
                  f"of {args.repeats} steps, A/B interleaved; ms per step (median of the steps in a round)")
            print("| problem | mode | rounds: before/after | median over rounds | fastest round |")
            print("|---|---|---|---|---|")
            for problem in args.problems:
                ms: dict[tuple[str, str], list[float]] = {}
                for _ in range(args.rounds):
                    for mode in args.modes:
                        for name in ("before", "after"):
                            ms.setdefault((name, mode), []).append(
                                one(trees[name], problem, args.size, mode, args.repeats))
                for mode in args.modes:
                    print(f"| {problem} | {mode} | {summary(ms['before', mode], ms['after', mode])} |", flush=True)
                cols = [m for m in args.modes if m in COMPILED]
                if cols:
                    best = {k: [min(ms[k, m][r] for m in cols) for r in range(args.rounds)] for k in trees}
                    print(f"| {problem} | best compiled | {summary(best['before'], best['after'])} |", flush=True)
        finally:
            for name, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                                   capture_output=True)


if __name__ == "__main__":
    main()
