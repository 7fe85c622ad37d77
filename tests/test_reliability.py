"""Interrupt and resume (exact, float64), divergence (stop and rollback), run-folder ownership,
memory guards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import seppinn
from seppinn.api import prepare
from seppinn.cli import main
from seppinn.io.runs import storable
from seppinn.train.loop import Trainer

from .conftest import HELMHOLTZ_SMALL, PLAIN, ROOT, trained, write

# SepPGD on a data term and the walls, random resampling, an L-BFGS phase: everything a resume must carry
EXACT = {**PLAIN, "train.dtype": "float64", "train.sampling": "random", "train.resample_every": 7, "train.points": 8,
         "train.iterations": 30, "train.lbfgs_iterations": 6, "train.eval_every": 4, "train.checkpoint_every": 3,
         "train.test_points": 6, "train.schedule": "exponential", "train.decay_every": 10,
         "precondition.method": "seppgd", "precondition.k": 3, "precondition.update_every": 5,
         "model.rank": 6, "model.width": 16, "model.depth": 3}
WITH_DATA = HELMHOLTZ_SMALL.replace("[reference]", '[data]\nu = "exact"\n[reference]')


# Adam in float32, then L-BFGS in float64 (train.lbfgs_dtype), from the phase's start or (auto) from
# a step that found no lower loss (``stall_at_31``)
MIXED = {**EXACT, "train.dtype": "float32", "train.lbfgs_dtype": "float64"}
AUTO = {**MIXED, "train.lbfgs_dtype": "auto"}


@pytest.fixture
def stall_at_31(monkeypatch):
    """L-BFGS' second step (iteration 31; its count is restored on resume) reports no lower loss in
    float32 (a stall in float64 ends the phase: ``test_a_stalled_float64_lbfgs_skips_its_remaining_steps``)."""
    from seppinn.train.optimizers import Optimizers
    step = Optimizers.lbfgs_step

    def lbfgs_step(self, closure):
        stalled = step(self, closure)
        first = self.lbfgs.param_groups[0]["params"][0]
        return stalled or (self.lbfgs.state[first]["n_iter"] == 2 and first.dtype == torch.float32)
    monkeypatch.setattr(Optimizers, "lbfgs_step", lbfgs_step)


@pytest.mark.parametrize("stop_at, settings", [
    (12, EXACT), (33, EXACT),  # in the Adam phase, and in the L-BFGS phase
    (12, MIXED), (30, MIXED), (33, MIXED),  # and where the dtype changes
    (30, AUTO), (33, AUTO),  # before and after the switch (iteration 31)
])
def test_resumed_run_equals_the_uninterrupted_one_exactly(tmp_path, stop_at, settings, stall_at_31):
    path = write(tmp_path / "p.toml", WITH_DATA)
    full_tr, full = trained(prepare(path, overrides=settings))
    part_tr, part = trained(prepare(path, overrides=settings), stop_at=stop_at)
    assert part.interrupted and part.iteration == stop_at
    torch.save(storable(part.last_good), tmp_path / "snap.pt")  # through a file, as --resume reads it
    snap = torch.load(tmp_path / "snap.pt", weights_only=True)
    rest_tr, rest = trained(prepare(path, overrides=settings), resume=snap)
    assert rest.iteration == full.iteration == 36
    for (name, a), b in zip(full_tr.model.state_dict().items(), rest_tr.model.state_dict().values()):
        assert a.dtype == torch.float64 and torch.equal(a, b), name
    cols_full = seppinn.train.records.history_columns(full.history)
    cols_rest = seppinn.train.records.history_columns(rest.history)
    assert cols_full.keys() == cols_rest.keys()
    for k in cols_full:
        if k != "seconds":
            np.testing.assert_array_equal(cols_full[k], cols_rest[k], err_msg=k)
    assert full.best.iteration == rest.best.iteration


def test_a_stalled_float64_lbfgs_skips_its_remaining_steps(tmp_path, monkeypatch):
    """A float64 step that found no lower loss would repeat its failed line search (up to 25
    evaluations) every step from the same state: the phase ends there, the run at its last iteration."""
    from seppinn.train.optimizers import Optimizers
    step, calls = Optimizers.lbfgs_step, []

    def lbfgs_step(self, closure):
        calls.append(step(self, closure))
        return calls[-1] or len(calls) == 2
    monkeypatch.setattr(Optimizers, "lbfgs_step", lbfgs_step)
    _, state = trained(prepare(write(tmp_path / "p.toml", WITH_DATA), overrides=EXACT))
    assert len(calls) == 2 and state.iteration == 36 and state.history[-1].iteration == 36
    assert np.isfinite(state.history[-1].losses["total"])


def test_cli_sigint_writes_a_checkpoint_and_resume_finishes(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    out = tmp_path / "run"
    args = ["--set", "train.iterations=1000000", "--set", "train.checkpoint_every=20", "--set", "train.points=8",
            "--set", "train.lbfgs_iterations=0",
            "--set", "model.rank=4", "--set", "model.width=8", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "seppinn", "solve", str(path), "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    while not (out / "model.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"continue with: seppinn solve {path} --resume {out}" in err
    ckpt = torch.load(out / "model.pt", weights_only=True)
    stopped = ckpt["iteration"]
    assert stopped > 0 and ckpt["training"]["iteration"] == stopped
    assert (out / "solution.h5").exists() and json.loads((out / "summary.json").read_text())["iterations"] == stopped
    assert main(["solve", str(path), "--resume", str(out), "--set", f"train.iterations={stopped + 5}", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["iterations"] == stopped + 5


def test_resume_refuses_another_problem_and_missing_checkpoints(tmp_path, capsys):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    out = tmp_path / "run"
    assert main(["solve", str(path), "--out", str(out), "--set", "train.iterations=4", "--quiet"]) == 0
    other = write(tmp_path / "q.toml", HELMHOLTZ_SMALL.replace("sin(pi*x)*sin(pi*y)", "x*y"))
    capsys.readouterr()
    assert main(["solve", str(other), "--resume", str(out)]) == 2
    assert "was made from problem 'poisson2d' with a different problem text" in capsys.readouterr().err
    assert main(["solve", str(path), "--resume", str(tmp_path)]) == 2
    assert "no model.pt in" in capsys.readouterr().err


def test_a_folder_of_another_problem_needs_force(tmp_path, capsys):
    out = tmp_path / "run"
    a = write(tmp_path / "a.toml", HELMHOLTZ_SMALL)
    b = write(tmp_path / "b.toml", HELMHOLTZ_SMALL.replace('name = "poisson2d"', 'name = "other"'))
    assert main(["solve", str(a), "--out", str(out), "--set", "train.iterations=2", "--quiet"]) == 0
    before = (out / "solution.h5").read_bytes()
    capsys.readouterr()
    assert main(["solve", str(b), "--out", str(out), "--set", "train.iterations=2", "--quiet"]) == 2
    assert "holds a run of problem 'poisson2d', not 'other'" in capsys.readouterr().err
    assert (out / "solution.h5").read_bytes() == before  # untouched
    assert main(["solve", str(a), "--out", str(out), "--set", "train.iterations=2", "--quiet"]) == 0  # same problem
    assert main(["solve", str(b), "--out", str(out), "--set", "train.iterations=2", "--quiet", "--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["problem"] == "other"


# exp(40 u) overflows once u grows: with a learning rate that doubles every 20 iterations the run
# diverges near iteration 124 (the exact one depends on rounding), after 12 checkpoints; at a constant 0.5 it diverges at iteration 1
DIVERGES = HELMHOLTZ_SMALL.replace('residual = "lap(u) - lap(exact)"', 'residual = "exp(40*u) - 1"')
SMALL_NET = {**PLAIN, "model.rank": 4, "model.width": 8, "train.points": 8, "model.activation": "tanh",
             "model.body": "mlp", "model.scale": "sqrt_rank",
             "train.eval_every": 5, "train.checkpoint_every": 10}
DIVERGING = {**SMALL_NET, "train.lr": 0.01, "train.schedule": "exponential", "train.decay_rate": 2.0,
             "train.decay_every": 20, "train.iterations": 300, "train.diverge_factor": 0, "train.on_nan": "stop"}


def test_divergence_stops_names_term_and_iteration_and_keeps_the_last_good_state(tmp_path, capsys):
    path = write(tmp_path / "p.toml", DIVERGES)
    out = tmp_path / "run"
    args = [f"--set={k}={v}" for k, v in DIVERGING.items()]
    assert main(["solve", str(path), "--out", str(out), "--quiet", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("run failed: loss of term 'pde' is not finite at iteration "), err
    bad_it = int(err.split("at iteration ")[1].split(";")[0])
    ckpt = torch.load(out / "model.pt", weights_only=True)
    good = (bad_it - 1) // 10 * 10  # the last checkpoint before the first non-finite loss
    assert 110 < bad_it < 140 and ckpt["iteration"] == good and f"(iteration {good})" in err
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert json.loads((out / "summary.json").read_text())["iterations"] == ckpt["iteration"]


def test_rollback_halves_the_learning_rate_and_finishes(tmp_path):
    path = write(tmp_path / "p.toml", DIVERGES)
    seppinn.train.loop.MAX_ROLLBACKS, limit = 0, seppinn.train.loop.MAX_ROLLBACKS
    try:  # when the rollbacks are used up, the run stops as without them
        with pytest.raises(seppinn.RunError, match=r"is not finite at iteration 1\d\d; the last good state") as exc:
            seppinn.solve(path, overrides={**DIVERGING, "train.on_nan": "rollback"}, out=tmp_path / "r", progress=False)
    finally:
        seppinn.train.loop.MAX_ROLLBACKS = limit
    # the blow-up's iteration depends on the CPU's rounding (111 on one machine, 137 on another):
    # end a few iterations after it, so the run only finishes by rolling back at a lower rate
    bad = int(str(exc.value).split("at iteration ")[1].split(";")[0])
    r = seppinn.solve(path, overrides={**DIVERGING, "train.iterations": bad + 5, "train.on_nan": "rollback"},
                      progress=False)
    assert r.state.rollbacks in (1, 2) and r.state.lr_scale == 0.5**r.state.rollbacks
    assert r.iterations == bad + 5 and np.isfinite(r.history["loss/pde"]).all()
    its = r.history["iteration"]
    assert (np.diff(its) > 0).all()  # the history restarts cleanly at the rolled-back iteration


def test_climbing_loss_is_caught_and_rolled_back(tmp_path, capsys):
    """The divergence guard: at lr 3 the total loss jumps past 1000 x its lowest at once, with nothing
    non-finite yet. on_nan = "stop" stops there; the default rolls back and halves the rate until
    the run goes on, every recorded total within the factor of the lowest before it."""
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    ov = {**SMALL_NET, "train.lr": 3.0, "train.iterations": 60, "train.diverge_factor": 1e3}
    with pytest.raises(seppinn.RunError, match=r"^the total loss rose above 1000 times its lowest value so far "
                                               r"\(7\.\d{3}e\+01\) at iteration 1$"):
        seppinn.solve(path, overrides={**ov, "train.on_nan": "stop"}, progress=False)
    prep = prepare(path, overrides=ov)
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    totals = []
    state = tr.train(on_eval=lambda ev: totals.append(ev.losses["total"]))
    assert state.rollbacks >= 2 and state.lr_scale == 0.5**state.rollbacks and state.iteration == 60
    assert all(np.isfinite(t) and t <= 1e3 * min(totals[:i + 1]) for i, t in enumerate(totals))
    assert main(["solve", str(path), "--quiet", "--out", str(tmp_path / "run"),
                 *(f"--set={k}={v}" for k, v in ov.items())]) == 0
    assert "rolled back to iteration 0, learning rate x 0.5 (rollback 1 of 4)" in capsys.readouterr().err


def test_memory_guard_refuses_with_estimate_and_limit(tmp_path, capsys):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    assert main(["check", str(path), "--set", "train.memory_limit=0.0001", "--set", "train.points=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("solver settings: train.memory_limit: estimated peak memory ")
    assert "exceeds the limit 0.00 GiB (train.memory_limit)" in err
    with pytest.raises(seppinn.SolverConfigError, match="estimated peak memory"):
        prepare(ROOT / "problems/klein_gordon3d.toml", overrides={"train.points": 4096})  # nonlinear: on the grid
