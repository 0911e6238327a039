"""(path, stat) → the store's record → up to date? → the paths that need work → engine → tagging.

The one up-to-date rule ("is this version done?") and the one pass that applies it. `--once`,
the daemon's catch-up scan and worker, the cluster driver, retag after a change made in the web
app: all of them ask `UpToDate`, so a file done for one is done for all, and a failed file is
tried again by each of them under the same rule (MAX_RETRIES).

A version is up to date when the store says it was tagged, with this model, this vocabulary and
these output settings (`outputs_digest`), its embeddings are stored, and its JSON sidecar (when
sidecars are written) is the one written with the record. The check is a comparison of the
store's row with the walk's stat and one stat of the sidecar: no file is opened for an
unchanged clip (tests/test_scale.py), so a million-file pass stays cheap. An output switched on
later (XMP, NFO, previews) or new thresholds change the digest: every clip is stale once and
is tagged again from its stored embeddings (no decoding), which writes what it lacks.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from autotag.config import Config
from autotag.files import show
from autotag.outputs import listed_outputs, outputs_digest
from autotag.outputs.sidecar import read_sidecar, sidecar_file, sidecar_path
from autotag.store import FileRecord, Store, Version

if TYPE_CHECKING:
    from autotag.engine import RetryFailed
    from autotag.tagging import ClipResult

FRESH_BATCH = 500  # files stat'ed, then looked up in the store with one query (Store.versions)
MAX_RETRIES = 3  # a failed version is tried again this many times, then waits for a change


class UpToDate:
    """The up-to-date rule of one app (config, store, model, vocabulary), asked by every pass."""

    def __init__(self, config: Config, store: Store, model: str, vocabulary: str) -> None:
        self.config = config
        self.store = store
        self.model = model
        self.vocabulary = vocabulary
        self.digest = outputs_digest(config)
        self._listed = listed_outputs(config)

    def fresh(self, path: Path, st: os.stat_result) -> bool:
        """This version of the file is tagged already, with every output it should have."""
        return self.fresh_many([(path, st)])[0]

    def fresh_many(self, items: list[tuple[Path, os.stat_result]],
                   versions: dict[str, Version] | None = None) -> list[bool]:
        """fresh for many files, with one store query per LOOKUP_CHUNK of them (`versions`:
        that query's answer, if made already)."""
        names = [str(p) for p, _ in items]
        if versions is None:
            versions = self.store.versions(names)
        marks: list[tuple[int, str, str]] = []
        found = [self._fresh(name, st, versions.get(name), marks)
                 for name, (_, st) in zip(names, items, strict=True)]
        self.store.note_sidecars(marks)
        return found

    def done_many(self, items: list[tuple[Path, os.stat_result]],
                  lost: Callable[[Path], None] | None = None) -> list[bool]:
        """Needs no work now: up to date, or a version that failed and has no retry left
        (it waits for the file to change). lost(path): a clip with a sidecar the store does
        not know (a lost store). What the daemon's scans ask."""
        versions = self.store.versions([str(p) for p, _ in items])
        fresh = self.fresh_many(items, versions)
        done = []
        for (path, st), ok in zip(items, fresh, strict=True):
            version = versions.get(str(path))
            if version is None and lost is not None and self.has_sidecar(path):
                lost(path)
            done.append(ok or self.failed_for_good(version, st))
        return done

    @staticmethod
    def failed_for_good(version: Version | FileRecord | None, st: os.stat_result) -> bool:
        return (version is not None and version.status == "failed"
                and version.matches(st.st_size, st.st_mtime) and not may_retry(version))

    def not_in_store(self, path: Path) -> bool:
        """The clip has a sidecar but the store has no record of its path (the store was
        deleted, damaged and moved aside, or this is a new machine): it is embedded again."""
        return self.store.file(path) is None and self.has_sidecar(path)

    def has_sidecar(self, path: Path) -> bool:
        return self.config.outputs.sidecars and sidecar_path(path, self.config.outputs).exists()

    def _fresh(self, path: str, st: os.stat_result | None, version: Version | None,
               marks: list[tuple[int, str, str]]) -> bool:
        """The rule for one row; a sidecar that matched by reading is added to `marks` as
        (st_mtime_ns, digest, path), for the store to remember (Store.note_sidecars)."""
        if (version is None or st is None or not stat.S_ISREG(st.st_mode)
                or not version.matches(st.st_size, st.st_mtime) or version.status != "tagged"
                or not version.stored or version.model != self.model
                or version.vocabulary != self.vocabulary):
            return False
        if version.outputs is not None and version.outputs != self.digest:
            return False  # an output switched on or off, other thresholds: a comparison
        if not self.config.outputs.sidecars:
            return True  # (a record older than schema 6 is trusted here, as it was)
        where = sidecar_file(path, self.config.outputs)
        try:
            mtime_ns = os.stat(where).st_mtime_ns
        except OSError:
            return False
        if version.sidecar == mtime_ns and version.outputs is not None:
            return True
        # a sidecar rewritten since by something else, or a store older than schema 6: read
        # once; a legacy record counts as done when its sidecar lists every output wanted now
        sidecar = read_sidecar(Path(where)) or {}
        source = sidecar.get("source") or {}
        written = sidecar.get("outputs") or {}
        fresh = (source.get("size") == st.st_size and source.get("mtime") == st.st_mtime
                 and sidecar.get("model") == self.model
                 and sidecar.get("vocabulary") == self.vocabulary
                 and (version.outputs is not None or all(n in written for n in self._listed)))
        if fresh:
            marks.append((mtime_ns, self.digest, path))
        return fresh


def may_retry(record: Version | FileRecord) -> bool:
    """A version that failed is tried again while it has retries left: by `--once` at each
    run, by the daemon after its backoff (Daemon._may_retry), by a scan or a restart."""
    return record.attempts <= MAX_RETRIES


def fresh_pass(rule: UpToDate, found: Iterable[tuple[Path, os.stat_result]],
               on_fresh: Callable[[list[Path]], None], batch: int = FRESH_BATCH,
               not_in_store: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """The up-to-date pass, streamed: the walk's (path, stat) items (files.Found) → the paths
    that need work, in order; the up-to-date ones go to on_fresh(paths) instead, a batch at a
    time, never through the engine (handing a million unchanged clips through its threads one
    by one was most of a pass). One store query per `batch` and the sidecar's stat: no file is
    opened for an unchanged clip, and nothing is kept beyond one batch. not_in_store(path): a
    clip with a sidecar the store does not know (a lost store), as UpToDate.not_in_store says."""
    found, size = iter(found), 1
    # batches of 1, 2, 4, ... `batch`: the first clip goes on at once, later ones share queries
    while chunk := list(itertools.islice(found, size)):
        size = min(2 * size, batch)
        fresh = rule.fresh_many([(p, st) for p, st, *_ in chunk])
        stale = [item[0] for item, ok in zip(chunk, fresh, strict=True) if not ok]
        if len(stale) < len(chunk):
            on_fresh([item[0] for item, ok in zip(chunk, fresh, strict=True) if ok])
        for path in stale:
            if not_in_store is not None and rule.not_in_store(path):
                not_in_store(path)
            yield path


def not_in_store_message(count: int, config: Config) -> str:
    """Said once per run: clips tagged by their sidecars that the store does not know."""
    return (f"{count} clip{'s' if count != 1 else ''} not in the state store "
            f"({config.state.store_path}): embedding them again")


def say_result(result: ClipResult, logger: logging.Logger) -> None:
    """The one line a clip's result gets, for the terminal and the daemon alike: `skipping
    PATH: REASON` for a failure, `tagged PATH: label score, ...` (or reused: from stored
    embeddings, no model), and a skipped clip's reason (up to date: only with --debug)."""
    path = show(result.path)
    if result.status == "failed":
        logger.error("skipping %s: %s", path, result.reason)
    elif result.status in ("tagged", "reused"):
        tags = ", ".join(f"{t.label} {t.score:.2f}" for t in result.tags) or "no tag"
        logger.info("%s %s: %s", result.status, path, tags)
    elif result.reason == "up to date":
        logger.debug("%s %s: %s", result.status, path, result.reason)
    else:
        logger.info("%s %s: %s", result.status, path, result.reason)


class Listener(Protocol):
    """What a pass reports to: the terminal (cli.common.Reporter), the daemon (its status,
    log lines and retries), a test. Called on the pass's thread; one clip's result each."""

    def up_to_date(self, paths: list[Path]) -> None:
        """These clips needed no work (counted, no line each)."""

    def windows(self, count: int) -> None:
        """`count` more windows went through the video model."""

    def result(self, result: ClipResult) -> None:
        """What became of one clip that needed work."""


class Tags(Protocol):
    """What a pass runs on: app.App (not imported: the app is built above this module)."""

    rule: UpToDate

    def tag(self, paths: Iterable[Path], **kwargs: object) -> Iterator[ClipResult]: ...


def run_pass(app: Tags, paths: Iterable[Path | tuple], listener: Listener, *,
             force: bool = False, retry_failed: RetryFailed = may_retry,
             stop: threading.Event | None = None, lost: Callable[[Path], None] | None = None
             ) -> None:
    """The one pass: paths (or the walk's (path, stat) items, which first go through the
    up-to-date pass, fresh_pass) → engine → tagging → listener. `--once` hands it the walk, the
    daemon's worker its inbox (its scans asked the rule already: UpToDate.done_many); every
    path the engine sees is asked the same rule again (Engine.embed's `fresh`), with the same
    retries. force: every clip again, decoded anew. lost(path): a clip with a sidecar the
    store does not know."""
    if not force:
        paths = _stale(app.rule, paths, listener, lost)
    else:
        paths = (p if isinstance(p, Path) else p[0] for p in paths)
    for result in app.tag(paths, force=force, retry_failed=retry_failed, stop=stop,
                          on_windows=listener.windows):
        listener.result(result)


def _stale(rule: UpToDate, paths: Iterable[Path | tuple], listener: Listener,
           lost: Callable[[Path], None] | None) -> Iterator[Path]:
    """Walk items through fresh_pass; bare paths (an inbox) as they come."""
    paths = iter(paths)
    first = next(paths, None)
    if first is None:
        return
    chained = itertools.chain([first], paths)
    if isinstance(first, Path):
        yield from chained
    else:
        yield from fresh_pass(rule, chained, listener.up_to_date, not_in_store=lost)
