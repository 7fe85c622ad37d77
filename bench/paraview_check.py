"""Open seppinn's outputs in real ParaView (Debian's paraview package, pvpython under Xvfb):
a 3-D run and a time-dependent run, their solution.xdmf (ParaView's default XDMF3 reader) and
exported .vtu/.vti/.pvd, then render slices and an isosurface with
postprocess/paraview_render.py. Prints one line per check.

    python bench/paraview_check.py [--workdir /tmp/seppinn-paraview]
    (needs: apt-get install paraview python3-paraview xvfb xauth)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = """
import sys
from paraview import simple
path, names, steps = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
r = simple.OpenDataFile(path)
times = list(r.TimestepValues) if hasattr(r.TimestepValues, "__len__") else []
r.UpdatePipeline(times[-1] if times else 0.0)
keys = list(r.PointData.keys())
ok = all(n in keys for n in names) and len(times) == steps
print(("ok  " if ok else "FAIL") + f" {type(r).__name__}: arrays {keys}, {len(times)} time steps (want {steps})")
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    pv = shutil.which("pvpython")
    xvfb = shutil.which("xvfb-run")
    if not pv or not xvfb:
        print("pvpython or xvfb-run not found (apt-get install paraview python3-paraview xvfb xauth)")
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="seppinn-paraview-"))
    check = work / "check.py"
    work.mkdir(parents=True, exist_ok=True)
    check.write_text(CHECK)
    seppinn = [sys.executable, "-m", "seppinn"]
    short = ["--solver", "quick", "--set", "train.iterations=50", "--set", "train.eval_every=25",
             "--set", "train.test_points=20", "--quiet"]
    cases = [("helmholtz3d", 0), ("klein_gordon3d", 20)]
    for name, steps in cases:
        run = work / name
        subprocess.run([*seppinn, "solve", str(ROOT / f"problems/{name}.toml"), "--out", str(run), *short], check=True)
        subprocess.run([*seppinn, "export", str(run), "--format", "vtu", "--points", "12"], check=True,
                       capture_output=True)
        subprocess.run([*seppinn, "export", str(run), "--format", "vti", "--points", "12"], check=True,
                       capture_output=True)
        files = [(run / "solution.xdmf", steps)]
        files += [(run / "export_12.vtu", 0), (run / "export_12.vti", 0)] if not steps else \
                 [(run / "export_12.pvd", 12)]
        for path, n in files:
            out = subprocess.run([xvfb, "-a", pv, str(check), str(path), "u,u_reference,u_error", str(n)],
                                 capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
            print(f"{path.relative_to(work)}: {line[0] if line else 'FAIL (pvpython: ' + out.stderr[-200:] + ')'}")
        out = subprocess.run([xvfb, "-a", "-s", "-screen 0 1280x1024x24", pv,
                              str(ROOT / "postprocess/paraview_render.py"), str(run), "u"],
                             capture_output=True, text=True)
        pngs = [p for p in ("paraview_slices.png", "paraview_iso.png") if (run / p).exists()]
        print(f"{name}: rendered {', '.join(pngs) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
