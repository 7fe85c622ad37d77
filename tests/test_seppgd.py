"""SepPGD against its definitions: the pseudo-NTK, S_d, Lemma 2 with the dense Kronecker-sum
preconditioner, faces, masks, k = 0, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import seppinn
from seppinn import SolverConfigError
from seppinn.train.seppgd import factor_preconditioner
from seppinn.model.separable import CPModel
from seppinn.train.loop import Trainer

from .conftest import open_gates

AXES = {"x": (0.0, 1.0), "y": (-1.0, 2.0), "z": (0.5, 1.5)}
SIZES = {"x": 4, "y": 5, "z": 6}
TARGET = "sin(3*x) + cos(2*y)"


def small_overrides(**extra):
    ov = {"precondition.method": "seppgd", "precondition.k": 3, "train.dtype": "float64",
          "model.rank": 4, "model.width": 8, "model.depth": 3, "model.activation": "tanh", "train.sampling": "grid"}
    ov.update(extra)
    return ov


def trainer_for(problem, **extra) -> Trainer:
    prep = seppinn.prepare(problem, overrides=small_overrides(**extra))
    tr = Trainer(prep.compiled, prep.config, device=torch.device("cpu"), progress=False)
    tr.preconditioners.rebuild()
    return tr


def data_problem(dims: int, keep=None) -> seppinn.Problem:
    axes = dict(list(AXES.items())[:dims])
    p = seppinn.Problem("d", axes, ["u"], kind="data")
    p.add_data("u", TARGET if dims > 1 else "sin(3*x)")
    return p


def flat_grad(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def jacobian(Z: torch.Tensor, params) -> torch.Tensor:
    flat = Z.flatten()
    return torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(flat[i], params, retain_graph=True)])
                        for i in range(len(flat))])


def kron_sum(mats: list[torch.Tensor | None], sizes: list[int]) -> torch.Tensor:
    """sum_d I x ... x S_d x ... x I over the axes with a matrix (None: a pinned axis)."""
    total = None
    for d, S in enumerate(mats):
        if S is None:
            continue
        out = torch.ones(1, 1, dtype=torch.float64)
        for e, n in enumerate(sizes):
            out = torch.kron(out, S if e == d else torch.eye(n, dtype=torch.float64))
        total = out if total is None else total + out
    assert total is not None
    return total


@pytest.mark.parametrize("body, rwf", [("mlp", None), ("modified_mlp", None), ("modified_mlp", {"mean": 0.5, "std": 0.3}),
                                       ("pirate", {"mean": 0.5, "std": 0.3})])
def test_pseudo_ntk_is_the_gram_matrix_of_per_point_gradients(body, rwf, f64):
    torch.manual_seed(0)
    model = CPModel([(0.0, 1.0), (-2.0, 3.0)], 3, 2, "sqrt_rank",
                    dict(width=8, depth=3, activation="sin", omega0=3.0, body=body, weight_factorization=rwf))
    open_gates(model)
    xs = [torch.rand(5), -2 + 5 * torch.rand(7)]
    Ks = model.pseudo_ntks(xs)
    params = list(model.parameters())
    for d, x in enumerate(xs):
        rows = []
        for i in range(len(x)):
            s = model.factor_jets(d, x[i : i + 1], 0).sum()  # sum of logits of factor d at x_i
            rows.append(torch.cat([g[d].flatten() for g in torch.autograd.grad(s, params, allow_unused=False)]))
        G = torch.stack(rows)
        torch.testing.assert_close(Ks[d], G @ G.T, rtol=1e-12, atol=1e-12 * Ks[d].abs().max().item())


@pytest.mark.parametrize("modulation", ["clamp", "sqrt"])
def test_S_is_symmetric_with_the_specified_eigenvalues(modulation, f64):
    torch.manual_seed(1)
    A = torch.randn(9, 9)
    K = A @ A.T + 1e-3 * torch.eye(9)
    lam = torch.linalg.eigvalsh(K).flip(0)
    k = 4
    S = factor_preconditioner(K, k, modulation)
    Sd = S.dense()
    torch.testing.assert_close(Sd, Sd.T)
    g = lam[k - 1].expand(k) if modulation == "clamp" else torch.sqrt(lam[:k] * lam[k - 1])
    want_S = torch.cat([g / lam[:k], torch.ones(9 - k)])
    torch.testing.assert_close(torch.linalg.eigvalsh(Sd).sort().values, want_S.sort().values)
    # K S (similar to S^1/2 K S^1/2): top k eigenvalues become g_i, the rest stay
    want = torch.cat([g, lam[k:]]).sort().values
    torch.testing.assert_close(torch.linalg.eigvals(K @ Sd).real.sort().values, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S.modulated, torch.cat([g, lam[k:]]))
    assert factor_preconditioner(K, 1, modulation).V.shape[1] == 0  # k <= 1: identity


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt"])
@pytest.mark.parametrize("scale", ["normalized", "paper"])
@pytest.mark.parametrize("dims", [2, 3])
def test_lemma2_against_dense_kronecker_sum(dims, scale, kind, f64):
    torch.manual_seed(dims)
    p = data_problem(dims)
    names = list(AXES)[:dims]
    tr = trainer_for(p, **{"train.points": {a: SIZES[a] for a in names}, "precondition.scale": scale,
                           "train.weights": {"data": 0.7}, "model.kind": kind})
    params = list(tr.model.parameters())
    grad = flat_grad(tr.losses()["data"], params)
    pts = [tr.points[("train", d)] for d in range(dims)]
    Z = tr.model["u"](pts)[..., 0]
    grids = np.meshgrid(*[x.numpy() for x in pts], indexing="ij")
    Y = np.sin(3 * grids[0]) + np.cos(2 * grids[1]) if dims > 1 else np.sin(3 * grids[0])
    r = (Z - torch.as_tensor(Y)).flatten().detach()
    J = jacobian(Z, params)
    S = kron_sum([tr.preconditioners.factors[(0, 0)][d].dense() for d in range(dims)], [len(x) for x in pts])
    c = 1 / dims if scale == "normalized" else 1.0
    want = (2 * 0.7 / len(r)) * J.T @ (c * S @ r)
    assert ((grad - want).norm() / want.norm()).item() <= 1e-10
    plain = (2 * 0.7 / len(r)) * J.T @ r
    assert ((want - plain).norm() / plain.norm()).item() > 1e-3  # the preconditioner does something


def test_k0_gives_the_plain_gradient_and_logged_loss_is_true(f64):
    p = data_problem(3)
    pts = {"train.points": SIZES}
    tr = trainer_for(p, **pts, **{"precondition.k": 0})
    plain = trainer_for(p, **pts, **{"precondition.method": "none"})
    plain.model.load_state_dict(tr.model.state_dict())
    params, params0 = list(tr.model.parameters()), list(plain.model.parameters())
    l1, l0 = tr.losses()["data"], plain.losses()["data"]
    assert l1.item() == l0.item()  # logged losses are the true mean squares
    g1, g0 = flat_grad(l1, params), flat_grad(l0, params0)
    assert ((g1 - g0).norm() / g0.norm()).item() < 1e-14
    tr3 = trainer_for(p, **pts)
    tr3.model.load_state_dict(tr.model.state_dict())
    assert tr3.losses()["data"].item() == pytest.approx(l0.item(), rel=1e-15)


def test_face_term_matches_its_lower_dimensional_counterpart(f64):
    p = seppinn.Problem("f", dict(AXES), ["u"])
    p.add_equation("lap(u)")
    p.add_condition(on="x = min", value="cos(2*y)*z", name="face")
    tr = trainer_for(p, **{"train.points": SIZES, "precondition.k": {"face": 3}})
    assert tr.plan.preconditioned == {"face": 3}
    params = list(tr.model.parameters())
    grad = flat_grad(tr.losses()["face"], params)
    part = tr.c.terms[1].parts[0]
    pts = [tr.points[k] for k in part.grid]
    Z = tr.model["u"](pts)[0, :, :, 0]  # (n_y, n_z) on the face x = 0
    y, z = np.meshgrid(pts[1].numpy(), pts[2].numpy(), indexing="ij")
    r = (Z - torch.as_tensor(np.cos(2 * y) * z)).flatten().detach()
    S = kron_sum([None, tr.preconditioners.factors[(1, 0)][1].dense(), tr.preconditioners.factors[(1, 0)][2].dense()], [1, 5, 6])
    want = (2 / len(r)) * jacobian(Z, params).T @ (0.5 * S @ r)
    assert set(tr.preconditioners.factors[(1, 0)]) == {1, 2}
    assert ((grad - want).norm() / want.norm()).item() <= 1e-10


def test_masked_data_never_pushes_held_out_points(tmp_path, f64):
    x, y = np.linspace(0, 1, 6), np.linspace(-1, 2, 7)
    obs = np.sin(3 * x)[:, None] + np.cos(2 * y)[None, :]
    np.save(tmp_path / "a.npy", obs)
    rng = np.random.default_rng(5)
    keep = rng.random(obs.shape) < 0.6
    changed = obs.copy()
    changed[~keep] += 10.0  # held-out values must not matter
    np.save(tmp_path / "b.npy", changed)
    grads = []
    for name in ("a.npy", "b.npy"):
        text = f'[problem]\nname = "m"\nkind = "data"\n[axes]\nx = [0.0, 1.0]\ny = [-1.0, 2.0]\n[fields]\nu = {{}}\n' \
               f'[data]\nu = {{ file = "{name}", keep = 0.6, seed = 5 }}\n'
        (tmp_path / "m.toml").write_text(text)
        torch.manual_seed(0)
        tr = trainer_for(tmp_path / "m.toml")
        grads.append(flat_grad(tr.losses()["data"], list(tr.model.parameters())))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    assert grads[0].abs().max() > 0


def test_refusals():
    p = seppinn.Problem("f", dict(AXES), ["u"])
    p.add_equation("lap(u)")
    p.add_condition(on="x = min", expr="diff(u, x)", name="flux")
    p.add_condition(on="x = max", value="1", name="wall")
    with pytest.raises(SolverConfigError, match="precondition.terms: term 'flux' involves derivatives of fields"):
        seppinn.prepare(p, overrides=small_overrides(**{"precondition.terms": ["flux"]}))
    with pytest.raises(SolverConfigError, match="precondition.terms: term 'pde' involves derivatives"):
        seppinn.prepare(p, overrides=small_overrides(**{"precondition.terms": ["pde"]}))
    with pytest.raises(SolverConfigError, match=r"unknown term 'wal' \(did you mean 'wall'\?\)"):
        seppinn.prepare(p, overrides=small_overrides(**{"precondition.terms": ["wal"]}))
    assert seppinn.prepare(p, overrides=small_overrides()).plan.preconditioned == {"wall": 3}


def test_plan_holds_each_parts_k_and_the_factors_have_it():
    """k = "auto" is resolved per part and axis in the plan (a quarter of the axis' points, at least
    2; 0 on a face's fixed axis and for terms not preconditioned), and each factor keeps k modes."""
    p = seppinn.Problem("f", dict(AXES), ["u"])
    p.add_equation("lap(u) - 1")
    p.add_condition(on="x = max", value="1", name="wall")
    p.add_data("u", TARGET)
    prep = seppinn.prepare(p, overrides=small_overrides(**{"precondition.k": "auto", "train.points": SIZES}))
    names = [t.name for t in prep.compiled.terms]
    wall, data, pde = (prep.plan.parts[names.index(n)][0] for n in ("wall", "data", "pde"))
    assert wall.k == (0, 2, 2) and wall.sizes == (1, 5, 6)
    assert data.k == (2, 2, 2) and pde.k == (0, 0, 0)
    assert "wall (k = auto: 2)" in seppinn.api.check_report(prep)
    big = seppinn.prepare(p, overrides=small_overrides(**{"precondition.k": "auto", "train.points": 40}))
    assert big.plan.parts[names.index("data")][0].k == (10, 10, 10)
    tr = Trainer(big.compiled, big.config, plan=big.plan, device=torch.device("cpu"), progress=False)
    tr.preconditioners.rebuild()
    S = tr.preconditioners.factors[(names.index("data"), 0)][0]
    assert S.V.shape == (40, 10) and S.coef.shape == (10,)  # I - S has rank k


def test_spectrum_command_writes_numbers_and_plot(tmp_path, capsys):
    import h5py

    from seppinn.cli import main

    problem = tmp_path / "d.toml"
    problem.write_text('[problem]\nname = "d"\nkind = "data"\n[axes]\nx = [0.0, 1.0]\ny = [-1.0, 2.0]\n'
                       '[fields]\nu = {}\n[data]\nu = "sin(3*x) + cos(2*y)"\n')
    out = tmp_path / "spec"
    assert main(["spectrum", str(problem), "--set", "precondition.method=seppgd", "--set", "precondition.k=4",
                 "--set", "train.points=12", "--set", "model.rank=8", "--set", "model.width=16",
                 "--out", str(out)]) == 0
    with h5py.File(out / "spectrum.h5") as f:
        lam, mod = f["data/x/factor"][()], f["data/x/modulated"][()]
        full, pre = f["data/full"][()], f["data/full_preconditioned"][()]
    assert lam.shape == mod.shape == (12,) and full.shape == pre.shape == (144,)
    np.testing.assert_allclose(mod[:4], lam[3])  # clamp: the top 4 become lambda_4
    np.testing.assert_allclose(mod[4:], lam[4:])
    assert pre[0] < 0.5 * full[0]  # preconditioning flattens the top of the full NTK spectrum
    assert (out / "spectrum.png").stat().st_size > 1000
    assert "data/full: 144 eigenvalues" in capsys.readouterr().out
    # without precondition.method = seppgd: the same spectrum, the k and terms the settings would use
    assert main(["spectrum", str(problem), "--set", "precondition.k=4", "--set", "train.points=12",
                 "--set", "model.rank=8", "--set", "model.width=16", "--out", str(tmp_path / "plain")]) == 0
    with h5py.File(tmp_path / "plain" / "spectrum.h5") as f:
        np.testing.assert_array_equal(f["data/x/modulated"][()], mod)
    pde = tmp_path / "pde.toml"  # a Neumann condition only: nothing SepPGD can precondition
    pde.write_text('[problem]\nname = "n"\n[axes]\nx = [0.0, 1.0]\n[fields]\nu = {}\n[[equations]]\n'
                   'residual = "diff(u, x, 2) - 1"\n[[conditions]]\non = "x = min"\nexpr = "diff(u, x)"\n')
    capsys.readouterr()
    assert main(["spectrum", str(pde), "--out", str(tmp_path / "x")]) == 2
    assert "no term SepPGD can precondition" in capsys.readouterr().err
