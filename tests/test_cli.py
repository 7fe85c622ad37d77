"""The command line: exit status, one-line errors, nothing written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from seppinn.cli import main

from .conftest import HELMHOLTZ_SMALL, ROOT, write


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seppinn", *args], capture_output=True, text=True, cwd=cwd)


BAD_CASES = [
    ("problem", "[problem]\nname = 'x'\n[axis]\nx = [0, 1]\n", [], "bad.toml: axis: unknown key 'axis' (did you mean 'axes'?)"),
    ("problem", HELMHOLTZ_SMALL.replace("lap(u) - lap(exact)", "lap(u) - kk"), [],
     "bad.toml: equations[0].residual: unknown name 'kk'"),
    ("set", HELMHOLTZ_SMALL, ["--set", "train.iteratons=3"], "--set: train.iteratons: unknown key 'iteratons'"),
    ("set", HELMHOLTZ_SMALL, ["--set", "model.activation=relux"], "--set: model.activation: 'relux' is not one of"),
    ("solver", HELMHOLTZ_SMALL, ["--solver", "spinnn"], "--solver: no such file or preset 'spinnn' (did you mean 'spinn'?)"),
]


@pytest.mark.parametrize("kind, text, extra, message", BAD_CASES, ids=[c[0] + str(i) for i, c in enumerate(BAD_CASES)])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, kind, text, extra, message):
    path = write(tmp_path / "bad.toml", text)
    out = tmp_path / "out"
    proc = run_cli("solve", str(path), "--out", str(out), *extra, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_missing_problem_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: file not found" in capsys.readouterr().err


def test_check_reports_terms_grids_derivatives_memory(capsys):
    assert main(["check", str(ROOT / "problems/helmholtz3d.toml"), "--solver", "spinn"]) == 0
    out = capsys.readouterr().out
    assert "term pde (equation, equations[0]), weight 1" in out
    assert "interior: grid 64 x 64 x 64 (262144 points); u (0, 0, 0), u_zz (0, 0, 2), u_yy (0, 2, 0), u_xx (2, 0, 0)" in out
    assert "term walls (condition, conditions[0]), weight 100, sum over 6 faces" in out
    assert "x = min, max: grid 2 x 64 x 64 (8192 points)" in out
    assert "memory per iteration (estimate):" in out


def test_solve_writes_outputs_and_prints_error(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    proc = run_cli("solve", str(path), "--solver", "quick", "--set", "train.iterations=20",
                   "--set", "train.points=12", "--set", "train.eval_every=10", "--set", "train.test_points=9",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "runs" / "poisson2d"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "convergence.png", "model.pt", "run.json", "slices.png",
                                                     "solution.h5", "solution.xdmf", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert f"u: rel_l2 {summary['metrics']['u']['rel_l2']:.4e} (final)" in proc.stdout
    assert "it 20/20" in proc.stderr  # log lines when stderr is not a terminal


def test_examples_copies_shipped_files(tmp_path, capsys):
    assert main(["examples", str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex/problems/helmholtz3d.toml").read_text() == (ROOT / "problems/helmholtz3d.toml").read_text()
    assert (tmp_path / "ex/solvers/spinn.toml").exists()
