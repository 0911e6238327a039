"""Engine outcome → scores against the vocabulary → tags → outputs → state store → ClipResult.

The step after the engine, shared by `--once`, the daemon, `retag` (stored embeddings) and a
cluster backfill (embeddings from remote workers): whoever produced a clip's embeddings, its
tags, sidecar, log line, preview, XMP/NFO, hook and file record come from here, the same way.
The store's files table is written here only (what was tagged, what failed and how often), and
with MQTT on (config.mqtt) each record's event for the outbox in the same transaction
(autotag/events.py says what is sent and when).
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autotag.clip import Embedded, Tag, Tagged
from autotag.config import Config
from autotag.engine import EMBEDDED, FAILED, SKIPPED, STORED, Outcome
from autotag.events import NEW, RETAG, failed_event, tag_marks, tagged_event
from autotag.outputs import OutputSet, own_outputs, read_sidecar, sidecar_path
from autotag.outputs.sidecar import sidecar_file
from autotag.scoring import reviewed, tag_scores, window_scores
from autotag.store import Event, Store, Version
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

FRESH_BATCH = 500  # files stat'ed, then looked up in the store with one query (Store.versions)


@dataclass(frozen=True)
class ClipResult:
    """What became of one clip."""

    path: Path
    status: str  # "tagged" | "reused" (stored embeddings, no model call) | "skipped" | "failed"
    reason: str | None = None
    retryable: bool = False  # a decode failure that may be a file still being copied
    tags: tuple[Tag, ...] = ()
    windows: int = 0  # windows the model embedded for this clip
    attempts: int = 0  # failed attempts at this version of the file, the store's count


class Tagger:
    """Embedded clip → scores against the vocabulary → outputs → state store."""

    def __init__(self, config: Config, vocabulary: Vocabulary, outputs: OutputSet, store: Store,
                 model: str) -> None:
        self.config = config
        self.vocabulary = vocabulary
        self.outputs = outputs
        self.store = store
        self.model = model
        self.events = config.mqtt.enabled  # write MQTT events to the store's outbox
        # finish() and forget() of one path never interleave: a clip moved away while its
        # outputs were being written is cleaned up by one of them, whichever comes second
        self._lock = threading.Lock()

    def tag(self, clip: Embedded) -> Tagged:
        """Scores → tags, then the reviews of this content win (scoring.reviewed)."""
        scores = window_scores(clip.embeddings, self.vocabulary.vectors)
        tags, ranking = tag_scores(scores, clip.windows, self.vocabulary.labels,
                                   self.config.tagging)
        reviews = self.store.reviews(clip.source.sha256) if clip.source.sha256 else {}
        tags, ranking = reviewed(tags, ranking, reviews)
        return Tagged(clip, self.model, self.vocabulary.fingerprint, tags, ranking)

    def finish(self, clip: Embedded, status: str, windows: int = 0,
               why: str | None = None) -> ClipResult:
        """Tag, write every output, record it; a failed output fails the clip (others written).
        A clip moved away or deleted since it was read gets no outputs (they would outlive it).
        why: what the MQTT event says of it (events.py; None: new or retag, from the store)."""
        with self._lock:
            return self._finish(clip, status, windows, why)

    def _finish(self, clip: Embedded, status: str, windows: int, why: str | None) -> ClipResult:
        path = clip.source.path
        if not path.exists():
            return ClipResult(path, "skipped", "moved or deleted before its tags were written")
        before = self._before(clip, why) if self.events else None
        tagged, errors = self.outputs.write_all(self.tag(clip))
        if errors:
            reason = "; ".join(errors)
            attempts = self.store.record_failure(path, clip.source.size, clip.source.mtime,
                                                 reason, event=self._failed(path, reason, False))
            return ClipResult(path, "failed", reason, windows=windows, attempts=attempts)
        event = None
        if before is not None:
            why, marks = before
            if why == NEW or marks is None or marks != tag_marks(tagged.tags):
                event = tagged_event(tagged, why)
        self.store.record_tagged(clip.source, self.model, self.vocabulary.fingerprint,
                                 sidecar=self._sidecar_mtime(path), event=event)
        return ClipResult(path, status, tags=tagged.tags, windows=windows)

    def _before(self, clip: Embedded, why: str | None) -> tuple[str, list | None]:
        """(why this clip is tagged, its tags before as tag_marks, None: unknown), read before
        the outputs are rewritten. Content tagged before under this path is a RETAG; the tags
        it had are the sidecar's (the store keeps no tags)."""
        path = clip.source.path
        record = self.store.file(path)
        if why is None:
            same = (record is not None and record.status == "tagged"
                    and record.sha256 == clip.source.sha256)
            why = RETAG if same else NEW
        if why == NEW or not self.config.outputs.sidecars:
            return why, None
        old = read_sidecar(sidecar_path(path, self.config.outputs)) or {}
        tags = old.get("tags")
        return why, tag_marks(tags) if isinstance(tags, list) and all(
            isinstance(t, dict) for t in tags) else None

    def _failed(self, path: Path, reason: str, retryable: bool) -> Callable[[int], Event] | None:
        """The failed event, made once the store knows the attempt's number; None: MQTT off."""
        if not self.events:
            return None
        return lambda attempts: failed_event(path, reason, attempts, retryable)

    def _sidecar_mtime(self, path: Path) -> int | None:
        """st_mtime_ns of the sidecar just written: the up-to-date rule stats it later."""
        if not self.config.outputs.sidecars:
            return None
        try:
            return os.stat(sidecar_path(path, self.config.outputs)).st_mtime_ns
        except OSError:
            return None

    def result(self, outcome: Outcome) -> ClipResult:
        """What tagging makes of one engine outcome (one clip's fault never raises)."""
        path = outcome.path
        try:
            if outcome.status in (EMBEDDED, STORED):
                return self.finish(outcome.clip, "tagged" if outcome.status == EMBEDDED
                                   else "reused", windows=outcome.windows)
            if outcome.status == SKIPPED:
                return ClipResult(path, "skipped", outcome.reason)
            attempts = 0
            if outcome.size is not None:  # a version of a file to remember as failed
                attempts = self.store.record_failure(
                    path, outcome.size, outcome.mtime, outcome.reason,
                    event=self._failed(path, outcome.reason, outcome.retryable))
            return ClipResult(path, FAILED, outcome.reason, outcome.retryable,
                              attempts=attempts)
        except Exception as exc:
            log.debug("finishing %s", path, exc_info=True)
            return ClipResult(path, "failed", f"internal error: {type(exc).__name__}: {exc}")

    def results(self, outcomes: Iterable[Outcome]) -> Iterator[ClipResult]:
        return (self.result(outcome) for outcome in outcomes)

    def forget(self, path: Path) -> list[Path] | None:
        """A clip was deleted or moved away: its own outputs (the JSON sidecar, the preview)
        go with it and the store forgets the path (its embeddings stay: a clip moved elsewhere
        is tagged from them). Returns the outputs removed; None when the store did not know the
        path (nothing was tagged under it, or it was forgotten already)."""
        with self._lock:
            if self.store.file(path) is None:
                return None
            removed = [p for p in own_outputs(path, self.config.outputs) if _unlink(p)]
            self.store.forget(path)
            return removed

    def is_up_to_date(self, path: Path, st: os.stat_result) -> bool:
        return up_to_date(path, st, self.config, self.store, self.model,
                          self.vocabulary.fingerprint)

    def fresh_many(self, items: list[tuple[Path, os.stat_result]],
                   versions: dict[str, Version] | None = None) -> list[bool]:
        """is_up_to_date for many files, with one store query per LOOKUP_CHUNK of them (the
        up-to-date pass over a large library; `versions`: that query's answer, if made
        already). Agrees with is_up_to_date file by file."""
        names = [str(p) for p, _ in items]
        if versions is None:
            versions = self.store.versions(names)
        marks: list[tuple[int, str]] = []
        model, vocabulary, config = self.model, self.vocabulary.fingerprint, self.config
        fresh = [_fresh(name, st, versions.get(name), config, model, vocabulary, marks)
                 for name, (_, st) in zip(names, items, strict=True)]
        self.store.note_sidecars(marks)
        return fresh

    def not_in_store(self, path: Path) -> bool:
        """The clip has a sidecar but the store has no record of its path (the store was
        deleted, damaged and moved aside, or this is a new machine): it is embedded again."""
        return self.store.file(path) is None and self.has_sidecar(path)

    def has_sidecar(self, path: Path) -> bool:
        return self.config.outputs.sidecars and sidecar_path(path, self.config.outputs).exists()


def fresh_pass(tagger: Tagger, found: Iterable[tuple[Path, os.stat_result]],
               on_fresh: Callable[[list[Path]], None], batch: int = FRESH_BATCH,
               not_in_store: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """The up-to-date pass, streamed: the walk's (path, stat) items (files.Found) → the paths
    that need work, in order; the up-to-date ones go to on_fresh(paths) instead, a batch at a
    time, never through the engine (handing a million unchanged clips through its threads one
    by one was most of a pass). One store query per `batch` (Tagger.fresh_many) and the
    sidecar's stat: no file is opened for an unchanged clip, and nothing is kept beyond one
    batch. not_in_store(path): a clip with a sidecar the store does not know (a lost store),
    as Tagger.not_in_store says."""
    found, size = iter(found), 1
    # batches of 1, 2, 4, ... `batch`: the first clip goes on at once, later ones share queries
    while chunk := list(itertools.islice(found, size)):
        size = min(2 * size, batch)
        fresh = tagger.fresh_many([(p, st) for p, st, *_ in chunk])
        stale = [item[0] for item, ok in zip(chunk, fresh, strict=True) if not ok]
        if len(stale) < len(chunk):
            on_fresh([item[0] for item, ok in zip(chunk, fresh, strict=True) if ok])
        for path in stale:
            if not_in_store is not None and tagger.not_in_store(path):
                not_in_store(path)
            yield path


def up_to_date(path: Path, st: os.stat_result, config: Config, store: Store, model: str,
               vocabulary: str) -> bool:
    """This version of the file is tagged already with this model and vocabulary: the store
    says so and holds its embeddings for this model, and so does its sidecar (when sidecars
    are written). One truth: a sidecar the store does not back (a lost or rebuilt store) is
    not done, or search, retag and the web app would never see the clip. Needs no model:
    fingerprints are hashes of names. The sidecar is stat'ed, not read, when its st_mtime_ns
    is the one recorded with the store's record (schema 5): read only when it is not (a store
    older than that, or a sidecar rewritten since by something else)."""
    return _fresh(str(path), st, store.versions([str(path)]).get(str(path)), config, model,
                  vocabulary, [])


def _fresh(path: str, st: os.stat_result | None, version: Version | None, config: Config,
           model: str, vocabulary: str, marks: list[tuple[int, str]]) -> bool:
    """up_to_date from the store's row; a sidecar that matched by reading is added to
    `marks` as (st_mtime_ns, path), for the store to remember (Store.note_sidecars)."""
    if (version is None or st is None or not stat.S_ISREG(st.st_mode)
            or not version.tagged(st.st_size, st.st_mtime, model, vocabulary)):
        return False
    if not config.outputs.sidecars:
        return True
    where = sidecar_file(path, config.outputs)
    try:
        mtime_ns = os.stat(where).st_mtime_ns
    except OSError:
        return False
    if version.sidecar == mtime_ns:
        return True
    sidecar = read_sidecar(Path(where)) or {}
    source = sidecar.get("source") or {}
    fresh = (source.get("size") == st.st_size and source.get("mtime") == st.st_mtime
             and sidecar.get("model") == model and sidecar.get("vocabulary") == vocabulary)
    if fresh:
        marks.append((mtime_ns, path))
    return fresh


def not_in_store_message(count: int, config: Config) -> str:
    """Said once per run: clips tagged by their sidecars that the store does not know."""
    return (f"{count} clip{'s' if count != 1 else ''} not in the state store "
            f"({config.state.store_path}): embedding them again")


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
