"""Allen-Cahn (problems/allen_cahn1d.toml's settings) with a fading lift instead of the hard initial
condition u = g(x) + t N(t, x): u = e^{-t/tau} g(x) + (1 - e^{-t/tau}) w(t, x), w the networks
(no condition: u(0) = g holds exactly). g = x^2 cos(pi x) is periodic but its slope is not (-2 at
x = 1, +2 at x = -1), and t N, with N periodic and smooth, can never cancel that kink, while the
solution is smooth for t > 0; here the kink fades over tau. A measurement, not a shipped setting
(bench/RESULTS.md, "Issue 20, tenth session").

    python bench/allen_cahn_lift.py --tau 0.05 [--seed 0] [--set KEY=VALUE ...]
    python bench/allen_cahn_lift.py --truncation

Prints u's rel L2 on the file's test grid (t 101 x x 256) against the built-in ETDRK4 reference,
by tenth of the time axis, and where the largest errors are. ``--truncation`` (no training, seconds)
prints what the kink costs: the rel L2 of the reference u, and of u - u0 (what t N must represent),
left after keeping 64 or 128 Fourier modes, at t = 0.1, 0.5, 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import seppinn
from seppinn.reference_1d import allen_cahn, etdrk4, fourier_interpolate, wavenumbers

ROOT = Path(__file__).resolve().parent.parent


def problem_text(tau: float) -> str:
    """The shipped file with field w for u and the equation written in u = e^{-t/tau} g + (1 - e^{-t/tau}) w."""
    u = f"(exp(-t/{tau})*x**2*cos(pi*x) + (1 - exp(-t/{tau}))*w)"
    text = (ROOT / "problems" / "allen_cahn1d.toml").read_text()
    head, rest = text.split("[[equations]]")
    solver = rest.split("[solver.", 1)[1]
    return (head.replace("u = {}", "w = {}") + f'[[equations]]\nname = "pde"\nresidual = "diff({u}, t) - '
            f'eps*diff({u}, x, 2) + a*{u}**3 - a*{u}"\n\n[solver.{solver}')


def reference(times: list[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, u) of the ETDRK4 reference on n periodic points at ``times`` (dt 1e-4, as built in)."""
    xs = -1 + 2 * np.arange(n) / n
    lin, nonlinear = allen_cahn(1e-4, 5.0)
    return xs, etdrk4(xs**2 * np.cos(np.pi * xs), 2.0, lin(wavenumbers(n, 2.0)), nonlinear, times, 1e-4)


def truncation() -> None:
    n, times = 2048, [0.0, 0.1, 0.5, 1.0]
    xs, sol = reference(times, n)
    k = np.abs(np.fft.fftfreq(n, 1 / n))

    def left(f: np.ndarray, modes: int) -> float:
        c = np.fft.fft(f)
        c[k > modes] = 0
        return float(np.linalg.norm(f - np.real(np.fft.ifft(c))))

    print("| t | u, 64 modes | u - u0, 64 modes | u, 128 modes | u - u0, 128 modes |")
    print("|---|---|---|---|---|")
    for t, u in zip(times[1:], sol[1:]):
        v, norm = u - sol[0], np.linalg.norm(u)
        print(f"| {t:g} | " + " | ".join(f"{left(f, m) / norm:.1e}" for m in (64, 128) for f in (u, v)) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tau", type=float)
    p.add_argument("--truncation", action="store_true", help="the kink's cost in Fourier modes; no training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.truncation:
        truncation()
        return
    if args.tau is None:
        p.error("--tau is required (or --truncation)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "allen_cahn1d_lift.toml"
        path.write_text(problem_text(args.tau))
        start = time.perf_counter()
        r = seppinn.solve(path, None, [f"train.seed={args.seed}", *args.set], progress=False)
        wall = time.perf_counter() - start
    t, x = np.linspace(0, 1, 101), np.linspace(-1, 1, 256)
    T, X = np.meshgrid(t, x, indexing="ij")
    w = r.evaluate_points({"t": T.ravel(), "x": X.ravel()})["w"].reshape(T.shape)
    fade = np.exp(-T / args.tau)
    u = fade * X**2 * np.cos(np.pi * X) + (1 - fade) * w
    ref = fourier_interpolate(reference(list(t), 512)[1], -1.0, 2.0, x)  # the built-in reference's 512 points
    err = u - ref
    print(f"tau {args.tau}, seed {args.seed}: rel L2 {np.linalg.norm(err) / np.linalg.norm(ref):.2e}, "
          f"final loss {r.history['loss/total'][-1]:.2e}, {wall:.0f} s")
    tenths = np.array_split(np.arange(len(t) - 1), 10)
    print("rel L2 by time: " + " ".join(f"t {t[i[0]]:.2f}: {np.linalg.norm(err[i]) / np.linalg.norm(ref[i]):.1e}"
                                        for i in tenths))
    print(f"x of the largest errors: {np.round(x[np.argsort(-np.abs(err).sum(0))[:5]], 3).tolist()}")


if __name__ == "__main__":
    main()
