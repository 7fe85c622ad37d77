"""Loss balancing (train.balance = "grad_norm"): the weights against a brute-force computation of
the terms' gradient norms, their place in the history and the progress line, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seppinn
from seppinn.api import prepare
from seppinn.io.runs import storable
from seppinn.cli import main
from seppinn.train.loop import Trainer

from .conftest import HELMHOLTZ_SMALL, trained, write

SMALL = {"train.dtype": "float64", "train.points": 8, "train.test_points": 6, "model.rank": 4,
         "model.width": 12, "model.depth": 3, "model.activation": "tanh", "train.lr": 1e-3,
         "train.lbfgs_iterations": 0, "train.schedule": "constant"}


def brute_force_weights(prep, momentum: float, previous: np.ndarray) -> np.ndarray:
    """lambda_i = sum_j |grad(w_j L_j)| / |grad(w_i L_i)| from each weighted term loss, by autograd on a
    fresh trainer (the same initial model), then the moving average."""
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    params = list(tr.model.parameters())
    norms = []
    for t, loss in zip(prep.compiled.terms, tr.losses().values()):
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        norms.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads))))
    norms = np.array(norms)
    return momentum * previous + (1 - momentum) * norms.sum() / norms


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_grad_norm_weights_equal_brute_force_on_the_user_weighted_terms(tmp_path, momentum):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    ov = {**SMALL, "train.balance": "grad_norm", "train.balance_every": 1, "train.balance_momentum": momentum,
          "train.iterations": 1, "train.eval_every": 1, "train.weights": {"walls": 30.0}}
    prep = prepare(path, overrides=ov)
    want = brute_force_weights(prep, momentum, np.ones(2))
    r = seppinn.solve(path, overrides=ov, progress=False)
    names = [t.name for t in prep.compiled.terms]
    assert names == ["pde", "walls"]
    got = np.array([r.history[f"weight/{n}"] for n in names])  # columns: iteration 0 (before), 1 (after)
    np.testing.assert_allclose(got[:, 0], [1.0, 1.0])
    np.testing.assert_allclose(got[:, 1], want, rtol=1e-10)
    assert not np.allclose(want, 1.0)
    # the step minimised sum_i lambda_i w_i L_i: the logged losses stay the user-weighted ones
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    first = {n: float(v.detach()) for n, v in tr.losses().items()}
    assert r.history["loss/walls"][0] == pytest.approx(first["walls"], rel=1e-12)


@pytest.mark.parametrize("method", ["grad_norm", "ntk"])
def test_balanced_run_resumes_exactly_and_shows_weights(tmp_path, capsys, method):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    ov = {**SMALL, "train.balance": method, "train.balance_every": 5, "train.iterations": 24,
          "train.eval_every": 4, "train.checkpoint_every": 3, "train.sampling": "random", "train.resample_every": 7}
    if method == "ntk":
        ov["train.points"] = 12  # 144 interior points: the NTK traces are sampled (ntk_trace.SAMPLE = 128)
    prep = prepare(path, overrides=ov)

    full_tr, full = trained(prep)
    _, part = trained(prep, stop_at=12)
    torch.save(storable(part.last_good), tmp_path / "snap.pt")
    rest_tr, rest = trained(prep, resume=torch.load(tmp_path / "snap.pt", weights_only=True))
    assert torch.equal(full_tr.balancer.weights, rest_tr.balancer.weights)
    for a, b in zip(full_tr.model.state_dict().values(), rest_tr.model.state_dict().values()):
        assert torch.equal(a, b)
    cols_full = seppinn.train.records.history_columns(full.history)
    cols_rest = seppinn.train.records.history_columns(rest.history)
    np.testing.assert_array_equal(cols_full["weight/walls"], cols_rest["weight/walls"])
    assert len(set(cols_full["weight/walls"].tolist())) > 2  # the weights moved
    out = tmp_path / "run"
    assert main(["solve", str(path), "--out", str(out), "--set", f"train.balance={method}",
                 "--set", "train.iterations=3", "--set", "train.eval_every=1",
                 "--set", "train.balance_every=1", "--set", "model.width=8"]) == 0
    assert "w_walls" in capsys.readouterr().err
    import h5py
    with h5py.File(out / "solution.h5") as f:
        assert f["history/weight/walls"].shape == (4,) and f["history/weight/pde"][0] == 1.0


def test_compiled_run_resumed_between_updates_balances_with_fresh_forwards(tmp_path):
    """A compiled step's backward may not be retained (each term gets a fresh forward): a run resumed between two balance updates
    (a plain compiled step first, then an update) finishes, equal to the uninterrupted run."""
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL)
    ov = {**SMALL, "train.dtype": "float32", "train.compile": True, "train.balance": "grad_norm",
          "train.balance_every": 2, "train.iterations": 6, "train.eval_every": 2, "train.checkpoint_every": 3}
    prep = prepare(path, overrides=ov)

    full_tr, _ = trained(prep)
    _, part = trained(prep, stop_at=3)
    rest_tr, rest = trained(prep, resume=part.last_good)
    assert rest.iteration == 6
    for a, b in zip(full_tr.model.state_dict().values(), rest_tr.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full_tr.balancer.weights, rest_tr.balancer.weights, rtol=1e-5, atol=0)
