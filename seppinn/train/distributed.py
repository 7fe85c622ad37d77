"""Training on several processes with ``torch.distributed`` (``torchrun``): what each rank owns
and the few collectives a step needs.

Every rank holds the same factor networks, points, SepPGD factors and optimizer state (the same
seed, the same deterministic updates). A term part is split by its points: along one grid axis
(``train.shard_axis``, or the part's largest axis where that one is a face) each rank contracts
only its slab of rows, and scattered points are split by index. Its losses are then partial sums
over its slab (the counts stay global), so that

- the loss values are one all-reduce of the (T,) loss vector;
- the gradient is one all-reduce of the flat gradient (the sum of the slabs' gradients is the
  one-process gradient: every loss is a sum over points);
- SepPGD's P = c sum_d R x_d S_d needs R along the sharded axis: one all-gather of the detached
  residual per preconditioned grid part (the other axes' products stay local);
- causal weights need the per-time-slice losses of every rank: one all-reduce of (n_t,) rows.

One process (``World()``, the default) runs every method as the identity: nothing changes. The
collectives run outside ``torch.compile``'s graph (``torch.compiler.disable``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..compile.compiler import CompiledProblem, per_axis
from ..compile.plan import Plan, shard_axis
from ..errors import RunError, SeppinnError
from ..problem.solver_config import SolverConfig

T = TypeVar("T")
MESSAGE_BYTES = 2048  # a failing rank's message as it travels to the others (longer ones are cut)


class RankFailed(RunError):
    """Some rank failed before training; every rank raises this (``messages``: rank -> message).
    ``bad_input``: every failure was bad input (a ``SeppinnError``)."""

    def __init__(self, messages: dict[int, str], bad_input: bool) -> None:
        same = len(set(messages.values())) == 1 and len(messages) > 1
        text = next(iter(messages.values())) if same else \
            "; ".join(f"rank {r}: {m}" for r, m in sorted(messages.items()))
        super().__init__(text)
        self.messages, self.bad_input = messages, bad_input


@dataclass(frozen=True)
class World:
    """This process' rank among ``size`` (1: no process group)."""

    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def writes(self) -> bool:
        """Whether this rank writes outputs, progress and checkpoints (rank 0)."""
        return self.rank == 0

    def slab(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's rows among n (balanced: sizes differ by at most one)."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over ranks (a new tensor, no gradient); ``t`` itself when alone."""
        if not self.active:
            return t
        out = t.detach().clone()
        dist.all_reduce(out)
        return out

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    def gather(self, t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
        """The ranks' slabs of ``t`` along ``dim`` concatenated in rank order (n rows; no gradient)."""
        if not self.active:
            return t
        t = t.detach()
        width = -(-n // self.size)  # the largest slab: all_gather needs equal shapes
        pad = [0, 0] * (t.dim() - 1 - dim) + [0, width - t.shape[dim]]
        parts = [torch.empty_like(torch.nn.functional.pad(t, pad)) for _ in range(self.size)]
        dist.all_gather(parts, torch.nn.functional.pad(t, pad).contiguous())
        rows = [World(r, self.size).slab(n) for r in range(self.size)]
        return torch.cat([p.narrow(dim, 0, hi - lo) for p, (lo, hi) in zip(parts, rows)], dim=dim)

    def reduce_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Sum every parameter's ``.grad`` over ranks: one all-reduce of the flat gradient."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.all_reduce(torch.cat([g.reshape(-1) for g in grads]))
        for p, g in zip(params, torch.split(flat, [g.numel() for g in grads])):
            p.grad = g.view_as(p)

    def reduce_term_gradients(self, grads: Sequence[Sequence[torch.Tensor | None]], params: Sequence[torch.Tensor]
                              ) -> Sequence[Sequence[torch.Tensor | None]]:
        """Every term's gradient (``grads[t][p]``, None: zero) summed over ranks: one all-reduce."""
        if not self.active:
            return grads
        flat = self.all_reduce(torch.stack([torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                                       for g, p in zip(gs, params)]) for gs in grads]))
        return [[g.view_as(p) for g, p in zip(torch.split(row, [p.numel() for p in params]), params)]
                for row in flat]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a host value: through the CPU backend, no device sync)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t)
        return bool(t.item())

    def agree(self, fn: Callable[[], T], digest: Callable[[T], str] | None = None) -> T:
        """``fn()`` on every rank, which then learns whether any rank failed: then every rank raises
        ``RankFailed`` with the failures' messages. ``digest``: a summary of the result that must be
        equal on every rank (the problem, settings and data), else every rank raises RunError."""
        if not self.active:
            return fn()
        error, value, bad_input = "", None, True
        try:
            value = fn()
        except (SeppinnError, RunError, OSError) as exc:
            error, bad_input = str(exc) or type(exc).__name__, isinstance(exc, SeppinnError)
        summary = digest(value) if digest is not None and not error else ""  # type: ignore[arg-type]
        errors = self._gather_text(error)
        flags = self._gather_text("1" if bad_input else "")
        if any(errors):
            raise RankFailed({r: m for r, m in enumerate(errors) if m},
                             all(f for f, m in zip(flags, errors) if m))
        digests = self._gather_text(summary)
        if len(set(digests)) > 1:
            odd = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RunError("the ranks do not agree on the problem: the problem file, settings or data of rank "
                           f"{', '.join(map(str, odd))} differ from rank 0's (every rank must run the same command "
                           "on the same files)")
        return value  # type: ignore[return-value]

    def _gather_text(self, text: str) -> list[str]:
        data = text.encode("utf-8")[:MESSAGE_BYTES]
        buf = torch.zeros(MESSAGE_BYTES + 1, dtype=torch.int64)  # [length, bytes...]
        buf[0] = len(data)
        buf[1:1 + len(data)] = torch.tensor(list(data), dtype=torch.int64)
        parts = [torch.empty_like(buf) for _ in range(self.size)]
        dist.all_gather(parts, buf)
        return [bytes(p[1:1 + int(p[0])].tolist()).decode("utf-8", "replace") for p in parts]


def shard_dim(grid: Sequence[tuple[object, ...]], sizes: Sequence[int], pointwise: bool, shard_axis: int) -> int:
    """The grid axis whose rows the ranks split in a term part: the shard axis, unless it is a face
    of this part; then the largest axis that is not a face (scattered points: the point index, 0)."""
    if pointwise or grid[shard_axis][0] != "face":
        return 0 if pointwise else shard_axis
    return max(range(len(grid)), key=lambda d: (grid[d][0] != "face", sizes[d]))


def per_rank_memory(memory: Mapping[str, float], nproc: int) -> float:
    """Peak bytes of one rank of ``nproc`` from a plan's one-process estimate (``estimate_memory``):
    the grid tensors and contractions split; the factor networks, the test grid (evaluated whole on
    every rank) and the runtime are not."""
    split = memory["grid_tensors"] + memory["contractions"]
    return memory["total"] - 1.5 * split * (1 - 1 / nproc)


def communication(plan: Plan, compiled: CompiledProblem, config: SolverConfig, params: int, nproc: int
                  ) -> dict[str, float]:
    """Bytes each rank sends per Adam step with ``nproc`` ranks, by what they carry: the gradient
    (a ring all-reduce sends 2 (p - 1) / p of it), the loss vector, SepPGD's all-gathers of residuals
    along the sharded axis, causal rows, and grad-norm balancing's per-term gradients (spread over
    ``train.balance_every`` steps)."""
    b = 8 if config.train.dtype == "float64" else 4
    ring, gather = 2 * (nproc - 1) / nproc, (nproc - 1) / nproc
    axis = shard_axis(compiled, config)
    T = len(compiled.terms)
    out = {"gradient": ring * params * b, "losses": ring * (T + 1) * b, "seppgd": 0.0, "causal": 0.0,
           "balancing": 0.0}
    for t, plans in zip(compiled.terms, plan.parts):
        for part, pp in zip(t.parts, plans):
            if t.name in plan.preconditioned and pp.mode != "grid_free":
                d = shard_dim(part.grid, pp.sizes, part.pointwise, axis)
                if part.pointwise or pp.k[d] > 1:
                    out["seppgd"] += gather * math.prod(pp.sizes[:1] if part.pointwise else pp.sizes) * \
                        compiled.components.get(part.residual.derivs[0][0], 1) * b
    if plan.causal is not None:
        out["causal"] = ring * 2 * 8 * per_axis(config.train.points, compiled.axes)[plan.causal.axis] * len(plan.causal.terms)
    if config.train.balance == "grad_norm":
        out["balancing"] = ring * T * params * b / config.train.balance_every
    return out


def digest(*texts: str, arrays: Sequence[object] = ()) -> str:
    """A short hash of texts and numpy arrays (their shapes and bytes): ``World.agree``'s check."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    for a in arrays:
        h.update(repr(getattr(a, "shape", None)).encode() + bytes(getattr(a, "data", b"")))
    return h.hexdigest()


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(timeout_s: float = 1800.0) -> World:
    """Join the process group the launcher's environment describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): gloo for CPU tensors, NCCL for CUDA ones where CUDA is
    available (each rank on GPU ``LOCAL_RANK``). One process: ``World()``. Raises RunError when the
    group cannot be formed."""
    if not launched():
        return World()
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RunError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: start "
                       "several processes with torchrun (torchrun --nproc_per_node=N -m seppinn solve ...)")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        raise RunError(f"torch.distributed cannot form the process group: {str(exc).splitlines()[0][:300]}") from None
    return World(dist.get_rank(), dist.get_world_size())


def stop() -> None:
    """Leave the process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()
