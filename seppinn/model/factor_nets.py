"""Factor networks: one small MLP per axis (and field), all axes evaluated as one batch.

A ``FactorBank`` holds the D factor networks f_1..f_D of one field with stacked weights
(leading axis dimension), so one batched matmul serves every axis and the operation count
does not grow with D. Each network maps a scalar coordinate x in [lo_d, hi_d] to ``out``
values; inputs are mapped to xi = 2 (x - lo)/(hi - lo) - 1 in [-1, 1], and derivatives with
respect to x carry the chain-rule factor (2/(hi - lo))^a.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from . import jets as J
from .activations import ACTIVATIONS, Activation


class Tape:
    """For layer-wise NTK quantities: every linear layer's input (in call order), and a zero probe
    added to each layer's output, so that d(sum of outputs)/d(probe) is that layer's backprop
    signal at every point. ``jets = False`` (the pseudo-NTK, order-0 passes): inputs (D, n, in),
    probes (D, n, out); ``jets = True``: every jet entry, inputs (D, m+1, n, in), probes (D, m+1, n, out)."""

    def __init__(self, probes: Sequence[torch.Tensor], jets: bool = False) -> None:
        self.probes, self.jets = probes, jets
        self.inputs: list[torch.Tensor] = []


class StackedLinear(nn.Module):
    """D independent linear layers: weight (D, out, in), bias (D, out).

    After ``factorize`` the weight is random-weight-factorised (Wang et al. 2023, jaxpi):
    W = diag(exp(s)) V with V = ``weight`` and s = ``log_scale`` (D, out) both trained."""

    log_scale: nn.Parameter | None

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))
        self.log_scale = None

    def factorize(self, mean: float, std: float) -> None:
        """W -> diag(exp(s)) V with s ~ N(mean, std^2) and V = W / exp(s): the same function, a new
        parametrisation."""
        with torch.no_grad():
            s = torch.randn(self.bias.shape, dtype=self.weight.dtype).to(self.weight.device) * std + mean
            self.weight.div_(torch.exp(s)[..., None])
        self.log_scale = nn.Parameter(s)

    def w(self) -> torch.Tensor:
        """The effective weight W (D, out, in)."""
        if self.log_scale is None:
            return self.weight
        return self.weight * torch.exp(self.log_scale)[..., None]

    def gram(self, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """This layer's share of a factor NTK (D, n, n) from its inputs a (D, n, in) and backprop
        signals delta (D, n, out): sum over its parameters of dz_i/dp dz_j/dp. Plain: (delta
        delta^T) * (a a^T + 1). Factorised: V's share carries exp(2 s), s's is (delta * W a)(...)^T."""
        if self.log_scale is None:
            return (delta @ delta.transpose(1, 2)) * (a @ a.transpose(1, 2) + 1)
        dv = delta * torch.exp(self.log_scale)[:, None, :]
        ds = delta * (a @ self.w().transpose(1, 2))
        return ((dv @ dv.transpose(1, 2)) * (a @ a.transpose(1, 2)) + ds @ ds.transpose(1, 2)
                + delta @ delta.transpose(1, 2))

    def jet_trace(self, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Per point, the squared gradient norm over this layer's parameters of sum_m <delta_m, z_m>
        (z_m the layer's output jet entry m): (D, n) from inputs h (D, m+1, n, in) and signals
        delta (D, m+1, n, out). The bias reaches the value entry only."""
        dv = delta if self.log_scale is None else delta * torch.exp(self.log_scale)[:, None, None, :]
        g_delta = torch.einsum("dmno,dkno->dnmk", dv, dv)
        g_h = torch.einsum("dmni,dkni->dnmk", h, h)
        out = (g_delta * g_h).sum((2, 3)) + (delta[:, 0] ** 2).sum(-1)
        if self.log_scale is not None:
            out = out + ((delta * (h @ self.w().transpose(1, 2).unsqueeze(1))).sum(1) ** 2).sum(-1)
        return out

    def jet(self, h: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        """h: (D, m+1, n, in) -> (D, m+1, n, out); the bias shifts the value entry only.

        ``tape`` (order-0 passes only): records the input, adds the layer's probe (see ``Tape``)."""
        out = h @ self.w().transpose(1, 2).unsqueeze(1)
        out = torch.cat([out[:, :1] + self.bias[:, None, None], out[:, 1:]], dim=1)
        if tape is not None:
            probe = tape.probes[len(tape.inputs)]
            out = out + (probe if tape.jets else probe[:, None])
            tape.inputs.append(h if tape.jets else h[:, 0])
        return out


class ResidualGate(nn.Module):
    """PirateNet's adaptive skip (Wang et al. 2024): x + alpha (h - x) with one trainable alpha per
    axis (D,), zero at initialisation, so each residual block starts as the identity. In NTK terms a
    layer with input a = h - x: the output is alpha * a, so dz/dalpha = a."""

    def __init__(self, n: int, width: int) -> None:
        super().__init__()
        self.in_features = self.out_features = width
        self.alpha = nn.Parameter(torch.zeros(n))

    def gram(self, a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """alpha's share of a factor NTK (D, n, n) from inputs a and signals delta (D, n, width)."""
        s = (a * delta).sum(-1)
        return s[:, :, None] * s[:, None, :]

    def jet_trace(self, h: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """(D, n): per point, (d/dalpha sum_m <delta_m, alpha h_m>)^2 from h, delta (D, m+1, n, width)."""
        return (h * delta).sum((1, 3)) ** 2

    def jet(self, h: torch.Tensor, tape: Tape | None = None) -> torch.Tensor:
        """The gated step alpha * h for the jet h = (block output - block input), (D, m+1, n, width)."""
        out = h * self.alpha[:, None, None, None]
        if tape is not None:
            probe = tape.probes[len(tape.inputs)]
            out = out + (probe if tape.jets else probe[:, None])
            tape.inputs.append(h if tape.jets else h[:, 0])
        return out


class FactorBank(nn.Module):
    """The D factor networks of one field.

    ``depth`` counts the linear layers along the path, output layer included (SPINN's
    ``n_layers``); ``depth >= 2``. ``body = "pirate"``: (depth - 1) // 3 residual blocks of three
    layers, at least one (PirateNet's three blocks: depth 10).
    """

    lo: torch.Tensor  # (D,) float64 buffers: the axis ranges
    hi: torch.Tensor
    freqs: torch.Tensor  # (D, F) embedding frequencies (only with Fourier/periodic embeddings)
    raw: torch.Tensor  # (D,) bool: axes that keep the raw input beside Fourier ones
    hidden: nn.ModuleList
    gates: nn.ModuleList

    def __init__(
        self,
        ranges: Sequence[tuple[float, float]],
        out_features: int,
        *,
        width: int,
        depth: int,
        activation: str,
        body: str = "mlp",
        omega0: float = 30.0,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        periodic: Sequence[bool] | None = None,
        periodic_modes: int = 8,
        weight_factorization: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        D = len(ranges)
        self.register_buffer("lo", torch.tensor([r[0] for r in ranges], dtype=torch.float64))
        self.register_buffer("hi", torch.tensor([r[1] for r in ranges], dtype=torch.float64))
        self.act: Activation = ACTIVATIONS[activation]
        self.omega0 = float(omega0) if self.act.siren else 1.0
        self.body = body
        # Input embeddings: raw xi, random Fourier features [cos(w xi), sin(w xi)], or for a periodic
        # axis the integer harmonics w = pi k (k = 1..K), exactly periodic over [-1, 1] in the value
        # and every derivative. Axes are batched, so all embeddings share one width (zero-padded).
        periodic = list(periodic or [False] * D)
        F = max(fourier_features, periodic_modes if any(periodic) else 0)
        self.fourier = F
        if F:
            freqs = torch.zeros(D, F)
            raw = torch.zeros(D, dtype=torch.bool)
            for d in range(D):
                if periodic[d]:
                    freqs[d, :periodic_modes] = math.pi * torch.arange(1, periodic_modes + 1)
                elif fourier_features:
                    freqs[d, :fourier_features] = torch.randn(fourier_features) * fourier_scale * 2 * math.pi
                else:
                    raw[d] = True
            self.register_buffer("freqs", freqs)
            self.register_buffer("raw", raw)
        self.any_raw = bool(F and raw.any())  # fixed at construction: no branch on data later
        in_features = 2 * F if F else 1
        hidden = depth - 1
        self.first: list[StackedLinear]
        if body == "mlp":
            dims = [in_features] + [width] * hidden
            layers = [StackedLinear(D, a, b) for a, b in zip(dims[:-1], dims[1:])]
            self.hidden = nn.ModuleList(layers)
            self.gates = nn.ModuleList()
            self.first = [layers[0]]
        elif body in ("modified_mlp", "pirate"):
            self.enc_u = StackedLinear(D, in_features, width)
            self.enc_v = StackedLinear(D, in_features, width)
            self.enc_h = StackedLinear(D, in_features, width)
            blocks = max(1, hidden // 3) if body == "pirate" else 0
            self.hidden = nn.ModuleList(StackedLinear(D, width, width) for _ in range(3 * blocks or hidden))
            self.gates = nn.ModuleList(ResidualGate(D, width) for _ in range(blocks))
            self.first = [self.enc_u, self.enc_v, self.enc_h]
        else:
            raise ValueError(f"unknown body {body!r}")
        self.out = StackedLinear(D, width, out_features)
        self._initialise()
        if weight_factorization:  # random weight factorisation of every layer, s ~ N(mean, std^2)
            for layer in self.layers():
                if isinstance(layer, StackedLinear):
                    layer.factorize(weight_factorization["mean"], weight_factorization["std"])

    def layers(self) -> list[StackedLinear | ResidualGate]:
        """The linear layers (and PirateNet's gates) in the order a forward pass calls them."""
        body: list[StackedLinear | ResidualGate] = [cast(StackedLinear, layer) for layer in self.hidden]
        if self.body == "pirate":  # each block: three layers, then its gate
            body = [m for b, gate in enumerate(self.gates) for m in (*body[3 * b:3 * b + 3], cast(ResidualGate, gate))]
        first = [] if self.body == "mlp" else [self.enc_u, self.enc_v, self.enc_h]
        return [*first, *body, self.out]

    def pseudo_ntk(self, x: torch.Tensor, out_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Factor pseudo-NTK by sum of logits, per axis: x (D, n) -> K (D, n, n) with
        K[d, i, j] = <grad_{theta_d} sum_o f_d(x_i)_o, grad_{theta_d} sum_o f_d(x_j)_o>.

        Layer-wise Gram form: for a linear layer z = W a + b, d s_i/dW = delta_i a_i^T and
        d s_i/db = delta_i, so its share is (delta delta^T) * (a a^T + 1). The gradient of
        sum_i s_i with respect to a zero probe added to z gives every delta_i at once (point i
        only reaches s_i); under torch.compile through torch.func.grad, which it can trace. ``out_mask``
        (D, out): outputs that take part in the sum (the others are unused by the model)."""
        D, n = x.shape
        zeros = [torch.zeros(D, n, layer.out_features, dtype=x.dtype, device=x.device) for layer in self.layers()]

        def total(probes: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
            tape = Tape(probes)
            out = self.jets(x, 0, tape)
            if out_mask is not None:
                out = out * out_mask.to(out.dtype)[:, None, None, :]
            return out.sum(), tape.inputs

        if torch.compiler.is_compiling():
            with torch.no_grad():
                deltas, inputs = torch.func.grad(total, has_aux=True)(zeros)
        else:  # eager: plain autograd is twice as fast as torch.func here
            probes = [z.requires_grad_() for z in zeros]
            with torch.enable_grad():
                s, inputs = total(probes)
                deltas = list(torch.autograd.grad(s, probes))
            inputs = [a.detach() for a in inputs]
        K = torch.zeros(D, n, n, dtype=x.dtype, device=x.device)
        for layer, a, delta in zip(self.layers(), inputs, deltas):
            K = K + layer.gram(a, delta)
        return K

    def _initialise(self) -> None:
        for layer in self.modules():
            if not isinstance(layer, StackedLinear):
                continue
            fan_in, fan_out = layer.in_features, layer.out_features
            with torch.no_grad():
                if self.act.siren:  # Sitzmann et al.: first layer U(-1/fan_in, 1/fan_in)
                    first = any(layer is f for f in self.first)
                    bound = 1 / fan_in if first else math.sqrt(6 / fan_in) / self.omega0
                    layer.weight.uniform_(-bound, bound)
                    layer.bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
                else:  # Glorot normal, zero bias (as SPINN's flax code)
                    layer.weight.normal_(0.0, math.sqrt(2 / (fan_in + fan_out)))
                    layer.bias.zero_()

    def _xi(self, x: torch.Tensor) -> torch.Tensor:
        """x: (D, n) -> xi in [-1, 1]."""
        lo = self.lo.to(x.dtype)[:, None]
        hi = self.hi.to(x.dtype)[:, None]
        return (2 * x - (lo + hi)) / (hi - lo)

    def _embed(self, x: torch.Tensor, order: int) -> torch.Tensor:
        """x: (D, n) -> input jet (D, order+1, n, in) of the Fourier / periodic embedding."""
        xi = self._xi(x)
        # d^a/dxi^a of cos(w xi), sin(w xi) = w^a cos/sin(w xi + a pi/2)
        freqs = self.freqs.to(x.dtype)[:, None, :]  # (D, 1, F)
        phase = xi[..., None] * freqs  # (D, n, F)
        rows = []
        for a in range(order + 1):
            wa, shift = freqs**a, a * math.pi / 2
            rows.append(torch.cat([wa * torch.cos(phase + shift), wa * torch.sin(phase + shift)], -1))
        emb = torch.stack(rows, dim=1)
        if not self.any_raw:
            return emb
        plain = [xi, torch.ones_like(xi)] + [torch.zeros_like(xi)] * (order - 1)
        raw = torch.nn.functional.pad(torch.stack(plain[: order + 1], dim=1).unsqueeze(-1), (0, emb.shape[-1] - 1))
        return torch.where(self.raw[:, None, None, None], raw, emb)

    def _layer(self, h: torch.Tensor, layer: StackedLinear, tape: Tape | None = None) -> torch.Tensor:
        pre = layer.jet(h, tape)
        if self.omega0 != 1.0:
            pre = pre * self.omega0
        return J.compose(self.act.derivatives, pre)

    def _raw_layer(self, xi: torch.Tensor, layer: StackedLinear, order: int, tape: Tape | None = None) -> torch.Tensor:
        """A first layer on the raw input xi (D, n), whose jet is [xi, 1, 0, ...]: the pre-activation
        jet [w xi + b, w, 0, ...] entry by entry. (As a product with a stacked one-feature input jet,
        inductor stored the jet entries interleaved and evaluated this layer's tanh unvectorised:
        a quarter of the networks' time at 256 points per axis.)"""
        w = layer.w()[:, None, :, 0]  # (D, 1, out)
        a0 = xi[..., None] * w + layer.bias[:, None, :]
        entries = [a0] + [w.expand_as(a0)] * min(order, 1) + [torch.zeros_like(a0)] * (order - 1)
        if tape is not None:
            probe = tape.probes[len(tape.inputs)]
            if tape.jets:  # the input jet [xi, 1, 0, ...]
                entries = [e + probe[:, m] for m, e in enumerate(entries)]
                ones = [torch.ones_like(xi)] * min(order, 1) + [torch.zeros_like(xi)] * (order - 1)
                tape.inputs.append(torch.stack([xi, *ones], dim=1)[..., None])
            else:
                entries[0] = entries[0] + probe
                tape.inputs.append(xi[..., None])
        if self.omega0 != 1.0:
            entries = [e * self.omega0 for e in entries]
        return J.compose_entries(self.act.derivatives, entries)

    def jets(self, x: torch.Tensor, order: int, tape: Tape | None = None) -> torch.Tensor:
        """x: (D, n) points per axis -> (D, order+1, n, out): values and derivatives along
        each axis in physical units. ``tape``: see ``StackedLinear.jet``."""
        emb = self._embed(x, order) if self.fourier else self._xi(x)

        def first(layer: StackedLinear) -> torch.Tensor:
            return self._layer(emb, layer, tape) if self.fourier else self._raw_layer(emb, layer, order, tape)
        if self.body == "mlp":
            h = first(cast(StackedLinear, self.hidden[0]))
            for layer in self.hidden[1:]:
                h = self._layer(h, cast(StackedLinear, layer), tape)
        else:
            u = first(self.enc_u)
            v_minus_u = first(self.enc_v) - u
            h = first(self.enc_h)
            layers = [cast(StackedLinear, layer) for layer in self.hidden]
            if self.body == "modified_mlp":
                for layer in layers:
                    h = u + J.product(self._layer(h, layer, tape), v_minus_u)
            for b, gate in enumerate(self.gates):
                z = h  # PirateNet: two gated layers, a plain one, then x + alpha (z - x)
                for layer in layers[3 * b:3 * b + 2]:
                    z = u + J.product(self._layer(z, layer, tape), v_minus_u)
                z = self._layer(z, layers[3 * b + 2], tape)
                h = h + cast(ResidualGate, gate).jet(z - h, tape)
        out = self.out.jet(h, tape)
        if order == 0:
            return out
        scale = 2.0 / (self.hi - self.lo)  # (D,) float64
        factors = scale[:, None] ** torch.arange(order + 1, dtype=torch.float64, device=scale.device)
        return out * factors.to(out.dtype)[:, :, None, None]
