"""The training loop: Adam (then optional L-BFGS) on the loss, periodic evaluation, checkpoints,
divergence handling. Points, losses, SepPGD and evaluation are the stages' own objects.

Iteration semantics: the losses and metrics recorded at iteration i belong to the parameters
after i optimizer updates; the state kept as "best" is exactly the one whose loss was lowest.
Inside an iteration nothing synchronises with the host; values are gathered every
``eval_every`` iterations.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..compile.compiler import CompiledProblem
from ..compile.plan import Plan, make_plan, shard_axis
from ..errors import DataError
from ..model.learned import ScalarSpec
from ..model.separable import SeparableModel, build_model
from ..problem.solver_config import SolverConfig
from .balancing import Balancer
from .ntk_trace import term_traces
from .device import DTYPE_NAMES, DTYPES, pick_device
from .distributed import World
from .evaluation import Evaluator
from .loss import Losses
from .optimizers import Optimizers, make_optimizers
from .points import PointSets
from .preconditioning import Preconditioners
from .progress import Progress
from .records import Diverged, Evaluation, TrainState

MAX_ROLLBACKS = 4  # train.on_nan = "rollback": at most this many rollbacks per run


def make_model(compiled: CompiledProblem, config: SolverConfig, device: torch.device) -> SeparableModel:
    """The settings' separable model for ``compiled``, seeded with ``train.seed``, in ``train.dtype``
    on ``device``, with its hard-condition axes and field scales set."""
    m = config.model
    torch.manual_seed(config.train.seed)
    net = dict(width=m.width, depth=m.depth, activation=m.activation, body=m.body, omega0=m.omega0,
               fourier_features=m.fourier_features, fourier_scale=m.fourier_scale,
               periodic=[a.periodic for a in compiled.problem.axis_list], periodic_modes=m.periodic_modes,
               weight_factorization=m.weight_factorization)
    learned = [ScalarSpec(p.name, p.initial, p.range, p.positive) for p in compiled.learned.values()]
    model = build_model(compiled.ranges, compiled.components, kind=m.kind, rank=m.rank, scale=m.scale,
                        net_kwargs=net, learned=learned).to(device=device, dtype=DTYPES[config.train.dtype])
    for f, axis in compiled.hard.items():
        model[f].set_hard_axis(axis, *compiled.ranges[axis], compiled.hard_sides.get(f, "both"),
                               compiled.hard_fades.get(f))
    for f, fs in compiled.scales.items():
        if fs.scale != 1.0:
            model[f].set_output_scale(fs.scale)
    return model


class Trainer:
    """The model and the stages that train it: ``points`` (PointSets), ``losses`` (Losses, called
    for the weighted term losses), ``preconditioners`` (SepPGD) and ``evaluator`` (predictions,
    references, metrics), following ``plan`` (default: the settings' ``make_plan``)."""

    def __init__(self, compiled: CompiledProblem, config: SolverConfig,
                 ref_arrays: Mapping[str, np.ndarray] | None = None, *, plan: Plan | None = None,
                 device: torch.device | None = None, progress: bool = True, world: World = World()) -> None:
        self.c, self.cfg, self.world = compiled, config, world
        self.plan = plan or make_plan(compiled, config, ref_arrays=ref_arrays)
        self.device = device or pick_device(config.train.device)
        self.dtype = DTYPES[config.train.dtype]
        self.model = make_model(compiled, config, self.device)
        self.params = list(self.model.parameters())  # fixed tensors: load_state_dict copies into them
        self.points = PointSets(compiled, config, self.device, self.dtype)
        pc = config.precondition
        self.preconditioners = Preconditioners(compiled, self.plan, self.model, self.points, pc.modulation,
                                               pc.scale == "normalized")
        rank = config.model.rank if isinstance(config.model.rank, int) else 0  # the CP paths need a CP model
        self.losses = Losses(compiled, self.plan, self.model, self.points, rank, self.preconditioners, world,
                             shard_axis(compiled, config))
        self.evaluator = Evaluator(compiled, self.plan, self.model, self.points, ref_arrays or {}, world)
        t = config.train
        self.balancer = Balancer(t.balance, [term.weight for term in compiled.terms], t.balance_every,
                                 t.balance_momentum, self.device)
        # sources, coefficients, condition values and references that are NaN or infinite on their
        # points (log(x) on [-1, 1], 1/(x + 1) at x = -1) are refused before any training
        self.losses.check_finite(config.train.dtype)
        self.evaluator.check_finite()
        self.progress_enabled = progress and world.writes
        self.stop_requested = False  # set by a signal handler: stop after the current iteration
        self.compile_seconds: float | None = None  # the first compiled step's time, compiling included
        # divergence guard: the lowest total loss so far, on the device (train.diverge_factor)
        self.loss_min = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        # one graph for jets, contractions, residuals and losses (backward compiled with it); the
        # points, constants and SepPGD factors are inputs, so resampling and rebuilds reuse it
        self._compiled: Callable[[], torch.Tensor] | None = (
            torch.compile(self._loss_stack) if self.plan.compiles else None)

    def to_dtype(self, dtype: torch.dtype) -> None:
        """The model, the points and the coordinate-only constants in ``dtype`` from here on (the
        L-BFGS phase's ``train.lbfgs_dtype``; the parameters stay the same tensors, so the optimizers
        keep them)."""
        if dtype == self.dtype:
            return
        self.model.to(dtype=dtype)
        self.dtype = dtype
        self.points.to_dtype(dtype)
        self.losses.prepare()

    def _loss_stack(self) -> torch.Tensor:
        """The weighted term losses in term order, then the diagnostics (``losses.diagnostic_names``)."""
        losses, diagnostics = self.losses.evaluate()
        return torch.stack([*losses.values(), *diagnostics.values()])

    def resample(self) -> None:
        """New random training points per axis (SPINN style); coordinate terms follow."""
        self.points.sample_train(random=True)
        self.losses.prepare()

    def _loss_vector(self, progress: Progress) -> torch.Tensor:
        """``_loss_stack`` (T + diagnostics,): through ``torch.compile`` when
        ``train.compile`` asks for it (falling back to eager, with a note, if compiling fails)."""
        if self._compiled is None:
            return self._loss_stack()
        try:
            return self._compiled()
        except Exception as exc:  # a backend that cannot compile this graph: eager is always right
            progress.note(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "continuing eager")
            self._compiled = None
            return self._loss_stack()

    def balance(self, stacked: torch.Tensor, progress: Progress, iteration: int) -> None:
        """A balance update and the step's gradient.

        ``ntk``: the terms' NTK traces (``ntk_trace``, sampled with a seed fixed by the iteration),
        then the usual backward. ``grad_norm``: each term's gradient by its own backward pass (eager:
        on ``stacked``'s graph, retained; compiled: a fresh forward per term after the first, as a
        compiled backward cannot be retained), the new weights from their norms, and ``.grad`` =
        sum_i lambda_i g_i from the same gradients."""
        if self.balancer.method == "ntk":
            seed = self.cfg.train.seed * 1_000_003 + iteration
            with torch.no_grad():
                self.balancer.set_from_norms(term_traces(self.losses, torch.Generator().manual_seed(seed)))
            self.balancer.apply(stacked).backward()  # type: ignore[no-untyped-call]
            self.world.reduce_gradients(self.params)
            return
        params = self.params
        T = len(self.c.terms)
        grads = []
        for i in range(T):
            compiled = self._compiled is not None
            if i > 0 and compiled:
                stacked = self._loss_vector(progress)[:T]
            grads.append(torch.autograd.grad(stacked[i], params, retain_graph=not compiled and i < T - 1,
                                             allow_unused=True))
        for p, g in zip(params, self.balancer.update(self.world.reduce_term_gradients(grads, params))):
            p.grad = g

    def param_groups(self) -> list[dict[str, Any]]:
        """Adam's parameter groups: the fields' networks (and the learned scalars without an ``lr``
        of their own) at ``train.lr``, then one group per learned scalar with its own ``lr``."""
        own = {n: p.lr for n, p in self.c.learned.items() if p.lr is not None}
        raw = self.model.learned.raw
        shared = self.model.field_parameters() + [raw[n] for n in raw if n not in own]
        return [{"params": shared}] + [{"params": [raw[n]], "lr": lr} for n, lr in own.items()]

    # ---------------------------------------------------------------- records and snapshots
    def _record(self, state: TrainState, it: int, out: torch.Tensor, progress: Progress) -> None:
        """Append the evaluation at ``it``: ``out`` is ``_loss_stack``'s (losses, then diagnostics)."""
        names = [t.name for t in self.c.terms]
        vals = out.detach().to(torch.float64).cpu().tolist()
        lv = dict(zip(names, vals[:len(names)]))
        lv["total"] = float(sum(vals[:len(names)]))
        diagnostics = dict(zip(self.losses.diagnostic_names, vals[len(names):]))
        if self.balancer.active:
            diagnostics.update({f"weight/{n}": w for n, w in zip(names, self.balancer.weights.tolist())})
        diagnostics.update({f"parameter/{n}": v for n, v in self.model.learned.numbers().items()})
        ev = Evaluation(it, state.seconds, lv, self.evaluator.metrics(), diagnostics)
        state.history.append(ev)
        if state.best is None or lv["total"] < state.best.losses["total"]:
            state.best = ev
            state.best_state = copy.deepcopy(self.model.state_dict())
        shown = {f"{k}/{f}": v for f, m in ev.metrics.items() for k, v in m.items()
                 if k in ("rel_l2", "psnr", "iou", "psnr_heldout")}
        shown.update({k.replace("weight/", "w_").replace("parameter/", ""): v for k, v in diagnostics.items()})
        progress.record(it, {n: lv[n] for n in names}, shown)

    def snapshot(self, state: TrainState, opts: Optimizers) -> dict[str, Any]:
        """Everything the loop needs to continue exactly from ``state.iteration``: model, optimizer
        and schedule states, the sampler's RNG, the current training points, the SepPGD factors,
        the history and the best state (copies; CPU tensors stay where they are)."""
        points = self.points.state()
        return {
            "iteration": state.iteration, "seconds": state.seconds, "lr_scale": state.lr_scale,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "adam": copy.deepcopy(opts.adam.state_dict()), "schedule": copy.deepcopy(opts.schedule.state_dict()),
            "lbfgs": copy.deepcopy(opts.lbfgs.state_dict()), "sampler": points["sampler"],
            "lbfgs_scale": None if opts.lbfgs_scale is None else opts.lbfgs_scale.clone(),
            "lbfgs_last": opts.lbfgs_last, "dtype": DTYPE_NAMES[self.dtype],
            "points": points["points"], "factors": self.preconditioners.state(),
            "use_preconditioner": self.preconditioners.active, "balance": self.balancer.weights.clone(),
            "loss_min": self.loss_min.clone(),
            "history": [dataclasses.asdict(ev) for ev in state.history],
            "best": dataclasses.asdict(state.best) if state.best else None,
            "best_state": copy.deepcopy(state.best_state),
        }

    def restore(self, snap: Mapping[str, Any], state: TrainState, opts: Optimizers) -> None:
        """Put the trainer and ``state`` back to a snapshot (``rollbacks`` and ``lr_scale`` stay), in
        the snapshot's dtype (checkpoints before ``train.lbfgs_dtype``: ``train.dtype``)."""
        self.to_dtype(DTYPES[snap.get("dtype", self.cfg.train.dtype)])
        self.model.load_state_dict(snap["model"])
        opts.adam.load_state_dict(snap["adam"])
        opts.schedule.load_state_dict(snap["schedule"])
        opts.lbfgs.load_state_dict(snap["lbfgs"])
        opts.lbfgs_scale = snap.get("lbfgs_scale")  # checkpoints before the scale: none yet
        opts.lbfgs_last = snap.get("lbfgs_last")
        self.points.load_state(snap["points"], snap["sampler"])
        self.losses.prepare()
        self.preconditioners.load_state(snap["factors"], snap["use_preconditioner"])
        if "balance" in snap:  # checkpoints before loss balancing: all ones
            self.balancer.weights = snap["balance"].to(self.balancer.weights).clone()
        if "loss_min" in snap:
            self.loss_min = snap["loss_min"].to(self.loss_min).clone()
        saved = TrainState.from_snapshot(snap)
        state.iteration, state.seconds, state.history = saved.iteration, saved.seconds, saved.history
        state.best, state.best_state = saved.best, copy.deepcopy(saved.best_state)

    def _check_finite(self, first_bad: torch.Tensor, state: TrainState, opts: Optimizers,
                      progress: Progress) -> bool:
        """Divergence check (a host sync: only at evaluations and checkpoints) of ``first_bad``: per
        term the first iteration its loss was not finite, then the first at which the total loss
        climbed above ``train.diverge_factor`` times its lowest (-1: none). False: all well. True:
        rolled back to the last good snapshot with the learning rate halved. Raises ``Diverged``
        otherwise."""
        bad = first_bad.tolist()
        hits = sorted((i, name) for i, name in zip(bad, [t.name for t in self.c.terms] + [""]) if i >= 0)
        if not hits and all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return False
        it, what = hits[0] if hits else (state.iteration, None)
        message = (f"loss of term '{what}' is not finite at iteration {it}" if what
                   else f"a model parameter is not finite at iteration {it}" if what is None
                   else f"the total loss rose above {self.cfg.train.diverge_factor:g} times its lowest value so far "
                        f"({float(self.loss_min):.3e}) at iteration {it}")
        good = state.last_good
        if self.cfg.train.on_nan == "rollback" and good is not None and state.rollbacks < MAX_ROLLBACKS:
            state.rollbacks += 1
            state.lr_scale *= 0.5
            self.restore(good, state, opts)
            opts.scale_lr(state.lr_scale, self.cfg.train)
            first_bad.fill_(-1)
            progress.note(f"{message}: rolled back to iteration {good['iteration']}, learning rate x {state.lr_scale:g} "
                          f"(rollback {state.rollbacks} of {MAX_ROLLBACKS})")
            return True
        raise Diverged(message, state)

    # ---------------------------------------------------------------- the loop
    def _start(self, opts: Optimizers, resume: Mapping[str, Any] | None) -> TrainState:
        state = TrainState()
        if resume is not None:
            try:
                self.restore(resume, state, opts)
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
                raise DataError(f"the checkpoint's training state cannot be restored ({type(exc).__name__}: "
                                f"{str(exc)[:200]})") from None
        state.last_good = dict(resume) if resume is not None else self.snapshot(state, opts)
        return state

    def train(self, on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
              resume: Mapping[str, Any] | None = None,
              on_eval: Callable[[Evaluation], None] | None = None) -> TrainState:
        """Adam for ``train.iterations`` steps, then ``train.lbfgs_iterations`` L-BFGS steps.

        ``on_checkpoint(snapshot)`` is called every ``train.checkpoint_every`` iterations, with
        finite values only; ``on_eval(evaluation)`` after every evaluation is recorded. ``resume``: a snapshot to continue from exactly. Setting
        ``stop_requested`` (a signal handler does) ends the loop after the current iteration with
        ``state.interrupted``. Non-finite losses raise ``Diverged`` (or roll back, ``on_nan``)."""
        t = self.cfg.train
        end = t.iterations + t.lbfgs_steps()
        opts = make_optimizers(self.param_groups(), self.cfg.train)
        state = self._start(opts, resume)
        progress = Progress(end, enabled=self.progress_enabled)
        first_bad = torch.full((len(self.c.terms) + 1,), -1, dtype=torch.long, device=self.device)
        climb = self.cfg.train.diverge_factor or math.inf
        update_every = self.cfg.precondition.update_every
        pre = self.preconditioners
        lbfgs_dtype = DTYPES[t.lbfgs_precision()]  # at the phase's start; "auto" may switch to float64

        def closure() -> torch.Tensor:  # through the compiled graph when there is one (as Adam's step)
            opts.lbfgs.zero_grad(set_to_none=True)
            loss = self.balancer.apply(self._loss_vector(progress)[:len(self.c.terms)])
            if opts.lbfgs_scale is None:  # once per run (every rank alike): see Optimizers.lbfgs_scale
                total = self.world.all_reduce(loss.detach()).to(torch.float64)
                opts.lbfgs_scale = 1 / total.clamp_min(torch.finfo(torch.float64).tiny)
            scale = opts.lbfgs_scale.to(loss.dtype)
            (loss * scale).backward()  # type: ignore[no-untyped-call]
            self.world.reduce_gradients(self.params)
            return self.world.all_reduce(loss.detach()) * scale  # type: ignore[no-any-return]

        tick = time.perf_counter()
        first = state.iteration
        while True:
            it = state.iteration
            adam_phase = it < t.iterations
            self.losses.causal_weights = adam_phase  # L-BFGS line-searches the plain loss (``causal_mean``)
            evaluate = it % t.eval_every == 0 or it == t.iterations or it == end
            if adam_phase:
                resampled = t.sampling == "random" and it > 0 and it % t.resample_every == 0
                if resampled:
                    self.resample()
                if pre.active and (it == 0 or resampled or (update_every and it % update_every == 0)):
                    pre.rebuild(progress)
            else:  # L-BFGS line-searches the loss it measures: plain gradients in this phase
                pre.active = False
                if it == t.iterations:
                    self.to_dtype(lbfgs_dtype)
            if adam_phase:
                first_compiled = self._compiled is not None and it == first
                step_start = time.perf_counter()
                out = self._loss_vector(progress)
            elif evaluate:  # eager: a graph without gradients would be a second compilation
                with torch.no_grad():
                    out = self._loss_stack()
            if adam_phase or evaluate:
                stacked = out[:len(self.c.terms)]  # this rank's part of the losses (all of them alone)
                if self.world.active:  # every rank's: the values recorded and checked (the diagnostics are)
                    out = torch.cat([self.world.all_reduce(stacked), out[len(stacked):].detach()])
                # the first iteration at which each term went non-finite, and the total climbed, kept
                # on the device (no sync)
                values = out[:len(stacked)].detach()
                total = values.sum().to(torch.float64)
                flags = torch.cat([~torch.isfinite(values), (total > climb * self.loss_min)[None]])
                first_bad = torch.where(flags & (first_bad < 0), it, first_bad)
                self.loss_min = torch.fmin(self.loss_min, total)  # NaN: handled above, never the minimum
            if evaluate:
                state.seconds += time.perf_counter() - tick
                if self._check_finite(first_bad, state, opts, progress):
                    tick = time.perf_counter()
                    continue
                self._record(state, it, out, progress)
                if on_eval is not None:
                    on_eval(state.history[-1])
                tick = time.perf_counter()
            if it == end:
                break
            if adam_phase:
                opts.adam.zero_grad(set_to_none=True)
                if self.balancer.due(it):
                    self.balance(stacked, progress, it)
                else:
                    self.balancer.apply(stacked).backward()  # type: ignore[no-untyped-call]
                    self.world.reduce_gradients(self.params)
                opts.adam.step()
                opts.schedule.step()
                if first_compiled:  # compiling happens in this step: say so, with its time
                    self.compile_seconds = time.perf_counter() - step_start
                    progress.note(f"torch.compile (train.compile = {t.compile}): the first step took "
                                  f"{self.compile_seconds:.1f} s, compiling included")
            elif opts.lbfgs_step(closure):  # no lower loss: in float32 (auto) go on in float64, else stop
                if t.lbfgs_dtype == "auto" and self.dtype != torch.float64:
                    progress.note(f"L-BFGS found no lower loss in {DTYPE_NAMES[self.dtype]} at iteration {it}: "
                                  "continuing in float64")
                    self.to_dtype(torch.float64)
                    opts.lbfgs.load_state_dict(opts.lbfgs.state_dict())  # casts its history to the parameters' dtype
                    opts.lbfgs_last = None  # the float64 loss is compared with float64 losses only
                elif it + 1 < end:  # the same state would repeat the same failed line search every step
                    progress.note(f"L-BFGS found no lower loss in {DTYPE_NAMES[self.dtype]} at iteration {it}: "
                                  f"its remaining {end - it - 1} steps are skipped")
                    it = end - 1
            state.iteration = it + 1
            progress.tick(state.iteration)
            checkpoint = bool(t.checkpoint_every) and state.iteration % t.checkpoint_every == 0
            if self.world.active:  # a signal on any rank stops every rank after this same iteration
                self.stop_requested = self.world.any(self.stop_requested)
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
