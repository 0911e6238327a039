"""The daemon's process: one per state store (an flock beside it), big buffers back to the system.

What belongs to the process rather than to any one part of the daemon: the lock that keeps a
second daemon off the same store, glibc's allocator tuned for a run of a year, and the
resident memory the log names when the model is released.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from autotag.errors import AutotagError

MMAP_THRESHOLD = 1 << 20  # bytes; glibc's mallopt(M_MMAP_THRESHOLD): 1 MB, and no longer dynamic
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


class DaemonError(AutotagError):
    """The daemon cannot start; one line naming the fix (exit code 2)."""


def acquire_lock(state_path: Path) -> IO[str]:
    """An exclusive flock on `<state>.lock`, held for the daemon's life (released on exit)."""
    lock_path = state_path.with_name(state_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open until the daemon closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise DaemonError(f"another autotag daemon (pid {pid}) is using the state store "
                          f"{state_path}; stop it, or give this one its own state.path") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def big_buffers_from_mmap() -> None:
    """Buffers of 1 MB and more (a window's frames: 4.8 MB as uint8, 19 MB as float32) come
    from mmap and go back to the system when freed. glibc's default threshold grows to 32 MB
    after the first such free, and then they came from the heap, which a daemon that runs all
    year fragments (an idle release kept ~10 MB more: benchmarks.runtimes)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


def resident_memory() -> str:
    """This process's resident memory, from /proc (for the log line of an idle release)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) // 1024} MB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"
