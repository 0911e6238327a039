"""Scoring: mean-of-windows clip scores, softmax confidences, thresholds, segments."""

from __future__ import annotations

import numpy as np
import pytest

from autotag.clip import Window
from autotag.config import TaggingConfig
from autotag.scoring import segments, softmax, tag_scores, window_scores

WINDOWS = [Window(i * 10.0, i * 10.0 + 3.2) for i in range(4)]


def test_window_scores_are_raw_dot_products():
    emb = np.array([[1, 2, 0], [0, 1, 3]], np.float32)
    vec = np.array([[2, 0, 0], [0, 0, 1]], np.float32)
    assert window_scores(emb, vec).tolist() == [[2, 0], [0, 3]]
    assert window_scores(emb, vec).dtype == np.float32


def test_softmax_sums_to_one_and_respects_temperature():
    p = softmax(np.array([1.0, 2.0, 3.0]))
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 2
    assert softmax(np.array([1.0, 2.0]), 10.0)[1] < softmax(np.array([1.0, 2.0]), 1.0)[1]


def test_clip_score_is_the_mean_so_what_fills_the_clip_wins():
    # tag a is huge in one window; tag b is good in the other three
    scores = np.array([[20.0, 0.0], [0.0, 8.0], [0.0, 8.0], [0.0, 8.0]], np.float32)
    given, ranking = tag_scores(scores, WINDOWS, ["a", "b"], TaggingConfig(min_score=3.0))
    assert [t.label for t in given] == ["b", "a"]
    assert given[0].score == pytest.approx(6.0)
    assert [t.label for t in ranking] == ["b", "a"]
    assert sum(t.confidence for t in ranking) == pytest.approx(1.0)


def test_min_score_top_k_and_per_tag_thresholds():
    scores = np.array([[5.0, 4.0, 3.5, -1.0]], np.float32)
    labels = ["a", "b", "c", "d"]
    given, _ = tag_scores(scores, WINDOWS[:1], labels, TaggingConfig(top_k=2, min_score=3.0))
    assert [t.label for t in given] == ["a", "b"]
    given, _ = tag_scores(scores, WINDOWS[:1], labels,
                          TaggingConfig(top_k=3, min_score=3.0, thresholds={"a": 6.0}))
    assert [t.label for t in given] == ["b", "c"]
    given, ranking = tag_scores(scores, WINDOWS[:1], labels, TaggingConfig(min_score=10))
    assert given == () and len(ranking) == 4


def test_segments_merge_consecutive_windows_above_threshold():
    column = np.array([1.0, 5.0, 6.0, 1.0], np.float32)
    (seg,) = segments(column, WINDOWS, 3.0)
    assert (seg.start, seg.end, seg.score) == (10.0, 23.2, 6.0)
    column = np.array([5.0, 1.0, 1.0, 7.0], np.float32)
    assert [(s.start, s.end) for s in segments(column, WINDOWS, 3.0)] == [(0.0, 3.2),
                                                                          (30.0, 33.2)]


def test_segments_fall_back_to_the_best_window():
    (seg,) = segments(np.array([1.0, 2.0, 0.5, 0.0], np.float32), WINDOWS, 3.0)
    assert (seg.start, seg.end, seg.score) == (10.0, 13.2, 2.0)
