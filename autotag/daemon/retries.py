"""A failed clip → tried again after a backoff, while it has retries left (passes.MAX_RETRIES).

The attempts live in the state store (Tagger.result counts them); this part decides when: the
watcher holds the path for stability_seconds × 2^attempts, and a request that arrives before
then (a duplicate event) does not spend a retry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from autotag.config import WatchConfig
from autotag.files import show
from autotag.passes import MAX_RETRIES, may_retry
from autotag.store import FileRecord

if TYPE_CHECKING:
    from autotag.tagging import ClipResult

log = logging.getLogger(__name__)


class Later(Protocol):
    """What holds a path back until its retry is due (daemon.watcher.Watcher)."""

    def retry_later(self, path: Path, delay: float) -> None: ...


class Retries:
    """The daemon's backoff for files that did not decode (watch.stability_seconds apart,
    doubling per attempt)."""

    def __init__(self, watch: WatchConfig) -> None:
        self.watch = watch

    def delay(self, attempts: int) -> float:
        """Seconds before a version that failed `attempts` times is tried again (backoff)."""
        return self.watch.stability_seconds * 2 ** attempts

    def schedule(self, result: ClipResult, later: Later | None) -> bool:
        """A failure with retries left is held back for its retry (True); anything else is a
        final result (False), for the caller to say and count."""
        if not (result.status == "failed" and result.retryable
                and 0 < result.attempts <= MAX_RETRIES):
            return False
        delay = self.delay(result.attempts)
        log.info("%s did not decode (%s); trying again in %.1f s", show(result.path),
                 result.reason, delay)
        if later is not None:
            later.retry_later(result.path, delay)
        return True

    def may_retry(self, record: FileRecord) -> bool:
        """A version that failed is tried again while it has retries left (the daemon schedules
        them) and once its retry is due: a second request made before the failure (a
        duplicate event queued meanwhile) must not spend a retry at once. After MAX_RETRIES
        it waits for the file to change (passes.may_retry: the rule --once follows too)."""
        if not may_retry(record):
            return False
        return time.time() - record.updated >= self.delay(record.attempts) / 2
