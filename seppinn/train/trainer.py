"""Training: per-axis points -> factor jets -> contractions -> residuals -> losses -> Adam
(then optional L-BFGS), with periodic evaluation on the test grid.

Iteration semantics: the losses and metrics recorded at iteration i belong to the parameters
after i optimizer updates; the state kept as "best" is exactly the one whose loss was lowest.
Inside an iteration nothing synchronises with the host; values are gathered every
``eval_every`` iterations.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import sympy as sp
import torch

from ..compile.compiler import CompiledProblem, PointSetKey, TermPart, part_sizes, per_axis
from ..compile.lowering import evaluate_numpy, lower
from ..compile.separability import LinearPart, Products
from ..compile.separability import rank as block_rank
from ..errors import DataError, ProblemError, RunError, SolverConfigError
from ..io.output import squeeze_components
from ..model.separable import SeparableModel, build_model, cp_contract
from ..problem.solver_config import SolverConfig
from ..reference_solvers import REFERENCE_SOLVERS
from .gridfree import preconditioned_sum, squared_error, sum_of_squares
from .metrics import MetricSpec, field_metrics
from .progress import Progress
from .seppgd import FactorPreconditioner, build_all, precondition, resolve_k

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def broadcast_axes(xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-axis 1-D coordinates -> tensors shaped (1, .., n_d, .., 1, 1) that broadcast to the
    grid (n_1, ..., n_D, C)."""
    D = len(xs)
    return [x.reshape([-1 if i == d else 1 for i in range(D)] + [1]) for d, x in enumerate(xs)]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SolverConfigError("CUDA is not available on this machine (use auto or cpu)", key="train.device")
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise SolverConfigError(f"there is no {name} (devices: {torch.cuda.device_count()})", key="train.device")
    return torch.device(name)


JetPass = tuple[int, list[list[PointSetKey]]]  # (order, per axis: the point sets evaluated in this pass)


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


def block_slots(lin: LinearPart) -> list[list[int]]:
    """Per axis and rank block of a CP tensor: the index of the block's axis-d factor among the
    distinct ones (same field, derivative orders and coefficients: Helmholtz's [F''+k^2 F, F, F]
    has two F blocks on x; a source block is always its own)."""
    out = []
    for d in range(len(lin.blocks[0].axes)):
        keys: dict[object, int] = {}
        out.append([keys.setdefault(("source", i) if b.field is None else
                                    (b.field, tuple((s.order, s.coef) for s in b.axes[d])), len(keys))
                    for i, b in enumerate(lin.blocks)])
    return out


def compiles(config: SolverConfig) -> bool:
    """Whether ``train.compile`` ("auto": runs of at least COMPILE_AUTO_ITERATIONS) compiles the loss."""
    t = config.train
    return bool(t.compile) if t.compile != "auto" else t.iterations + t.lbfgs_iterations >= COMPILE_AUTO_ITERATIONS


def part_mode(compiled: CompiledProblem, config: SolverConfig, part: TermPart) -> tuple[str, int]:
    """How a term part is evaluated, and the rank rho of its CP residual (0 on the grid path):
    "grid" (one contraction per field derivative, the residual on the grid), "fused" (the affine-
    separable terms as one CP contraction on the grid, any rest per derivative) or "grid-free" (the
    mean square from per-axis Gram products, no grid). CP models only; "grid-free" needs the whole residual affine-separable, and
    with ``train.grid_free = "auto"`` a flop estimate in its favour: rho sum_d n_d < prod_d n_d
    (Gram products O(rho^2 sum n_d) against the contraction's O(rho prod n_d); measured on the
    Helmholtz face pairs at 64 points per axis, where both sides are equal to 5 %, the grid-free
    step was the faster one, with and without SepPGD)."""
    lin = part.residual.linear
    if part.pointwise or lin is None or config.model.kind != "cp":
        return "grid", 0
    fields = {b.field for b in lin.blocks if b.field is not None}
    if len({compiled.components[f] for f in fields}) != 1:
        return "grid", 0
    rho = block_rank(lin.blocks, {f: int(config.model.rank) for f in fields})
    gf = config.train.grid_free
    if lin.exact and gf is not False:
        sizes = part_sizes(compiled, part, per_axis(config.train.points, compiled.axes))
        if gf is True or rho * sum(sizes) < math.prod(sizes):
            return "grid-free", rho
    return "fused", rho


def metric_mode(compiled: CompiledProblem, config: SolverConfig, f: str) -> str:
    """How field f's metrics are computed: "grid-free" (Gram products of the CP model's factors and
    its separable expression reference on the test axes; never the test grid) or "grid". The grid
    stays for other models, ``train.grid_free = false``, and fields whose metrics need points
    (held-out points of a keep-data term, the psnr of an image field)."""
    problem = compiled.problem
    data = problem.data.get(f)
    masked = any(t.kind == "data" and p.mask is not None and p.residual.derivs[0][0] == f
                 for t in compiled.terms for p in t.parts)
    if (f in compiled.separable_references and config.model.kind == "cp" and config.train.grid_free is not False
            and not masked and not (data is not None and data.kind == "image")):
        return "grid-free"
    return "grid"


def memory_limit(config: SolverConfig, device: torch.device) -> tuple[float, str]:
    """(bytes, where the number comes from) that one training run may use."""
    lim = config.train.memory_limit
    if lim != "auto":
        return float(lim) * 2**30, "train.memory_limit"
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return 0.8 * total, f"80 % of {device}'s {total / 2**30:.1f} GiB"
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        avail = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    if avail is None:
        import os

        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0.8 * avail, f"80 % of the {avail / 2**30:.1f} GiB available"


def check_memory(compiled: CompiledProblem, config: SolverConfig, device: torch.device,
                 test_sizes: Sequence[int] | None = None) -> None:
    """Refuse a run whose estimated peak memory (``estimate_memory``) exceeds the limit."""
    need = estimate_memory(compiled, config, test_sizes)["total"]
    limit, source = memory_limit(config, device)
    if need > limit:
        raise SolverConfigError(
            f"estimated peak memory {need / 2**30:.2f} GiB exceeds the limit {limit / 2**30:.2f} GiB ({source}); "
            "use fewer points per axis (train.points, train.test_points), a smaller rank or width, float32, "
            "or raise train.memory_limit (GiB)",
            key="train.memory_limit")


def make_model(ranges: Sequence[tuple[float, float]], components: dict[str, int],
               config: SolverConfig, periodic: Sequence[bool] | None = None) -> SeparableModel:
    m = config.model
    net = dict(width=m.width, depth=m.depth, activation=m.activation, body=m.body, omega0=m.omega0,
               fourier_features=m.fourier_features, fourier_scale=m.fourier_scale,
               periodic=list(periodic or [False] * len(ranges)), periodic_modes=m.periodic_modes)
    return build_model(ranges, components, kind=m.kind, rank=m.rank, scale=m.scale, net_kwargs=net)


@dataclass
class Evaluation:
    iteration: int
    seconds: float
    losses: dict[str, float]  # weighted, per term, plus "total"
    metrics: dict[str, dict[str, float]]  # field -> {"rel_l2": .., "mse": ..}


RUNTIME_BYTES = 96 * 2**20  # estimate_memory: what a run takes beyond its tensors (measured ~65 MiB)
COMPILE_AUTO_ITERATIONS = 5000  # train.compile = "auto": compile runs at least this long (compiling takes 26-42 s on 2 cores)
MAX_ROLLBACKS = 4  # train.on_nan = "rollback": at most this many rollbacks per run


@dataclass
class TrainState:
    history: list[Evaluation] = field(default_factory=list)
    best: Evaluation | None = None
    best_state: dict[str, torch.Tensor] | None = None
    iteration: int = 0
    seconds: float = 0.0  # training time (evaluations excluded)
    lr_scale: float = 1.0  # halved at every rollback
    rollbacks: int = 0
    interrupted: bool = False
    last_good: dict[str, Any] | None = None  # the latest snapshot with finite values (Trainer.snapshot)

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> TrainState:
        """The loop state a ``Trainer.snapshot`` holds (its ``last_good`` is the snapshot)."""
        return cls(history=[Evaluation(**ev) for ev in snap["history"]],
                   best=Evaluation(**snap["best"]) if snap["best"] else None, best_state=snap["best_state"],
                   iteration=snap["iteration"], seconds=snap["seconds"], last_good=dict(snap))


class Trainer:
    """Owns the model, the point sets, the prepared coordinate terms and the optimizer."""

    def __init__(self, compiled: CompiledProblem, config: SolverConfig,
                 ref_arrays: Mapping[str, np.ndarray] | None = None, *,
                 device: torch.device | None = None, progress: bool = True) -> None:
        self.c, self.cfg = compiled, config
        self.device = device or pick_device(config.train.device)
        self.dtype = DTYPES[config.train.dtype]
        torch.manual_seed(config.train.seed)
        periodic = [a.periodic for a in compiled.problem.axis_list]
        self.model = make_model(compiled.ranges, compiled.components, config, periodic).to(
            device=self.device, dtype=self.dtype)
        for f, axis in compiled.hard.items():
            self.model[f].set_hard_axis(axis, *compiled.ranges[axis])
        self.sampler = torch.Generator().manual_seed(config.train.seed + 1)
        self.n_train = per_axis(config.train.points, compiled.axes)
        self.points: dict[PointSetKey, torch.Tensor] = {}
        for d, (lo, hi) in enumerate(compiled.ranges):
            self.points[("face", d, "min")] = self._t([lo])
            self.points[("face", d, "max")] = self._t([hi])
            self.points[("face", d, "both")] = self._t([lo, hi])
        for name, sizes in compiled.file_grids.items():
            for d, ((lo, hi), n) in enumerate(zip(compiled.ranges, sizes)):
                self.points[("file", name, d)] = self._t(np.linspace(lo, hi, n))
        for name, coords in compiled.point_sets.items():
            for d in range(coords.shape[1]):
                self.points[("points", name, d)] = self._t(coords[:, d])
        self.axis_weights: dict[PointSetKey, torch.Tensor] = {}  # sampling = "gauss": quadrature weights, mean 1
        self._sample_train(random=config.train.sampling == "random")
        self.modes = {id(p): part_mode(compiled, config, p)[0] for t in compiled.terms for p in t.parts}
        # the CP tensors of the fused and grid-free paths (per LinearPart): a part's linear terms, and
        # in its rest the combinations of derivatives it uses as a whole (``separability.combine``)
        self.block_slots = {id(lin): block_slots(lin) for t in compiled.terms for p in t.parts
                            for lin in self._linear_parts(p)}
        self.distinct_columns = {id(p.residual.linear): self._distinct_columns(p.residual.linear)
                                 for t in compiled.terms for p in t.parts
                                 if self.modes[id(p)] == "grid-free" and p.residual.linear is not None}
        # Jets: per field, one factor pass per derivative order needed, over the point sets that
        # need that order on each axis (scattered data need order 0 even when the PDE needs 2).
        need: dict[tuple[str, int, PointSetKey], int] = {}
        for t in compiled.terms:
            for part in t.parts:
                for f, alpha in part.residual.derivs:
                    for d, key in enumerate(part.grid):
                        need[(f, d, key)] = max(need.get((f, d, key), 0), alpha[d])
        # a face is one point: it joins the field's highest-order pass on its axis instead of a pass of its own
        top: dict[tuple[str, int], int] = {}
        for (f, d, key), o in need.items():
            top[(f, d)] = max(top.get((f, d), 0), o)
        need = {(f, d, key): top[(f, d)] if key[0] == "face" else o for (f, d, key), o in need.items()}
        counts = {key: len(x) for key, x in self.points.items()}
        self.jet_plan = {f: plan_passes({(d, key): o for (g, d, key), o in need.items() if g == f}, counts,
                                        len(compiled.axes)) for f in compiled.components}
        self.masks = {id(p): torch.as_tensor(p.mask, device=self.device) for t in compiled.terms
                      for p in t.parts if p.mask is not None}
        self._prepare_all()
        self._setup_test(ref_arrays or {})
        self._check_finite_inputs()
        self.progress_enabled = progress
        # SepPGD: factor preconditioners per term part (id) and free axis; built by rebuild_preconditioners
        self.factors: dict[int, dict[int, FactorPreconditioner]] = {}
        self.use_preconditioner = bool(compiled.preconditioned)
        self.precondition_seconds = 0.0
        self.stop_requested = False  # set by a signal handler: stop after the current iteration
        # one graph for jets, contractions, residuals and losses (backward compiled with it); the
        # points, constants and SepPGD factors are inputs, so resampling and rebuilds reuse it
        self._compiled: Callable[[], torch.Tensor] | None = (
            torch.compile(lambda: torch.stack(list(self.losses().values()))) if compiles(config) else None)
        # SepPGD rebuilds (pseudo-NTKs, eigh, S_d) as a graph of their own: ~1.4 ms per rebuild at 64^3
        # against ~3 eager (`bench/seppgd.py --cost [--compile]`: rebuild share x step time x 10)
        self._compiled_build: Callable[..., dict[tuple[int, int], tuple[torch.Tensor | None, ...]]] | None = (
            torch.compile(self._build_factors) if compiles(config) and self.use_preconditioner else None)

    # ---------------------------------------------------------------- points and grids
    def _t(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device).to(self.dtype)

    def _sample_train(self, random: bool) -> None:
        for d, ((lo, hi), n) in enumerate(zip(self.c.ranges, self.n_train)):
            if self.cfg.train.sampling == "gauss":
                nodes, w = np.polynomial.legendre.leggauss(n)
                self.points[("train", d)] = self._t(lo + (hi - lo) * (nodes + 1) / 2)
                self.axis_weights[("train", d)] = self._t(w * n / w.sum())
            elif random:
                x = lo + (hi - lo) * torch.rand(n, generator=self.sampler, dtype=torch.float64)
                self.points[("train", d)] = x.to(device=self.device, dtype=self.dtype)
            else:
                self.points[("train", d)] = self._t(np.linspace(lo, hi, n))

    def grid_coords(self, grid: Sequence[PointSetKey]) -> list[torch.Tensor]:
        """Float64 coordinates of a grid, each shaped to broadcast as (n_1, ..., n_D, 1)."""
        return broadcast_axes([self.points[key].to(torch.float64) for key in grid])

    def part_coords(self, part: TermPart) -> list[torch.Tensor]:
        """Float64 coordinates of a term part: its grid's, or (N, 1) per axis at scattered points."""
        if part.pointwise:
            return [self.points[key].to(torch.float64)[:, None] for key in part.grid]
        return self.grid_coords(part.grid)

    def exact_coords(self, axes_points: Sequence[Any]) -> list[torch.Tensor]:
        """Broadcast float64 coordinates straight from the given points (not rounded to the
        model's dtype): for references and lifts."""
        return broadcast_axes([torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
                               for x in axes_points])

    def _prepare_all(self) -> None:
        """Coordinate-only parts of every residual on its grid (what its mode needs): the grid
        path's constants, and for CP residuals the blocks' coefficients on each axis' points."""
        self.consts: dict[int, dict[sp.Symbol, torch.Tensor]] = {}
        self.block_coefs: dict[int, list[list[list[float | torch.Tensor]]]] = {}
        for t in self.c.terms:
            for p in t.parts:
                mode = self.modes[id(p)]
                res = p.residual if mode == "grid" else p.residual.rest
                if res is not None:
                    self.consts[id(res)] = res.prepare(self.part_coords(p), self.dtype)
                for lin in self._linear_parts(p):
                    self.block_coefs[id(lin)] = self._block_coefs(p, lin)

    def _check_finite_inputs(self) -> None:
        """Refuse, before any training, sources, coefficients, condition values and references that
        are NaN or infinite on their points (log(x) on [-1, 1], 1/(x + 1) at x = -1, exp(x) beyond
        the dtype's range): ProblemError naming the term or reference."""
        problem = self.c.problem
        for t in self.c.terms:
            for p in t.parts:
                res = p.residual if self.modes[id(p)] == "grid" else p.residual.rest
                values = list(self.consts[id(res)].values()) if res is not None else []
                values += [c for lin in self._linear_parts(p) for block in self.block_coefs[id(lin)]
                           for axis in block for c in axis if isinstance(c, torch.Tensor)]
                if not all(bool(torch.isfinite(v).all()) for v in values):
                    raise ProblemError(f"term '{t.name}' ({p.label}): its sources, coefficients or values are not "
                                       f"finite in {self.cfg.train.dtype} (NaN or inf) at some of its points",
                                       file=problem.source, key=t.key)
        refs = dict(self.reference)
        refs.update({f: torch.cat([g.flatten() for g in factors]) for f, (factors, _) in self.gridfree_metrics.items()})
        for f, r in refs.items():
            if not bool(torch.isfinite(r).all()):
                raise ProblemError(f"the reference of '{f}' is not finite (NaN or inf) at some test-grid points",
                                   file=problem.source, key=f"reference.{f}")

    def _linear_parts(self, part: TermPart) -> list[LinearPart]:
        """The CP tensors the part's mode contracts: none on the grid path, else its linear terms and
        its rest's sums."""
        if self.modes[id(part)] == "grid":
            return []
        assert part.residual.linear is not None
        rest = part.residual.rest
        return [part.residual.linear] + (rest.sums if rest is not None else [])

    def _block_coefs(self, part: TermPart, lin: LinearPart) -> list[list[list[float | torch.Tensor]]]:
        """Per rank block of ``lin``, axis and summand: the coefficient on the axis' points of the
        part's grid, (n_d, 1, 1) in the model's dtype, or a number. A source block has one entry per
        axis: the summands' sum."""
        syms = part.residual.axis_symbols
        out: list[list[list[float | torch.Tensor]]] = []
        for block in lin.blocks:
            per_axis_coefs: list[list[float | torch.Tensor]] = []
            for d, summands in enumerate(block.axes):
                x = self.points[part.grid[d]].to(torch.float64)
                coefs = [s.coef for s in summands]
                if block.field is None:
                    coefs = [sum(coefs, sp.Integer(0))]
                values: list[float | torch.Tensor] = []
                for c in coefs:
                    if c.free_symbols or block.field is None:
                        v = torch.as_tensor(lower(c)({syms[d]: x}), dtype=torch.float64, device=self.device)
                        values.append(torch.broadcast_to(v, x.shape).to(self.dtype)[:, None, None])
                    else:
                        values.append(float(c))
                per_axis_coefs.append(values)
            out.append(per_axis_coefs)
        return out

    def resample(self) -> None:
        """New random training points per axis (SPINN style); coordinate terms follow."""
        self._sample_train(random=True)
        self._prepare_all()

    # ---------------------------------------------------------------- SepPGD
    def _build_factors(self, field: str, xs: list[torch.Tensor], wanted: tuple[tuple[int, tuple[int, ...]], ...]
                       ) -> dict[tuple[int, int], tuple[torch.Tensor | None, ...]]:
        Ks = [K.detach() for K in self.model[field].pseudo_ntks(xs)]
        return build_all(Ks, wanted, self.cfg.precondition.modulation)

    def rebuild_preconditioners(self, progress: Progress | None = None) -> None:
        """S_d for every preconditioned term part from the current factor networks and points."""
        start = time.perf_counter()
        # faces reuse the interior's points on their free axes: one K_d and one S_d per
        # (field, axis, point set, k), however many terms and faces share them
        terms = [t for t in self.c.terms if t.name in self.c.preconditioned]
        wanted: dict[str, list[dict[PointSetKey, set[int]]]] = {}  # field -> per axis: point set -> k values
        for t in terms:
            per = wanted.setdefault(t.parts[0].residual.derivs[0][0], [{} for _ in self.c.axes])
            for part in t.parts:
                for d, key in enumerate(part.grid):
                    if key[0] != "face":
                        k = resolve_k(self.c.preconditioned[t.name], len(self.points[key]))
                        per[d].setdefault(key, set()).add(k)
        built: dict[tuple[Any, ...], FactorPreconditioner] = {}
        for field, per in wanted.items():
            for i in range(max(len(sets) for sets in per)):  # one pseudo-NTK pass per point set and axis
                keys = [list(sets)[i] if i < len(sets) else ("face", d, "min") for d, sets in enumerate(per)]
                plan = tuple((d, tuple(sorted(per[d][keys[d]]))) for d in range(len(per)) if i < len(per[d]))
                xs = [self.points[k] for k in keys]
                tensors = None
                if self._compiled_build is not None:
                    try:
                        tensors = self._compiled_build(field, xs, plan)
                    except Exception as exc:  # a backend that cannot compile it: eager is always right
                        if progress is not None:
                            progress.note(f"torch.compile of the SepPGD rebuild failed ({type(exc).__name__}); "
                                          "continuing eager")
                        self._compiled_build = None
                if tensors is None:
                    tensors = self._build_factors(field, xs, plan)
                for (d, k), ts in tensors.items():
                    built[(field, d, keys[d], k)] = FactorPreconditioner(*ts)  # type: ignore[arg-type]
        for t in terms:
            field = t.parts[0].residual.derivs[0][0]
            for part in t.parts:
                self.factors[id(part)] = {
                    d: built[(field, d, key, resolve_k(self.c.preconditioned[t.name], len(self.points[key])))]
                    for d, key in enumerate(part.grid) if key[0] != "face"}
        self.precondition_seconds += time.perf_counter() - start

    def _part_scale(self, part_id: int) -> float:
        return 1.0 / len(self.factors[part_id]) if self.cfg.precondition.scale == "normalized" else 1.0

    # ---------------------------------------------------------------- the loss
    def _jets(self) -> dict[tuple[str, int], dict[PointSetKey, torch.Tensor]]:
        """(field, axis) -> point-set key -> jet (order+1, n, *factor shape)."""
        out: dict[tuple[str, int], dict[PointSetKey, torch.Tensor]] = {}
        for f, model in self.model.items():
            for order, keys in self.jet_plan[f]:
                # an axis with no set at this order gets one placeholder point, cut off again
                sets = [[self.points[k] for k in ks] or [self.points[("face", d, "min")]] for d, ks in enumerate(keys)]
                jets = model.all_jets([torch.cat(s) for s in sets], order)
                for d, (ks, jet) in enumerate(zip(keys, jets)):
                    split = torch.split(jet, [len(x) for x in sets[d]], dim=1)
                    out.setdefault((f, d), {}).update(zip(ks, split))
        return out

    def losses(self) -> dict[str, torch.Tensor]:
        """Weighted mean-square loss of every term at the current parameters."""
        jets = self._jets()
        cache: dict[tuple[Any, ...], torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for t in self.c.terms:
            sums: list[torch.Tensor] = []
            counts: list[torch.Tensor | int] = []
            means: list[torch.Tensor] = []
            for part in t.parts:
                s, n = self._part_sum(part, jets, cache)
                sums.append(s)
                counts.append(n)
                means.append(s / n * part.faces)  # a part of two faces: the sum of their means
            loss = torch.stack(means).sum() if t.reduction == "sum" else torch.stack(sums).sum() / sum(counts)
            out[t.name] = t.weight * loss
        return out

    def _part_sum(self, part: TermPart, jets: Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]],
                  cache: dict[tuple[Any, ...], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | int]:
        """(sum of w r^2 over the part's points, their count): with SepPGD the sum's gradient is that
        of 2 <w r, stopgrad(P)> (its value stays the true sum). Weights w: quadrature weights of
        ``sampling = "gauss"`` (mean 1), the keep-mask of data, or 1."""
        mode = self.modes[id(part)]
        factors = self.factors.get(id(part)) if self.use_preconditioner else None
        weights = [self.axis_weights.get(key) for key in part.grid] if not part.pointwise else []
        lin = part.residual.linear
        if mode == "grid-free":
            assert lin is not None
            cols = self.distinct_columns[id(lin)]
            U = self._cp_factors(part, lin, jets, distinct_axes=range(len(part.grid)))
            n_free = math.prod([u.shape[0] for u in U]) * U[0].shape[-1]
            if factors is not None:
                s = preconditioned_sum(U, weights, factors, self._part_scale(id(part)), cols)
            else:
                s = sum_of_squares(U, weights, cols)
            return s.to(self.dtype), n_free
        if mode == "fused":
            assert lin is not None
            r = self._fused_contract(part, lin, jets)
            rest = part.residual.rest
            if rest is not None:
                values = self._contractions(part, rest.derivs, jets, cache)
                values += [self._fused_contract(part, combination, jets) for combination in rest.sums]
                r = r + rest(values, self.consts[id(rest)])
        else:
            values = self._contractions(part, part.residual.derivs, jets, cache)
            r = part.residual(values, self.consts[id(part.residual)])
        mask = self.masks.get(id(part))
        if mask is not None:
            r = r * mask
            n: torch.Tensor | int = mask.sum() * r.shape[-1]
        else:
            n = r.numel()
        wr = r
        for d, w in enumerate(weights):  # quadrature weights broadcast along their axis
            if w is not None:
                wr = wr * w.reshape([-1 if i == d else 1 for i in range(len(weights))] + [1])
        s = (wr * r).sum()
        if factors is not None:
            # value: the true sum of squares; gradient: that of 2 <w r, stopgrad(P)>
            P = precondition(r.detach(), factors, self._part_scale(id(part)), part.pointwise)
            if mask is not None:
                P = P * mask
            surrogate = 2 * (wr * P).sum()
            s = s.detach() + (surrogate - surrogate.detach())  # value exactly s
        return s, n

    def _contractions(self, part: TermPart, derivs: Sequence[tuple[str, tuple[int, ...]]],
                      jets: Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]],
                      cache: dict[tuple[Any, ...], torch.Tensor]) -> list[torch.Tensor]:
        """Every field derivative on the part's grid (or at its scattered points), shared through ``cache``."""
        values = []
        for f, alpha in derivs:
            ck = (f, alpha, tuple(part.grid))
            if ck not in cache:
                mats = [jets[(f, d)][k][a] for d, (k, a) in enumerate(zip(part.grid, alpha))]
                model = self.model[f]
                cache[ck] = model.contract_points(mats) if part.pointwise else model.contract(mats)
            values.append(cache[ck])
        return values

    def _distinct_columns(self, lin: LinearPart) -> list[torch.Tensor | None]:
        """Per axis: None where the blocks' axis factors all differ, else the (rho,) index of each
        residual column among the distinct blocks' columns (``_cp_factors(distinct_axes=...)``),
        so that the Gram products run on the n_d x (distinct columns) factor."""
        widths = [1 if b.field is None else int(self.cfg.model.rank) for b in lin.blocks]
        out: list[torch.Tensor | None] = []
        for slots in self.block_slots[id(lin)]:
            if len(set(slots)) == len(slots):
                out.append(None)
                continue
            firsts = [slots.index(s) for s in range(max(slots) + 1)]  # slots are numbered by first use
            starts = list(itertools.accumulate([widths[i] for i in firsts], initial=0))
            index = [starts[s] + j for s, w in zip(slots, widths) for j in range(w)]
            out.append(torch.tensor(index, device=self.device))
        return out

    def _block_factor(self, part: TermPart, lin: LinearPart,
                      jets: Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]], i: int, d: int) -> torch.Tensor:
        """Rank block i's CP factor on axis d of the part's grid, (n_d, R or 1, C): the coefficient-
        weighted sum of the field's factor jets (its CP scale on the first axis), or for a source
        block its coefficient column."""
        block, bc = lin.blocks[i], self.block_coefs[id(lin)][i][d]
        if block.field is None:
            C = next(self.c.components[b.field] for b in lin.blocks if b.field is not None)
            return cast(torch.Tensor, bc[0]).expand(-1, 1, C)
        jet = jets[(block.field, d)][part.grid[d]]
        acc: torch.Tensor | None = None
        for summand, c in zip(block.axes[d], bc):
            term = jet[summand.order] if isinstance(c, float) and c == 1.0 else jet[summand.order] * c
            acc = term if acc is None else acc + term
        assert acc is not None
        scale = getattr(self.model[block.field], "scale", 1.0)
        return acc * scale if d == 0 and scale != 1.0 else acc

    def _cp_factors(self, part: TermPart, lin: LinearPart,
                    jets: Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]],
                    distinct_axes: Collection[int] = ()) -> list[torch.Tensor]:
        """The CP factors G_d (n_d, rho, C) of ``lin`` on the part's grid: its blocks' factors side by
        side; on ``distinct_axes`` each distinct block factor once (the columns ``distinct_columns`` indexes)."""
        out = []
        for d, slots in enumerate(self.block_slots[id(lin)]):
            keep = [self._block_factor(part, lin, jets, i, d) for i in range(len(slots))
                    if d not in distinct_axes or slots.index(slots[i]) == i]
            out.append(torch.cat(keep, dim=1) if len(keep) > 1 else keep[0])
        return out

    def _fused_contract(self, part: TermPart, lin: LinearPart,
                        jets: Mapping[tuple[str, int], Mapping[PointSetKey, torch.Tensor]]) -> torch.Tensor:
        """The CP tensor ``lin`` on the part's grid, (n_1, ..., n_D, C). Where blocks share their factor
        on an axis g (the axis with the fewest distinct factors, the last on ties), their Khatri-Rao
        products over the other axes are summed first: one matrix product of inner size (distinct
        factors on g) x R. Klein-Gordon's [F_t'', F_x, F_y] and [F_t, F_x'', F_y] share F_y: 2R
        instead of 3R; diffusion's u_xx + u_yy, [F_t, F_x'', F_y] + [F_t, F_x, F_y''], shares F_t: R."""
        all_slots = self.block_slots[id(lin)]
        D = len(part.grid)
        g = min(range(D), key=lambda d: (len(set(all_slots[d])), -d))
        slots = all_slots[g]
        if len(set(slots)) == len(slots):
            return cp_contract(self._cp_factors(part, lin, jets))
        others = [d for d in range(D) if d != g]
        prefix: dict[int, torch.Tensor] = {}
        for i, slot in enumerate(slots):
            p = self._block_factor(part, lin, jets, i, others[0])
            for d in others[1:]:
                p = (p[:, None] * self._block_factor(part, lin, jets, i, d)[None]).flatten(0, 1)
            prefix[slot] = prefix[slot] + p if slot in prefix else p
        P = torch.cat([prefix[s] for s in sorted(prefix)], dim=1)  # (prod of the other n_d, m, C)
        L = torch.cat([self._block_factor(part, lin, jets, slots.index(s), g) for s in sorted(prefix)],
                      dim=1)  # (n_g, m, C)
        sizes = [len(self.points[key]) for key in part.grid]
        C = P.shape[-1]
        if g == 0:  # (n_1, n_2 ... n_D): already the grid's layout
            out = L[..., 0] @ P[..., 0].T if C == 1 else torch.einsum("nmc,pmc->npc", L, P)
            return out.reshape(sizes + [C])
        out = P[..., 0] @ L[..., 0].T if C == 1 else torch.einsum("pmc,nmc->pnc", P, L)
        return out.reshape([sizes[d] for d in others] + [sizes[g], C]).movedim(D - 1, g)

    # ---------------------------------------------------------------- evaluation
    def _setup_test(self, ref_arrays: Mapping[str, np.ndarray]) -> None:
        sizes = test_grid_sizes(self.c, self.cfg, ref_arrays)
        self.test_axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(self.c.ranges, sizes)]
        for d, x in enumerate(self.test_axes):
            self.points[("test", d)] = self._t(x)
        # separable expression references with a CP model: metrics from Gram products, and the
        # reference on the grid only when the outputs ask for it (``test_solution``)
        self.gridfree_metrics: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = {
            f: self._target_factors(f) for f in self.c.separable_references if metric_mode(self.c, self.cfg, f) == "grid-free"}
        self.reference: dict[str, torch.Tensor] = {
            f: torch.as_tensor(a, device=self.device) for f, a in ref_arrays.items()}
        self.reference.update(self.reference_on(self.test_axes, skip=self.gridfree_metrics))
        self.metric_specs = {f: self._metric_spec(f, ref) for f, ref in self.reference.items()}
        self.metric_specs.update({f: MetricSpec() for f in self.gridfree_metrics})

    def _target_factors(self, f: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The separable reference of field f on the test axes: the target's CP factors
        (n_d, m, 1) float64 (the products' constants on the first axis) and sum(ref^2)."""
        sep = self.c.separable_references[f]
        syms = list(self.c.problem.ctx.axes.values())
        xs = [torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device) for x in self.test_axes]

        def factors(products: Products) -> list[torch.Tensor]:
            cols = [[torch.broadcast_to(torch.as_tensor(lower(g * c if d == 0 else g)({syms[d]: x}), dtype=torch.float64,
                                                        device=self.device), x.shape)
                     for d, (g, x) in enumerate(zip(gs, xs))] for c, gs in products]
            return [torch.stack([col[d] for col in cols], dim=1)[..., None] for d in range(len(xs))]

        return factors(sep.target), sum_of_squares(factors(sep.reference), [None] * len(xs))

    def reference_on(self, axes_points: Sequence[Any], kinds: Sequence[str] = ("expr", "solver"),
                     skip: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """Expression and reference-solver references (of fields not in ``skip``) on the tensor grid
        of ``axes_points``: field -> (n_1, ..., n_D, C) float64 (file references exist on their own
        grid only)."""
        problem = self.c.problem
        out: dict[str, torch.Tensor] = {}
        env = dict(zip(problem.ctx.axes.values(), self.exact_coords(axes_points)))
        params = {problem.ctx.parameters[p]: sp.Float(v, 17) for p, v in problem.parameter_values.items()}
        for f, src in problem.reference.items():
            if src.kind not in kinds or f in skip:
                continue
            if src.kind == "solver":
                fn = REFERENCE_SOLVERS[str(src.solver)][0]
                try:
                    arr = fn(problem, [np.asarray(x, dtype=np.float64) for x in axes_points], evaluate_numpy)
                except ValueError as exc:
                    raise ProblemError(f"reference solver {src.solver!r}: {exc}", file=problem.source,
                                       key=f"{src.key}.solver") from None
                out[f] = torch.as_tensor(arr, device=self.device)[..., None]
            elif src.kind == "expr":
                assert src.expr is not None
                v = lower(src.expr.xreplace(params))(env)
                shape = [len(x) for x in axes_points] + [self.c.components[f]]
                out[f] = torch.broadcast_to(torch.as_tensor(v, dtype=torch.float64, device=self.device), shape)
        return out

    def _metric_spec(self, f: str, ref: torch.Tensor) -> MetricSpec:
        """psnr for image fields, iou for occupancy (a 0/1 reference file), held-out points of keep-data."""
        problem = self.c.problem
        sources = [s for s in (problem.data.get(f), problem.reference.get(f)) if s is not None]
        spec = MetricSpec(psnr=any(s.kind == "image" for s in sources),
                          iou=problem.reference[f].kind == "file" and bool(((ref == 0) | (ref == 1)).all()))
        for t in self.c.terms:
            part = t.parts[0]
            if t.kind == "data" and part.mask is not None and part.residual.derivs[0][0] == f \
                    and list(part.mask.shape[:-1]) == list(ref.shape[:-1]):
                spec.heldout = ~torch.as_tensor(part.mask, device=self.device)
        return spec

    @torch.no_grad()
    def predict(self, axes_points: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Fields on the tensor grid of the given per-axis points: name -> (n_1, ..., n_D, C)
        (with the lift of a hard condition added)."""
        pts = [self._t(x) for x in axes_points]
        out = {f: m(pts).to(torch.float64) for f, m in self.model.items()}
        if self.c.lifts:
            env = dict(zip(self.c.problem.ctx.axes.values(), self.exact_coords(axes_points)))
            for f, g in self.c.lifts.items():
                out[f] = out[f] + torch.as_tensor(lower(g)(env), dtype=torch.float64, device=self.device)
        return out

    @torch.no_grad()
    def predict_points(self, coords: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Fields at N scattered points, coords[d] (N,) per axis: name -> (N, C). Each factor is
        evaluated at the points' own coordinates; no grid is formed."""
        pts = [self._t(x) for x in coords]
        out: dict[str, torch.Tensor] = {}
        for f, m in self.model.items():
            mats = [j[0] for j in m.all_jets(pts, 0)]
            out[f] = m.contract_points(mats).to(torch.float64)
        if self.c.lifts:
            env = {s: torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
                   for s, x in zip(self.c.problem.ctx.axes.values(), coords)}
            for f, g in self.c.lifts.items():
                lift = torch.as_tensor(lower(g)(env), dtype=torch.float64, device=self.device)
                out[f] = out[f] + lift.expand(out[f].shape[0]).unsqueeze(-1)
        return out

    def test_solution(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(fields, references) on the test grid as host arrays, (n_1, ..., n_D) for scalar
        fields and (n_1, ..., n_D, C) otherwise: what the outputs and exports write."""
        comps = self.c.components
        fields = {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in self.predict(self.test_axes).items()}
        refs = {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in self.reference.items()}
        lazy = self.reference_on(self.test_axes, skip=self.reference) if self.gridfree_metrics else {}
        refs.update({f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in lazy.items()})
        return fields, refs

    @torch.no_grad()
    def metrics(self) -> dict[str, dict[str, float]]:
        """Per field with a reference: rel_l2, mse (and psnr, iou, held-out variants) on the test grid."""
        pred = self.predict(self.test_axes) if self.reference else {}
        out = {f: field_metrics(pred[f], ref, self.metric_specs[f]) for f, ref in self.reference.items()}
        for f, (target, ref_sq) in self.gridfree_metrics.items():
            model = self.model[f]
            factors = [j[0] for j in model.all_jets([self._t(x) for x in self.test_axes], 0)]
            factors[0] = factors[0] * getattr(model, "scale", 1.0)
            err_sq = squared_error(factors, target).item()
            n = math.prod(len(x) for x in self.test_axes) * self.c.components[f]
            out[f] = {"rel_l2": math.sqrt(err_sq / ref_sq.item()) if ref_sq.item() > 0 else math.nan, "mse": err_sq / n}
        return {f: out[f] for f in self.c.problem.reference if f in out}

    # ---------------------------------------------------------------- the loop
    def _record(self, state: TrainState, it: int, stacked: torch.Tensor, progress: Progress) -> None:
        """Append the evaluation at ``it``: ``stacked`` holds the weighted term losses in term order."""
        names = [t.name for t in self.c.terms]
        vals = stacked.detach().to(torch.float64).cpu().tolist()
        lv = dict(zip(names, vals))
        lv["total"] = float(sum(vals))
        ev = Evaluation(it, state.seconds, lv, self.metrics())
        state.history.append(ev)
        if state.best is None or lv["total"] < state.best.losses["total"]:
            state.best = ev
            state.best_state = copy.deepcopy(self.model.state_dict())
        shown = {f"{k}/{f}": v for f, m in ev.metrics.items() for k, v in m.items()
                 if k in ("rel_l2", "psnr", "iou", "psnr_heldout")}
        progress.record(it, {n: lv[n] for n in names}, shown)

    def _schedule(self) -> Callable[[int], float]:
        t = self.cfg.train
        if t.schedule == "exponential":
            return lambda i: t.decay_rate ** (i / t.decay_every)
        if t.schedule == "cosine":
            return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, t.iterations) / max(t.iterations, 1)))
        return lambda i: 1.0

    def snapshot(self, state: TrainState, opts: Optimizers) -> dict[str, Any]:
        """Everything the loop needs to continue exactly from ``state.iteration``: model, optimizer
        and schedule states, the sampler's RNG, the current training points, the SepPGD factors,
        the history and the best state (copies; CPU tensors stay where they are)."""
        parts = self._part_index()
        return {
            "iteration": state.iteration, "seconds": state.seconds, "lr_scale": state.lr_scale,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "adam": copy.deepcopy(opts.adam.state_dict()), "schedule": copy.deepcopy(opts.schedule.state_dict()),
            "lbfgs": copy.deepcopy(opts.lbfgs.state_dict()), "sampler": self.sampler.get_state(),
            "points": {k: v.clone() for k, v in self.points.items() if k[0] == "train"},
            "factors": {parts[pid]: {d: (S.V.clone(), S.coef.clone(), S.eigvals.clone(), S.modulated.clone())
                                     for d, S in fs.items()} for pid, fs in self.factors.items()},
            "use_preconditioner": self.use_preconditioner,
            "history": [dataclasses.asdict(ev) for ev in state.history],
            "best": dataclasses.asdict(state.best) if state.best else None,
            "best_state": copy.deepcopy(state.best_state),
        }

    def restore(self, snap: Mapping[str, Any], state: TrainState, opts: Optimizers) -> None:
        """Put the trainer and ``state`` back to a snapshot (``rollbacks`` and ``lr_scale`` stay)."""
        self.model.load_state_dict(snap["model"])
        opts.adam.load_state_dict(snap["adam"])
        opts.schedule.load_state_dict(snap["schedule"])
        opts.lbfgs.load_state_dict(snap["lbfgs"])
        self.sampler.set_state(snap["sampler"])
        for key, x in snap["points"].items():
            self.points[key] = x.to(self.device)
        self._prepare_all()
        by_index = {v: k for k, v in self._part_index().items()}
        self.factors = {by_index[idx]: {d: FactorPreconditioner(*(x.to(self.device) for x in tensors))
                                        for d, tensors in fs.items()} for idx, fs in snap["factors"].items()}
        self.use_preconditioner = snap["use_preconditioner"]
        saved = TrainState.from_snapshot(snap)
        state.iteration, state.seconds, state.history = saved.iteration, saved.seconds, saved.history
        state.best, state.best_state = saved.best, copy.deepcopy(saved.best_state)

    def _part_index(self) -> dict[int, tuple[int, int]]:
        return {id(p): (ti, pi) for ti, t in enumerate(self.c.terms) for pi, p in enumerate(t.parts)}

    def _set_lr_scale(self, state: TrainState, opts: Optimizers) -> None:
        opts.schedule.base_lrs = [self.cfg.train.lr * state.lr_scale for _ in opts.schedule.base_lrs]
        factor = self._schedule()(opts.schedule.last_epoch)
        for group, base in zip(opts.adam.param_groups, opts.schedule.base_lrs):
            group["lr"] = base * factor

    def _check_finite(self, first_bad: torch.Tensor, state: TrainState, opts: Optimizers,
                      progress: Progress) -> bool:
        """Divergence check (a host sync: only at evaluations and checkpoints). False: all finite.
        True: rolled back to the last good snapshot with the learning rate halved. Raises
        ``Diverged`` otherwise."""
        bad = first_bad.tolist()
        hits = sorted((i, name) for i, name in zip(bad, (t.name for t in self.c.terms)) if i >= 0)
        if not hits and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return False
        it, what = hits[0] if hits else (state.iteration, "")
        message = (f"loss of term '{what}' is not finite at iteration {it}" if what
                   else f"a model parameter is not finite at iteration {it}")
        t = self.cfg.train
        good = state.last_good
        if t.on_nan == "rollback" and good is not None and state.rollbacks < MAX_ROLLBACKS:
            state.rollbacks += 1
            state.lr_scale *= 0.5
            self.restore(good, state, opts)
            self._set_lr_scale(state, opts)
            first_bad.fill_(-1)
            progress.note(f"{message}: rolled back to iteration {good['iteration']}, learning rate x {state.lr_scale:g} "
                          f"(rollback {state.rollbacks} of {MAX_ROLLBACKS})")
            return True
        raise Diverged(message, state)

    def _loss_vector(self, progress: Progress) -> torch.Tensor:
        """The weighted term losses in term order, (T,): through ``torch.compile`` when
        ``train.compile`` asks for it (falling back to eager, with a note, if compiling fails)."""
        if self._compiled is None:
            return torch.stack(list(self.losses().values()))
        try:
            return self._compiled()
        except Exception as exc:  # a backend that cannot compile this graph: eager is always right
            progress.note(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "continuing eager")
            self._compiled = None
            return torch.stack(list(self.losses().values()))

    def train(self, on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
              resume: Mapping[str, Any] | None = None) -> TrainState:
        """Adam for ``train.iterations`` steps, then ``train.lbfgs_iterations`` L-BFGS steps.

        ``on_checkpoint(snapshot)`` is called every ``train.checkpoint_every`` iterations, with
        finite values only. ``resume``: a snapshot to continue from exactly. Setting
        ``stop_requested`` (a signal handler does) ends the loop after the current iteration with
        ``state.interrupted``. Non-finite losses raise ``Diverged`` (or roll back, ``on_nan``)."""
        t = self.cfg.train
        end = t.iterations + t.lbfgs_iterations
        params = list(self.model.parameters())
        adam = make_adam(params, t.lr)
        # One L-BFGS iteration per step() so the history keeps its cadence; max_eval must allow the
        # line search its evaluations (torch defaults it to max_iter * 5 // 4 = 1).
        opts = Optimizers(adam, torch.optim.lr_scheduler.LambdaLR(adam, self._schedule()),
                          torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=26, history_size=50,
                                            line_search_fn="strong_wolfe"))
        state = TrainState()
        if resume is not None:
            try:
                self.restore(resume, state, opts)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
                raise DataError(f"the checkpoint's training state cannot be restored ({type(exc).__name__}: "
                                f"{str(exc)[:200]})") from None
        state.last_good = dict(resume) if resume is not None else self.snapshot(state, opts)
        progress = Progress(end, enabled=self.progress_enabled)
        first_bad = torch.full((len(self.c.terms),), -1, dtype=torch.long, device=self.device)
        update_every = self.cfg.precondition.update_every

        def closure() -> torch.Tensor:
            opts.lbfgs.zero_grad(set_to_none=True)
            loss = torch.stack(list(self.losses().values())).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        tick = time.perf_counter()
        while True:
            it = state.iteration
            adam_phase = it < t.iterations
            evaluate = it % t.eval_every == 0 or it == t.iterations or it == end
            if adam_phase:
                resampled = t.sampling == "random" and it > 0 and it % t.resample_every == 0
                if resampled:
                    self.resample()
                if self.use_preconditioner and (it == 0 or resampled or (update_every and it % update_every == 0)):
                    self.rebuild_preconditioners(progress)
            else:  # L-BFGS line-searches the loss it measures: plain gradients in this phase
                self.use_preconditioner = False
            if adam_phase:
                stacked = self._loss_vector(progress)
            elif evaluate:  # eager: a graph without gradients would be a second compilation
                with torch.no_grad():
                    stacked = torch.stack(list(self.losses().values()))
            if adam_phase or evaluate:
                # the first iteration at which each term went non-finite, kept on the device (no sync)
                first_bad = torch.where(~torch.isfinite(stacked.detach()) & (first_bad < 0), it, first_bad)
            if evaluate:
                state.seconds += time.perf_counter() - tick
                if self._check_finite(first_bad, state, opts, progress):
                    tick = time.perf_counter()
                    continue
                self._record(state, it, stacked, progress)
                tick = time.perf_counter()
            if it == end:
                break
            if adam_phase:
                opts.adam.zero_grad(set_to_none=True)
                stacked.sum().backward()  # type: ignore[no-untyped-call]
                opts.adam.step()
                opts.schedule.step()
            else:
                opts.lbfgs.step(closure)  # type: ignore[no-untyped-call]
            state.iteration = it + 1
            progress.tick(state.iteration)
            checkpoint = bool(t.checkpoint_every) and state.iteration % t.checkpoint_every == 0
            if checkpoint or self.stop_requested:
                state.seconds += time.perf_counter() - tick  # the snapshot carries the time so far
                if self._check_finite(first_bad, state, opts, progress):
                    tick = time.perf_counter()
                    continue
                state.last_good = self.snapshot(state, opts)
                if on_checkpoint is not None and checkpoint:
                    on_checkpoint(state.last_good)
                tick = time.perf_counter()
                if self.stop_requested:
                    state.interrupted = True
                    break
        if not state.interrupted:
            state.last_good = self.snapshot(state, opts)
        progress.close()
        return state


def make_adam(params: Sequence[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam as one fused kernel over all parameters where the device supports it (CPU, CUDA)
    instead of a loop over them: the fusion a torch.compile'd optimizer step gives, without
    compiling it."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


@dataclass
class Optimizers:
    adam: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.LambdaLR
    lbfgs: torch.optim.LBFGS


class Diverged(RunError):
    """A non-finite loss or parameter; ``state`` holds the last good snapshot (``last_good``)."""

    def __init__(self, message: str, state: TrainState) -> None:
        super().__init__(message)
        self.state = state


def history_columns(history: Sequence[Evaluation]) -> dict[str, np.ndarray]:
    """Equal-length columns: iteration, seconds, loss/<term>, <metric>/<field> (rel_l2, mse, psnr, ...)."""
    cols: dict[str, list[float]] = {"iteration": [], "seconds": []}
    for ev in history:
        cols["iteration"].append(ev.iteration)
        cols["seconds"].append(ev.seconds)
        for n, v in ev.losses.items():
            cols.setdefault(f"loss/{n}", []).append(v)
        for f, m in ev.metrics.items():
            for k, v in m.items():
                cols.setdefault(f"{k}/{f}", []).append(v)
    return {k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64) for k, v in cols.items()}


def test_grid_sizes(compiled: CompiledProblem, config: SolverConfig,
                    ref_arrays: Mapping[str, np.ndarray] | None = None) -> list[int]:
    """Points per axis of the test grid: a reference file's grid, else ``train.test_points``."""
    if ref_arrays:
        return list(next(iter(ref_arrays.values())).shape[:-1])
    return per_axis(config.train.test_points, compiled.axes)


def estimate_memory(compiled: CompiledProblem, config: SolverConfig,
                    test_sizes: Sequence[int] | None = None) -> dict[str, float]:
    """Rough peak bytes of a run: one training iteration's grid tensors kept for the backward pass
    (every field derivative, every residual operation), the contraction intermediates and the
    factor networks' activations, plus the test grid (``test_sizes``, default ``test_grid_sizes``):
    the prediction, references, errors and their VTK-ordered copies in float64, and the HDF5
    image of solution.h5, all held at once when the outputs are written."""
    bytes_per = 4 if config.train.dtype == "float32" else 8
    n_train = per_axis(config.train.points, compiled.axes)
    R, width, depth = config.model.rank, config.model.width, config.model.depth
    R = R if isinstance(R, int) else max(R)
    grid_elems, inter = 0.0, 0.0
    for t in compiled.terms:
        for part in t.parts:
            sizes = part_sizes(compiled, part, n_train)
            N = float(np.prod(sizes))
            C = max(compiled.components.values())
            mode, rho = part_mode(compiled, config, part)
            if mode == "grid-free":  # factors G_d (and float64 copies), Gram matrices
                grid_elems += 4 * rho * sum(sizes) * C + 4 * len(sizes) * rho * rho * C
                continue
            k = len(part.residual.derivs)
            grid_elems += (k + part.residual.nodes + 2) * N * C
            inter = max(inter, float(np.prod(sizes[:-1])) * R * C * k) if len(sizes) > 1 else inter
    # factor networks: ~16 jet-sized tensors per layer kept for the backward (pre-activations, the
    # activation's derivatives, Faa di Bruno and gate products): measured 11-18 at 1,024-2,048 points
    nets = sum((max(o) + 1) * (sum(n_train) + 2 * len(n_train)) * width * depth * 16
               for o in compiled.orders.values())
    # the allocator's slack and autograd's temporaries on top of what is counted, and the runtime's
    # own working memory: calibrated so the estimate stays above the peak growth bench/reliability.py
    # measures (helmholtz3d, 32^3-128^3: measured 65-237 MiB against 4-129 MiB counted)
    sizes = list(test_sizes) if test_sizes is not None else test_grid_sizes(compiled, config)
    n_test = float(np.prod(sizes))
    test = n_test * 8 * 10 * sum(compiled.components.values()) + float(np.prod(sizes[:-1])) * R * bytes_per
    total = 1.5 * (grid_elems + inter + nets) * bytes_per + test + RUNTIME_BYTES
    return {"grid_tensors": grid_elems * bytes_per, "contractions": inter * bytes_per,
            "factor_networks": nets * bytes_per, "test_grid": test, "total": total}
