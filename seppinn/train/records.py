"""What the training loop records: evaluations, its state, and the history as columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import RunError


@dataclass
class Evaluation:
    iteration: int
    seconds: float
    losses: dict[str, float]  # weighted, per term, plus "total"
    metrics: dict[str, dict[str, float]]  # field -> {"rel_l2": .., "mse": ..}
    diagnostics: dict[str, float] = field(default_factory=dict)  # history column -> value: weight/<term>, ...


@dataclass
class TrainState:
    history: list[Evaluation] = field(default_factory=list)
    best: Evaluation | None = None
    best_state: dict[str, torch.Tensor] | None = None
    iteration: int = 0
    seconds: float = 0.0  # training time (evaluations excluded)
    lr_scale: float = 1.0  # halved at every rollback
    rollbacks: int = 0
    interrupted: bool = False
    last_good: dict[str, Any] | None = None  # the latest snapshot with finite values (Trainer.snapshot)

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> TrainState:
        """The loop state a ``Trainer.snapshot`` holds (its ``last_good`` is the snapshot)."""
        return cls(history=[Evaluation(**ev) for ev in snap["history"]],
                   best=Evaluation(**snap["best"]) if snap["best"] else None, best_state=snap["best_state"],
                   iteration=snap["iteration"], seconds=snap["seconds"], last_good=dict(snap))


class Diverged(RunError):
    """A non-finite loss or parameter; ``state`` holds the last good snapshot (``last_good``)."""

    def __init__(self, message: str, state: TrainState) -> None:
        super().__init__(message)
        self.state = state


def history_columns(history: Sequence[Evaluation]) -> dict[str, np.ndarray]:
    """Equal-length columns: iteration, seconds, loss/<term>, <metric>/<field> (rel_l2, mse, psnr, ...)
    and the diagnostics (weight/<term> with loss balancing, causal_min/<term> with causal training)."""
    cols: dict[str, list[float]] = {"iteration": [], "seconds": []}
    for ev in history:
        cols["iteration"].append(ev.iteration)
        cols["seconds"].append(ev.seconds)
        for n, v in ev.losses.items():
            cols.setdefault(f"loss/{n}", []).append(v)
        for f, m in ev.metrics.items():
            for k, v in m.items():
                cols.setdefault(f"{k}/{f}", []).append(v)
        for k, v in ev.diagnostics.items():
            cols.setdefault(k, []).append(v)
    return {k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64) for k, v in cols.items()}
