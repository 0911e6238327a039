"""A person's verdicts on a clip's tags → the store (by content) → every path of that content
re-tagged from its stored embeddings (retag): the outputs follow at once.

Reviews win everywhere tags are computed (scoring.reviewed, called by Tagger.tag): a rejected
tag never again reaches the sidecar, XMP, NFO, log line or hook of that content, through
--once, --force, the daemon, retag and backfill; a confirmed tag always does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from autotag.errors import AutotagError
from autotag.events import REVIEW
from autotag.retagging import retag
from autotag.store import FileRecord, Store
from autotag.tagging import ClipResult, Tagger

log = logging.getLogger(__name__)

CONFIRMED, REJECTED = "confirmed", "rejected"


class ReviewError(AutotagError, ValueError):
    """A review that cannot be applied: one line saying why."""


@dataclass(frozen=True)
class Verdicts:
    confirm: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()  # undo: the model decides again

    def as_map(self, labels: Iterable[str]) -> dict[str, str | None]:
        known = set(labels)
        named = [*self.confirm, *self.reject, *self.clear]
        unknown = [t for t in named if t not in known]
        if unknown:
            raise ReviewError(f"{unknown[0]!r} is not a tag of the vocabulary (tags: "
                              f"{', '.join(sorted(known))})")
        twice = {t for t in named if named.count(t) > 1}
        if twice:
            raise ReviewError(f"{min(twice)!r} is named twice; confirm, reject or clear "
                              "it once")
        if not named:
            raise ReviewError("name a tag to confirm, reject or clear")
        return {**{t: CONFIRMED for t in self.confirm}, **{t: REJECTED for t in self.reject},
                **{t: None for t in self.clear}}


def review(tagger: Tagger, store: Store, record: FileRecord, verdicts: Verdicts
           ) -> list[ClipResult]:
    """Store the verdicts for the record's content and rewrite the outputs of every path that
    holds it; one result per path (a path gone or changed is skipped, as retag skips it)."""
    if record.sha256 is None or record.status != "tagged":
        raise ReviewError(f"{record.path} is not tagged yet; run 'autotag --once' on it first")
    store.set_reviews(record.sha256, verdicts.as_map(tagger.vocabulary.labels))
    return list(retag(tagger, store, store.files_with(record.sha256), why=REVIEW))
