"""Folders → the clip files in them: extensions, ignore rules, a symlink-safe recursive walk.

Shared by `--once`, the watcher's rescans and its event filter, so the three agree on what is a
clip. No ML imports.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts",
    ".mts", ".m2ts", ".3gp", ".ogv", ".gif",
    # camcorders, DVDs and broadcast: DV tape, VOB, JVC/Panasonic MOD/TOD, MXF
    ".dv", ".vob", ".mod", ".tod", ".mxf",
    # older downloads: ASF, Flash's F4V, DivX, RealVideo, 3GPP2
    ".asf", ".f4v", ".divx", ".rm", ".rmvb", ".3g2",
})
# autotag's own outputs and temp files, wherever they are: never inputs (no feedback loop).
OWN_SUFFIXES = (".autotag.json", ".autotag.tmp")
# Partial downloads, editors' and sync tools' temp names (paperless-ngx and Syncthing skip these).
TEMP_PATTERNS = ("*.part", "*.crdownload", "*.tmp", "*~", "._*", "*.download", "*.partial")
# NAS and sync metadata folders.
METADATA_DIRS = frozenset({"@eaDir", ".stversions", ".stfolder", ".Trashes", "__MACOSX",
                           "#recycle", "lost+found"})


def absolute(path: Path | str) -> Path:
    """The one absolute form of a path as typed: '..' and '.' folded (symlinks kept, as the user
    named them), so clips/a.mp4 and work/../clips/a.mp4 are one clip in the store and outputs."""
    return Path(os.path.abspath(path))


def show(path: Path | str) -> str:
    """A path as one printable log line: a newline or control character in a name is escaped,
    so one clip never splits into two lines of a log or a journal."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def is_ignored_name(name: str, patterns: Iterable[str] = ()) -> bool:
    """True for hidden names, temp/partial names, autotag's outputs and user patterns."""
    if name.startswith(".") or name in METADATA_DIRS:
        return True
    if name.endswith(OWN_SUFFIXES):
        return True
    return any(fnmatch.fnmatch(name, p) for p in (*TEMP_PATTERNS, *patterns))


def is_clip_name(name: str, patterns: Iterable[str] = ()) -> bool:
    """True for a file name autotag should tag (extension case-insensitive)."""
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS and not is_ignored_name(name, patterns)


def is_ignored_path(path: Path, root: Path, patterns: Iterable[str] = ()) -> bool:
    """True if any part of `path` below `root` is ignored (a hidden folder, @eaDir, ...)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(is_ignored_name(p, patterns) for p in parts)


OnError = Callable[[Path, str], None]


def _log_error(path: Path, reason: str) -> None:
    log.warning("skipping %s: %s", path, reason)


def find_clips(roots: Iterable[Path], patterns: Iterable[str] = (),
               exclude: Iterable[Path] = (), on_error: OnError = _log_error) -> Iterator[Path]:
    """Every clip under `roots`, each real file once, in a stable (sorted) order.

    Symlinked folders are followed, but a folder already visited (by its real path) is not
    entered again, so a symlink loop ends; a symlinked file is yielded under the first path
    it is found by. `exclude` holds folders never to enter (the preview folder, a sidecar mirror).
    An unreadable folder or file is passed to `on_error` (default: logged) and skipped.
    """
    patterns = tuple(patterns)
    excluded = {p.resolve() for p in exclude}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        if root.is_file():  # named on the command line: a name it does not take is said
            if is_ignored_name(root.name, patterns):
                continue
            if Path(root.name).suffix.lower() not in VIDEO_EXTENSIONS:
                on_error(root, f"{Path(root.name).suffix or 'no extension'} is not a video "
                               "extension autotag tags (the README lists them)")
            elif _first(root, seen_files):
                yield root
            continue
        yield from _walk(root, patterns, excluded, seen_dirs, seen_files, on_error)


def _walk(folder: Path, patterns: tuple[str, ...], excluded: set[Path],
          seen_dirs: set[tuple[int, int]], seen_files: set[tuple[int, int]],
          on_error: OnError) -> Iterator[Path]:
    try:
        if folder.resolve() in excluded or not _first(folder, seen_dirs):
            return
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        on_error(folder, f"cannot read the folder: {exc.strerror or exc}")
        return
    for entry in entries:
        if is_ignored_name(entry.name, patterns):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir():  # follows symlinks; loops end at seen_dirs
                yield from _walk(path, patterns, excluded, seen_dirs, seen_files, on_error)
            elif entry.is_file() and is_clip_name(entry.name, patterns) and _first(path, seen_files):
                yield path
        except OSError as exc:
            on_error(path, f"cannot read: {exc.strerror or exc}")


def _first(path: Path, seen: set[tuple[int, int]]) -> bool:
    """Record the (device, inode) behind `path`; False if it was seen before."""
    st = path.stat()
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True
