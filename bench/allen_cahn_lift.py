"""What Allen-Cahn's initial value costs the hard condition u = g(x) + t N(t, x). g = x^2 cos(pi x)
is periodic but its slope is not (-2 at x = 1, +2 at x = -1); t N, with N periodic and smooth,
can never cancel that kink, while the solution is smooth for t > 0 (the reason for the file's
``fade``: bench/RESULTS.md, "Issue 20, tenth session"). No training; seconds.

    python bench/allen_cahn_lift.py

Prints the rel L2 of the reference u, and of u - g (what t N must represent), left after keeping
64 or 128 Fourier modes, at t = 0.1, 0.5, 1 (the built-in ETDRK4 solver on 2,048 points).
"""

from __future__ import annotations

import numpy as np

from seppinn.reference_1d import allen_cahn, etdrk4, wavenumbers


def main() -> None:
    n, times = 2048, [0.0, 0.1, 0.5, 1.0]
    xs = -1 + 2 * np.arange(n) / n
    lin, nonlinear = allen_cahn(1e-4, 5.0)
    sol = etdrk4(xs**2 * np.cos(np.pi * xs), 2.0, lin(wavenumbers(n, 2.0)), nonlinear, times, 1e-4)
    k = np.abs(np.fft.fftfreq(n, 1 / n))

    def left(f: np.ndarray, modes: int) -> float:
        c = np.fft.fft(f)
        c[k > modes] = 0
        return float(np.linalg.norm(f - np.real(np.fft.ifft(c))))

    print("| t | u, 64 modes | u - g, 64 modes | u, 128 modes | u - g, 128 modes |")
    print("|---|---|---|---|---|")
    for t, u in zip(times[1:], sol[1:]):
        v, norm = u - sol[0], np.linalg.norm(u)
        print(f"| {t:g} | " + " | ".join(f"{left(f, m) / norm:.1e}" for m in (64, 128) for f in (u, v)) + " |")


if __name__ == "__main__":
    main()
