"""Where a run lives: the device, the dtype, and the memory it may use."""

from __future__ import annotations

import os

import torch

from ..compile.plan import Plan
from ..errors import SolverConfigError
from ..problem.solver_config import SolverConfig
from .distributed import per_rank_memory

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


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
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0.8 * avail, f"80 % of the {avail / 2**30:.1f} GiB available"


def check_memory(plan: Plan, config: SolverConfig, device: torch.device, nproc: int = 1) -> None:
    """Refuse a run whose estimated peak memory (the plan's; per rank of ``nproc``) exceeds the limit."""
    need = per_rank_memory(plan.memory, nproc)
    limit, source = memory_limit(config, device)
    if need > limit:
        raise SolverConfigError(
            f"estimated peak memory {need / 2**30:.2f} GiB exceeds the limit {limit / 2**30:.2f} GiB ({source}); "
            "use fewer points per axis (train.points, train.test_points), a smaller rank or width, float32, "
            "or raise train.memory_limit (GiB)",
            key="train.memory_limit")


def auto_threads() -> int:
    """``train.threads = "auto"``: half the CPUs this process may run on, at least 1. Measured on a
    2-core machine (``bench/threads.py``, bench/RESULTS.md): 2 threads trained no faster than 1 at
    the default grids or at 64^3 (within 10 %) and used 25-45 % more CPU time."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def set_threads(threads: int | str) -> None:
    """``train.threads``: the CPU threads torch's kernels use (process-wide); "auto": ``auto_threads``."""
    torch.set_num_threads(auto_threads() if threads == "auto" else int(threads))
