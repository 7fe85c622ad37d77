"""Jets (Taylor-mode forward derivatives) against torch.autograd, in float64."""

from __future__ import annotations

import pytest
import torch

from seppinn.model.activations import ACTIVATIONS
from seppinn.model.separable import CPModel

from .conftest import eps_tol, open_gates


def autograd_derivatives(f, x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """[f, f', ..., f^(order)] at points x (n,) for f: (n,) -> (n, k), by nested autograd."""
    x = x.clone().requires_grad_(True)
    y = f(x)
    out = [y]
    for _ in range(order):
        prev = out[-1]
        cols = [torch.autograd.grad(prev[:, k].sum(), x, create_graph=True)[0] for k in range(prev.shape[1])]
        out.append(torch.stack(cols, dim=1))
    return [o.detach() for o in out]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivatives_match_autograd(name, f64):
    act = ACTIVATIONS[name]
    a = torch.linspace(-2.3, 1.7, 41)
    a = a[a.abs() > 1e-3]  # relu is not differentiable at 0
    got = act.derivatives(a, 4)
    want = autograd_derivatives(lambda x: act.derivatives(x, 0)[0][:, None], a, 4)
    for k in range(5):
        torch.testing.assert_close(got[k], want[k][:, 0], rtol=eps_tol(f64), atol=eps_tol(f64))


BODIES = [
    dict(body="mlp", activation="tanh"),
    dict(body="mlp", activation="sin", omega0=3.0),
    dict(body="mlp", activation="gelu"),
    dict(body="modified_mlp", activation="tanh"),
    dict(body="modified_mlp", activation="sin", omega0=2.0),
    dict(body="mlp", activation="tanh", fourier_features=4, fourier_scale=0.5),
    dict(body="modified_mlp", activation="gelu", fourier_features=3),
    dict(body="pirate", activation="tanh"),
    dict(body="pirate", activation="sin", omega0=2.0, fourier_features=3),
]


@pytest.mark.parametrize("net", BODIES, ids=lambda n: "-".join(f"{v}" for v in n.values()))
def test_factor_jets_match_autograd_orders_1_to_4(net, f64):
    torch.manual_seed(0)
    ranges = [(0.3, 2.0), (-3.0, -0.5)]  # non-symmetric: the chain-rule factor (2/(hi-lo))^a matters
    model = CPModel(ranges, rank=1, components=2, scale="sqrt_rank",
                    net_kwargs=dict(width=8, depth=3, **net))
    open_gates(model)
    for axis, (lo, hi) in enumerate(ranges):
        x = torch.linspace(lo, hi, 9)
        jets = model.factor_jets(axis, x, 4).reshape(5, 9, -1)
        want = autograd_derivatives(lambda p: model.factor_jets(axis, p, 0)[0].reshape(len(p), -1), x, 4)
        for a in range(5):
            scale = want[a].abs().max()
            assert scale > 1e-6, "a derivative that vanishes cannot test anything"
            err = (jets[a] - want[a]).abs().max() / scale
            assert err < eps_tol(f64, 1e4), f"order {a}: relative error {err:.2e}"


def test_padding_of_unequal_point_counts_changes_nothing(f64):
    torch.manual_seed(1)
    model = CPModel([(0.0, 1.0), (-1.0, 1.0), (2.0, 3.0)], 4, 1, "none",
                    dict(width=8, depth=3, activation="tanh", body="modified_mlp"))
    xs = [torch.rand(5), torch.rand(2) * 2 - 1, 2 + torch.rand(7)]
    together = model.all_jets(xs, 2)
    for d, x in enumerate(xs):
        alone = model.factor_jets(d, x, 2)
        # equal up to rounding: padding changes the batched matmul's shape, and with it the order
        # in which BLAS sums (exact on some CPUs; 3e-16 apart on a Sapphire Rapids machine)
        torch.testing.assert_close(together[d], alone, rtol=1e-13, atol=1e-14)


def test_periodic_axis_is_exactly_periodic_in_every_derivative(f64):
    torch.manual_seed(4)
    model = CPModel([(0.5, 2.5), (-1.0, 1.0)], 3, 1, "none",
                    dict(width=8, depth=3, activation="tanh", body="modified_mlp", periodic=[True, False],
                         periodic_modes=3))
    ends = model.factor_jets(0, torch.tensor([0.5, 2.5]), 4)  # the periodic axis at lo and hi
    torch.testing.assert_close(ends[:, 0], ends[:, 1], rtol=1e-12, atol=1e-12)
    other = model.factor_jets(1, torch.tensor([-1.0, 1.0]), 0)[0]  # the plain axis is not periodic
    assert (other[0] - other[1]).abs().max() > 1e-3
    x = torch.linspace(0.5, 2.5, 7)
    jets = model.factor_jets(0, x, 4).reshape(5, 7, -1)
    want = autograd_derivatives(lambda p: model.factor_jets(0, p, 0)[0].reshape(len(p), -1), x, 4)
    for a in range(5):
        torch.testing.assert_close(jets[a], want[a], rtol=1e-10, atol=1e-10 * want[a].abs().max().item())


def test_pirate_blocks_start_as_the_identity_and_count_in_threes(f64):
    """alpha = 0 at initialisation: the output is the encoder H's alone (PirateNet), whatever the
    blocks' weights; depth - 1 hidden layers make (depth - 1) // 3 blocks, at least one."""
    torch.manual_seed(2)
    kw = dict(width=8, activation="tanh", body="pirate")
    model = CPModel([(0.0, 1.0), (-1.0, 1.0)], 2, 1, "none", dict(depth=7, **kw))
    bank = model.bank
    assert (len(bank.gates), len(bank.hidden)) == (2, 6)
    assert [len(CPModel([(0.0, 1.0)], 2, 1, "none", dict(depth=d, **kw)).bank.gates) for d in (2, 4, 10)] == [1, 1, 3]
    x = torch.linspace(-1, 1, 7)
    before = model.factor_jets(1, x, 2)
    with torch.no_grad():
        for layer in bank.hidden:
            layer.weight.add_(torch.randn_like(layer.weight))
    torch.testing.assert_close(model.factor_jets(1, x, 2), before, rtol=0, atol=0)
    open_gates(model)
    assert (model.factor_jets(1, x, 2) - before).abs().max() > 1e-2


@pytest.mark.parametrize("side, fade", [("min", None), ("max", None), ("both", None), ("min", 0.3), ("max", 0.3)])
def test_hard_axis_factor_jets_match_autograd(side, fade, f64):
    """The factor of the hard axis times its bubble (x - lo, hi - x, their product, or 1 - e^{-s/fade}):
    orders 1-4 against autograd; the other axis is unchanged."""
    torch.manual_seed(3)
    ranges = [(0.5, 2.0), (-1.0, 1.0)]
    model = CPModel(ranges, 2, 1, "none", dict(width=8, depth=3, activation="tanh", body="modified_mlp"))
    plain = model.factor_jets(1, torch.linspace(-1, 1, 5), 2)
    model.set_hard_axis(0, *ranges[0], side, fade)
    torch.testing.assert_close(model.factor_jets(1, torch.linspace(-1, 1, 5), 2), plain, rtol=0, atol=0)
    x = torch.linspace(0.5, 2.0, 9)
    jets = model.factor_jets(0, x, 4).reshape(5, 9, -1)
    want = autograd_derivatives(lambda p: model.factor_jets(0, p, 0)[0].reshape(len(p), -1), x, 4)
    for a in range(5):
        torch.testing.assert_close(jets[a], want[a], rtol=1e-10, atol=1e-10 * want[a].abs().max().item())
    ends = jets[0][[0, -1]].abs().amax(-1)  # the factor vanishes on the condition's faces
    assert ends[0 if side == "max" else 1] > 1e-3 or side == "both"
    assert (ends[[0, 1] if side == "both" else [1 if side == "max" else 0]] < 1e-14).all()
