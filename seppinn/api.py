"""The Python surface: ``load_problem``, ``solve``, ``check`` and ``Result``. The CLI is a thin
layer over these calls."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .compile.compiler import CompiledProblem, Residual, compile_problem, per_axis
from .compile.plan import Plan, make_plan, shard_axis
from .errors import DataError, Interrupted, RunError, SeppinnError, SolverConfigError
from .io import plots
from .io.data_sources import load_all
from .io.output import write_json, write_solution_h5
from .io.runs import (StoredRun, check_run_dir, checkpoint_payload, load_run, load_weights, seppinn_version,
                      write_checkpoint, write_marker)
from .problem.expressions import symbolic_budget
from .problem.problem_file import load_problem
from .problem.solver_config import SolverConfig, resolve
from .problem.spec import LearnedParameter, Problem
from .train.device import DTYPES, check_memory, pick_device, set_threads
from .train.distributed import World, communication, per_rank_memory
from .train.evaluation import Evaluator, squeeze_components
from .model.separable import SeparableModel
from .train.loop import Trainer, make_model
from .train.points import PointSets
from .train.records import Diverged, Evaluation, TrainState, history_columns

SolverSpec = str | Path | Mapping[str, Any] | None
Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass
class Prepared:
    """Everything checked and compiled, before any training or output."""

    problem: Problem
    config: SolverConfig
    compiled: CompiledProblem
    data_arrays: dict[str, np.ndarray]
    ref_arrays: dict[str, np.ndarray]
    device: torch.device
    plan: Plan


def prepare(problem: Problem | str | Path, solver: SolverSpec = None, overrides: Overrides = None, *,
            nproc: int = 1) -> Prepared:
    """Parse, validate, resolve settings, read data files and compile. Raises SeppinnError.
    ``nproc``: the ranks of a distributed run (the memory check is per rank)."""
    with symbolic_budget(f"'{problem}'" if not isinstance(problem, Problem) else f"problem '{problem.name}'"):
        if not isinstance(problem, Problem):
            problem = load_problem(problem)
        problem.validate()
    ov = list(overrides) if isinstance(overrides, (list, tuple)) else overrides
    config = resolve(problem.solver_table, problem.source, solver, ov, problem.solver)  # type: ignore[arg-type]
    data_arrays, ref_arrays = load_all(problem)
    try:
        with symbolic_budget(f"compiling '{problem.source}'"):
            compiled = compile_problem(problem, config, data_arrays)
        if config.train.windows > 1:
            from .marching import check_marching
            check_marching(problem)
        plan = make_plan(compiled, config, ref_arrays=ref_arrays)
        device = pick_device(config.train.device)
        check_memory(plan, config, device, nproc)
    except SolverConfigError as exc:  # settings that do not fit this problem; any layer may have set them
        raise exc.located("solver settings")
    return Prepared(problem, config, compiled, data_arrays, ref_arrays, device, plan)


def _derivative_name(field: str, alpha: Sequence[int], axes: Sequence[str]) -> str:
    suffix = "".join(a * n for a, n in zip(axes, alpha))
    return f"{field}_{suffix}" if suffix else field


def _rest_inputs(rest: Residual, axes: Sequence[str]) -> str:
    """' from u, u_x and u_xx + u_yy as one grid': the grids a fused residual's rest is evaluated
    from ('' for a rest of coordinates only, a non-separable source)."""
    names = [_derivative_name(f, a, axes) for f, a in rest.derivs]
    for lin in rest.sums:
        form = " + ".join((f"{c} " if c != 1 else "") + _derivative_name(str(f), a, axes) for c, f, a in lin.terms())
        names.append(f"{form} as one grid")
    if not names:
        return ""
    return " from " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def check_report(prep: Prepared, nproc: int = 1) -> str:
    """What ``seppinn check`` prints (from the plan): terms, grids, derivatives, memory estimate;
    ``nproc`` > 1: a distributed run's per-rank memory and communication per step too."""
    p, c, cfg, plan = prep.problem, prep.compiled, prep.config, prep.plan
    m = cfg.model
    n_train = per_axis(cfg.train.points, c.axes)
    lines = [
        f"problem {p.name} ({p.kind}): " + ", ".join(
            f"{a.name} in [{a.lo:g}, {a.hi:g}]" + (" (time)" if a.time else "") for a in p.axis_list)
        + "; fields " + ", ".join(f if k == 1 else f"{f} ({k} components)" for f, k in c.components.items()),
        f"model: {m.kind} rank {m.rank}, {m.body} depth {m.depth} width {m.width}, {m.activation}; "
        f"{cfg.train.dtype} on {prep.device}; " + ("torch.compile" if plan.compiles else "eager")
        + (f"; settings from the problem's solver '{p.solver}' (--solver and --set still win)" if p.solver else ""),
    ]
    lines.append("field scales: " + "; ".join(f"{f} {fs.describe()}" for f, fs in c.scales.items()))
    for cd in (cd for cd in p.conditions if cd.hard):
        assert cd.axis is not None and cd.field is not None
        x, (lo, hi) = c.axes[cd.axis], c.ranges[cd.axis]
        b = {"both": f"({x} - {lo:g})({hi:g} - {x})", "min": f"({x} - {lo:g})", "max": f"({hi:g} - {x})"}[cd.side]
        b = f"(1 - exp(-{b}/{cd.fade:g}))" if cd.fade is not None else b
        lines.append(f"hard condition {cd.name} ({cd.key}): {cd.field} = {c.lifts[cd.field]} + {b} N exactly, no loss term")
    if cfg.train.windows > 1:
        t_ax = next(a for a in p.axis_list if a.time)
        lines.append(f"time marching: {cfg.train.windows} windows of {t_ax.name} ({(t_ax.hi - t_ax.lo) / cfg.train.windows:g} "
                     f"each), solved in turn, each from the field the last one ended with; {cfg.train.iterations} + "
                     f"{cfg.train.lbfgs_steps()} iterations per window")
    if c.learned:
        def learned_text(lp: LearnedParameter) -> str:
            where = (f"in ({lp.range[0]:g}, {lp.range[1]:g})" if lp.range else "positive" if lp.positive else "free")
            return f"{lp.name} (initial {lp.initial:g}, {where}" + (f", lr {lp.lr:g})" if lp.lr else ")")
        lines.append("learned parameters: " + ", ".join(learned_text(lp) for lp in c.learned.values()))
    if any(key[0] == "train" for t in c.terms for part in t.parts for key in part.grid):
        lines.append(f"training points: {cfg.train.sampling} " + " x ".join(map(str, n_train))
                     + (f", resampled every {cfg.train.resample_every}" if cfg.train.sampling == "random" else ""))
    for t, part_plans in zip(c.terms, plan.parts):
        faces = sum(p.faces for p in t.parts)
        red = f", {t.reduction} over {faces} faces" if faces > 1 else ""
        implicit = t.kind == "condition" and not next(cd for cd in p.conditions if cd.key == t.key).value_given
        lines.append(f"term {t.name} ({t.kind}, {t.key}), weight {t.weight:g}{red}"
                     + ("; no value given: expr = 0" if implicit else ""))
        for part, pp in zip(t.parts, part_plans):
            sizes = pp.sizes
            ders = ", ".join(f"{_derivative_name(f, a, c.axes)} {tuple(a)}" for f, a in part.residual.derivs)
            where = (f"{sizes[0]} scattered points (pointwise)" if part.pointwise
                     else f"grid {' x '.join(map(str, sizes))} ({int(np.prod(sizes))} points)")
            mode, rho = pp.mode.replace("_", "-"), pp.rank
            rest = part.residual.rest
            how = f"; {mode} (CP residual, rank {rho}" + (f"; the rest on the grid{_rest_inputs(rest, c.axes)})"
                                                          if rest else ")")
            lines.append(f"  {part.label}: {where}; {ders}" + (how if mode != "grid" else ""))
    if p.reference:
        def metric_how(f: str) -> str:
            if plan.metric_modes[f] == "grid":
                return f"{f} on the grid"
            n = len(c.separable_references[f].reference)
            return f"{f} grid-free (separable reference, {n} product{'s' if n > 1 else ''})"
        modes = [metric_how(f) for f in p.reference]
        lines.append(f"metrics on the test grid {' x '.join(map(str, plan.test_sizes))}: " + ", ".join(modes))
    def seppgd_k_text(term: str, k: Any) -> str:
        ti = next(i for i, t in enumerate(c.terms) if t.name == term)
        ks = sorted({kd for pp in plan.parts[ti] for kd in pp.k if kd})
        return f"{term} (k = {k}" + (f": {', '.join(map(str, ks))}" if k == "auto" else "") + ")"

    if plan.preconditioned:
        pc = cfg.precondition
        lines.append(f"SepPGD ({pc.modulation}, scale {pc.scale}, rebuilt "
                     + (f"every {pc.update_every} iterations" if pc.update_every else "once")
                     + " and when points change): " + ", ".join(seppgd_k_text(t, k) for t, k in plan.preconditioned.items()))
    elif cfg.precondition.method == "seppgd":
        lines.append("SepPGD: no term qualifies (data terms and value conditions on one field)")
    orders = "; ".join(f"{f}: " + ", ".join(f"{a} {o}" for a, o in zip(c.axes, os)) for f, os in c.orders.items())
    lines.append(f"jet orders per axis: {orders}")
    mem = plan.memory

    def mib(b: float) -> str:
        return f"{b / 2**20:.1f} MiB"

    lines.append(f"memory per iteration (estimate): {mib(mem['total'])} (grid tensors {mib(mem['grid_tensors'])}, "
                 f"contractions {mib(mem['contractions'])}, factor networks {mib(mem['factor_networks'])}, "
                 f"test grid and outputs {mib(mem['test_grid'])})")
    if nproc > 1:
        params = sum(p.numel() for p in make_model(c, cfg, torch.device("cpu")).parameters())
        comm = communication(plan, c, cfg, params, nproc)
        lines.append(f"torchrun with {nproc} processes: split along {c.axes[shard_axis(c, cfg)]} (train.shard_axis); "
                     f"memory per rank (estimate) {mib(per_rank_memory(mem, nproc))}; sent per rank and step "
                     f"{sum(comm.values()) / 2**10:.1f} KiB (" + ", ".join(
                         f"{k} {v / 2**10:.1f}" for k, v in comm.items() if v) + ")")
    return "\n".join(lines)


class Result:
    """A finished solve: metrics, history, the trained model, and ``save``/``evaluate``."""

    def __init__(self, prep: Prepared, trainer: Trainer, state: TrainState, wall_seconds: float) -> None:
        self.prepared, self.trainer, self.state = prep, trainer, state
        self.problem, self.config = prep.problem, prep.config
        self.model = trainer.model
        self.wall_seconds = wall_seconds
        last = state.history[-1]
        self.iterations = state.iteration
        self.metrics: dict[str, dict[str, float]] = last.metrics
        self.final_loss = {k: v for k, v in last.losses.items() if k != "total"}
        best = state.best
        assert best is not None
        self.metrics_at_min_loss: dict[str, Any] = {"iteration": best.iteration, **best.metrics}
        self.history: dict[str, np.ndarray] = history_columns(state.history)
        # learned parameters: name -> {"final": .., "at_min_loss": ..} (the evaluations' values)
        self.parameters: dict[str, dict[str, float]] = {
            n: {"final": last.diagnostics[f"parameter/{n}"], "at_min_loss": best.diagnostics[f"parameter/{n}"]}
            for n in prep.compiled.learned}
        self._final = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.outputs_from = "final"
        self.use_state(prep.config.train.outputs_from)
        self.shard_axis = prep.compiled.axes[shard_axis(prep.compiled, prep.config)]  # distributed runs

    def use_state(self, which: str) -> None:
        """Point ``model``, ``evaluate*`` and the solution files ``save`` writes at the ``final``
        weights or the ``best`` ones (lowest total training loss). model.pt keeps the final state."""
        if which not in STATES:
            raise SeppinnError(f"'{which}' is not one of {', '.join(STATES)}", key="use_state")
        weights = self._final if which == "final" or self.state.best_state is None else self.state.best_state
        self.model.load_state_dict(weights)
        self.outputs_from = which

    def evaluate(self, grid: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Fields on the tensor grid of per-axis points {axis: 1-D array}: name -> (n_1, ..., n_D[, C])."""
        axes = self.prepared.compiled.axes
        missing = [a for a in axes if a not in grid]
        if missing:
            raise SeppinnError(f"no points for axis {', '.join(missing)} (axes: {', '.join(axes)})", key="evaluate")
        pred = self.trainer.evaluator.predict([np.atleast_1d(np.asarray(grid[a], dtype=np.float64)) for a in axes])
        comps = self.prepared.compiled.components
        return {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in pred.items()}

    def evaluate_points(self, points: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Fields at N scattered points {axis: (N,) coordinates}: name -> (N,) or (N, C)."""
        axes = self.prepared.compiled.axes
        missing = [a for a in axes if a not in points]
        if missing:
            raise SeppinnError(f"no coordinates for axis {', '.join(missing)} (axes: {', '.join(axes)})",
                               key="evaluate_points")
        coords = [np.atleast_1d(np.asarray(points[a], dtype=np.float64)) for a in axes]
        if len({c.shape for c in coords}) != 1 or coords[0].ndim != 1:
            raise SeppinnError("every axis needs a 1-D array of the same length", key="evaluate_points")
        pred = self.trainer.evaluator.predict_points(coords)
        comps = self.prepared.compiled.components
        return {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in pred.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "problem": self.problem.name,
            "iterations": self.iterations,
            "wall_seconds": round(self.wall_seconds, 3),  # this process (a resumed run: since the resume)
            "train_seconds": round(self.state.seconds, 3),  # training over every session, evaluations excluded
            "compile_seconds": (round(self.trainer.compile_seconds, 3)
                                if self.trainer.compile_seconds is not None else None),
            "metrics": self.metrics,
            "metrics_at_min_loss": self.metrics_at_min_loss if self.metrics else {"iteration": self.metrics_at_min_loss["iteration"]},
            "final_loss": self.final_loss,
            "outputs_from": self.outputs_from,
            "field_scales": {f: fs.scale for f, fs in self.prepared.compiled.scales.items()},
            "world_size": self.trainer.world.size, "shard_axis": self.shard_axis,
            **({"parameters": self.parameters} if self.parameters else {}),
        }

    def _checkpoint(self, model_state: Mapping[str, torch.Tensor], iteration: int,
                    training: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return checkpoint_payload(self.problem, self.config.to_toml(), model_state, iteration, self.history, training)

    def save(self, out: str | Path) -> Path:
        """Write solution.h5, summary.json, model.pt, best.pt, the plots and (image fields) <field>.png into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, self.problem.name)
        tr = self.trainer.evaluator
        fields, reference = tr.test_solution()
        attrs = {
            "problem": self.problem.text, "solver": self.config.to_toml(), "seed": self.config.train.seed,
            "outputs_from": self.outputs_from,
            "seppinn_version": seppinn_version(), "torch_version": torch.__version__,
            "world_size": self.trainer.world.size, "shard_axis": self.shard_axis,
            **{f"parameter_{n}": v["at_min_loss" if self.outputs_from == "best" else "final"]
               for n, v in self.parameters.items()},
        }
        axes = dict(zip(self.prepared.compiled.axes, tr.test_axes))
        time_axis = next((d for d, a in enumerate(self.problem.axis_list) if a.time), None)
        write_solution_h5(out / "solution.h5", axes, fields, reference, self.history, attrs, time_axis)
        write_checkpoint(out / "model.pt", self._checkpoint(self._final, self.iterations, self.state.last_good))
        plots.convergence({self.problem.name: self.history}, out / "convergence.png")
        plots.slices(axes, fields, reference, out / "slices.png", time_axis)
        for f, spec in tr.metric_specs.items():
            if spec.psnr and len(axes) == 2:
                plots.image(fields[f], out / f"{f}.png")
        if self.state.best_state is not None and self.state.best is not None:
            write_checkpoint(out / "best.pt", self._checkpoint(self.state.best_state, self.state.best.iteration))
        write_json(out / "summary.json", self.summary())
        return out


def solve(problem: Problem | str | Path, solver: SolverSpec = None, overrides: Overrides = None,
          out: str | Path | None = None, *, progress: bool = True, force: bool = False,
          init_from: str | Path | None = None) -> Result:
    """Solve a problem (a ``Problem`` or a problem file path).

    ``solver``: a preset name, a solver-file path, a dict of tables, or None (defaults).
    ``overrides``: the ``--set`` keys, as {"train.iterations": 200} or ["train.iterations=200"].
    ``out``: a folder to write the run's files into, or None to keep everything in memory;
    a folder holding another problem's run is refused unless ``force``.
    ``init_from``: a run folder whose final weights start the training (a warm start, e.g. from a
    neighbouring parameter value; its model must have the same shape).
    """
    return run(prepare(problem, solver, overrides), out, progress=progress, force=force, init_from=init_from)


def resume(problem: Problem | str | Path, run_dir: str | Path, overrides: Overrides = None,
           out: str | Path | None = None, *, progress: bool = True) -> Result:
    """Continue the run in ``run_dir`` (``seppinn solve PROBLEM --resume DIR``) with its own
    settings plus ``overrides`` (e.g. a larger ``train.iterations``); writes into ``out`` or
    back into ``run_dir``."""
    prep, snapshot = prepare_resume(problem, run_dir, overrides)
    return run(prep, run_dir if out is None else out, progress=progress, resume=snapshot, force=out is None)


def prepare_resume(problem: Problem | str | Path, run_dir: str | Path,
                   overrides: Overrides = None, *, nproc: int = 1) -> tuple[Prepared, dict[str, Any]]:
    """The problem prepared with the run's own settings (plus ``overrides``) and the training
    snapshot to continue from. The problem must be the one the run was made from."""
    stored = load_run(run_dir, problem)
    prep = prepare(stored.problem, stored.settings, overrides, nproc=nproc)
    if prep.config.train.windows > 1:
        from .marching import marching_state
        return prep, marching_state(stored, prep.config.train.windows)
    if stored.checkpoint.get("training") is None:
        raise DataError("the checkpoint holds no training state to resume from", file=stored.where)
    return prep, stored.checkpoint["training"]


@dataclass(frozen=True)
class OpenedRun:
    """A finished or interrupted run read back: the problem prepared with the run's own settings,
    its model with the checkpoint's weights (a marched run: the last window's), its ``evaluator``
    (predictions and references on any grid; a marched run's: the piecewise field), and what the
    folder held (``io.runs.StoredRun``)."""

    prepared: Prepared
    model: SeparableModel
    stored: StoredRun
    evaluator: Evaluator


STATES = {"final": "model.pt", "best": "best.pt"}  # which weights: the last, or the lowest training loss


def open_run(run_dir: str | Path, problem: Problem | str | Path | None = None,
             device: torch.device | None = None, state: str = "final") -> OpenedRun:
    """Read the run in ``run_dir`` (``seppinn export``): ``problem``, when given, must be the one it
    was made from; ``state``: the final weights (model.pt) or the lowest-loss ones (best.pt). The
    model is on ``device`` (default: CPU)."""
    if state not in STATES:
        raise SeppinnError(f"'{state}' is not one of {', '.join(STATES)}", key="--state")
    stored = load_run(run_dir, problem, STATES[state])
    prep = prepare(stored.problem, stored.settings)
    device = device or torch.device("cpu")
    if prep.config.train.windows > 1:  # the windows rebuilt in turn from their weights, none trained
        from .marching import march, marching_state
        prep = replace(prep, device=device)
        marched = march(prep, progress=False, resume=marching_state(stored, prep.config.train.windows, finished=True))
        return OpenedRun(prep, marched.model, stored, marched.trainer.evaluator)
    model = make_model(prep.compiled, prep.config, device)
    load_weights(model, stored.checkpoint["model"], stored.where)
    points = PointSets(prep.compiled, prep.config, device, DTYPES[prep.config.train.dtype])
    return OpenedRun(prep, model, stored, Evaluator(prep.compiled, prep.plan, model, points, prep.ref_arrays))


def run(prep: Prepared, out: str | Path | None = None, *, progress: bool = True,
        resume: Mapping[str, Any] | None = None, handle_signals: bool = False, force: bool = False,
        init_from: str | Path | None = None, world: World = World(),
        init_weights: Mapping[str, torch.Tensor] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> Result:
    """Train a prepared problem; write the run's files into ``out`` unless it is None.

    Every ``train.checkpoint_every`` iterations ``out/model.pt`` is replaced (atomically) by a
    checkpoint of the whole training state. ``resume``: a snapshot from ``prepare_resume``.
    ``handle_signals``: SIGINT/SIGTERM finish the current iteration, write the checkpoint and the
    outputs so far, and raise ``Interrupted``. A non-finite loss raises ``RunError`` after
    writing the outputs of the last good checkpoint (``train.on_nan = "rollback"`` retries).
    ``world``: this process' rank in a distributed run (``train.distributed.start``); only rank 0 writes.
    ``init_weights``: a state dict of this model's shape to start from. ``on_checkpoint``: takes
    each checkpoint's snapshot instead of ``out/model.pt`` (time marching writes its own).
    ``train.windows`` > 1: time marching (``marching.march``; ``resume`` from ``prepare_resume``)."""
    if prep.config.train.windows > 1:
        from .marching import march
        return march(prep, out, progress=progress, handle_signals=handle_signals, force=force,
                     init_from=init_from, world=world, resume=resume)
    start = time.perf_counter()
    out = out if world.writes else None

    def setup() -> Trainer:
        if out is not None:
            check_run_dir(out, prep.problem, force)
        set_threads(prep.config.train.threads)
        trainer = Trainer(prep.compiled, prep.config, prep.ref_arrays, plan=prep.plan, device=prep.device,
                          progress=progress, world=world)
        if init_from is not None:  # a warm start: another run's final weights, any problem of the same shape
            stored = load_run(init_from)
            load_weights(trainer.model, {k: v.to(prep.device) for k, v in stored.checkpoint["model"].items()},
                         stored.where)
        if init_weights is not None:
            trainer.model.load_state_dict(init_weights)
        return trainer

    trainer = world.agree(setup)  # one rank's failure stops every rank

    def write_snapshot(snap: dict[str, Any]) -> None:
        if on_checkpoint is not None:
            on_checkpoint(snap)
        elif out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            history = history_columns([Evaluation(**ev) for ev in snap["history"]])
            write_checkpoint(Path(out) / "model.pt", checkpoint_payload(prep.problem, prep.config.to_toml(), snap["model"],
                                                                        snap["iteration"], history, snap))

    with _stop_on_signals(trainer, handle_signals):
        try:
            state = trainer.train(write_snapshot, resume)
        except DataError as exc:  # a resumed training state that does not fit
            raise exc.located(str(Path(out) / "model.pt") if out is not None else "<checkpoint>") from None
        except Diverged as exc:
            good = exc.state.last_good
            where = ""
            if out is not None and good is not None and good["history"]:
                trainer.model.load_state_dict(good["model"])
                Result(prep, trainer, TrainState.from_snapshot(good), time.perf_counter() - start).save(out)
                where = (f"; the last good state (iteration {good['iteration']}) and its outputs are in {out} "
                         f"(continue with --resume {out} and a smaller train.lr"
                         + (", or set train.on_nan = \"rollback\")" if prep.config.train.on_nan == "stop" else ")"))
            raise RunError(f"{exc}{where}") from None
    result = Result(prep, trainer, state, time.perf_counter() - start)
    if out is not None:
        result.save(out)
    if state.interrupted:
        raise Interrupted(f"interrupted at iteration {state.iteration}"
                          + (f"; checkpoint and outputs so far written to {out}" if out is not None else ""),
                          state.iteration, result)
    return result


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, enabled: bool) -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to stop after the current iteration (a second one stops at
    once; in a distributed run only after 2 s, as torchrun forwards the Ctrl-C a rank also gets)."""
    if not enabled:
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    first: list[float] = []

    def handler(signum: int, frame: object) -> None:
        if trainer.stop_requested and first and not (trainer.world.active and time.monotonic() - first[0] < 2.0):
            raise KeyboardInterrupt
        first.append(time.monotonic())
        trainer.stop_requested = True

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
