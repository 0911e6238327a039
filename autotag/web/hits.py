"""A request's q, like, tag and folder → the live index's ranking → hits as JSON dicts: what the
search page and GET /api/search both show.

The ranking is LiveIndex.search (search.search's scores and segments); text is embedded through
Library.query_vector, "more like this" is the clip's own stored embedding (search.like_vector).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request

from autotag.search import like_vector
from autotag.search.live import Filter
from autotag.store import FileRecord
from autotag.web import params
from autotag.web.library import Library


def hit_json(request: Request, lib: Library, record: FileRecord, score: float,
             segment: dict | None, window: int, query: str = "",
             threshold: float | None = None) -> dict:
    """One search result as the API gives it and a card shows it."""
    base = params.prefix(request)
    thumb = {"window": window}
    page = {"q": query} if query else {}
    if segment:
        page["t"] = f"{segment['start']:.1f}"
    return {
        "id": record.id,
        "path": record.where,
        "name": record.path.name,
        "folder": str(record.path.parent),
        "score": round(score, 4),
        "threshold": lib.config.tagging.min_score if threshold is None else threshold,
        "segment": segment,
        "thumbnail": f"{base}/api/clips/{record.id}/thumbnail?{urlencode(thumb)}",
        "url": f"{base}/clips/{record.id}" + (f"?{urlencode(page)}" if page else ""),
    }


def _filter(request: Request, lib: Library) -> Filter:
    """?tag= (each a tag of the vocabulary, else 400) and ?folder= as the index's Filter."""
    tags = tuple(t for t in request.query_params.getlist("tag") if t)
    unknown = [t for t in tags if t not in lib.vocabulary.labels]
    if unknown:
        raise HTTPException(400, f"unknown tag {unknown[0]!r}")
    folders = tuple(Path(f) for f in request.query_params.getlist("folder") if f)
    return Filter(folders, tags)


def run_search(request: Request, lib: Library,
               top: int | None = None) -> tuple[list[dict], str | None]:
    """The hits for the request's q (and filters) as JSON dicts, and a message when there are
    none to show for a reason the user can act on. top: how many (default ?top=)."""
    query = params.query(request)
    where, top = _filter(request, lib), top or params.top(request)
    like = _like(request, lib)
    if not query and like is None:
        if where.tags:  # a tag's clips, best first
            return _tag_hits(request, lib, where, top), None
        return [], None
    started = time.perf_counter()
    if like is not None:  # more like this: the clip's own embedding, from the store
        vector, own = like
        where = dataclasses.replace(where, exclude=(own,))
    else:
        vector, known = lib.query_vector(query)
        if not known:
            return [], f"the model knows none of the words of “{query}”; try plain English words"
    hits, _stale = lib.index.search(vector, top, where)  # stale: gone or changed clips
    lib.search_latency.observe(time.perf_counter() - started)
    out = [hit_json(request, lib, h.record, h.score, h.segment.to_json(), h.best_window, query)
           for h in hits]
    if not out:
        return [], "no clip matches" + (" with these filters" if where.tags or where.folders
                                        else "; tag a folder first (autotag --once DIR)")
    return out, None


def _like(request: Request, lib: Library) -> tuple[np.ndarray, int] | None:
    """?like=ID[&at=SECONDS] → (query vector, the clip's id), None without like; 400/404."""
    raw = request.query_params.get("like")
    if not raw:
        return None
    file_id = params.clip_id(raw)
    at = params.seconds(request, "at", None)
    record = lib.clip(file_id)
    vector = like_vector(lib.store, lib.model, record, at, lib.config.tagging.min_score)
    if vector is None:
        raise HTTPException(404, "this clip's embeddings are not stored for the current model")
    return vector, file_id


def _tag_hits(request: Request, lib: Library, where: Filter, top: int) -> list[dict]:
    """A tag's clips (and the other filters'), best first: ranked by the tag's own vector, so
    the score is its clip score, with the segments at its threshold."""
    label = where.tags[0]
    vector = lib.vocabulary.vectors[lib.vocabulary.labels.index(label)]
    hits, _stale = lib.index.search(vector, top, where, lib.threshold(label))
    return [hit_json(request, lib, h.record, h.score, h.segment.to_json(), h.best_window,
                     threshold=lib.threshold(label)) for h in hits]

