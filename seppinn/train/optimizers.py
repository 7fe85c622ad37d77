"""Adam (one fused kernel where the device has it), its learning-rate schedule, and L-BFGS."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..problem.solver_config import TrainConfig


def make_adam(params: Sequence[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam as one fused kernel over all parameters where the device supports it (CPU, CUDA)
    instead of a loop over them: the fusion a torch.compile'd optimizer step gives, without
    compiling it."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


@dataclass
class Optimizers:
    adam: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.LambdaLR
    lbfgs: torch.optim.LBFGS


def schedule(t: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor at an iteration: ``train.schedule`` (exponential, cosine or constant)."""
    if t.schedule == "exponential":
        return lambda i: t.decay_rate ** (i / t.decay_every)
    if t.schedule == "cosine":
        return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, t.iterations) / max(t.iterations, 1)))
    return lambda i: 1.0


def make_optimizers(params: Sequence[torch.nn.Parameter], t: TrainConfig) -> Optimizers:
    adam = make_adam(params, t.lr)
    # One L-BFGS iteration per step() so the history keeps its cadence; max_eval must allow the
    # line search its evaluations (torch defaults it to max_iter * 5 // 4 = 1).
    return Optimizers(adam, torch.optim.lr_scheduler.LambdaLR(adam, schedule(t)),
                      torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=26, history_size=50,
                                        line_search_fn="strong_wolfe"))
