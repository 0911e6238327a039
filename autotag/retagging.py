"""Stored clips (under DIR) → stored window embeddings → current vocabulary → every output.

What `autotag retag` does after a vocabulary or tagging change: no frame is decoded and the
video model is never called (the text model is, only for prompts not in the text-embedding
cache). Each clip goes through the same Tagger as a freshly tagged one, so sidecars, the log
line, the preview's annotation and XMP/NFO are exactly what tagging would write.

A clip whose file is gone or changed since it was embedded is skipped, not forgotten (a share
may be unmounted; `autotag --once` re-tags a changed file).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from autotag.clip import SourceInfo
from autotag.events import RETAG
from autotag.search import is_fresh, is_under
from autotag.store import FileRecord, Store
from autotag.tagging import ClipResult, Tagger

log = logging.getLogger(__name__)


def stored_clips(store: Store, model: str, under: Sequence[Path] = ()) -> list[FileRecord]:
    """The tagged files (under these folders) whose embeddings for this model are stored."""
    records, _ = store.clip_index(model)
    return [r for r in records if not under or is_under(r.path, under)]


def retag(tagger: Tagger, store: Store, records: Sequence[FileRecord],
          why: str = RETAG) -> Iterator[ClipResult]:
    """Re-score and rewrite the outputs of each record's clip; one result per record, lazily.
    why: what an MQTT event of a clip whose tags change says (events.RETAG or REVIEW)."""
    for record in records:
        if not is_fresh(record):  # one stat for the usual, fresh clip
            yield ClipResult(record.path, "skipped", "changed since it was tagged; "
                             "'autotag --once' re-tags it" if record.path.exists()
                             else "gone (kept in the store)")
            continue
        source = SourceInfo(record.path, record.size, record.mtime, record.sha256)
        clip = store.load_embedded(source, tagger.model)
        if clip is None:
            yield ClipResult(record.path, "skipped", "no stored embeddings")
            continue
        try:
            yield tagger.finish(clip, "reused", why=why)
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("retagging %s", record.path, exc_info=True)
            yield ClipResult(record.path, "failed", f"internal error: {type(exc).__name__}: {exc}")
