"""Automatic loss balancing (``train.balance``): per-term weights lambda_i that multiply the user's
``train.weights`` w_i, so the step minimises sum_i lambda_i w_i L_i.

``grad_norm`` (Wang, Wang & Perdikaris 2023, jaxpi): every ``train.balance_every`` iterations

    lambda_i_new = sum_j |grad(w_j L_j)| / |grad(w_i L_i)|,     lambda_i <- m lambda_i + (1 - m) lambda_i_new

(m = ``train.balance_momentum``), so the weighted terms' gradients reach equal norms: the user's
weights set where balancing starts, not where it ends. (Keeping them as ratios of the balanced
norms instead made helmholtz3d's wall weight of 100 drown its PDE: rel L2 1.0 in the tournament,
bench/RESULTS.md.) The gradients are those the step itself uses (SepPGD's preconditioned ones
where it is active). At an update the step's gradient sum_i lambda_i g_i is made from the terms'
own gradients (``Trainer.balance``): T - 1 backward passes more than a plain step, and compiled
T - 1 fresh forwards (a compiled backward cannot be retained); everything stays on the device.

``ntk`` (jaxpi's NTK weighting): the same update with |grad(w_i L_i)| replaced by w_i tr(K_i) / N_i,
term i's mean NTK diagonal (``ntk_trace``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BALANCE_FLOOR = 1e-30  # a gradient norm below this counts as zero: that term keeps its weight


class Balancer:
    """The balance weights (T,) of the terms, in term order; all ones with ``method = "none"``."""

    def __init__(self, method: str, user_weights: Sequence[float], every: int, momentum: float,
                 device: torch.device) -> None:
        self.method, self.every, self.momentum = method, every, momentum
        self.user = torch.tensor([float(w) for w in user_weights], dtype=torch.float64, device=device)
        self.weights = torch.ones(len(user_weights), dtype=torch.float64, device=device)

    @property
    def active(self) -> bool:
        return self.method != "none"

    def due(self, iteration: int) -> bool:
        return self.active and iteration % self.every == 0

    def update(self, grads: Sequence[Sequence[torch.Tensor | None]]) -> list[torch.Tensor | None]:
        """New weights from ``grads[i]``, the gradient of the user-weighted term loss w_i L_i per
        parameter (None: unused); returns the step's gradient sum_i lambda_i g_i per parameter."""
        norms = []
        for g in grads:
            sq = [x.to(torch.float64).pow(2).sum() for x in g if x is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else torch.zeros((), dtype=torch.float64,
                                                                                device=self.user.device))
        self.set_from_norms(torch.stack(norms).to(self.user.device))
        out: list[torch.Tensor | None] = []
        for j in range(len(grads[0])):
            parts = [x * w.to(x.dtype) for g, w in zip(grads, self.weights) if (x := g[j]) is not None]
            out.append(torch.stack(parts).sum(0) if parts else None)
        return out

    def set_from_norms(self, weighted_norms: torch.Tensor) -> None:
        """The update from |grad(w_i L_i)| per term (terms with w_i = 0 or no gradient keep their weight)."""
        live = (self.user != 0) & (weighted_norms > BALANCE_FLOOR)
        norms = torch.where(live, weighted_norms, 1.0)
        new = torch.where(live, (norms * live).sum() / norms, self.weights)
        self.weights = self.momentum * self.weights + (1 - self.momentum) * new

    def apply(self, stacked: torch.Tensor) -> torch.Tensor:
        """The total the step minimises: sum_i lambda_i (w_i L_i)."""
        return (stacked * self.weights.to(stacked.dtype)).sum() if self.active else stacked.sum()
