"""The daemon's results → counts, the last few, windows → STATUS= line, snapshot, status file.

The one place the daemon's status is kept: systemd's STATUS= line, the snapshot the web app is
handed (it never imports the daemon) and the status file `autotag serve` reads in another
process (autotag/status.py) all come from here. It keeps counts, never results.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from autotag.status import status_path, write_status

if TYPE_CHECKING:
    from autotag.tagging import ClipResult

RECENT_RESULTS = 10  # the last results the status page shows


class Progress:
    """What the daemon has done since it started, and the views of it."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.counts: Counter[str] = Counter()  # totals by status, for STATUS= lines
        self.windows = 0  # windows the video model embedded since start, for /metrics
        self.started = time.time()
        self.recent: collections.deque[dict] = collections.deque(maxlen=RECENT_RESULTS)
        self._lock = threading.Lock()  # written from the worker, read by the web app

    def count_windows(self, count: int) -> None:
        self.windows += count

    def finished(self, result: ClipResult) -> bool:
        """One clip's final result counted; True when the status page shows it (the file is
        written anew)."""
        with self._lock:
            self.counts[result.status] += 1
            if result.status not in ("tagged", "reused", "failed"):
                return False
            self.recent.appendleft({"path": str(result.path), "status": result.status,
                                    "tags": [t.label for t in result.tags],
                                    "reason": result.reason, "when": time.time()})
        return True

    def line(self, backlog: int, embedder) -> str:
        """systemd's STATUS= and the log's last line."""
        released = ("; video model released (idle)"
                    if getattr(embedder, "last_used", None) is not None
                    and not getattr(embedder, "resident", True) else "")
        return (f"{self.counts['tagged'] + self.counts['reused']} tagged, "
                f"{self.counts['failed']} failed, {backlog} waiting{released}")

    def snapshot(self, *, state: str, folders: list[Path], queue: int, in_progress: int,
                 model: dict) -> dict:
        """What the daemon is doing, for the web app's status page and /metrics."""
        with self._lock:
            counts, recent = dict(self.counts), list(self.recent)
        return {
            "state": state, "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "folders": [str(p) for p in folders], "queue": queue, "in_progress": in_progress,
            "counts": counts, "windows": self.windows, "model": model, "recent": recent,
        }

    def write(self, snapshot: dict) -> None:
        """The status file beside the store, for `autotag serve` in another process."""
        write_status(status_path(self.store_path), snapshot)


def model_state(embedder, int8, *, stopped: bool) -> dict:
    """The snapshot's model: resident or released, which precision it runs and why, and the
    daemon's INT8 (issue 34; int8: daemon/int8.py's AutoInt8, or None)."""
    from autotag.model import running_precision

    state = {"resident": not stopped
             and bool(getattr(embedder, "resident", embedder is not None)),
             "precision": running_precision(embedder) if embedder is not None else None,
             "precision_reason": getattr(embedder, "precision_reason", None)}
    if int8 is not None:
        state["int8"] = int8.status()
    return state
