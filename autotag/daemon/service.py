"""The daemon: lock → load → catch up → watch → engine → tagging → (SIGHUP: reload) → SIGTERM.

One daemon per state store (an flock beside it). The main thread only waits for signals and
talks to systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING); the watcher's threads turn
events into stable paths in the inbox; one worker thread runs the engine and the tagging step on
the inbox's paths and streams each result to the listeners, keeping none. Retry attempts live in
the state store. Nothing polls: every thread sleeps on a condition or an event until there is
work (or a timer it set is due), so an idle daemon costs next to nothing and stops at once.
Collaborators come in through the constructor, so tests run a daemon with their own, subscribe
to its results and wait for it to be idle.
"""

from __future__ import annotations

import collections
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

from autotag.config import Config
from autotag.daemon.notify import Notifier, watchdog_interval
from autotag.daemon.watcher import BACKLOG_WARNING, QUEUE_SIZE, Watcher
from autotag.errors import AutotagError
from autotag.files import Edge, absolute, show
from autotag.passes import MAX_RETRIES, may_retry, not_in_store_message
from autotag.store import FileRecord
from autotag.tagging import ClipResult

log = logging.getLogger(__name__)

STOP_TIMEOUT = 8.0  # s to finish the batch in flight on SIGTERM (systemd's default is 90)
STATUS_SECONDS = 5.0  # how often STATUS= and the backlog are reported under systemd
RECENT_RESULTS = 10  # the last results the status page shows


class DaemonError(AutotagError):
    """The daemon cannot start; one line naming the fix (exit code 2)."""


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


MMAP_THRESHOLD = 1 << 20  # bytes; glibc's mallopt(M_MMAP_THRESHOLD): 1 MB, and no longer dynamic
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _big_buffers_from_mmap() -> None:
    """Buffers of 1 MB and more (a window's frames: 4.8 MB as uint8, 19 MB as float32) come
    from mmap and go back to the system when freed. glibc's default threshold grows to 32 MB
    after the first such free, and then they came from the heap, which a daemon that runs all
    year fragments (an idle release kept ~10 MB more: benchmarks.runtimes)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        pass


def _resident_memory() -> str:
    """This process's resident memory, from /proc (for the log line of an idle release)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) // 1024} MB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


class _Inbox:
    """Stable paths from the watcher → the engine, and how many paths the engine has been
    given and not finished: with the watcher's pending count, what "idle" means."""

    def __init__(self, maxsize: int) -> None:
        self.cond = threading.Condition()
        self.paths: collections.deque[Path] = collections.deque()
        self.maxsize = maxsize
        self.outstanding = 0  # handed to the engine, result not out yet

    def put_nowait(self, path: Path) -> None:
        with self.cond:
            if len(self.paths) >= self.maxsize:
                raise queue.Full
            self.paths.append(path)
            self.cond.notify_all()

    def qsize(self) -> int:
        with self.cond:
            return len(self.paths)

    def until(self, stop: threading.Event) -> Iterator[Path]:
        """The engine's source: each path as it comes, ending once `stop` is set (and woken)."""
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.paths or stop.is_set())
                if stop.is_set():
                    return
                path = self.paths.popleft()
                self.outstanding += 1
            yield path

    def done(self) -> None:
        with self.cond:
            self.outstanding -= 1
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


class _Listener:
    """The daemon as the listener of its worker's pass (passes.Listener)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def up_to_date(self, paths: list[Path]) -> None:
        """Not reached: the inbox holds no walk items (the scans asked the rule already)."""

    def windows(self, count: int) -> None:
        self.daemon._count_windows(count)

    def result(self, result: ClipResult) -> None:
        self.daemon._finished(result)


class _Stop(threading.Event):
    """The worker's stop Event, waking the inbox when set: the engine sets it as its run ends
    (a failed model call) and then joins its decode workers, one of which may wait in the
    inbox for a path; without this wake it waited for the watcher's next tick (2 s, then 30 s
    since issue 34)."""

    def __init__(self, inbox: _Inbox) -> None:
        super().__init__()
        self._inbox = inbox

    def set(self) -> None:
        super().set()
        self._inbox.wake()


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
        self.inbox = _Inbox(QUEUE_SIZE)
        self.counts: Counter[str] = Counter()  # totals by status, for STATUS= lines
        self.heartbeat = time.monotonic()
        self.ready = threading.Event()  # set once watching
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reloading = False
        self._worker_failed = False
        self._wake = threading.Event()
        self._app = None
        self._watcher: Watcher | None = None
        self._worker: threading.Thread | None = None
        self._run_stop = threading.Event()
        self._not_in_store = 0  # clips with a sidecar the store does not know, per catch-up scan
        self.windows = 0  # windows the video model embedded since start, for /metrics
        self.started = time.time()
        self.recent: collections.deque[dict] = collections.deque(maxlen=RECENT_RESULTS)
        self._web = None  # the web app's server, when serve.listen is set
        self._int8 = None  # daemon/int8.py's AutoInt8: the daemon's own INT8 copy (issue 34)
        self._stopped = False  # shut down: the status says so
        self._web_app = None
        self._publisher = None  # MQTT events and discovery (mqtt.Publisher), when mqtt.host is set

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
        watcher = self._watcher
        return (self.ready.is_set() and not self._reload.is_set() and not self._reloading
                and watcher is not None
                and not self.inbox.paths and self.inbox.outstanding == 0
                and len(watcher.tracker) == 0)

    # -- life -------------------------------------------------------------------------------

    def run(self) -> int:
        web = self._web_address()  # before the model loads: a bad address fails at once
        lock = acquire_lock(self.config.state.store_path)
        _big_buffers_from_mmap()
        try:
            self._install_signals()
            self._app = self.open_app(self.config, None)
            self._start_mqtt()
            self._start_web(web)
            self._start_watcher()
            self._start_int8()
            self._start_worker()
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
            unload = self._unload_in()
            waits = [t for t in (timeout, unload) if t is not None]
            self._wake.wait(min(waits) if waits else None)
            self._wake.clear()
            self._unload_if_idle()
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
            backlog = self._watcher.backlog if self._watcher else 0
            if backlog > BACKLOG_WARNING and now - warned > 60:
                warned = now
                log.warning("backlog: %d clips waiting to be tagged", backlog)

    def _unload_in(self) -> float | None:
        """Seconds until the video model may be released as idle; None: nothing to release
        (model.idle_unload_seconds is 0, it is released already, or it cannot be)."""
        seconds = self.config.model.idle_unload_seconds
        embedder = self._app.embedder if self._app is not None else None
        last_used = getattr(embedder, "last_used", None)
        if not seconds or last_used is None or not getattr(embedder, "resident", False):
            return None
        if self.inbox.paths or self.inbox.outstanding:
            return None  # busy: each result wakes the main loop (_work) to look again
        return max(0.0, last_used + seconds - time.monotonic())

    def _unload_if_idle(self) -> None:
        """Release the compiled video model once nothing was embedded for idle_unload_seconds
        and nothing waits to be tagged; the next clip loads it again from the cached IR."""
        due = self._unload_in()
        if due is None or due > 0:
            return
        if self._app.embedder.unload():
            log.info("released the video model after %.0f s idle (resident memory now %s); it "
                     "loads again from the cache when a clip arrives",
                     self.config.model.idle_unload_seconds, _resident_memory())
            self.notifier.status(self._status())
            self._write_status()

    def _healthy(self, interval: float) -> bool:
        """The worker lives, and made progress lately or waits for work with nothing queued."""
        alive = self._worker is not None and self._worker.is_alive()
        waiting = self.inbox.qsize() == 0 and self.inbox.outstanding == 0
        return alive and (waiting or time.monotonic() - self.heartbeat < 2 * interval)

    def _status(self) -> str:
        backlog = self._watcher.backlog if self._watcher else 0
        embedder = self._app.embedder if self._app is not None else None
        released = ("; video model released (idle)"
                    if getattr(embedder, "last_used", None) is not None
                    and not getattr(embedder, "resident", True) else "")
        return (f"{self.counts['tagged'] + self.counts['reused']} tagged, "
                f"{self.counts['failed']} failed, {backlog} waiting{released}")

    def _shutdown(self) -> bool:
        """Stop serving, watching and tagging; False when the batch in flight did not finish
        in time."""
        self.notifier.stopping()
        if self._web is not None:
            self._web.stop()
            self._web_app.state.library.close()
        if self._watcher:
            self._watcher.stop()
        if self._int8 is not None:
            self._int8.stop()
        clean = self._stop_worker(STOP_TIMEOUT)
        self._stop_mqtt()  # after the worker: the last clip's event gets its chance
        self._stopped = True
        self._write_status()
        if self._app is not None and clean:
            self._app.close()
        log.info("stopped: %s", self._status())
        self.notifier.close()
        return clean

    # -- the web app and the status it shows -----------------------------------------------------

    @property
    def web_port(self) -> int | None:
        """The port the web app listens on (None: not serving)."""
        return self._web.port_bound if self._web is not None else None

    def _web_address(self) -> tuple[str, int, str | None] | None:
        """(host, port, token) the web app is to serve on, None when serve.listen is not set;
        ConfigError (exit 2) if it may not (off loopback without a token) or cannot listen."""
        if not self.config.serve.listen:
            return None
        from autotag.web.server import address, check_bind, token_for

        host, port = address(self.config)
        token = token_for(self.config, host)
        check_bind(host, port)
        return host, port, token

    def _start_web(self, web: tuple[str, int, str | None] | None) -> None:
        """The web app in a thread of this process, over this app's store, vocabulary and
        model, with this daemon's live status."""
        if web is None:
            return
        from autotag.web.library import open_library
        from autotag.web.routes import create_app
        from autotag.web.server import WebServer

        host, port, token = web
        library = open_library(self._app, status=self.status_snapshot)
        library.jobs.handed_to_daemon(os.getpid())  # its queue is the outputs' progress
        self._web_app = create_app(library, token, reload=self.request_reload)
        self._web = WebServer(self._web_app, host, port, self.config.serve)
        self._web.start()
        shown = f"[{host}]" if ":" in host else host
        log.info("serving the web app at http://%s:%d%s/", shown, self._web.port_bound,
                 self.config.serve.root_path or "")

    def status_snapshot(self) -> dict:
        """What the daemon is doing, for the web app's status page and /metrics."""
        watcher, embedder = self._watcher, getattr(self._app, "embedder", None)
        state = ("stopped" if self._stopped else
                 "reloading" if self._reloading or self._reload.is_set() else
                 "watching" if self.ready.is_set() else "starting")
        return {
            "state": state, "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "folders": [str(p) for p in self._roots()],
            "queue": watcher.backlog if watcher is not None else 0,
            "in_progress": self.inbox.outstanding, "counts": dict(self.counts),
            "windows": self.windows,
            "model": {"resident": not self._stopped
                      and bool(getattr(embedder, "resident", embedder is not None)),
                      **self._precision(embedder)},
            "recent": list(self.recent),
        }

    def _precision(self, embedder) -> dict:
        """Which precision the video model runs, why, and the daemon's INT8 (issue 34)."""
        from autotag.model import running_precision

        out = {"precision": running_precision(embedder) if embedder is not None else None,
               "precision_reason": getattr(embedder, "precision_reason", None)}
        if self._int8 is not None:
            out["int8"] = self._int8.status()
        return out

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

    def _write_status(self) -> None:
        from autotag.status import status_path, write_status

        write_status(status_path(self.config.state.store_path), self.status_snapshot())

    def _count_windows(self, count: int) -> None:
        self.windows += count

    def _finished(self, result: ClipResult) -> None:
        """One clip of the worker's pass is done: said, counted, and out of the inbox."""
        self._result(result)
        self.inbox.done()
        if self.config.model.idle_unload_seconds:
            self._wake.set()  # the main loop times the model's idle release anew

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests drive the daemon through request_stop / request_reload
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- MQTT ------------------------------------------------------------------------------------

    def _start_mqtt(self) -> None:
        """The publisher of the outbox in a thread (mqtt.Publisher): this daemon is the
        instance Home Assistant sees (its status online, its last will offline)."""
        if not self.config.mqtt.enabled:
            return
        from autotag.mqtt import Publisher

        self._publisher = Publisher(self.config.mqtt, self.config.state.store_path,
                                    self.config.labels, self._mqtt_status, persistent=True)
        self._publisher.start()

    def _stop_mqtt(self) -> None:
        from autotag.mqtt import STOP_DRAIN_SECONDS

        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop(STOP_DRAIN_SECONDS)

    def _reload_mqtt(self, old: Config) -> None:
        """A reload: new MQTT settings start a new publisher; a new vocabulary is announced
        (a tag gone from it loses its Home Assistant entity)."""
        if old.mqtt != self.config.mqtt or old.state != self.config.state:
            self._stop_mqtt()
            self._start_mqtt()
        elif self._publisher is not None and old.labels != self.config.labels:
            self._publisher.set_labels(self.config.labels)

    def _mqtt_status(self) -> dict:
        """What the sensors show besides the store's counts: clips waiting, runtime, precision."""
        from autotag.mqtt import model_status

        watcher = self._watcher
        return {"waiting": watcher.backlog if watcher is not None else 0,
                **model_status(self.config, getattr(self._app, "embedder", None))}

    # -- watcher and worker -----------------------------------------------------------------

    def _roots(self) -> list[Path]:
        return list(dict.fromkeys([*self.dirs, *self.config.watch.paths]))

    def _start_watcher(self, carried: list[Path] = ()) -> None:
        self._app.store.record_roots(self._roots())  # what the web app may serve
        self._app.engine.edge = Edge.of(self._roots(), self.config.watch.follow_symlinks_out)
        self._watcher = Watcher(self._roots(), self.config.watch, self.inbox,
                                self.config.outputs.own_folders,
                                known_many=self._known,
                                gone=self._gone, changed=self.inbox.wake)
        for path in carried:  # files the old watcher was waiting on, retries included
            self._watcher.retry_later(path, self.config.watch.stability_seconds)
        self._not_in_store = 0
        self._watcher.start()  # its catch-up scan asks _known of every clip
        if self._not_in_store:
            log.warning(not_in_store_message(self._not_in_store, self.config))

    def _known(self, items: list[tuple[Path, os.stat_result]]) -> list[bool]:
        """The watcher's scans: these versions need no work now, by the one up-to-date rule
        (passes.UpToDate.done_many: up to date with every output, or failed with no retry
        left), as --once and the cluster driver decide it."""
        app = self._app
        if app is None:
            return [False] * len(items)
        return app.rule.done_many(items, lost=self._lost)

    def _lost(self, _: Path) -> None:
        self._not_in_store += 1

    def _gone(self, path: Path) -> None:
        """A clip was deleted or moved away: the tagging step forgets it (Tagger.forget).
        An XMP or NFO goes only while it holds autotag's data alone (outputs.own_outputs)."""
        app = self._app
        removed = app.tagger.forget(path) if app is not None else None
        if removed is not None:  # None: never tagged under this path, or forgotten already
            log.info("%s is gone; removed %s", show(path),
                     ", ".join(map(show, removed)) if removed else "nothing (no output left)")

    def _start_worker(self) -> None:
        self._run_stop = _Stop(self.inbox)
        self._worker = threading.Thread(target=self._work, args=(self._app, self._run_stop),
                                        name="autotag-tagging")
        self._worker.start()

    def _stop_worker(self, timeout: float | None) -> bool:
        """Stop taking paths and finish the batch in flight; a reload waits for it (timeout
        None: the old app must be done with the store before the new one starts)."""
        self._run_stop.set()
        self.inbox.wake()
        worker, self._worker = self._worker, None
        if worker is None:
            return True
        worker.join(timeout)
        if worker.is_alive():
            log.warning("the batch in flight did not finish in %.0f s; its clips will be "
                        "tagged at the next start", timeout)
            return False
        return True

    def _work(self, app, stop: threading.Event) -> None:
        from autotag.passes import run_pass

        try:  # the library's one pass, over the inbox, reporting to this daemon
            run_pass(app, self.inbox.until(stop), _Listener(self), stop=stop,
                     retry_failed=self._may_retry)
        except Exception:  # noqa: BLE001 - a daemon that tags nothing must not look alive
            log.exception("the tagging loop failed; stopping (exit code 1)")
            self._worker_failed = True
            self.request_stop()

    def _result(self, result: ClipResult) -> None:
        self.heartbeat = time.monotonic()
        path = result.path
        if result.status == "failed" and result.retryable and 0 < result.attempts <= MAX_RETRIES:
            delay = self._retry_delay(result.attempts)
            log.info("%s did not decode (%s); trying again in %.1f s", show(path),
                     result.reason, delay)
            if self._watcher is not None:
                self._watcher.retry_later(path, delay)
        else:
            self.counts[result.status] += 1
            if result.status == "failed":
                log.error("skipping %s: %s", show(path), result.reason)
            elif result.status in ("tagged", "reused"):
                tags = ", ".join(f"{t.label} {t.score:.2f}" for t in result.tags) or "no tag"
                log.info("%s %s: %s", result.status, show(path), tags)  # reused: no model
            if result.status == "tagged" and self._int8 is not None:
                self._int8.check()
            if result.status in ("tagged", "reused", "failed"):
                self.recent.appendleft({"path": str(path), "status": result.status,
                                        "tags": [t.label for t in result.tags],
                                        "reason": result.reason, "when": time.time()})
                self._write_status()
        if self._publisher is not None:
            self._publisher.wake()  # its event is in the outbox
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - a listener's fault must not stop tagging
                log.exception("a result listener failed")

    def _retry_delay(self, attempts: int) -> float:
        """Seconds before a version that failed `attempts` times is tried again (backoff)."""
        return self.config.watch.stability_seconds * 2 ** attempts

    def _may_retry(self, record: FileRecord) -> bool:
        """A version that failed is tried again while it has retries left (the daemon schedules
        them) and once its retry is due: a second request made before the failure (a
        duplicate event queued meanwhile) must not spend a retry at once. After MAX_RETRIES
        it waits for the file to change (passes.may_retry: the rule --once follows too)."""
        if not may_retry(record):
            return False
        return time.time() - record.updated >= self._retry_delay(record.attempts) / 2

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
        old_watcher = self._watcher
        if old_watcher is not None:
            old_watcher.stop()
        self._stop_worker(None)  # joined: no old thread touches the store after this
        # taken after the join: a clip in flight may have scheduled its retry meanwhile
        carried = old_watcher.pending() if old_watcher is not None else []
        self._app, self.config = new, config
        if self._web_app is not None:  # the pages read the new store, vocabulary, thresholds
            from autotag.web.library import open_library

            previous = self._web_app.state.library
            self._web_app.state.library = open_library(new, status=self.status_snapshot)
            self._web_app.state.library.jobs.handed_to_daemon(os.getpid())
            previous.close()
        old.close()
        self._reload_mqtt(old.config)
        if self._app.vocabulary.fingerprint != old.vocabulary.fingerprint:
            log.info("the vocabulary changed; re-tagging the watched clips from their stored "
                     "embeddings")
        self._start_watcher(carried)
        self._start_int8()
        self._start_worker()
        self.notifier.ready(self._status())
        self._write_status()
