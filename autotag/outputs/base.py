"""What every output shares: its error type and the atomic write that turns OS errors into it."""

from __future__ import annotations

from pathlib import Path

from autotag.atomic import AtomicWriteError, append_line, write_atomic
from autotag.errors import AutotagError


class OutputError(AutotagError):
    """An output could not be written; one line saying why. Nothing partial was left."""


def write_file(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except AtomicWriteError as exc:
        raise OutputError(exc.strerror) from None
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    return path


def append_to(path: Path, line: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_line(path, line)
    except AtomicWriteError as exc:
        raise OutputError(exc.strerror) from None
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    return path
