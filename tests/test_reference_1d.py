"""The 1-D reference solvers (``seppinn.reference_1d``): ETDRK4's fourth order in time on a KdV
soliton (exact) and on Allen-Cahn (against a finer run of itself), the Cole-Hopf Burgers solution
against the independent spectral solve and its Gauss-Hermite convergence, and the registered
solvers as a problem's reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import seppinn
from seppinn.reference_1d import (allen_cahn, burgers_cole_hopf, etdrk4, fourier_interpolate, kdv,
                                  wavenumber_grid, wavenumbers)
from seppinn.reference_solvers import HERMITE_NODES, REFERENCE_SOLVERS

from .conftest import write

N = 512
X = -1 + 2 * np.arange(N) / N


def soliton(t, x, c=1.0, delta=0.022, x0=-0.5):
    """u = 3c sech^2(sqrt(c)/(2 delta) (x - c t - x0)) solves u_t + u u_x + delta^2 u_xxx = 0 (periodic
    on [-1, 1] to rounding: its tails are below 1e-19 half a period away)."""
    return 3 * c / np.cosh(np.sqrt(c) / (2 * delta) * ((x - c * t - x0 + 1) % 2 - 1)) ** 2


def test_etdrk4_is_fourth_order_on_a_kdv_soliton():
    lin, nonlinear = kdv(0.022)
    errors = [np.abs(etdrk4(soliton(0, X), 2.0, lin(wavenumbers(N, 2.0)), nonlinear, [0, 0.25, 0.5], dt)[-1]
                     - soliton(0.5, X)).max() for dt in (2e-3, 1e-3, 5e-4)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert (orders > 3.8).all() and errors[-1] < 1e-5, (errors, orders)


def test_etdrk4_allen_cahn_converges_at_fourth_order_to_a_finer_run():
    lin, nonlinear = allen_cahn(1e-4, 5.0)
    u0 = X**2 * np.cos(np.pi * X)
    run = lambda dt: etdrk4(u0, 2.0, lin(wavenumbers(N, 2.0)), nonlinear, [0, 1.0], dt)[-1]  # noqa: E731
    fine = run(2.5e-4)
    errors = [np.abs(run(dt) - fine).max() for dt in (1e-2, 5e-3, 2.5e-3)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert (orders > 3.8).all(), (errors, orders)
    assert np.abs(fine).max() < 1.01  # the stable phases are +-1


def test_cole_hopf_burgers_equals_the_spectral_solve_and_converges_in_the_nodes():
    nu, n = 0.05, 256
    x = -1 + 2 * np.arange(n) / n
    k = wavenumbers(n, 2.0)

    def nonlinear(v, k):
        u = np.real(np.fft.ifft(v))
        return -0.5j * k * np.fft.fft(u * u)

    spectral = etdrk4(-np.sin(np.pi * x), 2.0, -nu * k**2, nonlinear, [0, 0.5, 1.0], 1e-4)[1:]
    errors = [np.abs(burgers_cole_hopf(lambda s: -np.sin(np.pi * s), nu, -1.0, 2.0, np.array([0.5, 1.0]), x,
                                       nodes=m) - spectral).max() for m in (20, 40, 80)]
    assert errors[0] > 1e2 * errors[1] > 1e4 * errors[2] and errors[2] < 1e-8, errors


def test_cole_hopf_burgers_at_the_benchmark_viscosity_matches_the_heat_kernel_integral():
    """nu = 0.01/pi (problems/burgers1d.toml), where the shock is ~0.003 wide: the shipped 200 Gauss-Hermite
    nodes against u = int u0(s) K(x - s) e^{-Phi(s)/2nu} ds / int K e^{-Phi/2nu} ds with the heat kernel K,
    integrated by the trapezoid rule on 4e5 points of s (an independent estimate), at and around the shock."""
    nu = 0.01 / np.pi
    t = np.array([0.2, 1 / np.pi, 0.5, 1.0])
    x = np.array([-0.5, -0.02, -0.004, 0.0, 0.003, 0.05])
    ours = burgers_cole_hopf(lambda s: -np.sin(np.pi * s), nu, -1.0, 2.0, t, x, nodes=HERMITE_NODES)
    s = x[:, None] + np.linspace(-2.0, 2.0, 400001)[None, :]  # (n_x, n_s); at |x - s| = 2 the kernel is < e^-300
    minus_phi = -(np.cos(np.pi * s) + 1) / np.pi / (2 * nu)  # -Phi / 2nu, Phi = int_-1^s -sin(pi y) dy
    for i, ti in enumerate(t):
        e = minus_phi - (x[:, None] - s) ** 2 / (4 * nu * ti)
        f = np.exp(e - e.max(axis=1, keepdims=True))
        direct = (f * -np.sin(np.pi * s)).sum(axis=1) / f.sum(axis=1)
        np.testing.assert_allclose(ours[i], direct, rtol=0, atol=1e-7, err_msg=f"t = {ti}")
    assert np.abs(ours[-1, 2:5]).max() < 0.9 and np.abs(ours[-1, 1]) > 0.5  # a shock, resolved at the points


def test_fourier_interpolation_is_exact_for_trigonometric_data():
    values = np.sin(3 * np.pi * X) + 0.5 * np.cos(np.pi * X)
    x = np.linspace(-1, 1, 37)
    np.testing.assert_allclose(fourier_interpolate(values, -1.0, 2.0, x),
                               np.sin(3 * np.pi * x) + 0.5 * np.cos(np.pi * x), atol=1e-12)


BURGERS = """
[problem]
name = "burgers"
[axes]
t = { range = [0.0, 1.0], time = true }
x = [-1.0, 1.0]
[fields]
u = {}
[parameters]
nu = "0.01/pi"
[[equations]]
residual = "diff(u, t) + u*diff(u, x) - nu*diff(u, x, 2)"
[[conditions]]
name = "initial"
on = "t = min"
value = "-sin(pi*x)"
[reference]
u = { solver = "burgers1d" }
"""


def test_burgers_reference_as_a_problem_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPPINN_CACHE", str(tmp_path / "cache"))
    assert {"burgers1d", "allen_cahn1d", "kdv1d"} <= set(REFERENCE_SOLVERS)
    prep = seppinn.prepare(write(tmp_path / "b.toml", BURGERS), overrides={"train.test_points": {"t": 5, "x": 41}})
    from seppinn.train.loop import Trainer

    tr = Trainer(prep.compiled, prep.config, device=None, progress=False)
    ref = tr.evaluator.reference["u"][..., 0].numpy()
    assert ref.shape == (5, 41)
    np.testing.assert_allclose(ref[0], -np.sin(np.pi * np.linspace(-1, 1, 41)), atol=1e-12)
    np.testing.assert_allclose(ref[:, [0, -1]], 0, atol=1e-10)  # the walls stay at 0 (odd symmetry)
    assert ref[-1].min() < -0.6 and np.abs(np.diff(ref[-1])).max() > 0.5  # the steep front at x = 0
    assert list((tmp_path / "cache").glob("burgers1d-*.npy"))  # cached


@pytest.mark.parametrize("old, new, message", [
    ('nu = "0.01/pi"', 'mu = "0.01/pi"', "needs the parameter nu"),
    ('on = "t = min"', 'on = "x = min"', "a condition on t = 0"),
])
def test_reference_solver_requirements_are_one_message(tmp_path, old, new, message):
    text = BURGERS.replace(old, new).replace("- nu*diff", "- mu*diff" if new.startswith("mu") else "- nu*diff")
    with pytest.raises(seppinn.ProblemError, match=message):
        seppinn.solve(write(tmp_path / "b.toml", text), overrides={"train.iterations": 1, "model.width": 8,
                                                                    "train.points": 6, "train.test_points": 5},
                      progress=False)


def test_vorticity_2d_fourth_order_on_a_translating_taylor_green_vortex():
    """w = 2 sin(x - Ut) sin(y - Vt) exp(-2 nu t) solves w_t + (U + u) w_x + (V + v) w_y = nu lap w
    (its own advection vanishes; the mean flow's does not): errors fall 16x per halved step."""
    from seppinn.reference_1d import vorticity

    n, L, nu, (U, V) = 32, 2 * np.pi, 0.05, (0.7, -0.3)
    x = np.arange(n) * L / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    lin, nonlinear = vorticity(nu, (U, V))
    k = wavenumber_grid((n, n), L)
    exact = 2 * np.sin(X - U) * np.sin(Y - V) * np.exp(-2 * nu)
    errors = [np.abs(etdrk4(2 * np.sin(X) * np.sin(Y), L, lin(k), nonlinear, [0.0, 1.0], dt)[-1] - exact).max()
              for dt in (0.2, 0.1, 0.05)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 1e-7 and (orders > 3.8).all(), (errors, orders)


def test_vorticity_2d_reference_of_the_shipped_problem(tmp_path, monkeypatch):
    """The registered u, v, w of navier_stokes2d.toml: at t = 0 the file's u0, v0, w0; later
    w = v_x - u_y (spectral derivatives of the reference itself) and u_x + v_y = 0."""
    monkeypatch.setenv("SEPPINN_CACHE", str(tmp_path / "cache"))
    root = Path(__file__).resolve().parents[1]
    n = 97  # 96 periodic points: the modes the flow makes by t = 1 are resolved
    prep = seppinn.prepare(root / "problems/navier_stokes2d.toml",
                           overrides={"train.test_points": {"t": 3, "x": n, "y": n}})
    from seppinn.train.loop import Trainer

    ev = Trainer(prep.compiled, prep.config, device=None, progress=False).evaluator
    u, v, w = (ev.reference[f][..., 0].numpy() for f in "uvw")
    x = np.asarray(ev.test_axes[1])
    X, Y = np.meshgrid(x, x, indexing="ij")
    np.testing.assert_allclose(u[0], np.sin(X) * np.cos(Y) - np.sin(2 * X + Y) / 2, atol=1e-10)
    np.testing.assert_allclose(w[0], 2 * np.sin(X) * np.sin(Y) + 2.5 * np.cos(2 * X + Y), atol=1e-10)
    if np.isclose(x[-1] - x[0], 2 * np.pi):  # a test grid with both ends: drop the repeated one
        u, v, w, x = u[:, :-1, :-1], v[:, :-1, :-1], w[:, :-1, :-1], x[:-1]
    k = wavenumbers(len(x), 2 * np.pi)
    d = lambda f, axis: np.real(np.fft.ifft(1j * k.reshape([-1 if a == axis else 1 for a in range(2)])  # noqa: E731
                                            * np.fft.fft(f, axis=axis), axis=axis))
    for i in range(3):
        np.testing.assert_allclose(d(v[i], 0) - d(u[i], 1), w[i], atol=1e-7)
        np.testing.assert_allclose(d(u[i], 0) + d(v[i], 1), 0, atol=1e-7)
    assert np.abs(w[-1] - w[0]).max() > 0.1  # the flow moved
