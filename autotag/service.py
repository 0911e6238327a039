"""The daemon's life: lock → load → catch up → watch → tag → (SIGHUP: reload) → SIGTERM: stop.

One daemon per state store (an flock beside it). The main thread only waits for signals and
talks to systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING); the watcher's threads turn
events into stable paths on a bounded queue; one worker thread runs the pipeline on that queue.
Collaborators come in through the constructor, so tests run a daemon with their own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from autotag.config import Config, OutputsConfig
from autotag.files import absolute, show
from autotag.notify import Notifier, watchdog_interval
from autotag.outputs.preview import preview_name
from autotag.outputs.sidecar import sidecar_path
from autotag.watcher import BACKLOG_WARNING, QUEUE_SIZE, Watcher

log = logging.getLogger(__name__)

STOP_TIMEOUT = 8.0  # s to finish the batch in flight on SIGTERM (systemd's default is 90)
STATUS_SECONDS = 5.0  # how often STATUS= and the backlog are reported
SOURCE_POLL = 0.5  # s; the worker's wait for a path, and its heartbeat when idle
MAX_RETRIES = 3  # decode failures right after a file looked stable: retried with backoff


class DaemonError(Exception):
    """The daemon cannot start; one line naming the fix (exit code 2)."""


def own_outputs(clip: Path, outputs: OutputsConfig) -> list[Path]:
    """The files autotag alone writes for a clip (never XMP or NFO, which users edit too)."""
    found = [sidecar_path(clip, outputs)] if outputs.sidecars else []
    if outputs.previews:
        found.append(outputs.previews / preview_name(clip))
    return found


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def acquire_lock(state_path: Path):
    """An exclusive flock on `<state>.lock`, held for the daemon's life (released on exit)."""
    lock_path = state_path.with_name(state_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open until release_lock
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


class Daemon:
    """Watch `dirs` (plus watch.paths) and tag each complete clip once.

    open_app(config, embedder_or_None) builds the pipeline (reusing the embedder on a reload
    that keeps the model); reload_config() re-reads the config file. After a vocabulary change
    the restarted watcher's catch-up scan finds every clip stale, and the pipeline re-tags each
    from its stored embeddings (no decoding, no video model call), as `autotag retag` does.
    """

    def __init__(self, config: Config, dirs: list[Path], open_app: Callable,
                 reload_config: Callable[[], Config], notifier: Notifier | None = None) -> None:
        self.config = config
        self.dirs = [absolute(d) for d in dirs]
        self.open_app = open_app
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.queue: queue.Queue[Path] = queue.Queue(QUEUE_SIZE)
        self.counts: Counter[str] = Counter()
        self.heartbeat = time.monotonic()
        self.ready = threading.Event()  # set once watching (tests wait on it)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._attempts: dict[Path, int] = {}
        self._app = None
        self._watcher: Watcher | None = None
        self._worker: threading.Thread | None = None
        self._run_stop = threading.Event()

    # -- control (signal handlers and tests) ------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self, *_: object) -> None:
        self._reload.set()
        self._wake.set()

    # -- life -------------------------------------------------------------------------------

    def run(self) -> int:
        lock = acquire_lock(self.config.state.store_path)
        try:
            self._install_signals()
            self._app = self.open_app(self.config, None)
            self._start_watcher()
            self._start_worker()
            self.notifier.ready(self._status())
            self.ready.set()
            log.info("watching %s", ", ".join(map(str, self._roots())))
            self._main_loop()
            return 0
        finally:
            self._shutdown()
            lock.close()

    def _main_loop(self) -> None:
        interval = watchdog_interval()
        next_status = 0.0
        warned = 0.0
        while not self._stop.is_set():
            self._wake.wait(min(interval or STATUS_SECONDS, STATUS_SECONDS, 1.0))
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            now = time.monotonic()
            if interval and self._healthy(interval):
                self.notifier.watchdog()  # only while the work loop makes progress
            if now >= next_status:
                next_status = now + STATUS_SECONDS
                self.notifier.status(self._status())
                backlog = self._watcher.backlog if self._watcher else 0
                if backlog > BACKLOG_WARNING and now - warned > 60:
                    warned = now
                    log.warning("backlog: %d clips waiting to be tagged", backlog)

    def _healthy(self, interval: float) -> bool:
        alive = self._worker is not None and self._worker.is_alive()
        return alive and time.monotonic() - self.heartbeat < 2 * interval

    def _status(self) -> str:
        backlog = self._watcher.backlog if self._watcher else 0
        return (f"{self.counts['tagged'] + self.counts['reused']} tagged, "
                f"{self.counts['failed']} failed, {backlog} waiting")

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self._watcher:
            self._watcher.stop()
        self._stop_worker()
        if self._app is not None:
            self._app.close()
        log.info("stopped: %s", self._status())
        self.notifier.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests drive the daemon through request_stop / request_reload
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- watcher and worker -----------------------------------------------------------------

    def _roots(self) -> list[Path]:
        return list(dict.fromkeys([*self.dirs, *self.config.watch.paths]))

    def _start_watcher(self) -> None:
        outputs = self.config.outputs
        exclude = [p for p in (outputs.previews, outputs.sidecar_dir) if p]
        self._watcher = Watcher(self._roots(), self.config.watch, self.queue, exclude,
                                known=self._known, gone=self._gone)
        self._watcher.start()

    def _known(self, path: Path, st: os.stat_result) -> bool:
        """This version of the file was tagged with the current vocabulary, or failed."""
        record = self._app.store.file(path) if self._app is not None else None
        if record is None or not record.matches(st.st_size, st.st_mtime):
            return False
        return record.status == "failed" or (
            record.model == self._app.tagger.model
            and record.vocabulary == self._app.vocabulary.fingerprint)

    def _gone(self, path: Path) -> None:
        """A clip was deleted or moved away: its own outputs (the JSON sidecar, the preview) go
        with it and the store forgets the path (its embeddings stay: a clip moved elsewhere is
        tagged from them). XMP and NFO sidecars hold users' data and are never removed."""
        app = self._app
        if app is None or app.store.file(path) is None:
            return
        removed = [p for p in own_outputs(path, app.config.outputs) if _unlink(p)]
        app.store.forget(path)
        log.info("%s is gone; removed %s", show(path),
                 ", ".join(map(show, removed)) if removed else "nothing (no output left)")

    def _start_worker(self) -> None:
        self._run_stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(self._app, self._run_stop),
                                        name="autotag-pipeline")
        self._worker.start()

    def _stop_worker(self) -> None:
        self._run_stop.set()
        if self._worker is not None:
            self._worker.join(STOP_TIMEOUT)
            if self._worker.is_alive():
                log.warning("the batch in flight did not finish in %.0f s; its clips will be "
                            "tagged at the next start", STOP_TIMEOUT)
            self._worker = None

    def _work(self, app, stop: threading.Event) -> None:
        try:
            app.pipeline.run(self._source(stop), stop=stop, on_result=self._result,
                             retry_failed=lambda path: path in self._attempts)
        except Exception:  # noqa: BLE001 - logged; the watchdog sees the worker gone
            log.exception("the tagging loop failed")

    def _source(self, stop: threading.Event) -> Iterator[Path]:
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                yield self.queue.get(timeout=SOURCE_POLL)
            except queue.Empty:
                continue

    def _result(self, result) -> None:
        self.heartbeat = time.monotonic()
        path = result.path
        if result.status == "failed" and result.retryable and self._watcher is not None:
            attempt = self._attempts.get(path, 0) + 1
            if attempt <= MAX_RETRIES:
                self._attempts[path] = attempt
                delay = self.config.watch.stability_seconds * 2 ** attempt
                log.info("%s did not decode (%s); trying again in %.0f s", show(path),
                         result.reason, delay)
                self._watcher.retry_later(path, delay)
                return
        self._attempts.pop(path, None)
        self.counts[result.status] += 1
        if result.status == "failed":
            log.error("skipping %s: %s", show(path), result.reason)
        elif result.status in ("tagged", "reused"):
            tags = ", ".join(f"{t.label} {t.score:.2f}" for t in result.tags) or "no tag"
            log.info("tagged %s: %s", show(path), tags)

    # -- reload -----------------------------------------------------------------------------

    def _do_reload(self) -> None:
        """SIGHUP: re-read the config; new settings, vocabulary and folders apply at once."""
        self.notifier.reloading()
        log.info("reloading the configuration")
        try:
            config = self.reload_config()
        except Exception as exc:  # noqa: BLE001 - a bad edit must not kill a running daemon
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status())
            return
        self._stop_worker()
        old, self.config = self._app, config
        same_model = old.config.model == config.model
        self._app = self.open_app(config, old.embedder if same_model else None)
        old.close()
        if self._app.vocabulary.fingerprint != old.vocabulary.fingerprint:
            log.info("the vocabulary changed; re-tagging the watched clips from their stored "
                     "embeddings")
        if self._watcher is not None:
            self._watcher.stop()
        self._start_watcher()
        for path, attempt in self._attempts.items():  # retries the old watcher had pending
            self._watcher.retry_later(path, self.config.watch.stability_seconds * 2 ** attempt)
        self._start_worker()
        self.notifier.ready(self._status())
