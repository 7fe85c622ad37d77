"""SPINN's training step in JAX, written for this benchmark after SPINN's published code
(github.com/stnamjef/SPINN: its SPINN3d modified MLP, hvp_fwdfwd derivatives, the three benchmarks'
losses and its training loop), so the peer is timed on the same machine as seppinn (issue 8
compares against SPINN-JAX's figures, measured once on another day's machine).

    python bench/spinn_jax.py [--problems helmholtz3d klein_gordon3d diffusion3d] [--sizes 16 32 64 128 256]
                              [--repeats 20]

Needs ``jax`` and ``optax`` (not seppinn dependencies; ``bench/iteration.py --jax PYTHON`` runs this
script with an interpreter that has them, e.g. a venv made with ``pip install jax jaxlib optax``).
It imports neither torch nor seppinn.

What it does, as SPINN's code (Cho et al., NeurIPS 2023) does it: one modified MLP per axis on an
(n, 1) input (encoders U, V, H = tanh(Dense(x)), then H = (1 - Z) U + Z V with Z = tanh(Dense(H))
in ``len(features) - 1`` layers, a Dense(r) output), the grid by ``einsum('fx,fy->fxy')`` then
``einsum('fxy,fz->xyz')``; second derivatives by forward-over-forward ``jax.jvp`` of the whole
model along one axis; the PDE residual's mean square on the n^3 grid plus the face (and initial)
terms, each face its own model call on an (n, n, 1) grid; ``jax.value_and_grad`` in one
``jax.jit`` and the optax Adam update in another, called one after the other (as SPINN's loop does); Glorot-normal weights, zero biases; float32. Points are
drawn once (SPINN resamples every 100 steps outside the timed step). Prints one JSON line per
(problem, n): median ms per step after the compiling warm-up, and the compile time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import optax

FEATURES = (64, 64, 64, 64)  # SPINN's --features for the three benchmarks: 4 linear layers of 64
RANK = 32


def init_params(key: jax.Array) -> list[dict[str, list[tuple[jax.Array, jax.Array]]]]:
    """Per axis: encoders u, v, h (1 -> F), gated layers (F -> F), output (F -> RANK)."""
    glorot = jax.nn.initializers.glorot_normal()
    width = FEATURES[0]

    def dense(k: jax.Array, n_in: int, n_out: int) -> tuple[jax.Array, jax.Array]:
        return glorot(k, (n_in, n_out), jnp.float32), jnp.zeros((n_out,), jnp.float32)

    params = []
    for k in jax.random.split(key, 3):
        ks = jax.random.split(k, 3 + len(FEATURES))
        params.append({
            "enc": [dense(ks[i], 1, width) for i in range(3)],
            "hidden": [dense(ks[3 + i], width, width) for i in range(len(FEATURES) - 1)],
            "out": [dense(ks[-1], width, RANK)],
        })
    return params


def factor(p: dict[str, list[tuple[jax.Array, jax.Array]]], x: jax.Array) -> jax.Array:
    """x: (n, 1) -> (RANK, n)."""
    (wu, bu), (wv, bv), (wh, bh) = p["enc"]
    u, v, h = jnp.tanh(x @ wu + bu), jnp.tanh(x @ wv + bv), jnp.tanh(x @ wh + bh)
    for w, b in p["hidden"]:
        z = jnp.tanh(h @ w + b)
        h = (1 - z) * u + z * v
    w, b = p["out"][0]
    return (h @ w + b).T


def model(params, a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    fa, fb, fc = factor(params[0], a), factor(params[1], b), factor(params[2], c)
    ab = jnp.einsum("fx,fy->fxy", fa, fb)
    return jnp.einsum("fxy,fz->xyz", ab, fc)


def along(params, pts: list[jax.Array], d: int) -> tuple[jax.Array, jax.Array]:
    """(du/dx_d, d2u/dx_d^2) on the grid of ``pts`` by forward-over-forward jvp of the whole model
    along axis d (SPINN's hvp_fwdfwd)."""
    def f(x: jax.Array) -> jax.Array:
        return model(params, *[x if e == d else p for e, p in enumerate(pts)])

    ones = jnp.ones_like(pts[d])
    first = lambda y: jax.jvp(f, (y,), (ones,))[1]  # noqa: E731
    return jax.jvp(first, (pts[d],), (ones,))


def make_loss(problem: str, n: int, key: jax.Array):
    """The loss function of ``problem`` and its data on n random points per axis."""
    first = {"helmholtz3d": (-1.0, 1.0), "klein_gordon3d": (0.0, 10.0), "diffusion3d": (0.0, 1.0)}[problem]
    ranges = [first, (-1.0, 1.0), (-1.0, 1.0)]
    pts = [jax.random.uniform(k, (n, 1), minval=lo, maxval=hi) for k, (lo, hi) in zip(jax.random.split(key, 3), ranges)]
    a, b, c = pts
    A, B, C = jnp.meshgrid(a[:, 0], b[:, 0], c[:, 0], indexing="ij")

    def face(d: int, value: float):
        out = list(pts)
        out[d] = jnp.full((1, 1), value)
        return out

    if problem == "helmholtz3d":
        s = jnp.sin
        exact = s(4 * math.pi * A) * s(4 * math.pi * B) * s(3 * math.pi * C)
        source = -(16 + 16 + 9) * math.pi**2 * exact + exact
        faces = [face(d, v) for d in range(3) for v in (-1.0, 1.0)]

        def loss(params):
            u = model(params, a, b, c)
            lap = along(params, pts, 0)[1] + along(params, pts, 1)[1] + along(params, pts, 2)[1]
            pde = jnp.mean((lap + u - source) ** 2)
            walls = sum(jnp.mean(model(params, *fc) ** 2) for fc in faces)
            return pde + 100 * walls

        return loss

    if problem == "klein_gordon3d":
        def ex(t, x, y):
            return (x + y) * jnp.cos(2 * t) + x * y * jnp.sin(2 * t)

        exact = ex(A, B, C)
        source = -4 * exact + exact**2  # u_tt - lap u + u^2 with u_tt = -4 u, lap u = 0
        faces = [face(d, v) for d in (1, 2) for v in (-1.0, 1.0)]
        face_vals = [ex(*jnp.meshgrid(*(p[:, 0] for p in fc), indexing="ij")) for fc in faces]
        t0 = face(0, 0.0)
        u0 = ex(*jnp.meshgrid(*(p[:, 0] for p in t0), indexing="ij"))

        def loss(params):
            u = model(params, a, b, c)
            utt, uxx, uyy = (along(params, pts, d)[1] for d in range(3))
            pde = jnp.mean((utt - uxx - uyy + u**2 - source) ** 2)
            init = jnp.mean((model(params, *t0) - u0) ** 2)
            walls = sum(jnp.mean((model(params, *fc) - fv) ** 2) for fc, fv in zip(faces, face_vals))
            return pde + init + walls

        return loss

    faces = [face(d, v) for d in (1, 2) for v in (-1.0, 1.0)]
    t0 = face(0, 0.0)
    X, Y = jnp.meshgrid(b[:, 0], c[:, 0], indexing="ij")
    u0 = (0.25 * jnp.exp(-10 * ((X - 0.3) ** 2 + (Y - 0.2) ** 2)) + 0.4 * jnp.exp(-15 * ((X + 0.5) ** 2 + (Y + 0.1) ** 2))
          + 0.3 * jnp.exp(-20 * (X**2 + (Y + 0.5) ** 2)))[None]

    def loss(params):
        u = model(params, a, b, c)
        ut = jax.jvp(lambda t: model(params, t, b, c), (a,), (jnp.ones_like(a),))[1]
        ux, uxx = along(params, pts, 1)
        uy, uyy = along(params, pts, 2)
        pde = jnp.mean((ut - 0.05 * (ux**2 + uy**2 + u * (uxx + uyy))) ** 2)
        init = jnp.mean((model(params, *t0) - u0) ** 2)
        walls = sum(jnp.mean(model(params, *fc) ** 2) for fc in faces)
        return pde + init + walls

    return loss


def measure(problem: str, n: int, repeats: int) -> dict[str, float | str | int]:
    key = jax.random.PRNGKey(0)
    params = init_params(key)
    loss = make_loss(problem, n, jax.random.PRNGKey(1))
    opt = optax.adam(1e-3)
    state = opt.init(params)
    grad = jax.jit(jax.value_and_grad(loss))  # SPINN: the loss and gradient in one jit, the update in another

    @jax.jit
    def update(grads, params, state):
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    def step(params, state):
        value, grads = grad(params)
        params, state = update(grads, params, state)
        jax.block_until_ready(params)
        return params, state

    t = time.perf_counter()
    params, state = step(params, state)
    compile_s = time.perf_counter() - t
    for _ in range(5):
        params, state = step(params, state)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        params, state = step(params, state)
        times.append(time.perf_counter() - t)
    return {"problem": problem, "n": n, "ms": statistics.median(times) * 1000, "first_s": compile_s,
            "jax": jax.__version__, "device": str(jax.devices()[0])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="+", default=["helmholtz3d", "klein_gordon3d", "diffusion3d"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    for problem in args.problems:
        for n in args.sizes:
            print(json.dumps(measure(problem, n, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
