"""Activation functions with their derivatives up to order 4 (for jets), by name.

``derivatives(a, m)`` returns ``[s(a), s'(a), ..., s^(m)(a)]``, each shaped like ``a``.
``smooth_order`` is the highest derivative order that is not zero almost everywhere
(None: infinitely smooth); the compiler refuses a problem that needs more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import registry

MAX_ORDER = 4

Derivatives = Callable[[torch.Tensor, int], list[torch.Tensor]]


@dataclass(frozen=True)
class Activation:
    name: str
    derivatives: Derivatives
    smooth_order: int | None
    siren: bool  # SIREN: pre-activations are multiplied by omega0, SIREN initialisation
    doc: str


ACTIVATIONS: dict[str, Activation] = {}


def register_activation(name: str, siren: bool = False) -> Callable[[Derivatives], Derivatives]:
    """Implement the activation ``name`` of ``registry.ACTIVATIONS`` (its doc and smooth order come from there)."""
    def deco(fn: Derivatives) -> Derivatives:
        ACTIVATIONS[name] = Activation(name, fn, registry.SMOOTH_ORDERS.get(name), siren, registry.ACTIVATIONS[name])
        return fn

    return deco


@register_activation("sin", siren=True)
def _sin(a: torch.Tensor, m: int) -> list[torch.Tensor]:
    s, c = torch.sin(a), torch.cos(a)
    return [s, c, -s, -c, s][: m + 1]


@register_activation("tanh")
def _tanh(a: torch.Tensor, m: int) -> list[torch.Tensor]:
    t = torch.tanh(a)
    out = [t]
    if m >= 1:
        d1 = 1 - t * t
        out.append(d1)
    if m >= 2:
        out.append(-2 * t * d1)
    if m >= 3:
        out.append(d1 * (6 * t * t - 2))
    if m >= 4:
        out.append(8 * t * d1 * (2 - 3 * t * t))
    return out


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@register_activation("gelu")
def _gelu(a: torch.Tensor, m: int) -> list[torch.Tensor]:
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2.0)))
    out = [a * cdf]
    if m >= 1:
        pdf = torch.exp(-0.5 * a * a) * _INV_SQRT_2PI
        out.append(cdf + a * pdf)
        a2 = a * a
        if m >= 2:
            out.append(pdf * (2 - a2))
        if m >= 3:
            out.append(pdf * a * (a2 - 4))
        if m >= 4:
            out.append(pdf * ((7 - a2) * a2 - 4))
    return out


@register_activation("relu")
def _relu(a: torch.Tensor, m: int) -> list[torch.Tensor]:
    out = [torch.relu(a)]
    if m >= 1:
        out.append((a > 0).to(a.dtype))
    out.extend(torch.zeros_like(a) for _ in range(m - 1))
    return out
