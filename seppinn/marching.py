"""Time marching (``train.windows = K``): the time axis cut into K equal windows, solved one after
another (the time-marching or sequential training of the PINN literature, e.g. jaxpi).

Window k is the problem on [t_k, t_{k+1}] whose hard initial condition is the field window k-1
ended with: u_k = L_k(x) + (t - t_k) N_k(t, x), L_0 the file's initial value and
L_k = L_{k-1} + S_{k-1}, S_{k-1}(x) = window k-1's networks at t = t_k (a frozen copy, evaluated
with its x-derivatives by ``compile.lowering.CoordinateFunction``). So the seams are continuous
exactly, and each window's residual needs nothing but the windows before it. Each window's
networks start from the last window's weights and run the whole schedule (``train.iterations``
plus the L-BFGS phase). The result is the piecewise field: ``MarchedResult``. A run folder's
model.pt holds the finished windows' weights and loop states and the current window's training
state, so an interrupted run resumes in the window it stopped in (``marching_state``), and a
finished one is read back window by window without training (``api.open_run``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp
import torch

from .api import Prepared, Result, run
from .compile.compiler import compile_problem, hard_lift
from .compile.lowering import CoordinateFunction
from .compile.plan import make_plan
from .errors import DataError, Interrupted, RunError, SeppinnError, SolverConfigError
from .io.runs import StoredRun, check_run_dir, checkpoint_payload, load_weights, write_checkpoint
from .model.separable import SeparableField
from .problem.sources import DataSource
from .problem.spec import Problem
from .train.distributed import World
from .train.evaluation import Evaluator
from .train.loop import Trainer
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


def joined_history(states: Sequence[TrainState]) -> tuple[list[Evaluation], int, float]:
    """The windows' evaluations one after another (iterations and seconds counted on from the
    windows before), and the total iterations and training seconds."""
    history: list[Evaluation] = []
    offset, seconds = 0, 0.0
    for s in states:
        history += [dataclasses.replace(ev, iteration=ev.iteration + offset, seconds=ev.seconds + seconds)
                    for ev in s.history]
        offset, seconds = offset + s.iteration, seconds + s.seconds
    return history, offset, seconds


def window_record(state: TrainState) -> dict[str, Any]:
    """What a checkpoint keeps of a finished window besides its weights: its loop state."""
    return {"history": [dataclasses.asdict(ev) for ev in state.history],
            "best": dataclasses.asdict(state.best) if state.best else None,
            "iteration": state.iteration, "seconds": state.seconds}


def chained_weights(windows: Sequence[Result]) -> dict[str, torch.Tensor]:
    """``window<k>.<name>``: the weights each window handed on (``train.outputs_from``'s)."""
    return {f"window{k}.{name}": v.detach().clone() for k, w in enumerate(windows)
            for name, v in w.model.state_dict().items()}


def marching_payload(prep: Prepared, windows: Sequence[Result], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """model.pt of a marched run: the finished windows' weights (``chained_weights``) and loop states
    (``windows``, ``window_record``), and ``training``: the unfinished window's snapshot, or None."""
    states = [w.state for w in windows] + ([TrainState.from_snapshot(current)] if current is not None else [])
    history, iteration, _ = joined_history(states)
    payload = checkpoint_payload(prep.problem, prep.config.to_toml(), chained_weights(windows), iteration,
                                 history_columns(history), current)
    payload["windows"] = [window_record(w.state) for w in windows]
    return payload


class MarchedResult(Result):
    """A time-marching run: the windows' ``Result``s (``windows``, in time order) and the piecewise
    field. ``metrics`` are on the whole test grid; the history holds each window's evaluations one
    after another (their metrics on that window's test points); model.pt holds the weights each
    window handed on (prefixed ``window<k>.``) and each window's loop state, and no training state."""

    def __init__(self, prep: Prepared, windows: list[Result], evaluator: MarchedEvaluator, wall_seconds: float) -> None:
        self.prepared, self.problem, self.config, self.windows = prep, prep.problem, prep.config, windows
        self.wall_seconds, self.time_axis = wall_seconds, evaluator.time_axis
        compiled = [w.trainer.compile_seconds for w in windows if w.trainer.compile_seconds is not None]
        self.trainer = _Windows(windows[-1].model, evaluator, sum(compiled) if compiled else None)  # type: ignore[assignment]
        self.model = windows[-1].model
        history, offset, seconds = joined_history([w.state for w in windows])
        self.state = TrainState(history=history, iteration=offset, seconds=seconds)
        self.iterations = offset
        self.metrics = evaluator.metrics()
        self.final_loss = windows[-1].final_loss
        self.metrics_at_min_loss = {"iteration": offset, **self.metrics}  # each window's chosen weights
        self.history = history_columns(history)
        self.parameters = {}
        self._final = chained_weights(windows)
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

    def _checkpoint(self, model_state: Mapping[str, torch.Tensor], iteration: int,
                    training: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return marching_payload(self.prepared, self.windows, None)


class WindowChain:
    """The windows' problems in time order: ``window()`` is the next window prepared with the initial
    value the windows before it ended with; ``hand_on(model)`` takes its field at its end."""

    def __init__(self, prep: Prepared, evaluator: MarchedEvaluator) -> None:
        self.prep, self.evaluator, self.time_axis = prep, evaluator, evaluator.time_axis
        K = evaluator.windows
        lo, hi = prep.compiled.ranges[self.time_axis]
        self.cuts = [lo + (hi - lo) * k / K for k in range(K)] + [hi]
        self.t = prep.problem.ctx.axes[prep.problem.axis_list[self.time_axis].name]
        self.lifts = {f: hard_lift(prep.problem, f)[1]  # the initial values, as the compiler lifts them
                      for f in _initial_conditions(prep.problem, self.time_axis)}
        self.space = [prep.problem.ctx.axes[a.name] for d, a in enumerate(prep.problem.axis_list) if d != self.time_axis]
        self.cfg = dataclasses.replace(prep.config, train=dataclasses.replace(
            prep.config.train, windows=1, test_points=evaluator.window_test_points()))
        self.k, self.compiled = 0, prep.compiled

    def describe(self, k: int) -> str:
        return f"{self.t} in [{self.cuts[k]:g}, {self.cuts[k + 1]:g}]"

    def window(self) -> Prepared:
        k = self.k
        problem = window_problem(self.prep.problem, self.time_axis, self.cuts[k], self.cuts[k + 1], self.lifts)
        refs = self.evaluator.window_references(k)
        self.compiled = compile_problem(problem, self.cfg, self.prep.data_arrays)
        return Prepared(problem, self.cfg, self.compiled, self.prep.data_arrays, refs, self.prep.device,
                        make_plan(self.compiled, self.cfg, ref_arrays=refs))

    def hand_on(self, model: torch.nn.Module) -> None:
        """The next window's lifts: this window's (faded or not) at its end plus its networks there."""
        k, cut = self.k, self.cuts[self.k + 1]
        slices = {f: FrozenSlice(f"{f}_window{k}", model[f], self.time_axis, cut, len(self.space))  # type: ignore[index]
                  for f in self.lifts}
        self.lifts = {f: self.compiled.lifts[f].subs(self.t, cut) + slices[f].function((0,) * len(self.space))(*self.space)
                      for f in self.lifts}
        self.k += 1


def rebuilt(window: Prepared, weights: Mapping[str, torch.Tensor], state: TrainState, where: str) -> Result:
    """A finished window read back from the checkpoint ``where`` (its weights, in their dtype, and loop state)."""
    trainer = Trainer(window.compiled, window.config, window.ref_arrays, plan=window.plan, device=window.device,
                      progress=False)
    trainer.to_dtype(next(iter(weights.values())).dtype)
    load_weights(trainer.model, {k: v.to(window.device) for k, v in weights.items()}, where)
    return Result(window, trainer, state, 0.0)


def marching_state(stored: StoredRun, windows: int, finished: bool = False) -> dict[str, Any]:
    """What ``march(resume=)`` takes from a marched run's checkpoint: ``windows``, the finished
    windows' (weights, TrainState, the checkpoint's path), and ``current``, the unfinished one's snapshot or None.
    ``finished``: every window must have finished (export). DataError when it cannot be read."""
    ckpt, where = stored.checkpoint, stored.where
    train = stored.settings.get("train")
    ran = train.get("windows", 1) if isinstance(train, dict) else 1
    if ran != windows:
        raise DataError(f"the run marched over {ran} windows (train.windows), not {windows}", file=where)
    records = ckpt.get("windows")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or len(records) > windows:
        raise DataError("the checkpoint holds no time-marching state ('windows')", file=where)
    current = ckpt.get("training")
    if finished and len(records) < windows:
        raise DataError(f"the run stopped in window {len(records) + 1} of {windows}; finish it first with "
                        f"seppinn solve PROBLEM --resume {Path(where).parent}", file=where)
    if not finished and len(records) == windows:
        raise DataError("every window of this run has finished: there is nothing to resume (solve again, e.g. "
                        "with a larger train.iterations)", file=where)
    done = []
    for k, rec in enumerate(records):
        weights = {name[len(f"window{k}."):]: v for name, v in ckpt["model"].items() if name.startswith(f"window{k}.")}
        try:
            state = TrainState(history=[Evaluation(**ev) for ev in rec["history"]],
                               best=Evaluation(**rec["best"]) if rec["best"] else None,
                               iteration=int(rec["iteration"]), seconds=float(rec["seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"the checkpoint's record of window {k + 1} is malformed ({type(exc).__name__})",
                            file=where) from None
        if not weights or not state.history:
            raise DataError(f"the checkpoint holds no weights or history for window {k + 1}", file=where)
        done.append((weights, state, where))
    return {"windows": done, "current": current}


def march(prep: Prepared, out: str | Path | None = None, *, progress: bool = True, handle_signals: bool = False,
          force: bool = False, init_from: str | Path | None = None, world: World = World(),
          resume: Mapping[str, Any] | None = None) -> MarchedResult:
    """Solve ``prep`` window after window (``train.windows``). With ``out``, model.pt holds the
    finished windows after each one and the current window's training state every
    ``train.checkpoint_every`` iterations and at an interruption (``marching_payload``); the other
    files are written when every window has finished. ``resume``: ``marching_state``'s (finished
    windows are rebuilt, not trained)."""
    start = time.perf_counter()
    time_axis = check_marching(prep.problem)
    if world.active:
        raise SolverConfigError("time marching (windows > 1) runs in one process (not under torchrun)",
                                key="train.windows")
    if out is not None:
        check_run_dir(out, prep.problem, force)
    K = prep.config.train.windows
    evaluator = MarchedEvaluator(prep, time_axis, K, prep.device)
    chain = WindowChain(prep, evaluator)
    done = list(resume["windows"]) if resume is not None else []
    windows: list[Result] = []

    def write(current: Mapping[str, Any] | None) -> None:
        if out is not None:
            write_checkpoint(Path(out) / "model.pt", marching_payload(prep, windows, current))

    for k in range(K):
        window = chain.window()
        if k < len(done):
            result = rebuilt(window, *done[k])
        else:
            if k:  # a fresh compilation: recompiling the last window's graph is slower and marks shapes dynamic
                torch._dynamo.reset()
            if progress and world.writes:
                print(f"window {k + 1}/{K}: {chain.describe(k)}", flush=True)
            try:
                result = run(window, None, progress=progress, handle_signals=handle_signals,
                             init_from=init_from if k == 0 else None,
                             init_weights=windows[-1].model.state_dict() if windows else None,
                             resume=resume["current"] if resume is not None and k == len(done) else None,
                             on_checkpoint=write)
            except Interrupted as exc:
                write(exc.result.state.last_good)  # type: ignore[attr-defined]
                raise Interrupted(f"interrupted in window {k + 1} of {K} at its iteration {exc.iteration}; "
                                  + (f"the finished windows and this one's training state are in {Path(out) / 'model.pt'}"
                                     if out is not None else "nothing was written"), exc.iteration, None) from None
            except RunError as exc:
                kept = f"; the {k} finished windows are in {Path(out) / 'model.pt'}" if out is not None and k else ""
                raise RunError(f"window {k + 1} of {K} ({chain.describe(k)}): {exc}{kept}") from None
        windows.append(result)
        evaluator.evaluators.append(result.trainer.evaluator)
        if k + 1 < K:
            chain.hand_on(result.model)
            if k >= len(done):
                write(None)
    marched = MarchedResult(prep, windows, evaluator, time.perf_counter() - start)
    if out is not None:
        marched.save(out)
    return marched
