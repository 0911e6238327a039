"""A root folder's fd + a path below it → openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (or
O_NOFOLLOW per component) → fstat checked against what the store recorded → one file descriptor.

Checking a path and then opening it is a race: between the two, anyone who can write in the
folder swaps a folder or the file for a symlink with renameat2(RENAME_EXCHANGE) and the open
follows it out (issue 30: 100 of 400 responses carried an outside file's bytes). Here the path
is resolved by the kernel in the same call that opens it, from a descriptor of the root, and no
symlink anywhere below the root is followed, so what opens lies beneath the root whatever
happens meanwhile; the descriptor is then checked (a regular file, the recorded size and
mtime) and everything is read from it, never from the path again.

openat2(2) is Linux 5.6+; where it is missing (ENOSYS, or seccomp's EPERM) the path is walked
one component at a time with O_NOFOLLOW | O_DIRECTORY from the root's descriptor, which gives
the same guarantee. A FIFO swapped in cannot block the open: it is opened O_NONBLOCK, and a
descriptor that is not a regular file is closed and refused.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Self

from autotag.errors import AutotagError
from autotag.files import Edge, real_path

log = logging.getLogger(__name__)

SYS_OPENAT2 = 437  # the same number on every Linux architecture (it came after the unification)
RESOLVE_NO_MAGICLINKS = 0x02  # /proc/self/fd/N and its kind: never
RESOLVE_NO_SYMLINKS = 0x04  # no symlink in any component
RESOLVE_BENEATH = 0x08  # no component may leave the starting folder ("..", absolute links)
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY


class NotServable(AutotagError):
    """The file cannot be opened as the one recorded; the message says why, in a few words."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_works: bool | None = None  # None: not tried yet; False: ENOSYS/EPERM once, walk instead


def _openat2(dir_fd: int, relative: str, flags: int) -> int:
    how = _OpenHow(flags, 0, RESOLVE)
    fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd),
                  ctypes.c_char_p(os.fsencode(relative)), ctypes.byref(how),
                  ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), relative)
    return fd


def _walk(dir_fd: int, parts: list[str], flags: int) -> int:
    """openat2's guarantee by hand: each folder opened O_NOFOLLOW | O_DIRECTORY from the last."""
    current = os.dup(dir_fd)
    try:
        for name in parts[:-1]:
            step = os.open(name, DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = step
        return os.open(parts[-1], flags, dir_fd=current)
    finally:
        os.close(current)


def open_beneath(root: str | os.PathLike, relative: str | PurePosixPath,
                 use_openat2: bool | None = None) -> int:
    """A descriptor of `relative` opened below the folder `root` through no symlink (the root
    itself is opened as named: the user chose it). OSError: ELOOP for a symlink on the way,
    EXDEV for a way out, ENOENT, ... use_openat2: False forces the per-component walk (tests)."""
    global _openat2_works
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    if not parts or parts[0] == "/" or ".." in parts:
        raise OSError(errno.EXDEV, "not a path below the root", str(relative))
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if use_openat2 is not False and _openat2_works is not False:
            try:
                fd = _openat2(root_fd, "/".join(parts), OPEN_FLAGS)
                _openat2_works = True
                return fd
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                    raise
                _openat2_works = False  # an old kernel, or a seccomp filter: walk from now on
                log.debug("openat2 is not available (%s): opening component by component",
                          exc.strerror)
        return _walk(root_fd, parts, OPEN_FLAGS)
    finally:
        os.close(root_fd)


@dataclass(frozen=True)
class Expected:
    """What the store recorded of a file: a descriptor must show the same."""

    size: int
    mtime: float


def open_checked(root: str | None, real: str, expected: Expected,
                 use_openat2: bool | None = None) -> int:
    """An open descriptor of the regular file at the real path `real`, opened below the folder
    `root` (a real path; files.Edge says which), showing the size and mtime `expected`.
    NotServable otherwise (no root: outside the library; a symlink swapped in, changed, gone)."""
    if root is None:
        raise NotServable("the clip lies outside the watched folders")
    try:
        fd = open_beneath(root, os.path.relpath(real, root), use_openat2)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NotServable("the clip is gone from disk") from None
        raise NotServable("the clip's path leads out of the watched folders (a symlink), or "
                          "cannot be read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotServable("the clip is not a regular file any more")
        if st.st_size != expected.size or st.st_mtime != expected.mtime:
            raise NotServable("the clip changed on disk since it was tagged")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FdFile:
    """A read-only file object over a descriptor, reading at most `size` bytes (what was
    checked: a file that grows meanwhile serves no byte past it); pread, so two users of
    one descriptor never share a position."""

    def __init__(self, fd: int, size: int, name: str = "") -> None:
        self.fd, self.size, self.name = fd, size, name
        self.pos = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def __del__(self) -> None:  # a response built and never sent must not keep the fd
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Source:
    """A clip the server may read: where it is (for messages) and how to open it, checked,
    every time it is read (the web preview opens it twice: probe, then encode)."""

    path: Path  # the clip's path as the store has it: for messages only, never opened
    real: str
    root: str | None
    expected: Expected

    @classmethod
    def of(cls, path: Path, size: int, mtime: float, edge: Edge) -> Source:
        """How to open a recorded file: below the library root its real path lies in (the
        edge's rule), through no symlink, checked against the size and mtime recorded."""
        real = real_path(path)
        if real is None:  # changing under the look: nothing to open
            return cls(path, str(path), None, Expected(size, mtime))
        return cls(path, real, edge.serving_root(real), Expected(size, mtime))

    def open(self) -> BinaryIO:
        fd = open_checked(self.root, self.real, self.expected)
        return FdFile(fd, self.expected.size, str(self.path))  # type: ignore[return-value]
