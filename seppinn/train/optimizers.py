"""Adam (one fused kernel where the device has it), its learning-rate schedule, and L-BFGS."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..problem.solver_config import TrainConfig


# L-BFGS rescales its objective to 1 where it has fallen below this (Optimizers.lbfgs_step)
RESCALE_BELOW = 0.1

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
    # (Burgers after 20,000 Adam steps, loss 1.2e-3, bench/RESULTS.md). Relative to the phase's start they
    # hold; ``lbfgs_step`` raises the scale whenever the scaled loss has fallen tenfold again.
    lbfgs_scale: torch.Tensor | None = None

    lbfgs_last: float | None = None  # the unscaled loss where the last L-BFGS step began

    def lbfgs_step(self, closure: Callable[[], torch.Tensor]) -> bool:
        """One L-BFGS iteration on ``closure`` (the loss times ``lbfgs_scale``); when the scaled loss
        where it began is below ``RESCALE_BELOW``, the objective is rescaled to 1 there (``_rescale``),
        so the absolute tolerances keep holding as the loss falls by orders of magnitude. True when
        the last step did not lower the loss: a strong-Wolfe step that is taken always does, so its
        line search found no decrease."""
        start = float(self.lbfgs.step(closure))  # type: ignore[no-untyped-call]  # L-BFGS syncs anyway
        assert self.lbfgs_scale is not None  # set by the closure's first call
        loss = start / float(self.lbfgs_scale)
        stalled = self.lbfgs_last is not None and not loss < self.lbfgs_last
        self.lbfgs_last = loss
        if 0.0 < start < RESCALE_BELOW:
            self._rescale(1.0 / start)
        return stalled

    def _rescale(self, c: float) -> None:
        """Minimise ``c`` times the current objective from here on, with the same iterates: the
        gradients in the history (y = g_new - g_old) and the last gradient and loss scale by c, the
        curvature 1 / (y.s) and the initial inverse Hessian y.s / y.y by 1 / c; the search direction
        -H g and the step length are unchanged."""
        assert self.lbfgs_scale is not None
        self.lbfgs_scale = self.lbfgs_scale * c
        state = self.lbfgs.state[self.lbfgs.param_groups[0]["params"][0]]
        if "old_dirs" not in state:
            return
        state["old_dirs"] = [y * c for y in state["old_dirs"]]
        state["ro"] = [r / c for r in state["ro"]]
        state["H_diag"] = state["H_diag"] / c
        state["prev_flat_grad"] = state["prev_flat_grad"] * c
        state["prev_loss"] = state["prev_loss"] * c

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
