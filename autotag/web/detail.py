"""A clip id (+ ?q=, ?t=) → its stored window embeddings → tags, scores over time, the query's
best segment, how to play it, its outputs: everything the clip page and GET /api/clips/ID show.

A clip's tags are the tagger's (tagging.Tagger.tag on the stored embeddings, reviews winning),
so the page says what the clip's outputs say; the plot is plot.score_plot's inline SVG.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request

from autotag.clip import SourceInfo
from autotag.opener import NotServable
from autotag.outputs import clip_outputs
from autotag.scoring import segments, window_scores
from autotag.search import best_segment
from autotag.store import FileRecord
from autotag.web import params
from autotag.web.library import Library
from autotag.web.plot import QUERY_COLOUR, Series, score_plot, tag_colour
from autotag.web.preview_cache import PREVIEW_MAX_SECONDS
from autotag.web.scores import against, nothing_reaches

PLOT_NARROW, PLOT_NARROW_HEIGHT = 380, 300  # px: the clip page's plot on a phone


def clip_detail(request: Request, lib: Library, file_id: int) -> dict:
    """Everything a clip's page shows: tags with scores, thresholds, confidences and segments,
    the plot of every tag's window scores over time, how to play it, the outputs written."""
    record = lib.clip(file_id)
    source = SourceInfo(record.path, record.size, record.mtime, record.sha256)
    clip = lib.store.load_embedded(source, lib.model, thumbnails=False)
    if clip is None:
        raise HTTPException(404, "this clip's embeddings are not stored for the current model")
    labels = lib.vocabulary.labels
    scores = window_scores(clip.embeddings, lib.vocabulary.vectors)  # for the plot
    tagged = lib.tagger.tag(clip)  # the tags its outputs have, reviews winning
    given, ranking = tagged.tags, tagged.ranking
    given_labels = {t.label for t in given}
    series = [Series(t.label, scores[:, labels.index(t.label)], lib.threshold(t.label),
                     [(s.start, s.end) for s in t.segments] if t.label in given_labels else (),
                     t.label in given_labels, tag_colour(labels.index(t.label)))
              for t in ranking]
    query = params.query(request)
    match = None
    if query:
        vector, known = lib.query_vector(query)
        if known:
            threshold = lib.config.tagging.min_score
            column, _, span = best_segment(clip, vector, threshold)
            spans = segments(column, clip.windows, threshold)
            match = {"query": query, "score": round(float(column.mean()), 4),
                     "segment": span.to_json(), "threshold": threshold}
            series.insert(0, Series(f"“{query}”", column, threshold,
                                    [(s.start, s.end) for s in spans if s.score >= threshold],
                                    True, QUERY_COLOUR))
    start = _start(request, match, given)
    base = params.prefix(request)
    detail = {
        "id": record.id,
        "path": record.where,
        "name": record.path.name,
        "folder": str(record.path.parent),
        "size": record.size,
        "duration": round(clip.duration, 3),
        "tagged": record.updated,
        "windows": [w.to_json() for w in clip.windows],
        "tags": [_tag_json(lib, t) for t in given],
        "ranking": [_tag_json(lib, t) for t in ranking],
        "match": match,
        "start": start,
        "media": f"{base}/api/clips/{record.id}/media",
        "outputs": _outputs(lib, record.path),
    }
    detail.update(_playback(lib, record, base, start, clip.duration))
    windows = [(w.start, w.end) for w in clip.windows]
    highlight = series[0].label if match else None
    detail["plot"] = score_plot(windows, series, clip.duration, highlight=highlight)
    # a phone's plot: drawn at its own size, so its text is not shrunk to half (app.css
    # shows one of the two by the screen's width)
    detail["plot_narrow"] = score_plot(windows, series, clip.duration, width=PLOT_NARROW,
                                       height=PLOT_NARROW_HEIGHT, highlight=highlight)
    detail["nothing"] = None if given or not ranking else nothing_reaches(
        ranking[0].label, against(ranking[0].score, lib.threshold(ranking[0].label)),
        "in this clip")
    return detail


def _start(request: Request, match: dict | None, given) -> float:
    """Where playback starts: ?t=, else the query's segment, else the top tag's."""
    raw = request.query_params.get("t")
    if raw:
        try:
            value = float(raw)
            if np.isfinite(value) and value >= 0:
                return round(value, 1)
        except ValueError:
            pass
    if match:
        return round(match["segment"]["start"], 1)
    if given and given[0].segments:
        return round(given[0].segments[0].start, 1)
    return 0.0


def _tag_json(lib: Library, tag) -> dict:
    """A tag's JSON (clip.Tag.to_json) with the threshold it was given against."""
    return {**tag.to_json(), "threshold": lib.threshold(tag.label)}


def _playback(lib: Library, record: FileRecord, base: str, start: float,
              duration: float) -> dict:
    """How the page shows the clip: the original (video or GIF), or an encoded preview of
    the segment from `start` when browsers cannot play the original."""
    try:
        lib.source(record).open().close()  # still there, the version tagged, inside
        found = lib.playability(record)
    except NotServable as exc:
        return {"playable": False, "kind": "gone", "reason": str(exc), "preview": None}
    if found is None:
        return {"playable": False, "kind": "gone", "reason": "autotag cannot read this clip "
                "any more", "preview": None}
    if found.playable:
        kind = "image" if found.mime == "image/gif" else "video"
        return {"playable": True, "kind": kind, "mime": found.mime, "reason": "",
                "preview": None}
    end = min(duration, start + PREVIEW_MAX_SECONDS)
    span = urlencode({"start": f"{start:.1f}", "end": f"{end:.1f}"})
    return {"playable": False, "kind": "preview", "reason": found.reason,
            "preview": f"{base}/api/clips/{record.id}/preview?{span}"}


def _outputs(lib: Library, path: Path) -> list[dict]:
    """The files the clip's outputs are (outputs.clip_outputs), and whether each exists."""
    return [{"kind": o.title, "path": str(o.path), "exists": o.path.exists()}
            for o in clip_outputs(path, lib.config.outputs)]

