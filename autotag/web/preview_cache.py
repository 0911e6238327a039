"""(content hash, start, end) → a WebM preview kept in a folder under a byte budget, least
recently used deleted first; encoded once (autotag.media.webm), concurrent callers waiting for it.

The web-facing half of previews: which segment a page may ask for (clamped, rounded so a cache
name is stable), where the files are kept and for how long, and how many are encoded at once.
Reading and encoding the clip is the media room's.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
import time
from pathlib import Path

from autotag.errors import AutotagError
from autotag.files import show
from autotag.media.reader import Clip, name_of
from autotag.media.webm import MAX_PIXELS, duration, encode

log = logging.getLogger(__name__)

PREVIEW_MAX_SECONDS = 12.0  # a preview is at most this long
PREVIEW_MIN_SECONDS = 1.0  # s; a span shorter than this (or past the clip's end) is widened
ROUND_TO = 0.1  # s; start and end are rounded to this, so a cache name is stable
KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 in hex: nothing a path can be made of
TEMP_SUFFIX = ".tmp"
STALE_TEMP = 3600.0  # s; a temp file this old was left by a crash
ENCODES = 2  # previews encoded at once (serve.max_previews' default)


class Busy(AutotagError):
    """As many previews as allowed (serve.max_previews) are being encoded: try again soon."""


# -- the cache ---------------------------------------------------------------------------------


class PreviewCache:
    """Previews in `folder`, at most `max_bytes` of them: `get` encodes a preview once, and
    concurrent calls for the same one wait for that encoding. Thread-safe; one per process."""

    def __init__(self, folder: Path, max_bytes: int = 512 * 2**20, *,
                 max_pixels: int = MAX_PIXELS, encodes: int = ENCODES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        # each encode holds a decoder's frames: at most `encodes` at once, the rest told Busy
        self._encodes = threading.BoundedSemaphore(encodes)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()  # the lock table and eviction
        self._locks: dict[str, list] = {}  # preview name → [its lock, callers holding or waiting]
        self._remove_stale_temps()

    def get(self, key: str, path: Clip, start: float, end: float) -> Path:
        """The WebM preview of `path` (content sha256 `key`) from `start` to `end` seconds,
        clamped to the clip and to PREVIEW_MAX_SECONDS. Raises ValueError for a key that is not
        a sha256, PreviewError for a clip that cannot be decoded, Busy when max encodes run."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValueError("a preview key is a sha256 in lower-case hex")
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError("a preview's start and end are finite seconds")
        start, end = clamp(start, end, duration(path))  # PreviewError: not a video
        target = self.folder / f"{key}-{start:.1f}-{end:.1f}.webm"
        with self._lock_for(target.name):
            if target.exists():
                _touch(target)
                return target
            if not self._encodes.acquire(blocking=False):
                raise Busy("as many previews as serve.max_previews allows are being made")
            began = time.monotonic()
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
            try:
                encode(path, start, end, temp, self.max_pixels)
                os.replace(temp, target)
            finally:
                self._encodes.release()
                temp.unlink(missing_ok=True)
            log.info("preview of %s %.1f–%.1f s encoded in %.1f s", show(name_of(path)), start,
                     end, time.monotonic() - began)
        self._evict(keep=target)
        return target

    def _lock_for(self, name: str) -> _Held:
        with self._guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        return _Held(self, name, entry)

    def _release(self, name: str, entry: list) -> None:
        with self._guard:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[name]  # the table holds only previews being made

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used previews (by mtime, which `get` touches) until the
        folder holds at most max_bytes; never `keep`, the one just made."""
        with self._guard:
            files = []
            for entry in os.scandir(self.folder):
                if entry.name.endswith(".webm") and not entry.name.startswith("."):
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:
                        continue
                    files.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
            total = sum(size for _, size, _ in files)
            for _, size, file in sorted(files):
                if total <= self.max_bytes:
                    break
                if file == keep or file.name in self._locks:
                    continue
                file.unlink(missing_ok=True)
                total -= size
                log.debug("evicted preview %s", file.name)

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                try:
                    if now - entry.stat().st_mtime > STALE_TEMP:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass


class _Held:
    """One preview's lock, held for a `with` block; the table entry goes when nobody waits."""

    def __init__(self, cache: PreviewCache, name: str, entry: list) -> None:
        self.cache, self.name, self.entry = cache, name, entry

    def __enter__(self) -> None:
        self.entry[0].acquire()

    def __exit__(self, *exc: object) -> None:
        self.entry[0].release()
        self.cache._release(self.name, self.entry)


def _touch(path: Path) -> None:
    """Mark a preview used now: its mtime is its place in the LRU order."""
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def clamp(start: float, end: float, duration: float) -> tuple[float, float]:
    """(start, end) rounded to ROUND_TO, inside [0, duration] (when known), at least
    PREVIEW_MIN_SECONDS long where the clip allows and at most PREVIEW_MAX_SECONDS."""
    last = math.floor(duration / ROUND_TO + 1e-6) * ROUND_TO if duration > 0 else math.inf
    start = min(max(0.0, _round(start)), last)
    end = min(max(_round(end), start + PREVIEW_MIN_SECONDS), start + PREVIEW_MAX_SECONDS, last)
    start = max(0.0, min(start, end - PREVIEW_MIN_SECONDS))
    return _round(start), _round(end)


def _round(seconds: float) -> float:
    return round(round(seconds / ROUND_TO) * ROUND_TO, 1)
