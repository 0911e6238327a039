"""The SQLite state: which file versions were seen, what became of them, and their embeddings.

    files: path → size, mtime, sha256, status (tagged | failed), attempts, last error,
           model and vocabulary fingerprints of the tags last written
    clips: (sha256, model) → duration, windows, window embeddings, clip embedding
    thumbs: sha256 → a JPEG strip of the clip's thumbnails (previews and contact sheets without
            decoding)

Embeddings are stored per content hash, so a copy or a rename is tagged without the model, and
search and retag read them back without decoding a frame. WAL mode lets `autotag search` read
while the daemon writes. Connections are per thread (sqlite3 objects must not cross threads).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autotag.clip import Embedded, SourceInfo, Window

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another's lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL,            -- 'tagged' or 'failed'
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    model TEXT,
    vocabulary TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
CREATE TABLE IF NOT EXISTS clips (
    sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    duration REAL NOT NULL,
    windows TEXT NOT NULL,           -- JSON [[start, end], ...] seconds
    embeddings BLOB NOT NULL,        -- float32 [n_windows, dim]
    clip_embedding BLOB NOT NULL,    -- float32 [dim], the mean of the windows
    dim INTEGER NOT NULL,
    PRIMARY KEY (sha256, model)
);
CREATE TABLE IF NOT EXISTS thumbs (
    sha256 TEXT PRIMARY KEY,
    count INTEGER NOT NULL,          -- tiles in the strip, side by side, equal widths
    jpeg BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    path: Path
    size: int
    mtime: float
    sha256: str | None
    status: str
    attempts: int
    last_error: str | None
    model: str | None
    vocabulary: str | None
    updated: float = 0.0  # time.time() of the last tag or failure (0: not read)

    def matches(self, size: int, mtime: float) -> bool:
        return self.size == size and self.mtime == mtime


class StoreError(Exception):
    """The state store cannot be opened; one line with the fix."""


# sqlite3's codes for a file that is not SQLite or whose pages are damaged (a truncated copy,
# a disk fault): nothing to fix by moving state.path, and the store can be rebuilt
DAMAGED = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def damaged(path: Path, exc: sqlite3.DatabaseError) -> str:
    """The one line for a damaged store: what it is and how to get a working one back. It
    holds nothing the clips do not (sidecars stay; embeddings are computed again)."""
    return (f"the state store {path} is damaged ({exc}); move it aside (mv '{path}' "
            f"'{path}.damaged', with its -wal file if there is one) and run autotag again: "
            "it rebuilds the store from your clips")


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []  # every thread's, for close()
        self._generation = 0  # bumped by close(): a thread's older connection is closed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    db.executescript(_SCHEMA)  # once: a store that is only read stays untouched
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in DAMAGED:  # primary code
                raise StoreError(damaged(path, exc)) from None
            raise StoreError(f"cannot open the state store {path}: {exc}; set state.path to a "
                             "writable location") from None
        except OSError as exc:
            raise StoreError(f"cannot open the state store {path}: {exc}; set state.path to a "
                             "writable location") from None

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 objects are used by the thread that made them)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.generation != self._generation:
            # check_same_thread off only so that close() may close it from another thread
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints
            self._local.db, self._local.generation = db, self._generation
            with self._lock:
                self._open.append(db)
        return db

    def close(self) -> None:
        """Close every thread's connection (the engine's workers open theirs): the last one
        closed checkpoints the WAL into the store file, so nothing of it waits in `-wal`."""
        with self._lock:
            connections, self._open = self._open, []
            self._generation += 1
        for db in connections:
            db.close()

    # -- files ------------------------------------------------------------------------------

    def file(self, path: Path) -> FileRecord | None:
        row = self._db().execute(
            "SELECT path, size, mtime, sha256, status, attempts, last_error, model, vocabulary, "
            "updated FROM files WHERE path = ?", (str(path),)).fetchone()
        return FileRecord(Path(row[0]), *row[1:]) if row else None

    def record_tagged(self, source: SourceInfo, model: str, vocabulary: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO files (path, size, mtime, sha256, status, attempts, last_error, "
                "model, vocabulary, updated) VALUES (?, ?, ?, ?, 'tagged', 0, NULL, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime=excluded.mtime, "
                "sha256=excluded.sha256, status='tagged', attempts=0, last_error=NULL, "
                "model=excluded.model, vocabulary=excluded.vocabulary, updated=excluded.updated",
                (str(source.path), source.size, source.mtime, source.sha256, model, vocabulary,
                 time.time()))

    def record_failure(self, path: Path, size: int, mtime: float, reason: str) -> int:
        """Record a failed attempt; returns how many attempts this version of the file has had."""
        with self._db() as db:
            db.execute(
                "INSERT INTO files (path, size, mtime, status, attempts, last_error, updated) "
                "VALUES (?, ?, ?, 'failed', 1, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "attempts = CASE WHEN files.size = excluded.size AND files.mtime = excluded.mtime "
                "AND files.status = 'failed' THEN files.attempts + 1 ELSE 1 END, "
                "size=excluded.size, mtime=excluded.mtime, sha256=NULL, status='failed', "
                "last_error=excluded.last_error, updated=excluded.updated",
                (str(path), size, mtime, reason, time.time()))
            (attempts,) = db.execute("SELECT attempts FROM files WHERE path = ?",
                                     (str(path),)).fetchone()
        return attempts

    def is_tagged(self, path: Path, size: int, mtime: float, model: str,
                  vocabulary: str) -> bool:
        """This version of the file was tagged with this model and vocabulary, and its
        embeddings for the model are here: what "up to date" needs of the store."""
        return self._db().execute(
            "SELECT 1 FROM files f JOIN clips c ON c.sha256 = f.sha256 AND c.model = f.model "
            "WHERE f.path = ? AND f.size = ? AND f.mtime = ? AND f.status = 'tagged' "
            "AND f.model = ? AND f.vocabulary = ?",
            (str(path), size, mtime, model, vocabulary)).fetchone() is not None

    def forget(self, path: Path) -> None:
        with self._db() as db:
            db.execute("DELETE FROM files WHERE path = ?", (str(path),))

    def files(self, status: str | None = None) -> list[FileRecord]:
        query = ("SELECT path, size, mtime, sha256, status, attempts, last_error, model, "
                 "vocabulary FROM files")
        rows = self._db().execute(query + (" WHERE status = ?" if status else "") + " ORDER BY path",
                                  (status,) if status else ()).fetchall()
        return [FileRecord(Path(r[0]), *r[1:]) for r in rows]

    # -- embeddings -------------------------------------------------------------------------

    def save_embedded(self, clip: Embedded, model: str) -> None:
        emb = np.ascontiguousarray(clip.embeddings, dtype=np.float32)
        windows = json.dumps([[w.start, w.end] for w in clip.windows])
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO clips (sha256, model, duration, windows, embeddings, "
                "clip_embedding, dim) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (clip.source.sha256, model, clip.duration, windows, emb.tobytes(),
                 clip.clip_embedding.tobytes(), emb.shape[1]))
            strip = _encode_strip(clip.thumbnails)
            if strip is not None:
                db.execute("INSERT OR REPLACE INTO thumbs (sha256, count, jpeg) VALUES (?, ?, ?)",
                           (clip.source.sha256, len(clip.thumbnails), strip))

    def load_embedded(self, source: SourceInfo, model: str,
                      thumbnails: bool = True) -> Embedded | None:
        """The stored embeddings of this content for this model, or None. thumbnails=False
        skips decoding the stored frames (search ranks without them)."""
        row = self._db().execute(
            "SELECT duration, windows, embeddings, dim FROM clips WHERE sha256 = ? AND model = ?",
            (source.sha256, model)).fetchone()
        if row is None:
            return None
        duration, windows, blob, dim = row
        embeddings = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
        return Embedded(source, duration, tuple(Window(s, e) for s, e in json.loads(windows)),
                        embeddings, self.thumbnails(source.sha256) if thumbnails
                        else np.zeros((0, 1, 1, 3), np.uint8))

    def thumbnails(self, sha256: str) -> np.ndarray:
        """uint8 [n, h, w, 3] RGB thumbnails stored for this content (empty if none)."""
        row = self._db().execute("SELECT count, jpeg FROM thumbs WHERE sha256 = ?",
                                 (sha256,)).fetchone()
        if row is None:
            return np.zeros((0, 1, 1, 3), np.uint8)
        count, jpeg = row
        strip = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if strip is None:
            return np.zeros((0, 1, 1, 3), np.uint8)
        strip = cv2.cvtColor(strip, cv2.COLOR_BGR2RGB)
        return np.stack(np.split(strip, count, axis=1))

    def clip_index(self, model: str) -> tuple[list[FileRecord], np.ndarray]:
        """Every file tagged with this model whose embeddings are stored, by path, with its clip
        embedding: float32 [n, dim] (row i for record i). One query and no window embeddings:
        what search ranks by (100,000 clips: 200 MB) and the list retag walks."""
        rows = self._db().execute(
            "SELECT f.path, f.size, f.mtime, f.sha256, f.status, f.attempts, f.last_error, "
            "f.model, f.vocabulary, c.clip_embedding, c.dim FROM files f JOIN clips c ON "
            "c.sha256 = f.sha256 AND c.model = ? WHERE f.status = 'tagged' ORDER BY f.path",
            (model,)).fetchall()
        records = [FileRecord(Path(r[0]), *r[1:9]) for r in rows]
        dim = rows[0][10] if rows else 0
        matrix = np.frombuffer(b"".join(r[9] for r in rows), dtype=np.float32)
        return records, matrix.reshape(len(rows), dim)


THUMB_STRIP_HEIGHT = 120  # px; stored thumbnails are scaled to this to keep the store small
THUMB_JPEG_QUALITY = 85


def _encode_strip(thumbnails: np.ndarray) -> bytes | None:
    """uint8 [n, h, w, 3] RGB → one JPEG of the tiles side by side at THUMB_STRIP_HEIGHT."""
    if thumbnails.size == 0:
        return None
    n, h, w, _ = thumbnails.shape
    width = max(1, round(w * THUMB_STRIP_HEIGHT / h))
    tiles = [cv2.resize(t, (width, THUMB_STRIP_HEIGHT), interpolation=cv2.INTER_AREA)
             for t in thumbnails]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, THUMB_JPEG_QUALITY])
    return jpeg.tobytes() if ok else None
