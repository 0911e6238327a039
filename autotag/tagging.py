"""Engine outcome → scores against the vocabulary → tags → outputs → state store → ClipResult.

The step after the engine, shared by `--once`, the daemon, `retag` (stored embeddings) and a
cluster backfill (embeddings from remote workers): whoever produced a clip's embeddings, its
tags, sidecar, log line, preview, XMP/NFO, hook and file record come from here, the same way.
The store's files table is written here only (what was tagged, what failed and how often).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autotag.clip import Embedded, Tag, Tagged
from autotag.config import Config
from autotag.engine import EMBEDDED, FAILED, SKIPPED, STORED, Outcome
from autotag.outputs import OutputSet, read_sidecar, sidecar_path
from autotag.scoring import tag_scores, window_scores
from autotag.store import Store
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


class Tagger:
    """Embedded clip → scores against the vocabulary → outputs → state store."""

    def __init__(self, config: Config, vocabulary: Vocabulary, outputs: OutputSet, store: Store,
                 model: str) -> None:
        self.config = config
        self.vocabulary = vocabulary
        self.outputs = outputs
        self.store = store
        self.model = model

    def tag(self, clip: Embedded) -> Tagged:
        scores = window_scores(clip.embeddings, self.vocabulary.vectors)
        tags, ranking = tag_scores(scores, clip.windows, self.vocabulary.labels,
                                   self.config.tagging)
        return Tagged(clip, self.model, self.vocabulary.fingerprint, tags, ranking)

    def finish(self, clip: Embedded, status: str, windows: int = 0) -> ClipResult:
        """Tag, write every output, record it; a failed output fails the clip (others written)."""
        tagged, errors = self.outputs.write_all(self.tag(clip))
        path = clip.source.path
        if errors:
            reason = "; ".join(errors)
            attempts = self.store.record_failure(path, clip.source.size, clip.source.mtime,
                                                 reason)
            return ClipResult(path, "failed", reason, windows=windows, attempts=attempts)
        self.store.record_tagged(clip.source, self.model, self.vocabulary.fingerprint)
        return ClipResult(path, status, tags=tagged.tags, windows=windows)

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
                attempts = self.store.record_failure(path, outcome.size, outcome.mtime,
                                                     outcome.reason)
            return ClipResult(path, FAILED, outcome.reason, outcome.retryable,
                              attempts=attempts)
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("finishing %s", path, exc_info=True)
            return ClipResult(path, "failed", f"internal error: {type(exc).__name__}: {exc}")

    def results(self, outcomes: Iterable[Outcome]) -> Iterator[ClipResult]:
        return (self.result(outcome) for outcome in outcomes)

    def is_up_to_date(self, path: Path, st: os.stat_result) -> bool:
        return up_to_date(path, st, self.config, self.store, self.model,
                          self.vocabulary.fingerprint)


def up_to_date(path: Path, st: os.stat_result, config: Config, store: Store, model: str,
               vocabulary: str) -> bool:
    """The sidecar (or, without sidecars, the store) says this version of the file is tagged
    already with this model and vocabulary, and the store does not record it as failed. Needs
    no model: fingerprints are hashes of names."""
    record = store.file(path)
    if record and record.status == "failed" and record.matches(st.st_size, st.st_mtime):
        return False  # its sidecar may be written while another output failed (a bad XMP)
    if config.outputs.sidecars:
        sidecar = read_sidecar(sidecar_path(path, config.outputs)) or {}
        source = sidecar.get("source") or {}
        return (source.get("size") == st.st_size and source.get("mtime") == st.st_mtime
                and sidecar.get("model") == model and sidecar.get("vocabulary") == vocabulary)
    return bool(record and record.status == "tagged" and record.matches(st.st_size, st.st_mtime)
                and record.model == model and record.vocabulary == vocabulary)
