"""JSON routes under /api/: search, a clip, its media, preview and thumbnail, reviews, tags,
teaching's preview, status, the session → what the library and its rooms answer, as JSON.

Each handler parses its parameters (params), asks the library (hits, detail, monitoring,
teaching) and serialises; no rule of tagging or search is written here.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from autotag.media.webm import PreviewError
from autotag.opener import NotServable
from autotag.reviews import Verdicts
from autotag.web import params
from autotag.web.detail import clip_detail
from autotag.web.hits import run_search
from autotag.web.library import library_of
from autotag.web.monitoring import status_json
from autotag.web.preview_cache import PREVIEW_MAX_SECONDS, Busy
from autotag.web.security import Security
from autotag.web.serving import FdResponse

PAGE_ONLY = ("plot", "plot_narrow", "nothing")  # what clip_detail draws for the page alone


def api_search(request: Request) -> Response:
    """Search: q=TEXT, tag=LABEL or like=ID (more like a clip), with tag= and folder= filters
    and top=; the hits best first, each with its best segment."""
    lib = library_of(request)
    if not any(request.query_params.get(k, "").strip() for k in ("q", "tag", "like")):
        raise HTTPException(400, "give q=TEXT (or tag=LABEL, or like=ID for more like a clip)")
    hits, message = run_search(request, lib)
    return JSONResponse(hits, headers={"x-autotag-message": quote(message)} if message else None)


def api_search_warm(request: Request) -> Response:
    """POST: start the text model a new query needs, without waiting for it (the search box's
    first keystroke): 202 {"text_model": "starting"}, or 200 "not needed"."""
    if library_of(request).warm_queries():
        return JSONResponse({"text_model": "starting"}, status_code=202)
    return JSONResponse({"text_model": "not needed"})


def api_clip(request: Request) -> Response:
    """A clip: tags with scores, thresholds, confidences and segments; ?q= adds the query's
    best segment; how to play it; its outputs."""
    return _clip_json(clip_detail(request, library_of(request), request.path_params["id"]))


def api_media(request: Request) -> Response:
    """The clip's file, with HTTP Range (Starlette's FileResponse: 206, 416, multipart)."""
    lib = library_of(request)
    record = lib.clip(request.path_params["id"])
    file = lib.open_clip(record)  # opened once: what was checked is what is sent
    try:
        found = lib.playability(record)
    except NotServable:
        found = None
    media_type = found.mime if found and found.mime else "application/octet-stream"
    return FdResponse(file, os.fstat(file.fd), media_type=media_type,
                      content_disposition_type="inline", filename=record.path.name,
                      headers={"cache-control": "private, no-cache"})


def api_preview(request: Request) -> Response:
    """A WebM preview of the clip from start to end (seconds), for clips browsers cannot play."""
    lib = library_of(request)
    record = lib.clip(request.path_params["id"])
    start = params.seconds(request, "start", 0.0)
    end = params.seconds(request, "end", start + PREVIEW_MAX_SECONDS)
    if end <= start:
        raise HTTPException(400, "start and end are seconds, start < end")
    try:
        path = lib.previews.get(record.sha256, lib.source(record), start, end)
    except NotServable as exc:
        raise HTTPException(404, str(exc)) from None
    except Busy as exc:
        raise HTTPException(429, str(exc), headers={"retry-after": "2"}) from None
    except PreviewError as exc:
        raise HTTPException(422, str(exc)) from None
    return FileResponse(path, media_type="video/webm",
                        headers={"cache-control": "private, max-age=86400"})


def api_thumbnail(request: Request) -> Response:
    """The JPEG thumbnail of one of the clip's windows (?window=N)."""
    lib = library_of(request)
    record = lib.clip(request.path_params["id"])
    window = params.whole(request, "window", 0, 0, 2**31)
    data = lib.thumbnail(record.sha256, window)
    if data is None:
        raise HTTPException(404, "no thumbnail stored for this clip")
    return Response(data, media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=86400"})


async def api_review(request: Request) -> Response:
    """POST {"confirm": [TAG], "reject": [TAG], "clear": [TAG]} → the clip as GET gives it."""
    try:
        body = await request.json()
        verdicts = Verdicts(*(tuple(str(t) for t in body.get(key, []))
                              for key in ("confirm", "reject", "clear")))
    except (ValueError, AttributeError, TypeError):
        raise HTTPException(400, 'send JSON: {"confirm": [TAG], "reject": [TAG], '
                                 '"clear": [TAG]}') from None
    lib, file_id = library_of(request), request.path_params["id"]
    await run_in_threadpool(lib.review, file_id, verdicts)
    return _clip_json(await run_in_threadpool(clip_detail, request, lib, file_id))


def api_teach_preview(request: Request) -> Response:
    """GET /api/teach/preview?clip=ID&clip=ID[&threshold=X]: what teaching a tag from these
    clips would do (teaching.preview), before anything is written: how many clips it would
    get, the farthest it would take, the closest it would leave out (issue 31)."""
    from autotag.teaching import preview

    lib = library_of(request)
    ids = params.teach_ids(request.query_params.getlist("clip"))
    threshold = params.teach_threshold(request.query_params.get("threshold"))
    examples = [lib.clip(i) for i in ids]
    result = preview(lib.store, lib.model, examples, lib.index.scores,
                     lib.config.tagging.min_score, threshold)
    if result is None:
        raise HTTPException(409, "these clips cannot make a tag: their embeddings are not "
                                 "stored for the current model, or they cancel out")
    return JSONResponse(result.to_json(lambda r, score: {
        "id": r.id, "name": r.path.name, "folder": str(r.path.parent),
        "score": round(score, 4), "example": r.id in ids}))


def api_tags(request: Request) -> Response:
    """The vocabulary: each tag's prompts, examples, threshold and how many clips have it."""
    lib = library_of(request)
    counts = lib.index.tag_counts()
    return JSONResponse([{"label": e.label, "prompts": list(e.prompts),
                          "examples": [str(p) for p in e.examples], "count": counts[e.label],
                          "threshold": lib.threshold(e.label)} for e in lib.vocabulary.entries])


def api_status(request: Request) -> Response:
    """The daemon's status, the model, the store, recent clips and failures."""
    return JSONResponse(status_json(library_of(request)))


def api_session(request: Request) -> Response:
    """This session's CSRF token (for a state change) and whether it is logged in."""
    security: Security = request.scope["state"]["security"]
    return JSONResponse({"csrf": security.csrf_token(request.scope),
                         "authenticated": bool(request.scope["state"].get("authenticated"))})


def _clip_json(detail: dict) -> JSONResponse:
    """clip_detail without what only the page draws."""
    for key in PAGE_ONLY:
        detail.pop(key)
    return JSONResponse(detail)
