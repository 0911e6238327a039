"""What the pages and the outputs say of scores, read by someone who has never seen a MIL-NCE
score: against the tag's own threshold, a colour per tag, one time format; the library view's
filters and sorts; previews whose labels cover no picture (portrait and rotated clips too)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from autotag.cli.common import Reporter
from autotag.clip import Embedded, SourceInfo, Tag, Tagged, Window
from autotag.outputs import preview
from autotag.search.live import Snapshot
from autotag.store import FileRecord
from autotag.tagging import ClipResult
from autotag.web.library_view import View, choose, needs_review
from autotag.web.plot import PALETTE, QUERY_COLOUR, Series, clock, score_plot, tag_colour
from autotag.web.scores import against

NS = "{http://www.w3.org/2000/svg}"


# -- scores against thresholds ------------------------------------------------------------------

def test_a_score_reads_as_times_its_threshold_with_the_threshold_half_way_along_the_bar():
    strong = against(5.4, 3.0)
    assert strong.text == "1.8× threshold" and strong.over
    assert strong.fill == pytest.approx(90.0)  # 1.8 of the bar's 2 thresholds
    weak = against(1.5, 3.0)
    assert weak.text == "0.5× threshold" and not weak.over and weak.fill == 25.0
    assert against(3.0, 3.0).over and against(3.0, 3.0).fill == 50.0  # the mark's place
    assert against(-5.0, 3.0).text == "0.0× threshold" and against(-5.0, 3.0).fill == 0.0
    assert against(40.0, 3.0).text == "13× threshold" and against(40.0, 3.0).fill == 100.0
    # a threshold at or under zero has no ratio: the distance from it instead
    assert against(0.5, 0.0).text == "+0.50 over threshold"
    assert against(-0.5, 0.0).text == "-0.50 under threshold"
    assert "score 5.40" in strong.title and "3" in strong.title


def _result(path: str, closest) -> ClipResult:
    return ClipResult(Path(path), "tagged", closest=closest)


def test_a_run_that_tags_nothing_says_in_one_line_how_close_the_best_came_and_names_calibrate(
        caplog):
    reporter = Reporter(total=3)
    with caplog.at_level(logging.INFO, logger="autotag"):
        reporter.result(_result("/v/a.mp4", ("red", 1.2, 3.0)))
        reporter.result(_result("/v/b.mp4", ("sea", 2.4, 3.0)))  # the closest: 0.8×
        reporter.result(ClipResult(Path("/v/c.mp4"), "tagged",
                                   tags=(Tag("green", 4.0, 0.9),)))
        reporter.summary()
    lines = [r.getMessage() for r in caplog.records if "got no tag" in r.getMessage()]
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("2 of 3 clips got no tag")
    assert "sea at 0.8× its threshold, score 2.40 of 3" in line and "b.mp4" in line
    assert "autotag calibrate" in line and "tagging.min_score" in line


def test_a_run_where_every_clip_has_a_tag_says_nothing_of_it(caplog):
    reporter = Reporter(total=1)
    with caplog.at_level(logging.INFO, logger="autotag"):
        reporter.result(ClipResult(Path("/v/c.mp4"), "tagged", tags=(Tag("green", 4.0, 0.9),)))
        reporter.summary()
    assert not [r for r in caplog.records if "got no tag" in r.getMessage()]


# -- the plot -----------------------------------------------------------------------------------

def _groups(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [e for e in root.iter() if cls in e.get("class", "").split()]


def test_each_tag_keeps_its_own_colour_and_the_query_is_drawn_on_top():
    windows = [(0.0, 3.2), (3.2, 6.4), (6.4, 9.6)]
    tag = Series("red", np.array([1, 5, 1], np.float32), 3.0, [(3.2, 6.4)], True, tag_colour(4))
    query = Series("“red”", np.array([1, 6, 1], np.float32), 3.0, [(3.2, 6.4)], True,
                   QUERY_COLOUR)
    svg = score_plot(windows, [query, tag], 9.6, highlight="“red”")
    lines = _groups(svg, "series")
    assert [g.findtext(f"{NS}title") for g in lines] == ["red", "“red”"]  # the query last: on top
    strokes = {g.findtext(f"{NS}title"): g.find(f"{NS}polyline").get("stroke") for g in lines}
    assert strokes == {"red": PALETTE[4], "“red”": QUERY_COLOUR}
    legend = {g.findtext(f"{NS}title"): g.find(f"{NS}line").get("stroke")
              for g in _groups(svg, "legend-item")}
    assert legend == strokes  # the legend's colours are the lines'
    labels = [t.findtext(f"{NS}title") for t in _groups(svg, "lane-label")]
    assert sorted(labels) == ["red", "“red”"]  # every band's lane says whose it is


def test_a_gap_in_the_windows_is_not_drawn_across():
    # windows every 3.2 s, then nothing from 9.6 s to 60 s (a part that did not decode)
    windows = [(0.0, 3.2), (3.2, 6.4), (6.4, 9.6), (60.0, 63.2), (63.2, 66.4)]
    s = Series("red", np.array([1, 2, 3, 4, 5], np.float32), 3.0, (), True)
    (group,) = _groups(score_plot(windows, [s], 66.4), "series")
    runs = [len(p.get("points").split()) for p in group.findall(f"{NS}polyline")]
    assert runs == [3, 2]
    evenly = Series("red", np.array([1, 2, 3], np.float32), 3.0, (), True)
    (group,) = _groups(score_plot(windows[:3], [evenly], 9.6), "series")
    assert len(group.findall(f"{NS}polyline")) == 1


def test_one_time_format_everywhere_m_ss():
    assert clock(0) == "0:00" and clock(5) == "0:05" and clock(75.4) == "1:15"
    assert clock(600) == "10:00" and clock(3725) == "1:02:05"
    assert clock(2.5, tenths=True) == "0:02.5" and clock(2.0, tenths=True) == "0:02"
    windows = [(s, s + 3.2) for s in np.arange(0, 600, 30.0)]
    s = Series("red", np.linspace(0, 5, len(windows)).astype(np.float32), 3.0, (), True)
    ticks = [t.text for t in _groups(score_plot(windows, [s], 600.0), "tick-label")
             if ":" in (t.text or "")]
    assert ticks and all(len(t.split(":")[-1]) == 2 for t in ticks), ticks
    assert "10:00" in ticks  # the plot reaches the clip's end


# -- previews -----------------------------------------------------------------------------------

def _tagged(thumbs: np.ndarray, tags: tuple[Tag, ...]) -> Tagged:
    windows = tuple(Window(i * 3.2, i * 3.2 + 3.2) for i in range(len(thumbs)))
    clip = Embedded(SourceInfo(Path("/v/p.mp4"), 1, 0.0, "0" * 64), 3.2 * len(thumbs), windows,
                    np.zeros((len(thumbs), 512), np.float32), thumbs)
    return Tagged(clip, "m", "v", tags, tags)


@pytest.mark.parametrize("size", [(120, 51), (120, 213)], ids=["portrait", "landscape"])
def test_a_preview_s_labels_cover_no_picture_and_are_not_cut(size):
    h, w = size
    thumbs = np.zeros((3, h, w, 3), np.uint8)
    thumbs[..., 1] = 255  # green pictures (RGB)
    tags = (Tag("green and a rather long label", 9.98, 1.0), Tag("sea", 4.0, 0.0))
    image = preview.render(_tagged(thumbs, tags))  # BGR
    green = (image[..., 1] > 200) & (image[..., 0] < 60) & (image[..., 2] < 60)
    rows = np.flatnonzero(green.any(axis=1))
    cols = np.flatnonzero(green.any(axis=0))
    top, bottom = rows[0], rows[-1]
    assert bottom - top + 1 == preview.TILE_HEIGHT  # whole pictures, the full height
    inside = image[top:bottom + 1][:, green.any(axis=0)]
    assert (inside[..., 1] > 200).all(), "a label is drawn over a picture"
    assert len(cols) == 3 * round(w * preview.TILE_HEIGHT / h)  # each picture, at its aspect
    # the widest label fits: the image is at least as wide as its text
    width = preview._text_size("green and a rather long label  9.98", preview.TAG_SCALE)[0]
    assert image.shape[1] >= width + 4


# -- the library view -------------------------------------------------------------------------

LABELS = ["red", "green", "sea"]
THRESHOLDS = np.array([3.0, 3.0, 3.0], np.float32)


def _snapshot() -> tuple[Snapshot, dict[str, float]]:
    names = ["b.mp4", "a.mp4", "c.mp4", "d.mp4"]
    records = [FileRecord(Path(f"/lib/{'x' if i < 2 else 'y'}/{n}"), 1, 1000.0 + i * 86400,
                          f"{i:064d}", "tagged", 0, None, "m", "v", 0.0, i + 1)
               for i, n in enumerate(names)]
    scores = np.array([[9.0, 0, 0],     # b: red, strongly
                       [3.3, 0, 0],     # a: red, just (needs review)
                       [0, 0, 2.7],     # c: no tag, sea near (needs review)
                       [0, 0, 0]], np.float32)  # d: nothing
    given = scores >= 3.0
    reviews = {records[0].sha256: {"red": "confirmed"}}
    durations = {r.sha256: d for r, d in zip(records, [5.0, 50.0, 500.0, 0.5])}
    return Snapshot(records, scores, given, reviews, 1), durations


def _names(view: View) -> list[str]:
    snap, durations = _snapshot()
    return [snap.records[i].path.name for i in choose(snap, durations, LABELS, THRESHOLDS, view)]


def test_the_library_sorts_by_date_name_duration_and_best_match():
    assert _names(View()) == ["d.mp4", "c.mp4", "a.mp4", "b.mp4"]  # newest first
    assert _names(View(sort="oldest")) == ["b.mp4", "a.mp4", "c.mp4", "d.mp4"]
    assert _names(View(sort="name")) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert _names(View(sort="longest")) == ["c.mp4", "a.mp4", "b.mp4", "d.mp4"]
    assert _names(View(sort="shortest")) == ["d.mp4", "b.mp4", "a.mp4", "c.mp4"]
    assert _names(View(sort="best")) == ["b.mp4", "a.mp4", "c.mp4", "d.mp4"]
    assert _names(View(sort="best", tags=("red",))) == ["b.mp4", "a.mp4"]


def test_the_library_filters_by_tag_folder_date_duration_untagged_and_needs_review():
    assert _names(View(tags=("red",), sort="name")) == ["a.mp4", "b.mp4"]
    assert _names(View(folder="/lib/y", sort="name")) == ["c.mp4", "d.mp4"]
    assert _names(View(folder="/lib/y/", sort="name")) == ["c.mp4", "d.mp4"]
    assert _names(View(since=1000.0 + 86400, until=1000.0 + 3 * 86400, sort="name")) == [
        "a.mp4", "c.mp4"]
    assert _names(View(shortest=5.0, longest=60.0, sort="name")) == ["a.mp4", "b.mp4"]
    assert _names(View(untagged=True, sort="name")) == ["c.mp4", "d.mp4"]
    # near a threshold and unreviewed: a (3.3 of 3) and c (2.7 of 3); b is far over it
    assert _names(View(review=True, sort="name")) == ["a.mp4", "c.mp4"]
    snap, _ = _snapshot()
    reviewed = Snapshot(snap.records, snap.scores, snap.given,
                        {**snap.reviews, snap.records[1].sha256: {"red": "rejected"}}, 2)
    assert needs_review(reviewed, LABELS, THRESHOLDS).tolist() == [False, False, True, False]


def test_a_library_view_s_url_keeps_its_state_and_leaves_defaults_out():
    view = View(tags=("red",), folder="/lib/x", since=None, shortest=5.0, untagged=False,
                review=True, sort="best", page=3)
    assert view.params() == "tag=red&folder=%2Flib%2Fx&min=5&review=1&sort=best&page=3"
    assert view.params(page=1) == "tag=red&folder=%2Flib%2Fx&min=5&review=1&sort=best"
    assert View().params() == ""
