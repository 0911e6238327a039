"""Bytes → temp file beside the target → fsync → rename; lines → one O_APPEND write.

Readers never see a half-written output: a sidecar, XMP or preview appears whole or not at all,
and the original stays untouched when anything fails (a full disk included). Temp files are
named `.<name>.<random>.autotag.tmp`: hidden, and ignored by autotag's own scans.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from autotag.errors import AutotagError

TEMP_SUFFIX = ".autotag.tmp"


class AtomicWriteError(AutotagError, OSError):
    """Writing failed; nothing was changed. The message says why (disk full, permission...)."""


def _reason(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"the disk is full; {path} was left as it was"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {path.parent} ({exc.strerror})"
    return f"cannot write {path}: {exc.strerror or exc}"


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (same folder, so the rename cannot cross devices).
    durable=False skips the fsync: for a file that only shows state (the daemon's status,
    rewritten after every clip), where a crash may lose the last version but never half one."""
    # short, whatever the target's length: a 255-byte name must still get a temp file
    temp = path.with_name(f".{path.name[:24]}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        try:
            temp.unlink()
        except OSError:
            pass
        raise AtomicWriteError(exc.errno or 0, _reason(exc, path)) from exc


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write on an O_APPEND descriptor: concurrent writers never
    interleave (POSIX appends each write whole at the end). A short write is rolled back."""
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AtomicWriteError(exc.errno or 0, _reason(exc, path)) from exc
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            os.ftruncate(fd, size)  # no partial line left behind
            raise AtomicWriteError(exc.errno or 0, _reason(exc, path)) from exc
    finally:
        os.close(fd)
