"""Training: per-axis points -> factor jets -> contractions -> residuals -> losses -> Adam
(then optional L-BFGS), with periodic evaluation on the test grid.

Iteration semantics: the losses and metrics recorded at iteration i belong to the parameters
after i optimizer updates; the state kept as "best" is exactly the one whose loss was lowest.
Inside an iteration nothing synchronises with the host; values are gathered every
``eval_every`` iterations.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp
import torch

from .compiler import CompiledProblem, PointSetKey, per_axis
from .errors import ProblemError, RunError, SolverConfigError
from .lowering import lower
from .output import squeeze_components
from .progress import Progress
from .reference_solvers import REFERENCE_SOLVERS
from .seppgd import FactorPreconditioner, factor_preconditioner, precondition, resolve_k
from .separable import SeparableModel, build_model
from .solver_config import SolverConfig

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


@dataclass
class TrainState:
    history: list[Evaluation] = field(default_factory=list)
    best: Evaluation | None = None
    best_state: dict[str, torch.Tensor] | None = None


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
        for name, sizes in compiled.file_grids.items():
            for d, ((lo, hi), n) in enumerate(zip(compiled.ranges, sizes)):
                self.points[("file", name, d)] = self._t(np.linspace(lo, hi, n))
        self._sample_train(random=config.train.sampling == "random")
        # per (field, axis): the point-set keys used on that axis, in a fixed order
        self.axis_sets: dict[int, list[PointSetKey]] = {d: [] for d in range(len(compiled.axes))}
        for t in compiled.terms:
            for part in t.parts:
                for d, key in enumerate(part.grid):
                    if key not in self.axis_sets[d]:
                        self.axis_sets[d].append(key)
        self.masks = {id(p): torch.as_tensor(p.mask, device=self.device) for t in compiled.terms
                      for p in t.parts if p.mask is not None}
        self._prepare_all()
        self._setup_test(ref_arrays or {})
        self.progress_enabled = progress
        # SepPGD: factor preconditioners per term part (id) and free axis; built by rebuild_preconditioners
        self.factors: dict[int, dict[int, FactorPreconditioner]] = {}
        self.use_preconditioner = bool(compiled.preconditioned)
        self.precondition_seconds = 0.0

    # ---------------------------------------------------------------- points and grids
    def _t(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device).to(self.dtype)

    def _sample_train(self, random: bool) -> None:
        for d, ((lo, hi), n) in enumerate(zip(self.c.ranges, self.n_train)):
            if random:
                x = lo + (hi - lo) * torch.rand(n, generator=self.sampler, dtype=torch.float64)
                self.points[("train", d)] = x.to(device=self.device, dtype=self.dtype)
            else:
                self.points[("train", d)] = self._t(np.linspace(lo, hi, n))

    def grid_coords(self, grid: Sequence[PointSetKey]) -> list[torch.Tensor]:
        """Float64 coordinates of a grid, each shaped to broadcast as (n_1, ..., n_D, 1)."""
        return broadcast_axes([self.points[key].to(torch.float64) for key in grid])

    def exact_coords(self, axes_points: Sequence[Any]) -> list[torch.Tensor]:
        """Broadcast float64 coordinates straight from the given points (not rounded to the
        model's dtype): for references and lifts."""
        return broadcast_axes([torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
                               for x in axes_points])

    def _prepare_all(self) -> None:
        self.consts = {id(p): p.residual.prepare(self.grid_coords(p.grid), self.dtype)
                       for t in self.c.terms for p in t.parts}

    def resample(self) -> None:
        """New random training points per axis (SPINN style); coordinate terms follow."""
        self._sample_train(random=True)
        self._prepare_all()

    # ---------------------------------------------------------------- SepPGD
    def rebuild_preconditioners(self) -> None:
        """S_d for every preconditioned term part from the current factor networks and points."""
        start = time.perf_counter()
        pc = self.cfg.precondition
        # faces reuse the interior's points on their free axes: one K_d and one S_d per
        # (field, axis, point set, k), however many terms and faces share them
        ntk: dict[tuple[Any, ...], torch.Tensor] = {}
        built: dict[tuple[Any, ...], FactorPreconditioner] = {}
        for t in self.c.terms:
            if t.name not in self.c.preconditioned:
                continue
            field = t.parts[0].residual.derivs[0][0]
            for part in t.parts:
                free = [(d, key) for d, key in enumerate(part.grid) if key[0] != "face"]
                if any((field, d, key) not in ntk for d, key in free):
                    Ks = self.model[field].pseudo_ntks([self.points[k] for k in part.grid])
                    for d, key in free:
                        ntk.setdefault((field, d, key), Ks[d].detach())
                factors = {}
                for d, key in free:
                    K = ntk[(field, d, key)]
                    k = resolve_k(self.c.preconditioned[t.name], len(K))
                    if (field, d, key, k) not in built:
                        built[(field, d, key, k)] = factor_preconditioner(K, k, pc.modulation)
                    factors[d] = built[(field, d, key, k)]
                self.factors[id(part)] = factors
        self.precondition_seconds += time.perf_counter() - start

    def _part_scale(self, part_id: int) -> float:
        return 1.0 / len(self.factors[part_id]) if self.cfg.precondition.scale == "normalized" else 1.0

    # ---------------------------------------------------------------- the loss
    def _jets(self) -> dict[tuple[str, int], dict[PointSetKey, torch.Tensor]]:
        out: dict[tuple[str, int], dict[PointSetKey, torch.Tensor]] = {}
        sets = [[self.points[k] for k in self.axis_sets[d]] for d in range(len(self.c.axes))]
        xs = [torch.cat(s) for s in sets]
        for f, model in self.model.items():
            for d, jet in enumerate(model.all_jets(xs, max(self.c.orders[f]))):
                split = torch.split(jet, [len(x) for x in sets[d]], dim=1)
                out[(f, d)] = dict(zip(self.axis_sets[d], split))
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
                values = []
                for f, alpha in part.residual.derivs:
                    ck = (f, alpha, tuple(part.grid))
                    if ck not in cache:
                        mats = [jets[(f, d)][k][a] for d, (k, a) in enumerate(zip(part.grid, alpha))]
                        cache[ck] = self.model[f].contract(mats)
                    values.append(cache[ck])
                r = part.residual(values, self.consts[id(part)])
                mask = self.masks.get(id(part))
                if mask is not None:
                    r = r * mask
                    n: torch.Tensor | int = mask.sum() * r.shape[-1]
                else:
                    n = r.numel()
                s = (r * r).sum()
                if self.use_preconditioner and id(part) in self.factors:
                    # value: the true sum of squares; gradient: that of 2 <r, stopgrad(P)>
                    P = precondition(r.detach(), self.factors[id(part)], self._part_scale(id(part)))
                    if mask is not None:
                        P = P * mask
                    surrogate = 2 * (r * P).sum()
                    s = s.detach() + (surrogate - surrogate.detach())  # value exactly s
                sums.append(s)
                counts.append(n)
                means.append(s / n)
            loss = torch.stack(means).sum() if t.reduction == "sum" else torch.stack(sums).sum() / sum(counts)
            out[t.name] = t.weight * loss
        return out

    # ---------------------------------------------------------------- evaluation
    def _setup_test(self, ref_arrays: Mapping[str, np.ndarray]) -> None:
        sizes = per_axis(self.cfg.train.test_points, self.c.axes)
        if ref_arrays:
            sizes = list(next(iter(ref_arrays.values())).shape[:-1])
        self.test_axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(self.c.ranges, sizes)]
        for d, x in enumerate(self.test_axes):
            self.points[("test", d)] = self._t(x)
        problem = self.c.problem
        self.reference: dict[str, torch.Tensor] = {}
        env = dict(zip(problem.ctx.axes.values(), self.exact_coords(self.test_axes)))
        params = {problem.ctx.parameters[p]: sp.Float(v, 17) for p, v in problem.parameter_values.items()}
        for f, src in problem.reference.items():
            if f in ref_arrays:
                self.reference[f] = torch.as_tensor(ref_arrays[f], device=self.device)
            elif src.kind == "solver":
                fn = REFERENCE_SOLVERS[str(src.solver)][0]
                try:
                    arr = fn(problem, self.test_axes)
                except ValueError as exc:
                    raise ProblemError(f"reference solver {src.solver!r}: {exc}", file=problem.source,
                                       key=f"{src.key}.solver") from None
                self.reference[f] = torch.as_tensor(arr, device=self.device)[..., None]
            else:
                assert src.expr is not None
                v = lower(src.expr.xreplace(params))(env)
                shape = [len(x) for x in self.test_axes] + [self.c.components[f]]
                self.reference[f] = torch.broadcast_to(torch.as_tensor(v, dtype=torch.float64, device=self.device), shape)

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
        return fields, refs

    def metrics(self) -> dict[str, dict[str, float]]:
        if not self.reference:
            return {}
        pred = self.predict(self.test_axes)
        out = {}
        for f, ref in self.reference.items():
            err = pred[f] - ref
            rel = (err.norm() / ref.norm()).item() if ref.norm() > 0 else float("nan")
            out[f] = {"rel_l2": rel, "mse": (err * err).mean().item()}
        return out

    # ---------------------------------------------------------------- the loop
    def _record(self, state: TrainState, it: int, seconds: float, losses: Mapping[str, torch.Tensor],
                progress: Progress) -> None:
        names = list(losses)
        vals = torch.stack([losses[n].detach() for n in names]).to(torch.float64).cpu().tolist()
        lv = dict(zip(names, vals))
        lv["total"] = float(sum(vals))
        if not math.isfinite(lv["total"]):
            bad = [n for n in names if not math.isfinite(lv[n])]
            raise RunError(f"loss of term '{bad[0] if bad else 'total'}' is not finite at iteration {it}")
        ev = Evaluation(it, seconds, lv, self.metrics())
        state.history.append(ev)
        if state.best is None or lv["total"] < state.best.losses["total"]:
            state.best = ev
            state.best_state = copy.deepcopy(self.model.state_dict())
        shown = {f"rel_l2/{f}": m["rel_l2"] for f, m in ev.metrics.items()}
        progress.record(it, {n: lv[n] for n in names}, shown)

    def _schedule(self) -> Callable[[int], float]:
        t = self.cfg.train
        if t.schedule == "exponential":
            return lambda i: t.decay_rate ** (i / t.decay_every)
        if t.schedule == "cosine":
            return lambda i: 0.5 * (1 + math.cos(math.pi * min(i, t.iterations) / max(t.iterations, 1)))
        return lambda i: 1.0

    def train(self, on_checkpoint: Callable[[TrainState, int], None] | None = None) -> TrainState:
        t = self.cfg.train
        total_its = t.iterations + t.lbfgs_iterations
        progress = Progress(total_its, enabled=self.progress_enabled)
        state = TrainState()
        params = list(self.model.parameters())
        opt = torch.optim.Adam(params, lr=t.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._schedule())
        seconds, it = 0.0, 0
        tick = time.perf_counter()
        update_every = self.cfg.precondition.update_every
        while True:
            resampled = t.sampling == "random" and it > 0 and it % t.resample_every == 0 and it < t.iterations
            if resampled:
                self.resample()
            if self.use_preconditioner and (it == 0 or resampled or (update_every and it % update_every == 0)):
                self.rebuild_preconditioners()
            losses = self.losses()
            total = torch.stack(list(losses.values())).sum()
            if it % t.eval_every == 0 or it == t.iterations:
                seconds += time.perf_counter() - tick
                self._record(state, it, seconds, losses, progress)
                tick = time.perf_counter()
            if it == t.iterations:
                break
            opt.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            it += 1
            progress.tick(it)
            if on_checkpoint and t.checkpoint_every and it % t.checkpoint_every == 0:
                on_checkpoint(state, it)
        if t.lbfgs_iterations:
            # L-BFGS needs gradients of the loss it line-searches: no preconditioning in this phase
            self.use_preconditioner = False
            # One L-BFGS iteration per step() so the history keeps its cadence; max_eval must allow
            # the line search its evaluations (torch defaults it to max_iter * 5 // 4 = 1).
            lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=26, history_size=50,
                                      line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                lbfgs.zero_grad(set_to_none=True)
                loss = torch.stack(list(self.losses().values())).sum()
                loss.backward()  # type: ignore[no-untyped-call]
                return loss

            for k in range(t.lbfgs_iterations):
                lbfgs.step(closure)  # type: ignore[no-untyped-call]
                it += 1
                progress.tick(it)
                if it % t.eval_every == 0 or k == t.lbfgs_iterations - 1:
                    seconds += time.perf_counter() - tick
                    with torch.no_grad():
                        self._record(state, it, seconds, self.losses(), progress)
                    tick = time.perf_counter()
        progress.close()
        return state


def history_columns(history: Sequence[Evaluation]) -> dict[str, np.ndarray]:
    """Equal-length columns: iteration, seconds, loss/<term>, rel_l2/<field>, mse/<field>."""
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


def estimate_memory(compiled: CompiledProblem, config: SolverConfig) -> dict[str, float]:
    """Rough peak bytes of one training iteration: grid tensors kept for the backward pass
    (every field derivative, every residual operation), the contraction intermediates, and
    the factor networks' activations."""
    bytes_per = 4 if config.train.dtype == "float32" else 8
    n_train = per_axis(config.train.points, compiled.axes)
    R, width, depth = config.model.rank, config.model.width, config.model.depth
    R = R if isinstance(R, int) else max(R)
    grid_elems, inter = 0.0, 0.0
    for t in compiled.terms:
        for part in t.parts:
            sizes = []
            for d, key in enumerate(part.grid):
                if key[0] == "train":
                    sizes.append(n_train[d])
                elif key[0] == "face":
                    sizes.append(1)
                else:
                    sizes.append(compiled.file_grids[key[1]][d])
            N = float(np.prod(sizes))
            C = max(compiled.components.values())
            k = len(part.residual.derivs)
            grid_elems += (k + part.residual.nodes + 2) * N * C
            inter = max(inter, float(np.prod(sizes[:-1])) * R * C * k) if len(sizes) > 1 else inter
    nets = sum((max(o) + 1) * (sum(n_train) + 2 * len(n_train)) * width * depth * 6
               for o in compiled.orders.values())
    total = (grid_elems + inter + nets) * bytes_per
    return {"grid_tensors": grid_elems * bytes_per, "contractions": inter * bytes_per,
            "factor_networks": nets * bytes_per, "total": total}
