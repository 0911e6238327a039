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
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

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


# -- likeness against the library's background (issue 31) ---------------------------------------
#
# Every embedding space has a component every clip shares (MIL-NCE's video embeddings are
# neither centred nor normalised), so likeness measured from the origin calls every clip "half
# as alike". A tag taught by examples and a "more like this" query are instead scored against
# the library's background: the direction of the library's mean clip embedding is taken out
# (the common component), the examples' centroid is what is left, and a score is read in the
# background's own spread: how much more alike than a typical clip. The vector stays one plain
# [dim] row (it is orthogonal to the mean, so the mean clip scores exactly 0), so tagging,
# search and every other consumer score it as they score a text tag. Chosen by measurement
# (benchmarks/teach.py, docs/guides/teach.md): on 512-wide libraries sharing a large common
# vector, the centred centroid reached precision 0.96-1.0 and recall 0.92-1.0 from 2-3
# examples, where a whitened centroid (shrunk LDA) and a logistic regression, fitted against a
# background that holds the concept itself, fell to precision 0.2-0.6: a library's concepts
# are its directions of largest variance, which whitening takes away. The threshold sits
# HELD_OUT_FRACTION of the way from a typical clip to the examples scored as unseen clips; a
# floor in background spreads (3) lost most of a concept where the library is a few concepts
# (its spread is the concepts' own).

HELD_OUT_FRACTION = 0.65  # the threshold: this far from a typical clip to the held-out examples
STANDS_OUT = 2.0  # held-out examples fewer spreads above typical than this: warned of
MAD_TO_SIGMA = 1.4826  # median absolute deviation → standard deviation, for a normal spread
MIN_SPREAD = 1e-9  # a background spread below this (every clip alike): no direction to read


@dataclass(frozen=True)
class Background:
    """The library's clips as a tag from examples is measured against.

    count: the clips behind the mean. mean: float32 [dim], their mean clip embedding (kept
    current by the store as clips are saved). sample: float32 [k, dim], clip embeddings of the
    library (a sample fixed by content hash), whose scores give the background's spread."""

    count: int
    mean: np.ndarray
    sample: np.ndarray

    def key(self) -> str:
        """What the vocabulary's fingerprint names: a new background re-tags."""
        digest = hashlib.sha256(np.ascontiguousarray(self.mean, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.sample, np.float32).tobytes())
        return f"{self.count}:{digest.hexdigest()[:16]}"

    def unit(self) -> np.ndarray:
        """float64 [dim]: the mean's direction (zeros for a zero mean)."""
        mean = self.mean.astype(np.float64)
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else mean

    def off_mean(self, x: np.ndarray) -> np.ndarray:
        """float [..., dim] → float64 [..., dim] without their component along the mean."""
        x = np.asarray(x, np.float64)
        unit = self.unit()
        return x - (x @ unit)[..., None] * unit

    def spread(self, direction: np.ndarray) -> float:
        """The background's robust standard deviation of direction · clip (MAD × 1.4826: the
        concept's own clips, part of the library, do not widen it)."""
        scores = self.off_mean(self.sample) @ direction
        mad = MAD_TO_SIGMA * float(np.median(np.abs(scores - np.median(scores))))
        # more than half the sample alike along it (copies, a still library): the plain one
        return mad if mad > MIN_SPREAD else float(np.std(scores))


@dataclass(frozen=True)
class ExampleFit:
    """A tag taught by examples, fitted against a background.

    vector: float32 [dim], scaled so that a typical clip scores 0 and the threshold `at`.
    spread: one background spread in the vector's score units (at / threshold_spreads).
    examples: float64 [n], each example's score by the others' vector (leave one out; its
    own for a single example), in the vector's units: how the examples score as unseen clips.
    threshold_spreads: where the threshold fell, in background spreads."""

    vector: np.ndarray
    spread: float
    examples: np.ndarray
    threshold_spreads: float


def fit_examples(embeddings: np.ndarray, background: Background, at: float
                 ) -> ExampleFit | None:
    """Example clip embeddings float32 [n, dim] → their tag's fit: direction the examples'
    centroid with the background's mean direction taken out; threshold HELD_OUT_FRACTION of
    the way from the background's median clip to the examples' mean (each scored by the
    others, in background spreads); scaled so the threshold scores `at` (tagging.min_score)
    and the library's mean clip 0. None when the examples do not stand out of the background
    (no spread along them, or they score no higher than its median)."""
    embeddings = np.asarray(embeddings, np.float64)
    direction = background.off_mean(embeddings.mean(axis=0))
    spread = background.spread(direction)
    if not spread > MIN_SPREAD or not np.isfinite(spread):
        return None
    median = float(np.median(background.off_mean(background.sample) @ direction)) / spread
    held_out = _held_out_spreads(embeddings, background)
    threshold = median + HELD_OUT_FRACTION * (float(np.mean(held_out)) - median)
    if not threshold > 0:
        return None
    scale = at / (threshold * spread)
    return ExampleFit((direction * scale).astype(np.float32), at / threshold,
                      held_out * at / threshold, threshold)


def _held_out_spreads(embeddings: np.ndarray, background: Background) -> np.ndarray:
    """float64 [n]: each example's score, in background spreads above the library's mean, by
    the direction of the others (its own with one example): a few examples score themselves
    too well, and the concept's other clips are as far from them as they are from each
    other."""
    n = len(embeddings)
    out = np.empty(n)
    for i in range(n):
        others = np.delete(embeddings, i, axis=0) if n > 1 else embeddings
        direction = background.off_mean(others.mean(axis=0))
        spread = background.spread(direction)
        out[i] = (background.off_mean(embeddings[i]) @ direction) / spread \
            if spread > MIN_SPREAD else 0.0
    return out


def like_query(embedding: np.ndarray, background: Background) -> np.ndarray | None:
    """A clip's embedding float32 [dim] → a "more like this" query float32 [dim] whose score
    is in background spreads: 0 a typical clip, 3 three spreads more alike than one. None when
    the clip is the background's mean (nothing of its own to look for)."""
    direction = background.off_mean(embedding)
    spread = background.spread(direction)
    if not spread > MIN_SPREAD or not np.isfinite(spread):
        return None
    return (direction / spread).astype(np.float32)
