"""The clip page's plot: window scores over time as inline SVG that a strict CSP allows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from autotag.clip import Window
from autotag.media import WINDOW_SECONDS, window_starts
from autotag.scoring import segments as score_segments
from autotag.web.plot import SCORE_PAD, Series, score_plot

NS = "{http://www.w3.org/2000/svg}"
ARTIFACTS = Path(__file__).parent / "artifacts"
WINDOWS = [(0.0, 3.2), (3.2, 6.4), (6.4, 9.6), (9.6, 12.0)]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in classes(e)]


def series_group(root: ET.Element, label: str) -> ET.Element:
    (group,) = [g for g in by_class(root, "series") if g.findtext(f"{NS}title") == label]
    return group


class Expected:
    """The scale the plot must have used, from its plot-area rectangle and the data."""

    def __init__(self, root: ET.Element, values: list[float], duration: float) -> None:
        (area,) = by_class(root, "plot-area")
        self.left, self.top = float(area.get("x")), float(area.get("y"))
        self.width, self.height = float(area.get("width")), float(area.get("height"))
        low, high = min(values), max(values)
        pad = (high - low) * SCORE_PAD
        self.low, self.high, self.duration = low - pad, high + pad, duration

    def x(self, seconds: float) -> float:
        return self.left + self.width * seconds / self.duration

    def y(self, score: float) -> float:
        return self.top + self.height * (self.high - score) / (self.high - self.low)


def two_series(**kwargs) -> tuple[str, list[Series]]:
    series = [Series("running", np.array([1.0, 3.0, 5.0, 2.0], np.float32), 4.0,
                     [(3.2, 9.6)], given=True),
              Series("swimming", np.array([0.5, 0.8, 1.2, 0.9], np.float32), 4.0,
                     [(9.6, 12.0)])]
    return score_plot(WINDOWS, series, 12.0, **kwargs), series


def test_polyline_points_are_window_midpoints_and_scores():
    svg, series = two_series()
    root = parse(svg)
    expected = Expected(root, [0.5, 5.0, 4.0], 12.0)
    for s in series:
        (line,) = series_group(root, s.label).iter(f"{NS}polyline")
        points = [float(c) for p in line.get("points").split() for c in p.split(",")]
        want = [c for (a, b), v in zip(WINDOWS, s.scores)
                for c in (expected.x((a + b) / 2), expected.y(float(v)))]
        assert points == pytest.approx(want, abs=0.01)
    # higher scores are drawn higher up, and everything lies inside the plot
    ys = [float(p.split(",")[1]) for p in
          next(series_group(root, "running").iter(f"{NS}polyline")).get("points").split()]
    assert ys[2] < ys[1] < ys[0]
    assert all(expected.top <= y <= expected.top + expected.height for y in ys)


def test_one_threshold_line_per_distinct_value_at_its_score():
    series = [Series("a", np.array([1, 2, 3, 4], np.float32), 2.5, given=True),
              Series("b", np.array([0, 1, 1, 0], np.float32), 2.5),
              Series("c", np.array([2, 2, 2, 2], np.float32), 3.75)]
    root = parse(score_plot(WINDOWS, series, 12.0))
    expected = Expected(root, [0.0, 4.0], 12.0)
    lines = by_class(root, "threshold")
    assert len(lines) == 2
    for line, value in zip(sorted(lines, key=lambda e: float(e.get("y1"))), (3.75, 2.5)):
        assert float(line.get("y1")) == pytest.approx(expected.y(value), abs=0.01)
        assert line.get("y1") == line.get("y2")
        assert line.get("stroke-dasharray")
        assert float(line.get("x1")) == pytest.approx(expected.left)
        assert float(line.get("x2")) == pytest.approx(expected.left + expected.width)
    labels = [e.text for e in by_class(root, "threshold-label")]
    assert labels == ["threshold 3.75", "threshold 2.5"]


def test_segments_of_given_series_span_their_times():
    svg, _ = two_series()
    root = parse(svg)
    expected = Expected(root, [0.5, 5.0, 4.0], 12.0)
    rects = by_class(root, "segment")
    assert rects and all(r.tag == f"{NS}rect" for r in rects)
    for rect in rects:  # the band and its lane: running's (3.2, 9.6) only, not swimming's
        assert float(rect.get("x")) == pytest.approx(expected.x(3.2), abs=0.01)
        assert float(rect.get("width")) == pytest.approx(expected.x(9.6) - expected.x(3.2),
                                                         abs=0.01)
        assert float(rect.get("opacity", 1)) < 1 or "lane" in classes(rect)
    (band,) = by_class(root, "band")
    assert float(band.get("y")) == pytest.approx(expected.top)
    assert float(band.get("height")) == pytest.approx(expected.height)


def test_the_highlighted_series_is_marked_and_its_segments_drawn():
    svg, _ = two_series(highlight="swimming")
    root = parse(svg)
    assert classes(series_group(root, "swimming")) == {"series", "highlight"}
    assert classes(series_group(root, "running")) == {"series", "given"}
    assert [e for e in by_class(root, "legend-item") if "highlight" in classes(e)]
    expected = Expected(root, [0.5, 5.0, 4.0], 12.0)
    starts = sorted(float(r.get("x")) for r in by_class(root, "band"))
    assert starts == pytest.approx([expected.x(3.2), expected.x(9.6)], abs=0.01)
    # strong series over faint ones: nothing is faint when both are strong
    assert series_group(root, "swimming").get("opacity") == "1"


def test_others_are_faint_and_given_strong():
    svg, _ = two_series()
    root = parse(svg)
    assert float(series_group(root, "swimming").get("opacity")) < 0.5
    assert float(series_group(root, "running").get("opacity")) == 1


def test_labels_are_escaped_text():
    label = '<script>alert(1)</script> & "quoted" \x01'
    series = [Series(label, np.array([1, 2, 3, 4], np.float32), 2.0, [(0, 3.2)], given=True)]
    svg = score_plot(WINDOWS, series, 12.0, highlight=label)
    assert "<script" not in svg
    root = parse(svg)  # parses: escaped, and the control character replaced
    assert not [e for e in root.iter() if e.tag.split("}")[-1].lower() == "script"]
    texts = [e.text or "" for e in root.iter()]
    assert any("<script>alert(1)</script>" in t for t in texts)
    assert '"quoted"' in root.get("aria-label")
    assert "highlight" in classes(series_group(root, label.replace("\x01", "\ufffd")))


def test_no_style_no_script_no_event_handlers():
    svg, _ = two_series(highlight="running")
    root = parse(svg)
    for element in root.iter():
        assert element.tag.split("}")[-1] not in ("style", "script", "foreignObject")
        assert "style" not in element.attrib
        assert not [a for a in element.attrib if a.lower().startswith("on")]
        assert not [v for v in element.attrib.values() if "javascript:" in v.lower()]
    assert root.get("role") == "img"
    assert root.get("viewBox") == "0 0 720 240"
    assert "running (given)" in root.get("aria-label")


def test_a_single_window_is_a_dot():
    series = [Series("jumping", np.array([5.0], np.float32), 4.0, [(0.0, 2.4)], given=True)]
    root = parse(score_plot([(0.0, 2.4)], series, 2.4))
    group = series_group(root, "jumping")
    assert not list(group.iter(f"{NS}polyline"))
    (dot,) = group.iter(f"{NS}circle")
    expected = Expected(root, [4.0, 5.0], 2.4)
    assert float(dot.get("cx")) == pytest.approx(expected.x(1.2), abs=0.01)
    assert float(dot.get("cy")) == pytest.approx(expected.y(5.0), abs=0.01)


def test_flat_scores_still_make_a_range():
    series = [Series("still", np.full(4, 2.0, np.float32), 2.0, given=True)]
    root = parse(score_plot(WINDOWS, series, 12.0))
    points = next(root.iter(f"{NS}polyline")).get("points").split()
    (area,) = by_class(root, "plot-area")
    middle = float(area.get("y")) + float(area.get("height")) / 2
    assert all(float(p.split(",")[1]) == pytest.approx(middle) for p in points)


def test_no_windows():
    root = parse(score_plot([], [], 0.0))
    assert root.get("role") == "img" and root.get("aria-label") == "no windows"
    assert "no windows" in "".join(root.itertext())


def test_scores_must_match_windows():
    with pytest.raises(ValueError, match="3 scores for 4 windows"):
        score_plot(WINDOWS, [Series("x", np.zeros(3, np.float32), 0.0)], 12.0)


def realistic() -> str:
    """A 62-second clip: cooking throughout its middle, vegetables cut for a few seconds of
    it, dishes washed at the end (just under its threshold); two more tags never near theirs."""
    duration = 62.0
    windows = [(s, min(duration, s + WINDOW_SECONDS)) for s in window_starts(duration, 24)]
    mids = np.array([(a + b) / 2 for a, b in windows])
    rng = np.random.default_rng(3)

    def bump(centre: float, spread: float, height: float, base: float) -> np.ndarray:
        noise = rng.normal(0, 0.25, len(mids))
        return (base + height * np.exp(-((mids - centre) / spread) ** 2) + noise
                ).astype(np.float32)

    series = []
    for label, scores, threshold, given in [
            ("cooking", bump(25, 14, 4.0, 2.2), 4.5, True),
            ("cutting vegetables", bump(20, 5, 4.5, 1.5), 4.5, True),
            ("washing dishes", bump(52, 4, 3.0, 1.8), 5.0, False),
            ("running", bump(5, 3, 1.0, 1.0), 5.0, False),
            ("<script>alert(1)</script>", bump(40, 20, 0.6, 0.8), 5.0, False)]:
        spans = [(g.start, g.end) for g in
                 score_segments(scores, [Window(*w) for w in windows], threshold)]
        series.append(Series(label, scores, threshold, spans if given else (), given))
    return score_plot(windows, series, duration)


def test_realistic_example_artifact():
    """Written for a person to look at (convert it with chromium --headless --screenshot)."""
    svg = realistic()
    root = parse(svg)
    assert len(by_class(root, "series")) == 5
    assert len(by_class(root, "lane")) == 2  # cooking's and the vegetables' segments
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "plot-example.svg").write_text(svg + "\n", encoding="utf-8")
