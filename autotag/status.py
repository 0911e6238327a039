"""Daemon state → a small JSON file beside the store → the web app's status page and /metrics.

The daemon writes it (atomically) when something changes: it starts watching, a clip's result
arrives, the model is released, it reloads or stops. `autotag serve` in another process reads it;
a daemon serving the app itself hands its live snapshot over without the file. A file whose
process is gone says so ("not running"), whatever it last said.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autotag.atomic import AtomicWriteError, write_atomic

STATUS_SUFFIX = ".status.json"


def status_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + STATUS_SUFFIX)


def write_status(path: Path, status: dict) -> None:
    try:
        write_atomic(path, json.dumps(status, indent=1).encode(), durable=False)
    except (AtomicWriteError, OSError):
        pass  # the status page is a view; tagging must not stop for it


def read_status(path: Path) -> dict:
    """The daemon's last status, with state 'not running' when no daemon wrote it or its
    process has ended."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "not running"}
    if not isinstance(status, dict):
        return {"state": "not running"}
    if status.get("state") != "stopped" and not _alive(status.get("pid")):
        status["state"] = "not running"
    if status["state"] in ("stopped", "not running"):
        # what was true of a process that has ended is not said of it now: no model loaded,
        # nothing queued or in progress (the reader's own process says what is true of it)
        status.pop("model", None)
        status.update(queue=0, in_progress=0)
    return status


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def holds_store_lock(pid: int, store_path: Path) -> bool:
    """True if process `pid` holds the flock on this store's lock file (daemon/service.py's
    acquire_lock): it is this store's daemon, not a process that reused a stale PID."""
    lock = store_path.with_name(store_path.name + ".lock")
    try:
        st = os.stat(lock)
        with open("/proc/locks", encoding="ascii") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return False
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4] == str(pid) \
                and fields[5] == want:
            return True
    return False


def signal_daemon(pid: object, store_path: Path, signum: int) -> bool:
    """Send `signum` to this store's daemon, `pid` as its status file says, only if that
    process holds the store's lock; through a pidfd taken before the check, so the process
    checked is the one signalled (issue 30: a stale status file and a reused PID got a
    `sleep` killed). False when it is not the daemon (nothing is sent)."""
    import signal

    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not holds_store_lock(pid, store_path):
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)
