"""Hub handle → HTTP(S) download of its compressed tarball → unpacked beside the cache entry →
renamed into place → the SavedModel directory; a local path is returned as it is.

tensorflow_hub did this until issue 29: its 0.16 imports `pkg_resources`, which setuptools
removed, so with a current setuptools (every new Python 3.12+ venv) autotag could not load a
model at all. This module is the part of it autotag used, with the standard library only and
without TensorFlow (so `autotag fetch-model` downloads without importing it):

- a handle `https://tfhub.dev/deepmind/mil-nce/s3d/1` is fetched as
  `...?tf-hub-format=compressed`, a tar.gz of the SavedModel directory (redirects followed);
- it is cached in `<cache>/<sha1(handle)>`, tensorflow_hub's own layout and key, so a cache
  filled by tensorflow_hub (or by an older autotag) is used as it is, and the reverse;
- the tarball is unpacked into a temp folder in the cache and renamed into place whole, so a
  killed download never leaves a half model that looks complete; concurrent processes (the
  OpenVINO converter child, the text child, a second autotag) take a lock and one downloads.

Loading the directory (TF1 Hub modules with the empty tag set) is model.py's.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import logging
import os
import posixpath
import secrets
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from autotag.atomic import TEMP_SUFFIX
from autotag.errors import AutotagError

log = logging.getLogger(__name__)

COMPRESSED_QUERY = ("tf-hub-format", "compressed")  # the hub's tar.gz of a model
SOCKET_TIMEOUT = 60.0  # s without a byte from the server before the download fails
CHUNK = 1 << 20  # bytes copied at a time from the tar stream
MAX_UNPACKED = 8 << 30  # bytes; MIL-NCE is ~100 MB: a bigger archive is not a model
MODULE_PROTO = "tfhub_module.pb"  # marks a TF1 Hub module (loaded with the empty tag set)
DESCRIPTOR = ".descriptor.txt"  # tensorflow_hub's note beside an entry: which handle it holds
LOCK = ".download-lock"  # beside an entry; flock'd while one process downloads it


class DownloadError(AutotagError, OSError):
    """The handle could not be downloaded or unpacked; `reason` is one line. An OSError too,
    as urllib's own failures are: model.py reports every download failure the same way."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_remote(handle: str) -> bool:
    """An http(s) handle (downloaded and cached); anything else is a local path."""
    return handle.startswith(("http://", "https://"))


def cache_entry(handle: str, cache_dir: Path) -> Path:
    """Where a handle is cached: tensorflow_hub's key, the sha1 of the handle."""
    return cache_dir / hashlib.sha1(handle.encode("utf8")).hexdigest()


def cached(handle: str, cache_dir: Path) -> Path | None:
    """The handle's SavedModel directory when the cache has it (tensorflow_hub's rule: the
    folder exists and is not empty; only a rename puts one there)."""
    entry = cache_entry(handle, cache_dir)
    try:
        return entry if any(entry.iterdir()) else None
    except OSError:
        return None


def resolve(handle: str, cache_dir: Path) -> Path:
    """The SavedModel directory of `handle`: a local path as it is, a URL downloaded into
    `cache_dir` once. Raises DownloadError (an OSError) with one line."""
    if not is_remote(handle):
        return Path(handle)
    found = cached(handle, cache_dir)
    if found is not None:
        return found
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_entry(handle, cache_dir)):
            found = cached(handle, cache_dir)  # another process downloaded it while we waited
            return found if found is not None else _download(handle, cache_dir)
    except DownloadError:
        raise
    except OSError as exc:  # URLError, HTTPError, a timeout, a full disk
        raise DownloadError(str(getattr(exc, "reason", None) or exc.strerror or exc)) from None
    except http.client.HTTPException as exc:  # the connection dropped mid-body
        raise DownloadError(f"the download broke off ({type(exc).__name__})") from None


class _locked:
    """flock on `<entry>.download-lock` for the download: released by the kernel if the process
    dies, so no stale lock outlives a killed download (tensorflow_hub waited 10 minutes)."""

    def __init__(self, entry: Path) -> None:
        self.path = entry.with_name(entry.name + LOCK)
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


def compressed_url(handle: str) -> str:
    """The handle with `tf-hub-format=compressed` added to its query (as tensorflow_hub)."""
    parts = urllib.parse.urlsplit(handle)
    query = urllib.parse.parse_qsl(parts.query) + [COMPRESSED_QUERY]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _download(handle: str, cache_dir: Path) -> Path:
    """Fetch and unpack into a temp folder in `cache_dir`, then rename it into place."""
    entry = cache_entry(handle, cache_dir)
    temp = cache_dir / f".{entry.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    log.info("downloading the model %s into %s", handle, entry)
    started = time.monotonic()
    try:
        temp.mkdir()
        request = urllib.request.Request(compressed_url(handle),
                                         headers={"User-Agent": "autotag"})
        with urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT) as response:
            size = _unpack(response, temp)
        if not (temp / "saved_model.pb").is_file():
            raise DownloadError(f"the archive from {handle} has no saved_model.pb")
        entry.with_name(entry.name + DESCRIPTOR).write_text(
            f"Module: {handle}\nDownloaded by autotag: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        if entry.exists():
            shutil.rmtree(entry)  # an empty folder: not a model (cached() said so)
        os.rename(temp, entry)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.info("downloaded the model (%.0f MB) in %.0f s", size / 1e6, time.monotonic() - started)
    return entry


def _unpack(stream, folder: Path) -> int:
    """Unpack a tar (gzip or not) stream into `folder`: regular files and folders only, every
    name inside it, at most MAX_UNPACKED bytes. Returns the bytes written."""
    total = 0
    try:
        with tarfile.open(mode="r|*", fileobj=stream) as archive:
            for member in archive:
                target = _member_path(folder, member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():  # links and devices are not part of a SavedModel
                    raise DownloadError(f"the archive holds {member.name!r}, not a file")
                total += member.size
                if total > MAX_UNPACKED:
                    raise DownloadError(f"the archive unpacks to over {MAX_UNPACKED >> 30} GB")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except (tarfile.TarError, EOFError) as exc:  # EOFError: a gzip stream cut short
        raise DownloadError(f"the download is not a whole tar archive ({exc})") from None
    return total


def _member_path(folder: Path, name: str) -> Path:
    """`folder / name` for an archive member; DownloadError for a name that leaves `folder`."""
    relative = posixpath.normpath(name.lstrip("/"))
    if relative == ".":
        return folder
    if relative.startswith("../") or relative == "..":
        raise DownloadError(f"the archive names a file outside its folder: {name!r}")
    return folder / relative


__all__ = ["MODULE_PROTO", "DownloadError", "cache_entry", "cached", "compressed_url",
           "is_remote", "resolve"]
