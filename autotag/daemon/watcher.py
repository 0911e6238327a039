"""File events and rescans → stability tracking → a bounded queue of complete clip files.

Events are hints; stability decides (paperless-ngx's consume folder): any event on a clip path
(re)starts its timer, and the path is handed on only once its size and mtime have held for
`watch.stability_seconds` and it is still a regular file. Files found at startup and by the
periodic rescans go through the same check, so a lost event costs at most one rescan period.
The ticker sleeps until the earliest pending file may be stable, a rescan is due or an event
arrives: an idle watcher does not poll. A watched folder that goes away or comes back is an event
too: inotify's IN_DELETE_SELF on the folder (watchdog's DirDeletedEvent for it) and, on the folder
that holds it, its deletion, move or creation (a non-recursive watch there). What no event says
(an unmount, a network share, a dead observer thread) is caught by a check every CHECK_SECONDS.
No ML imports: this module only knows paths.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from autotag.config import WatchConfig
from autotag.files import Edge, absolute, is_clip_name, is_ignored_path, show, walk_clips

log = logging.getLogger(__name__)

# How often an idle watcher checks its folders are there and its observer lives, for what no
# event tells: an unmount (inotify's IN_UNMOUNT, which watchdog does not pass on), a share that
# is only polled. Events say the rest at once; 2 s cost an idle daemon 1-21 clock ticks in 30 s
# (issue 34), a check each 30 s wakes it once.
CHECK_SECONDS = 30.0
# watchdog's dispatcher waits this long for an event before it looks whether it was stopped
# (its default: 1 s, a wake-up each second); a stop puts a sentinel in its queue, so it ends at
# once whatever this is.
OBSERVER_TIMEOUT = 60.0
BACKLOG_WARNING = 1000  # queued paths before the backlog is logged as a warning
SCAN_BATCH = 500  # clips stat'ed and looked up in the store together by a scan
QUEUE_SIZE = 10_000  # stable paths waiting for the engine; past this, rescans catch up
HOLDER_EVENTS = (DirCreatedEvent, DirDeletedEvent, DirMovedEvent)  # watched folders come, go
INOTIFY_LIMIT = (errno.ENOSPC, errno.EMFILE)  # inotify_add_watch(2): watch or instance limit


@dataclass
class _Pending:
    due: float  # monotonic time at which the file may be stable
    size: int
    mtime: float
    retry: bool = False  # waiting for a retry's backoff, not only for the file to hold still


class StabilityTracker:
    """Paths that had an event, and whether they have held still for `delay` seconds."""

    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.clock = clock
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()

    def touch(self, path: Path, delay: float | None = None) -> None:
        """An event on `path` (re)starts its timer, from now, with its current size and mtime.
        delay: a retry's backoff, which a later event does not cut short (one that changed
        the file starts it over anyway, when its size or mtime is checked)."""
        try:
            st = path.stat()
        except OSError:
            self.forget(path)
            return
        with self._lock:
            due = self.clock() + (self.delay if delay is None else delay)
            old = self._pending.get(path)
            if delay is None and old is not None and old.retry:
                due = max(due, old.due)
            self._pending[path] = _Pending(due, st.st_size, st.st_mtime,
                                           retry=delay is not None or bool(old and old.retry))

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def paths(self) -> list[Path]:
        with self._lock:
            return sorted(self._pending)

    def carry(self) -> list[tuple[Path, float | None]]:
        """Every path with the seconds left on its retry's backoff (None: only waiting to hold
        still), for a successor's tracker: a retry carried over keeps its due time."""
        now = self.clock()
        with self._lock:
            return [(p, max(0.0, e.due - now) if e.retry else None)
                    for p, e in sorted(self._pending.items())]

    def next_due(self) -> float | None:
        """The monotonic time the earliest pending path may be stable, None with none pending."""
        with self._lock:
            return min((e.due for e in self._pending.values()), default=None)

    def ready(self, hand_on: Callable[[Path], None] | None = None) -> list[Path]:
        """Paths whose timer ran out with size and mtime unchanged; they leave the tracker
        after hand_on(path) took them (so a path is always in the tracker or handed on, and
        "nothing pending anywhere" is never true in between). A changed file starts over; a
        vanished or non-regular one is dropped."""
        now = self.clock()
        with self._lock:
            due = sorted(((p, e) for p, e in self._pending.items() if e.due <= now),
                         key=lambda item: item[0])
        stable = []
        for path, entry in due:
            try:
                st = path.stat()
            except OSError:
                self.forget(path)
                continue
            if not stat.S_ISREG(st.st_mode):
                self.forget(path)
            elif (st.st_size, st.st_mtime) != (entry.size, entry.mtime):
                self.touch(path)
            else:
                with self._lock:
                    if self._pending.get(path) is not entry:  # an event came in meanwhile
                        continue
                try:
                    if hand_on is not None:
                        hand_on(path)
                finally:
                    with self._lock:
                        if self._pending.get(path) is entry:
                            del self._pending[path]
                stable.append(path)
        return stable


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _holder(root: Path) -> Path | None:
    """The nearest existing folder above `root` (None for /)."""
    for parent in root.parents:
        if parent.is_dir():
            return parent
    return None


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


class _Handler(FileSystemEventHandler):
    """watchdog events → tracker touches (files) and scans (new folders)."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads, including autotag's own, are not changes
        paths = [event.src_path]
        if event.event_type == "moved":
            self.watcher.forget(Path(os.fsdecode(event.src_path)), removed=not event.is_directory)
            paths = [event.dest_path]
        for raw in paths:
            path = Path(os.fsdecode(raw))
            if event.event_type == "deleted":
                self.watcher.forget(path, removed=not event.is_directory)
                if event.is_directory:
                    self.watcher.root_deleted(path)
            elif event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.watcher.new_folder(path)
            else:
                self.watcher.hint(path)


class _RootsHandler(FileSystemEventHandler):
    """Events in the folders holding the watched ones (watched non-recursively): a watched
    folder (or a folder on its path) deleted, moved away, created or moved in → check now."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not event.is_directory or event.event_type not in ("created", "deleted", "moved"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw and self.watcher.on_path_to_a_root(Path(os.fsdecode(raw))):
                self.watcher.check_soon()
                return


class Watcher:
    """Watches folders and puts each clip, once stable, on `out`. Owns two threads (watchdog's
    observer and the stability ticker), both ended by `stop()`."""

    def __init__(self, roots: Iterable[Path], config: WatchConfig, out: Inbox,
                 exclude: Iterable[Path] = (),
                 known: Callable[[Path, os.stat_result], bool] | None = None,
                 known_many: Callable[[list[tuple[Path, os.stat_result]]], list[bool]]
                 | None = None,
                 gone: Callable[[Path], None] | None = None,
                 changed: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """out: where stable paths go (`put_nowait`, raising queue.Full, and `qsize`).
        known(path, stat): True when this version of the file was handled already (tagged
        or failed), so that scans do not hand the whole library on again; known_many(items),
        if given, answers for (path, stat) items at once instead. gone(path): a clip
        was deleted or moved away (an event, never a missing folder: an unmounted share is not
        a deletion). changed(): the set of pending paths may have shrunk (after each tick)."""
        self.known = known
        self.known_many = known_many
        self.gone = gone
        self.changed = changed
        self.roots = [absolute(r) for r in roots]
        self.config = config
        self.out = out
        self.exclude = [absolute(p) for p in exclude]
        self.tracker = StabilityTracker(config.stability_seconds, clock)
        self.polling = config.polling
        self._stop = threading.Event()
        self._kick = threading.Event()  # a path was touched: its due time may be the earliest
        self._observer = None
        self._watched: dict[Path, tuple[int, int] | None] = {}  # root → (st_dev, st_ino)
        self._holders: set[Path] = set()  # the folders watched for roots coming and going
        self._check_now = False  # a root itself was deleted: check the folders at once
        self._real_roots = {r: _resolved(r) for r in self.roots}  # a root may be a symlink
        self.edge = Edge.of(self.roots, config.follow_symlinks_out)  # where the library ends
        self._ticker = threading.Thread(target=self._tick_loop, name="autotag-stability",
                                        daemon=True)
        self._next_rescan = 0.0

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching, then scan everything once (the startup catch-up)."""
        self._start_observer()
        # set before the ticker starts, or its first tick rescans what scan() below scans
        self._next_rescan = time.monotonic() + self.config.rescan_seconds
        self._ticker.start()
        self.scan(self.roots)

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self._stop_observer()

    # -- what the handler and rescans call --------------------------------------------------

    def hint(self, path: Path) -> None:
        path = self.canonical(path)
        if self._wanted(path):
            self.tracker.touch(path)
            self._kick.set()

    def forget(self, path: Path, removed: bool = False) -> None:
        """Stop tracking path; removed: it was deleted or moved away, tell `gone`."""
        path = self.canonical(path)
        self.tracker.forget(path)
        if removed and self.gone is not None and self._wanted(path) and not path.exists():
            try:
                self.gone(path)
            except Exception:  # noqa: BLE001 - the observer thread must outlive one bad event
                log.exception("cleaning up after %s failed", show(path))

    def canonical(self, path: Path) -> Path:
        """The one path a file is tagged under, as `find_clips` picks it: through no symlink
        when its real path is in a watched folder (a symlinked file is its target; a file seen
        through a symlink loop, `sub/loop/x.mp4`, is `x.mp4`), else the path as given. Without
        this, one clip was tagged twice, under two paths, in watch mode."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
            return path
        for root in self.roots:
            real_root = self._real_roots.get(root) or root
            if real.is_relative_to(real_root):
                return root / real.relative_to(real_root)
        return path

    def root_deleted(self, folder: Path) -> None:
        """A watched folder itself went away (an unmount, a delete): check the folders now."""
        if folder in self._watched:
            self.check_soon()

    def check_soon(self) -> None:
        """Check the folders and the observer at the next tick, not CHECK_SECONDS from now."""
        self._check_now = True
        self._kick.set()

    def on_path_to_a_root(self, path: Path) -> bool:
        """`path` is a watched folder or a folder on the way to one."""
        return any(root == path or root.is_relative_to(path) for root in self.roots)

    def new_folder(self, folder: Path) -> None:
        """A folder created or moved in: files may have landed before its watch existed."""
        root = self._root_of(folder)
        if root is not None and not is_ignored_path(folder, root, self.config.ignore):
            self.scan([folder])

    def scan(self, folders: Iterable[Path]) -> int:
        """Every clip under `folders` not already known in its current version goes through
        the stability check; returns how many. Paths are stat'ed and asked of `known_many`
        SCAN_BATCH at a time (one store query for them, not one each: a catch-up over a
        million tagged clips), and never held all at once."""
        count = 0
        # The walk's own stat of each file. canonical() resolves a path (a syscall per part of
        # it, most of a catch-up's time): from a canonical folder of roots that are their own
        # real paths, only a path reached through a symlink may differ from it.
        folders = [self.canonical(f) for f in folders if f.exists()]
        every = any(self._real_roots[r] != r for r in self.roots)  # as canonical() sees them
        found = ((self.canonical(f.path) if every or f.linked else f.path, f.stat)
                 for f in walk_clips(folders, self.config.ignore, self.exclude,
                                     edge=self.edge))
        while chunk := list(itertools.islice(found, SCAN_BATCH)):
            for path in self._unknown(chunk):
                self.tracker.touch(path)
                count += 1
        if count:
            self._kick.set()
        return count

    def _unknown(self, items: list[tuple[Path, os.stat_result]]) -> list[Path]:
        """The paths whose current version is not known."""
        if self.known_many is not None:
            known = self.known_many(items)
        elif self.known is not None:
            known = [self.known(p, st) for p, st in items]
        else:
            return [p for p, _ in items]
        return [p for (p, _), ok in zip(items, known, strict=True) if not ok]

    def _root_of(self, path: Path) -> Path | None:
        return next((r for r in self.roots if path.is_relative_to(r)), None)

    def retry_later(self, path: Path, delay: float) -> None:
        """Check `path` again after `delay` seconds (a copy that looked complete but did not
        decode may still be arriving)."""
        self.tracker.touch(path, delay)
        self._kick.set()

    def pending(self) -> list[Path]:
        """The paths waiting to be stable (or to be tried again; tracker.carry: with the time
        left on each retry's backoff, for a successor watcher)."""
        return self.tracker.paths()

    def _wanted(self, path: Path) -> bool:
        if not is_clip_name(path.name, self.config.ignore):
            return False
        if any(path.is_relative_to(e) for e in self.exclude):
            return False
        root = self._root_of(path)
        return (root is not None and not is_ignored_path(path, root, self.config.ignore)
                and self.edge.admits(path))

    # -- threads ----------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        """Sleep until a pending path may be stable, a rescan is due, a path is touched, a
        watched folder went or came, or the folders are due for their CHECK_SECONDS check."""
        next_check = time.monotonic() + CHECK_SECONDS
        while not self._stop.is_set():
            due = self.tracker.next_due()
            wake = min(next_check, self._next_rescan if self.config.rescan_seconds else next_check,
                       next_check if due is None else due)
            self._kick.wait(max(0.0, wake - time.monotonic()))
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
                if time.monotonic() >= next_check or self._check_now:
                    self._check_now = False
                    next_check = time.monotonic() + CHECK_SECONDS
                    self._check_observer()
            except Exception:  # noqa: BLE001 - the ticker must outlive one bad tick
                log.exception("watcher tick failed; continuing")

    def _tick(self) -> None:
        try:
            self.tracker.ready(self._hand_on)
        finally:
            if self.changed is not None:
                self.changed()
        if self.config.rescan_seconds and time.monotonic() >= self._next_rescan:
            self._next_rescan = time.monotonic() + self.config.rescan_seconds
            found = self.scan(self.roots)
            log.debug("rescan: %d clips checked", found)

    def _hand_on(self, path: Path) -> None:
        try:
            self.out.put_nowait(path)
        except queue.Full:  # the file stays on disk; the next rescan finds it
            log.warning("queue full (%d clips waiting); %s waits for the next rescan",
                        self.out.qsize(), show(path))

    def _start_observer(self) -> None:
        self._observer = (PollingObserver(timeout=self.config.polling_seconds) if self.polling
                          else Observer(timeout=OBSERVER_TIMEOUT))
        self._watched = {}
        self._schedule_roots()
        try:
            self._observer.start()
        except OSError as exc:
            if exc.errno not in INOTIFY_LIMIT or self.polling:
                raise
            self._fall_back_to_polling(exc)

    def _schedule_roots(self) -> None:
        self._schedule_holders()
        handler = _Handler(self)
        for root in self.roots:
            if root in self._watched or not root.is_dir():
                if not root.is_dir():
                    log.warning("watched folder %s is not there (unmounted?); watching for it "
                                "to come back", root)
                continue
            try:
                self._observer.schedule(handler, str(root), recursive=True)
                self._watched[root] = _identity(root)
            except OSError as exc:
                if exc.errno in INOTIFY_LIMIT and not self.polling:
                    self._fall_back_to_polling(exc)
                    return
                log.warning("cannot watch %s: %s", root, exc.strerror or exc)

    def _schedule_holders(self) -> None:
        """A non-recursive watch on the nearest existing folder above each watched one, so its
        deletion, move or return is an event (inotify on the folder itself goes when it does).
        Polling observers skip this: their CHECK_SECONDS check sees as much for less."""
        if self.polling:
            return
        handler = _RootsHandler(self)
        self._holders = self._holders_now()
        for holder in sorted(self._holders):
            try:
                # folder events only: inotify's mask leaves out a busy parent's file writes
                self._observer.schedule(handler, str(holder), recursive=False,
                                        event_filter=HOLDER_EVENTS)
            except OSError as exc:  # unreadable: the periodic check still covers its roots
                log.debug("cannot watch %s for watched folders coming and going: %s", holder,
                          exc.strerror or exc)

    def _holders_now(self) -> set[Path]:
        return set() if self.polling else {
            h for h in (_holder(r) for r in self.roots) if h is not None}

    def _fall_back_to_polling(self, exc: OSError) -> None:
        log.error("the inotify watch limit is reached (%s); raise it with 'sysctl "
                  "fs.inotify.max_user_watches=524288'; polling every %s s meanwhile",
                  exc.strerror or exc, self.config.polling_seconds)
        self._stop_observer()
        self.polling = True
        self._start_observer()

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join()

    def _check_observer(self) -> None:
        """Recover from a dead observer thread or a folder that went away and came back."""
        # gone: not there, or another folder now (unmounted and mounted again, or deleted and
        # created again, between two checks: the old watch sees nothing of the new folder)
        gone = {r for r, ident in self._watched.items() if _identity(r) != ident}
        back = {r for r in self.roots if (r not in self._watched or r in gone) and r.is_dir()}
        gone -= back
        for root in gone:
            log.warning("watched folder %s disappeared (unmounted?); its clips are kept; "
                        "watching for it to come back", root)
        alive = self._observer is not None and self._observer.is_alive()
        if not alive:
            log.error("the file watcher stopped; restarting it")
        # a folder on the way to a missing one came or went: watch the nearest one there is
        moved = self._holders_now() != self._holders
        if gone or back or not alive or moved:
            kept = set(self._watched) - gone - back
            self._stop_observer()
            self._start_observer()
            # what is watched now and was not: back before the check, or during the restart
            # (the folder above it is watched before it is looked for: no moment unwatched)
            back = set(self._watched) - kept
            if back:
                log.info("watched folder(s) back: %s", ", ".join(map(str, sorted(back))))
                self.scan(back)

    @property
    def backlog(self) -> int:
        return self.out.qsize() + len(self.tracker)


class Inbox(Protocol):
    """Where the watcher puts stable paths (a queue.Queue will do)."""

    def put_nowait(self, path: Path) -> None: ...

    def qsize(self) -> int: ...
