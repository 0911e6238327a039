"""Paths → their records: what became of each file version (tagged or failed), and the roots served.

The `files` and `roots` tables. The up-to-date rule reads `versions`, a batch of paths a query;
the rule itself is passes.UpToDate's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autotag.clip import SourceInfo
from autotag.store.connection import LOOKUP_CHUNK, Connection
from autotag.store.outbox import add_event
from autotag.store.records import RECORD, Event, FileRecord, Version, record_of


class Files(Connection):
    """The files table: one row per path, and the roots autotag was pointed at."""

    def file(self, path: Path) -> FileRecord | None:
        row = self._db().execute(
            f"SELECT {RECORD} FROM files WHERE path = ?", (str(path),)).fetchone()
        return record_of(row) if row else None

    def file_by_id(self, file_id: int) -> FileRecord | None:
        row = self._db().execute(f"SELECT {RECORD} FROM files WHERE id = ?",
                                 (file_id,)).fetchone()
        return record_of(row) if row else None

    def recent(self, status: str, limit: int) -> list[FileRecord]:
        """The files most recently tagged (or failed), newest first."""
        rows = self._db().execute(
            f"SELECT {RECORD} FROM files WHERE status = ? ORDER BY updated DESC LIMIT ?",
            (status, limit)).fetchall()
        return [record_of(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Files by status: {'tagged': n, 'failed': m}."""
        return dict(self._db().execute("SELECT status, COUNT(*) FROM files GROUP BY status"))

    def record_tagged(self, source: SourceInfo, model: str, vocabulary: str,
                     sidecar: int | None = None, outputs: str | None = None,
                     event: Event | None = None) -> None:
        """sidecar: st_mtime_ns of the JSON sidecar just written (None: none written);
        outputs: the digest of the output settings written with (passes.outputs_digest);
        event: an MQTT event to send, written in the same transaction (both or neither)."""
        with self._db() as db:
            if event is not None:
                add_event(db, event)
            db.execute(
                "INSERT INTO files (path, size, mtime, sha256, status, attempts, last_error, "
                "model, vocabulary, updated, sidecar, outputs) "
                "VALUES (?, ?, ?, ?, 'tagged', 0, NULL, ?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime=excluded.mtime, "
                "sha256=excluded.sha256, status='tagged', attempts=0, last_error=NULL, "
                "model=excluded.model, vocabulary=excluded.vocabulary, updated=excluded.updated, "
                "sidecar=excluded.sidecar, outputs=excluded.outputs",
                (str(source.path), source.size, source.mtime, source.sha256, model, vocabulary,
                 time.time(), sidecar, outputs))

    def record_failure(self, path: Path, size: int, mtime: float, reason: str,
                       event: Callable[[int], Event] | None = None) -> int:
        """Record a failed attempt; returns how many attempts this version of the file has had.
        event(attempts): the MQTT event to send, written in the same transaction."""
        with self._db() as db:
            db.execute(
                "INSERT INTO files (path, size, mtime, status, attempts, last_error, updated) "
                "VALUES (?, ?, ?, 'failed', 1, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "attempts = CASE WHEN files.size = excluded.size AND files.mtime = excluded.mtime "
                "AND files.status = 'failed' THEN files.attempts + 1 ELSE 1 END, "
                "size=excluded.size, mtime=excluded.mtime, sha256=NULL, status='failed', "
                "last_error=excluded.last_error, updated=excluded.updated, sidecar=NULL, "
                "outputs=NULL",
                (str(path), size, mtime, reason, time.time()))
            (attempts,) = db.execute("SELECT attempts FROM files WHERE path = ?",
                                     (str(path),)).fetchone()
            if event is not None:
                add_event(db, event(attempts))
        return attempts

    def versions(self, paths: list[str]) -> dict[str, Version]:
        """What the store knows of each of these paths for the up-to-date pass (absent:
        nothing), LOOKUP_CHUNK paths a query (the rule itself: passes.UpToDate). One query per
        file cost ~25 µs; a million unchanged files are checked in seconds this way."""
        db = self._db()
        found: dict[str, Version] = {}
        for start in range(0, len(paths), LOOKUP_CHUNK):
            chunk = paths[start:start + LOOKUP_CHUNK]
            for row in db.execute(
                    "SELECT f.path, f.size, f.mtime, f.sha256, f.status, f.last_error, f.model, "
                    "f.vocabulary, f.sidecar, EXISTS (SELECT 1 FROM clips c WHERE "
                    "c.sha256 = f.sha256 AND c.model = f.model), f.outputs, f.attempts, "
                    "f.updated FROM files f WHERE f.path IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                found[row[0]] = Version(*row[1:9], stored=bool(row[9]), outputs=row[10],
                                        attempts=row[11], updated=row[12])
        return found

    def note_sidecars(self, marks: list[tuple[int, str, str]]) -> None:
        """(st_mtime_ns, outputs digest, path) of sidecars found to match their record by
        reading them (a store older than schema 6): the next pass stats them instead. Not a
        change of the clip: the change feed's trigger leaves these columns out."""
        if marks:
            with self._db() as db:
                db.executemany("UPDATE files SET sidecar = ?, outputs = ? WHERE path = ?", marks)

    def sizes(self, model: str) -> np.ndarray:
        """int64, sorted: the sizes of tagged files whose content is stored for this model.
        A file of another size cannot be a copy of stored content (a cluster driver hashes
        only files of these sizes): 8 bytes a file, not the hashes' 64."""
        rows = self._db().execute(
            "SELECT DISTINCT f.size FROM files f JOIN vectors v ON v.sha256 = f.sha256 "
            "AND v.model = ? WHERE f.status = 'tagged'", (model,))
        return np.sort(np.fromiter((r[0] for r in rows), np.int64))

    def forget(self, path: Path) -> None:
        with self._db() as db:
            db.execute("DELETE FROM files WHERE path = ?", (str(path),))

    def files(self, status: str | None = None) -> list[FileRecord]:
        query = f"SELECT {RECORD} FROM files"
        rows = self._db().execute(query + (" WHERE status = ?" if status else "") + " ORDER BY path",
                                  (status,) if status else ()).fetchall()
        return [record_of(r) for r in rows]

    def files_with(self, sha256: str) -> list[FileRecord]:
        """Every tagged path of this content (a clip and its copies)."""
        rows = self._db().execute(f"SELECT {RECORD} FROM files WHERE sha256 = ? AND "
                                  "status = 'tagged' ORDER BY path", (sha256,)).fetchall()
        return [record_of(r) for r in rows]

    # -- roots and the change feed ------------------------------------------------------------

    def record_roots(self, paths: list[Path]) -> None:
        """Remember the folders (or files) autotag was pointed at, by real path: the web app
        serves only clips inside them (a symlink out of them is not followed)."""
        now = time.time()
        with self._db() as db:
            db.executemany("INSERT INTO roots (path, added) VALUES (?, ?) ON CONFLICT(path) "
                           "DO NOTHING", [(os.path.realpath(p), now) for p in paths])

    def roots(self) -> list[Path]:
        return [Path(r[0]) for r in self._db().execute("SELECT path FROM roots ORDER BY path")]
