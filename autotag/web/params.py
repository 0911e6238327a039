"""A request's query and form values → numbers and names inside their ranges, or 400/404.

Every parameter a route reads comes through here, so none reaches the store, numpy or the
config editor out of range (issue 30: ids ≥ 2^63 overflowed SQLite's integers, end=1e308 and
at=nan got through, a label holding U+2029 broke the YAML written): a bad value is the client's
error (400), an id that cannot exist is no such clip (404), never a 500.
"""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_ID = 2**63 - 1  # SQLite's largest integer: no row has a larger id
MAX_SECONDS = 366 * 86400.0  # a time in a clip: a year is past any clip's end
MAX_LABEL = 60  # characters of a tag name taught from the web app


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
