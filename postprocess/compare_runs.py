"""Markdown table of several runs: problem, iterations, wall time, metrics (final and at the
lowest training loss), final losses; ``--figure PNG`` also overlays their convergence curves.

    python postprocess/compare_runs.py runs/a runs/b ... [--figure compare.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    from seppinn.errors import DataError
    from seppinn.safe_files import read_text

    s = json.loads(read_text(run / "summary.json", lambda m: DataError(m), what="summary.json"))
    best = s.get("metrics_at_min_loss", {})
    metrics = "; ".join(
        f"{f} rel_l2 {m['rel_l2']:.3e} (min-loss {best[f]['rel_l2']:.3e} @ {best['iteration']})"
        for f, m in s["metrics"].items()
    )
    losses = ", ".join(f"{k} {v:.2e}" for k, v in s["final_loss"].items())
    return f"| {run} | {s['problem']} | {s['iterations']} | {s['wall_seconds']:.0f} | {metrics or '-'} | {losses} |"


def main(argv: list[str]) -> int:
    figure = None
    if "--figure" in argv:
        i = argv.index("--figure")
        figure, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2 :]
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print("| run | problem | iterations | wall s | metrics | final losses |")
    print("|---|---|---|---|---|---|")
    for arg in argv:
        print(row(Path(arg)))
    if figure is not None:
        from seppinn.io.plots import compare_runs

        compare_runs(argv, figure)
        print(f"\n![convergence]({figure})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
