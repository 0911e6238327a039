"""URL parameters → the whole library's clips filtered (tag, folder, date, duration, untagged,
needs review) → sorted (newest, best match, duration, name) → one page of cards; and the bulk
review of the clips selected on it.

Every clip the store tagged is here, not only a search's best: the live index's snapshot holds
each clip's tag scores, given tags and reviews (as tagging decides them), the store its duration.
The state of the view is its URL (a filtered, sorted page can be bookmarked and shared); a bulk
action posts the selected ids and goes back to that URL. Routes are mounted by routes.create_app.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import threading
import weakref
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from autotag.reviews import Verdicts
from autotag.search.live import Snapshot
from autotag.web import params
from autotag.web.library import library_of
from autotag.web.pages import render
from autotag.web.scores import against

log = logging.getLogger(__name__)

PER_PAGE = 24  # cards on a page (the ?per= default)
MAX_PER = 200  # the most one page may show
MAX_BULK = 500  # clips one bulk action may name
FULL_SCAN_FROM = 2000  # unknown durations from which one scan beats lookups by hash
SORTS = {  # ?sort= → what the page's menu says
    "newest": "newest first",
    "oldest": "oldest first",
    "best": "best match first",
    "longest": "longest first",
    "shortest": "shortest first",
    "name": "by name",
}
# "Needs review": an unreviewed tag whose clip score is near its threshold, where the model is
# least sure: from REVIEW_LOW to REVIEW_HIGH times the threshold
REVIEW_LOW, REVIEW_HIGH = 0.75, 1.33


@dataclass(frozen=True)
class View:
    """What the URL asks of the library view."""

    tags: tuple[str, ...] = ()
    folder: str = ""
    since: float | None = None  # file mtime (s), from the start of this day
    until: float | None = None  # file mtime (s), before the end of this day
    shortest: float | None = None  # s
    longest: float | None = None  # s
    untagged: bool = False
    review: bool = False  # needs review
    sort: str = "newest"
    page: int = 1
    per: int = PER_PAGE

    def params(self, **changes) -> str:
        """The URL query of this view with some fields changed (defaults left out)."""
        view = replace(self, **changes)
        out: list[tuple[str, str]] = [("tag", t) for t in view.tags]
        for key, value in (("folder", view.folder), ("from", _day(view.since)),
                           ("to", _day(view.until, end=True)),
                           ("min", _num(view.shortest)), ("max", _num(view.longest)),
                           ("untagged", "1" if view.untagged else ""),
                           ("review", "1" if view.review else ""),
                           ("sort", "" if view.sort == "newest" else view.sort),
                           ("page", "" if view.page == 1 else str(view.page)),
                           ("per", "" if view.per == PER_PAGE else str(view.per))):
            if value:
                out.append((key, value))
        return urlencode(out)


def parse(request: Request, labels: tuple[str, ...] | list[str]) -> View:
    """The request's parameters as a View; 400 with the reason for one that is wrong."""
    q = request.query_params
    tags = tuple(t for t in q.getlist("tag") if t)
    unknown = [t for t in tags if t not in labels]
    if unknown:
        raise HTTPException(400, f"unknown tag {unknown[0]!r}")
    sort = q.get("sort") or "newest"
    if sort not in SORTS:
        raise HTTPException(400, f"sort is one of {', '.join(SORTS)}")
    return View(tags=tags, folder=q.get("folder", "").strip(),
                since=_date(q.get("from"), "from"), until=_date(q.get("to"), "to", end=True),
                shortest=_seconds(q.get("min"), "min"), longest=_seconds(q.get("max"), "max"),
                untagged=q.get("untagged") == "1", review=q.get("review") == "1", sort=sort,
                page=_whole(q.get("page"), "page", 1, 1_000_000),
                per=_whole(q.get("per"), "per", PER_PAGE, MAX_PER))


def _whole(raw: str | None, name: str, default: int, most: int) -> int:
    if not raw:
        return default
    try:
        return min(max(int(raw), 1), most)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None


def _date(raw: str | None, name: str, end: bool = False) -> float | None:
    """YYYY-MM-DD (a date input's value) → the local time its day starts (or ends) at."""
    if not raw:
        return None
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, f"{name} is a date, YYYY-MM-DD") from None
    start = dt.datetime.combine(day, dt.time()).timestamp()
    return start + 86400 if end else start


def _day(value: float | None, end: bool = False) -> str:
    if value is None:
        return ""
    return dt.date.fromtimestamp(value - (86400 if end else 0)).isoformat()


def _seconds(raw: str | None, name: str) -> float | None:
    """Seconds, or m:ss (what the pages show)."""
    if not raw:
        return None
    try:
        if ":" in raw:
            minutes, seconds = raw.split(":", 1)
            value = int(minutes) * 60 + float(seconds)
        else:
            value = float(raw)
    except ValueError:
        raise HTTPException(400, f"{name} is a duration in seconds or m:ss") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPException(400, f"{name} is a duration in seconds or m:ss")
    return value


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


# -- choosing and ordering ----------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    rows: list[dict]
    total: int  # clips the filters keep
    pages: int


class Columns:
    """What requests filter and sort by, per clip of a snapshot: each read from its records on
    first use, then kept for the version of the index (a Python pass over 100,000 records is
    most of a request; a version ends with the next change)."""

    def __init__(self, snap: Snapshot, durations: dict[str, float]) -> None:
        self._records, self._durations = snap.records, durations

    @classmethod
    def of(cls, snap: Snapshot, durations: dict[str, float]) -> Columns:
        return cls(snap, durations)

    @functools.cached_property
    def paths(self) -> list[str]:
        return [r.where for r in self._records]

    @functools.cached_property
    def names(self) -> list[str]:
        """Lower-cased file names, for the sort by name."""
        return [p[p.rfind("/") + 1:].lower() for p in self.paths]

    @functools.cached_property
    def mtimes(self) -> np.ndarray:
        """float64 [n], s."""
        return np.fromiter((r.mtime for r in self._records), np.float64, len(self._records))

    @functools.cached_property
    def seconds(self) -> np.ndarray:
        """float64 [n], the clip's duration (0: unknown)."""
        return np.fromiter((self._durations.get(r.sha256, 0.0) for r in self._records),
                           np.float64, len(self._records))

    @functools.cached_property
    def rows_of(self) -> dict[str, list[int]]:
        """sha256 → rows (a clip and its copies)."""
        found: dict[str, list[int]] = {}
        for i, r in enumerate(self._records):
            found.setdefault(r.sha256, []).append(i)
        return found


def choose(snap: Snapshot, durations: dict[str, float], labels: list[str],
           thresholds: np.ndarray, view: View, columns: Columns | None = None) -> np.ndarray:
    """Row numbers of the snapshot the view keeps, in its order."""
    n = len(snap.records)
    columns = columns or Columns.of(snap, durations)
    keep = np.ones(n, bool)
    for tag in view.tags:
        keep &= snap.given[:, labels.index(tag)]
    if view.folder:
        prefix = view.folder.rstrip("/") + "/"
        keep &= np.fromiter((p.startswith(prefix) for p in columns.paths), bool, n)
    if view.since is not None:
        keep &= columns.mtimes >= view.since
    if view.until is not None:
        keep &= columns.mtimes < view.until
    if view.shortest is not None:
        keep &= columns.seconds >= view.shortest
    if view.longest is not None:
        keep &= columns.seconds <= view.longest
    if view.untagged and len(labels):
        keep &= ~snap.given.any(axis=1)
    if view.review:
        keep &= needs_review(snap, labels, thresholds, columns.rows_of)
    rows = np.flatnonzero(keep)
    return rows[_order(snap, rows, columns, labels, thresholds, view)]


def needs_review(snap: Snapshot, labels: list[str], thresholds: np.ndarray,
                 rows_of: dict[str, list[int]] | None = None) -> np.ndarray:
    """bool [n]: a clip with a tag near its threshold that no one has reviewed."""
    n = len(snap.records)
    if not n or not len(labels):
        return np.zeros(n, bool)
    ratio = _ratios(snap.scores, thresholds)
    near = (ratio >= REVIEW_LOW) & (ratio <= REVIEW_HIGH)
    if rows_of is None:
        rows_of = {}
        for i, r in enumerate(snap.records):
            rows_of.setdefault(r.sha256, []).append(i)
    column = {label: k for k, label in enumerate(labels)}
    for sha256, verdicts in snap.reviews.items():  # the reviewed few, not every clip
        for row in rows_of.get(sha256, ()):
            for label in verdicts:
                if label in column:
                    near[row, column[label]] = False
    return near.any(axis=1)


def _ratios(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """float [n, n_tags]: score / threshold; where a threshold is 0 or below, 1 + the score's
    distance from it (so both read "1 at the threshold")."""
    positive = thresholds > 0
    safe = np.where(positive, thresholds, 1.0)
    return np.where(positive, scores / safe, 1.0 + (scores - thresholds))


def _order(snap: Snapshot, rows: np.ndarray, columns: Columns, labels: list[str],
           thresholds: np.ndarray, view: View) -> np.ndarray:
    """Positions into rows in the view's order (stable: ties keep the index's order)."""
    if view.sort == "name":
        names = columns.names
        return np.array(sorted(range(len(rows)), key=lambda j: names[rows[j]]), np.int64)
    if view.sort in ("newest", "oldest"):
        key = columns.mtimes[rows]
    elif view.sort in ("longest", "shortest"):
        key = columns.seconds[rows]
    elif not len(labels) or not len(rows):
        return np.arange(len(rows))
    elif view.tags:  # best: the filter's tag's score over its threshold
        k = labels.index(view.tags[0])
        key = _ratios(snap.scores[rows][:, k:k + 1], thresholds[k:k + 1])[:, 0]
    else:  # best: each clip's best tag over its threshold
        key = _ratios(snap.scores[rows], thresholds).max(axis=1)
    descending = view.sort in ("newest", "longest", "best")
    return np.argsort(-key if descending else key, kind="stable")


def page_of(request: Request, lib, view: View) -> Page:
    """The view's page of clips as the template shows them."""
    snap = lib.index.snapshot()
    labels = list(lib.vocabulary.labels)
    thresholds = np.array([lib.threshold(label) for label in labels], np.float32)
    columns = _columns(lib, snap)
    rows = choose(snap, {}, labels, thresholds, view, columns)
    pages = max(1, math.ceil(len(rows) / view.per))
    shown = rows[(view.page - 1) * view.per:view.page * view.per]
    base = params.prefix(request)
    return Page([_card(snap, i, labels, thresholds, columns, base) for i in shown],
                len(rows), pages)


# seconds of each content, per store and model: a clip's duration never changes, so only
# contents not seen yet are read (the first page reads them all: one scan of the clips table)
_DURATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DURATIONS_LOCK = threading.Lock()


def _durations(lib, snap: Snapshot) -> dict[str, float]:
    with _DURATIONS_LOCK:
        known = _DURATIONS.setdefault(lib.store, {}).setdefault(lib.model, {})
    missing = list({r.sha256 for r in snap.records} - known.keys())
    if missing:
        found = (lib.store.durations(lib.model) if len(missing) > FULL_SCAN_FROM
                 else lib.store.durations(lib.model, missing))
        with _DURATIONS_LOCK:
            known.update(found)
    return known


_COLUMNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # index → (version, Columns)


def _columns(lib, snap: Snapshot) -> Columns:
    """The snapshot's columns: kept while the index's version is the same (the durations of
    new contents read when it changes)."""
    with _DURATIONS_LOCK:
        cached = _COLUMNS.get(lib.index)
    if cached is not None and cached[0] == snap.version:
        return cached[1]
    columns = Columns.of(snap, _durations(lib, snap))
    with _DURATIONS_LOCK:
        _COLUMNS[lib.index] = (snap.version, columns)
    return columns


def _card(snap: Snapshot, i: int, labels: list[str], thresholds: np.ndarray,
          columns: Columns, base: str) -> dict:
    record = snap.records[i]
    reviewed = snap.reviews.get(record.sha256, {})
    chips = [{"label": label, "review": reviewed.get(label)}
             for k, label in enumerate(labels) if snap.given[i, k]]
    chips += [{"label": label, "review": "rejected"}
              for label, verdict in reviewed.items() if verdict == "rejected"]
    scores = [against(snap.scores[i, k], thresholds[k]) for k in range(len(labels))]
    best = max(range(len(labels)), key=lambda k: _rank(scores[k]), default=None)
    return {"id": record.id, "name": record.path.name, "path": record.where,
            "folder": os.path.dirname(record.where), "mtime": record.mtime,
            "duration": float(columns.seconds[i]), "chips": chips,
            "best": (labels[best], scores[best]) if best is not None else None,
            "url": f"{base}/clips/{record.id}",
            "thumbnail": f"{base}/api/clips/{record.id}/thumbnail?window=0"}


def _rank(a) -> float:
    return a.ratio if a.ratio is not None else 1.0 + a.score - a.threshold


# -- routes --------------------------------------------------------------------------------------

def routes() -> list[Route]:
    """The library view's routes (mounted by routes.create_app)."""
    return [Route("/library", page_library, name="library", methods=["GET"]),
            Route("/library/reviews", bulk_review, methods=["POST"])]


def page_library(request: Request) -> Response:
    """The library view: every clip, filtered, sorted and paged as its URL says."""
    lib = library_of(request)
    view = parse(request, lib.vocabulary.labels)
    base = params.prefix(request)
    here = f"{base}/library"
    if any(not v for _, v in request.query_params.multi_items()):
        # the filter form sends its empty fields too: the URL to bookmark is without them
        kept = [(k, v) for k, v in request.query_params.multi_items() if v]
        return RedirectResponse(here + (f"?{urlencode(kept)}" if kept else ""), 302)
    found = page_of(request, lib, view)
    return render(request, "library.html", {
        "view": view, "found": found, "sorts": SORTS, "here": here,
        "back": "/library" + (f"?{view.params()}" if view.params() else ""),
        "previous": f"{here}?{view.params(page=view.page - 1)}" if view.page > 1 else None,
        "next": f"{here}?{view.params(page=view.page + 1)}" if view.page < found.pages
        else None,
        "folder_choices": lib.index.folders(), "indexed": len(lib.index),
        "done": _done(request.query_params.get("done", ""), lib.vocabulary.labels),
        "key_tag": view.tags[0] if len(view.tags) == 1 else "",
        "from_day": _day(view.since), "to_day": _day(view.until, end=True),
        "teach_label": request.query_params.get("label", "")[:params.MAX_LABEL],
        "teach_error": request.query_params.get("teach") == "select",
    })


def _done(raw: str, labels) -> str | None:
    """The bulk action just done ("confirm red 3") as a sentence, or None."""
    verdict, _, rest = raw.partition(" ")
    label, _, count = rest.rpartition(" ")
    words = {"confirm": "Confirmed", "reject": "Rejected", "clear": "Undid your word on"}
    if verdict not in words or label not in labels or not count.isdigit():
        return None
    if count == "0":
        return "No clip was selected: tick the clips to act on first."
    return f"{words[verdict]} {label} on {count} clip{'s' * (count != '1')}; their outputs " \
           "are rewritten."


async def bulk_review(request: Request) -> Response:
    """The library's bulk bar: confirm, reject or undo a tag on the selected clips.

    Each clip's outputs are rewritten, as a review on its page does; then back to the same
    view."""
    form = await params.form_lists(request)
    lib = library_of(request)
    label = (form.get("tag") or [""])[0]
    verdict = (form.get("verdict") or [""])[0]
    if verdict not in ("confirm", "reject", "clear"):
        raise HTTPException(400, "verdict must be confirm, reject or clear")
    if label not in lib.vocabulary.labels:
        raise HTTPException(400, "choose one of the vocabulary's tags")
    try:
        ids = sorted({int(v) for v in form.get("clip", [])})
    except ValueError:
        raise HTTPException(400, "clips are given by id") from None
    if len(ids) > MAX_BULK:
        raise HTTPException(413, f"at most {MAX_BULK} clips at once")
    back = params.safe_next((form.get("back") or ["/library"])[0])
    verdicts = Verdicts(**{verdict: (label,)})
    for file_id in ids:
        await run_in_threadpool(lib.review, file_id, verdicts)
    if ids:
        log.info("%s %r on %d clip(s) from the library view", verdict, label, len(ids))
    joiner = "&" if "?" in back else "?"
    return RedirectResponse(f"{params.prefix(request)}{back}{joiner}"
                            + urlencode({"done": f"{verdict} {label} {len(ids)}"}), 303)


