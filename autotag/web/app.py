"""Library (config, store, live index, vocabulary, embedder) → Starlette app: pages, JSON API, media by
id, behind the one security middleware.

The routes hold no logic the library lacks: a search is LiveIndex.search (search.search's
ranking and segments), a clip's tags are scoring.tag_scores on its stored window embeddings,
media is the store's path for an id. Endpoints are plain functions; Starlette runs them in its
thread pool, so the store's per-thread connections and the index's lock apply as in the CLI.

No path from a URL reaches open(): a clip is looked up by its store id, and only a file that
is still the version the store tagged, whose real path lies inside a folder autotag was
pointed at (store roots, serve.hosts aside), is served.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from autotag.clip import SourceInfo
from autotag.config import Config
from autotag.files import Edge
from autotag.media.playable import playability
from autotag.media.webm import PreviewError
from autotag.model import Embedder
from autotag.opener import FdFile, NotServable, Source
from autotag.outputs.nfo import nfo_path
from autotag.outputs.preview import preview_name
from autotag.outputs.sidecar import sidecar_path
from autotag.outputs.xmp import xmp_path
from autotag.reviews import ReviewError, Verdicts, review
from autotag.scoring import segments, window_scores
from autotag.search import best_segment, like_vector
from autotag.search.live import Filter, LiveIndex
from autotag.store import FileRecord, Store
from autotag.tagging import Tagger
from autotag.vocabulary import Vocabulary, embed_query, normalise_prompt
from autotag.web import library_view, metrics, params
from autotag.web.jobs import Retagger, api_jobs
from autotag.web.plot import QUERY_COLOUR, Series, clock, score_plot, tag_colour
from autotag.web.preview_cache import PREVIEW_MAX_SECONDS, Busy, PreviewCache
from autotag.web.scores import against, nothing_reaches
from autotag.web.security import COOKIE, CSRF_FIELD, BodyLimit, Security, held_back
from autotag.web.serving import FdResponse

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
DEFAULT_TOP = 24  # results on a page
MAX_TOP = 500  # what one API call may ask for
RECENT = 12  # clips on the status page and the empty search page
PLOT_NARROW, PLOT_NARROW_HEIGHT = 380, 300  # px: the clip page's plot on a phone
QUERY_CACHE = 256  # query vectors kept in memory
THUMB_CACHE = 2048  # encoded thumbnails kept in memory
THUMB_JPEG_QUALITY = 85
MAX_QUERY = 300  # characters
MAX_FORM = 16 * 1024  # bytes of a form


@dataclass
class Library:
    """What the pages read: built from the same parts as every command (app.open_app)."""

    config: Config
    store: Store
    vocabulary: Vocabulary
    embedder: Embedder
    index: LiveIndex
    previews: PreviewCache
    cache_dir: Path | None
    status: Callable[[], dict]  # the daemon's status: live, or read from its status file
    tagger: Tagger  # a clip's tags as its outputs have them; rewrites them after a review
    queries: Embedder | None = None  # what embeds query text (default: embedder)
    jobs: Retagger = field(default_factory=Retagger)  # outputs brought up to date after a change
    search_latency: metrics.Histogram = field(default_factory=metrics.Histogram)
    _queries: OrderedDict = field(default_factory=OrderedDict)
    _thumbs: OrderedDict = field(default_factory=OrderedDict)
    _playable: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> str:
        return self.embedder.fingerprint

    # -- lookups ------------------------------------------------------------------------------

    def query_vector(self, text: str) -> tuple[np.ndarray, bool]:
        """(float32 [512], whether the model knows a word of it), cached in memory and on disk."""
        key = normalise_prompt(text)
        with self._lock:
            if key in self._queries:
                self._queries.move_to_end(key)
                return self._queries[key]
        found = embed_query(key, self.queries or self.embedder, self.cache_dir)
        with self._lock:
            self._queries[key] = found
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return found

    def clip(self, file_id: int) -> FileRecord:
        """The tagged file with this id, or 404."""
        record = self.store.file_by_id(params.clip_id(file_id))
        if record is None or record.status != "tagged" or record.sha256 is None:
            raise HTTPException(404, "no such clip")
        if not self.edge().admits(record.path):  # not its JSON, thumbnails or page either
            raise HTTPException(404, "the clip is outside the folders autotag serves")
        return record

    def edge(self) -> Edge:
        """Where the library ends (files.Edge): the folders autotag was pointed at (the store's
        roots, watch.paths), and whether symlinks out of them are followed."""
        return Edge.of([*self.store.roots(), *self.config.watch.paths],
                       self.config.watch.follow_symlinks_out)

    def source(self, record: FileRecord) -> Source:
        """How to open the clip's file: checked, below its library root (serving.source)."""
        return Source.of(record.path, record.size, record.mtime, self.edge())

    def open_clip(self, record: FileRecord) -> FdFile:
        """The clip's file, opened once through no symlink below its library root, checked to
        be the version tagged; 404 otherwise (gone, changed, a symlink swapped in)."""
        try:
            return self.source(record).open()  # type: ignore[return-value]
        except NotServable as exc:
            raise HTTPException(404, str(exc)) from None

    def playability(self, record: FileRecord):
        """playability() of the clip (None: unreadable); NotServable passes up."""
        key = (str(record.path), record.size, record.mtime)
        if key not in self._playable:
            try:
                self._playable[key] = playability(self.source(record),
                                                  self.config.sampling.max_pixels)
            except PreviewError as exc:
                log.warning("%s", exc)
                self._playable[key] = None
            if len(self._playable) > 4096:
                self._playable.clear()
        return self._playable[key]

    def thumbnail(self, sha256: str, window: int) -> bytes | None:
        key = (sha256, window)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        thumbs = self.store.thumbnails(sha256)
        if not len(thumbs):
            return None
        tile = cv2.cvtColor(thumbs[min(max(window, 0), len(thumbs) - 1)], cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", tile, [cv2.IMWRITE_JPEG_QUALITY, THUMB_JPEG_QUALITY])
        data = jpeg.tobytes() if ok else None
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data

    def threshold(self, label: str) -> float:
        return self.config.tagging.thresholds.get(label, self.config.tagging.min_score)

    def close(self) -> None:
        """End the query text child, if one runs, and a search index build (the store is the
        app's to close)."""
        self.jobs.close()
        close = getattr(self.queries, "close", None)
        if close is not None:
            close()
        self.index.close()


# -- what pages and API share -------------------------------------------------------------------

def _base(request: Request) -> str:
    return request.scope.get("root_path", "")


def _hit_json(request: Request, lib: Library, record: FileRecord, score: float,
              segment: dict | None, window: int, query: str = "",
              threshold: float | None = None) -> dict:
    base = _base(request)
    params = {"window": window}
    page = {"q": query} if query else {}
    if segment:
        page["t"] = f"{segment['start']:.1f}"
    return {
        "id": record.id,
        "path": str(record.path),
        "name": record.path.name,
        "folder": str(record.path.parent),
        "score": round(score, 4),
        "threshold": lib.config.tagging.min_score if threshold is None else threshold,
        "segment": segment,
        "thumbnail": f"{base}/api/clips/{record.id}/thumbnail?{urlencode(params)}",
        "url": f"{base}/clips/{record.id}" + (f"?{urlencode(page)}" if page else ""),
    }


def _top(request: Request) -> int:
    return params.whole(request, "top", DEFAULT_TOP, 1, MAX_TOP)


def _filter(request: Request, lib: Library) -> Filter:
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
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
    where, top = _filter(request, lib), top or _top(request)
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
    out = [_hit_json(request, lib, h.record, h.score, h.segment.to_json(), h.best_window, query)
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
    return [_hit_json(request, lib, h.record, h.score, h.segment.to_json(), h.best_window,
                      threshold=lib.threshold(label)) for h in hits]


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
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
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
    base = _base(request)
    detail = {
        "id": record.id,
        "path": str(record.path),
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
    params = urlencode({"start": f"{start:.1f}", "end": f"{end:.1f}"})
    return {"playable": False, "kind": "preview", "reason": found.reason,
            "preview": f"{base}/api/clips/{record.id}/preview?{params}"}


def _outputs(lib: Library, path: Path) -> list[dict]:
    config = lib.config.outputs
    found = []
    if config.sidecars:
        found.append(("sidecar", sidecar_path(path, config)))
    if config.xmp:
        found.append(("XMP", xmp_path(path)))
    if config.nfo:
        found.append(("NFO", nfo_path(path)))
    if config.previews:
        found.append(("preview image", config.previews / preview_name(path)))
    if config.log:
        found.append(("match log", config.log))
    return [{"kind": kind, "path": str(p), "exists": p.exists()} for kind, p in found]


def status_json(lib: Library) -> dict:
    daemon = lib.status()
    counts = lib.store.counts()
    try:
        store_bytes = sum(os.path.getsize(p) for p in (
            lib.store.path, Path(f"{lib.store.path}-wal")) if os.path.exists(p))
    except OSError:
        store_bytes = 0
    model = lib.config.model
    return {
        "daemon": daemon,
        "model": {"handle": model.handle, "fingerprint": lib.model,
                  "runtime": getattr(lib.embedder, "runtime", None) or model.runtime,
                  "precision": daemon.get("model", {}).get("precision") or model.precision,
                  "resident": bool(getattr(lib.embedder, "resident", True))},
        "store": {"path": str(lib.store.path), "bytes": store_bytes,
                  "tagged": counts.get("tagged", 0), "failed": counts.get("failed", 0),
                  "indexed": len(lib.index)},
        "recent": [{"id": r.id, "path": str(r.path), "when": r.updated}
                   for r in lib.store.recent("tagged", RECENT)],
        "failures": [{"path": str(r.path), "reason": r.last_error, "attempts": r.attempts,
                      "when": r.updated} for r in lib.store.recent("failed", 50)],
        "vocabulary": list(lib.vocabulary.labels),
    }


# -- API ------------------------------------------------------------------------------------------

def api_search(request: Request) -> Response:
    lib = _lib(request)
    if not any(request.query_params.get(k, "").strip() for k in ("q", "tag", "like")):
        raise HTTPException(400, "give q=TEXT (or tag=LABEL, or like=ID for more like a clip)")
    hits, message = run_search(request, lib)
    return JSONResponse(hits, headers={"x-autotag-message": quote(message)} if message else None)


def api_clip(request: Request) -> Response:
    detail = clip_detail(request, _lib(request), request.path_params["id"])
    for key in ("plot", "plot_narrow", "nothing"):
        detail.pop(key)
    return JSONResponse(detail)


def api_media(request: Request) -> Response:
    """The clip's file, with HTTP Range (Starlette's FileResponse: 206, 416, multipart)."""
    lib = _lib(request)
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
    lib = _lib(request)
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
    lib = _lib(request)
    record = lib.clip(request.path_params["id"])
    window = params.whole(request, "window", 0, 0, 2**31)
    data = lib.thumbnail(record.sha256, window)
    if data is None:
        raise HTTPException(404, "no thumbnail stored for this clip")
    return Response(data, media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=86400"})


def apply_review(lib: Library, file_id: int, verdicts) -> None:
    """Store a review and rewrite the clip's outputs (reviews.review); 400 for a bad one."""
    record = lib.clip(file_id)
    try:
        results = review(lib.tagger, lib.store, record, verdicts)
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from None
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise HTTPException(500, f"the review is kept, but {failed[0].path} could not be "
                                 f"rewritten: {failed[0].reason}")


async def api_review(request: Request) -> Response:
    """POST {"confirm": [TAG], "reject": [TAG], "clear": [TAG]} → the clip as GET gives it."""
    try:
        body = await request.json()
        verdicts = Verdicts(*(tuple(str(t) for t in body.get(key, []))
                              for key in ("confirm", "reject", "clear")))
    except (ValueError, AttributeError, TypeError):
        raise HTTPException(400, 'send JSON: {"confirm": [TAG], "reject": [TAG], '
                                 '"clear": [TAG]}') from None
    lib, file_id = _lib(request), request.path_params["id"]
    await run_in_threadpool(apply_review, lib, file_id, verdicts)
    detail = await run_in_threadpool(clip_detail, request, lib, file_id)
    for key in ("plot", "plot_narrow", "nothing"):
        detail.pop(key)
    return JSONResponse(detail)


async def page_review(request: Request) -> Response:
    """The clip page's buttons: a form with label and verdict (confirm, reject, clear)."""
    form = await _form(request)
    label, verdict = form.get("label", ""), form.get("verdict", "")
    if verdict not in ("confirm", "reject", "clear"):
        raise HTTPException(400, "verdict must be confirm, reject or clear")
    verdicts = Verdicts(**{verdict: (label,)})
    file_id = request.path_params["id"]
    await run_in_threadpool(apply_review, _lib(request), file_id, verdicts)
    back = {k: form[k] for k in ("q", "t") if form.get(k)}
    return RedirectResponse(f"{_base(request)}/clips/{file_id}"
                            + (f"?{urlencode(back)}" if back else "")
                            + f"#tag-{quote(label, safe='')}", 303)  # app.js focuses its row


def _proposal(lib: Library):
    from autotag.analysis.calibration import from_reviews

    return from_reviews(lib.store, lib.model, lib.vocabulary, lib.config.tagging)


def _config_version(lib: Library) -> str:
    """A digest of the config file: the form that writes thresholds must have been shown
    the file as it is now (another edit in between is not overwritten blindly)."""
    import hashlib

    source = lib.config.source
    try:
        return hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source else ""
    except OSError:
        return ""


def page_calibrate(request: Request) -> Response:
    lib = _lib(request)
    return _render(request, "calibrate.html", {
        "proposal": _proposal(lib), "version": _config_version(lib),
        "config": lib.config.source, "written": request.query_params.get("written")})


async def calibrate_write(request: Request) -> Response:
    """Write the thresholds the reviews ask for into the config (the config editor, as
    `autotag calibrate --from-reviews` does), then reload so tagging and pages use them."""
    from autotag.analysis.config_editor import CannotEdit, write_tagging

    form = await _form(request)
    lib = _lib(request)
    if lib.config.source is None:
        raise HTTPException(409, "autotag runs on its defaults, with no config file to write")
    if form.get("version") != _config_version(lib):
        raise HTTPException(409, "the config file changed since this page was shown; reload "
                                 "the page and look again")
    proposal = await run_in_threadpool(_proposal, lib)
    if not proposal.changed:
        return RedirectResponse(f"{_base(request)}/calibrate?written=0", 303)
    try:
        await run_in_threadpool(write_tagging, lib.config.source, proposal.merged)
    except (CannotEdit, OSError) as exc:
        raise HTTPException(409, f"cannot edit {lib.config.source}: {exc}") from None
    log.info("calibrated from reviews in the web app: %s", ", ".join(
        f"{t.label} {t.old:g} → {t.new:g}" for t in proposal.tags
        if t.new is not None and t.new != t.old))
    reload = request.app.state.reload
    if reload is not None:
        await run_in_threadpool(reload)
    return RedirectResponse(f"{_base(request)}/calibrate?written=1", 303)


def _teach_ids(values: list[str]) -> list[int]:
    ids = sorted({params.clip_id(v) for v in values})
    if not ids:
        raise HTTPException(400, "select the clips that show it first")
    return ids


def _teach_threshold(raw: str | None) -> float | None:
    """The threshold a person moved the preview to (None: the tag's own, min_score)."""
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(400, "threshold is a number") from None
    if not np.isfinite(value) or abs(value) > 1e6:
        raise HTTPException(400, "threshold is a number") from None
    return value


def api_teach_preview(request: Request) -> Response:
    """GET /api/teach/preview?clip=ID&clip=ID[&threshold=X]: what teaching a tag from these
    clips would do (teaching.preview), before anything is written: how many clips it would
    get, the farthest it would take, the closest it would leave out (issue 31)."""
    from autotag.teaching import preview

    lib = _lib(request)
    ids = _teach_ids(request.query_params.getlist("clip"))
    threshold = _teach_threshold(request.query_params.get("threshold"))
    examples = [lib.clip(i) for i in ids]
    result = preview(lib.store, lib.model, examples, lib.index.scores,
                     lib.config.tagging.min_score, threshold)
    if result is None:
        raise HTTPException(409, "these clips cannot make a tag: their embeddings are not "
                                 "stored for the current model, or they cancel out")
    return JSONResponse(result.to_json(lambda r, score: {
        "id": r.id, "name": r.path.name, "folder": str(r.path.parent),
        "score": round(score, 4), "example": r.id in ids}))


async def teach_tag(request: Request) -> Response:
    """The search page's "teach a tag from the selected clips": a vocabulary entry
    `- LABEL: {examples: [...]}` added to the config with the config editor, then a reload
    (the tag's vector comes from the clips' stored embeddings)."""
    from autotag.analysis.config_editor import (
        CannotEdit,
        added_tag,
        snippet_tag,
        write_config,
        write_tagging,
    )

    form = await _form_lists(request)
    lib = _lib(request)
    label = params.plain_name((form.get("label") or [""])[0])
    ids = sorted({params.clip_id(v) for v in form.get("clip", [])})
    if not ids:  # back to the page it came from, the label kept in its box
        back = _safe_next((form.get("back") or ["/"])[0])
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(f"{_base(request)}{back}{joiner}"
                                + urlencode({"label": label, "teach": "select"}) + "#teach", 303)
    threshold = _teach_threshold((form.get("threshold") or [""])[0])
    examples = [lib.clip(i).path for i in ids]
    if lib.config.source is None:
        raise HTTPException(409, "autotag runs on its defaults, with no config file to write")
    try:
        text = await run_in_threadpool(added_tag, lib.config.source, label, examples)
        await run_in_threadpool(write_config, lib.config.source, text)
        if threshold is not None and threshold != lib.config.tagging.min_score:
            # the threshold the preview was moved to: the tag's own, in tagging.thresholds
            await run_in_threadpool(write_tagging, lib.config.source,
                                    {**lib.config.tagging.thresholds, label: threshold})
    except (CannotEdit, OSError) as exc:
        raise HTTPException(409, f"cannot add the tag to {lib.config.source} ({exc}); add this "
                                 f"line to its vocabulary: {snippet_tag(label, examples)}") \
            from None
    log.info("taught the tag %r from %d example clip(s) in the web app", label, len(examples))
    reload = request.app.state.reload
    if reload is not None:
        await run_in_threadpool(reload)
    return RedirectResponse(f"{_base(request)}/?{urlencode({'tag': label})}", 303)


def api_tags(request: Request) -> Response:
    lib = _lib(request)
    counts = lib.index.tag_counts()
    return JSONResponse([{"label": e.label, "prompts": list(e.prompts),
                          "examples": [str(p) for p in e.examples], "count": counts[e.label],
                          "threshold": lib.threshold(e.label)} for e in lib.vocabulary.entries])


def api_status(request: Request) -> Response:
    return JSONResponse(status_json(_lib(request)))


def api_session(request: Request) -> Response:
    security: Security = request.scope["state"]["security"]
    return JSONResponse({"csrf": security.csrf_token(request.scope),
                         "authenticated": bool(request.scope["state"].get("authenticated"))})


def healthz(request: Request) -> Response:
    lib = _lib(request)
    try:
        lib.store.last_change()
    except Exception as exc:  # noqa: BLE001 - any store fault is "unhealthy"
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
    return JSONResponse({"ok": True, "daemon": lib.status().get("state")})


def metrics_text(request: Request) -> Response:
    lib = _lib(request)
    daemon = lib.status()
    counts = daemon.get("counts", {})
    lines: list[str] = []
    lines += metrics.sample("autotag_clips_tagged_total", "counter",
                            "clips tagged (or re-tagged from stored embeddings) by the daemon",
                            counts.get("tagged", 0) + counts.get("reused", 0))
    lines += metrics.sample("autotag_clips_failed_total", "counter",
                            "clips the daemon could not tag", counts.get("failed", 0))
    lines += metrics.sample("autotag_windows_embedded_total", "counter",
                            "windows the video model embedded", daemon.get("windows", 0))
    lines += metrics.sample("autotag_queue_depth", "gauge", "clips waiting to be tagged",
                            daemon.get("queue", 0))
    lines += metrics.sample("autotag_daemon_up", "gauge", "1 while a daemon is watching",
                            1 if daemon.get("state") in ("watching", "reloading") else 0)
    # per process: the daemon's model, and this web app's own when it runs apart (autotag
    # serve); a stopped daemon's last status says nothing of a model (daemon.status)
    lines += metrics.sample("autotag_model_loaded", "gauge",
                            "1 while that process's video model is loaded",
                            1 if daemon.get("model", {}).get("resident") else 0,
                            {"process": "daemon"})
    if daemon.get("pid") != os.getpid():
        web_model = 1 if getattr(lib.embedder, "resident", True) else 0
        lines.append(f'autotag_model_loaded{{process="web"}} {web_model}')
    jobs = lib.jobs.snapshot()
    lines += metrics.sample("autotag_outputs_pending", "gauge",
                            "clips this web app is still bringing up to date after a change",
                            jobs["total"] - jobs["done"] if jobs["state"] == "running" else 0)
    model = daemon.get("model", {})
    if model.get("precision"):  # issue 34: which precision runs (auto may change it)
        lines += metrics.sample("autotag_model_precision", "gauge",
                                "1 for the precision the daemon's video model runs", 1,
                                {"precision": model["precision"]})
    lines += metrics.sample("autotag_index_clips", "gauge", "clips in the search index",
                            len(lib.index))
    lines += lib.search_latency.lines("autotag_search_latency_seconds",
                                      "time to answer a search, text embedding included")
    return PlainTextResponse("\n".join(lines) + "\n",
                             media_type="text/plain; version=0.0.4; charset=utf-8")


# -- pages ----------------------------------------------------------------------------------------

def _render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    lib = _lib(request)
    security: Security = request.scope["state"]["security"]
    base = {"base": _base(request), "csrf": security.csrf_token(request.scope),
            "csrf_field": CSRF_FIELD, "token_required": security.token is not None,
            "authenticated": request.scope["state"].get("authenticated", False),
            "labels": lib.vocabulary.labels, "page": name,
            "tag_class": {label: f"c{i % 10}" for i, label in enumerate(lib.vocabulary.labels)}}
    return request.app.state.templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code)


def page_search(request: Request) -> Response:
    lib = _lib(request)
    per, page = _top(request), _page_number(request)
    hits, message = run_search(request, lib, top=min(page * per + 1, MAX_TOP))
    more = len(hits) > page * per
    hits = hits[(page - 1) * per:page * per]
    ends = _matches_end(hits)
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
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
        _hit_json(request, lib, r, 0.0, None, 0) for r in lib.index.recent(RECENT)]
    chips = lib.index.labels_of([h["id"] for h in hits + recent])  # tags on the cards
    return _render(request, "search.html", {
        "query": query, "hits": hits, "message": message, "recent": recent,
        "like": like_name, "like_at": request.query_params.get("at"),
        "tags": request.query_params.getlist("tag"),
        "folders": request.query_params.getlist("folder"),
        "folder_choices": lib.index.folders(), "threshold": lib.config.tagging.min_score,
        "indexed": len(lib.index), "ends": ends, "page_number": page, "chips": chips,
        "previous": _page_url(request, page - 1) if page > 1 else None,
        "next": _page_url(request, page + 1) if more and page * per < MAX_TOP else None,
        "back": _here(request, "/", drop=("label", "teach")),
        "teach_label": request.query_params.get("label", "")[:60],
        "teach_error": request.query_params.get("teach") == "select"})


def _page_number(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("page", "1")), 1), MAX_TOP)
    except ValueError:
        raise HTTPException(400, "page must be a whole number") from None


def _page_url(request: Request, page: int, route: str = "/") -> str:
    """The URL of `route` with this request's parameters (every filter kept) at another page."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    return f"{_base(request)}{route}?" + urlencode(
        params + ([("page", str(page))] if page > 1 else []))


def _here(request: Request, route: str, drop: tuple[str, ...] = ()) -> str:
    """This page as a path of the app (no prefix) with its parameters, less `drop`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in drop]
    return route + (f"?{urlencode(params)}" if params else "")


def _matches_end(hits: list[dict]) -> int | None:
    """Where matches end in a ranked list: the index from which no hit reaches its threshold
    anywhere (its best segment under it), None when the last one still does."""
    for i in range(len(hits), 0, -1):
        segment = hits[i - 1]["segment"]
        if segment is None or segment["score"] >= hits[i - 1]["threshold"]:
            return i if i < len(hits) else None
    return 0


def page_clip(request: Request) -> Response:
    lib = _lib(request)
    detail = clip_detail(request, lib, request.path_params["id"])
    return _render(request, "clip.html", {"clip": detail, "query": request.query_params.get(
        "q", "")[:MAX_QUERY]})


def page_tags(request: Request) -> Response:
    lib = _lib(request)
    counts = lib.index.tag_counts()
    rows = [{"label": e.label, "prompts": e.prompts, "count": counts[e.label],
             "examples": [p.name for p in e.examples],
             "threshold": lib.threshold(e.label)} for e in lib.vocabulary.entries]
    return _render(request, "tags.html", {"tags": rows, "indexed": len(lib.index)})


def page_status(request: Request) -> Response:
    return _render(request, "status.html", {"status": status_json(_lib(request))})


def page_login(request: Request) -> Response:
    return _render(request, "login.html", {"error": None,
                                           "next": _safe_next(request.query_params.get("next"))})


async def login(request: Request) -> Response:
    """The token form: a right token sets the session cookie; wrong ones are rate-limited."""
    security: Security = request.scope["state"]["security"]
    form = await _form(request)
    client = request.client.host if request.client else "?"
    next_url = _safe_next(form.get("next"))
    if not security.token:
        return RedirectResponse(_base(request) + next_url, 303)
    attempt = str(form.get("token", "")).strip()
    if not security.check_token(attempt):  # the right one always gets in; wrong ones wait
        await held_back(security.failures.failed(client, "form:" + attempt))
        return _render(request, "login.html", {"error": "That is not the token.",
                                               "next": next_url}, 401)
    response = RedirectResponse(_base(request) + next_url, 303)
    response.set_cookie(COOKIE, security.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=(_base(request) or "/"),
                        max_age=30 * 86400)
    return response


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the only kind the pages send; parsed with the standard
    library rather than python-multipart), each field's first value."""
    return {k: v[0] for k, v in (await _form_lists(request)).items()}


async def _form_lists(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise HTTPException(413, "the form is too large")
    return parse_qs(body.decode("utf-8", "replace"))


async def logout(request: Request) -> Response:
    response = RedirectResponse(_base(request) + "/login", 303)
    response.delete_cookie(COOKIE, path=(_base(request) or "/"))
    return response


def _safe_next(value) -> str:
    """Where to go after logging in: a path of this app only (never another site)."""
    value = str(value or "/")
    return value if value.startswith("/") and not value.startswith("//") \
        and "\\" not in value else "/"


def _lib(request: Request) -> Library:
    return request.app.state.library


# -- the app --------------------------------------------------------------------------------------

async def _http_error(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith(_base(request) + "/api/") or exc.status_code == 405:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)
    return _render(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
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
        *library_view.routes(library_view.Pages(_render, _form_lists, apply_review,
                                                 _safe_next)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    inner = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    inner.state.library = library
    inner.state.templates = _templates()
    inner.state.reload = reload

    async def unauthorized(scope, receive, send) -> None:
        request = Request({**scope, "app": inner}, receive)
        nxt = scope["path"][len(scope.get("root_path", "")):] or "/"
        if scope.get("query_string"):
            nxt += "?" + scope["query_string"].decode("latin-1")
        response = _render(request, "login.html", {"error": None, "next": _safe_next(nxt)}, 401)
        await response(scope, receive, send)

    secured = Security(inner, token=token, hosts=library.config.serve.hosts,
                       root_path=library.config.serve.root_path, unauthorized=unauthorized)
    app = BodyLimit(secured)  # outermost: no body past the cap, whoever sends it
    app.state = inner.state  # type: ignore[attr-defined]  # tests and the daemon reach it here
    app.security = secured  # type: ignore[attr-defined]
    return app


@functools.cache
def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
    templates.env.filters["seconds"] = _seconds
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    templates.env.filters["size"] = _size
    templates.env.filters["urlq"] = lambda s: quote(str(s), safe="")
    templates.env.filters["clock"] = clock
    templates.env.filters["day"] = lambda t: time.strftime("%Y-%m-%d", time.localtime(t))
    templates.env.globals["against"] = against
    return templates


def _seconds(value: float) -> str:
    """A time on a page: m:ss, the plot's format (tenths where whole seconds would not do)."""
    return clock(value, tenths=float(value) < 10)


def _size(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def open_library(app, status: Callable[[], dict] | None = None,
                 cache_dir: Path | None = None) -> Library:
    """The web app's view of an App (app.open_app): its store, vocabulary and embedder, plus
    the live index (loaded here: seconds for 100,000 clips) and the preview cache. status:
    the daemon's live status (a daemon serving the app), else read from its status file."""
    from autotag.config import default_cache_dir
    from autotag.status import read_status, status_path

    cache = cache_dir or default_cache_dir()
    config = app.config
    if status is None:
        where = status_path(config.state.store_path)
        status = functools.partial(read_status, where)
    index = LiveIndex(app.store, app.embedder.fingerprint, app.vocabulary, config.tagging)
    previews = PreviewCache(cache / "web-previews", max_pixels=config.sampling.max_pixels,
                            encodes=config.serve.max_previews)
    return Library(config, app.store, app.vocabulary, app.embedder, index,
                   previews, cache, status, app.tagger,
                   queries=_query_embedder(app.embedder, config))


def _query_embedder(embedder: Embedder, config: Config) -> Embedder:
    """Queries need the text model only. On OpenVINO that is a TensorFlow child process; for
    the web app it stays between queries (a new query would wait seconds for TensorFlow to
    start each time) and ends itself after model.idle_unload_seconds without one. An embedder
    whose text side is in this process (TensorFlow, a test's) embeds them itself."""
    from autotag.model import LazyEmbedder

    idle = config.model.idle_unload_seconds or 365 * 86400.0  # 0: never released
    if isinstance(embedder, LazyEmbedder):
        embedder.text_idle = embedder.text_idle or idle
        return embedder
    if getattr(embedder, "runtime", None) == "openvino":
        return LazyEmbedder.from_config(config.model, text_idle=idle)
    return embedder
