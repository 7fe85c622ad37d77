"""PNG plots of a run: ``convergence.png`` (every loss term and metric against iteration and
against seconds) and ``slices.png`` (each field beside its reference and the error on
mid-planes; snapshots over time when there is a time axis). Only arrays in, files out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..safe_files import write_atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, target: Path) -> None:
    write_atomic(target, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    _pyplot().close(fig)


def convergence(histories: Mapping[str, Mapping[str, np.ndarray]], target: Path) -> None:
    """One curve per history column (losses, metrics) and run, against iteration and seconds."""
    plt = _pyplot()
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    for run, h in histories.items():
        prefix = f"{run}: " if len(histories) > 1 else ""
        for col, values in h.items():
            if col in ("iteration", "seconds") or not np.any(np.asarray(values) > 0):
                continue
            style = "-" if col.startswith("loss/") else "--"
            for ax, x in zip(axs, (h["iteration"], h["seconds"])):
                ax.semilogy(x, np.abs(values), style, label=f"{prefix}{col}")
    axs[0].set(xlabel="iteration", ylabel="loss / metric")
    axs[1].set(xlabel="training seconds")
    axs[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    _save(fig, target)


def _mid_plane(a: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    """The 1-D or 2-D section of ``a`` through the middle index of every axis not in ``keep``."""
    index = tuple(slice(None) if d in keep else a.shape[d] // 2 for d in range(a.ndim))
    return a[index]


def slices(axes: Mapping[str, np.ndarray], fields: Mapping[str, np.ndarray],
           reference: Mapping[str, np.ndarray], target: Path, time_axis: int | None = None) -> None:
    """Rows: field (and time snapshot); columns: prediction, reference, error."""
    plt = _pyplot()
    names = list(axes)
    spatial = [d for d in range(len(names)) if d != time_axis][:2]
    t_name = names[time_axis] if time_axis is not None else ""
    times: list[int | None] = [0, len(axes[t_name]) // 2, len(axes[t_name]) - 1] if t_name else [None]
    keep = [d - (1 if time_axis is not None and d > time_axis else 0) for d in spatial]

    def snapshot(x: np.ndarray, ti: int | None) -> np.ndarray:
        return _mid_plane(x if ti is None else np.take(x, ti, axis=time_axis), keep)

    rows = []
    for f, a in fields.items():
        a = a if a.ndim == len(names) else a[..., 0]  # first component of vector fields
        ref = reference.get(f)
        ref = ref if ref is None or ref.ndim == len(names) else ref[..., 0]
        for ti in times:
            label = f + (f" at {t_name} = {axes[t_name][ti]:.3g}" if ti is not None else "")
            rows.append((label, snapshot(a, ti), None if ref is None else snapshot(ref, ti)))
    ncols = 3 if reference else 1
    fig, axs = plt.subplots(len(rows), ncols, figsize=(4 * ncols, 3.3 * len(rows)), squeeze=False)
    ext_names = [names[d] for d in spatial]
    for r, (label, pred, ref) in enumerate(rows):
        panels = [(f"{label}", pred)] + ([("reference", ref), ("error", pred - ref)] if ref is not None else [])
        for c in range(ncols):
            ax = axs[r, c]
            if c >= len(panels):
                ax.axis("off")
                continue
            title, data = panels[c]
            if data.ndim == 1:
                ax.plot(axes[ext_names[0]], data)
                ax.set(xlabel=ext_names[0])
            else:
                x, y = axes[ext_names[0]], axes[ext_names[1]]
                im = ax.imshow(data.T, origin="lower", aspect="auto", extent=(x[0], x[-1], y[0], y[-1]))
                fig.colorbar(im, ax=ax)
                ax.set(xlabel=ext_names[0], ylabel=ext_names[1])
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, target)


def compare_runs(runs: Sequence[str | Path], target: Path) -> Path:
    """``seppinn plot``: the convergence histories of several run folders in one PNG."""
    from ..errors import DataError
    from ..safe_files import regular_file
    from .output import read_history

    histories = {}
    for run in runs:
        path = Path(run) / "solution.h5"

        def err(message: str) -> DataError:
            return DataError(message, file=str(path))

        regular_file(path, err, what="result file (solution.h5)")
        try:
            history = read_history(path)
        except Exception as exc:  # h5py raises OSError, KeyError, TypeError, ... on foreign files
            raise err(f"cannot read the history: {exc}") from None
        bad = [k for k, v in history.items() if v.ndim != 1 or v.dtype.kind not in "fiu"]
        if bad:
            raise err(f"'/history/{bad[0]}' is not a column of numbers")
        missing = [k for k in ("iteration", "seconds") if k not in history]
        if missing:
            raise err(f"no '/history/{missing[0]}' column")
        if len({len(v) for v in history.values()}) > 1:
            raise err("the '/history' columns have different lengths")
        histories[Path(run).name or str(run)] = history
    convergence(histories, target)
    return target


def image(values: np.ndarray, target: Path) -> None:
    """A fitted image as PNG: values (rows, cols) or (rows, cols, 3|4) in [0, 1] (clipped), row 0
    at the top, as the data file was read."""
    plt = _pyplot()
    a = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)  # rounded, not truncated
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    write_atomic(target, lambda tmp: plt.imsave(tmp, np.ascontiguousarray(a), format="png"))
