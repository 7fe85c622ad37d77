"""Adam (one fused kernel where the device has it), its learning-rate schedule, and L-BFGS."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..problem.solver_config import TrainConfig


Params = Sequence[torch.nn.Parameter] | Sequence[dict[str, Any]]  # parameters, or Adam's parameter groups


def make_adam(params: Params, lr: float) -> torch.optim.Adam:
    """Adam as one fused kernel over all parameters where the device supports it (CPU, CUDA)
    instead of a loop over them: the fusion a torch.compile'd optimizer step gives, without
    compiling it. ``params``: parameters, or groups (a group's own "lr" wins)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


@dataclass
class Optimizers:
    adam: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.LambdaLR
    lbfgs: torch.optim.LBFGS
    lrs: list[float]  # each Adam group's own learning rate, unscaled
    # L-BFGS minimises the loss times this: 1 / the loss at the phase's first evaluation. torch's
    # L-BFGS tolerances are absolute (|g|_max <= 1e-7 stops; g.d > -1e-9 and a line-search bracket
    # below 1e-9 skip the step): unscaled, a loss that Adam had already made small never moved
    # (Burgers after 20,000 Adam steps, loss 1.2e-3, bench/RESULTS.md). Relative to the phase's start they hold.
    lbfgs_scale: torch.Tensor | None = None

    def scale_lr(self, scale: float, t: TrainConfig) -> None:
        """Every group's learning rate times ``scale`` (a rollback halves it), at the schedule's current point."""
        self.schedule.base_lrs = [lr * scale for lr in self.lrs]
        factor = schedule(t)(self.schedule.last_epoch)
        for group, base in zip(self.adam.param_groups, self.schedule.base_lrs):
            group["lr"] = base * factor


def schedule(t: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor at an iteration: ``train.schedule`` (exponential, cosine or constant)."""
    if t.schedule == "exponential":
        return lambda i: t.decay_rate ** (i / t.decay_every)
    if t.schedule == "cosine":
        return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, t.iterations) / max(t.iterations, 1)))
    return lambda i: 1.0


def make_optimizers(params: Params, t: TrainConfig) -> Optimizers:
    """Adam with the schedule (groups keep their own learning rates, scaled alike), and L-BFGS over
    all the parameters (it takes no groups)."""
    adam = make_adam(params, t.lr)
    flat: list[torch.nn.Parameter] = []
    for g in params:
        flat += g["params"] if isinstance(g, dict) else [g]
    # One L-BFGS iteration per step() so the history keeps its cadence; max_eval must allow the
    # line search its evaluations (torch defaults it to max_iter * 5 // 4 = 1).
    lrs = [float(g["lr"]) for g in adam.param_groups]
    return Optimizers(adam, torch.optim.lr_scheduler.LambdaLR(adam, schedule(t)),
                      torch.optim.LBFGS(flat, lr=1.0, max_iter=1, max_eval=26, history_size=50,
                                        line_search_fn="strong_wolfe"), lrs)
