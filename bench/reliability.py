"""Reliability scenarios, each run through the real CLI in a subprocess; prints scenario -> outcome.

    python bench/reliability.py

1. interrupt + resume: SIGINT during a float64 SepPGD run with random resampling, then
   --resume; the final parameters and history must equal an uninterrupted run's exactly.
2. divergence: a residual exp(40 u) - 1 with Adam at lr 0.5 overflows: exit 1, the message names
   term and iteration, model.pt / solution.h5 hold the last good (finite) checkpoint.
3. divergence with train.on_nan = "rollback": rolls back, halves the learning rate, finishes.
4. full disk: a previous good run in the folder, then a run whose file writes fail (the child's
   RLIMIT_FSIZE caps files at 64 KiB, as a full disk would): exit 1, one line, and the previous
   solution.h5 / summary.json are byte-identical, no temporary files left.
5. hostile input: expressions that try to run code, huge or deep expressions, a bad override,
   a truncated data file: exit 2, one line each, nothing written, no code run.
6. memory guard: Klein-Gordon at 1024^3 (nonlinear: on the grid) is refused by `seppinn check` with
   the estimate and the limit; the estimate against the measured peak RSS of 20 iterations of
   Helmholtz on the grid at 32^3-256^3 and grid-free at 256^3-2048^3.

7. hostile files (issue 15): crafted checkpoints, FIFOs and devices, expansion, derivative and
   decompression bombs, unbounded reference-solver work, the memory guard on test grids and
   exports, corrupt checkpoints, multi-line input, non-finite references, HDF5 external storage,
   foreign folders: one row per kind with each case's exit status and time.

    python bench/reliability.py [--only interrupt_resume divergence full_disk hostile hostile_files memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = textwrap.dedent("""
    [problem]
    name = "poisson2d"
    [axes]
    x = [-1.0, 1.0]
    y = [0.0, 2.0]
    [fields]
    u = {}
    [definitions]
    exact = "sin(pi*x)*sin(pi*y)"
    [[equations]]
    residual = "RESIDUAL"
    [[conditions]]
    name = "walls"
    on = "boundary"
    value = "exact"
    [data]
    u = "exact"
    [reference]
    u = "exact"
""")
EXACT = ["train.dtype=float64", "train.sampling=random", "train.resample_every=7", "train.points=12",
         "train.iterations=3000", "train.checkpoint_every=50", "train.eval_every=50", "precondition.method=seppgd",
         "precondition.k=4", "precondition.update_every=5", "model.rank=8", "model.width=16"]
ROWS: list[tuple[str, str]] = []


def cli(*args: str, cwd: Path, limit_file: int | None = None, **kw) -> subprocess.CompletedProcess:
    def preexec() -> None:
        if limit_file is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file, limit_file))

    return subprocess.run([sys.executable, "-m", "seppinn", *args], capture_output=True, text=True, cwd=cwd,
                          preexec_fn=preexec, **kw)


def sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def row(name: str, ok: bool, detail: str) -> None:
    ROWS.append((name, f"{'PASS' if ok else 'FAIL'}: {detail}"))
    print(f"| {name} | {ROWS[-1][1]} |", flush=True)


def interrupt_resume(d: Path) -> None:
    p = d / "p.toml"
    p.write_text(PROBLEM.replace("RESIDUAL", "lap(u) - lap(exact)"))
    full = cli("solve", str(p), "--out", str(d / "full"), "--quiet", *sets(EXACT), cwd=d)
    proc = subprocess.Popen([sys.executable, "-m", "seppinn", "solve", str(p), "--out", str(d / "part"), "--quiet",
                             *sets(EXACT)], stderr=subprocess.PIPE, text=True, cwd=d)
    while not (d / "part/model.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate()[1]
    stopped = torch.load(d / "part/model.pt", weights_only=True)["iteration"]
    resumed = cli("solve", str(p), "--resume", str(d / "part"), "--quiet", cwd=d)
    a = torch.load(d / "full/model.pt", weights_only=True)
    b = torch.load(d / "part/model.pt", weights_only=True)
    same_params = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    same_hist = all((a["history"][k] == b["history"][k]).all() for k in a["history"] if k != "seconds")
    row("interrupt (SIGINT) + --resume, float64, SepPGD, random points",
        full.returncode == 0 and proc.returncode == 130 and resumed.returncode == 0 and same_params and same_hist,
        f"exit {proc.returncode} at iteration {stopped} ('{err.strip().splitlines()[-1]}'); resume exit "
        f"{resumed.returncode}; final parameters {'identical' if same_params else 'DIFFER'}, history "
        f"{'identical' if same_hist else 'DIFFERS'} (all columns but seconds) to the uninterrupted run")


def divergence(d: Path) -> None:
    p = d / "nan.toml"
    # without the data term, as tests/test_reliability.py: a learning rate doubling every 20 iterations makes
    # exp(40 u) overflow near iteration 124 (where exactly depends on the CPU's rounding)
    p.write_text(PROBLEM.replace("RESIDUAL", "exp(40*u) - 1").replace('[data]\nu = "exact"\n', ""))
    args = sets(["train.lr=0.01", "train.schedule=exponential", "train.decay_rate=2.0", "train.decay_every=20",
                 "train.eval_every=5", "train.checkpoint_every=10", "model.rank=4", "model.width=8",
                 "model.activation=tanh", "train.points=8", "train.diverge_factor=0"])
    r = cli("solve", str(p), "--out", str(d / "nan"), "--quiet", *args, "--set", "train.iterations=300",
            "--set", "train.on_nan=stop", cwd=d)
    ckpt = torch.load(d / "nan/model.pt", weights_only=True) if (d / "nan/model.pt").exists() else None
    finite = ckpt is not None and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    row("divergence (non-finite loss, train.on_nan = \"stop\", no climb guard)", r.returncode == 1 and finite and (d / "nan/solution.h5").exists(),
        f"exit {r.returncode}: '{r.stderr.strip()}'; model.pt (iteration {ckpt and ckpt['iteration']}) finite: {finite}")
    # the blow-up's iteration depends on the CPU's rounding: end the rolled-back run 5 iterations after it, so
    # that it only finishes by rolling back at a lower rate (the doubling rate outruns the halvings later on)
    bad = int(r.stderr.split("at iteration ")[1].split(";")[0]) if "at iteration " in r.stderr else 195
    end = bad + 5
    r = cli("solve", str(p), "--out", str(d / "nan_rb"), "--quiet", *args, "--set", f"train.iterations={end}",
            "--set", "train.on_nan=rollback", cwd=d)
    summary = json.loads((d / "nan_rb/summary.json").read_text()) if r.returncode == 0 else {}
    rollbacks = r.stderr.strip().count("rolled back")
    row(f"the same with train.on_nan = \"rollback\" ({end} iterations: 5 after the blow-up)", r.returncode == 0
        and rollbacks > 0 and summary.get("iterations") == end, f"exit {r.returncode}; {summary.get('iterations')} "
        f"iterations done after {rollbacks} rollback(s): '{r.stderr.strip().splitlines()[0] if rollbacks else ''}'")


def full_disk(d: Path) -> None:
    p = d / "p.toml"
    p.write_text(PROBLEM.replace("RESIDUAL", "lap(u) - lap(exact)"))
    out = d / "disk"
    first = cli("solve", str(p), "--out", str(out), "--quiet", *sets(["train.iterations=20", "train.test_points=60"]),
                cwd=d)
    before = {f: (out / f).read_bytes() for f in ("solution.h5", "summary.json", "model.pt")}
    r = cli("solve", str(p), "--out", str(out), "--quiet", *sets(["train.iterations=40", "train.test_points=60"]),
            cwd=d, limit_file=64 * 1024)
    after = {f: (out / f).read_bytes() for f in before}
    leftovers = [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
    lines = r.stderr.strip().splitlines()
    row("full disk while writing outputs", first.returncode == 0 and r.returncode == 1 and len(lines) == 1
        and after == before and not leftovers,
        f"exit {r.returncode}: '{lines[-1] if lines else ''}'; previous files "
        f"{'byte-identical' if after == before else 'CHANGED'}; temporary files left: {leftovers or 'none'}")


def hostile(d: Path) -> None:
    base = PROBLEM.replace("RESIDUAL", "lap(u) - lap(exact)")
    cases = {
        "code in an expression": base.replace('value = "exact"', 'value = "__import__(\'os\').system(\'touch PWNED\')"'),
        "attribute escape": base.replace('value = "exact"', 'value = "().__class__.__bases__[0]"'),
        "huge power": base.replace('value = "exact"', 'value = "(x+y)**1000000"'),
        "deep nesting": base.replace('value = "exact"', f'value = "{"(" * 3000}x{")" * 3000}"'),
        "exponential growth": base.replace('value = "exact"', 'value = "lap(lap(lap(lap(exp(x**2*y**3)*sin(x*y)))))"'),
    }
    (d / "trunc.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(100))
    cases["truncated HDF5"] = base.replace('u = "exact"\n[reference]', 'u = { file = "trunc.h5" }\n[reference]')
    results = []
    for name, text in cases.items():
        f = d / "hostile.toml"
        f.write_text(text)
        r = cli("solve", str(f), "--out", str(d / "hostile_out"), cwd=d, timeout=120)
        results.append((name, r.returncode, len(r.stderr.strip().splitlines()), r.stderr.strip()[:90]))
    r = cli("solve", str(d / "hostile.toml"), "--set", "train.lr=1e999", "--out", str(d / "hostile_out"), cwd=d)
    results.append(("override train.lr=1e999", r.returncode, len(r.stderr.strip().splitlines()), r.stderr.strip()[:90]))
    ok = all(code == 2 and n == 1 for _, code, n, _ in results) and not (d / "PWNED").exists() \
        and not (d / "hostile_out").exists()
    row("hostile input (6 problem files, 1 override)", ok,
        "; ".join(f"{name}: exit {code}" for name, code, _, _ in results) + "; no code ran, nothing written")


class _Sentinel:
    """Unpickling it creates the file PWNED: the payload of a crafted checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return open, (self.path, "w")


def _png_header(path: Path, width: int, height: int) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def hostile_files(d: Path) -> None:
    """Issue 15's kinds through the CLI: one row per kind, each case: exit status, lines printed,
    seconds (start-up included), whether anything was written or executed."""
    import h5py

    d = d / "hf"
    d.mkdir()
    base = PROBLEM.replace("RESIDUAL", "lap(u) - lap(exact)").replace('[data]\nu = "exact"\n', "")
    good = d / "p.toml"
    good.write_text(base)
    data = textwrap.dedent("""
        [problem]
        name = "fit"
        kind = "data"
        [axes]
        x = [0.0, 1.0]
        y = [0.0, 1.0]
        [fields]
        u = {}
        [data]
        u = SPEC
    """)

    def problem(name: str, text: str) -> str:
        (d / name).write_text(text)
        return str(d / name)

    tiny = sets(["train.iterations=4", "train.points=8", "train.test_points=6", "model.rank=4", "model.width=8"])
    run = d / "run"
    cli("solve", str(good), "--out", str(run), "--quiet", *tiny, cwd=d, check=True)
    evil = d / "evil"
    evil.mkdir()
    torch.save({"format": "seppinn-checkpoint", "x": _Sentinel(str(d / "PWNED"))}, evil / "model.pt")
    fifos = d / "fifos"
    fifos.mkdir()
    for name in ("p.toml", "s.toml", "d.npy", "d.h5", "d.csv", "target.h5", "model.pt", "summary.json", "solution.h5"):
        os.mkfifo(fifos / name)
    with h5py.File(d / "link.h5", "w") as f:
        f["u"] = h5py.ExternalLink(str(fifos / "target.h5"), "/u")
    with h5py.File(d / "external.h5", "w") as f:
        f.create_dataset("u", shape=(4, 4), dtype="u1", external=[("/etc/passwd", 0, 16)])
    ckpt = torch.load(run / "model.pt", weights_only=True)
    broken = d / "broken"
    broken.mkdir()
    torch.save({k: v for k, v in ckpt.items() if k != "model"}, broken / "model.pt")
    _png_header(d / "bomb.png", 20000, 20000)
    mine = d / "mine"
    mine.mkdir()
    (mine / "solution.h5").write_bytes(b"the user's own file")
    bomb = "(x + y + sin(x) + cos(y) + exp(x) + tanh(y))**64"
    diffusion = (ROOT / "problems/diffusion3d.toml").read_text().replace("D = 0.05", "D = 1e6")
    kinds: dict[str, list[tuple[list[str], int]]] = {
        "crafted model.pt (export, --resume, solve --out)": [
            (["export", str(evil)], 2), (["solve", str(good), "--resume", str(evil)], 2),
            (["solve", str(good), "--out", str(evil), *tiny], 2)],
        "FIFOs (problem, solver, .npy, .h5, CSV, HDF5 external link, model.pt, summary.json, solution.h5)": [
            (["check", str(fifos / "p.toml")], 2), (["check", str(good), "--solver", str(fifos / "s.toml")], 2),
            (["check", problem("npy.toml", data.replace("SPEC", f'{{ file = "{fifos}/d.npy" }}'))], 2),
            (["check", problem("h5.toml", data.replace("SPEC", f'{{ file = "{fifos}/d.h5" }}'))], 2),
            (["check", problem("csv.toml", data.replace("SPEC", f'{{ points = "{fifos}/d.csv" }}'))], 2),
            (["check", problem("link.toml", data.replace("SPEC", '{ file = "link.h5" }'))], 2),
            (["export", str(fifos)], 2), (["solve", str(good), "--out", str(fifos), *tiny], 2),
            (["plot", str(fifos), "--out", str(d / "c.png")], 2)],
        "devices (/dev/zero as problem file and as points CSV)": [
            (["check", "/dev/zero"], 2),
            (["check", problem("zero.toml", data.replace("SPEC", '{ points = "/dev/zero" }'))], 2)],
        "expansion bomb (6-term sum to the 64th in a source and a reference; accepted unexpanded)": [
            (["check", problem("bomb.toml", base.replace('exact = "sin(pi*x)*sin(pi*y)"', f'exact = "sin(pi*x)*sin(pi*y)"\nbomb = "{bomb}"')
                                .replace('"lap(u) - lap(exact)"', '"lap(u) - lap(exact) + 1e-60*bomb"')
                                .replace('u = "exact"', 'u = "exact + 1e-60*bomb"'))], 0)],
        "derivative bombs (diff(g, x, 4, 4, ...) x 300; lap(lap(lap(u))))": [
            (["check", problem("diff.toml", base.replace('exact = "sin(pi*x)*sin(pi*y)"',
                                                         'exact = "diff(sin(x)*exp(x), x' + ", 4" * 300 + ')"'))], 2),
            (["check", problem("lap3.toml", base.replace('"lap(u) - lap(exact)"', '"lap(lap(lap(u)))"'))], 2)],
        "reference solver work (diffusion D = 1e6)": [
            (["solve", problem("diff3d.toml", diffusion), "--out", str(d / "o1"), *tiny], 2)],
        "decompression bomb (PNG declaring 20,000^2 pixels, 200 bytes)": [
            (["check", problem("png.toml", data.replace("SPEC", '{ file = "bomb.png" }'))], 2)],
        "memory guard (train.test_points = 100000 in 3-D; export --points 200000 vtu)": [
            (["check", str(ROOT / "problems/helmholtz3d.toml"), "--set", "train.test_points=100000"], 2),
            (["export", str(run), "--format", "vtu", "--points", "200000"], 2)],
        "corrupt checkpoint (no weights)": [(["export", str(broken)], 2)],
        "multi-line text in the input (a TOML multi-line string)": [
            (["check", problem("ml.toml", base.replace('"lap(u) - lap(exact)"', '"""lap(u)\nTraceback (most recent call last):"""'))], 2)],
        "non-finite references and constants (log(x) on [-1, 1]; 1e200*1e200)": [
            (["solve", problem("log.toml", base.replace('u = "exact"', 'u = "log(x)"')), "--out", str(d / "o2"), *tiny], 2),
            (["solve", problem("big.toml", base.replace('u = "exact"', 'u = "1e200*1e200*exact"')), "--out", str(d / "o3"),
              *tiny], 2)],
        "HDF5 external storage (/etc/passwd's bytes)": [
            (["check", problem("ext.toml", data.replace("SPEC", '{ file = "external.h5" }'))], 2)],
        "foreign folder (the user's solution.h5 in --out)": [(["solve", str(good), "--out", str(mine), *tiny], 2)],
    }
    for kind, cases in kinds.items():
        parts, ok = [], True
        for args, want in cases:
            t = time.perf_counter()
            try:
                r = cli(*args, cwd=d, timeout=120)
                code, lines = r.returncode, r.stderr.strip().splitlines()
            except subprocess.TimeoutExpired:
                code, lines = None, ["(hung: killed after 120 s)"]
            secs = time.perf_counter() - t
            ok &= code == want and (want == 0 or len(lines) == 1)
            excerpt = lines[0].replace(str(d), "DIR")[:90] if lines else ""
            parts.append(f"exit {code} in {secs:.1f} s" + (f" ('{excerpt}...')" if want and not parts else ""))
        row(kind, ok, "; ".join(parts))
    t = time.perf_counter()
    cli("check", str(good), cwd=d, check=True)
    startup = time.perf_counter() - t
    unchanged = (mine / "solution.h5").read_bytes() == b"the user's own file"
    written = [p.name for p in d.glob("o*") if p.is_dir()]
    row("after all of the above", unchanged and not (d / "PWNED").exists() and not written,
        f"the user's file {'unchanged' if unchanged else 'CHANGED'}; no code ran: {not (d / 'PWNED').exists()}; "
        f"result folders written: {written or 'none'}; for scale, `seppinn check` of a good problem (the "
        f"interpreter and torch starting) takes {startup:.1f} s")


def memory(d: Path) -> None:
    r = cli("check", str(ROOT / "problems/klein_gordon3d.toml"), "--set", "train.points=1024", cwd=d)
    row("memory guard: klein_gordon3d at 1024^3", r.returncode == 2, f"exit {r.returncode}: '{r.stderr.strip()}'")
    code = textwrap.dedent("""
        import resource, sys, seppinn
        n, grid_free = int(sys.argv[1]), sys.argv[2] == "free"
        prep = seppinn.prepare("{root}/problems/helmholtz3d.toml", "spinn",
                               {{"train.points": n, "train.iterations": 20, "train.test_points": 8,
                                 "train.grid_free": grid_free}})
        est = prep.plan.memory["total"]
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        seppinn.run(prep, progress=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(est / 2**20, (peak - base) / 2**20)
    """).format(root=ROOT)
    parts = []
    for n, how in ((32, "grid"), (64, "grid"), (128, "grid"), (256, "grid"), (256, "free"), (1024, "free"),
                   (2048, "free")):
        est, used = map(float, subprocess.run([sys.executable, "-c", code, str(n), how], capture_output=True,
                                              text=True, check=True).stdout.split())
        parts.append(f"{n}^3 {'grid-free' if how == 'free' else 'grid'}: estimate {est:.0f} MiB, "
                     f"measured peak growth {used:.0f} MiB")
    row("memory estimate vs measured (helmholtz3d, spinn preset, 20 iterations)",
        all(float(p.split("estimate ")[1].split(" MiB")[0]) >= float(p.split("growth ")[1].split(" MiB")[0])
            for p in parts), "; ".join(parts))
    export = textwrap.dedent("""
        import resource, sys, time, seppinn
        from seppinn.export import export
        seppinn.solve("{root}/problems/helmholtz3d.toml", "quick", {{"train.iterations": 10}}, out="{d}/h", progress=False)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t = time.perf_counter()
        export("{d}/h", "xdmf", int(sys.argv[1]))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print((peak - base) / 2**20, time.perf_counter() - t)
    """).format(root=ROOT, d=d)
    n = 512
    grew, secs = map(float, subprocess.run([sys.executable, "-c", export, str(n)], capture_output=True, text=True,
                                           check=True).stdout.split())
    whole = 6 * 8 * n**3 / 2**20  # u, reference, error and their VTK-ordered copies, float64
    row(f"export {n}^3 (xdmf, slab by slab)", grew < 1024,
        f"peak memory growth {grew:.0f} MiB against {whole:.0f} MiB for the whole arrays; {secs:.0f} s")


def main() -> None:
    scenarios = {f.__name__: f for f in (interrupt_resume, divergence, full_disk, hostile, hostile_files, memory)}
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", choices=list(scenarios), default=list(scenarios))
    args = ap.parse_args()
    print(f"# bench/reliability.py on {os.uname().machine}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print("| scenario | outcome |\n|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in args.only:
            scenarios[name](d)


if __name__ == "__main__":
    main()
