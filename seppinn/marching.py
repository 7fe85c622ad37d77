"""Time marching (``train.windows = K``): the time axis cut into K equal windows, solved one after
another (the time-marching or sequential training of the PINN literature, e.g. jaxpi).

Window k is the problem on [t_k, t_{k+1}] whose hard initial condition is the field window k-1
ended with: u_k = L_k(x) + (t - t_k) N_k(t, x), L_0 the file's initial value and
L_k = L_{k-1} + S_{k-1}, S_{k-1}(x) = window k-1's networks at t = t_k (a frozen copy, evaluated
with its x-derivatives by ``compile.lowering.CoordinateFunction``). So the seams are continuous
exactly, and each window's residual needs nothing but the windows before it. Each window's
networks start from the last window's weights and run the whole schedule (``train.iterations``
plus the L-BFGS phase). The result is the piecewise field: ``MarchedResult``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp
import torch

from .api import Prepared, Result, run
from .compile.compiler import compile_problem, hard_lift
from .compile.lowering import CoordinateFunction
from .compile.plan import make_plan
from .errors import Interrupted, RunError, SeppinnError, SolverConfigError
from .io.runs import check_run_dir
from .model.separable import SeparableField
from .problem.sources import DataSource
from .problem.spec import Problem
from .train.distributed import World
from .train.evaluation import Evaluator
from .train.points import PointSets
from .train.records import Evaluation, TrainState, history_columns


class FrozenSlice:
    """S(x..) = a field's networks at t = ``t_end`` (a frozen copy), as sympy functions of the other
    axes: ``function(alpha)`` is d^alpha S (alpha: derivative orders along those axes)."""

    def __init__(self, name: str, field: SeparableField, time_axis: int, t_end: float, n_space: int) -> None:
        self.name, self.time_axis, self.t_end, self.n_space = name, time_axis, t_end, n_space
        self.field = copy.deepcopy(field).requires_grad_(False)
        self.classes: dict[tuple[int, ...], type[CoordinateFunction]] = {}

    def function(self, alpha: tuple[int, ...]) -> type[CoordinateFunction]:
        if alpha not in self.classes:
            owner = self

            def fdiff(expr: CoordinateFunction, argindex: int = 1) -> sp.Expr:
                higher = list(alpha)
                higher[argindex - 1] += 1
                return owner.function(tuple(higher))(*expr.args)

            suffix = "".join(f"_d{i}{n}" for i, n in enumerate(alpha) if n)
            self.classes[alpha] = type(f"{self.name}{suffix}", (CoordinateFunction,), {
                "nargs": self.n_space, "fdiff": fdiff,
                "torch_fn": staticmethod(lambda *args: owner.evaluate(alpha, args))})
        return self.classes[alpha]

    @torch.no_grad()
    def evaluate(self, alpha: tuple[int, ...], args: Sequence[torch.Tensor]) -> torch.Tensor:
        """d^alpha S at broadcastable coordinate tensors ``args`` (one per axis but time), in their dtype."""
        shape = torch.broadcast_shapes(*(a.shape for a in args))  # type: ignore[no-untyped-call]
        dtype = next(self.field.parameters()).dtype
        flat = [torch.broadcast_to(a, shape).reshape(-1).to(dtype) for a in args]
        points = flat[:self.time_axis] + [torch.full_like(flat[0], self.t_end)] + flat[self.time_axis:]
        orders = list(alpha[:self.time_axis]) + [0] + list(alpha[self.time_axis:])
        jets = self.field.all_jets(points, max(orders))
        values = self.field.contract_points([j[n] for j, n in zip(jets, orders)])[:, 0]
        return values.reshape(shape).to(args[0].dtype)


def _initial_conditions(problem: Problem, time_axis: int) -> dict[str, int]:
    """Field -> index of its hard condition on t = min; SolverConfigError where marching cannot apply."""
    def refuse(why: str) -> SolverConfigError:
        return SolverConfigError(f"time marching (windows > 1) {why}", key="train.windows")

    out = {}
    for i, c in enumerate(problem.conditions):
        if any(f.axis == time_axis for f in c.faces):
            if not (c.hard and c.axis == time_axis and c.side == "min"):
                raise refuse(f"needs the only condition on the time axis to be a hard initial condition; "
                             f"'{c.name}' ({c.key}) is not one")
            assert c.field is not None
            out[c.field] = i
    missing = [f for f in problem.components if f not in out]
    if missing:
        raise refuse(f"needs a hard initial condition (enforce = \"hard\" on t = min) for every field; "
                     f"'{missing[0]}' has none")
    if any(n > 1 for n in problem.components.values()):
        raise refuse("takes scalar fields only")
    if problem.learned or problem.data:
        raise refuse("cannot take " + ("learned parameters" if problem.learned else "data terms")
                     + " (every window would need them)")
    return out


def check_marching(problem: Problem) -> int:
    """The time axis of a problem marching can solve; SolverConfigError naming what is in the way."""
    times = [d for d, a in enumerate(problem.axis_list) if a.time]
    if not times:
        raise SolverConfigError("time marching (windows > 1) needs a time axis (time = true)", key="train.windows")
    _initial_conditions(problem, times[0])
    return times[0]


def window_problem(problem: Problem, time_axis: int, lo: float, hi: float, lifts: dict[str, sp.Expr]) -> Problem:
    """``problem`` on lo <= t <= hi with initial values ``lifts`` (field -> expression of the other
    axes) and a reference given as arrays (the whole run's, restricted to the window)."""
    out = copy.copy(problem)
    out.axis_list = [dataclasses.replace(a, lo=lo, hi=hi) if d == time_axis else a
                     for d, a in enumerate(problem.axis_list)]
    ics = _initial_conditions(problem, time_axis)
    out.conditions = list(problem.conditions)
    for f, i in ics.items():
        u = problem.ctx.fields[f]
        out.conditions[i] = dataclasses.replace(problem.conditions[i], value=lifts[f], residual=u - lifts[f],
                                                fade=problem.conditions[i].fade if lo == problem.axis_list[time_axis].lo
                                                else None)
    out.reference = {f: DataSource(f, "file", src.key) for f, src in problem.reference.items()}
    return out


class MarchedEvaluator(Evaluator):
    """The whole run's test grid and references; predictions from the window that holds each time."""

    def __init__(self, prep: Prepared, time_axis: int, windows: int, device: torch.device) -> None:
        sizes = list(prep.plan.test_sizes)
        n = sizes[time_axis]
        per = max(1, math.ceil((n - 1) / windows))  # test-time intervals per window
        if prep.ref_arrays and (n - 1) % windows:
            raise SolverConfigError(f"the reference file's {n} times do not split into {windows} equal windows; "
                                    f"choose windows dividing {n - 1}", key="train.windows")
        sizes[time_axis] = windows * per + 1
        cfg = dataclasses.replace(prep.config, train=dataclasses.replace(
            prep.config.train, test_points=dict(zip(prep.compiled.axes, sizes))))
        plan = dataclasses.replace(make_plan(prep.compiled, cfg, ref_arrays=prep.ref_arrays), metric_modes={})
        self.time_axis, self.per, self.windows = time_axis, per, windows
        self.evaluators: list[Evaluator] = []  # a finished window's evaluator, in time order
        points = PointSets(prep.compiled, cfg, device, torch.float64)
        super().__init__(prep.compiled, plan, torch.nn.Module(), points, prep.ref_arrays)  # type: ignore[arg-type]
        self.check_finite()

    def window_rows(self, k: int) -> slice:
        return slice(k * self.per, (k + 1) * self.per + 1)

    def window_references(self, k: int) -> dict[str, np.ndarray]:
        where = (slice(None),) * self.time_axis + (self.window_rows(k),)
        return {f: r[where].cpu().numpy() for f, r in self.reference.items()}

    def window_test_points(self) -> dict[str, int]:
        sizes = [len(x) for x in self.test_axes]
        sizes[self.time_axis] = self.per + 1
        return dict(zip(self.c.axes, sizes))

    def _which(self, t: np.ndarray) -> np.ndarray:
        lo, hi = self.c.ranges[self.time_axis]
        k = np.floor((np.asarray(t, dtype=np.float64) - lo) / (hi - lo) * self.windows)
        return np.clip(k, 0, len(self.evaluators) - 1).astype(np.int64)

    @torch.no_grad()
    def predict(self, axes_points: Sequence[Any]) -> dict[str, torch.Tensor]:
        t = np.atleast_1d(np.asarray(axes_points[self.time_axis], dtype=np.float64))
        which = self._which(t)
        out: dict[str, torch.Tensor] = {}
        for k in np.unique(which):
            rows = np.flatnonzero(which == k)
            pts = list(axes_points)
            pts[self.time_axis] = t[rows]
            idx = torch.as_tensor(rows, device=self.device)
            for f, v in self.evaluators[k].predict(pts).items():
                if f not in out:
                    shape = list(v.shape)
                    shape[self.time_axis] = len(t)
                    out[f] = torch.empty(shape, dtype=v.dtype, device=v.device)
                out[f].index_copy_(self.time_axis, idx, v)
        return out

    @torch.no_grad()
    def predict_points(self, coords: Sequence[Any]) -> dict[str, torch.Tensor]:
        which = self._which(np.asarray(coords[self.time_axis], dtype=np.float64))
        out: dict[str, torch.Tensor] = {}
        for k in np.unique(which):
            rows = np.flatnonzero(which == k)
            for f, v in self.evaluators[k].predict_points([np.asarray(c)[rows] for c in coords]).items():
                if f not in out:
                    out[f] = torch.empty((len(which), *v.shape[1:]), dtype=v.dtype, device=v.device)
                out[f][torch.as_tensor(rows, device=self.device)] = v
        return out


@dataclasses.dataclass
class _Windows:
    """What ``Result`` reads from its trainer, for a marched run."""

    model: torch.nn.Module
    evaluator: MarchedEvaluator
    compile_seconds: float | None
    world: World = World()


class MarchedResult(Result):
    """A time-marching run: the windows' ``Result``s (``windows``, in time order) and the piecewise
    field. ``metrics`` are on the whole test grid; the history holds each window's evaluations one
    after another (their metrics on that window's test points); model.pt holds every window's
    weights (prefixed ``window<k>.``) and no training state."""

    def __init__(self, prep: Prepared, windows: list[Result], evaluator: MarchedEvaluator, wall_seconds: float) -> None:
        self.prepared, self.problem, self.config, self.windows = prep, prep.problem, prep.config, windows
        self.wall_seconds, self.time_axis = wall_seconds, evaluator.time_axis
        compiled = [w.trainer.compile_seconds for w in windows if w.trainer.compile_seconds is not None]
        self.trainer = _Windows(windows[-1].model, evaluator, sum(compiled) if compiled else None)  # type: ignore[assignment]
        self.model = windows[-1].model
        history: list[Evaluation] = []
        offset, seconds = 0, 0.0
        for w in windows:
            history += [dataclasses.replace(ev, iteration=ev.iteration + offset, seconds=ev.seconds + seconds)
                        for ev in w.state.history]
            offset, seconds = offset + w.iterations, seconds + w.state.seconds
        self.state = TrainState(history=history, iteration=offset, seconds=seconds)
        self.iterations = offset
        self.metrics = evaluator.metrics()
        self.final_loss = windows[-1].final_loss
        self.metrics_at_min_loss = {"iteration": offset, **self.metrics}  # each window's chosen weights
        self.history = history_columns(history)
        self.parameters = {}
        self._final = {f"window{k}.{name}": v for k, w in enumerate(windows) for name, v in w._final.items()}
        self.outputs_from = prep.config.train.outputs_from
        self.shard_axis = windows[0].shard_axis

    def use_state(self, which: str) -> None:
        if which != self.outputs_from:
            raise SeppinnError(f"a time-marching run's windows are chained by the weights each started the next "
                               f"one with (train.outputs_from = \"{self.outputs_from}\")", key="use_state")

    def summary(self) -> dict[str, Any]:
        ranges = [w.prepared.compiled.ranges[self.time_axis] for w in self.windows]
        return {**super().summary(), "windows": [
            {"range": list(r), "iterations": w.iterations, "train_seconds": round(w.state.seconds, 3),
             "metrics": w.metrics, "final_loss": w.final_loss} for r, w in zip(ranges, self.windows)]}


def march(prep: Prepared, out: str | Path | None = None, *, progress: bool = True, handle_signals: bool = False,
          force: bool = False, init_from: str | Path | None = None, world: World = World()) -> MarchedResult:
    """Solve ``prep`` window after window (``train.windows``); write the run's files into ``out``
    once every window has finished (an interrupted or failed marching run writes nothing)."""
    start = time.perf_counter()
    time_axis = check_marching(prep.problem)
    if world.active:
        raise SolverConfigError("time marching (windows > 1) runs in one process (not under torchrun)",
                                key="train.windows")
    if out is not None:
        check_run_dir(out, prep.problem, force)
    K = prep.config.train.windows
    evaluator = MarchedEvaluator(prep, time_axis, K, prep.device)
    lo, hi = prep.compiled.ranges[time_axis]
    cuts = [lo + (hi - lo) * k / K for k in range(K)] + [hi]
    ics = _initial_conditions(prep.problem, time_axis)
    t = prep.problem.axis_list[time_axis].name
    lifts = {f: hard_lift(prep.problem, f)[1] for f in ics}  # the initial values, as the compiler lifts them
    space = [prep.problem.ctx.axes[a.name] for d, a in enumerate(prep.problem.axis_list) if d != time_axis]
    cfg = dataclasses.replace(prep.config, train=dataclasses.replace(
        prep.config.train, windows=1, test_points=evaluator.window_test_points()))
    windows: list[Result] = []
    for k in range(K):
        problem = window_problem(prep.problem, time_axis, cuts[k], cuts[k + 1], lifts)
        refs = evaluator.window_references(k)
        compiled = compile_problem(problem, cfg, prep.data_arrays)
        window = Prepared(problem, cfg, compiled, prep.data_arrays, refs, prep.device,
                          make_plan(compiled, cfg, ref_arrays=refs))
        if k:  # a fresh compilation: recompiling the last window's graph is slower and marks shapes dynamic
            torch._dynamo.reset()
        if progress and world.writes:
            print(f"window {k + 1}/{K}: {t} in [{cuts[k]:g}, {cuts[k + 1]:g}]", flush=True)
        try:
            result = run(window, None, progress=progress, handle_signals=handle_signals,
                         init_from=init_from if k == 0 else None,
                         init_weights=windows[-1].model.state_dict() if windows else None)
        except Interrupted as exc:
            raise Interrupted(f"interrupted in window {k + 1} of {K}; a time-marching run writes its outputs "
                              "when every window has finished, so nothing was written", exc.iteration, None) from None
        except RunError as exc:
            raise RunError(f"window {k + 1} of {K} ({t} in [{cuts[k]:g}, {cuts[k + 1]:g}]): {exc}") from None
        windows.append(result)
        evaluator.evaluators.append(result.trainer.evaluator)
        if k + 1 < K:
            slices = {f: FrozenSlice(f"{f}_window{k}", result.model[f], time_axis, cuts[k + 1], len(space))
                      for f in lifts}
            t_sym = prep.problem.ctx.axes[t]  # the field window k ended with: its lift (faded or not) + networks
            lifts = {f: compiled.lifts[f].subs(t_sym, cuts[k + 1]) + slices[f].function((0,) * len(space))(*space)
                     for f in lifts}
    marched = MarchedResult(prep, windows, evaluator, time.perf_counter() - start)
    if out is not None:
        marched.save(out)
    return marched
