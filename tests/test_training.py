"""End-to-end training on small problems, and the run's files read back by h5py."""

from __future__ import annotations

import json
import math
import tomllib

import h5py
import numpy as np
import pytest
import torch

import seppinn
from seppinn.train.loop import Trainer

from .conftest import HELMHOLTZ_SMALL, PLAIN, write

SMALL = {
    "model.rank": 16, "model.width": 32, "model.depth": 3, "model.body": "modified_mlp",
    "model.activation": "tanh", "model.scale": "none", "train.lr": 3e-3, "train.points": 24,
    "train.sampling": "random", "train.resample_every": 50, "train.iterations": 600,
    "train.eval_every": 50, "train.test_points": 25, "train.weights": {"walls": 100.0}, **PLAIN,
}


@pytest.fixture(scope="module")
def poisson_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    path = write(out / "poisson2d.toml", HELMHOLTZ_SMALL)
    result = seppinn.solve(path, overrides=SMALL, out=out / "result", progress=False)
    return path, out / "result", result


def test_small_solve_reaches_stated_error(poisson_run):
    _, _, result = poisson_run
    assert result.metrics_at_min_loss["u"]["rel_l2"] < 0.03
    assert result.iterations == 600
    assert result.history["iteration"][-1] == 600 and len(result.history["iteration"]) == 13


def test_solution_h5_reads_back(poisson_run):
    path, out, result = poisson_run
    x, y = np.linspace(-1, 1, 25), np.linspace(0, 2, 25)
    with h5py.File(out / "solution.h5", "r") as f:
        np.testing.assert_array_equal(f["axes/x"][()], x)
        np.testing.assert_array_equal(f["axes/y"][()], y)
        u, ref, err = f["fields/u"][()], f["reference/u"][()], f["error/u"][()]
        assert u.shape == (25, 25)
        # values at known coordinates: the reference is the exact solution, indexed [x, y]
        np.testing.assert_allclose(ref, np.sin(np.pi * x)[:, None] * np.sin(np.pi * y)[None, :], atol=1e-12)
        np.testing.assert_allclose(err, u - ref)
        np.testing.assert_allclose(u, result.evaluate({"x": x, "y": y})["u"], rtol=1e-6, atol=1e-7)
        hist = {k: f["history"][k][()] for k in ("iteration", "seconds")}
        hist.update({f"loss/{k}": f["history/loss"][k][()] for k in f["history/loss"]})
        hist["rel_l2/u"] = f["history/rel_l2/u"][()]
        assert len({len(v) for v in hist.values()}) == 1
        assert set(hist) >= {"loss/pde", "loss/walls", "loss/total", "rel_l2/u"}
        assert np.all(np.diff(hist["seconds"]) >= 0)
        assert f.attrs["problem"] == path.read_text()
        solver = tomllib.loads(f.attrs["solver"])
        assert solver["model"]["rank"] == 16 and solver["train"]["iterations"] == 600
        assert f.attrs["seed"] == 0 and f.attrs["torch_version"] == torch.__version__
        assert f.attrs["seppinn_version"] == seppinn.__version__
        rel_final = np.linalg.norm(u - ref) / np.linalg.norm(ref)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problem"] == "poisson2d" and summary["iterations"] == 600
    assert summary["metrics"]["u"]["rel_l2"] == pytest.approx(rel_final, rel=1e-5)
    assert set(summary["final_loss"]) == {"pde", "walls"}
    assert summary["metrics_at_min_loss"]["iteration"] in list(hist["iteration"])


def test_best_checkpoint_is_the_lowest_loss_state(poisson_run):
    path, out, result = poisson_run
    hist = result.history
    i = int(np.argmin(hist["loss/total"]))
    best = result.metrics_at_min_loss
    assert best["iteration"] == hist["iteration"][i]
    assert best["u"]["rel_l2"] == pytest.approx(hist["rel_l2/u"][i])
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["iteration"] == best["iteration"]
    prep = seppinn.prepare(path, overrides=SMALL)
    trainer = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    trainer.model.load_state_dict(ckpt["model"])
    assert trainer.evaluator.metrics()["u"]["rel_l2"] == pytest.approx(best["u"]["rel_l2"], rel=1e-6)


def test_lbfgs_phase_and_schedules_lower_the_loss(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    for schedule in ("exponential", "cosine"):
        ov = dict(SMALL, **{"train.iterations": 100, "train.lbfgs_iterations": 30, "train.schedule": schedule,
                            "train.decay_every": 20, "train.sampling": "grid", "train.dtype": "float64",
                            "train.eval_every": 10})
        r = seppinn.solve(path, overrides=ov, progress=False)
        loss = r.history["loss/total"]
        assert list(r.history["iteration"][-4:]) == [100, 110, 120, 130]
        # L-BFGS with a strong-Wolfe line search on a fixed grid decreases the loss at every step
        assert np.all(np.diff(loss[-4:]) < 0) and loss[-1] < 0.8 * loss[-4]
        assert loss[-4] < 0.01 * loss[0]


def test_lbfgs_phase_lowers_a_loss_that_is_already_small(tmp_path):
    """torch's L-BFGS tolerances are absolute; the phase minimises the loss relative to its start, so
    a problem whose loss is 1e-9 times smaller trains alike (unscaled it never moved)."""
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    runs = []
    for factor in (1.0, 1e-9):
        ov = dict(SMALL, **{"train.iterations": 0, "train.lbfgs_iterations": 20, "train.sampling": "grid",
                            "train.dtype": "float64", "train.eval_every": 10, "train.compile": False,
                            "train.weights": {"pde": factor, "walls": 100.0 * factor}})
        runs.append(seppinn.solve(path, overrides=ov, progress=False).history["loss/total"] / factor)
    assert runs[0][-1] < 0.1 * runs[0][0]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6)


def test_lbfgs_rescaling_keeps_the_iterates(tmp_path, monkeypatch):
    """Rescaling L-BFGS' objective to 1 (every step here) scales its history with it: the iterates,
    and so the losses, are those of the unscaled run. Leaving any part of the history unscaled
    changes the search directions."""
    import seppinn.train.optimizers as optimizers
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    ov = dict(SMALL, **{"train.iterations": 0, "train.lbfgs_iterations": 20, "train.sampling": "grid",
                        "train.dtype": "float64", "train.eval_every": 1, "train.compile": False})
    runs = []
    for below in (0.0, math.inf):
        monkeypatch.setattr(optimizers, "RESCALE_BELOW", below)
        runs.append(seppinn.solve(path, overrides=ov, progress=False).history["loss/total"])
    assert runs[0][-1] < 0.1 * runs[0][0]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-7)


def test_lbfgs_step_reports_a_step_that_found_no_lower_loss():
    """``lbfgs_step`` is True after a step that left the loss where it was: here a loss that is flat
    in float32 near its minimum (x**2 + 1 at x = 1e-4), and not on the way down from x = 2 in float64."""
    from seppinn.problem.solver_config import TrainConfig
    from seppinn.train.optimizers import make_optimizers

    def stalls(x0: float, dtype: torch.dtype) -> list[bool]:
        x = torch.nn.Parameter(torch.tensor([x0], dtype=dtype))
        opts = make_optimizers([x], TrainConfig())

        def closure():
            opts.lbfgs.zero_grad()
            loss = (x ** 2).sum() + 1
            if opts.lbfgs_scale is None:
                opts.lbfgs_scale = torch.tensor(1.0, dtype=torch.float64)
            loss.backward()
            return loss.detach()
        return [opts.lbfgs_step(closure) for _ in range(3)]
    assert stalls(2.0, torch.float64) == [False, False, False]
    assert stalls(1e-4, torch.float32) == [False, True, True]  # 1 + 1e-8 rounds to 1


@pytest.mark.parametrize("kind, rank", [("tucker", [6, 5]), ("tt", 6)])
def test_tucker_and_tt_train(tmp_path, kind, rank):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    r = seppinn.solve(path, progress=False, overrides=dict(SMALL, **{"model.kind": kind, "model.rank": rank,
                                                                      "train.iterations": 300}))
    assert r.metrics_at_min_loss["u"]["rel_l2"] < 0.1


def test_rank_list_length_is_checked(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    with pytest.raises(seppinn.SolverConfigError, match=r"model\.rank: a tucker model on 2 axes takes 2 ranks"):
        seppinn.prepare(path, overrides={"model.kind": "tucker", "model.rank": [3, 4, 5]})


def test_hard_dirichlet_holds_to_rounding_and_trains(tmp_path):
    text = HELMHOLTZ_SMALL.replace('''[[conditions]]
name = "walls"
on = "boundary"
value = "exact"''', '''[[conditions]]
name = "xwalls"
on = ["x = min", "x = max"]
value = "exact + 0.3*y*(x + 2)"
enforce = "hard"
[[conditions]]
name = "walls"
on = ["y = min", "y = max"]
value = "exact"''')
    path = write(tmp_path / "p.toml", text)
    prep = seppinn.prepare(path, overrides=dict(SMALL, **{"train.dtype": "float64"}))
    assert [t.name for t in prep.compiled.terms] == ["pde", "walls"] and prep.compiled.hard == {"u": 0}
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    y = np.linspace(0, 2, 9)
    for xv in (-1.0, 1.0):  # before any training: the faces already carry the value exactly
        u = tr.evaluator.predict([np.array([xv]), y])["u"][0, :, 0].numpy()
        want = np.sin(np.pi * xv) * np.sin(np.pi * y) + 0.3 * y * (xv + 2)
        np.testing.assert_allclose(u, want, rtol=0, atol=1e-14)
    path = write(tmp_path / "q.toml", text.replace("exact + 0.3*y*(x + 2)", "exact"))
    r = seppinn.solve(path, overrides=SMALL, progress=False)
    assert r.metrics_at_min_loss["u"]["rel_l2"] < 0.05


def test_the_loop_reports_each_evaluation_through_on_eval(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    prep = seppinn.prepare(path, overrides={**PLAIN, "train.iterations": 12, "train.eval_every": 5, "train.points": 8,
                                            "model.rank": 4, "model.width": 8})
    seen = []
    state = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False).train(on_eval=seen.append)
    assert [ev.iteration for ev in seen] == [0, 5, 10, 12]
    assert seen == state.history  # the same records, in order, as they were made


HEAT_HARD_INITIAL = """
[problem]
name = "heat_hard"
[axes]
t = { range = [0.5, 1.5], time = true }
x = [0.0, 1.0]
[fields]
u = {}
[definitions]
exact = "sin(pi*x)*exp(-(t - 0.5)) + x"
[[equations]]
name = "pde"
residual = "diff(u, t) - diff(u, x, 2)/pi**2"
[[conditions]]
name = "walls"
on = "boundary"
value = "exact"
[[conditions]]
name = "initial"
on = "t = SIDE"
value = "exact"
enforce = "hard"
[reference]
u = "exact"
"""


@pytest.mark.parametrize("side, face, fade", [("min", 0.5, None), ("max", 1.5, None), ("min", 0.5, 0.1),
                                              ("max", 1.5, 0.1)])
def test_hard_initial_condition_on_one_face(tmp_path, side, face, fade):
    """u = g + (t - t0) N, or with ``fade`` e^{-|t - t0|/fade} g + (1 - e^{-|t - t0|/fade}) N: the value
    holds at t0 to rounding before any training, not elsewhere, the loss's pde residual (jets, lift
    included) equals finite differences of the field, and a heat problem trains."""
    text = HEAT_HARD_INITIAL.replace("SIDE", side)
    if fade is not None:
        text = text.replace('enforce = "hard"', f'enforce = "hard"\nfade = {fade}')
    path = write(tmp_path / "h.toml", text)
    prep = seppinn.prepare(path, overrides=dict(SMALL, **{"train.dtype": "float64", "train.weights": {}}))
    assert [t.name for t in prep.compiled.terms] == ["pde", "walls"] and prep.compiled.hard_sides == {"u": side}
    assert prep.compiled.hard_fades == ({"u": fade} if fade else {})
    sym = prep.problem.ctx.axes  # the lift at the other face, 10 fades away: g e^{-10}, or g
    lift = float(prep.compiled.lifts["u"].subs({sym["t"]: 2.0 - face, sym["x"]: 0.3}))
    g = math.sin(0.3 * math.pi) * math.exp(-(face - 0.5)) + 0.3
    assert lift == pytest.approx(g * (math.exp(-10) if fade else 1.0), rel=1e-12)
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    x = np.linspace(0, 1, 11)
    exact = lambda t: np.sin(np.pi * x) * np.exp(-(t - 0.5)) + x  # noqa: E731
    u0 = tr.evaluator.predict([np.array([face]), x])["u"][0, :, 0].numpy()
    np.testing.assert_allclose(u0, exact(face), rtol=0, atol=1e-14)
    other = 2.0 - face
    assert np.abs(tr.evaluator.predict([np.array([other]), x])["u"][0, :, 0].numpy() - exact(other)).max() > 1e-3
    # the pde residual u_t - u_xx / pi^2 on the training grid (jets and the lift) against central differences
    part = tr.losses.parts[0][0]
    r = part.residual(tr.losses.jets(), {})[..., 0].detach().numpy()
    t_pts, x_pts = tr.points[("train", 0)].numpy(), tr.points[("train", 1)].numpy()
    h = 1e-4

    def u(dt: float = 0.0, dx: float = 0.0) -> np.ndarray:
        return tr.evaluator.predict([t_pts + dt, x_pts + dx])["u"][..., 0].numpy()

    fd = (u(h) - u(-h)) / (2 * h) - (u(dx=h) - 2 * u() + u(dx=-h)) / (h**2 * np.pi**2)
    np.testing.assert_allclose(r, fd, rtol=0, atol=1e-5 * np.abs(fd).max())
    r = seppinn.solve(path, overrides={**SMALL, "train.weights": {}}, progress=False)
    assert r.metrics_at_min_loss["u"]["rel_l2"] < 0.02
