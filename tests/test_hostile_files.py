"""Hostile and careless input, round two: checkpoints that would run code, FIFOs and devices,
expansion, derivative and decompression bombs, memory the guard must foresee, corrupt
checkpoints, multi-line messages, non-finite data and references, folders and files that are
not ours. Every case must end in one line and exit status 2 (or the documented behaviour)
before any training, with nothing written and nothing executed."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import seppinn
from seppinn.api import prepare
from seppinn.cli import main
from seppinn.io.data_sources import load_all
from seppinn.errors import DataError, ProblemError, SeppinnError, SolverConfigError, one_line
from seppinn.problem.expressions import expanded_terms, symbolic_budget
from seppinn.reference_solvers import nonlinear_diffusion_fd
from seppinn.io.runs import read_checkpoint, storable

from .conftest import DATA_PROBLEM, HELMHOLTZ_SMALL, ROOT, write

TINY = ["--set", "train.iterations=4", "--set", "train.points=8", "--set", "train.test_points=6",
        "--set", "model.rank=4", "--set", "model.width=8", "--set", "train.eval_every=2", "--quiet"]
class Sentinel:
    """Unpickling this creates ``path``: what a crafted checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return open, (str(self.path), "w")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not err.startswith("Traceback"), err
    return err.strip()


def in_thread(fn: Callable[[], object], fifos: list[Path], seconds: float = 60) -> object:
    """fn() in a thread; it must finish within ``seconds``. A thread stuck in open() on a FIFO is
    released (the FIFOs opened for writing) and the test fails."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        for f in fifos:
            os.close(os.open(f, os.O_RDWR | os.O_NONBLOCK))
        th.join(10)
        pytest.fail(f"still running after {seconds} s")
    return box["value"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real finished run (problem file, run folder) to corrupt."""
    d = tmp_path_factory.mktemp("run")
    path = write(d / "p.toml", HELMHOLTZ_SMALL)
    assert main(["solve", str(path), "--out", str(d / "run"), *TINY]) == 0
    return path, d / "run"


# ------------------------------------------------------------------ checkpoints never unpickle
def test_crafted_checkpoint_runs_no_code_on_export_resume_or_solve(tmp_path, capsys, run_dir):
    problem, _ = run_dir
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"format": "seppinn-checkpoint", "payload": Sentinel(sentinel)}, evil / "model.pt")
    pickle.loads(pickle.dumps(Sentinel(tmp_path / "probe")))  # the payload is live: unpickling creates a file
    assert (tmp_path / "probe").exists()
    for args in (["export", str(evil)], ["solve", str(problem), "--resume", str(evil)],
                 ["solve", str(problem), "--out", str(evil), *TINY]):
        assert main(args) == 2, args
        err = one_error_line(capsys)
        assert "model.pt" in err, err
        assert not sentinel.exists(), args
    main(["export", str(evil)])
    assert re.search(r"(?i)global [\w.]*open", one_error_line(capsys))
    # a forged run.json naming the problem: solve writes over the folder without ever loading model.pt
    (evil / "run.json").write_text(json.dumps({"problem": "poisson2d"}))
    assert main(["solve", str(problem), "--out", str(evil), *TINY]) == 0
    assert not sentinel.exists()


def test_checkpoints_load_with_weights_only_and_keep_their_history(run_dir):
    _, out = run_dir
    for name in ("model.pt", "best.pt"):
        raw = torch.load(out / name, weights_only=True)
        assert raw["format"] == "seppinn-checkpoint" and isinstance(raw["history"]["iteration"], torch.Tensor)
    ckpt = read_checkpoint(out)
    assert ckpt["history"]["iteration"].dtype == np.int64 and list(ckpt["history"]["iteration"]) == [0, 2, 4]
    assert storable({"a": np.float32(2.5), "b": (np.arange(2),)})["b"][0].tolist() == [0, 1]
    with pytest.raises(TypeError):
        storable({"f": lambda: 0})


def _bad_weights(c: dict) -> None:
    for state in (c["model"], c["training"]["model"]):
        state[next(iter(state))] = torch.zeros(3, 3)


EXPORT, RESUME = "export", "resume"


@pytest.mark.parametrize("corrupt, failures", [
    (lambda c: c.pop("model"), {EXPORT: "has no 'model'", RESUME: "has no 'model'"}),
    (lambda c: c.update(solver="[train\nlr = "), {EXPORT: "solver settings are not TOML", RESUME: "not TOML"}),
    (lambda c: c.update(iteration="ten"), {EXPORT: "'iteration' is str", RESUME: "'iteration' is str"}),
    (_bad_weights, {EXPORT: "weights do not fit the model", RESUME: "training state cannot be restored"}),
    (lambda c: c["training"].pop("adam"), {EXPORT: "missing adam", RESUME: "training state is incomplete (missing adam)"}),
    (lambda c: c["training"].update(points="nonsense"), {RESUME: "training state cannot be restored (AttributeError"}),
    (lambda c: c["history"].update(bad=torch.zeros(2, 2)), {EXPORT: "'history' is not a table", RESUME: "'history'"}),
])
def test_corrupt_checkpoints_give_one_line_on_export_and_resume(tmp_path, capsys, run_dir, corrupt, failures):
    problem, out = run_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    ckpt = torch.load(out / "model.pt", weights_only=True)
    corrupt(ckpt)
    torch.save(ckpt, bad / "model.pt")
    for command, message in failures.items():
        args = ["export", str(bad), "--points", "5"] if command == EXPORT else ["solve", str(problem), "--resume", str(bad)]
        assert main(args) == 2, args
        err = one_error_line(capsys)
        assert message in err and "model.pt" in err, (args, err)
    assert sorted(p.name for p in bad.iterdir()) == ["model.pt"]


# ------------------------------------------------------------------ FIFOs and devices
def _data_problem(d: Path, spec: str) -> Path:
    return write(d / "p.toml", DATA_PROBLEM.replace("SPEC", spec))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _external_link_to_fifo(d: Path) -> Path:
    fifo = _fifo(d / "target.h5")
    with h5py.File(d / "d.h5", "w") as f:
        f["u"] = h5py.ExternalLink(str(fifo), "/u")
    return fifo


def _link_to_zero(d: Path) -> list[Path]:
    os.symlink("/dev/zero", d / "z.csv")
    return []


CASES: dict[str, Callable[[Path, Path], tuple[list[str], list[Path]]]] = {
    "problem file": lambda d, p: (["check", str(_fifo(d / "f.toml"))], [d / "f.toml"]),
    "solver file": lambda d, p: (["check", str(p), "--solver", str(_fifo(d / "s.toml"))], [d / "s.toml"]),
    "npy data": lambda d, p: (["check", str(_data_problem(d, '{ file = "d.npy" }'))], [_fifo(d / "d.npy")]),
    "h5 data": lambda d, p: (["check", str(_data_problem(d, '{ file = "d.h5" }'))], [_fifo(d / "d.h5")]),
    "points csv": lambda d, p: (["check", str(_data_problem(d, '{ points = "d.csv" }'))], [_fifo(d / "d.csv")]),
    "h5 external link": lambda d, p: (["check", str(_data_problem(d, '{ file = "d.h5" }'))], [_external_link_to_fifo(d)]),
    "model.pt": lambda d, p: (["export", str(d)], [_fifo(d / "model.pt")]),
    "summary.json": lambda d, p: (["solve", str(p), "--out", str(d), *TINY], [_fifo(d / "summary.json")]),
    "run.json": lambda d, p: (["solve", str(p), "--out", str(d), *TINY], [_fifo(d / "run.json")]),
    "solution.h5": lambda d, p: (["plot", str(d), "--out", str(d / "c.png")], [_fifo(d / "solution.h5")]),
    "/dev/zero problem": lambda d, p: (["check", "/dev/zero"], []),
    "/dev/zero points": lambda d, p: (["check", str(_data_problem(d, '{ points = "z.csv" }'))], _link_to_zero(d)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fifos_and_devices_are_refused_without_opening_them(tmp_path, capsys, case):
    problem = write(tmp_path / "good.toml", HELMHOLTZ_SMALL)
    d = tmp_path / "d"
    d.mkdir()
    args, fifos = CASES[case](d, problem)
    code = in_thread(lambda: main(args), fifos)
    err = one_error_line(capsys)
    assert code == 2, err
    assert any(w in err for w in ("FIFO", "character device", "unreadable", "external link")), err
    assert not (d / "model.pt").is_file() and not (d / "solution.h5").is_file()


# ------------------------------------------------------------------ work bombs
BOMB = "(x + y + sin(x) + cos(y) + exp(x) + tanh(y))**64"  # sympy.expand: C(69, 5) = 11 million terms


def test_expansion_bomb_compiles_without_expanding(tmp_path):
    text = (HELMHOLTZ_SMALL.replace('exact = "sin(pi*x)*sin(pi*y)"', f'exact = "sin(pi*x)*sin(pi*y)"\nbomb = "{BOMB}"')
            .replace('residual = "lap(u) - lap(exact)"', 'residual = "lap(u) - lap(exact) + 1e-60*bomb"')
            .replace('u = "exact"', 'u = "exact + 1e-60*bomb"'))
    path = write(tmp_path / "p.toml", text)
    tracemalloc.start()
    try:
        prep = in_thread(lambda: prepare(path, overrides={"train.dtype": "float64"}), [], seconds=120)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not isinstance(prep, BaseException), prep
    assert peak < 300 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert "u" not in prep.compiled.separable_references  # too large to expand: metrics on the grid


def test_expanded_terms_bounds_sympy_expand():
    import sympy as sp

    x, y, z = sp.symbols("x y z")
    for e in [(x + y + z) ** 3, (x + y) * (z + 1), sp.sin((x + y) ** 2) * (x + 1), (x + 2 * y) ** 5 * z, x / (y + 1)]:
        assert expanded_terms(e) == len(sp.Add.make_args(sp.expand(e))), e
    assert expanded_terms((x + y + z + sp.sin(x) + sp.cos(y) + sp.exp(z)) ** 64) == 5001  # counted no further
    assert expanded_terms(sp.sin((x + y + z) ** 100)) == 5001  # expand goes into function arguments too


@pytest.mark.parametrize("definition, message", [
    ("diff(sin(x)*exp(x), x" + ", 4" * 300 + ")", "diff: order 901 along x; at most 4 per axis"),
    ("diff(u, x, 3, y, x, 2)", "diff: order 5 along x"),
    ("lap(lap(lap(u)))", "a derivative of order 6 along"),
])
def test_derivative_bombs_are_refused_at_once(definition, message):
    start = time.perf_counter()
    with pytest.raises(ProblemError, match=message.replace("(", r"\(")):
        seppinn.Problem("d", axes={"x": (0, 1), "y": (0, 1)}, fields=["u"], definitions={"g": definition})
    assert time.perf_counter() - start < 30  # a hang guard, not a timing target


def test_symbolic_budget_stops_runaway_work():
    with pytest.raises(ProblemError, match="took more than 0.2 s of symbolic work"):
        with symbolic_budget("the test", 0.2):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                pass
    with symbolic_budget("nothing", 0.2):
        pass
    time.sleep(0.3)  # the timer is cancelled: no late alarm


def test_reference_solver_refuses_unbounded_work():
    u0 = np.ones((41, 41))
    with pytest.raises(ValueError, match=r"D = 1e\+06 needs .* RK4 steps"):
        nonlinear_diffusion_fd(u0, 1e6, 0.05, [0.0, 1.0])
    text = (ROOT / "problems/diffusion3d.toml").read_text().replace("D = 0.05", "D = 1e6")
    with pytest.raises(ProblemError, match=r"reference\.u\.solver: reference solver 'nonlinear_diffusion2d': D = 1e\+06"):
        seppinn.solve(seppinn.problem.problem_file.load_problem_text(text, "diffusion.toml"),
                      overrides={"train.iterations": 1, "train.points": 4, "model.rank": 2}, progress=False)


def _png(path: Path, width: int, height: int) -> Path:
    """A small, valid-looking PNG whose header declares width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size", [(9000, 9000), (20000, 20000)])  # above our cap; above Pillow's own
def test_decompression_bombs_are_refused_before_decoding(tmp_path, size):
    _png(tmp_path / "b.png", *size)
    problem = seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ file = "b.png" }'))
    with pytest.raises(DataError, match="pixels are refused before they are decoded"):
        load_all(problem)


# ------------------------------------------------------------------ memory the guard must foresee
def test_memory_guard_covers_the_test_grid_and_exports(tmp_path, capsys, run_dir):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL.replace('y = [0.0, 2.0]', 'y = [0.0, 2.0]\nz = [0.0, 1.0]'))
    with pytest.raises(SolverConfigError, match="estimated peak memory"):
        prepare(path, overrides={"train.test_points": 100000})
    _, out = run_dir
    for fmt, points in (("vtu", 200000), ("vti", 200000), ("xdmf", 10**7)):
        assert main(["export", str(out), "--format", fmt, "--points", str(points)]) == 2
        assert "--points: exporting" in one_error_line(capsys)
    assert not list(out.glob("export_*"))


# ------------------------------------------------------------------ one line, exit 2, before training
def test_messages_stay_on_one_line(tmp_path, capsys):
    cases = [
        HELMHOLTZ_SMALL.replace('"lap(u) - lap(exact)"', '"""lap(u)\nTraceback (most recent call last):\n  x"""'),
        HELMHOLTZ_SMALL.replace("[fields]", '[fields]\n"v\nTraceback" = {}'),
        HELMHOLTZ_SMALL.replace('residual = "lap(u) - lap(exact)"', 'residual = "lap(u) - lap(exact)"\n"bad\nkey" = 1'),
    ]
    for i, text in enumerate(cases):
        assert main(["check", str(write(tmp_path / f"p{i}.toml", text))]) == 2
        err = one_error_line(capsys)
        assert "\\n" in err, err
    h5 = tmp_path / "d.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x01" * 200)
    assert main(["check", str(_data_problem(tmp_path, '{ file = "d.h5" }'))]) == 2
    assert "cannot read" in one_error_line(capsys)
    assert main(["check", str(write(tmp_path / "q.toml", HELMHOLTZ_SMALL)), "--set", "train.iterations=1\n[evil]\nx=1"]) == 2
    assert "line break" in one_error_line(capsys)
    assert one_line("a\r\nb\x1b[2J\u2028") == "a\\r\\nb\\x1b[2J\\u2028"
    assert len(one_line("x" * 50000)) <= 1000


NONFINITE = [
    ('u = "log(x)"', 'reference.u: the reference of \'u\' is not finite'),
    ('u = "1/(x + 1)"', 'reference.u: the reference of \'u\' is not finite'),
    ('u = "1e200*1e200*exact"', "beyond double precision"),
    ('u = "exp(exp(10))*exact"', "beyond double precision"),
]


@pytest.mark.parametrize("reference, message", NONFINITE)
def test_non_finite_references_exit_2_before_training(tmp_path, capsys, reference, message):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL.replace('u = "exact"', reference))
    out = tmp_path / "out"
    assert main(["solve", str(path), "--out", str(out), *TINY]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    (('value = "exact"', 'value = "log(x)"'), "term 'walls'"),
    (('residual = "lap(u) - lap(exact)"', 'residual = "lap(u) - 1/(x + 1)"'), "term 'pde' (interior)"),
    (("[definitions]", "[parameters]\nk = 1.0\n[definitions]\ng = \"1/(k - 1)\""), None),
    (('x = [-1.0, 1.0]', 'x = [-1e308, 1e308]'), "axes.x: interval"),
    (('x = [-1.0, 1.0]', 'x = [0.0, 5e-324]'), "too narrow"),
    (('name = "poisson2d"', f'name = "{"p" * 300}"'), "is not a valid name"),
])
def test_bad_problems_exit_2_before_training_and_write_nothing(tmp_path, capsys, change, message):
    text = HELMHOLTZ_SMALL.replace(*change)
    if message is None:  # the division by zero only appears once the parameter is substituted
        text = text.replace('residual = "lap(u) - lap(exact)"', 'residual = "lap(u) - lap(exact) + g"')
        message = "division by zero (or an infinite value) once the parameters' values are substituted, in definitions.g"
    out = tmp_path / "out"
    assert main(["solve", str(write(tmp_path / "p.toml", text)), "--out", str(out), *TINY]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_out_paths_that_cannot_hold_a_run(tmp_path, capsys):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    (tmp_path / "file").write_text("mine")
    for out, message in ((tmp_path / "file", "is an existing file, not a folder"),
                         (tmp_path / ("n" * 300) / "run", "more than a file name may have"),
                         (tmp_path / "file" / "run", "is a file: cannot create the folder")):
        assert main(["solve", str(path), "--out", str(out), *TINY]) == 2
        assert message in one_error_line(capsys)
    assert (tmp_path / "file").read_text() == "mine"


def test_settings_and_data_values_out_of_range(tmp_path, capsys):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    assert main(["check", str(path), "--set", f"train.seed={2**70}"]) == 2
    assert "train.seed: expected an integer >= 0" in one_error_line(capsys)
    np.save(tmp_path / "d.npy", np.ones((5, 5)))
    for spec, message in (('{ file = "d.npy", keep = 0.7, seed = -1 }', "seed: expected an integer in [0, 2^63)"),
                          ('{ file = "d.npy", keep = 1e-9 }', "keeps none of the file's 25 points")):
        assert main(["check", str(_data_problem(tmp_path, spec))]) == 2
        assert message in one_error_line(capsys)
    axes = "\n".join(f"a{i} = [0.0, 1.0]" for i in range(40))
    many = HELMHOLTZ_SMALL.replace('x = [-1.0, 1.0]\ny = [0.0, 2.0]', axes)
    assert main(["check", str(write(tmp_path / "m.toml", many))]) == 2
    assert "40 axes; at most 10" in one_error_line(capsys)


# ------------------------------------------------------------------ data files read exactly
def test_csv_header_rules(tmp_path):
    (tmp_path / "dup.csv").write_text("x,y,u,u\n0.5,0.5,1,2\n")
    with pytest.raises(DataError, match="column u appears more than once"):
        load_all(seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ points = "dup.csv" }')))
    (tmp_path / "bom.csv").write_text("x,y,u\n0.5,0.25,3\n", encoding="utf-8-sig")
    data, _ = load_all(seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ points = "bom.csv" }')))
    assert data["u"].tolist() == [[0.5, 0.25, 3.0]]
    bom_toml = tmp_path / "bom.toml"
    bom_toml.write_text(HELMHOLTZ_SMALL, encoding="utf-8-sig")
    assert seppinn.load_problem(bom_toml).name == "poisson2d"


def test_hdf5_storage_outside_the_file_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(range(16)))
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("u", shape=(4, 4), dtype="u1", external=[(str(secret), 0, 16)])
    problem = seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ file = "d.h5" }'))
    with pytest.raises(DataError, match="keeps its values in external files"):
        load_all(problem)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(4, 4), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "v", shape=(4, 4))
        f.create_virtual_dataset("u", layout)
        f["soft"] = h5py.SoftLink("/u")
    with pytest.raises(DataError, match="is a virtual dataset"):
        load_all(problem)
    soft = seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ file = "d.h5", dataset = "soft" }'))
    with pytest.raises(DataError, match="'soft' is a soft link"):
        load_all(soft)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("u", shape=(100000, 100000), dtype="f8", chunks=(1000, 1000), compression="gzip")
    with pytest.raises(DataError, match="declares 74.5 GiB of values"):
        load_all(seppinn.problem.problem_file.load_problem(_data_problem(tmp_path, '{ file = "big.h5" }')))


# ------------------------------------------------------------------ nothing of the user's is lost
def test_foreign_folders_and_edited_examples_are_kept(tmp_path, capsys):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "solution.h5").write_bytes(b"my own results")
    (mine / "notes.txt").write_text("keep")
    assert main(["solve", str(path), "--out", str(mine), *TINY]) == 2
    assert "not a seppinn run folder but holds solution.h5" in one_error_line(capsys)
    assert (mine / "solution.h5").read_bytes() == b"my own results"
    assert main(["solve", str(path), "--out", str(mine), *TINY, "--force"]) == 0
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "run.json").exists()

    ex = tmp_path / "ex"
    capsys.readouterr()
    assert main(["examples", str(ex)]) == 0
    copied = int(capsys.readouterr().out.split("copied ")[1].split(" files")[0])
    (ex / "problems/helmholtz3d.toml").write_text("# my edits\n")
    assert main(["examples", str(ex)]) == 0
    assert f"kept {copied} existing files" in capsys.readouterr().out
    assert (ex / "problems/helmholtz3d.toml").read_text() == "# my edits\n"
    assert main(["examples", str(ex), "--force"]) == 0
    assert (ex / "problems/helmholtz3d.toml").read_text() == (ROOT / "problems/helmholtz3d.toml").read_text()


def test_plot_refuses_histories_that_are_not_numbers(tmp_path, capsys, run_dir):
    _, out = run_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    with h5py.File(out / "solution.h5", "r") as src, h5py.File(bad / "solution.h5", "w") as f:
        src.copy("history", f)
        f["history/loss/evil"] = np.array([b"x", b"y", b"z"])
    assert main(["plot", str(bad), "--out", str(tmp_path / "c.png")]) == 2
    assert "'/history/loss/evil' is not a column of numbers" in one_error_line(capsys)
    assert not (tmp_path / "c.png").exists()


# ------------------------------------------------------------------ start-up
def test_the_cli_starts_without_torch_and_ctrl_c_while_importing_is_one_line(tmp_path, capsys, monkeypatch):
    code = ("import sys, seppinn.cli; heavy = [m for m in ('torch', 'sympy', 'numpy') if m in sys.modules]; "
            "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
    (tmp_path / "ctrl_c_plugin.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "--plugin", "ctrl_c_plugin"]) == 130
    assert one_error_line(capsys) == "interrupted"


def test_every_seppinn_error_prints_one_line():
    err = SeppinnError("two\nlines", file="a\nb.toml", key="k\r")
    assert str(err) == "a\\nb.toml: k\\r: two\\nlines"
    assert one_line("é ü ß") == "é ü ß"  # printable text is kept as it is
