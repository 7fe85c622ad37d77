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


def test_threads_option_sets_torchs_threads(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    try:
        assert main(["solve", str(path), "--out", str(tmp_path / "r"), "--quiet", "--threads", "1",
                     "--set", "train.iterations=2", "--set", "model.width=8"]) == 0
        assert torch.get_num_threads() == 1
        assert "threads = 1" in (tmp_path / "r" / "solution.h5").read_bytes().decode("latin-1")
    finally:
        torch.set_num_threads(before)
    assert main(["solve", str(path), "--quiet", "--threads", "0"]) == 2
    assert "train.threads: expected an integer >= 1" in capsys.readouterr().err


def test_check_says_a_condition_without_value_means_zero_and_hints_derivative_names(tmp_path, capsys):
    text = HELMHOLTZ_SMALL.replace('value = "exact"', "")
    assert main(["check", str(write(tmp_path / "p.toml", text))]) == 0
    out = capsys.readouterr().out
    assert "term walls (condition, conditions[0]), weight 1, mean over 4 faces; no value given: expr = 0" in out
    assert "term pde (equation, equations[0]), weight 1\n" in out
    for name, hint in [("u_xx", "diff(u, x, 2)"), ("u_x", "diff(u, x)"), ("u_xy", "diff(u, x, y)")]:
        bad = write(tmp_path / "b.toml", HELMHOLTZ_SMALL.replace('"lap(u) - lap(exact)"', f'"{name} - 1"'))
        assert main(["check", str(bad)]) == 2
        assert capsys.readouterr().err.strip().endswith(f"unknown name '{name}' (did you mean {hint}?)")


def test_init_from_starts_from_another_runs_weights(tmp_path, capsys):
    import torch

    import seppinn

    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    small = {"model.width": 8, "model.rank": 4, "train.eval_every": 1}
    a = seppinn.solve(path, out=tmp_path / "a", progress=False, overrides={**small, "train.iterations": 6})
    b = seppinn.solve(path, progress=False, overrides={**small, "train.iterations": 0, "train.lr": 1e-3},
                      init_from=tmp_path / "a")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert b.history["loss/total"][0] == a.history["loss/total"][-1]
    args = ["solve", str(path), "--quiet", "--out", str(tmp_path / "c"), "--init-from", str(tmp_path / "a")]
    assert main([*args, "--set", "model.width=16", "--set", "model.rank=4"]) == 2
    assert "a/model.pt: the checkpoint's weights do not fit the model its settings build" in capsys.readouterr().err
    assert main([*args, "--resume", str(tmp_path / "a")]) == 2
    assert "--init-from: a resumed run continues from its own state" in capsys.readouterr().err
