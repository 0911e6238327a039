"""A clip's record (tagged, failed) → one event for the outbox → `<prefix>/tagged`, `<prefix>/failed`.

The messages MQTT consumers read (schema: autotag/schemas/events.schema.json), made here, next
to nothing that sends them: the tagging step writes them with the clip's record (Store), and
autotag/mqtt.py delivers them. Each carries a fresh event id; QoS 1 may deliver a message twice,
and a consumer drops the second by that id.

Why a clip was tagged again (`why`): `new` (a path or content not tagged before: an arrival, a
changed file, a copy), `retag` (the same content tagged again after a vocabulary, threshold or
model change, or --force), `review` (a person confirmed or rejected a tag). A retag or review
that leaves the clip's tags as they were sends nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from autotag.clip import Tag, Tagged
from autotag.store import Event

SCHEMA_VERSION = 1
TAGGED, FAILED = "tagged", "failed"  # event kinds: the topics under mqtt.topic_prefix
NEW, RETAG, REVIEW = "new", "retag", "review"  # why a clip was tagged


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")


def _event(kind: str, body: dict) -> Event:
    now = time.time()
    event_id = uuid.uuid4().hex
    payload = {"schema_version": SCHEMA_VERSION, "id": event_id, "kind": kind,
               "time": _stamp(now), **body}
    return Event(event_id, kind, json.dumps(payload, ensure_ascii=False), now)


def tagged_event(tagged: Tagged, why: str) -> Event:
    """A tagged clip's event: its path, content hash, tags (scores, segments, reviews), the
    sidecar written, and why it was tagged (NEW, RETAG, REVIEW)."""
    source = tagged.clip.source
    return _event(TAGGED, {
        "why": why,
        "path": str(source.path),
        "name": source.path.name,
        "sha256": source.sha256,
        "size": source.size,
        "duration": round(tagged.clip.duration, 3),
        "labels": [t.label for t in tagged.tags],
        "top": tagged.top.label if tagged.top else None,
        "tags": [t.to_json() for t in tagged.tags],
        "sidecar": tagged.outputs.get("sidecar"),
        "model": tagged.model,
        "vocabulary": tagged.vocabulary,
    })


def failed_event(path: Path, reason: str, attempts: int, retryable: bool) -> Event:
    """A clip that could not be tagged: the reason, and how many attempts this version has
    had (the daemon tries a clip that may still be copying again: retryable)."""
    return _event(FAILED, {"path": str(path), "name": path.name, "reason": reason,
                           "attempts": attempts, "retryable": retryable})


def tag_marks(tags: tuple[Tag, ...] | list[dict]) -> list[tuple[str, str | None]]:
    """What makes two sets of tags the same for an event: labels and reviews, not scores
    (a re-tag moves scores by rounding; a consumer cares about what the clip is tagged)."""
    marks = [(t.label, t.review) if isinstance(t, Tag) else (t.get("label"), t.get("review"))
             for t in tags]
    return sorted(marks, key=lambda m: (str(m[0]), str(m[1])))
