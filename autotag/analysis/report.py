"""Evaluation → one self-contained HTML page: summary cards, per-tag table with score strips,
prompt sets side by side, confusions and their matrix, each tag's best / worst / false-alarm clips.

The page opens anywhere without network access: inline CSS, no scripts, every image a base64
data: URI (the confusion matrix drawn with OpenCV, clips' frames from the state store's
thumbnails, uint8 [n, h, w, 3] RGB), score strips as inline SVG. Rendering returns a string;
`write_html` writes it atomically. Nothing here prints (the terminal tables are the command's).
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from autotag.analysis.evaluation import Evaluation
from autotag.analysis.metrics import ranking
from autotag.atomic import write_atomic

GALLERY = 3  # clips shown per row of a tag's gallery (best, worst, false alarms)
THUMB_HEIGHT = 72  # px, a clip's frames in the report
THUMB_FRAMES = 3  # frames per clip, from across it
THUMB_QUALITY = 80  # JPEG
MATRIX_SIZE = 720  # px, the confusion matrix's cells fill about this much
CELL_MIN, CELL_MAX = 12, 44  # px per cell
LABEL_CHARS = 28  # longer tag names are cut in the matrix image
STRIP_W, STRIP_H = 220, 30  # px, a tag's score strip
STRIP_TICKS = 150  # clips drawn one tick each; more are drawn as a histogram
STRIP_BINS = 54  # histogram bars across the strip

Thumbnails = Callable[[str], np.ndarray]  # sha256 → uint8 [n, h, w, 3] RGB (Store.thumbnails)


# -- figures as text (the terminal tables use these too) ------------------------------------------

def percent(value: float | None) -> str:
    """A share as '66.7%'; '–' for none."""
    return "–" if value is None else f"{100 * value:.1f}%"


def number(value: float | None) -> str:
    """A figure such as AP as '0.917'; '–' for none or NaN (a tag without clips)."""
    return "–" if value is None or np.isnan(value) else f"{value:.3f}"


# -- HTML -----------------------------------------------------------------------------------------

def write_html(evaluation: Evaluation, path: Path, thumbnails: Thumbnails) -> None:
    """Write the report atomically (raises OSError)."""
    write_atomic(path, render_html(evaluation, thumbnails).encode("utf-8"))


_CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --good:#12805c; --bad:#c4320a;
        --accent:#2563eb; --bg:#f8fafc; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; padding: 24px 32px 64px; max-width: 1200px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 36px 0 10px; }
h3 { font-size: 16px; margin: 22px 0 6px; }
.muted, caption, figcaption { color: var(--muted); }
code { font-size: 90%; }
.cards { display: flex; gap: 16px; flex-wrap: wrap; margin: 20px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px;
        min-width: 170px; }
.card b { display: block; font-size: 30px; } .card span { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
caption { text-align: left; padding: 4px 0; caption-side: bottom; font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right;
         vertical-align: middle; }
th { background: #f1f5f9; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.best, .better { color: var(--good); font-weight: 700; }
th.t, td.t { text-align: left; }
td.low { color: var(--bad); }
.bar { display: inline-block; height: 8px; background: var(--accent); border-radius: 4px;
       vertical-align: middle; margin-right: 6px; }
.prompts { color: var(--muted); font-size: 12px; text-align: left; }
.groups { display: flex; gap: 28px; flex-wrap: wrap; }
.gallery { display: flex; gap: 10px; margin: 4px 0 10px; }
.badge { display: inline-block; font-size: 11px; padding: 0 5px; border-radius: 4px;
         background: #fee4e2; color: var(--bad); }
.badge.ok { background: #d1fadf; color: var(--good); }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px;
         padding: 6px; max-width: 260px; }
figure img { display: block; height: 72px; max-width: 100%; object-fit: cover; }
figcaption { font-size: 12px; overflow-wrap: anywhere; }
.none { width: 160px; height: 72px; background: #e2e8f0; color: var(--muted); font-size: 12px;
        display: flex; align-items: center; justify-content: center; }
.row-label { font-size: 13px; font-weight: 600; margin-top: 8px; }
.tag { border-top: 1px solid var(--line); padding-top: 6px; }
.matrix img { max-width: 100%; border: 1px solid var(--line); background: #fff; }
"""


def render_html(evaluation: Evaluation, thumbnails: Thumbnails) -> str:
    ev, lab = evaluation, evaluation.labelled
    e = html.escape
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>autotag evaluation: {e(lab.root.name or str(lab.root))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>How well the vocabulary tags <code>{e(str(lab.root))}</code></h1>",
        (f'<p class="muted">{len(lab.clips)} clips in {len(ev.tags)} tags · model '
         f"{e(lab.model)} · {e(when)}</p>"),
        _cards(ev), _tag_table(ev), _sets_table(ev), _confusion_section(ev),
        _galleries(ev, _ThumbCache(thumbnails)), _left_out(ev), "</body></html>",
    ]
    return "\n".join(parts)


def _cards(ev: Evaluation) -> str:
    cards = [(percent(ev.top1), "top-1 accuracy: the best-scoring tag is right"),
             (percent(ev.topk), f"top-{ev.k} accuracy: a right tag among the {ev.k} best"),
             (number(ev.map), "mean average precision over the tags (1 = perfect ranking)")]
    return '<div class="cards">' + "".join(
        f"<div class=\"card\"><b>{v}</b><span>{html.escape(t)}</span></div>" for v, t in cards
    ) + "</div>"


def _tag_table(ev: Evaluation) -> str:
    e = html.escape
    rows = []
    truth = ev.labelled.truth
    for t in sorted(ev.tags, key=lambda t: t.ap):
        j = ev.labelled.labels.index(t.label)
        low = ' class="low"' if t.ap < 0.5 else ""
        rows.append(
            f'<tr><td><a href="#{_anchor(t.label)}">{e(t.label)}</a></td><td>{t.clips}</td>'
            f'<td{low}><span class="bar" style="width:{60 * t.ap:.0f}px"></span>{number(t.ap)}</td>'
            f"<td>{percent(t.precision)}</td><td>{percent(t.recall)}</td><td>{t.given}</td>"
            f"<td>{t.threshold:g}</td>"
            f"<td>{_strip_svg(ev.scores[:, j], truth[:, j], t.threshold)}</td></tr>")
    return ("<h2>Per tag</h2><table><tr><th>tag</th><th>clips</th><th>AP</th><th>precision</th>"
            "<th>recall</th><th>given</th><th>threshold</th><th>scores</th></tr>"
            + "".join(rows) + "<caption>Worst first. Precision and recall of the tags tagging "
            "gives (top_k, thresholds). Scores: each clip's score for the tag, its own clips "
            "green above the line, the others grey below; red: the threshold.</caption></table>")


def _strip_svg(scores: np.ndarray, positive: np.ndarray, threshold: float) -> str:
    """One tag's clip scores on a line: its own clips green above the axis, the others grey
    below, the threshold red; one tick per clip, or a histogram when there are many."""
    lo = float(min(scores.min(), threshold))
    hi = float(max(scores.max(), threshold))
    span = hi - lo or 1.0
    mid = STRIP_H / 2

    def x(v: float) -> float:
        return 3 + (STRIP_W - 6) * (v - lo) / span

    marks = []
    for own, colour, sign in ((False, "#98a2b3", 1), (True, "#12805c", -1)):
        values = scores[positive == own]
        if len(values) <= STRIP_TICKS:
            marks += [f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{mid}" '
                      f'y2="{mid + sign * (mid - 2):.1f}" stroke="{colour}" stroke-width="1.5"/>'
                      for v in values.tolist()]
            continue
        counts, edges = np.histogram(values, bins=STRIP_BINS, range=(lo, hi))
        heights = (mid - 2) * np.sqrt(counts / max(counts.max(), 1))  # sqrt: rare bins show
        width = (STRIP_W - 6) / STRIP_BINS
        marks += [f'<rect x="{x(edge):.1f}" y="{mid if sign > 0 else mid - h:.1f}" '
                  f'width="{width:.1f}" height="{h:.1f}" fill="{colour}"/>'
                  for edge, h in zip(edges[:-1].tolist(), heights.tolist(), strict=True) if h]
    line = (f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="1" y2="{STRIP_H - 1}" '
            'stroke="#c4320a" stroke-width="2"/>')
    return (f'<svg width="{STRIP_W}" height="{STRIP_H}" viewBox="0 0 {STRIP_W} {STRIP_H}" '
            f'role="img" aria-label="scores from {lo:.2f} to {hi:.2f}">'
            f'<title>scores {lo:.2f} … {hi:.2f}</title>{"".join(marks)}{line}</svg>')


def _sets_table(ev: Evaluation) -> str:
    e = html.escape
    head = "".join(f"<th>{e(s.name)}</th>" for s in ev.sets)
    rows = []
    for t in ev.tags:
        j = ev.labelled.labels.index(t.label)
        values = [s.ap[t.label] for s in ev.sets]
        cells = "".join(
            f'<td class="best">{number(v)}</td>' if v == max(values) and len(set(values)) > 1
            else f"<td>{number(v)}</td>" for v in values)
        prompts = " · ".join(
            f"{e(s.name)}: " + ", ".join(
                _prompt(p, s.unknown, *((t.prompt_ap, t.better_prompts)
                                        if s.name == "configured" else ({}, {})))
                for p in s.prompts[j]) for s in ev.sets)
        rows.append(f"<tr><td>{e(t.label)}</td>{cells}</tr>"
                    f'<tr><td colspan="{len(ev.sets) + 1}" class="prompts">{prompts}</td></tr>')
    summary = ("<tr><th>mAP</th>" + "".join(f"<th>{number(s.map)}</th>" for s in ev.sets)
               + "</tr><tr><th>top-1</th>" + "".join(f"<th>{percent(s.top1)}</th>" for s in ev.sets)
               + "</tr>")
    return ("<h2>Which phrasing works</h2><table><tr><th>tag (AP)</th>" + head + "</tr>"
            + "".join(rows) + summary + "<caption>name: the tag's name alone; configured: the "
            "config's prompts (what tagging uses); templates: the name in each template, "
            "averaged. Under each tag its prompts, with each ensemble prompt's own AP "
            "(<b class=\"better\">green</b>: better alone than the ensemble); <s>struck</s> "
            "prompts are words the model does not know.</caption></table>")


def _prompt(prompt: str, unknown: Sequence[str], ap: dict[str, float],
            better: dict[str, float]) -> str:
    text = html.escape(prompt or "''")
    if prompt in unknown:
        text = f"<s>{text}</s>"
    if prompt in better:
        return f'<b class="better">{text} ({number(ap[prompt])})</b>'
    return f"{text} ({number(ap[prompt])})" if prompt in ap else text


def _confusion_section(ev: Evaluation) -> str:
    e = html.escape
    rows, cols, counts = ev.matrix
    image = _data_uri("image/png", _png(confusion_image(rows, cols, counts)))
    if ev.confusions:
        pairs = "".join(f'<tr><td>{e(c.true)}</td><td class="t">{e(c.predicted)}</td>'
                        f"<td>{c.clips}</td><td>{percent(c.share)}</td></tr>"
                        for c in ev.confusions)
        table = ('<table><tr><th>tag</th><th class="t">taken for</th><th>clips</th><th>share '
                 "of the tag</th></tr>" + pairs + "<caption>Clips whose best-scoring tag is none of their "
                 "tags, by the pair that costs the most.</caption></table>")
    else:
        table = "<p>No clip's best-scoring tag is wrong.</p>"
    return ("<h2>Confusions</h2>" + table + '<h3>Confusion matrix</h3><div class="matrix">'
            f'<img alt="confusion matrix: true tags in rows, best-scoring tags in columns" '
            f'src="{image}"></div><p class="muted">Rows: the clips\' tags; columns: their '
            "best-scoring tag; shade: share of the row's clips.</p>")


class _ThumbCache:
    """sha256 → a data: URI of a few of the clip's frames side by side (or None)."""

    def __init__(self, thumbnails: Thumbnails) -> None:
        self.thumbnails = thumbnails
        self.cache: dict[str, str | None] = {}

    def __call__(self, sha: str) -> str | None:
        if sha not in self.cache:
            self.cache[sha] = self._make(sha)
        return self.cache[sha]

    def _make(self, sha: str) -> str | None:
        try:
            thumbs = self.thumbnails(sha)
        except Exception:  # noqa: BLE001 - a missing preview must not lose the report
            return None
        if thumbs.size == 0:
            return None
        picks = np.linspace(0, len(thumbs) - 1, min(THUMB_FRAMES, len(thumbs))).round()
        tiles = []
        for i in picks.astype(int):
            h, w = thumbs[i].shape[:2]
            width = max(1, round(w * THUMB_HEIGHT / h))
            tiles.append(cv2.resize(thumbs[i], (width, THUMB_HEIGHT), interpolation=cv2.INTER_AREA))
        bgr = cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        return _data_uri("image/jpeg", jpeg.tobytes()) if ok else None


def _galleries(ev: Evaluation, thumbs: _ThumbCache) -> str:
    lab = ev.labelled
    truth = lab.truth
    top1 = ranking(ev.scores)[:, 0]
    out = [("<h2>Clips per tag</h2><p class=\"muted\">Each tag's best-scoring and worst-scoring "
            "clips, and the other tags' clips that score highest for it (false alarms); "
            "<i>tagged</i> / <i>missed</i>: whether tagging gives the tag (top_k, threshold)."
            "</p>")]
    for t in ev.tags:
        j = lab.labels.index(t.label)
        scores = ev.scores[:, j]
        own = sorted(np.flatnonzero(truth[:, j]), key=lambda i: -scores[i])
        others = sorted(np.flatnonzero(~truth[:, j]), key=lambda i: -scores[i])[:GALLERY]
        best = own[:GALLERY]
        worst = own[GALLERY:][-GALLERY:][::-1]
        out.append(f'<div class="tag" id="{_anchor(t.label)}"><h3>{html.escape(t.label)}</h3>'
                   f'<p class="muted">{t.clips} clips · AP {number(t.ap)} · threshold '
                   f"{t.threshold:g}</p>")
        out.append('<div class="groups">')
        for title, picks in (("best", best), ("worst", worst), ("false alarms", others)):
            if picks:
                out.append(f'<div><div class="row-label">{title}</div><div class="gallery">'
                           + "".join(_figure(ev, i, j, top1, thumbs) for i in picks)
                           + "</div></div>")
        out.append("</div></div>")
    return "\n".join(out)


def _figure(ev: Evaluation, i: int, j: int, top1: np.ndarray, thumbs: _ThumbCache) -> str:
    lab = ev.labelled
    clip = lab.clips[i]
    e = html.escape
    try:
        name = str(clip.path.relative_to(lab.root))
    except ValueError:
        name = str(clip.path)
    uri = thumbs(clip.sha256)
    image = (f'<img alt="frames of {e(name)}" src="{uri}">' if uri
             else '<div class="none">no preview stored</div>')
    predicted = lab.labels[int(top1[i])]
    taken = "" if predicted in clip.labels else f"<br>taken for <b>{e(predicted)}</b>"
    own = lab.labels[j] in clip.labels
    if ev.given[i, j]:
        badge = '<span class="badge ok">tagged</span>' if own else '<span class="badge">tagged'
        badge += "</span>"
    else:
        badge = '<span class="badge">missed</span>' if own else ""
    return (f"<figure>{image}<figcaption>{e(name)}<br>score {ev.scores[i, j]:.2f} {badge}"
            f"{taken}</figcaption></figure>")


def _left_out(ev: Evaluation) -> str:
    lab = ev.labelled
    e = html.escape
    out = []
    if lab.unmatched:
        out.append("<h2>Left out</h2><p>Subfolders that match no tag of the vocabulary: "
                   + ", ".join(f"<code>{e(n)}</code>" for n in lab.unmatched) + "</p>")
    if lab.failed:
        items = "".join(f"<li><code>{e(str(p))}</code>: {e(r)}</li>" for p, r in lab.failed)
        out.append(f"<h2>Clips that could not be used</h2><ul>{items}</ul>")
    return "\n".join(out)


def _anchor(label: str) -> str:
    return "tag-" + "".join(c if c.isalnum() else "-" for c in label)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png(image: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OSError("OpenCV could not encode the confusion matrix")
    return png.tobytes()


# -- the confusion-matrix image -------------------------------------------------------------------

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (48, 35, 29)  # BGR of --fg
_HIGH = np.array([235, 99, 37], np.float64)  # BGR of --accent, a full row
_LOW = np.array([255, 255, 255], np.float64)


def _ascii(label: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    text = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "~"
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def confusion_image(rows: Sequence[str], cols: Sequence[str], counts: np.ndarray) -> np.ndarray:
    """BGR uint8 image of the matrix: true tags down the left, best-scoring tags across the top
    (written upwards), each cell shaded by its share of the row (square-rooted, so a few
    confusions in a large row still show), with its count when it fits."""
    n = max(len(rows), len(cols), 1)
    cell = int(np.clip(MATRIX_SIZE // n, CELL_MIN, CELL_MAX))
    scale = max(0.3, min(0.5, cell / 60))
    thick = 1
    text_h = cv2.getTextSize("Ag", _FONT, scale, thick)[0][1]

    def width(label: str) -> int:
        return cv2.getTextSize(_ascii(label), _FONT, scale, thick)[0][0]

    left = max((width(r) for r in rows), default=0) + 12
    top = max((width(c) for c in cols), default=0) + 12
    h, w = top + cell * len(rows) + 8, left + cell * len(cols) + 8
    image = np.full((h, w, 3), 255, np.uint8)
    totals = counts.sum(axis=1, keepdims=True).clip(min=1)
    shares = counts / totals
    for r in range(len(rows)):
        for c in range(len(cols)):
            colour = _LOW + (_HIGH - _LOW) * np.sqrt(shares[r, c])  # sqrt: small shares show
            y0, x0 = top + r * cell, left + c * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell - 1, y0 + cell - 1),
                          tuple(int(v) for v in colour), -1)
            cv2.rectangle(image, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (230, 231, 228), 1)
            if counts[r, c] and cell >= 20:
                text = str(int(counts[r, c]))
                tw = cv2.getTextSize(text, _FONT, scale, thick)[0][0]
                if tw < cell - 2:
                    ink = (255, 255, 255) if shares[r, c] > 0.5 else _INK
                    cv2.putText(image, text, (x0 + (cell - tw) // 2, y0 + (cell + text_h) // 2),
                                _FONT, scale, ink, thick, cv2.LINE_AA)
    for r, label in enumerate(rows):
        y = top + r * cell + (cell + text_h) // 2
        cv2.putText(image, _ascii(label), (left - 6 - width(label), y), _FONT, scale, _INK,
                    thick, cv2.LINE_AA)
    # column labels: drawn left to right on a strip, then turned to read upwards
    strip = np.full((cell * max(len(cols), 1), top, 3), 255, np.uint8)
    for c, label in enumerate(cols):
        y = c * cell + (cell + text_h) // 2
        cv2.putText(strip, _ascii(label), (6, y), _FONT, scale, _INK, thick, cv2.LINE_AA)
    turned = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)  # [top, cell * n_cols]
    image[:top, left:left + turned.shape[1]] = turned[:, :w - left]
    return image
