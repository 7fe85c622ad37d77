"""The plan of a run: how each term part is evaluated, which factor-network passes give the jets,
how metrics are computed, what SepPGD preconditions, and what the run costs in memory.

``make_plan(compiled, settings)`` is frozen and tensor-free: ``seppinn check`` prints it and the
trainer follows it. It also holds the checks of settings against the problem (unknown term
weights, activations without the derivatives a term needs, ranks, per-axis point tables).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import SolverConfigError, did_you_mean
from ..model.separable import rank_list
from ..problem.solver_config import SolverConfig
from ..registry import SMOOTH_ORDERS
from .compiler import CompiledProblem, PointSetKey, Term, TermPart, part_sizes, per_axis
from .separability import rank as block_rank

Mode = Literal["grid", "fused", "grid_free"]
JetPass = tuple[int, list[list[PointSetKey]]]  # (order, per axis: the point sets evaluated in this pass)
COMPILE_AUTO_ITERATIONS = 5000  # train.compile = "auto": compile runs at least this long (compiling takes 26-42 s on 2 cores)
RUNTIME_BYTES = 96 * 2**20  # estimate_memory: what a run takes beyond its tensors (measured ~65 MiB)
# SepPGD k = "auto": this fraction of the axis' points (at least 2); bench/seppgd_k.py measured it as
# the most robust choice on the 64^2 multi-scale fit (bench/RESULTS.md).
AUTO_FRACTION = 0.25
MAX_SCATTERED = 4096  # scattered points per preconditioned term: S_d is N x N (eigh O(N^3))


@dataclass(frozen=True)
class PartPlan:
    """How part ``part`` of term ``term`` is evaluated: its mode, the rank rho of its CP residual
    (0 on the grid path), its points per axis ([N] for N scattered points) and, per axis, the SepPGD
    k of its factor preconditioner (0: none, on a face's fixed axis or where the term is not
    preconditioned; scattered points: every axis' S_d acts on the N points)."""

    term: int
    part: int
    mode: Mode
    rank: int
    sizes: tuple[int, ...]
    k: tuple[int, ...]


@dataclass(frozen=True)
class CausalPlan:
    """Causal training (``train.causal``): the equation terms it weights, the time axis, M, eps."""

    terms: tuple[int, ...]
    axis: int
    chunks: int
    tol: float


@dataclass(frozen=True)
class Plan:
    parts: tuple[tuple[PartPlan, ...], ...]  # per term, per part
    jet_passes: Mapping[str, tuple[JetPass, ...]]  # per field
    metric_modes: Mapping[str, Mode]  # per field with a reference: "grid" or "grid_free"
    preconditioned: Mapping[str, Any]  # SepPGD: term name -> k (int or "auto")
    test_sizes: tuple[int, ...]
    memory: Mapping[str, float]  # estimate_memory's bytes
    compiles: bool  # the loss runs through torch.compile
    causal: CausalPlan | None = None

    def part(self, term: int, part: int) -> PartPlan:
        return self.parts[term][part]


def shard_axis(compiled: CompiledProblem, config: SolverConfig) -> int:
    """The axis whose training points the ranks of a distributed run split: ``train.shard_axis``,
    or ("auto") the one with the most training points (the first of equals)."""
    if config.train.shard_axis != "auto":
        return compiled.axes.index(config.train.shard_axis)
    n = per_axis(config.train.points, compiled.axes)
    return n.index(max(n))


def seppgd_k(k: Any, n: int) -> int:
    """The SepPGD k of an axis with ``n`` points from the setting (an int or "auto")."""
    return max(2, round(AUTO_FRACTION * n)) if k == "auto" else int(k)


def compiles(config: SolverConfig) -> bool:
    """Whether ``train.compile`` ("auto": runs of at least COMPILE_AUTO_ITERATIONS) compiles the loss."""
    t = config.train
    return bool(t.compile) if t.compile != "auto" else t.iterations + t.lbfgs_steps() >= COMPILE_AUTO_ITERATIONS


def part_mode(compiled: CompiledProblem, config: SolverConfig, part: TermPart, force: Mode | None = None
              ) -> tuple[Mode, int]:
    """How a term part is evaluated, and the rank rho of its CP residual (0 on the grid path):
    "grid" (one contraction per field derivative, the residual on the grid), "fused" (the affine-
    separable terms as one CP contraction on the grid, any rest per derivative) or "grid_free" (the
    mean square from per-axis Gram products, no grid). CP models only; "grid_free" needs the whole
    residual affine-separable, and with ``train.grid_free = "auto"`` a flop estimate in its favour:
    rho sum_d n_d < prod_d n_d (Gram products O(rho^2 sum n_d) against the contraction's
    O(rho prod n_d); measured on the Helmholtz face pairs at 64 points per axis, where both sides
    are equal to 5 %, the grid-free step was the faster one, with and without SepPGD).
    ``force``: that mode wherever the part allows it ("grid" always does; the two-path tests)."""
    lin = part.residual.linear
    if force == "grid" or part.pointwise or lin is None or config.model.kind != "cp":
        return "grid", 0
    fields = {b.field for b in lin.blocks if b.field is not None}
    if len({compiled.components[f] for f in fields}) != 1:
        return "grid", 0
    rho = block_rank(lin.blocks, {f: int(config.model.rank) for f in fields})
    gf = config.train.grid_free if force is None else force == "grid_free"
    if lin.exact and gf is not False:
        sizes = part_sizes(compiled, part, per_axis(config.train.points, compiled.axes))
        if gf is True or rho * sum(sizes) < math.prod(sizes):
            return "grid_free", rho
    return "fused", rho


def metric_mode(compiled: CompiledProblem, config: SolverConfig, f: str) -> Mode:
    """How field f's metrics are computed: "grid_free" (Gram products of the CP model's factors and
    its separable expression reference on the test axes; never the test grid) or "grid". The grid
    stays for other models, ``train.grid_free = false``, and fields whose metrics need points
    (held-out points of a keep-data term, the psnr of an image field) or are not the model's
    product (positive fields: softplus of it), and problems with parameter axes (the worst
    parameter value's error is read from the grid)."""
    data = compiled.problem.data.get(f)
    masked = any(t.kind == "data" and p.mask is not None and p.residual.derivs[0][0] == f
                 for t in compiled.terms for p in t.parts)
    if (f in compiled.separable_references and config.model.kind == "cp" and config.train.grid_free is not False
            and not masked and not (data is not None and data.kind == "image") and f not in compiled.positive
            and not any(a.parameter for a in compiled.problem.axis_list)):
        return "grid_free"
    return "grid"


def pass_cost(order: int, keys: Sequence[Sequence[PointSetKey]], sizes: Mapping[PointSetKey, int]) -> int:
    """Rows one factor-network pass computes per axis: the axes are batched, each padded to the
    longest point list (an axis with none gets one placeholder point), every row carrying order+1
    jet entries."""
    return (order + 1) * max(max(sum(sizes[k] for k in ks), 1) for ks in keys)


def plan_passes(need: Mapping[tuple[int, PointSetKey], int], sizes: Mapping[PointSetKey, int],
                n_axes: int) -> list[JetPass]:
    """The factor-network passes of one field from the derivative order each (axis, point set) needs:
    one pass per order, then two passes merged into one at the higher order while that lowers the
    total ``pass_cost`` (diffusion's u_t and u_xx, u_yy: one order-2 pass of 3 x 66 rows instead of
    an order-1 pass of 2 x 65 beside it, where two axes were placeholders padded to 65 points)."""
    passes = [(o, [[key for (d, key), m in need.items() if d == e and m == o] for e in range(n_axes)])
              for o in sorted(set(need.values()))]
    while len(passes) > 1:
        best = None
        for i, j in itertools.combinations(range(len(passes)), 2):
            (oi, ki), (oj, kj) = passes[i], passes[j]
            merged = (max(oi, oj), [a + b for a, b in zip(ki, kj)])
            gain = pass_cost(oi, ki, sizes) + pass_cost(oj, kj, sizes) - pass_cost(*merged, sizes)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, i, j, merged)
        if best is None:
            break
        _, i, j, merged = best
        passes = [p for k, p in enumerate(passes) if k not in (i, j)] + [merged]
        passes.sort(key=lambda p: p[0])
    return passes


def point_set_sizes(compiled: CompiledProblem, config: SolverConfig) -> dict[PointSetKey, int]:
    """Points of every training point set: the training grid per axis, faces, data-file grids and
    scattered points."""
    out: dict[PointSetKey, int] = {}
    for d, n in enumerate(per_axis(config.train.points, compiled.axes)):
        out[("train", d)] = n
        out[("face", d, "min")] = out[("face", d, "max")] = 1
        out[("face", d, "both")] = 2
    for name, sizes in compiled.file_grids.items():
        out.update({("file", name, d): n for d, n in enumerate(sizes)})
    for name, coords in compiled.point_sets.items():
        out.update({("points", name, d): len(coords) for d in range(coords.shape[1])})
    return out


def jet_passes(compiled: CompiledProblem, sizes: Mapping[PointSetKey, int]) -> dict[str, tuple[JetPass, ...]]:
    """Per field, one factor pass per derivative order needed, over the point sets that need that
    order on each axis (scattered data need order 0 even when the PDE needs 2), merged by ``plan_passes``.
    A face is one point: it joins the field's highest-order pass on its axis instead of a pass of its own."""
    need: dict[tuple[str, int, PointSetKey], int] = {}
    for t in compiled.terms:
        for part in t.parts:
            for f, alpha in part.residual.derivs:
                for d, key in enumerate(part.grid):
                    need[(f, d, key)] = max(need.get((f, d, key), 0), alpha[d])
    top: dict[tuple[str, int], int] = {}
    for (f, d, key), o in need.items():
        top[(f, d)] = max(top.get((f, d), 0), o)
    need = {(f, d, key): top[(f, d)] if key[0] == "face" else o for (f, d, key), o in need.items()}
    return {f: tuple(plan_passes({(d, key): o for (g, d, key), o in need.items() if g == f}, sizes,
                                 len(compiled.axes))) for f in compiled.components}


def term_field(term: Term) -> tuple[str | None, bool]:
    """(the single field a term's residual depends on or None, whether it has field derivatives)."""
    fields = {f for part in term.parts for f, _ in part.residual.derivs}
    derivs = any(any(alpha) for part in term.parts for _, alpha in part.residual.derivs)
    return (next(iter(fields)) if len(fields) == 1 else None), derivs


def preconditioned_terms(compiled: CompiledProblem, config: SolverConfig) -> dict[str, Any]:
    """Which terms SepPGD preconditions, with their k (int or "auto"). Raises for terms the
    recipe refuses (field derivatives, several fields) and for unknown names."""
    pc = config.precondition
    if pc.method != "seppgd":
        return {}
    names = [t.name for t in compiled.terms]
    if pc.terms == "auto":
        chosen = [t.name for t in compiled.terms if t.kind in ("data", "condition")
                  and term_field(t)[0] is not None and not term_field(t)[1]]
    else:
        chosen = list(pc.terms)
        for name in chosen:
            if name not in names:
                raise SolverConfigError(f"unknown term '{name}'{did_you_mean(name, names)} (terms: {', '.join(names)})",
                                        key="precondition.terms")
            field, derivs = term_field(compiled.terms[names.index(name)])
            if derivs:
                raise SolverConfigError(f"term '{name}' involves derivatives of fields; SepPGD preconditions only "
                                        "data and value conditions", key="precondition.terms")
            if field is None:
                raise SolverConfigError(f"term '{name}' depends on several fields; SepPGD needs one",
                                        key="precondition.terms")
    for name in chosen:
        part = compiled.terms[names.index(name)].parts[0]
        if part.pointwise and len(compiled.point_sets[part.grid[0][1]]) > MAX_SCATTERED:
            n = len(compiled.point_sets[part.grid[0][1]])
            raise SolverConfigError(
                f"term '{name}' has {n} scattered points; SepPGD's non-grid form (Appendix A.2) builds "
                f"N x N matrices per axis and is limited to {MAX_SCATTERED} points: thin the observations, "
                "or leave the term out with precondition.terms", key="precondition.terms")
    if isinstance(pc.k, dict):
        for name in pc.k:
            if name not in chosen:
                raise SolverConfigError(f"term '{name}' is not preconditioned (preconditioned: {', '.join(chosen) or 'none'})",
                                        key=f"precondition.k.{name}")
    return {name: pc.k.get(name, "auto") if isinstance(pc.k, dict) else pc.k for name in chosen}


def check_settings(compiled: CompiledProblem, config: SolverConfig) -> None:
    """The settings that must fit the problem: term weights name terms, the activation has the
    derivatives every term needs, the rank suits the model kind and the axes, and per-axis point
    tables name every axis. Raises SolverConfigError."""
    axes = compiled.problem.axis_list
    names = [t.name for t in compiled.terms]
    for wname in config.train.weights:
        if wname not in names:
            raise SolverConfigError(f"unknown term '{wname}'{did_you_mean(wname, names)} (terms: {', '.join(names)})",
                                    key=f"train.weights.{wname}")
    act, smooth = config.model.activation, SMOOTH_ORDERS.get(config.model.activation, math.inf)
    for t in compiled.terms:
        for part in t.parts:
            for _, alpha in part.residual.derivs:
                if max(alpha) > smooth:
                    d = int(np.argmax(alpha))
                    raise SolverConfigError(
                        f"'{act}' has zero derivatives of order > {smooth} almost everywhere, "
                        f"but term '{t.name}' ({t.key}) needs order {alpha[d]} along {axes[d].name}; "
                        "use tanh, sin or gelu", key="model.activation")
    try:
        rank_list(config.model.kind, config.model.rank, len(axes))
        if config.model.kind == "tt" and len(axes) < 2:
            raise ValueError("a tensor train needs at least 2 axes")
    except ValueError as exc:
        raise SolverConfigError(str(exc), key="model.rank") from None
    if config.train.balance == "ntk" and config.model.kind == "tucker":
        raise SolverConfigError("ntk balancing takes the NTK trace from the factor networks, and a Tucker model "
                                "also trains its core: use model.kind = \"cp\" or \"tt\", or train.balance = "
                                "\"grad_norm\"", key="train.balance")
    shard = config.train.shard_axis
    if shard != "auto" and shard not in compiled.axes:
        raise SolverConfigError(f"unknown axis '{shard}'{did_you_mean(shard, compiled.axes)} "
                                f"(axes: {', '.join(compiled.axes)})", key="train.shard_axis")
    for table in ("points", "test_points"):
        value = getattr(config.train, table)
        if isinstance(value, dict):
            names_ax = [a.name for a in axes]
            for k in value:
                if k not in names_ax:
                    raise SolverConfigError(f"unknown axis '{k}'{did_you_mean(k, names_ax)}", key=f"train.{table}.{k}")
            missing = [a for a in names_ax if a not in value]
            if missing:
                raise SolverConfigError(f"no value for axis {', '.join(missing)}", key=f"train.{table}")


def causal_plan(compiled: CompiledProblem, config: SolverConfig, preconditioned: Mapping[str, Any]) -> CausalPlan | None:
    """The equation terms ``train.causal`` weights over the time axis (None: off). Raises
    SolverConfigError for a problem without a time axis or a preconditioned equation."""
    spec = config.train.causal
    if not spec:
        return None
    axis = next((d for d, a in enumerate(compiled.problem.axis_list) if a.time), None)
    if axis is None:
        raise SolverConfigError("causal training weights time slices, but the problem has no time axis "
                                "(mark one with { range = [..], time = true })", key="train.causal")
    terms = tuple(ti for ti, t in enumerate(compiled.terms) if t.kind == "equation")
    for ti in terms:
        name = compiled.terms[ti].name
        if name in preconditioned:
            raise SolverConfigError(f"term '{name}' cannot be both preconditioned and causal", key="train.causal")
        if any(p.pointwise or p.grid[axis] != ("train", axis) for p in compiled.terms[ti].parts):
            raise SolverConfigError(f"term '{name}' is not on the training grid of the time axis", key="train.causal")
    return CausalPlan(terms, axis, int(spec["chunks"]), float(spec["tol"]))


def test_grid_sizes(compiled: CompiledProblem, config: SolverConfig,
                    ref_arrays: Mapping[str, np.ndarray] | None = None) -> list[int]:
    """Points per axis of the test grid: a reference file's grid, else ``train.test_points``."""
    if ref_arrays:
        return list(next(iter(ref_arrays.values())).shape[:-1])
    return per_axis(config.train.test_points, compiled.axes)


def estimate_memory(compiled: CompiledProblem, config: SolverConfig, parts: Sequence[Sequence[PartPlan]],
                    test_sizes: Sequence[int]) -> dict[str, float]:
    """Rough peak bytes of a run: one training iteration's grid tensors kept for the backward pass
    (every field derivative, every residual operation), the contraction intermediates and the
    factor networks' activations, plus the test grid (``test_sizes``): the prediction, references,
    errors and their VTK-ordered copies in float64, and the HDF5 image of solution.h5, all held at
    once when the outputs are written."""
    bytes_per = 4 if config.train.dtype == "float32" else 8
    n_train = per_axis(config.train.points, compiled.axes)
    R, width, depth = config.model.rank, config.model.width, config.model.depth
    R = R if isinstance(R, int) else max(R)
    C = max(compiled.components.values())
    grid_elems, inter = 0.0, 0.0
    for t, plans in zip(compiled.terms, parts):
        for part, pp in zip(t.parts, plans):
            sizes = list(pp.sizes)
            if pp.mode == "grid_free":  # factors G_d (and float64 copies), Gram matrices
                grid_elems += 4 * pp.rank * sum(sizes) * C + 4 * len(sizes) * pp.rank * pp.rank * C
                continue
            k = len(part.residual.derivs)
            grid_elems += (k + part.residual.nodes + 2) * float(np.prod(sizes)) * C
            inter = max(inter, float(np.prod(sizes[:-1])) * R * C * k) if len(sizes) > 1 else inter
    # factor networks: ~16 jet-sized tensors per layer kept for the backward (pre-activations, the
    # activation's derivatives, Faa di Bruno and gate products): measured 11-18 at 1,024-2,048 points
    nets = sum((max(o) + 1) * (sum(n_train) + 2 * len(n_train)) * width * depth * 16
               for o in compiled.orders.values())
    test = float(np.prod(test_sizes)) * 8 * 10 * sum(compiled.components.values()) \
        + float(np.prod(test_sizes[:-1])) * R * bytes_per
    # the allocator's slack and autograd's temporaries on top of what is counted, and the runtime's
    # own working memory: calibrated so the estimate stays above the peak growth bench/reliability.py
    # measures (helmholtz3d, 32^3-128^3: measured 65-237 MiB against 4-129 MiB counted)
    total = 1.5 * (grid_elems + inter + nets) * bytes_per + test + RUNTIME_BYTES
    return {"grid_tensors": grid_elems * bytes_per, "contractions": inter * bytes_per,
            "factor_networks": nets * bytes_per, "test_grid": test, "total": total}


def make_plan(compiled: CompiledProblem, config: SolverConfig, *, mode: Mode | None = None,
              ref_arrays: Mapping[str, np.ndarray] | None = None) -> Plan:
    """The plan of a run (checks the settings first). ``mode``: every part in that mode where it
    allows it (``part_mode``), and grid metrics for "grid" (the reference path of the two-path
    tests); None: the settings decide. ``ref_arrays``: reference files, which fix the test grid."""
    check_settings(compiled, config)
    n_train = per_axis(config.train.points, compiled.axes)
    pre = preconditioned_terms(compiled, config)

    def part_plan(ti: int, pi: int) -> PartPlan:
        term = compiled.terms[ti]
        part = term.parts[pi]
        sizes = tuple(part_sizes(compiled, part, n_train))
        per_axis_n = [sizes[0]] * len(part.grid) if part.pointwise else sizes  # N points: every S_d is N x N
        k = tuple(seppgd_k(pre[term.name], n) if term.name in pre and key[0] != "face" else 0
                  for key, n in zip(part.grid, per_axis_n))
        return PartPlan(ti, pi, *part_mode(compiled, config, part, mode), sizes, k)

    parts = tuple(tuple(part_plan(ti, pi) for pi in range(len(t.parts))) for ti, t in enumerate(compiled.terms))
    sizes = point_set_sizes(compiled, config)
    metric_modes: dict[str, Mode] = {f: "grid" if mode == "grid" else metric_mode(compiled, config, f)
                                     for f in compiled.problem.reference}
    test_sizes = test_grid_sizes(compiled, config, ref_arrays)
    return Plan(parts, jet_passes(compiled, sizes), metric_modes, pre,
                tuple(test_sizes), estimate_memory(compiled, config, parts, test_sizes), compiles(config),
                causal_plan(compiled, config, pre))
