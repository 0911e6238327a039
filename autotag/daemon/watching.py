"""The daemon's folders → the watcher (daemon/watcher.py) → stable paths in the inbox.

The daemon's side of the watcher: which folders, and the callbacks the watcher asks. Its scans
ask the one up-to-date rule (passes.UpToDate.done_many), as `--once` and the cluster driver do;
a clip deleted or moved away is forgotten by the tagging step (Tagger.forget).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from autotag.config import Config
from autotag.daemon.watcher import Watcher
from autotag.daemon.worker import Inbox
from autotag.files import Edge, show
from autotag.passes import not_in_store_message

log = logging.getLogger(__name__)


class Watching:
    """One watcher at a time over the daemon's roots, for the app app() returns (the
    daemon's current one: a reload swaps it)."""

    def __init__(self, inbox: Inbox, app: Callable[[], object]) -> None:
        self.inbox = inbox
        self.app = app
        self.watcher: Watcher | None = None
        self._not_in_store = 0  # clips with a sidecar the store does not know, per catch-up scan

    def start(self, config: Config, roots: list[Path],
              carried: Iterable[tuple[Path, float | None]] = ()) -> None:
        """A watcher over `roots` (files the old one was waiting on are `carried` over, a
        retry with the time left on its backoff); its catch-up scan asks `known` of every clip
        before this returns."""
        app = self.app()
        app.store.record_roots(roots)  # what the web app may serve
        app.engine.edge = Edge.of(roots, config.watch.follow_symlinks_out)
        self.watcher = Watcher(roots, config.watch, self.inbox, config.outputs.own_folders,
                               known_many=self.known, gone=self.gone, changed=self.inbox.wake)
        stable = config.watch.stability_seconds
        for path, left in carried:  # never sooner than its backoff: Retries.may_retry would
            # refuse the early request as a duplicate, and nothing would ask again
            self.watcher.retry_later(path, stable if left is None else max(left, stable))
        self._not_in_store = 0
        self.watcher.start()
        if self._not_in_store:
            log.warning(not_in_store_message(self._not_in_store, config))

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def pending(self) -> list[tuple[Path, float | None]]:
        """The paths the (stopped) watcher was still waiting on, each retry with the time left
        on its backoff."""
        return self.watcher.tracker.carry() if self.watcher is not None else []

    def retry_later(self, path: Path, delay: float) -> None:
        if self.watcher is not None:
            self.watcher.retry_later(path, delay)

    @property
    def backlog(self) -> int:
        return self.watcher.backlog if self.watcher is not None else 0

    def settled(self) -> bool:
        """Watching, with no file waiting to be stable or to be tried again."""
        return self.watcher is not None and len(self.watcher.tracker) == 0

    def known(self, items: list[tuple[Path, os.stat_result]]) -> list[bool]:
        """The watcher's scans: these versions need no work now, by the one up-to-date rule
        (passes.UpToDate.done_many: up to date with every output, or failed with no retry
        left), as --once and the cluster driver decide it."""
        app = self.app()
        if app is None:
            return [False] * len(items)
        return app.rule.done_many(items, lost=self._lost)

    def _lost(self, _: Path) -> None:
        self._not_in_store += 1

    def gone(self, path: Path) -> None:
        """A clip was deleted or moved away: the tagging step forgets it (Tagger.forget).
        An XMP or NFO goes only while it holds autotag's data alone (outputs.own_outputs)."""
        app = self.app()
        removed = app.tagger.forget(path) if app is not None else None
        if removed is not None:  # None: never tagged under this path, or forgotten already
            log.info("%s is gone; removed %s", show(path),
                     ", ".join(map(show, removed)) if removed else "nothing (no output left)")
