"""Nothing embedded for model.idle_unload_seconds and nothing waiting → the video model released.

A NAS runs the daemon all year: idle, it should hold next to nothing. The compiled model is
released and loads again from the cached IR when the next clip arrives. The main loop asks
`due_in` how long it may sleep, and `release` once that time has come.
"""

from __future__ import annotations

import logging
import time

from autotag.config import ModelConfig
from autotag.daemon.process import resident_memory
from autotag.daemon.worker import Inbox

log = logging.getLogger(__name__)


def due_in(model: ModelConfig, embedder, inbox: Inbox) -> float | None:
    """Seconds until the video model may be released as idle; None: nothing to release
    (model.idle_unload_seconds is 0, it is released already, or it cannot be)."""
    seconds = model.idle_unload_seconds
    last_used = getattr(embedder, "last_used", None)
    if not seconds or last_used is None or not getattr(embedder, "resident", False):
        return None
    if inbox.busy():
        return None  # busy: each result wakes the main loop to look again
    return max(0.0, last_used + seconds - time.monotonic())


def release(model: ModelConfig, embedder, inbox: Inbox) -> bool:
    """Release the compiled video model if it has been idle long enough; True if released."""
    due = due_in(model, embedder, inbox)
    if due is None or due > 0 or not embedder.unload():
        return False
    log.info("released the video model after %.0f s idle (resident memory now %s); it loads "
             "again from the cache when a clip arrives", model.idle_unload_seconds,
             resident_memory())
    return True
