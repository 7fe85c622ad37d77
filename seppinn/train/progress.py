"""A progress bar on a terminal, periodic log lines elsewhere. Reads only values the trainer
has already gathered on the host (no device syncs of its own)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.mark: tuple[int, float] | None = None  # (iteration, time) of the first tick
        self.last_draw = 0.0
        self.status = ""

    def _rate(self, it: int) -> float:
        """Iterations per second since the first completed iteration of this session: neither a
        resumed run's earlier iterations nor the first step (which compiles) count."""
        if self.mark is None:
            return 0.0
        dt = time.perf_counter() - self.mark[1]
        return (it - self.mark[0]) / dt if dt > 0 else 0.0

    def tick(self, it: int) -> None:
        """Cheap per-iteration call: redraws at most twice a second, only on a terminal."""
        if self.mark is None:
            self.mark = (it, time.perf_counter())
        if self.tty and time.perf_counter() - self.last_draw > 0.5:
            self._draw(it)

    def _draw(self, it: int) -> None:
        self.last_draw = time.perf_counter()
        width = 20
        done = int(width * it / max(self.total, 1))
        bar = "#" * done + "-" * (width - done)
        self.stream.write(f"\r[{bar}] {it}/{self.total} {self._rate(it):.1f} it/s {self.status}\x1b[K")
        self.stream.flush()

    def record(self, it: int, losses: Mapping[str, float], metrics: Mapping[str, float]) -> None:
        """Called at each evaluation with host values."""
        if not self.enabled:
            return
        parts = [f"{k} {v:.3e}" for k, v in losses.items()]
        parts += [f"{k} {v:.3e}" for k, v in metrics.items()]
        self.status = " | ".join(parts)
        if self.tty:
            self._draw(it)
        else:
            self.stream.write(f"it {it}/{self.total} ({self._rate(it):.1f} it/s): {self.status}\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A warning line (e.g. a rollback), written even when progress output is off."""
        self.stream.write(("\n" if self.tty else "") + message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
