"""Folders → the clip files in them: extensions, ignore rules, a symlink-safe recursive walk.

Shared by `--once`, the watcher's rescans and its event filter, so the three agree on what is a
clip. No ML imports.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
    return _matcher(tuple(patterns))(os.path.normcase(name)) is not None


@functools.lru_cache(maxsize=32)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match | None]:
    """TEMP_PATTERNS and `patterns` as one compiled regex (fnmatch's own translation): a walk
    asks this of every name, and fnmatch one pattern at a time was a third of a million-file
    pass."""
    every = (*TEMP_PATTERNS, *patterns)
    return re.compile("|".join(fnmatch.translate(os.path.normcase(p)) for p in every)).match


def is_clip_name(name: str, patterns: Iterable[str] = ()) -> bool:
    """True for a file name autotag should tag (extension case-insensitive)."""
    # os.path, not Path(name).suffix: a walk asks this of every name (same answer, a third
    # of the time)
    return (os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
            and not is_ignored_name(name, patterns))


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


class Found(NamedTuple):
    """A clip the walk found: its path, the stat the walk took of it (following symlinks, as
    os.stat), and whether it was reached through a symlink (a file or folder on its way)."""

    path: Path
    stat: os.stat_result
    linked: bool


def find_clips(roots: Iterable[Path], patterns: Iterable[str] = (),
               exclude: Iterable[Path] = (), on_error: OnError = _log_error) -> Iterator[Path]:
    """The paths of walk_clips(...)."""
    return (found.path for found in walk_clips(roots, patterns, exclude, on_error))


def walk_clips(roots: Iterable[Path], patterns: Iterable[str] = (),
               exclude: Iterable[Path] = (), on_error: OnError = _log_error) -> Iterator[Found]:
    """Every clip under `roots`, each real file once, in a stable (sorted) order, with the
    stat the walk needed of it anyway (a million-file up-to-date pass stats nothing twice).

    Symlinked folders are followed, but a folder already visited (by its real path) is not
    entered again, so a symlink loop ends; a file seen through a symlink whose target the
    walk finds in a folder of its own is yielded there, by its real path, and otherwise under
    the first path it is found by. `exclude` holds folders never to enter (the preview folder,
    a sidecar mirror). An unreadable folder or file is passed to `on_error` (default: logged)
    and skipped. What it remembers grows with the folders, not the files: a file is recorded
    only if it may be met again (hard links, files seen through a symlink).
    """
    seen = _Seen(tuple(patterns), {p.resolve() for p in exclude}, on_error)
    for root in roots:
        if root.is_file():  # named on the command line: a name it does not take is said
            if is_ignored_name(root.name, seen.patterns):
                continue
            if Path(root.name).suffix.lower() not in VIDEO_EXTENSIONS:
                on_error(root, f"{Path(root.name).suffix or 'no extension'} is not a video "
                               "extension autotag tags (docs/guides/what-it-does.md lists them)")
            elif (st := _first(root, seen.files)) is not None:
                yield Found(root, st, root.is_symlink())
            continue
        yield from _walk(root, seen, linked=False)


@dataclass
class _Seen:
    """One walk's memory: folders by (device, inode), those walked by their own path, and
    the files that may be met again."""

    patterns: tuple[str, ...]
    excluded: set[Path]
    on_error: OnError
    dirs: set[tuple[int, int]] = field(default_factory=set)
    plain_dirs: set[tuple[int, int]] = field(default_factory=set)  # entered through no link
    files: set[tuple[int, int]] = field(default_factory=set)


def _walk(folder: Path, seen: _Seen, linked: bool) -> Iterator[Found]:
    """linked: `folder` was entered through a symlinked folder."""
    try:
        if folder.resolve() in seen.excluded:
            return
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen.dirs:
            return
        seen.dirs.add(key)
        if not linked:
            seen.plain_dirs.add(key)
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        seen.on_error(folder, f"cannot read the folder: {exc.strerror or exc}")
        return
    for entry in entries:
        if is_ignored_name(entry.name, seen.patterns):
            continue
        try:
            if entry.is_dir():  # follows symlinks; loops end at seen.dirs
                yield from _walk(Path(entry.path), seen, linked or entry.is_symlink())
            elif (entry.is_file()  # its name passed is_ignored_name above
                  and os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS):
                through = linked or entry.is_symlink()
                if (st := _new_file(entry, seen, through)) is not None:
                    yield Found(Path(entry.path), st, through)
        except OSError as exc:
            seen.on_error(Path(entry.path), f"cannot read: {exc.strerror or exc}")


def _new_file(entry: os.DirEntry, seen: _Seen, linked: bool) -> os.stat_result | None:
    """Its stat, if not met before (else None). A plain file with one link is not recorded:
    only a hard link or a path through a symlink can meet it again, and such a path asks
    whether the walk yields its real path from its own folder (one walked through no link)
    instead."""
    st = entry.stat()
    key = (st.st_dev, st.st_ino)
    if key in seen.files:
        return None
    if linked:
        real = Path(entry.path).resolve()
        parent = real.parent.stat()
        if ((parent.st_dev, parent.st_ino) in seen.plain_dirs
                and is_clip_name(real.name, seen.patterns)):
            return None  # yielded, or to be, by its real path where it lies
    if linked or st.st_nlink > 1:
        seen.files.add(key)
    return st


def _first(path: Path, seen: set[tuple[int, int]]) -> os.stat_result | None:
    """Record the (device, inode) behind `path`: its stat, or None if it was seen before."""
    st = path.stat()
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return None
    seen.add(key)
    return st
