"""App (app.open_app) + the daemon's status as handed over → Library: what every page and API
route reads (store, live index, vocabulary, embedders, caches) and the few things it does
(a query's vector, a clip by id inside the library's edge, a review).

The web app's one composition root is the CLI's (app.open_app); Library only adds what serving
needs. The daemon's status comes in as a callable (`status`): a daemon serving the app hands
its live snapshot, `autotag serve` reads the status file. Nothing here imports the daemon.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request

from autotag.app import App
from autotag.config import Config
from autotag.files import Edge
from autotag.media.playable import playability
from autotag.media.webm import PreviewError
from autotag.model import Embedder, ModelError
from autotag.opener import FdFile, NotServable, Source
from autotag.reviews import ReviewError, Verdicts, review
from autotag.search.live import LiveIndex
from autotag.store import FileRecord, Store
from autotag.tagging import Tagger
from autotag.vocabulary import Vocabulary, embed_query, normalise_prompt
from autotag.web import params, prometheus
from autotag.web.jobs import Retagger
from autotag.web.preview_cache import PreviewCache

log = logging.getLogger(__name__)

QUERY_CACHE = 256  # query vectors kept in memory
THUMB_CACHE = 2048  # encoded thumbnails kept in memory
PLAYABLE_CACHE = 4096  # clips whose playability is remembered
THUMB_JPEG_QUALITY = 85
WARM_TEXT = "a video"  # what starting the text model ahead embeds: any words the model knows


@dataclass
class Library:
    """What the pages read: the App every command builds (app.open_app), not a copy of its
    parts, and what serving adds to it (the live index, caches, the daemon's status)."""

    app: App  # config, store, vocabulary, embedder, tagger: the CLI's composition root
    index: LiveIndex
    previews: PreviewCache
    cache_dir: Path | None
    status: Callable[[], dict]  # the daemon's status: live, or read from its status file
    queries: Embedder | None = None  # what embeds query text (default: embedder)
    jobs: Retagger = field(default_factory=Retagger)  # outputs brought up to date after a change
    search_latency: prometheus.Histogram = field(default_factory=prometheus.Histogram)
    _queries: OrderedDict = field(default_factory=OrderedDict)
    _thumbs: OrderedDict = field(default_factory=OrderedDict)
    _playable: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warming: threading.Thread | None = None

    @property
    def config(self) -> Config:
        return self.app.config

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def vocabulary(self) -> Vocabulary:
        return self.app.vocabulary

    @property
    def embedder(self) -> Embedder:
        return self.app.embedder

    @property
    def tagger(self) -> Tagger:
        """A clip's tags as its outputs have them; rewrites them after a review."""
        return self.app.tagger

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
        key = (record.where, record.size, record.mtime)
        if key not in self._playable:
            try:
                self._playable[key] = playability(self.source(record),
                                                  self.config.sampling.max_pixels)
            except PreviewError as exc:
                log.warning("%s", exc)
                self._playable[key] = None
            if len(self._playable) > PLAYABLE_CACHE:
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

    def review(self, file_id: int, verdicts: Verdicts) -> None:
        """Store a review and rewrite the clip's outputs (reviews.review); 400 for a bad one,
        500 when the review is kept but an output could not be rewritten."""
        record = self.clip(file_id)
        try:
            results = review(self.tagger, self.store, record, verdicts)
        except ReviewError as exc:
            raise HTTPException(400, str(exc)) from None
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise HTTPException(500, f"the review is kept, but {failed[0].path} could not be "
                                     f"rewritten: {failed[0].reason}")

    def threshold(self, label: str) -> float:
        return self.config.tagging.thresholds.get(label, self.config.tagging.min_score)

    def warm_queries(self) -> bool:
        """Start the text model a new query needs, without waiting for it: the search box's
        first keystroke asks (typing a query takes about as long as TensorFlow's start, 3-4 s;
        issue 31). False when there is nothing to start (text embedded in this process)."""
        queries = self.queries or self.embedder
        if not getattr(queries, "text_shared", False):
            return False
        with self._lock:  # one start at a time; a running model answers it in milliseconds
            if self._warming is None or not self._warming.is_alive():
                self._warming = threading.Thread(target=_warm, args=(queries,), daemon=True,
                                                 name="autotag-text-warm")
                self._warming.start()
        return True

    def close(self) -> None:
        """End a search index build and wait for a text model being started (the store is the
        app's to close; the shared text model ends itself when idle)."""
        self.jobs.close()
        self.index.close()
        if self._warming is not None:
            self._warming.join()


def open_library(app: App, status: Callable[[], dict] | None = None,
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
    return Library(app, index, previews, cache, status,
                   queries=_query_embedder(app.embedder, config))


def _query_embedder(embedder: Embedder, config: Config) -> Embedder:
    """Queries need the text model only. On OpenVINO that is a TensorFlow child process: the
    one every search of the user shares, `autotag search`'s too (runtimes/shared_text.py), so a
    new query waits for TensorFlow's start only when none ran for a while. Started here, it
    ends itself after model.idle_unload_seconds without a query. An embedder whose text side is
    in this process (TensorFlow, a test's) embeds them itself."""
    from autotag.config import default_cache_dir
    from autotag.model import LazyEmbedder
    from autotag.runtimes.shared_text import socket_for

    if not isinstance(embedder, LazyEmbedder):
        if getattr(embedder, "runtime", None) != "openvino":
            return embedder
        embedder = LazyEmbedder.from_config(config.model)
    embedder.text_socket = embedder.text_socket or socket_for(default_cache_dir(),
                                                              embedder.fingerprint)
    # 0 (never released) keeps it for a year
    embedder.text_idle = embedder.text_idle or config.model.idle_unload_seconds or 365 * 86400.0
    return embedder


def _warm(queries: Embedder) -> None:
    try:
        queries.embed_text([WARM_TEXT])
    except ModelError as exc:  # the query itself will say so too
        log.warning("the text model for new queries did not start: %s", exc)


def library_of(request: Request) -> Library:
    """The library the app serves now (a reload replaces it: app.state.library)."""
    return request.app.state.library
