"""The Python surface: ``load_problem``, ``solve``, ``check`` and ``Result``. The CLI is a thin
layer over these calls."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import plots, seppgd
from .compiler import CompiledProblem, compile_problem, per_axis
from .data_sources import load_all
from .errors import SolverConfigError
from .output import squeeze_components, write_json, write_solution_h5, write_torch
from .problem import Problem
from .problem_file import load_problem
from .solver_config import SolverConfig, resolve
from .training import Trainer, TrainState, estimate_memory, history_columns, pick_device

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


def prepare(problem: Problem | str | Path, solver: SolverSpec = None, overrides: Overrides = None) -> Prepared:
    """Parse, validate, resolve settings, read data files and compile. Raises SeppinnError."""
    if not isinstance(problem, Problem):
        problem = load_problem(problem)
    problem.validate()
    ov = list(overrides) if isinstance(overrides, (list, tuple)) else overrides
    config = resolve(problem.solver_table, problem.source, solver, ov)  # type: ignore[arg-type]
    data_arrays, ref_arrays = load_all(problem)
    try:
        compiled = compile_problem(problem, config, data_arrays)
        compiled.preconditioned = seppgd.plan(compiled, config)
        device = pick_device(config.train.device)
    except SolverConfigError as exc:  # settings that do not fit this problem; any layer may have set them
        raise exc.located("solver settings")
    return Prepared(problem, config, compiled, data_arrays, ref_arrays, device)


def _derivative_name(field: str, alpha: Sequence[int], axes: Sequence[str]) -> str:
    suffix = "".join(a * n for a, n in zip(axes, alpha))
    return f"{field}_{suffix}" if suffix else field


def check_report(prep: Prepared) -> str:
    """What ``seppinn check`` prints: terms, grids, derivatives, memory estimate."""
    p, c, cfg = prep.problem, prep.compiled, prep.config
    m = cfg.model
    n_train = per_axis(cfg.train.points, c.axes)
    lines = [
        f"problem {p.name} ({p.kind}): " + ", ".join(
            f"{a.name} in [{a.lo:g}, {a.hi:g}]" + (" (time)" if a.time else "") for a in p.axis_list)
        + "; fields " + ", ".join(f if k == 1 else f"{f} ({k} components)" for f, k in c.components.items()),
        f"model: {m.kind} rank {m.rank}, {m.body} depth {m.depth} width {m.width}, {m.activation}; "
        f"{cfg.train.dtype} on {prep.device}",
        f"training points: {cfg.train.sampling} " + " x ".join(map(str, n_train))
        + (f", resampled every {cfg.train.resample_every}" if cfg.train.sampling == "random" else ""),
    ]
    for t in c.terms:
        red = f", {t.reduction} over {len(t.parts)} faces" if len(t.parts) > 1 else ""
        lines.append(f"term {t.name} ({t.kind}, {t.key}), weight {t.weight:g}{red}")
        for part in t.parts:
            sizes = []
            for d, key in enumerate(part.grid):
                sizes.append(n_train[d] if key[0] == "train" else 1 if key[0] == "face"
                             else c.file_grids[key[1]][d])
            ders = ", ".join(f"{_derivative_name(f, a, c.axes)} {tuple(a)}" for f, a in part.residual.derivs)
            lines.append(f"  {part.label}: grid {' x '.join(map(str, sizes))} ({int(np.prod(sizes))} points); {ders}")
    if c.preconditioned:
        pc = cfg.precondition
        lines.append(f"SepPGD ({pc.modulation}, scale {pc.scale}, rebuilt "
                     + (f"every {pc.update_every} iterations" if pc.update_every else "once")
                     + " and when points change): " + ", ".join(f"{t} (k = {k})" for t, k in c.preconditioned.items()))
    elif cfg.precondition.method == "seppgd":
        lines.append("SepPGD: no term qualifies (data terms and value conditions on one field)")
    orders = "; ".join(f"{f}: " + ", ".join(f"{a} {o}" for a, o in zip(c.axes, os)) for f, os in c.orders.items())
    lines.append(f"jet orders per axis: {orders}")
    mem = estimate_memory(c, cfg)

    def mib(b: float) -> str:
        return f"{b / 2**20:.1f} MiB"

    lines.append(f"memory per iteration (estimate): {mib(mem['total'])} (grid tensors {mib(mem['grid_tensors'])}, "
                 f"contractions {mib(mem['contractions'])}, factor networks {mib(mem['factor_networks'])})")
    return "\n".join(lines)


class Result:
    """A finished solve: metrics, history, the trained model, and ``save``/``evaluate``."""

    def __init__(self, prep: Prepared, trainer: Trainer, state: TrainState, wall_seconds: float) -> None:
        self.prepared, self.trainer, self.state = prep, trainer, state
        self.problem, self.config = prep.problem, prep.config
        self.model = trainer.model
        self.wall_seconds = wall_seconds
        last = state.history[-1]
        self.iterations = last.iteration
        self.metrics: dict[str, dict[str, float]] = last.metrics
        self.final_loss = {k: v for k, v in last.losses.items() if k != "total"}
        best = state.best
        assert best is not None
        self.metrics_at_min_loss: dict[str, Any] = {"iteration": best.iteration, **best.metrics}
        self.history: dict[str, np.ndarray] = history_columns(state.history)

    def evaluate(self, grid: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Fields on the tensor grid of per-axis points {axis: 1-D array}: name -> (n_1, ..., n_D[, C])."""
        axes = self.prepared.compiled.axes
        missing = [a for a in axes if a not in grid]
        if missing:
            raise ValueError(f"evaluate: no points for axis {', '.join(missing)} (axes: {', '.join(axes)})")
        pred = self.trainer.predict([np.atleast_1d(np.asarray(grid[a], dtype=np.float64)) for a in axes])
        comps = self.prepared.compiled.components
        return {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in pred.items()}

    def evaluate_points(self, points: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Fields at N scattered points {axis: (N,) coordinates}: name -> (N,) or (N, C)."""
        axes = self.prepared.compiled.axes
        missing = [a for a in axes if a not in points]
        if missing:
            raise ValueError(f"evaluate_points: no coordinates for axis {', '.join(missing)} (axes: {', '.join(axes)})")
        coords = [np.atleast_1d(np.asarray(points[a], dtype=np.float64)) for a in axes]
        if len({c.shape for c in coords}) != 1 or coords[0].ndim != 1:
            raise ValueError("evaluate_points: every axis needs a 1-D array of the same length")
        pred = self.trainer.predict_points(coords)
        comps = self.prepared.compiled.components
        return {f: squeeze_components(v.cpu().numpy(), comps[f]) for f, v in pred.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "problem": self.problem.name,
            "iterations": self.iterations,
            "wall_seconds": round(self.wall_seconds, 3),
            "metrics": self.metrics,
            "metrics_at_min_loss": self.metrics_at_min_loss if self.metrics else {"iteration": self.metrics_at_min_loss["iteration"]},
            "final_loss": self.final_loss,
        }

    def _checkpoint(self, model_state: Mapping[str, torch.Tensor], iteration: int) -> dict[str, Any]:
        import seppinn

        return {
            "format": "seppinn-checkpoint", "seppinn_version": seppinn.__version__,
            "iteration": iteration, "model": dict(model_state),
            "problem": self.problem.text, "problem_file": str(Path(self.problem.source).resolve())
            if self.problem.source != "<python>" else "", "solver": self.config.to_toml(),
            "history": self.history,
        }

    def save(self, out: str | Path) -> Path:
        """Write solution.h5, summary.json, model.pt and best.pt into ``out``."""
        import seppinn

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tr = self.trainer
        fields, reference = tr.test_solution()
        attrs = {
            "problem": self.problem.text, "solver": self.config.to_toml(), "seed": self.config.train.seed,
            "seppinn_version": seppinn.__version__, "torch_version": torch.__version__,
        }
        axes = dict(zip(self.prepared.compiled.axes, tr.test_axes))
        time_axis = next((d for d, a in enumerate(self.problem.axis_list) if a.time), None)
        write_solution_h5(out / "solution.h5", axes, fields, reference, self.history, attrs, time_axis)
        write_torch(out / "model.pt", self._checkpoint(self.model.state_dict(), self.iterations))
        plots.convergence({self.problem.name: self.history}, out / "convergence.png")
        plots.slices(axes, fields, reference, out / "slices.png", time_axis)
        if self.state.best_state is not None and self.state.best is not None:
            write_torch(out / "best.pt", self._checkpoint(self.state.best_state, self.state.best.iteration))
        write_json(out / "summary.json", self.summary())
        return out


def solve(problem: Problem | str | Path, solver: SolverSpec = None, overrides: Overrides = None,
          out: str | Path | None = None, *, progress: bool = True) -> Result:
    """Solve a problem (a ``Problem`` or a problem file path).

    ``solver``: a preset name, a solver-file path, a dict of tables, or None (defaults).
    ``overrides``: the ``--set`` keys, as {"train.iterations": 200} or ["train.iterations=200"].
    ``out``: a folder to write the run's files into, or None to keep everything in memory.
    """
    return run(prepare(problem, solver, overrides), out, progress=progress)


def run(prep: Prepared, out: str | Path | None = None, *, progress: bool = True) -> Result:
    """Train a prepared problem; write the run's files into ``out`` unless it is None."""
    start = time.perf_counter()
    trainer = Trainer(prep.compiled, prep.config, prep.ref_arrays, device=prep.device, progress=progress)
    state = trainer.train()
    result = Result(prep, trainer, state, time.perf_counter() - start)
    if out is not None:
        result.save(out)
    return result
