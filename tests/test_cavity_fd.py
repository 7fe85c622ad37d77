"""bench/cavity_fd.py, the independent check of the cavity's reference table (Ghia et al.): its sine
transform against the direct sum; its solution's second-order convergence and its distance from
the table."""

from __future__ import annotations

import sys

import numpy as np

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from cavity_fd import at_ghia, dst1, exact_lid, ghia_rows, steady_cavity  # noqa: E402


def test_dst1_is_the_sine_sum():
    n = 9
    a = np.random.default_rng(0).normal(size=(3, n - 1, 4))
    j = np.arange(1, n)
    direct = np.einsum("jk,ajb->akb", np.sin(np.pi * np.outer(j, j) / n), a)
    np.testing.assert_allclose(dst1(a, 1), direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dst1(dst1(a, 1), 1) * 2 / n, a, rtol=0, atol=1e-12)  # its own inverse, scaled


def test_cavity_converges_at_second_order_near_ghia():
    rows = ghia_rows()
    ghia = np.array([value for *_, value in rows])
    found = {n: at_ghia(*steady_cavity(n, exact_lid), rows) for n in (16, 32, 64)}
    order = np.log2(np.abs(found[32] - found[16]).max() / np.abs(found[64] - found[32]).max())
    assert 1.7 < order < 3.0, order  # 2.6 measured: second order, not yet asymptotic at N = 16
    assert np.abs(found[64] - ghia).max() < 0.007
    assert abs(found[64][0] - 1.0) < 2e-3  # u on the lid
