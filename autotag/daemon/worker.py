"""Stable paths (the inbox) → the library's one pass (passes.run_pass) on one thread → a Listener.

The worker owns the thread that tags: it takes the inbox's paths as they come, runs the same
pass as `--once`, and hands each result to the listener it was given (the daemon). The inbox
counts the paths handed to the engine and not finished: with the watcher's pending count, what
"idle" means.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from autotag.passes import Listener, run_pass

log = logging.getLogger(__name__)


class Inbox:
    """Stable paths from the watcher → the engine, and how many paths the engine has been
    given and not finished."""

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

    def busy(self) -> bool:
        """A path waits, or is being tagged."""
        with self.cond:
            return bool(self.paths) or self.outstanding > 0

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


class _Stop(threading.Event):
    """The worker's stop Event, waking the inbox when set: the engine sets it as its run ends
    (a failed model call) and then joins its decode workers, one of which may wait in the
    inbox for a path; without this wake it waited for the watcher's next tick (2 s, then 30 s
    since issue 34)."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self._inbox = inbox

    def set(self) -> None:
        super().set()
        self._inbox.wake()


class Worker:
    """One thread running the pass over the inbox for one app; start() → stop(timeout).
    failed(): called once if the pass itself dies (a daemon that tags nothing must not look
    alive); retry_failed(record): may a failed version be tried again now."""

    def __init__(self, inbox: Inbox, listener: Listener, retry_failed: Callable,
                 failed: Callable[[], None]) -> None:
        self.inbox = inbox
        self.listener = listener
        self.retry_failed = retry_failed
        self.failed = failed
        self._stop = _Stop(inbox)
        self._thread: threading.Thread | None = None

    def start(self, app) -> None:
        self._stop = _Stop(self.inbox)
        self._thread = threading.Thread(target=self._work, args=(app, self._stop),
                                        name="autotag-tagging")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None) -> bool:
        """Stop taking paths and finish the batch in flight; a reload waits for it (timeout
        None: the old app must be done with the store before the new one starts)."""
        self._stop.set()
        self.inbox.wake()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the batch in flight did not finish in %.0f s; its clips will be "
                        "tagged at the next start", timeout)
            return False
        return True

    def _work(self, app, stop: threading.Event) -> None:
        try:  # the library's one pass, over the inbox, reporting to the listener
            run_pass(app, self.inbox.until(stop), self.listener, stop=stop,
                     retry_failed=self.retry_failed)
        except Exception:  # noqa: BLE001 - a daemon that tags nothing must not look alive
            log.exception("the tagging loop failed; stopping (exit code 1)")
            self.failed()
