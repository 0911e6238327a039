"""Library → the Starlette app: the routes table (pages, forms, JSON API, media by id, static
files) behind the one security middleware (Host allow-list, token, CSRF, headers) and the body
cap.

Only the table and the wrapping live here; what a route does is its room's (pages, forms,
login, api, monitoring, library_view, jobs). No path from a URL reaches open(): a clip is
looked up by its store id (library.Library.clip), and only a file that is still the version the
store tagged, inside a folder autotag was pointed at, is served. Endpoints are plain functions
where they may block: Starlette runs them in its thread pool, so the store's per-thread
connections and the index's lock apply as in the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from autotag.web import library_view, params
from autotag.web.api import (
    api_clip,
    api_media,
    api_preview,
    api_review,
    api_search,
    api_search_warm,
    api_session,
    api_status,
    api_tags,
    api_teach_preview,
    api_thumbnail,
)
from autotag.web.forms import calibrate_write, page_calibrate, page_review, teach_tag
from autotag.web.jobs import api_jobs
from autotag.web.library import Library
from autotag.web.login import login, logout, page_login
from autotag.web.monitoring import healthz, metrics_text
from autotag.web.pages import page_clip, page_search, page_status, page_tags, render
from autotag.web.security import BodyLimit, Security

HERE = Path(__file__).parent


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """An error as JSON under /api/ (and for a wrong method), else as a page."""
    if request.url.path.startswith(params.prefix(request) + "/api/") or exc.status_code == 405:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                  exc.status_code)


def create_app(library: Library, token: str | None = None,
               reload: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app: routes wrapped in Security. library may be replaced later (a daemon's
    reload) through app.state.library. reload(): what applies a config the app just edited
    (calibrated thresholds): the daemon's SIGHUP path, or autotag serve's own."""
    routes = [
        Route("/", page_search, name="search"),
        Route("/clips/{id:int}", page_clip, name="clip"),
        Route("/tags", page_tags, name="tags", methods=["GET"]),
        Route("/tags", teach_tag, methods=["POST"]),
        Route("/status", page_status, name="status"),
        Route("/calibrate", page_calibrate, methods=["GET"]),
        Route("/calibrate", calibrate_write, methods=["POST"]),
        Route("/login", page_login, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_text),
        Route("/api/search", api_search),
        Route("/api/search/warm", api_search_warm, methods=["POST"]),
        Route("/api/clips/{id:int}", api_clip),
        Route("/api/clips/{id:int}/media", api_media),
        Route("/api/clips/{id:int}/preview", api_preview),
        Route("/api/clips/{id:int}/thumbnail", api_thumbnail),
        Route("/api/clips/{id:int}/reviews", api_review, methods=["POST"]),
        Route("/clips/{id:int}/reviews", page_review, methods=["POST"]),
        Route("/api/tags", api_tags),
        Route("/api/teach/preview", api_teach_preview),
        Route("/api/status", api_status),
        Route("/api/jobs", api_jobs),
        Route("/api/session", api_session),
        *library_view.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    inner = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    inner.state.library = library
    inner.state.reload = reload

    async def unauthorized(scope, receive, send) -> None:
        request = Request({**scope, "app": inner}, receive)
        nxt = scope["path"][len(scope.get("root_path", "")):] or "/"
        if scope.get("query_string"):
            nxt += "?" + scope["query_string"].decode("latin-1")
        response = render(request, "login.html", {"error": None, "next": params.safe_next(nxt)},
                          401)
        await response(scope, receive, send)

    secured = Security(inner, token=token, hosts=library.config.serve.hosts,
                       root_path=library.config.serve.root_path, unauthorized=unauthorized)
    app = BodyLimit(secured)  # outermost: no body past the cap, whoever sends it
    app.state = inner.state  # type: ignore[attr-defined]  # tests and the daemon reach it here
    app.security = secured  # type: ignore[attr-defined]
    return app

