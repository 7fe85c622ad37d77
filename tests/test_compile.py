"""train.compile: the compiled loss and backward give the eager run's numbers (one compilation
costs tens of seconds on 2 cores, so there is one such test)."""

from __future__ import annotations

import numpy as np
import pytest

import seppinn

from .conftest import HELMHOLTZ_SMALL, write


@pytest.mark.slow
def test_compiled_training_equals_eager(tmp_path):
    path = write(tmp_path / "p.toml", HELMHOLTZ_SMALL.replace("[reference]", '[data]\nu = "exact"\n[reference]'))
    ov = {"train.iterations": 30, "train.eval_every": 10, "train.sampling": "random", "train.resample_every": 10,
          "precondition.method": "seppgd", "precondition.k": 3, "precondition.update_every": 5,
          "model.rank": 8, "model.width": 16, "train.points": 12, "model.activation": "tanh", "train.lr": 1e-3,
          "train.dtype": "float64"}
    eager = seppinn.solve(path, overrides={**ov, "train.compile": False}, progress=False)
    compiled = seppinn.solve(path, overrides={**ov, "train.compile": True}, progress=False)
    assert compiled.trainer._compiled is not None  # it did not fall back to eager
    for k in ("loss/pde", "loss/walls", "loss/data", "rel_l2/u"):
        np.testing.assert_allclose(compiled.history[k], eager.history[k], rtol=1e-9, err_msg=k)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
