"""``seppinn spectrum``: what SepPGD does to the spectrum, for the user's own problem (the
paper's Fig. 1d). Per preconditioned term and free axis: the factor pseudo-NTK eigenvalues
before and after modulation; on grids of at most ``MAX_FULL`` points, the eigenvalues of the
model's full empirical NTK K = J J^T on the term's grid before and after preconditioning
(K vs K S~, S~ = c sum_d I x ... x S_d x ... x I). Settings without SepPGD get the spectrum it
would give with their k and terms (the factor-NTK spectrum is as informative without it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .api import Prepared
from .compile.plan import make_plan
from .errors import SolverConfigError
from .train.loop import Trainer

MAX_FULL = 1024  # grid points up to which the full NTK (N x N) is formed


def _kron_sum(mats: dict[int, torch.Tensor], sizes: list[int], c: float) -> torch.Tensor:
    total = None
    for d, S in mats.items():
        out = torch.ones(1, 1, dtype=S.dtype)
        for e, n in enumerate(sizes):
            out = torch.kron(out, S if e == d else torch.eye(n, dtype=S.dtype))
        total = out if total is None else total + out
    assert total is not None
    return c * total


def compute(prep: Prepared) -> dict[str, np.ndarray]:
    """Named 1-D arrays of eigenvalues (descending): ``<term>/<axis>/factor`` and
    ``.../modulated``, and ``<term>/full`` and ``<term>/full_preconditioned`` where formed."""
    config, plan = prep.config, prep.plan
    if not plan.preconditioned:  # the spectrum SepPGD would give with these settings' k and terms
        config = dataclasses.replace(config, precondition=dataclasses.replace(config.precondition, method="seppgd"))
        plan = make_plan(prep.compiled, config, ref_arrays=prep.ref_arrays)
    if not plan.preconditioned:
        raise SolverConfigError("no term SepPGD can precondition: the spectrum needs a data term or a condition "
                                "with a value (no field derivatives)", key="precondition.terms")
    prep = dataclasses.replace(prep, config=config, plan=plan)
    tr = Trainer(prep.compiled, prep.config, prep.ref_arrays, plan=prep.plan, device=prep.device, progress=False)
    tr.preconditioners.rebuild()
    _, scales = tr.preconditioners.current()
    out: dict[str, np.ndarray] = {}
    axes = prep.compiled.axes
    for ti, term in enumerate(prep.compiled.terms):
        if term.name not in prep.plan.preconditioned:
            continue
        part = term.parts[0]
        factors = tr.preconditioners.factors[(ti, 0)]
        for d, fp in factors.items():
            out[f"{term.name}/{axes[d]}/factor"] = fp.eigvals.cpu().double().numpy()
            out[f"{term.name}/{axes[d]}/modulated"] = fp.modulated.cpu().double().numpy()
        pts = [tr.points[k] for k in part.grid]
        sizes = [len(p) for p in pts]
        if int(np.prod(sizes)) > MAX_FULL:
            continue
        field = part.residual.derivs[0][0]
        params = list(tr.model[field].parameters())
        Z = tr.model[field](pts).sum(-1).flatten()
        J = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(Z[i], params, retain_graph=True)])
                         for i in range(len(Z))]).double()
        K = J @ J.T
        S = _kron_sum({d: f.dense().cpu().double() for d, f in factors.items()}, sizes, scales[(ti, 0)])
        out[f"{term.name}/full"] = torch.linalg.eigvalsh(K).flip(0).numpy()
        out[f"{term.name}/full_preconditioned"] = np.sort(torch.linalg.eigvals(K @ S).real.numpy())[::-1].copy()
    return out


def write(spectra: dict[str, np.ndarray], out: Path) -> list[Path]:
    """spectrum.h5 (one dataset per name), spectrum.csv (name, index, eigenvalue), spectrum.png."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .safe_files import write_atomic

    out.mkdir(parents=True, exist_ok=True)

    def h5(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, v in spectra.items():
                f[name] = v

    def csv(tmp: Path) -> None:
        rows = ["name,index,eigenvalue"] + [f"{n},{i + 1},{x:.10e}" for n, v in spectra.items() for i, x in enumerate(v)]
        tmp.write_text("\n".join(rows) + "\n")

    write_atomic(out / "spectrum.h5", h5)
    write_atomic(out / "spectrum.csv", csv)
    groups = sorted({n.rsplit("/", 1)[0] for n in spectra})
    fig, axs = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), squeeze=False)
    for ax, g in zip(axs[0], groups):
        before, after = ("factor", "modulated") if f"{g}/factor" in spectra else ("full", "full_preconditioned")
        ax.semilogy(np.arange(1, len(spectra[f"{g}/{before}"]) + 1), spectra[f"{g}/{before}"], "o-", ms=3, label="K")
        ax.semilogy(np.arange(1, len(spectra[f"{g}/{after}"]) + 1), np.abs(spectra[f"{g}/{after}"]), "s-", ms=3,
                    label="preconditioned")
        ax.set(title=g, xlabel="index i (1 = largest)", ylabel="eigenvalue")
        ax.legend()
    fig.tight_layout()
    write_atomic(out / "spectrum.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return [out / "spectrum.h5", out / "spectrum.csv", out / "spectrum.png"]
