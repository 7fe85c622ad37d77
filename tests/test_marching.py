"""Time marching (``train.windows``): the frozen window slices against autograd, exact continuity at
the seams, each window starting from the last one's weights, a solve against an analytic solution,
the outputs read back, and the refusals."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import sympy as sp
import torch

import seppinn
from seppinn.api import open_run
from seppinn.cli import main
from seppinn.compile.lowering import lower
from seppinn.errors import DataError, SolverConfigError
from seppinn.marching import FrozenSlice
from seppinn.model.separable import build_model

from .conftest import PLAIN

NET = {"model.rank": 6, "model.width": 16, "model.depth": 3, "model.periodic_modes": 2, "train.points": {"t": 16, "x": 32},
       "train.test_points": {"t": 11, "x": 24}, "train.dtype": "float64", "train.compile": False}
SMALL_TABLES = """
[solver.model]
rank = 6
width = 16
depth = 3
periodic_modes = 2
[solver.train]
points = { t = 16, x = 32 }
test_points = { t = 11, x = 24 }
iterations = 0
windows = 2
"""

ADVECTION_SOFT = """[problem]
name = "adv"
[axes]
t = { range = [0.0, 1.0], time = true }
x = { range = [0.0, 6.283185307179586], periodic = true }
[fields]
u = {}
[[equations]]
residual = "diff(u, t) + diff(u, x)"
[[conditions]]
on = "t = min"
value = "sin(x)"
"""  # the initial condition soft: refused by marching


def advection(hard: bool = True, fade: float | None = None) -> seppinn.Problem:
    """u_t + u_x = 0 on a periodic x in [0, 2 pi], u(0) = sin x: u = sin(x - t)."""
    p = seppinn.Problem("advection", axes={"t": seppinn.TimeAxis(0.0, 1.0),
                                           "x": seppinn.Axis("x", 0.0, 2 * np.pi, periodic=True)}, fields=["u"])
    p.add_equation("diff(u, t) + diff(u, x)", name="pde")
    p.add_condition(on="t = min", value="sin(x)", name="initial", enforce="hard" if hard else "soft", fade=fade)
    p.set_reference(u="sin(x - t)")
    return p


def test_a_frozen_slice_and_its_derivatives_equal_autograd_of_the_networks(f64):
    torch.manual_seed(0)
    model = build_model([(0.0, 1.0), (-1.0, 1.0)], {"u": 1}, kind="cp", rank=5, scale="none",
                        net_kwargs=dict(width=12, depth=3, activation="tanh", body="modified_mlp"))["u"]
    model.set_hard_axis(0, 0.0, 0.5, "min")
    s = FrozenSlice("u_window0", model, 0, 0.5, 1)
    x_sym = sp.Symbol("x", real=True)
    x = torch.linspace(-1, 1, 7, requires_grad=True)
    u = model([torch.tensor([0.5]), x])[0, :, 0]
    grads = [u]
    for _ in range(3):
        grads.append(torch.autograd.grad(grads[-1].sum(), x, create_graph=True)[0])
    for order, want in enumerate(grads):  # d^n S / dx^n through sympy's chain of fdiff, then lowered
        expr = sp.diff(s.function((0,))(x_sym), x_sym, order)
        got = lower(expr)({x_sym: x.detach()[None, :]})  # broadcast shapes are kept
        assert got.shape == (1, 7)
        torch.testing.assert_close(got[0], want.detach(), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the slice is a frozen copy: changing the networks later changes nothing
    torch.testing.assert_close(s.evaluate((0,), [x.detach()]), grads[0].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fade", [None, 0.05])
def test_windows_are_continuous_at_the_seams_and_start_from_the_last_weights(fade):
    r = seppinn.solve(advection(fade=fade), overrides={**NET, **PLAIN, "train.iterations": 0, "train.windows": 3},
                      progress=False)
    assert [w.prepared.compiled.ranges[0] for w in r.windows] == pytest.approx([(0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1)])
    # a fading initial value fades in the first window only: the later ones start from the smooth field
    assert [w.prepared.compiled.hard_fades for w in r.windows] == [{"u": fade} if fade else {}, {}, {}]
    for a, b in zip(r.windows, r.windows[1:]):  # no training: each window holds the first one's weights
        for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    x = np.linspace(0, 2 * np.pi, 13)
    ev = r.trainer.evaluator
    for k, (a, b) in enumerate(zip(ev.evaluators, ev.evaluators[1:])):
        seam = np.array([(k + 1) / 3])
        left, right = a.predict([seam, x])["u"], b.predict([seam, x])["u"]
        torch.testing.assert_close(left, right, rtol=0, atol=1e-13)
    # window 0 holds the initial value; the later windows do not start from it (their lift moved on)
    np.testing.assert_allclose(r.evaluate({"t": [0.0], "x": x})["u"][0], np.sin(x), atol=1e-14)
    assert np.abs(r.evaluate({"t": [1 / 3], "x": x})["u"][0] - np.sin(x)).max() > 1e-3


def test_a_marched_solve_matches_the_exact_solution_and_writes_its_outputs(tmp_path):
    out = tmp_path / "run"
    r = seppinn.solve(advection(), overrides={**NET, **PLAIN, "train.iterations": 300, "train.lr": 3e-3,
                                              "train.windows": 2, "train.eval_every": 100}, out=out, progress=False)
    # the test grid's 11 times become 2 windows of 5 intervals each: 11 points, both windows' seams shared
    t = np.linspace(0, 1, 11)
    x = np.linspace(0, 2 * np.pi, 24)
    u = r.evaluate({"t": t, "x": x})["u"]
    exact = np.sin(x[None, :] - t[:, None])
    rel = np.linalg.norm(u - exact) / np.linalg.norm(exact)
    assert r.metrics["u"]["rel_l2"] == pytest.approx(rel, rel=1e-9)
    assert rel < 1e-2, rel  # 1.3e-3 when written
    pts = r.evaluate_points({"t": [0.1, 0.9, 0.5], "x": [1.0, 2.0, 3.0]})["u"]
    np.testing.assert_allclose(pts, np.sin(np.array([1.0, 2.0, 3.0]) - [0.1, 0.9, 0.5]), atol=5 * rel)
    assert r.iterations == 600 and list(r.history["iteration"]) == [0, 100, 200, 300, 300, 400, 500, 600]
    with h5py.File(out / "solution.h5", "r") as f:
        np.testing.assert_allclose(f["axes/t"][:], t)
        np.testing.assert_allclose(f["fields/u"][:], u, atol=1e-12)
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in ckpt["model"]} == {"window0", "window1"} and ckpt["training"] is None
    summary = r.summary()
    assert [w["range"] for w in summary["windows"]] == [[0.0, 0.5], [0.5, 1.0]]


def test_marching_refusals(tmp_path, capsys):
    with pytest.raises(SolverConfigError, match="hard initial condition"):
        seppinn.solve(advection(hard=False), overrides={**NET, "train.iterations": 0, "train.windows": 2},
                      progress=False)
    p = tmp_path / "adv.toml"
    p.write_text(ADVECTION_SOFT)
    assert main(["solve", str(p), "--set", "train.windows=2", "--set", "train.iterations=0"]) == 2
    err = capsys.readouterr().err
    assert "train.windows" in err and "hard initial condition" in err and "Traceback" not in err
    p.write_text(p.read_text() + 'enforce = "hard"\n' + SMALL_TABLES)
    out = tmp_path / "run"
    assert main(["solve", str(p), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["solve", str(p), "--resume", str(out), "--out", str(tmp_path / "more")]) == 2
    assert "every window of this run has finished: there is nothing to resume" in capsys.readouterr().err
    assert main(["solve", str(p), "--resume", str(out), "--set", "train.windows=3"]) == 2
    assert "marched over 2 windows (train.windows), not 3" in capsys.readouterr().err
    # a tampered model.pt: one line naming it, exit 2
    ckpt = torch.load(out / "model.pt", weights_only=True)
    for change, message in [(lambda c: c["windows"][1].pop("history"), "record of window 2 is malformed"),
                            (lambda c: c["model"].update({k: v[:1] for k, v in c["model"].items()
                                                          if k.startswith("window0.")}), "do not fit the model"),
                            (lambda c: c.pop("windows"), "holds no time-marching state")]:
        bad = copy.deepcopy(ckpt)
        change(bad)
        torch.save(bad, out / "model.pt")
        assert main(["export", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(out / "model.pt") in err and "Traceback" not in err, err
    torch.save(ckpt, out / "model.pt")
    assert main(["export", str(out), "--points", "5"]) == 0


ADVECTION_FILE = ADVECTION_SOFT + """enforce = "hard"
[reference]
u = "sin(x - t)"
""" + SMALL_TABLES.replace("iterations = 0", """iterations = 40
lbfgs_iterations = 4
lr = 3e-3
checkpoint_every = 10
eval_every = 10
dtype = "float64"
compile = false""")


def test_an_interrupted_marched_run_resumes_to_the_same_weights_and_exports(tmp_path, capsys, monkeypatch):
    """SIGINT in window 2 (as the handler does: ``stop_requested`` at a checkpoint): model.pt keeps
    window 1 and window 2's training state; --resume rebuilds window 1 and finishes window 2 with
    the weights and history of an uninterrupted run; export evaluates the piecewise field."""
    from seppinn.train.loop import Trainer

    p = tmp_path / "adv.toml"
    p.write_text(ADVECTION_FILE)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["solve", str(p), "--out", str(full), "--quiet"]) == 0
    train = Trainer.train

    def stopping(self, on_checkpoint=None, resume=None, on_eval=None):
        def hook(snap):
            on_checkpoint(snap)
            if self.c.ranges[0][0] > 0 and snap["iteration"] == 20:  # window 2, its iteration 20
                self.stop_requested = True
        return train(self, hook, resume, on_eval)

    monkeypatch.setattr(Trainer, "train", stopping)
    capsys.readouterr()
    assert main(["solve", str(p), "--out", str(cut), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted in window 2 of 2 at its iteration 20" in err and f"--resume {cut}" in err
    ckpt = torch.load(cut / "model.pt", weights_only=True)
    assert len(ckpt["windows"]) == 1 and ckpt["training"]["iteration"] == 20 and ckpt["iteration"] == 44 + 20
    assert not (cut / "solution.h5").exists()
    with pytest.raises(DataError, match="stopped in window 2 of 2"):
        open_run(cut)
    monkeypatch.setattr(Trainer, "train", train)
    assert main(["solve", str(p), "--resume", str(cut), "--quiet"]) == 0
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (full, cut))
    assert a["model"].keys() == b["model"].keys() and {k.split(".")[0] for k in a["model"]} == {"window0", "window1"}
    for name, v in a["model"].items():
        assert torch.equal(v, b["model"][name]), name
    for col, v in a["history"].items():
        if col != "seconds":
            np.testing.assert_array_equal(v, b["history"][col], err_msg=col)
    assert json.loads((cut / "summary.json").read_text())["metrics"] == json.loads((full / "summary.json").read_text())["metrics"]
    # export: the windows rebuilt from model.pt, each time from the window that holds it
    opened = open_run(cut)
    with h5py.File(full / "solution.h5", "r") as f:
        t, x, u = f["axes/t"][:], f["axes/x"][:], f["fields/u"][:]
    np.testing.assert_allclose(opened.evaluator.predict([t, x])["u"].squeeze(-1).numpy(), u, rtol=0, atol=1e-12)
    assert main(["export", str(cut), "--points", "9"]) == 0
    grid = np.linspace(0, 1, 9), np.linspace(0, 2 * np.pi, 9)
    with h5py.File(cut / "export_9.h5", "r") as f:
        np.testing.assert_allclose(f["axes/t"][:], grid[0])
        u = f["fields/u"][:]
    np.testing.assert_allclose(u, opened.evaluator.predict(list(grid))["u"].squeeze(-1).numpy(), rtol=0, atol=1e-12)
    exact = np.sin(grid[1][None, :] - grid[0][:, None])
    assert np.linalg.norm(u - exact) / np.linalg.norm(exact) < 0.05  # 0.016 when written (44 + 44 iterations)
