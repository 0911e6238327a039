"""Window embeddings × tag vectors → window scores → clip scores, confidences → tags and segments.

Pure numpy; no model, no I/O.

How windows combine: a tag's clip score is the MEAN of its window scores (equal to the dot
product of the tag vector with the mean window embedding, the clip embedding that search
ranks by). Windows are spread evenly over the clip, so the mean describes what fills the clip:
a clip whose first 20 s differ from its remaining 9 minutes is tagged for the 9 minutes. Where
something happens is told by the segments, not the clip score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from autotag.clip import Segment, Tag, Window
from autotag.config import TaggingConfig


def window_scores(embeddings: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float32 [n_windows, 512] · [n_tags, 512]ᵀ → float32 [n_windows, n_tags] raw dot products,
    as MIL-NCE was trained (its embeddings are not normalised)."""
    return embeddings.astype(np.float32, copy=False) @ vectors.astype(np.float32, copy=False).T


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float32 [n] → float32 [n] summing to 1."""
    z = scores.astype(np.float32) / np.float32(temperature)
    z = np.exp(z - z.max())
    return z / z.sum()


def tag_scores(scores: np.ndarray, windows: Sequence[Window], labels: Sequence[str],
               tagging: TaggingConfig) -> tuple[tuple[Tag, ...], tuple[Tag, ...]]:
    """Window scores [n_windows, n_tags] → (given tags, ranking of every tag), best first.

    Given: the top_k tags whose clip score reaches their threshold (tagging.thresholds[label],
    else tagging.min_score). Segments: runs of consecutive windows where the tag reaches its
    threshold, or, if none does, the tag's best window.
    """
    clip = scores.mean(axis=0)
    confidence = softmax(clip, tagging.temperature)
    order = np.argsort(-clip, kind="stable")
    ranking = []
    for k in order:
        threshold = tagging.thresholds.get(labels[k], tagging.min_score)
        ranking.append(Tag(labels[k], float(clip[k]), float(confidence[k]),
                           segments(scores[:, k], windows, threshold)))
    given = [t for t in ranking
             if t.score >= tagging.thresholds.get(t.label, tagging.min_score)][:tagging.top_k]
    return tuple(given), tuple(ranking)


def reviewed(given: Sequence[Tag], ranking: Sequence[Tag], reviews: dict[str, str]
             ) -> tuple[tuple[Tag, ...], tuple[Tag, ...]]:
    """Reviews win: a rejected tag is never given, a confirmed one always is (below its
    threshold, past top_k). Both lists, best first, with each reviewed tag marked."""
    if not reviews:
        return tuple(given), tuple(ranking)
    marked = tuple(dataclasses.replace(t, review=reviews[t.label]) if t.label in reviews else t
                   for t in ranking)
    by_label = {t.label: t for t in marked}
    kept = [by_label[t.label] for t in given if reviews.get(t.label) != "rejected"]
    confirmed = [t for t in marked if t.review == "confirmed" and t not in kept]
    out = sorted(kept + confirmed, key=lambda t: -t.score)
    return tuple(out), marked


def segments(column: np.ndarray, windows: Sequence[Window], threshold: float
             ) -> tuple[Segment, ...]:
    """One tag's window scores [n_windows] → spans of consecutive windows at or above threshold."""
    above = column >= threshold
    if not above.any():
        best = int(np.argmax(column))
        return (Segment(windows[best].start, windows[best].end, float(column[best])),)
    spans: list[Segment] = []
    start = None
    for i, hit in enumerate([*above.tolist(), False]):
        if hit and start is None:
            start = i
        elif not hit and start is not None:
            spans.append(Segment(windows[start].start, windows[i - 1].end,
                                 float(column[start:i].max())))
            start = None
    return tuple(spans)


# -- the library's given tags, vectorised: the web app's counts, calibration's proposals --------

CONFIRMED, REJECTED = 1, -1  # a review matrix's entries (0: not reviewed)


def given_tags(scores: np.ndarray, labels: Sequence[str], tagging: TaggingConfig) -> np.ndarray:
    """bool [n_clips, n_tags]: the tags tagging gives. The rule of tag_scores, vectorised: in
    score order, the first top_k tags that reach their threshold (a test checks they agree)."""
    thresholds = np.array([tagging.thresholds.get(label, tagging.min_score) for label in labels],
                          np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")  # ties keep vocabulary order
    passing = np.take_along_axis(scores >= thresholds, order, axis=1)
    chosen = passing & (np.cumsum(passing, axis=1) <= tagging.top_k)
    given = np.zeros_like(passing)
    np.put_along_axis(given, order, chosen, axis=1)
    return given


def review_matrix(shas: Sequence[str | None], reviews: dict[str, dict[str, str]],
                  labels: Sequence[str]) -> np.ndarray:
    """Each clip's content hash + the store's reviews (sha256 → {label: verdict}) → int8
    [n_clips, n_tags]: CONFIRMED, REJECTED, or 0 (not reviewed). Labels not in the
    vocabulary are left out."""
    column = {label: k for k, label in enumerate(labels)}
    verdicts = np.zeros((len(shas), len(labels)), np.int8)
    for i, sha in enumerate(shas):
        for label, verdict in reviews.get(sha, {}).items() if sha else ():
            if label in column:
                verdicts[i, column[label]] = CONFIRMED if verdict == "confirmed" else REJECTED
    return verdicts


def given_reviewed(scores: np.ndarray, verdicts: np.ndarray, labels: Sequence[str],
                   tagging: TaggingConfig) -> np.ndarray:
    """bool [n_clips, n_tags]: the tags tagging gives, from clip scores [n_clips, n_tags]
    (given_tags: reaches its threshold, within top_k), then reviews [n_clips, n_tags] win
    (as `reviewed` does for one clip)."""
    return np.where(verdicts != 0, verdicts == CONFIRMED, given_tags(scores, labels, tagging))
