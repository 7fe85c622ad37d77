"""Built-in classical reference solvers, for problems without a closed-form solution.

``[reference] u = { solver = "NAME" }`` evaluates NAME on the test grid. numpy only: the caller
passes ``evaluate``, its lowering of coordinate expressions (``compile.lowering.evaluate_numpy``). Results are cached
under ``$SEPPINN_CACHE`` (default ``~/.cache/seppinn``) keyed by the problem's parameters and the
grid, so only the first run pays for the solve.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .reference_1d import (allen_cahn, burgers_cole_hopf, etdrk4, fourier_interpolate, kdv, velocity, vorticity,
                           wavenumber_grid, wavenumbers)

Solver = Callable[..., np.ndarray]  # (problem, test_axes, evaluate, ...) -> the reference on the test grid
# evaluate(expr, {axis symbol: broadcastable float64 array}) -> float64 array: the caller's lowering
# of a coordinate expression (the solvers themselves use numpy only; the problem layer reads the names)
Evaluate = Callable[[Any, Mapping[Any, np.ndarray]], np.ndarray]
# nonlinear_diffusion2d: RK4 steps x grid points at most (the shipped diffusion3d: ~8,000 steps on
# 397^2 points, 1.2e9); beyond it the solve would run for many minutes
MAX_SOLVER_WORK = 2e10
REFERENCE_SOLVERS: dict[str, tuple[Solver, str]] = {}


def register(name: str, doc: str) -> Callable[[Solver], Solver]:
    def deco(fn: Solver) -> Solver:
        REFERENCE_SOLVERS[name] = (fn, doc)
        return fn

    return deco


def cached(name: str, key: Any, solve: Callable[[], np.ndarray]) -> np.ndarray:
    """``solve()``, stored under ``$SEPPINN_CACHE`` (default ``~/.cache/seppinn``) by a hash of ``key``
    (its repr: the problem's expressions, parameters and grids), written atomically."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("SEPPINN_CACHE", Path.home() / ".cache" / "seppinn")) / f"{name}-{digest}.npy"
    if cache.is_file() and not cache.is_symlink():
        return np.asarray(np.load(cache, allow_pickle=False))
    sol = solve()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, sol)
    os.replace(tmp, cache)
    return sol


def nonlinear_diffusion_fd(u0: np.ndarray, D: float, h: float, times: Sequence[float],
                          wall: float = 0.0) -> np.ndarray:
    """u_t = D (u_x^2 + u u_xx + u_y^2 + u u_yy) = (D/2) lap(u^2) on a uniform square grid.

    Method of lines: the conservative 5-point Laplacian of w = u^2 (second order in h where u is
    smooth), u = ``wall`` on the boundary for t > 0, classical RK4 with dt <= 0.1 h^2 / (D max|u|)
    so the time error stays far below the space error. ``u0`` (m, m) includes the boundary values
    at t = 0, which are kept in the t = 0 output only (the initial data need not match the walls;
    from t = 0+ the Dirichlet condition holds). Where u -> 0 (the benchmark's walls) the equation
    degenerates (diffusivity D u) and the solution is less smooth, so the observed order there is
    below 2. Returns (len(times), m, m).
    """
    def rhs(u: np.ndarray) -> np.ndarray:
        w = u * u
        out = np.zeros_like(u)
        out[1:-1, 1:-1] = (0.5 * D / h**2) * (w[2:, 1:-1] + w[:-2, 1:-1] + w[1:-1, 2:] + w[1:-1, :-2]
                                              - 4 * w[1:-1, 1:-1])
        return out

    out = [u0.copy()]
    u = u0.copy()
    u[0, :] = u[-1, :] = u[:, 0] = u[:, -1] = wall
    umax = max(float(np.abs(u0).max()), 1e-12)
    if not D > 0:
        raise ValueError(f"needs D > 0, got {D:g}")
    dt_max = 0.1 * h * h / (D * umax)
    total = float(sum(np.ceil((t1 - t0) / dt_max) for t0, t1 in zip(times[:-1], times[1:])))
    if not total * u0.size <= MAX_SOLVER_WORK:
        raise ValueError(f"D = {D:g} needs {total:.3g} RK4 steps on the {u0.shape[0]}^2-point grid, more than "
                         f"{MAX_SOLVER_WORK:.0e} point updates; lower D, the time range or train.test_points")
    for t0, t1 in zip(times[:-1], times[1:]):
        steps = max(1, int(np.ceil((t1 - t0) / dt_max)))
        dt = (t1 - t0) / steps
        for _ in range(steps):
            k1 = rhs(u)
            k2 = rhs(u + 0.5 * dt * k1)
            k3 = rhs(u + 0.5 * dt * k2)
            k4 = rhs(u + dt * k3)
            u = u + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.copy())
    return np.stack(out)


@register("nonlinear_diffusion2d",
          "u_t = D (|grad u|^2 + u lap u) on (t, x, y) with a square x-y domain: D = parameter 'D', "
          "u(0) = the problem's condition on t = 0, u = 0 on the walls; finite differences (2nd order)")
def _nonlinear_diffusion2d(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate,  # type: ignore[no-untyped-def]
                           refine: int = 4) -> np.ndarray:
    axes = problem.axis_list
    t_axis = [a for a in axes if a.time]
    space = [a for a in axes if not a.time]
    if len(t_axis) != 1 or len(space) != 2 or axes[0] is not t_axis[0]:
        raise ValueError("needs axes (t, x, y) with t the time axis")
    (x_ax, y_ax) = space
    if not np.isclose(x_ax.hi - x_ax.lo, y_ax.hi - y_ax.lo):
        raise ValueError("needs a square x-y domain")
    initial = [c for c in problem.conditions if any(f.axis == 0 and f.side == "min" for f in c.faces)]
    if "D" not in problem.parameter_values or not initial:
        raise ValueError("needs a parameter D and a condition on t = 0")
    field = next(iter(problem.components))
    u0_expr = -(initial[0].residual - problem.ctx.fields[field])  # residual = u - value
    params = {problem.ctx.parameters[p]: v for p, v in problem.parameter_values.items()}
    n = max(len(test_axes[1]), len(test_axes[2]))
    m = refine * (n - 1) + 1
    xs = np.linspace(x_ax.lo, x_ax.hi, m)
    ys = np.linspace(y_ax.lo, y_ax.hi, m)

    def solve() -> np.ndarray:
        syms = problem.ctx.axes
        env = {syms[x_ax.name]: xs[:, None], syms[y_ax.name]: ys[None, :], syms[axes[0].name]: np.zeros((1, 1))}
        u0 = np.broadcast_to(evaluate(u0_expr.xreplace(params), env), (m, m))
        return nonlinear_diffusion_fd(u0, problem.parameter_values["D"], xs[1] - xs[0], list(test_axes[0]))

    sol = cached("diffusion2d", (str(u0_expr), sorted(problem.parameter_values.items()), m,
                                 np.asarray(test_axes[0]).tolist()), solve)
    # the test grid's x, y points lie on the FD grid when they have n points; else interpolate
    out = np.empty((len(test_axes[0]), len(test_axes[1]), len(test_axes[2])))
    for i in range(sol.shape[0]):
        tmp_rows = np.stack([np.interp(test_axes[2], ys, row) for row in sol[i]])  # (m, n_y)
        out[i] = np.stack([np.interp(test_axes[1], xs, col) for col in tmp_rows.T], axis=1)
    return out


SPECTRAL_POINTS = 512  # Fourier points of the 1-D spectral references (Allen-Cahn, KdV)
HERMITE_NODES = 200  # Gauss-Hermite nodes of the Burgers reference (numpy's rule breaks down beyond ~300)


def _digest(values: np.ndarray) -> str:
    """A short fingerprint of an initial condition's samples (part of a cache key)."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()[:16]


def _time_and_space(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate,  # type: ignore[no-untyped-def]
                    names: Sequence[str]) -> tuple[Any, Callable[[np.ndarray], np.ndarray], list[float]]:
    """For a (t, x) problem: the x axis, u0 as a function of x (the condition on t = min), and the
    values of the parameters ``names``; ValueError naming what is missing."""
    axes = problem.axis_list
    if len(axes) != 2 or not axes[0].time:
        raise ValueError("needs axes (t, x) with t the time axis")
    missing = [n for n in names if n not in problem.parameter_values]
    initial = [c for c in problem.conditions if any(f.axis == 0 and f.side == "min" for f in c.faces)]
    if missing or not initial:
        raise ValueError(f"needs the parameter{'s' if len(names) > 1 else ''} {', '.join(names)} and a condition on t = 0")
    field = next(iter(problem.components))
    params = {problem.ctx.parameters[p]: v for p, v in problem.parameter_values.items()}
    u0_expr = (-(initial[0].residual - problem.ctx.fields[field])).xreplace(params)
    syms = problem.ctx.axes

    def u0(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(evaluate(u0_expr, {syms[axes[1].name]: x, syms[axes[0].name]: np.zeros_like(x)}),
                               np.shape(x)).astype(np.float64)

    return axes[1], u0, [problem.parameter_values[n] for n in names]


def _spectral(problem, test_axes, evaluate, name: str, names: Sequence[str], model,  # type: ignore[no-untyped-def]
              dt: float) -> np.ndarray:
    x_ax, u0, values = _time_and_space(problem, test_axes, evaluate, names)
    length = x_ax.hi - x_ax.lo
    xs = x_ax.lo + length * np.arange(SPECTRAL_POINTS) / SPECTRAL_POINTS
    lin, nonlinear = model(*values)

    def solve() -> np.ndarray:
        sol = etdrk4(u0(xs), length, lin(wavenumbers(SPECTRAL_POINTS, length)), nonlinear, list(test_axes[0]), dt)
        return fourier_interpolate(sol, x_ax.lo, length, np.asarray(test_axes[1]))

    return cached(name, (_digest(u0(xs)), values, SPECTRAL_POINTS, dt, np.asarray(test_axes[0]).tolist(),
                         np.asarray(test_axes[1]).tolist()), solve)


@register("allen_cahn1d", "u_t = eps u_xx + a (u - u^3), x periodic: parameters 'eps', 'a'; u(0) = the condition "
                          "on t = 0; Fourier pseudo-spectral (512 points) with ETDRK4 (dt 1e-4)")
def _allen_cahn1d(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate) -> np.ndarray:  # type: ignore[no-untyped-def]
    return _spectral(problem, test_axes, evaluate, "allen_cahn1d", ["eps", "a"], allen_cahn, 1e-4)


@register("kdv1d", "u_t + u u_x + delta^2 u_xxx = 0, x periodic: parameter 'delta'; u(0) = the condition on t = 0; "
                   "Fourier pseudo-spectral (512 points, 2/3 dealiased) with ETDRK4 (dt 2e-4)")
def _kdv1d(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate) -> np.ndarray:  # type: ignore[no-untyped-def]
    return _spectral(problem, test_axes, evaluate, "kdv1d", ["delta"], kdv, 2e-4)


@register("burgers1d", "u_t + u u_x = nu u_xx with a periodic zero-mean u(0) (the condition on t = 0; e.g. "
                       "-sin(pi x) on [-1, 1], whose walls stay at 0): parameter 'nu'; Cole-Hopf + Gauss-Hermite")
def _burgers1d(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate) -> np.ndarray:  # type: ignore[no-untyped-def]
    x_ax, u0, (nu,) = _time_and_space(problem, test_axes, evaluate, ["nu"])
    t, x = np.asarray(test_axes[0], dtype=np.float64), np.asarray(test_axes[1], dtype=np.float64)
    probe = x_ax.lo + (x_ax.hi - x_ax.lo) * np.arange(1024) / 1024
    return cached("burgers1d", (_digest(u0(probe)), nu, HERMITE_NODES, t.tolist(), x.tolist()),
                  lambda: burgers_cole_hopf(u0, nu, x_ax.lo, x_ax.hi - x_ax.lo, t, x, HERMITE_NODES))


VORTICITY_POINTS = 128  # Fourier points per axis of the 2-D vorticity reference


def _vorticity2d(problem, test_axes: Sequence[np.ndarray], evaluate: Evaluate, part: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """w (part 0), u (1) or v (2) of 2-D incompressible flow on a periodic square from the definition
    ``w0`` (the initial vorticity) and the parameter ``nu``."""
    axes = problem.axis_list
    if len(axes) != 3 or not axes[0].time or not all(a.periodic for a in axes[1:]):
        raise ValueError("needs axes (t, x, y): t the time axis, x and y periodic")
    x_ax, y_ax = axes[1], axes[2]
    length = x_ax.hi - x_ax.lo
    if not (np.isclose(length, y_ax.hi - y_ax.lo) and np.isclose(x_ax.lo, y_ax.lo)):
        raise ValueError("needs a square x-y domain")
    if "nu" not in problem.parameter_values or "w0" not in problem.ctx.definitions:
        raise ValueError("needs the parameter nu and a definition w0 (the initial vorticity)")
    params = {problem.ctx.parameters[p]: v for p, v in problem.parameter_values.items()}
    w0_expr = problem.ctx.definitions["w0"].xreplace(params)
    m = VORTICITY_POINTS
    xs = x_ax.lo + length * np.arange(m) / m
    syms = problem.ctx.axes
    w0 = np.broadcast_to(evaluate(w0_expr, {syms[x_ax.name]: xs[:, None], syms[y_ax.name]: xs[None, :],
                                            syms[axes[0].name]: np.zeros((1, 1))}), (m, m)).astype(np.float64)
    nu = problem.parameter_values["nu"]
    times = np.asarray(test_axes[0], dtype=np.float64)

    def solve() -> np.ndarray:
        lin, nonlinear = vorticity(nu)
        k = wavenumber_grid((m, m), length)
        w = etdrk4(w0, length, lin(k), nonlinear, list(times), 5e-3)
        u, v = zip(*(velocity(np.fft.fftn(wi), k) for wi in w))
        return np.stack([w, np.stack(u), np.stack(v)])

    sol = cached("vorticity2d", (_digest(w0), nu, m, times.tolist()), solve)[part]
    along_y = fourier_interpolate(sol, y_ax.lo, length, np.asarray(test_axes[2]))  # (T, m, n_y)
    return fourier_interpolate(along_y.swapaxes(1, 2), x_ax.lo, length, np.asarray(test_axes[1])).swapaxes(1, 2)


for _part, _name, _what in ((0, "vorticity2d", "w"), (1, "vorticity2d_u", "u"), (2, "vorticity2d_v", "v")):
    register(_name, f"{_what} of 2-D incompressible flow on a periodic square (t, x, y): w_t + u.grad w = nu lap w, "
                    "w = v_x - u_y; parameter 'nu', definition 'w0' (the initial vorticity); Fourier "
                    f"pseudo-spectral ({VORTICITY_POINTS}^2, 2/3 dealiased) with ETDRK4 (dt 5e-3)")(
        lambda problem, test_axes, evaluate, _p=_part: _vorticity2d(problem, test_axes, evaluate, _p))
