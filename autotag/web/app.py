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
import stat
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
from autotag.index import Filter, LiveIndex
from autotag.model import Embedder
from autotag.outputs.nfo import nfo_path
from autotag.outputs.preview import preview_name
from autotag.outputs.sidecar import sidecar_path
from autotag.outputs.xmp import xmp_path
from autotag.reviews import ReviewError, Verdicts, review
from autotag.scoring import segments, window_scores
from autotag.search import best_segment, like_vector
from autotag.store import FileRecord, Store
from autotag.tagging import Tagger
from autotag.vocabulary import Vocabulary, embed_query, normalise_prompt
from autotag.web import metrics
from autotag.web.plot import Series, score_plot
from autotag.web.preview import PREVIEW_MAX_SECONDS, PreviewCache, PreviewError, playability
from autotag.web.security import COOKIE, CSRF_FIELD, Security

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
DEFAULT_TOP = 24  # results on a page
MAX_TOP = 500  # what one API call may ask for
RECENT = 12  # clips on the status page and the empty search page
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
        record = self.store.file_by_id(file_id)
        if record is None or record.status != "tagged" or record.sha256 is None:
            raise HTTPException(404, "no such clip")
        return record

    def servable(self, record: FileRecord) -> Path:
        """The real path of the clip's file, if it may be served: still the version tagged, a
        regular file, inside a folder autotag was pointed at. 404 otherwise (a clip deleted
        or changed after it was indexed, a symlink swapped in that leads elsewhere)."""
        real = Path(os.path.realpath(record.path))
        try:
            st = os.stat(real)
        except OSError:
            raise HTTPException(404, "the clip is gone from disk") from None
        if not record.matches(st.st_size, st.st_mtime) or not _regular(st):
            raise HTTPException(404, "the clip changed on disk since it was tagged")
        roots = [str(r) for r in self.store.roots()] + [
            os.path.realpath(p) for p in self.config.watch.paths]
        if not any(str(real) == r or str(real).startswith(r.rstrip("/") + "/") for r in roots):
            raise HTTPException(404, "the clip is outside the folders autotag serves")
        return real

    def playability(self, real: Path, record: FileRecord):
        key = (str(real), record.size, record.mtime)
        if key not in self._playable:
            try:
                self._playable[key] = playability(real)
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
        close = getattr(self.queries, "close", None)
        if close is not None:
            close()
        self.index.close()


def _regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


# -- what pages and API share -------------------------------------------------------------------

def _base(request: Request) -> str:
    return request.scope.get("root_path", "")


def _hit_json(request: Request, lib: Library, record: FileRecord, score: float,
              segment: dict | None, window: int, query: str = "") -> dict:
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
        "threshold": lib.config.tagging.min_score,
        "segment": segment,
        "thumbnail": f"{base}/api/clips/{record.id}/thumbnail?{urlencode(params)}",
        "url": f"{base}/clips/{record.id}" + (f"?{urlencode(page)}" if page else ""),
    }


def _top(request: Request) -> int:
    try:
        top = int(request.query_params.get("top", DEFAULT_TOP))
    except ValueError:
        raise HTTPException(400, "top must be a whole number") from None
    return min(max(top, 1), MAX_TOP)


def _filter(request: Request, lib: Library) -> Filter:
    tags = tuple(t for t in request.query_params.getlist("tag") if t)
    unknown = [t for t in tags if t not in lib.vocabulary.labels]
    if unknown:
        raise HTTPException(400, f"unknown tag {unknown[0]!r}")
    folders = tuple(Path(f) for f in request.query_params.getlist("folder") if f)
    return Filter(folders, tags)


def run_search(request: Request, lib: Library) -> tuple[list[dict], str | None]:
    """The hits for the request's q (and filters) as JSON dicts, and a message when there are
    none to show for a reason the user can act on."""
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
    where, top = _filter(request, lib), _top(request)
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
    try:
        file_id = int(raw)
        at = request.query_params.get("at")
        at = float(at) if at else None
    except ValueError:
        raise HTTPException(400, "like is a clip id, at is seconds") from None
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
    return [_hit_json(request, lib, h.record, h.score, h.segment.to_json(), h.best_window)
            for h in hits]


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
                     t.label in given_labels) for t in ranking]
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
                                    True))
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
    detail["plot"] = score_plot([(w.start, w.end) for w in clip.windows], series, clip.duration,
                                highlight=series[0].label if match else None)
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
        real = lib.servable(record)
    except HTTPException as exc:
        return {"playable": False, "kind": "gone", "reason": exc.detail, "preview": None}
    found = lib.playability(real, record)
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
    detail.pop("plot")
    return JSONResponse(detail)


def api_media(request: Request) -> Response:
    """The clip's file, with HTTP Range (Starlette's FileResponse: 206, 416, multipart)."""
    lib = _lib(request)
    record = lib.clip(request.path_params["id"])
    real = lib.servable(record)
    found = lib.playability(real, record)
    media_type = found.mime if found and found.mime else "application/octet-stream"
    return FileResponse(real, media_type=media_type, stat_result=os.stat(real),
                        content_disposition_type="inline", filename=record.path.name,
                        headers={"cache-control": "private, no-cache"})


def api_preview(request: Request) -> Response:
    lib = _lib(request)
    record = lib.clip(request.path_params["id"])
    real = lib.servable(record)
    try:
        start = float(request.query_params.get("start", "0"))
        end = float(request.query_params.get("end", str(start + PREVIEW_MAX_SECONDS)))
    except ValueError:
        raise HTTPException(400, "start and end are seconds") from None
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
        raise HTTPException(400, "start and end are seconds, start < end")
    try:
        path = lib.previews.get(record.sha256, real, start, end)
    except PreviewError as exc:
        raise HTTPException(422, str(exc)) from None
    return FileResponse(path, media_type="video/webm",
                        headers={"cache-control": "private, max-age=86400"})


def api_thumbnail(request: Request) -> Response:
    lib = _lib(request)
    record = lib.clip(request.path_params["id"])
    try:
        window = int(request.query_params.get("window", "0"))
    except ValueError:
        raise HTTPException(400, "window must be a whole number") from None
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
    detail.pop("plot")
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
                            + (f"?{urlencode(back)}" if back else "") + "#tags", 303)


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


async def teach_tag(request: Request) -> Response:
    """The search page's "teach a tag from the selected clips": a vocabulary entry
    `- LABEL: {examples: [...]}` added to the config with the config editor, then a reload
    (the tag's vector comes from the clips' stored embeddings)."""
    from autotag.analysis.config_editor import CannotEdit, added_tag, snippet_tag, write_config

    form = await _form_lists(request)
    lib = _lib(request)
    label = (form.get("label") or [""])[0].strip()
    if not label or len(label) > 60 or any(c in label for c in "\n\r:#{}[],&*!|>'\"%@`"):
        raise HTTPException(400, "name the tag in a few plain words (no punctuation)")
    try:
        ids = sorted({int(v) for v in form.get("clip", [])})
    except ValueError:
        raise HTTPException(400, "clips are given by id") from None
    if not ids:
        raise HTTPException(400, "select the clips that show it first")
    examples = [lib.clip(i).path for i in ids]
    if lib.config.source is None:
        raise HTTPException(409, "autotag runs on its defaults, with no config file to write")
    try:
        text = await run_in_threadpool(added_tag, lib.config.source, label, examples)
        await run_in_threadpool(write_config, lib.config.source, text)
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
    model = daemon.get("model", {})
    lines += metrics.sample("autotag_model_loaded", "gauge",
                            "1 while the daemon's video model is loaded",
                            1 if model.get("resident") else 0)
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
            "labels": lib.vocabulary.labels, "page": name}
    return request.app.state.templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code)


def page_search(request: Request) -> Response:
    lib = _lib(request)
    hits, message = run_search(request, lib)
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
    like = request.query_params.get("like")
    like_name = None
    if like and like.isdigit():
        found = lib.store.file_by_id(int(like))
        like_name = found.path.name if found else None
    recent = [] if query or like or request.query_params.get("tag") else [
        _hit_json(request, lib, r, 0.0, None, 0) for r in lib.index.recent(RECENT)]
    return _render(request, "search.html", {
        "query": query, "hits": hits, "message": message, "recent": recent,
        "like": like_name, "like_at": request.query_params.get("at"),
        "tags": request.query_params.getlist("tag"),
        "folders": request.query_params.getlist("folder"),
        "folder_choices": lib.index.folders(), "threshold": lib.config.tagging.min_score,
        "indexed": len(lib.index)})


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
    wait = security.failures.retry_after(client)
    next_url = _safe_next(form.get("next"))
    if wait:
        return _render(request, "login.html", {"error": f"Too many failed attempts; try again "
                                                        f"in {wait} s.", "next": next_url}, 429)
    if not security.token:
        return RedirectResponse(_base(request) + next_url, 303)
    if not security.check_token(str(form.get("token", "")).strip()):
        security.failures.failed(client)
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
        Route("/api/status", api_status),
        Route("/api/session", api_session),
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

    app = Security(inner, token=token, hosts=library.config.serve.hosts,
                   root_path=library.config.serve.root_path, unauthorized=unauthorized)
    app.state = inner.state  # type: ignore[attr-defined]  # tests and the daemon reach it here
    return app


@functools.cache
def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
    templates.env.filters["seconds"] = _seconds
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    templates.env.filters["size"] = _size
    templates.env.filters["urlq"] = lambda s: quote(str(s), safe="")
    return templates


def _seconds(value: float) -> str:
    value = float(value)
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}:{seconds:04.1f}" if minutes else f"{seconds:.1f} s"


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
    from autotag.daemon.status import read_status, status_path

    cache = cache_dir or default_cache_dir()
    config = app.config
    if status is None:
        where = status_path(config.state.store_path)
        status = functools.partial(read_status, where)
    index = LiveIndex(app.store, app.embedder.fingerprint, app.vocabulary, config.tagging)
    return Library(config, app.store, app.vocabulary, app.embedder, index,
                   PreviewCache(cache / "web-previews"), cache, status, app.tagger,
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
