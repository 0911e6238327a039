"""The daemon: lock → load → catch up → watch → engine → tagging → (SIGHUP: reload) → SIGTERM.

One daemon per state store (an flock beside it, daemon/process.py). The main thread only waits
for signals and talks to systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING); the watcher's
threads turn events into stable paths in the inbox (daemon/watching.py); one worker thread runs
the library's one pass on the inbox's paths (daemon/worker.py) and hands each result to this
daemon, which says it, counts it (daemon/progress.py) or schedules its retry
(daemon/retries.py), keeping none. Nothing polls: every thread sleeps on a condition or an event
until there is work (or a timer it set is due), so an idle daemon costs next to nothing and
stops at once. Collaborators come in through the constructor, so tests run a daemon with their
own, subscribe to its results and wait for it to be idle.

The class here owns the life of the process and nothing else: it starts the parts in order,
runs the main loop, reloads and stops them. Each part has one job: web_host.py (the web app),
mqtt_host.py (the MQTT publisher), int8.py (the daemon's own INT8), idle.py (releasing the model).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from autotag.config import Config
from autotag.daemon import idle
from autotag.daemon.mqtt_host import MqttHost
from autotag.daemon.notify import Notifier, watchdog_interval
from autotag.daemon.process import DaemonError, acquire_lock, big_buffers_from_mmap
from autotag.daemon.progress import Progress, model_state
from autotag.daemon.retries import Retries
from autotag.daemon.watcher import BACKLOG_WARNING, QUEUE_SIZE, Watcher
from autotag.daemon.watching import Watching
from autotag.daemon.web_host import WebHost
from autotag.daemon.worker import Inbox, Worker
from autotag.files import absolute
from autotag.passes import MAX_RETRIES, say_result
from autotag.tagging import ClipResult

log = logging.getLogger(__name__)

# what callers and tests import from here
__all__ = ["MAX_RETRIES", "Daemon", "DaemonError", "acquire_lock"]

STOP_TIMEOUT = 8.0  # s to finish the batch in flight on SIGTERM (systemd's default is 90)
STATUS_SECONDS = 5.0  # how often STATUS= and the backlog are reported under systemd


class Daemon:
    """Watch `dirs` (plus watch.paths) and tag each complete clip once.

    open_app(config, embedder_or_None) builds the app (reusing the embedder on a reload that
    keeps the model); reload_config() re-reads the config file. on_result(result) is called for
    every clip's result, on the worker thread; nothing is kept. After a vocabulary change the
    restarted watcher's catch-up scan finds every clip stale, and the engine re-tags each from
    its stored embeddings (no decoding, no video model call), as `autotag retag` does.
    """

    def __init__(self, config: Config, dirs: list[Path], open_app: Callable,
                 reload_config: Callable[[], Config], notifier: Notifier | None = None,
                 on_result: Callable[[ClipResult], None] | None = None) -> None:
        self.config = config
        self.dirs = [absolute(d) for d in dirs]
        self.open_app = open_app
        self.reload_config = reload_config
        self.notifier = notifier or Notifier()
        self.on_result = on_result
        self.inbox = Inbox(QUEUE_SIZE)
        self.progress = Progress(config.state.store_path)
        self.retries = Retries(config.watch)
        self.watching = Watching(self.inbox, lambda: self._app)
        self.worker = Worker(self.inbox, self, self.retries.may_retry, self._worker_died)
        self.mqtt = MqttHost(self._mqtt_status)
        self.web: WebHost | None = None
        self.heartbeat = time.monotonic()
        self.ready = threading.Event()  # set once watching
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reloading = False
        self._worker_failed = False
        self._wake = threading.Event()
        self._app = None
        self._int8 = None  # daemon/int8.py's AutoInt8: the daemon's own INT8 copy (issue 34)
        self._stopped = False  # shut down: the status says so

    @property
    def counts(self) -> Counter[str]:
        """Results by status since start (tests and the STATUS= line)."""
        return self.progress.counts

    @property
    def _watcher(self) -> Watcher | None:
        return self.watching.watcher

    # -- control (signal handlers and tests) ------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self, *_: object) -> None:
        self._reload.set()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending anywhere (no file waiting to be stable or to be tried
        again, none queued, none being tagged) and no reload is due; False after `timeout`."""
        with self.inbox.cond:
            return self.inbox.cond.wait_for(self._idle, timeout)

    def _idle(self) -> bool:
        return (self.ready.is_set() and not self._reload.is_set() and not self._reloading
                and not self.inbox.paths and self.inbox.outstanding == 0
                and self.watching.settled())

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests drive the daemon through request_stop / request_reload
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- life -------------------------------------------------------------------------------

    def run(self) -> int:
        # before the model loads: a bad address fails at once
        self.web = WebHost(self.config, self.status_snapshot, self.request_reload)
        lock = acquire_lock(self.config.state.store_path)
        big_buffers_from_mmap()
        try:
            self._install_signals()
            self._app = self.open_app(self.config, None)
            self.mqtt.start(self.config)
            self.web.start(self._app)
            self._start_watcher()
            self._start_int8()
            self.worker.start(self._app)
            self.notifier.ready(self._status())
            self.ready.set()
            self._write_status()
            self.inbox.wake()
            log.info("watching %s (config: %s)", ", ".join(map(str, self._roots())),
                     self.config.source or "defaults")
            self._main_loop()
        finally:
            clean = self._shutdown()
            lock.close()
        # 1: the tagging loop died, or the batch in flight outlived STOP_TIMEOUT
        return 0 if clean and not self._worker_failed else 1

    def _main_loop(self) -> None:
        interval = watchdog_interval()
        # Wake for the watchdog and STATUS= only when systemd listens; otherwise only on a
        # signal (a NAS runs this all year: an idle daemon must not tick).
        timeout = min(interval or STATUS_SECONDS, STATUS_SECONDS) if self.notifier.enabled \
            else None
        warned = 0.0
        while not self._stop.is_set():
            unload = idle.due_in(self.config.model, self._embedder(), self.inbox)
            waits = [t for t in (timeout, unload) if t is not None]
            self._wake.wait(min(waits) if waits else None)
            self._wake.clear()
            if idle.release(self.config.model, self._embedder(), self.inbox):
                self.notifier.status(self._status())
                self._write_status()
            if self._reload.is_set():
                self._reloading = True
                self._reload.clear()
                try:
                    self._do_reload()
                finally:
                    self._reloading = False
                    self.inbox.wake()
            now = time.monotonic()
            if interval and self._healthy(interval):
                self.notifier.watchdog()  # only while the work loop makes progress
            if timeout is not None:
                self.notifier.status(self._status())
            if self.watching.backlog > BACKLOG_WARNING and now - warned > 60:
                warned = now
                log.warning("backlog: %d clips waiting to be tagged", self.watching.backlog)

    def _healthy(self, interval: float) -> bool:
        """The worker lives, and made progress lately or waits for work with nothing queued."""
        waiting = self.inbox.qsize() == 0 and self.inbox.outstanding == 0
        return self.worker.alive() and (waiting
                                        or time.monotonic() - self.heartbeat < 2 * interval)

    def _shutdown(self) -> bool:
        """Stop serving, watching and tagging; False when the batch in flight did not finish
        in time."""
        self.notifier.stopping()
        if self.web is not None:
            self.web.stop()
        self.watching.stop()
        if self._int8 is not None:
            self._int8.stop()
        clean = self.worker.stop(STOP_TIMEOUT)
        self.mqtt.stop()  # after the worker: the last clip's event gets its chance
        self._stopped = True
        self._write_status()
        if self._app is not None and clean:
            self._app.close()
        log.info("stopped: %s", self._status())
        self.notifier.close()
        return clean

    def _worker_died(self) -> None:
        self._worker_failed = True
        self.request_stop()

    # -- the pass's listener (passes.Listener), on the worker thread -------------------------

    def up_to_date(self, paths: list[Path]) -> None:
        """Not reached: the inbox holds no walk items (the scans asked the rule already)."""

    def windows(self, count: int) -> None:
        self.progress.count_windows(count)

    def result(self, result: ClipResult) -> None:
        """One clip of the worker's pass is done: said and counted, or held for its retry;
        then out of the inbox."""
        self.heartbeat = time.monotonic()
        if not self.retries.schedule(result, self.watching):
            self._finished(result)
        self.mqtt.wake()  # its event is in the outbox
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - a listener's fault must not stop tagging
                log.exception("a result listener failed")
        self.inbox.done()
        if self.config.model.idle_unload_seconds:
            self._wake.set()  # the main loop times the model's idle release anew

    def _finished(self, result: ClipResult) -> None:
        say_result(result, log)
        shown = self.progress.finished(result)
        if result.status == "tagged" and self._int8 is not None:
            self._int8.check()  # before the status is written: it shows INT8's state
        if shown:
            self._write_status()

    # -- status --------------------------------------------------------------------------------

    @property
    def web_port(self) -> int | None:
        """The port the web app listens on (None: not serving)."""
        return self.web.port if self.web is not None else None

    def _embedder(self):
        return getattr(self._app, "embedder", None)

    def _status(self) -> str:
        return self.progress.line(self.watching.backlog, self._embedder())

    def status_snapshot(self) -> dict:
        """What the daemon is doing, for the web app's status page and /metrics."""
        embedder = self._embedder()
        state = ("stopped" if self._stopped else
                 "reloading" if self._reloading or self._reload.is_set() else
                 "watching" if self.ready.is_set() else "starting")
        return self.progress.snapshot(
            state=state, folders=self._roots(), queue=self.watching.backlog,
            in_progress=self.inbox.outstanding,
            model=model_state(embedder, self._int8, stopped=self._stopped))

    def _write_status(self) -> None:
        self.progress.write(self.status_snapshot())

    def _mqtt_status(self) -> dict:
        """What the sensors show besides the store's counts: clips waiting, runtime, precision."""
        from autotag.mqtt import model_status

        return {"waiting": self.watching.backlog,
                **model_status(self.config, self._embedder())}

    # -- the parts that follow the app: watcher, INT8 -----------------------------------------

    def _roots(self) -> list[Path]:
        return list(dict.fromkeys([*self.dirs, *self.config.watch.paths]))

    def _start_watcher(self, carried: list[tuple[Path, float | None]] = ()) -> None:
        self.watching.start(self.config, self._roots(), carried)

    def _start_int8(self) -> None:
        """The daemon's own INT8 copy, prepared once enough clips are tagged (daemon/int8.py)."""
        from autotag.daemon.int8 import AutoInt8

        if self._int8 is not None:
            self._int8.stop()
        self._int8 = AutoInt8(self.config, lambda: self._app.embedder, self._tagged_clips)
        self._int8.check()

    def _tagged_clips(self, limit: int) -> list[Path]:
        """The most recently tagged clips still there, newest first (INT8's calibration)."""
        return [r.path for r in self._app.store.recent("tagged", limit) if r.path.is_file()]

    # -- reload -----------------------------------------------------------------------------

    def _do_reload(self) -> None:
        """SIGHUP: re-read the config; new settings, vocabulary and folders apply at once."""
        self.notifier.reloading()
        log.info("reloading the configuration")
        old = self._app
        try:  # the new app first: a bad model or state path keeps the running one
            config = self.reload_config()
            same_model = old.config.model == config.model
            new = self.open_app(config, old.embedder if same_model else None)
        except Exception as exc:  # noqa: BLE001 - a bad edit must not kill a running daemon
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status())
            return
        self.watching.stop()
        self.worker.stop(None)  # joined: no old thread touches the store after this
        # taken after the join: a clip in flight may have scheduled its retry meanwhile
        carried = self.watching.pending()
        self._app, self.config = new, config
        self.retries = Retries(config.watch)
        self.worker.retry_failed = self.retries.may_retry
        self.progress.store_path = config.state.store_path  # the status file beside it
        if self.web is not None:
            self.web.swap(new)  # the pages read the new store, vocabulary, thresholds
        old.close()
        self.mqtt.reload(old.config, config)
        if new.vocabulary.fingerprint != old.vocabulary.fingerprint:
            log.info("the vocabulary changed; re-tagging the watched clips from their stored "
                     "embeddings")
        self._start_watcher(carried)
        self._start_int8()
        self.worker.start(new)
        self.notifier.ready(self._status())
        self._write_status()
