"""A request → the library's answer (hits, detail, monitoring) → an HTML page: search, a clip,
tags, status; and how every page is rendered (render, the templates and their filters).

Pages work without a build step or a CDN: Jinja2 templates, one stylesheet, a little script;
the plot is inline SVG (plot.score_plot). The library view's page is library_view's; the forms
that change things are forms' and login's.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from autotag.web import params
from autotag.web.detail import clip_detail
from autotag.web.hits import hit_json, run_search
from autotag.web.library import library_of
from autotag.web.monitoring import RECENT, status_json
from autotag.web.plot import clock
from autotag.web.scores import against, nothing_reaches
from autotag.web.security import CSRF_FIELD, Security

HERE = Path(__file__).parent


def render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    """The template `name` with `context` and what every page has (prefix, CSRF token, login
    state, the vocabulary's labels and their colour classes)."""
    lib = library_of(request)
    security: Security = request.scope["state"]["security"]
    base = {"base": params.prefix(request), "csrf": security.csrf_token(request.scope),
            "csrf_field": CSRF_FIELD, "token_required": security.token is not None,
            "authenticated": request.scope["state"].get("authenticated", False),
            "labels": lib.vocabulary.labels, "page": name,
            "tag_class": {label: f"c{i % 10}" for i, label in enumerate(lib.vocabulary.labels)}}
    return templates().TemplateResponse(
        request, name, {**base, **context}, status_code=status_code)


def page_search(request: Request) -> Response:
    """The search page: a query's (or a tag's, or more like a clip's) hits, a page at a time;
    the newest clips when nothing is asked."""
    lib = library_of(request)
    per, page = params.top(request), params.page_number(request)
    hits, message = run_search(request, lib, top=min(page * per + 1, params.MAX_TOP))
    more = len(hits) > page * per
    hits = hits[(page - 1) * per:page * per]
    ends = _matches_end(hits)
    query = params.query(request)
    if hits and ends == 0 and page == 1 and not message:
        best = hits[0]
        message = nothing_reaches(best["name"], against(
            (best["segment"] or {}).get("score", best["score"]), best["threshold"]),
            "among these clips")
    like = request.query_params.get("like")
    like_name = None
    if like:
        found = lib.store.file_by_id(params.clip_id(like))
        like_name = found.path.name if found else None
    recent = [] if query or like or request.query_params.get("tag") else [
        hit_json(request, lib, r, 0.0, None, 0) for r in lib.index.recent(RECENT)]
    chips = lib.index.labels_of([h["id"] for h in hits + recent])  # tags on the cards
    return render(request, "search.html", {
        "query": query, "hits": hits, "message": message, "recent": recent,
        "like": like_name, "like_at": request.query_params.get("at"),
        "tags": request.query_params.getlist("tag"),
        "folders": request.query_params.getlist("folder"),
        "folder_choices": lib.index.folders(), "threshold": lib.config.tagging.min_score,
        "indexed": len(lib.index), "ends": ends, "page_number": page, "chips": chips,
        "previous": _page_url(request, page - 1) if page > 1 else None,
        "next": _page_url(request, page + 1) if more and page * per < params.MAX_TOP else None,
        "back": _here(request, "/", drop=("label", "teach")),
        "teach_label": request.query_params.get("label", "")[:params.MAX_LABEL],
        "teach_error": request.query_params.get("teach") == "select"})


def _page_url(request: Request, page: int, route: str = "/") -> str:
    """The URL of `route` with this request's parameters (every filter kept) at another page."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    return f"{params.prefix(request)}{route}?" + urlencode(
        kept + ([("page", str(page))] if page > 1 else []))


def _here(request: Request, route: str, drop: tuple[str, ...] = ()) -> str:
    """This page as a path of the app (no prefix) with its parameters, less `drop`."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in drop]
    return route + (f"?{urlencode(kept)}" if kept else "")


def _matches_end(hits: list[dict]) -> int | None:
    """Where matches end in a ranked list: the index from which no hit reaches its threshold
    anywhere (its best segment under it), None when the last one still does."""
    for i in range(len(hits), 0, -1):
        segment = hits[i - 1]["segment"]
        if segment is None or segment["score"] >= hits[i - 1]["threshold"]:
            return i if i < len(hits) else None
    return 0


def page_clip(request: Request) -> Response:
    """A clip's page: the player at its moment, its tags and reviews, scores over time."""
    lib = library_of(request)
    detail = clip_detail(request, lib, request.path_params["id"])
    return render(request, "clip.html", {"clip": detail, "query": request.query_params.get(
        "q", "")[:params.MAX_QUERY]})


def page_tags(request: Request) -> Response:
    """The vocabulary: each tag's prompts, examples, threshold and clip count."""
    lib = library_of(request)
    counts = lib.index.tag_counts()
    rows = [{"label": e.label, "prompts": e.prompts, "count": counts[e.label],
             "examples": [p.name for p in e.examples],
             "threshold": lib.threshold(e.label)} for e in lib.vocabulary.entries]
    return render(request, "tags.html", {"tags": rows, "indexed": len(lib.index)})


def page_status(request: Request) -> Response:
    """What the daemon is doing, the model, the store, recent clips and failures."""
    return render(request, "status.html", {"status": status_json(library_of(request))})


@functools.cache
def templates() -> Jinja2Templates:
    """The pages' Jinja2 templates (autoescaped) with the filters they format values with."""
    jinja = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
    jinja.env.filters["seconds"] = _seconds
    jinja.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    jinja.env.filters["size"] = _size
    jinja.env.filters["urlq"] = lambda s: quote(str(s), safe="")
    jinja.env.filters["clock"] = clock
    jinja.env.filters["day"] = lambda t: time.strftime("%Y-%m-%d", time.localtime(t))
    jinja.env.globals["against"] = against
    return jinja


def _seconds(value: float) -> str:
    """A time on a page: m:ss, the plot's format (tenths where whole seconds would not do)."""
    return clock(value, tenths=float(value) < 10)


def _size(value: float) -> str:
    """A file's size on a page: B, KB, MB or GB (binary)."""
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)

