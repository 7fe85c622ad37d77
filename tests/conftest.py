from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def f64():
    """Run a test in float64 (math checks run stricter than users)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


def eps_tol(dtype: torch.dtype, factor: float = 1e3) -> float:
    """Tolerances from the dtype: factor * machine epsilon."""
    return factor * torch.finfo(dtype).eps


# the training settings the tests were written against: no L-BFGS finish, a constant learning rate,
# no loss balancing (the defaults have all three; tests that count iterations or compare runs pin these)
PLAIN = {"train.lbfgs_iterations": 0, "train.schedule": "constant", "train.balance": "none"}


def trained(prep, resume=None, stop_at=None):
    """(trainer, state) of ``prep`` trained on CPU; ``stop_at``: stop at that checkpoint's iteration,
    as the SIGINT handler does; ``resume``: a snapshot to continue from."""
    from seppinn.train.loop import Trainer

    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=torch.device("cpu"), progress=False)

    def on_checkpoint(snap):
        if snap["iteration"] == stop_at:
            tr.stop_requested = True

    return tr, tr.train(on_checkpoint, resume)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


HELMHOLTZ_SMALL = """
[problem]
name = "poisson2d"
[axes]
x = [-1.0, 1.0]
y = [0.0, 2.0]
[fields]
u = {}
[definitions]
exact = "sin(pi*x)*sin(pi*y)"
[[equations]]
residual = "lap(u) - lap(exact)"
[[conditions]]
name = "walls"
on = "boundary"
value = "exact"
[reference]
u = "exact"
"""


DATA_PROBLEM = """
[problem]
name = "fit"
kind = "data"
[axes]
x = [0.0, 1.0]
y = [0.0, 1.0]
[fields]
u = {}
[data]
u = SPEC
"""


def open_gates(module: torch.nn.Module, seed: int = 0) -> None:
    """Move every PirateNet gate's alpha off its initial 0, so that the residual blocks take part
    (at alpha = 0 they are skipped and their weights get no gradient: a test could not see them)."""
    from seppinn.model.factor_nets import ResidualGate

    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, ResidualGate):
            with torch.no_grad():
                m.alpha.copy_(0.3 + 0.5 * torch.rand(m.alpha.shape, generator=g, dtype=torch.float64))
