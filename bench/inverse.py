"""Inverse and parametric problems solved with no flags.

    python bench/inverse.py [--problems inverse_heat1d inverse_poisson2d parametric_helmholtz2d] [--threads N]
                            [--members 8]

Each problem is a plain ``seppinn solve problems/NAME.toml`` in its own process. Printed:
- learned parameters: the recovered value (final and at the lowest loss), its error against the
  value the shipped data were made with;
- coefficient fields and solutions: the rel L2 of every field;
- the parametric family: the rel L2 over the family and at its worst member, and the time against
  solving ``--members`` members one by one (the same file with the parameter axis replaced by a
  fixed parameter, each with no flags).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRUE = {"inverse_heat1d": {"k": 0.3}}  # the values the shipped data were made with (seppinn.sample_data)
PROBLEMS = ["inverse_heat1d", "inverse_poisson2d", "parametric_helmholtz2d"]
FAMILY_AXIS = 'k = { range = [1.0, 3.0], parameter = true }'  # parametric_helmholtz2d's parameter axis


def solve(path: Path, out: Path, threads: int | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "seppinn", "solve", str(path), "--out", str(out), "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd + (["--threads", str(threads)] if threads else []), check=True)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=PROBLEMS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--members", type=int, default=8)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores; seppinn solve problems/NAME.toml with no flags"
          + (f" but --threads {args.threads}" if args.threads else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems:
            path = ROOT / "problems" / f"{name}.toml"
            summary, wall = solve(path, Path(tmp) / name, args.threads)
            fields = ", ".join(f"{f} {m['rel_l2']:.2e}" for f, m in summary["metrics"].items())
            print(f"\n{name}: rel L2 {fields}; {wall:.0f} s")
            for p, true in TRUE.get(name, {}).items():
                got = summary["parameters"][p]
                print(f"  {p}: true {true:g}; final {got['final']:.5g} ({abs(got['final'] / true - 1) * 100:.2f} %), "
                      f"at min loss {got['at_min_loss']:.5g} ({abs(got['at_min_loss'] / true - 1) * 100:.2f} %)")
            if name == "parametric_helmholtz2d":
                m = summary["metrics"]["u"]
                print(f"  family: rel L2 {m['rel_l2']:.2e} over k in [1, 3]; worst member k = {m['worst_k']:.3g}: "
                      f"{m['rel_l2_worst']:.2e} (test grid: 30 values of k)")
                text = path.read_text()
                one_by_one, worst = 0.0, 0.0
                for k in np.linspace(1.0, 3.0, args.members):
                    member = Path(tmp) / f"member_{k:.4f}.toml"
                    member.write_text(text.replace(FAMILY_AXIS, "").replace(
                        "\n[fields]", f"\n[parameters]\nk = {float(k)!r}\n\n[fields]", 1))
                    s, w = solve(member, Path(tmp) / member.stem, args.threads)
                    one_by_one += w
                    worst = max(worst, s["metrics"]["u"]["rel_l2"])
                print(f"  {args.members} members solved one by one: {one_by_one:.0f} s in all (worst rel L2 {worst:.2e}); "
                      f"the family: {wall:.0f} s")


if __name__ == "__main__":
    main()
