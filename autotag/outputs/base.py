"""What every output shares: its error type and the atomic write that turns OS errors into it."""

from __future__ import annotations

from pathlib import Path

from autotag.atomic import AtomicWriteError, append_line, write_atomic
from autotag.errors import AutotagError


class OutputError(AutotagError):
    """An output could not be written; one line saying why. Nothing partial was left."""


def write_file(path: Path, data: bytes) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    except AtomicWriteError as exc:
        raise OutputError(exc.strerror) from None
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    return path


def append_to(path: Path, line: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_line(path, line)
    except AtomicWriteError as exc:
        raise OutputError(exc.strerror) from None
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    return path


MAX_XML_DEPTH = 200  # elements nested in a user's XMP or NFO; real ones nest fewer than 20


def check_depth(root, path: Path) -> None:
    """OutputError if an element tree nests deeper than MAX_XML_DEPTH: expat parses any depth,
    but indenting, searching and writing the tree recurse (issue 30: a deeply nested sidecar
    was reported as "internal error: RecursionError"). Walked without recursion."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise OutputError(f"{path.name} nests elements more than {MAX_XML_DEPTH} deep, "
                              "which no XMP or NFO does; left untouched")
        stack.extend((child, depth + 1) for child in element)


def stem_sharers(clip: Path) -> list[Path]:
    """The clips in the clip's folder whose names differ only in their video extension
    (bikes.mp4, bikes.mkv, bikes.MOV...), the clip itself included, sorted: the clips that
    would share a `<stem>.nfo` or `<stem>.xmp`. A stat per known extension (in lower and
    upper case), not a listing: a folder of 100,000 clips costs the same as one of ten."""
    from autotag.files import VIDEO_EXTENSIONS  # files is below outputs; local: import cost

    stem = clip.with_suffix("")
    found = {clip} if clip.exists() else set()
    for ext in VIDEO_EXTENSIONS:
        for suffix in (ext, ext.upper()):
            other = stem.with_name(stem.name + suffix)
            if other != clip and other.is_file():
                found.add(other)
    return sorted(found)
