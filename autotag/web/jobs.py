"""A change made in the web app (teach, calibrate, a SIGHUP to `autotag serve`) → every clip
the up-to-date rule finds stale → re-tagged from its stored embeddings → progress as JSON.

One truth: what the pages count and what the sidecars, XMP and NFO say must not drift apart
until someone thinks of `autotag retag`. So the process that made the change brings the files
up to date itself, in a background thread its library owns (a stop Event; a newer change stops
the older job, closing the library stops it), and the page polls `GET /api/jobs`. When a
daemon runs on the same store it is told instead (SIGHUP): one writer of the outputs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from autotag.passes import UpToDate
from autotag.retagging import retag, stored_clips
from autotag.store import FileRecord, Store
from autotag.tagging import Tagger

log = logging.getLogger(__name__)

JOIN_SECONDS = 10.0  # a stopped job finishes the clip it is writing


class Retagger:
    """Brings the outputs of a library's clips up to date, one job at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._progress: dict = {"state": "idle", "done": 0, "total": 0, "failed": 0}

    def start(self, rule: UpToDate, tagger: Tagger, store: Store) -> None:
        """Re-tag, in the background, every stored clip the rule finds stale (new vocabulary,
        thresholds or outputs): from stored embeddings, no decoding. An older job stops."""
        self.close()
        with self._lock:
            self._stop = threading.Event()
            self._progress = {"state": "running", "done": 0, "total": 0, "failed": 0,
                              "started": time.time()}
            self._thread = threading.Thread(target=self._run,
                                            args=(rule, tagger, store, self._stop),
                                            name="autotag-web-retag")
            self._thread.start()

    def handed_to_daemon(self, pid: int) -> None:
        """A daemon on this store does it (it was sent SIGHUP): its queue is the progress."""
        with self._lock:
            self._progress = {"state": "daemon", "pid": pid, "done": 0, "total": 0,
                              "failed": 0}

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._progress)

    def close(self) -> None:
        """Stop the job in flight, if any, after the clip it is on."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_SECONDS)

    def _run(self, rule: UpToDate, tagger: Tagger, store: Store,
             stop: threading.Event) -> None:
        try:
            stale = self._stale(rule, stored_clips(store, tagger.model))
            self._update(total=len(stale))
            for result in retag(tagger, store, stale):
                self._update(done=1, failed=int(result.status == "failed"))
                if result.status == "failed":
                    log.error("skipping %s: %s", result.path, result.reason)
                if stop.is_set():
                    self._update(state="stopped")
                    return
            log.info("outputs brought up to date: %d clip(s) re-tagged from stored embeddings",
                     len(stale))
            self._update(state="done", finished=time.time())
        except Exception as exc:  # noqa: BLE001 - the page says so; the server goes on
            log.exception("bringing the outputs up to date failed")
            self._update(state="failed", error=str(exc))

    @staticmethod
    def _stale(rule: UpToDate, records: list[FileRecord]) -> list[FileRecord]:
        """The records whose file is there, unchanged, and not up to date by the rule."""
        items = []
        for record in records:
            try:
                items.append((record, os.stat(record.path)))
            except OSError:
                continue  # gone: retag would skip it; not a change to make
        fresh = rule.fresh_many([(r.path, st) for r, st in items])
        return [r for (r, _), ok in zip(items, fresh, strict=True) if not ok]

    def _update(self, state: str | None = None, done: int = 0, failed: int = 0,
                **more: object) -> None:
        with self._lock:
            if state is not None:
                self._progress["state"] = state
            self._progress["done"] += done
            self._progress["failed"] += failed
            self._progress.update(more)


class Reloader:
    """`autotag serve`'s SIGHUP: the signal handler only sets an event; this thread does the
    reload (config, vocabulary, outputs), so the server's event loop never waits for it."""

    def __init__(self, reload: Callable[[], None]) -> None:
        self.reload = reload
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autotag-serve-reload")

    def start(self) -> None:
        self._thread.start()

    def request(self, *_: object) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reload()
            except Exception as exc:  # noqa: BLE001 - a bad edit must not end the server
                log.error("reload failed, keeping the running configuration: %s", exc)


def api_jobs(request: Request) -> Response:
    """GET /api/jobs: {"state": idle|running|done|stopped|failed|daemon, "done", "total",
    "failed"}: how far bringing the outputs up to date after a change has come."""
    return JSONResponse(request.app.state.library.jobs.snapshot())
