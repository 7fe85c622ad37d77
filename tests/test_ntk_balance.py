"""NTK balancing (train.balance = "ntk"): each term's NTK trace from per-axis quantities
(``train.ntk_trace``) against the dense NTK J J^T of the term's residual on a small grid, with a
nonlinear equation, faces, a Robin condition, data, Gauss weights and a hard condition; the sampled
estimate's mean; the weights in a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seppinn
from seppinn import SolverConfigError
from seppinn.compile.plan import make_plan
from seppinn.train import ntk_trace
from seppinn.train.loop import Trainer
from seppinn.train.ntk_trace import term_traces

from .conftest import PLAIN, open_gates, write

PROBLEM = """
[problem]
name = "ntk"
[axes]
x = [0.0, 2.0]
y = [-1.0, 1.0]
[fields]
u = {}
[definitions]
exact = "sin(pi*x)*cos(pi*y/2) + x*y/2"
[[equations]]
name = "pde"
residual = "-lap(u) + u**2 - (-lap(exact) + exact**2)"
[[conditions]]
name = "walls"
on = ["x = 0", "y = -1", "y = 1"]
value = "exact"
[[conditions]]
name = "robin"
on = "x = 2"
expr = "dn(u) + 3*u"
value = "3*exact + diff(exact, x)"
[data]
u = "exact"
[reference]
u = "exact"
"""
OV = {**PLAIN, "train.dtype": "float64", "train.points": {"x": 7, "y": 6}, "model.rank": 3, "model.width": 10,
      "model.depth": 3, "model.activation": "tanh", "train.test_points": 5, "train.compile": False,
      "train.weights": {"walls": 4.0}}


def trainer(tmp_path, text=PROBLEM, **extra):
    prep = seppinn.prepare(write(tmp_path / "p.toml", text), overrides={**OV, **extra})
    return Trainer(prep.compiled, prep.config, plan=make_plan(prep.compiled, prep.config, mode="grid"),
                   device=torch.device("cpu"), progress=False)


def dense_traces(tr):
    """Per term: weight x sum over parts and points of w |dr(x)/dtheta|^2 (one autograd gradient per
    point, the dense NTK's diagonal) / the points, or the sum of per-face means."""
    params = list(tr.model.parameters())
    jets = tr.losses.jets()
    out = []
    for t, parts in zip(tr.c.terms, tr.losses.parts):
        sums, counts = [], []
        for p in parts:
            r = p.residual(jets, {})
            w = p._weighted(torch.ones_like(r)).reshape(-1)
            flat = r.reshape(-1)
            diag = torch.stack([sum((g ** 2).sum() for g in torch.autograd.grad(flat[i], params, retain_graph=True,
                                                                                  allow_unused=True) if g is not None)
                                for i in range(flat.numel())])
            sums.append((w * diag).sum())
            counts.append(flat.numel())
        if t.reduction == "sum":
            value = sum(s / c * p.part.faces for s, c, p in zip(sums, counts, parts))
        else:
            value = sum(sums) / sum(counts)
        out.append(t.weight * value)
    return torch.stack(out).detach()


@pytest.mark.parametrize("extra", [{}, {"train.sampling": "gauss"}, {"train.face_reduction": "sum"},
                                   {"model.kind": "tt", "model.rank": 3}, {"model.body": "mlp", "model.activation": "sin"},
                                   {"train.sampling": "random", "model.fourier_features": 4},
                                   {"model.weight_factorization": {"mean": 0.5, "std": 0.3}},
                                   {"model.body": "pirate", "model.weight_factorization": {"mean": 0.5, "std": 0.3}}])
def test_ntk_traces_equal_the_dense_ntk(tmp_path, monkeypatch, extra):
    monkeypatch.setattr(ntk_trace, "SAMPLE", 10**6)  # every point: exact
    tr = trainer(tmp_path, **extra)
    open_gates(tr.model)
    assert [t.name for t in tr.c.terms] == ["pde", "walls", "robin", "data"]
    want = dense_traces(tr)
    got = term_traces(tr.losses, torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    assert len(set(np.round(np.log10(want.numpy()), 1))) == 4  # four different sizes: a real check


def test_ntk_trace_with_a_hard_condition_and_a_scaled_field(tmp_path, monkeypatch):
    monkeypatch.setattr(ntk_trace, "SAMPLE", 10**6)
    text = PROBLEM.replace('on = ["x = 0", "y = -1", "y = 1"]', 'on = ["y = -1", "y = 1"]\nenforce = "hard"')
    text = text.replace("u = {}", "u = { scale = 7 }")
    tr = trainer(tmp_path, text, **{"train.weights": {}})
    assert tr.model["u"].hard_axis == 1 and tr.model["u"].output_scale == 7.0
    torch.testing.assert_close(term_traces(tr.losses, torch.Generator().manual_seed(0)), dense_traces(tr),
                               rtol=1e-10, atol=0)


def test_sampled_traces_are_unbiased(tmp_path, monkeypatch):
    tr = trainer(tmp_path)
    monkeypatch.setattr(ntk_trace, "SAMPLE", 10**6)
    exact = term_traces(tr.losses, torch.Generator().manual_seed(0))
    monkeypatch.setattr(ntk_trace, "SAMPLE", 5)  # 5 of the 42 interior points, 5 of 7 on a face
    runs = torch.stack([term_traces(tr.losses, torch.Generator().manual_seed(s)) for s in range(300)])
    assert not torch.allclose(runs[0], exact)  # each one is a sample
    torch.testing.assert_close(runs.mean(0), exact, rtol=0.1, atol=0)


def test_ntk_balanced_run_logs_weights_and_refuses_tucker(tmp_path):
    path = write(tmp_path / "p.toml", PROBLEM)
    ov = {**OV, "train.balance": "ntk", "train.balance_every": 2, "train.balance_momentum": 0.0,
          "train.iterations": 2, "train.eval_every": 1}
    prep = seppinn.prepare(path, overrides=ov)
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    traces = term_traces(tr.losses, torch.Generator().manual_seed(0 * 1_000_003 + 0)).numpy()  # seed, iteration 0
    r = seppinn.solve(path, overrides=ov, progress=False)
    got = np.array([r.history[f"weight/{t.name}"][1] for t in prep.compiled.terms])
    np.testing.assert_allclose(got, traces.sum() / traces, rtol=1e-8)  # the update at iteration 0
    with pytest.raises(SolverConfigError, match="Tucker model also trains its core"):
        seppinn.prepare(path, overrides={**ov, "model.kind": "tucker"})
