"""Engine outcome → scores against the vocabulary → tags → outputs → state store → ClipResult.

The step after the engine, shared by `--once`, the daemon, `retag` (stored embeddings) and a
cluster backfill (embeddings from remote workers): whoever produced a clip's embeddings, its
tags, sidecar, log line, preview, XMP/NFO, hook and file record come from here, the same way.
The store's files table is written here only (what was tagged, what failed and how often), and
with MQTT on (config.mqtt) each record's event for the outbox in the same transaction
(autotag/events.py says what is sent and when).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autotag.clip import Embedded, Tag, Tagged
from autotag.config import Config
from autotag.engine import EMBEDDED, FAILED, SKIPPED, STORED, Outcome
from autotag.events import NEW, RETAG, failed_event, tag_marks, tagged_event
from autotag.outputs import OutputSet, outputs_digest, own_outputs, read_sidecar, sidecar_path
from autotag.scoring import reviewed, tag_scores, window_scores
from autotag.store import Event, Store
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

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
    closest: tuple[str, float, float] | None = None  # no tag given: (label, score, threshold)


class Tagger:
    """Embedded clip → scores against the vocabulary → outputs → state store."""

    def __init__(self, config: Config, vocabulary: Vocabulary, outputs: OutputSet, store: Store,
                 model: str) -> None:
        self.config = config
        self.vocabulary = vocabulary
        self.outputs = outputs
        self.store = store
        self.model = model
        # recorded with each clip: what the up-to-date rule (passes.UpToDate) compares
        self.digest = outputs_digest(config)
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
                                 sidecar=self._sidecar_mtime(path), outputs=self.digest,
                                 event=event)
        return ClipResult(path, status, tags=tagged.tags, windows=windows,
                          closest=None if tagged.tags else self._closest(tagged))

    def _closest(self, tagged: Tagged) -> tuple[str, float, float] | None:
        """The tag nearest its threshold (by score over threshold) of a clip given none: what
        a run that tags nothing reports (the Reporter's summary)."""
        tagging = self.config.tagging
        best = None
        for tag in tagged.ranking:
            threshold = tagging.thresholds.get(tag.label, tagging.min_score)
            gap = tag.score / threshold if threshold > 0 else 1 + tag.score - threshold
            if best is None or gap > best[0]:
                best = (gap, (tag.label, tag.score, threshold))
        return best[1] if best else None

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
        """A clip was deleted or moved away: its own outputs (the JSON sidecar, the preview,
        an XMP or NFO holding nothing but autotag's data) go with it and the store forgets the path (its embeddings stay: a clip moved elsewhere
        is tagged from them). Returns the outputs removed; None when the store did not know the
        path (nothing was tagged under it, or it was forgotten already)."""
        with self._lock:
            if self.store.file(path) is None:
                return None
            removed = [p for p in own_outputs(path, self.config.outputs) if _unlink(p)]
            self.store.forget(path)
            return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True
