"""Reference solutions of 1-D evolution equations (numpy only), for the hard benchmarks.

- ``etdrk4``: Fourier pseudo-spectral in x on a periodic interval, ETDRK4 in time (Cox & Matthews
  2002, with the contour-integral coefficients of Kassam & Trefethen 2005) for u_t = L u + N(u) with
  L diagonal in Fourier space: Allen-Cahn (L = eps d_xx, N = a (u - u^3)) and KdV (L = -delta^2 d_xxx,
  N = -(u^2/2)_x). Fourth order in time, spectral in x.
- ``vorticity``: the same on a periodic square for 2-D incompressible flow, w_t + u.grad w = nu lap w
  with the velocity from the stream function (``velocity``).
- ``burgers_cole_hopf``: viscous Burgers u_t + u u_x = nu u_xx with a periodic zero-mean u0, exactly
  by the Cole-Hopf transform u = -2 nu phi_x / phi, phi the heat-equation solution from
  phi0 = exp(-Phi/(2 nu)) (Phi' = u0), whose Gaussian convolution is evaluated by Gauss-Hermite
  quadrature (spectral in the number of nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Nonlinear = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (u_hat, k) -> N(u)^ (Fourier coefficients)


def wavenumbers(n: int, length: float) -> np.ndarray:
    """The angular wavenumbers of an n-point periodic grid of the given length (numpy.fft order)."""
    return 2 * np.pi * np.fft.fftfreq(n, d=length / n)


def wavenumber_grid(shape: Sequence[int], length: float) -> np.ndarray:
    """The wavenumbers of a periodic grid of ``shape`` with sides ``length``: (n,) in 1-D, else
    (D, *shape), one array per axis (numpy.fft order)."""
    if len(shape) == 1:
        return wavenumbers(shape[0], length)
    return np.stack(np.meshgrid(*(wavenumbers(m, length) for m in shape), indexing="ij"))


def etdrk4(u0: np.ndarray, length: float, lin: np.ndarray, nonlinear: Nonlinear, times: Sequence[float],
           dt: float, contour_points: int = 32) -> np.ndarray:
    """u_t = L u + N(u) on equispaced periodic points (``u0``: (n,), or (n, n) on a square, at
    times[0]); ``lin``: the symbol of L per wavenumber (numpy.fft order, u0's shape);
    ``nonlinear(u_hat, k)``: N(u)'s Fourier coefficients, k the wavenumbers ((n,), or (2, n, n):
    k_x, k_y). Steps of at most ``dt`` landing on every time. Returns (len(times), *u0.shape) real values."""
    k = wavenumber_grid(u0.shape, length)
    v = np.fft.fftn(u0)
    out = [np.real(np.fft.ifftn(v))]
    cache: dict[float, tuple[np.ndarray, ...]] = {}

    def coefficients(h: float) -> tuple[np.ndarray, ...]:
        if h not in cache:  # Kassam & Trefethen: phi functions by a contour mean around each h L
            E, E2 = np.exp(h * lin), np.exp(h * lin / 2)
            r = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
            LR = h * lin[..., None] + r
            Q = h * np.mean((np.exp(LR / 2) - 1) / LR, axis=-1)
            f1 = h * np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, axis=-1)
            f2 = h * np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, axis=-1)
            f3 = h * np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, axis=-1)
            cache[h] = (E, E2, Q, f1, f2, f3)
        return cache[h]

    for t0, t1 in zip(times[:-1], times[1:]):
        steps = max(1, int(np.ceil((t1 - t0) / dt - 1e-9)))
        E, E2, Q, f1, f2, f3 = coefficients((t1 - t0) / steps)
        for _ in range(steps):
            Nv = nonlinear(v, k)
            a = E2 * v + Q * Nv
            Na = nonlinear(a, k)
            b = E2 * v + Q * Na
            Nb = nonlinear(b, k)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = nonlinear(c, k)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        out.append(np.real(np.fft.ifftn(v)))
    return np.stack(out)


def allen_cahn(eps: float, a: float) -> tuple[Callable[[np.ndarray], np.ndarray], Nonlinear]:
    """(L's symbol from k, N) of u_t = eps u_xx + a (u - u^3)."""
    def nonlinear(v: np.ndarray, k: np.ndarray) -> np.ndarray:
        u = np.real(np.fft.ifft(v))
        return a * np.fft.fft(u - u**3)
    return (lambda k: -eps * k**2), nonlinear


def kdv(delta: float) -> tuple[Callable[[np.ndarray], np.ndarray], Nonlinear]:
    """(L's symbol from k, N) of u_t + u u_x + delta^2 u_xxx = 0 (N = -(u^2/2)_x, dealiased by 2/3)."""
    def nonlinear(v: np.ndarray, k: np.ndarray) -> np.ndarray:
        keep = np.abs(k) < (2 / 3) * np.abs(k).max()
        u = np.real(np.fft.ifft(v * keep))
        return np.asarray(-0.5j * k * np.fft.fft(u * u) * keep)
    return (lambda k: 1j * delta**2 * k**3), nonlinear


def vorticity(nu: float, mean: tuple[float, float] = (0.0, 0.0)
              ) -> tuple[Callable[[np.ndarray], np.ndarray], Nonlinear]:
    """(L's symbol from k = (k_x, k_y), N) of 2-D incompressible flow in vorticity form on a periodic
    square: w_t + u w_x + v w_y = nu (w_xx + w_yy), (u, v) = ``mean`` + (psi_y, -psi_x) with
    -lap(psi) = w, so that w = v_x - u_y (N dealiased by 2/3)."""
    def nonlinear(w: np.ndarray, k: np.ndarray) -> np.ndarray:
        kx, ky = k
        keep = (np.abs(kx) < (2 / 3) * np.abs(kx).max()) & (np.abs(ky) < (2 / 3) * np.abs(ky).max())
        wd = w * keep
        u, v = velocity(wd, k)
        wx, wy = np.real(np.fft.ifftn(1j * kx * wd)), np.real(np.fft.ifftn(1j * ky * wd))
        return np.asarray(-np.fft.fftn((u + mean[0]) * wx + (v + mean[1]) * wy) * keep)
    return (lambda k: -nu * (k[0] ** 2 + k[1] ** 2)), nonlinear


def velocity(w_hat: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zero-mean velocity (u, v) = (psi_y, -psi_x), -lap(psi) = w, from w's 2-D Fourier coefficients."""
    kx, ky = k
    k2 = kx**2 + ky**2
    psi = np.where(k2 > 0, w_hat / np.where(k2 > 0, k2, 1.0), 0.0)
    return np.real(np.fft.ifftn(1j * ky * psi)), np.real(np.fft.ifftn(-1j * kx * psi))


def fourier_interpolate(values: np.ndarray, lo: float, length: float, x: np.ndarray) -> np.ndarray:
    """The trigonometric interpolant of periodic samples ``values`` (..., n) at points x (exact
    for the spectral solution): (..., len(x))."""
    n = values.shape[-1]
    coef = np.fft.fft(values, axis=-1) / n
    k = wavenumbers(n, length)
    if n % 2 == 0:  # the Nyquist mode, split symmetrically so that the interpolant is real
        coef[..., n // 2] /= 2
        k = np.concatenate([k, [-k[n // 2]]])
        coef = np.concatenate([coef, coef[..., n // 2:n // 2 + 1]], axis=-1)
    phase = np.exp(1j * np.outer(k, np.asarray(x) - lo))
    return np.real(coef @ phase)


def burgers_cole_hopf(u0: Callable[[np.ndarray], np.ndarray], nu: float, lo: float, length: float,
                      t: np.ndarray, x: np.ndarray, nodes: int = 200, fine: int = 2**16) -> np.ndarray:
    """u(t, x) of u_t + u u_x = nu u_xx, u(0) = u0 periodic on [lo, lo + length] with zero mean:
    (len(t), len(x)). phi(t, x) = E[phi0(x - 2 sqrt(nu t) z)] over z ~ exp(-z^2) (Gauss-Hermite,
    ``nodes``), phi0 = exp(-Phi / (2 nu)) with Phi = int u0 by the trapezoid rule on ``fine`` points."""
    y = lo + length * np.arange(fine + 1) / fine
    uy = u0(y)
    Phi = np.concatenate([[0.0], np.cumsum((uy[1:] + uy[:-1]) / 2) * (length / fine)])
    if abs(Phi[-1]) > 1e-8 * max(1.0, np.abs(Phi).max()):
        raise ValueError("the initial condition must have zero mean over the period (a periodic potential)")

    def potential(s: np.ndarray) -> np.ndarray:
        return np.asarray(np.interp(np.mod(s - lo, length) + lo, y, Phi))

    z, w = np.polynomial.hermite.hermgauss(nodes)
    out = np.empty((len(t), len(x)))
    for i, ti in enumerate(t):
        if ti <= 0:
            out[i] = u0(np.asarray(x, dtype=np.float64))
            continue
        s = np.asarray(x)[:, None] - 2 * np.sqrt(nu * ti) * z[None, :]  # (n_x, nodes)
        e = -potential(s) / (2 * nu)
        e = e - e.max(axis=1, keepdims=True)  # the common factor cancels in the ratio
        f = w[None, :] * np.exp(e)
        # phi_x / phi with phi_x = E[phi0'(s)] = E[-u0(s) / (2 nu) phi0(s)]: u = -2 nu phi_x / phi
        out[i] = (f * u0(s)).sum(axis=1) / f.sum(axis=1)
    return out
