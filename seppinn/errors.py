"""One exception family for everything a user can get wrong.

Every error carries the file (or ``<python>`` for problems built in code), the TOML key and
what is wrong; ``str(err)`` is the one line the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable

MAX_MESSAGE_CHARS = 1000  # a message longer than this keeps its start and its end


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line: line breaks and other control characters shown as escapes
    (``\\n``), and the middle of an overlong message left out. What a user wrote (a multi-line
    TOML string, a key with a newline, a library's message) can then never print a second line,
    such as a fake "Traceback"."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    line = "".join(out)
    if len(line) > limit:
        keep = limit - 40
        line = f"{line[:keep - 200]} ...[{len(line) - keep} characters left out]... {line[-200:]}"
    return line


class SeppinnError(Exception):
    """Base class: a mistake in the user's input, reported as ``file: key: message``."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key

    def located(self, file: str | None = None, key: str | None = None) -> SeppinnError:
        """Fill in the file and key where they are not known yet; returns self."""
        if self.file is None:
            self.file = file
        if self.key is None:
            self.key = key
        return self

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return one_line(": ".join([*parts, str(self.message)]))


class ProblemError(SeppinnError):
    """A problem file (or a ``Problem`` built in code) is invalid."""


class SolverConfigError(SeppinnError):
    """A solver file, ``[solver]`` table, ``--set`` override or preset name is invalid."""


class DataError(SeppinnError):
    """A data or reference file is missing, unreadable, or does not fit the problem."""


class RunError(Exception):
    """A failure during training (not bad input): exit status 1."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after writing its checkpoint: exit status 130.
    ``result``: the ``Result`` so far (``iteration``: where it stopped)."""

    def __init__(self, message: str, iteration: int, result: object) -> None:
        super().__init__(message)
        self.iteration, self.result = iteration, result


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'k'?)`` for the closest known names, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
