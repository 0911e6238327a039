"""A request's query and form values → numbers and names inside their ranges, or 400/404.

Every parameter a route reads comes through here, so none reaches the store, numpy or the
config editor out of range (issue 30: ids ≥ 2^63 overflowed SQLite's integers, end=1e308 and
at=nan got through, a label holding U+2029 broke the YAML written): a bad value is the client's
error (400), an id that cannot exist is no such clip (404), never a 500. Where a page may send
a person after a form (`safe_next`) is one of these values too: a path of this app only.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_ID = 2**63 - 1  # SQLite's largest integer: no row has a larger id
MAX_SECONDS = 366 * 86400.0  # a time in a clip: a year is past any clip's end
MAX_LABEL = 60  # characters of a tag name taught from the web app
MAX_QUERY = 300  # characters of a search
DEFAULT_TOP = 24  # results on a page
MAX_TOP = 500  # what one API call may ask for (and the last page a search may show)
MAX_FORM = 16 * 1024  # bytes of a form
MAX_THRESHOLD = 1e6  # a score threshold's size: clip scores are dot products, far below it


def prefix(request: Request) -> str:
    """The app's own URL prefix (serve.root_path behind a proxy), "" at a host's root."""
    return request.scope.get("root_path", "")


def query(request: Request) -> str:
    """The search text, ?q=, trimmed and cut to MAX_QUERY characters."""
    return request.query_params.get("q", "").strip()[:MAX_QUERY]


def clip_id(value: object) -> int:
    """A clip id from a path or a parameter: a whole number; 404 when no row can have it."""
    try:
        number = int(str(value), 10)
    except ValueError:
        raise HTTPException(400, "a clip is given by its id, a whole number") from None
    if not 0 < number <= MAX_ID:
        raise HTTPException(404, "no such clip")
    return number


def seconds(request: Request, name: str, default: float | None) -> float | None:
    """A time in seconds: finite, from 0 to MAX_SECONDS (default when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(400, f"{name} is a time in seconds") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise HTTPException(400, f"{name} is a time in seconds, from 0 to {MAX_SECONDS:.0f}")
    return value


def whole(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A whole number, clamped to [low, high] (default when absent)."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None
    return min(max(value, low), high)


def plain_name(value: str, what: str = "the tag") -> str:
    """A name a person typed (a tag to teach): printable, one line, no YAML punctuation."""
    value = value.strip()
    if (not value or len(value) > MAX_LABEL or not value.isprintable()
            or any(c in value for c in "\n\r:#{}[],&*!|>'\"%@`")):
        raise HTTPException(400, f"name {what} in a few plain words (no punctuation)")
    return value


def top(request: Request) -> int:
    """How many results: ?top=, from 1 to MAX_TOP (DEFAULT_TOP when absent)."""
    return whole(request, "top", DEFAULT_TOP, 1, MAX_TOP)


def page_number(request: Request) -> int:
    """Which page of results: ?page=, from 1 to MAX_TOP."""
    try:
        return min(max(int(request.query_params.get("page", "1")), 1), MAX_TOP)
    except ValueError:
        raise HTTPException(400, "page must be a whole number") from None


def teach_ids(values: list[str]) -> list[int]:
    """The clips a tag is taught from: at least one id, each once, sorted."""
    ids = sorted({clip_id(v) for v in values})
    if not ids:
        raise HTTPException(400, "select the clips that show it first")
    return ids


def teach_threshold(raw: str | None) -> float | None:
    """The threshold a person moved the preview to (None: the tag's own, min_score)."""
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(400, "threshold is a number") from None
    if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
        raise HTTPException(400, "threshold is a number") from None
    return value


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the only kind the pages send; parsed with the standard
    library rather than python-multipart), each field's first value."""
    return {k: v[0] for k, v in (await form_lists(request)).items()}


async def form_lists(request: Request) -> dict[str, list[str]]:
    """An urlencoded form's fields, every value of each; 413 past MAX_FORM bytes."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise HTTPException(413, "the form is too large")
    return parse_qs(body.decode("utf-8", "replace"))


def safe_next(value: object) -> str:
    """Where to go after a form (logging in, teaching): a path of this app only (never
    another site)."""
    value = str(value or "/")
    return value if value.startswith("/") and not value.startswith("//") \
        and "\\" not in value else "/"
