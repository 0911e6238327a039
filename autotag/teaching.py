"""Example clips → the tag they would make, before it is written: fit → score every clip →
how many it takes, the closest it leaves out, the farthest it takes (issue 31).

The web app's teach form asks this before it edits the config, so a person sees what a tag
taught by two clips will do to the library (and may move its threshold) instead of finding it
on every sidecar afterwards. The fit is the one tagging will use (vocabulary.tag_vector against
the background library_background gives), so the preview is what the tag will be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag.clip import SourceInfo
from autotag.config import VocabEntry
from autotag.store import FileRecord, Store
from autotag.vocabulary import Example, ExampleError, library_background, tag_vector

EDGE = 5  # clips listed on each side of the threshold


@dataclass(frozen=True)
class Preview:
    """What a tag taught by these examples would do, at one threshold."""

    vector: np.ndarray  # float32 [dim]: the tag's vector, as the vocabulary would build it
    threshold: float  # the threshold the counts are at
    default: float  # the threshold the tag would have (tagging.min_score)
    fitted: bool  # against the library's background (False: too few clips, from the origin)
    background: int  # clips behind the background (0 without one)
    taken: list[tuple[FileRecord, float]]  # every clip reaching the threshold, best first
    left_out: list[tuple[FileRecord, float]]  # the closest below it, best first

    def to_json(self, describe) -> dict:
        """describe(record, score) → the JSON of one clip (the web app's own)."""
        return {"count": len(self.taken), "threshold": round(self.threshold, 4),
                "default_threshold": self.default, "fitted": self.fitted,
                "background": self.background,
                "farthest_taken": [describe(r, s) for r, s in self.taken[-EDGE:][::-1]],
                "closest_left_out": [describe(r, s) for r, s in self.left_out[:EDGE]]}


def preview(store: Store, model: str, examples: list[FileRecord],
            score_all: Callable[[np.ndarray, float], tuple[list[FileRecord], np.ndarray]],
            min_score: float, threshold: float | None = None) -> Preview | None:
    """The tag these stored clips would make, and the clips it takes at `threshold` (default
    min_score, where the fit puts it); score_all(vector, threshold) → (every clip, float32 [n]
    scores, exact at least near the threshold: LiveIndex.scores). None when an example's
    embeddings are not stored or the examples cancel out."""
    found = {}
    for record in examples:
        embedding = _clip_embedding(store, model, record)
        if embedding is None:
            return None
        found[record.path] = Example(record.path, record.sha256 or "", embedding)
    background = library_background(store, model)
    entry = VocabEntry("preview", (), tuple(found))
    try:
        vector = tag_vector(entry, {}, found, background, min_score)
    except ExampleError:  # the examples cancel out
        return None
    at = min_score if threshold is None else threshold
    records, scores = score_all(vector, at)
    order = np.argsort(-scores, kind="stable")
    ranked = [(records[i], float(scores[i])) for i in order]
    cut = int(np.searchsorted(-scores[order], -at, side="right"))
    return Preview(vector, at, min_score, background is not None,
                   background.count if background else 0, ranked[:cut], ranked[cut:])


def _clip_embedding(store: Store, model: str, record: FileRecord) -> np.ndarray | None:
    clip = store.load_embedded(SourceInfo(Path(record.path), record.size, record.mtime,
                                          record.sha256), model, thumbnails=False)
    return None if clip is None else np.asarray(clip.clip_embedding, np.float32)
