"""What seppinn agrees to open, and how it writes (``atomic_path``): regular files (after following links) of a sane size.

A FIFO, a device (``/dev/zero``), a socket or a folder given where a file is expected would
block ``open()`` or read until memory runs out, so every file a user can hand us (problem and
solver files, data files, run folders' ``model.pt``, ``summary.json``, ``run.json`` and
``solution.h5``) passes ``regular_file`` first. Text is read from a descriptor opened without
blocking and checked again (``fstat``), so a file swapped for a FIFO in between is refused too.
No torch, no numpy: the problem layer uses this.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import SeppinnError

MiB = 2**20
MAX_TEXT_BYTES = 4 * MiB  # problem and solver files (TOML), summary.json, run.json
MAX_CSV_BYTES = 512 * MiB  # scattered observations
MAX_DATA_BYTES = 8 * 2**30  # .npy / .h5 arrays, and what an HDF5 dataset declares
MAX_CHECKPOINT_BYTES = 2 * 2**30  # model.pt / best.pt
MAX_IMAGE_PIXELS = 2**26  # 67 Mpx (8192 x 8192): a PNG declaring more is refused before decoding

ErrorFactory = Callable[[str], SeppinnError]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder, not a file"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"  # pragma: no cover (door files and the like)


def _check_stat(st: os.stat_result, path: Path, max_bytes: int, what: str, error: ErrorFactory) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise error(f"'{path}' is {_kind(st.st_mode)}; a {what} must be a regular file")
    if st.st_size > max_bytes:
        raise error(f"'{path}' is {st.st_size / MiB:.1f} MiB; a {what} may have at most {max_bytes / MiB:.0f} MiB")


def regular_file(path: str | Path, error: ErrorFactory, *, what: str = "file",
                 max_bytes: int = MAX_DATA_BYTES) -> Path:
    """``path`` when it names (through any links) an existing regular file of at most
    ``max_bytes``; otherwise ``error(message)`` is raised. Never opens the file."""
    p = Path(path)
    try:
        st = os.stat(p)  # follows symbolic links
    except FileNotFoundError:
        raise error(f"{what} '{p}' not found") from None
    except OSError as exc:
        raise error(f"cannot read {what} '{p}': {exc.strerror or exc}") from None
    _check_stat(st, p, max_bytes, what, error)
    return p


def read_bytes(path: str | Path, error: ErrorFactory, *, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before and after opening)."""
    p = regular_file(path, error, what=what, max_bytes=max_bytes)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise error(f"cannot read {what} '{p}': {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        _check_stat(os.fstat(fd), p, max_bytes, what, error)
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"'{p}' grew beyond {max_bytes / MiB:.0f} MiB while it was read")
    return data


def read_text(path: str | Path, error: ErrorFactory, *, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """UTF-8 text (a leading byte-order mark is dropped) of a regular file of at most ``max_bytes``."""
    data = read_bytes(path, error, what=what, max_bytes=max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"'{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(target: Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(target) as tmp:
        writer(tmp)
