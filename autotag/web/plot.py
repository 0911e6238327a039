"""Windows × each tag's window scores → scales (seconds → x, raw score → y) → inline SVG: segment
bands (labelled, in lanes of their own), threshold lines, one line per tag (broken at a gap in the
windows), axes in m:ss, legend.

The clip page's plot of when each tag scores high. The page's Content-Security-Policy allows no
inline style and no script, so the SVG carries presentation attributes (fill, stroke, opacity…)
and class names the page's CSS may restyle (`series`, `given`, `highlight`, `segment`,
`threshold`, `legend-item`…), and nothing else. Every label is XML-escaped text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

SVG_NS = "http://www.w3.org/2000/svg"
# Okabe and Ito's colour-blind-safe colours (yellow left out: unreadable on white), then Paul
# Tol's. A tag's colour is its place in the vocabulary (tag_colour): the same on every page, in
# the plot's lines and legend and in the pages' chips (app.css --t0..--t9 hold the same list).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255",
           "#117733", "#999933", "#44AA99")
QUERY_COLOUR = "#F0E442"  # Okabe and Ito's yellow: the query's line, on the page's dark plot
FONT_SIZE = 11  # px
CHAR_WIDTH = 6.4  # px: an average sans-serif glyph at FONT_SIZE, to lay the legend out
MARGIN_LEFT = 48  # px: the score tick labels
MARGIN_RIGHT = 14  # px
MARGIN_TOP = 12  # px
AXIS_HEIGHT = 26  # px under the plot (and its lanes): time ticks and their labels
LANE_HEIGHT, LANE_GAP = 7, 3  # px: a strong series' segments as a bar of its own under the plot
LANE_FONT = 9  # px: the lane's label, in the left margin
LANE_CHARS = 8  # a longer lane label is cut with "…" (its <title> has it whole)
GAP_FACTOR = 2.5  # windows further apart than this × their usual spacing: a gap, not joined
LEGEND_ROW = 18  # px per row of the legend, under the axis
LEGEND_SWATCH = 16  # px: the line in front of a legend label
LEGEND_GAP = 18  # px between legend items
LABEL_CHARS = 36  # a longer label is cut with "…" in the legend (its <title> has it whole)
SCORE_PAD = 0.08  # of the score range, added above and below the highest and lowest value
FLAT_PAD = 0.5  # score units above and below when every score and threshold is the same
SCORE_TICKS = 4  # about this many score labels
TIME_TICKS = 6  # at most about this many time labels
TIME_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)  # s
STROKE_STRONG, STROKE_FAINT = 2.5, 1.5  # px: given or highlighted series; the others
FAINT = 0.35  # opacity of a series neither given nor highlighted
SEGMENT_OPACITY = 0.09  # of a segment's band
POINT_RADIUS = 2.5  # px: a window's score on a strong series
DOT_RADIUS = 4.0  # px: a series of a single window
DASH = "5 4"  # px on, px off: threshold lines
EMPTY_HEIGHT = 40  # px: the plot of a clip without windows
# Characters XML 1.0 does not allow (a label is user text): replaced, so the page still parses
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True)
class Series:
    label: str  # the tag (or the search query); escaped when drawn
    scores: np.ndarray  # float32 [n_windows], one raw score per window
    threshold: float  # the tag's threshold (raw score)
    segments: Sequence[tuple[float, float]] = ()  # (start, end) seconds where it is given / matches
    given: bool = False  # the clip has this tag: drawn strongly, the others faint
    colour: str | None = None  # its colour (tag_colour); None: the palette in series order


@dataclass(frozen=True)
class _Scale:
    """Seconds → x and raw score → y in px, inside the plot's rectangle."""

    left: float
    top: float
    width: float
    height: float
    duration: float  # s, at the right edge
    low: float  # score at the bottom edge
    high: float  # score at the top edge
    under: float  # px of segment lanes between the plot's bottom edge and the time axis' ticks

    def x(self, seconds: float) -> float:
        return self.left + self.width * seconds / self.duration

    def y(self, score: float) -> float:
        return self.top + self.height * (self.high - score) / (self.high - self.low)


def score_plot(windows: Sequence[tuple[float, float]], series: Sequence[Series], duration: float,
               *, width: int = 720, height: int = 240, highlight: str | None = None) -> str:
    """One <svg> of each series' window scores over the clip: x is time (0..duration s, a
    window's score at its midpoint), y the raw score. Given and highlighted series are drawn
    strongly, with their segments as bands; the rest faint (all at full strength when none is
    given or highlighted). A dashed line marks each distinct threshold."""
    if not windows:
        return _empty(width)
    for s in series:
        if len(s.scores) != len(windows):
            raise ValueError(f"{len(s.scores)} scores for {len(windows)} windows "
                             f"in the series {s.label!r}")
    duration = max(duration, max(end for _, end in windows), 1e-6)
    colours = {id(s): s.colour or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    strong = {id(s) for s in series if s.given or (highlight is not None and s.label == highlight)}
    legend = _legend_rows(series, width)
    lanes = [s for s in series if id(s) in strong and len(s.segments)]
    under = (LANE_HEIGHT + LANE_GAP) * len(lanes) + (LANE_GAP if lanes else 0)
    scale = _scale(series, duration, width,
                   height - under - AXIS_HEIGHT - LEGEND_ROW * len(legend), under)
    mids = [(start + end) / 2 for start, end in windows]
    breaks = _gaps(mids)
    parts = [_open(width, height, series, highlight),
             _frame(scale),
             *_time_axis(scale), *_score_axis(scale),
             *(_segments(s, i, scale, colours[id(s)]) for i, s in enumerate(lanes)),
             *_thresholds(series, scale, colours),
             *(_line(s, mids, breaks, scale, colours[id(s)], _classes(s, highlight),
                     id(s) in strong, _opacity(s, strong))
               # strong ones over faint ones, and the highlighted one (the query) over all
               for s in sorted(series, key=lambda s: (id(s) in strong, s.label == highlight))),
             *_legend(legend, scale, colours, strong, highlight),
             "</svg>"]
    return "\n".join(parts)


# -- scales ------------------------------------------------------------------------------------


def _scale(series: Sequence[Series], duration: float, width: int, bottom: float,
           under: float) -> _Scale:
    values = [float(v) for s in series for v in np.asarray(s.scores, np.float64).ravel()
              if math.isfinite(v)]
    values += [float(s.threshold) for s in series if math.isfinite(s.threshold)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (high - low) * SCORE_PAD if high > low else FLAT_PAD
    plot_height = max(1.0, bottom - MARGIN_TOP)
    return _Scale(MARGIN_LEFT, MARGIN_TOP, max(1.0, width - MARGIN_LEFT - MARGIN_RIGHT),
                  plot_height, duration, low - pad, high + pad, under)


def _nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 × 10ⁿ giving about `count` steps over `span`."""
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * 0.999)


def _ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9)
    return [i * step for i in range(first, math.floor(high / step + 1e-9) + 1)]


# -- parts -------------------------------------------------------------------------------------


def _open(width: int, height: int, series: Sequence[Series], highlight: str | None) -> str:
    names = ", ".join(s.label + (" (given)" if s.given else "") for s in series) or "no tags"
    summary = f"Window scores over time: {names}"
    if highlight is not None:
        summary += f"; highlighted: {highlight}"
    return (f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_attr(summary)}" class="score-plot" '
            f'font-family="sans-serif" font-size="{FONT_SIZE}" fill="currentColor">\n'
            f"<title>{_text(summary)}</title>")


def _empty(width: int) -> str:
    return (f'<svg xmlns="{SVG_NS}" viewBox="0 0 {width} {EMPTY_HEIGHT}" width="{width}" '
            f'height="{EMPTY_HEIGHT}" role="img" aria-label="no windows" '
            f'class="score-plot empty" font-family="sans-serif" font-size="{FONT_SIZE}" '
            f'fill="currentColor">\n<text class="empty" x="{width / 2:g}" '
            f'y="{EMPTY_HEIGHT / 2 + FONT_SIZE / 3:g}" text-anchor="middle" opacity="0.7">'
            "no windows</text>\n</svg>")


def _frame(scale: _Scale) -> str:
    return (f'<rect class="plot-area" x="{_n(scale.left)}" y="{_n(scale.top)}" '
            f'width="{_n(scale.width)}" height="{_n(scale.height)}" fill="none" '
            'stroke="currentColor" stroke-opacity="0.35"/>')


def _time_axis(scale: _Scale) -> list[str]:
    step = next((s for s in TIME_STEPS if scale.duration / s <= TIME_TICKS), TIME_STEPS[-1])
    bottom = scale.top + scale.height + scale.under
    parts = ['<g class="axis time">']
    for t in _ticks(0.0, scale.duration, step):
        x = _n(scale.x(t))
        parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{_n(scale.top)}" '
                     f'y2="{_n(scale.top + scale.height)}" stroke="currentColor" '
                     'stroke-opacity="0.1"/>')
        parts.append(f'<line class="tick" x1="{x}" x2="{x}" y1="{_n(bottom)}" '
                     f'y2="{_n(bottom + 4)}" stroke="currentColor" stroke-opacity="0.5"/>')
        parts.append(f'<text class="tick-label" x="{x}" y="{_n(bottom + 4 + FONT_SIZE)}" '
                     f'text-anchor="middle">{clock(t, tenths=step < 1)}</text>')
    parts.append("</g>")
    return parts


def _score_axis(scale: _Scale) -> list[str]:
    step = _nice_step(scale.high - scale.low, SCORE_TICKS)
    right = scale.left + scale.width
    parts = ['<g class="axis score">']
    for v in _ticks(scale.low, scale.high, step):
        y = _n(scale.y(v))
        parts.append(f'<line class="grid" x1="{_n(scale.left)}" x2="{_n(right)}" y1="{y}" '
                     f'y2="{y}" stroke="currentColor" stroke-opacity="0.1"/>')
        parts.append(f'<text class="tick-label" x="{_n(scale.left - 6)}" '
                     f'y="{_n(scale.y(v) + FONT_SIZE / 3)}" text-anchor="end">'
                     f"{_number(v, step)}</text>")
    middle = _n(scale.top + scale.height / 2)
    parts.append(f'<text class="axis-title" x="{FONT_SIZE}" y="{middle}" text-anchor="middle" '
                 f'transform="rotate(-90 {FONT_SIZE} {middle})" opacity="0.7">score</text>')
    parts.append("</g>")
    return parts


def _segments(s: Series, lane: int, scale: _Scale, colour: str) -> str:
    """Where a strong series is given (or matches): faint bands the plot's height, behind the
    lines, and a solid bar in its own lane under the plot, so overlapping ones stay apart."""
    lane_y = scale.top + scale.height + LANE_GAP + lane * (LANE_HEIGHT + LANE_GAP)
    parts = [f'<g class="segments" data-lane="{lane}">',
             (f'<text class="lane-label" x="{_n(scale.left - 4)}" '
              f'y="{_n(lane_y + LANE_HEIGHT / 2 + LANE_FONT / 3)}" text-anchor="end" '
              f'font-size="{LANE_FONT}" fill="{colour}"><title>{_text(s.label)}</title>'
              f"{_text(_cut(s.label, LANE_CHARS))}</text>")]
    for start, end in s.segments:
        start, end = max(0.0, float(start)), min(scale.duration, float(end))
        if end <= start:
            continue
        x, w = _n(scale.x(start)), _n(scale.x(end) - scale.x(start))
        title = f"<title>{_text(s.label)}: {clock(start)}–{clock(end)}</title>"
        parts.append(f'<rect class="segment band" x="{x}" y="{_n(scale.top)}" width="{w}" '
                     f'height="{_n(scale.height)}" fill="{colour}" opacity="{SEGMENT_OPACITY}">'
                     f"{title}</rect>")
        parts.append(f'<rect class="segment lane" x="{x}" y="{_n(lane_y)}" width="{w}" '
                     f'height="{LANE_HEIGHT}" fill="{colour}" rx="1">{title}</rect>')
    parts.append("</g>")
    return "\n".join(parts)


def _thresholds(series: Sequence[Series], scale: _Scale, colours: dict[int, str]) -> list[str]:
    """A dashed line for each distinct threshold, in its series' colour when it is one
    series' alone; labelled at the right end, above the line (below when labels would meet)."""
    by_value: dict[float, list[Series]] = {}
    for s in series:
        if math.isfinite(s.threshold):
            by_value.setdefault(float(s.threshold), []).append(s)
    parts = ['<g class="thresholds">']
    right = scale.left + scale.width
    last_label = -math.inf
    for value in sorted(by_value, reverse=True):  # top to bottom
        owners = by_value[value]
        colour = colours[id(owners[0])] if len(owners) == 1 else "currentColor"
        y = scale.y(value)
        label_y = y - 3 if y - 3 - FONT_SIZE >= last_label else y + FONT_SIZE
        last_label = label_y
        names = ", ".join(s.label for s in owners)
        parts.append(f'<line class="threshold" x1="{_n(scale.left)}" x2="{_n(right)}" '
                     f'y1="{_n(y)}" y2="{_n(y)}" stroke="{colour}" stroke-dasharray="{DASH}" '
                     f'stroke-width="1" opacity="0.8"><title>threshold of {_text(names)}: '
                     f"{value:.3g}</title></line>")
        parts.append(f'<text class="threshold-label" x="{_n(right - 4)}" y="{_n(label_y)}" '
                     f'text-anchor="end" fill="{colour}">threshold {value:.3g}</text>')
    parts.append("</g>")
    return parts


def _gaps(mids: list[float]) -> set[int]:
    """Indexes i where the line from window i-1 to window i would cross a gap: windows
    further apart than GAP_FACTOR × their median spacing (a stretch the clip's sampling
    skipped, a part that did not decode). Evenly spread windows have none."""
    steps = np.diff(np.asarray(mids, np.float64))
    if len(steps) < 2:
        return set()
    usual = float(np.median(steps))
    return {i + 1 for i, step in enumerate(steps) if usual > 0 and step > GAP_FACTOR * usual}


def _runs(s: Series, mids: list[float], breaks: set[int], scale: _Scale
          ) -> list[list[tuple[float, float]]]:
    """The series' points in runs joined by a line: a gap or a missing score ends a run."""
    runs: list[list[tuple[float, float]]] = [[]]
    for i, (t, v) in enumerate(zip(mids, np.asarray(s.scores))):
        if (i in breaks or not math.isfinite(v)) and runs[-1]:
            runs.append([])
        if math.isfinite(v):
            runs[-1].append((scale.x(t), scale.y(float(v))))
    return [r for r in runs if r]


def _line(s: Series, mids: list[float], breaks: set[int], scale: _Scale, colour: str,
          classes: str, strong: bool, opacity: float) -> str:
    """The series' polylines, one a run of joined windows (a dot for a lone window), with a
    dot per window when strong."""
    runs = _runs(s, mids, breaks, scale)
    width = STROKE_STRONG if strong else STROKE_FAINT
    parts = [f'<g class="{classes}" opacity="{opacity:g}"><title>{_text(s.label)}</title>']
    for points in runs:
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(f"{_n(x)},{_n(y)}" for x, y in points)}"'
                         f' fill="none" stroke="{colour}" stroke-width="{width}" '
                         'stroke-linejoin="round" stroke-linecap="round"/>')
    points = [p for run in runs for p in run]
    radius = DOT_RADIUS if len(points) == 1 else POINT_RADIUS
    if strong or any(len(run) == 1 for run in runs):
        parts += [f'<circle class="point" cx="{_n(x)}" cy="{_n(y)}" r="{radius:g}" '
                  f'fill="{colour}"/>' for run in runs for x, y in run
                  if strong or len(run) == 1]
    parts.append("</g>")
    return "\n".join(parts)


def _classes(s: Series, highlight: str | None) -> str:
    return " ".join(["series", *(["given"] if s.given else []),
                     *(["highlight"] if highlight is not None and s.label == highlight else [])])


def _opacity(s: Series, strong: set[int]) -> float:
    return 1.0 if not strong or id(s) in strong else FAINT


# -- legend ------------------------------------------------------------------------------------


def _cut(label: str, chars: int) -> str:
    return label if len(label) <= chars else label[:chars - 1] + "…"


def _short(label: str) -> str:
    return _cut(label, LABEL_CHARS)


def _item_width(s: Series) -> float:
    return LEGEND_SWATCH + 4 + CHAR_WIDTH * len(_short(s.label)) + LEGEND_GAP


def _legend_rows(series: Sequence[Series], width: int) -> list[list[Series]]:
    """Series in order, as many to a row as fit across the plot."""
    rows: list[list[Series]] = []
    room = width - MARGIN_LEFT - MARGIN_RIGHT
    used = math.inf
    for s in series:
        if used + _item_width(s) > room:
            rows.append([])
            used = 0.0
        rows[-1].append(s)
        used += _item_width(s)
    return rows


def _legend(rows: list[list[Series]], scale: _Scale, colours: dict[int, str], strong: set[int],
            highlight: str | None) -> list[str]:
    parts = ['<g class="legend">']
    top = scale.top + scale.height + scale.under + AXIS_HEIGHT
    for r, row in enumerate(rows):
        y = top + r * LEGEND_ROW + LEGEND_ROW / 2
        x = scale.left
        for s in row:
            colour = colours[id(s)]
            classes = _classes(s, highlight).replace("series", "legend-item", 1)
            bold = ' font-weight="bold"' if id(s) in strong else ""
            parts.append(f'<g class="{classes}" opacity="{_opacity(s, strong):g}">'
                         f"<title>{_text(s.label)}</title>"
                         f'<line x1="{_n(x)}" x2="{_n(x + LEGEND_SWATCH)}" y1="{_n(y)}" '
                         f'y2="{_n(y)}" stroke="{colour}" stroke-width="{STROKE_STRONG}"/>'
                         f'<text x="{_n(x + LEGEND_SWATCH + 4)}" y="{_n(y + FONT_SIZE / 3)}"'
                         f"{bold}>{_text(_short(s.label))}</text></g>")
            x += _item_width(s)
    parts.append("</g>")
    return parts


# -- text --------------------------------------------------------------------------------------


def _text(value: str) -> str:
    """User text as XML character data: escaped, and characters XML forbids replaced."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value: str) -> str:
    """User text inside a double-quoted attribute."""
    return escape(_NOT_XML.sub("\ufffd", str(value)), {'"': "&quot;", "\n": "&#10;",
                                                       "\r": "&#13;", "\t": "&#9;"})


def _n(value: float) -> str:
    """A coordinate in px, to a hundredth."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _number(value: float, step: float) -> str:
    """A score label with as many decimals as its step needs."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    text = f"{value:.{decimals}f}"
    return text[1:] if re.fullmatch(r"-0(\.0*)?", text) else text


def clock(seconds: float, tenths: bool = False) -> str:
    """The one time format of every page and the plot: m:ss (0:05, 1:30), h:mm:ss from an
    hour on; with tenths (0:02.5) where whole seconds would not tell times apart."""
    seconds = max(0.0, float(seconds))
    if tenths and round(seconds, 1) != round(seconds):
        tenth = round(seconds * 10)
        whole, fraction = divmod(tenth, 10)
        return f"{_hms(whole)}.{fraction}"
    return _hms(round(seconds))


def _hms(whole: int) -> str:
    h, m, s = whole // 3600, whole // 60 % 60, whole % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def tag_colour(index: int) -> str:
    """The colour of the vocabulary's index-th tag (chips use class c{index % 10})."""
    return PALETTE[index % len(PALETTE)]
