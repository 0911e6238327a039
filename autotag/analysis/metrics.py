"""Clip scores float32 [n_clips, n_tags] + truth bool [n_clips, n_tags] → ranking, top-k accuracy,
precision-recall curves, average precision, the tags tagging gives, confusions.

Pure numpy on arrays (no files, no model), so every figure can be checked on hand-made values.
A clip's score for a tag is its clip embedding · the tag's vector: the mean of its window scores,
the clip score tagging uses (scoring.py), up to float rounding.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autotag.scoring import given_tags, window_scores  # noqa: F401 - given_tags: scoring's rule


def clip_scores(embeddings: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Clip embeddings [n_clips, 512] · tag vectors [n_tags, 512]ᵀ → float32 [n_clips, n_tags]:
    each clip's mean window score per tag, the clip score tagging uses (up to float rounding)."""
    return window_scores(embeddings, vectors)


def ranking(scores: np.ndarray) -> np.ndarray:
    """int [n_clips, n_tags]: tag indices best first; ties keep vocabulary order (as tagging)."""
    return np.argsort(-scores, axis=1, kind="stable")


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of clips with one of their true tags among their k best-scoring tags."""
    top = ranking(scores)[:, :k]
    return float(np.take_along_axis(truth, top, axis=1).any(axis=1).mean())


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tag's clip scores [n] and truth [n] → (thresholds, precision, recall), one point per
    distinct score, highest first: tagging every clip scoring >= threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / max(int(y.sum()), 1)
    return s[last], precision, recall


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated average precision, sum over thresholds of (R_n - R_{n-1}) * P_n
    (scikit-learn's average_precision_score, ties included). NaN without positives."""
    if not positive.any():
        return float("nan")
    _, precision, recall = precision_recall_curve(scores, positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class Confusion:
    """Clips of tag `true` whose best-scoring tag was `predicted`."""

    true: str
    predicted: str
    clips: int
    share: float  # of `true`'s clips

    def to_json(self) -> dict:
        return {"true": self.true, "predicted": self.predicted, "clips": self.clips,
                "share": round(self.share, 4)}


def confusions(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> list[Confusion]:
    """Every (true tag, top-1 tag) pair of the clips whose top-1 is none of their tags, most
    clips first: the mistakes that cost the most top-1 accuracy."""
    top1 = ranking(scores)[:, 0]
    wrong = ~truth[np.arange(len(top1)), top1]
    counts: collections.Counter[tuple[int, int]] = collections.Counter()
    for i in np.flatnonzero(wrong):
        for t in np.flatnonzero(truth[i]):
            counts[(int(t), int(top1[i]))] += 1
    positives = truth.sum(axis=0)
    pairs = [Confusion(labels[t], labels[p], n, n / positives[t]) for (t, p), n in counts.items()]
    return sorted(pairs, key=lambda c: (-c.clips, -c.share, c.true, c.predicted))


Matrix = tuple[tuple[str, ...], tuple[str, ...], np.ndarray]  # (rows, columns, int64 counts)


def confusion_matrix(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> Matrix:
    """(rows, columns, int64 counts [rows, columns]): rows are the tags with clips, columns the
    same tags plus "(other tags)" when a clip's top-1 is a tag without clips. A clip counts once
    per true tag, on the diagonal when its top-1 is any of its tags."""
    present = [j for j in range(len(labels)) if truth[:, j].any()]
    column = {j: n for n, j in enumerate(present)}
    top1 = ranking(scores)[:, 0]
    other = any(int(p) not in column for p in top1)
    counts = np.zeros((len(present), len(present) + other), np.int64)
    for i, p in enumerate(top1):
        right = truth[i, p]
        for t in np.flatnonzero(truth[i]):
            row = column[int(t)]
            counts[row, row if right else column.get(int(p), len(present))] += 1
    rows = tuple(labels[j] for j in present)
    return rows, rows + (("(other tags)",) if other else ()), counts
