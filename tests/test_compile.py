"""train.compile: the compiled loss and backward give the eager run's numbers (one compilation
costs tens of seconds on 2 cores, so there are two such tests: residuals on the grid with fused
contractions, and grid-free), and every evaluation mode traces as one graph."""

from __future__ import annotations

import numpy as np
import pytest

import seppinn

from .conftest import HELMHOLTZ_SMALL, ROOT, write


@pytest.mark.slow
@pytest.mark.parametrize("grid_free", [False, True])
def test_compiled_training_equals_eager(tmp_path, grid_free):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL.replace("[reference]", '[data]\nu = "exact"\n[reference]'))
    ov = {"train.iterations": 30, "train.eval_every": 10, "train.sampling": "random", "train.resample_every": 10,
          "precondition.method": "seppgd", "precondition.k": 3, "precondition.update_every": 5,
          "model.rank": 8, "model.width": 16, "train.points": 12, "model.activation": "tanh", "train.lr": 1e-3,
          "train.dtype": "float64", "train.grid_free": grid_free}
    eager = seppinn.solve(path, overrides={**ov, "train.compile": False}, progress=False)
    compiled = seppinn.solve(path, overrides={**ov, "train.compile": True}, progress=False)
    assert compiled.trainer._compiled is not None  # it did not fall back to eager
    for k in ("loss/pde", "loss/walls", "loss/data", "rel_l2/u"):
        np.testing.assert_allclose(compiled.history[k], eager.history[k], rtol=1e-9, err_msg=k)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("grid_free", [False, True])
def test_the_loss_traces_as_one_graph(grid_free):
    """No graph break on the grid (fused) and grid-free paths, with SepPGD and Gauss weights."""
    import torch

    from seppinn.train.loop import Trainer

    prep = seppinn.prepare(ROOT / "problems/helmholtz3d_data.toml", "spinn", {
        "train.points": 10, "train.grid_free": grid_free, "train.sampling": "gauss",
        "precondition.method": "seppgd", "precondition.k": 3})
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    tr.preconditioners.rebuild()
    assert {pp.mode for parts in tr.plan.parts for pp in parts} == {"grid_free" if grid_free else "fused"}
    explained = torch._dynamo.explain(lambda: torch.stack(list(tr.losses().values())))()
    assert explained.graph_break_count == 0, explained.break_reasons
