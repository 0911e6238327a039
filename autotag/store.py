"""The SQLite state: which file versions were seen, what became of them, and their embeddings.

    files: id, path → size, mtime, sha256, status (tagged | failed), attempts, last error,
           model and vocabulary fingerprints of the tags last written, the st_mtime_ns of the
           JSON sidecar written with them (so the up-to-date rule stats it instead of reading
           it: a million unchanged files checked with no file opened), and the digest of the
           output settings they were written with (passes.outputs_digest: an output switched
           on later, or new thresholds, make the clip stale by a comparison). The id is what the web
           app addresses a clip by (never a path in a URL): it stays while the path is known
           (re-tagging keeps it) and is never given to another file (AUTOINCREMENT)
    changes: seq → file id, one row per insert, update or delete of a file or of its content's
             embeddings (triggers), so a reader in any process (the web app's index) follows
             the store by asking for what changed since the last seq it saw
    vectors: (sha256, model) → the clip embedding alone, a copy of clips.clip_embedding kept by
             a trigger: a scan for search reads 2 KB a clip here, where in clips it would walk
             past each clip's window embeddings (16 KB of overflow pages) to reach it
    reviews: (sha256, label) → confirmed | rejected: a person's word on a tag, by content (it
             follows renames and copies) and by label (it outlives a vocabulary change)
    roots: the folders (or files) autotag was pointed at; the web app serves only files
           whose real path lies inside one of them
    clips: (sha256, model) → duration, windows, window embeddings, clip embedding
    thumbs: sha256 → a JPEG strip of the clip's thumbnails (previews and contact sheets without
            decoding)
    background: model → the count and sum of every stored clip embedding (one per content),
                kept as clips are saved, so the library's mean is read, never recomputed; and
                the background a tag from examples was last fitted against (issue 31: its
                mean then and a sample of clip embeddings, kept until the library has grown
                or shrunk by a quarter, so a new clip does not re-tag the library)
    outbox: seq → event id, kind, payload JSON, created, sent: the events MQTT delivers
            (autotag/mqtt.py), written in the same transaction as the clip's record, so an
            event is never lost with the broker away nor sent for a record that was not written
    mqtt_entities: the Home Assistant discovery topics announced, to remove what is gone

Embeddings are stored per content hash, so a copy or a rename is tagged without the model, and
search and retag read them back without decoding a frame. WAL mode lets `autotag search` read
while the daemon writes. Connections are per thread (sqlite3 objects must not cross threads).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autotag.clip import Embedded, SourceInfo, Window
from autotag.errors import AutotagError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 8  # 2: files.id, changes, roots; 3: vectors; 4: reviews; 5: files.sidecar;
# 6: files.outputs; 7: background; 8: outbox, mqtt_entities
LOOKUP_CHUNK = 500  # paths per bulk query (versions): one statement, well under SQLite's limit
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another's lock
CHANGES_KEPT = 100_000  # rows of the change feed kept; a reader further behind reloads all
OUTBOX_KEPT_SECONDS = 2 * 86400.0  # sent MQTT events kept this long (today's count needs them)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL,            -- 'tagged' or 'failed'
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    model TEXT,
    vocabulary TEXT,
    updated REAL NOT NULL,
    sidecar INTEGER,                 -- st_mtime_ns of the JSON sidecar written with this record
    outputs TEXT                     -- passes.outputs_digest of the outputs written (NULL: unknown)
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
CREATE TABLE IF NOT EXISTS vectors (
    sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,            -- float32 [dim]: clips.clip_embedding
    dim INTEGER NOT NULL,
    PRIMARY KEY (sha256, model)
);
CREATE TRIGGER IF NOT EXISTS clips_vector AFTER INSERT ON clips
    BEGIN INSERT OR REPLACE INTO vectors (sha256, model, vector, dim)
          VALUES (NEW.sha256, NEW.model, NEW.clip_embedding, NEW.dim); END;
CREATE TRIGGER IF NOT EXISTS clips_vector_gone AFTER DELETE ON clips
    BEGIN DELETE FROM vectors WHERE sha256 = OLD.sha256 AND model = OLD.model; END;
CREATE TABLE IF NOT EXISTS reviews (
    sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('confirmed', 'rejected')),
    updated REAL NOT NULL,
    PRIMARY KEY (sha256, label)
);
CREATE TRIGGER IF NOT EXISTS reviews_added AFTER INSERT ON reviews
    BEGIN INSERT INTO changes (file_id) SELECT id FROM files WHERE sha256 = NEW.sha256; END;
CREATE TRIGGER IF NOT EXISTS reviews_changed AFTER UPDATE ON reviews
    BEGIN INSERT INTO changes (file_id) SELECT id FROM files WHERE sha256 = NEW.sha256; END;
CREATE TRIGGER IF NOT EXISTS reviews_removed AFTER DELETE ON reviews
    BEGIN INSERT INTO changes (file_id) SELECT id FROM files WHERE sha256 = OLD.sha256; END;
CREATE TABLE IF NOT EXISTS background (
    model TEXT PRIMARY KEY,
    count INTEGER NOT NULL,          -- clip embeddings summed (one per content)
    total BLOB NOT NULL,             -- float64 [dim]: their sum
    fit_count INTEGER,               -- count when the fitted background was taken
    fit_mean BLOB,                   -- float32 [dim]: the mean then
    fit_sample BLOB                  -- float32 [k, dim]: clip embeddings then (by content hash)
);
CREATE TABLE IF NOT EXISTS roots (
    path TEXT PRIMARY KEY,           -- real path (symlinks resolved)
    added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS files_inserted AFTER INSERT ON files
    BEGIN INSERT INTO changes (file_id) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS files_updated AFTER UPDATE OF path, size, mtime, sha256, status,
    attempts, last_error, model, vocabulary, updated ON files
    BEGIN INSERT INTO changes (file_id) VALUES (NEW.id); END;
CREATE TRIGGER IF NOT EXISTS files_deleted AFTER DELETE ON files
    BEGIN INSERT INTO changes (file_id) VALUES (OLD.id); END;
CREATE TRIGGER IF NOT EXISTS clips_saved AFTER INSERT ON clips
    BEGIN INSERT INTO changes (file_id) SELECT id FROM files WHERE sha256 = NEW.sha256; END;
CREATE TRIGGER IF NOT EXISTS changes_trimmed AFTER INSERT ON changes
    BEGIN DELETE FROM changes WHERE seq <= NEW.seq - {CHANGES_KEPT}; END;
"""

# version 1 → 2: files gains its id (SQLite's rowid, which upserts kept, so no id changes)
_MIGRATE_1 = """
ALTER TABLE files RENAME TO files_v1;
DROP INDEX IF EXISTS files_sha256;
""" + _SCHEMA.split("CREATE TABLE IF NOT EXISTS clips")[0] + """
INSERT INTO files (id, path, size, mtime, sha256, status, attempts, last_error, model,
                   vocabulary, updated)
    SELECT rowid, path, size, mtime, sha256, status, attempts, last_error, model, vocabulary,
           updated FROM files_v1;
DROP TABLE files_v1;
"""
# schema 6 (issue 35): the transactional outbox of MQTT events, and the discovery topics announced
_OUTBOX = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order events are sent in
    id TEXT NOT NULL UNIQUE,                 -- the event id consumers drop duplicates by
    kind TEXT NOT NULL,                      -- 'tagged' or 'failed'
    payload TEXT NOT NULL,                   -- the message, JSON
    created REAL NOT NULL,
    sent REAL                                -- when the broker acknowledged it; NULL: waiting
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (seq) WHERE sent IS NULL;
CREATE TABLE IF NOT EXISTS mqtt_entities (
    topic TEXT PRIMARY KEY                   -- a retained discovery config published
);
"""
_MIGRATE_VECTORS = """
INSERT OR REPLACE INTO vectors (sha256, model, vector, dim)
    SELECT sha256, model, clip_embedding, dim FROM clips;
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
    id: int = 0  # the store's id of this path (0: not read)

    def matches(self, size: int, mtime: float) -> bool:
        return self.size == size and self.mtime == mtime


@dataclass(frozen=True)
class Event:
    """One message of the outbox: its id (what consumers drop duplicates by), its kind (the
    topic under mqtt.topic_prefix), its payload as JSON text, when it was made."""

    id: str
    kind: str
    payload: str
    created: float
    seq: int = 0  # its place in the outbox (0: not written yet)


def _add_event(db: sqlite3.Connection, event: Event) -> None:
    db.execute("INSERT INTO outbox (id, kind, payload, created) VALUES (?, ?, ?, ?)",
               (event.id, event.kind, event.payload, event.created))


@dataclass(frozen=True)
class Version:
    """What the store knows of one path, for the up-to-date pass (Store.versions)."""

    size: int
    mtime: float
    sha256: str | None
    status: str
    last_error: str | None
    model: str | None
    vocabulary: str | None
    sidecar: int | None  # st_mtime_ns of the sidecar written with the record (None: unknown)
    stored: bool  # the content's embeddings for the record's model are here
    outputs: str | None = None  # the output settings' digest written with it (None: unknown)
    attempts: int = 0  # failed attempts at this version
    updated: float = 0.0

    def matches(self, size: int, mtime: float) -> bool:
        return self.size == size and self.mtime == mtime


class StoreError(AutotagError):
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


def _statements(script: str) -> list[str]:
    """A script → its statements (a trigger's body holds ';'), to run inside one transaction
    (executescript would commit first)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []  # every thread's, for close()
        self._generation = 0  # bumped by close(): a thread's older connection is closed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._upgrade(self._db())
        except sqlite3.DatabaseError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in DAMAGED:  # primary code
                raise StoreError(damaged(path, exc)) from None
            raise StoreError(f"cannot open the state store {path}: {exc}; set state.path to a "
                             "writable location") from None
        except OSError as exc:
            raise StoreError(f"cannot open the state store {path}: {exc}; set state.path to a "
                             "writable location") from None

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Create or migrate the schema, once: a store that is only read stays untouched."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"the state store {self.path} was written by a newer autotag "
                             f"(schema {version}); upgrade autotag or set state.path to "
                             "another file")
        db.execute("BEGIN IMMEDIATE")  # one migrating process; another waits, then sees it
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:  # else: done by the process we waited for
                self._migrate(db, version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """From schema `version` (0: a new store) to SCHEMA_VERSION, inside the caller's
        transaction."""
        if version == 1:
            for statement in _statements(_MIGRATE_1):
                db.execute(statement)
        if 1 < version < 5:
            # an older files table: its sidecar column (unknown: the sidecar is read once), and
            # a feed trigger that ignores it (see note_sidecars)
            db.execute("ALTER TABLE files ADD COLUMN sidecar INTEGER")
            db.execute("DROP TRIGGER IF EXISTS files_updated")
        if 1 < version < 6:  # unknown until the sidecar is read once (passes.UpToDate)
            db.execute("ALTER TABLE files ADD COLUMN outputs TEXT")
        for statement in _statements(_SCHEMA) + _statements(_OUTBOX):
            db.execute(statement)
        if 0 < version < 3:  # reads every clip's row once: a minute for 100,000 clips
            log.info("upgrading the state store %s to schema %d (once)", self.path,
                     SCHEMA_VERSION)
            db.execute(_MIGRATE_VECTORS)
        if 0 < version < 7:
            _sum_background(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
            f"SELECT {_RECORD} FROM files WHERE path = ?", (str(path),)).fetchone()
        return record_of(row) if row else None

    def file_by_id(self, file_id: int) -> FileRecord | None:
        row = self._db().execute(f"SELECT {_RECORD} FROM files WHERE id = ?",
                                 (file_id,)).fetchone()
        return record_of(row) if row else None

    def recent(self, status: str, limit: int) -> list[FileRecord]:
        """The files most recently tagged (or failed), newest first."""
        rows = self._db().execute(
            f"SELECT {_RECORD} FROM files WHERE status = ? ORDER BY updated DESC LIMIT ?",
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
                _add_event(db, event)
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
                _add_event(db, event(attempts))
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
        query = f"SELECT {_RECORD} FROM files"
        rows = self._db().execute(query + (" WHERE status = ?" if status else "") + " ORDER BY path",
                                  (status,) if status else ()).fetchall()
        return [record_of(r) for r in rows]

    # -- reviews ----------------------------------------------------------------------------------

    def set_reviews(self, sha256: str, verdicts: dict[str, str | None]) -> None:
        """label → 'confirmed', 'rejected' or None (the review undone), for this content."""
        now = time.time()
        with self._db() as db:
            for label, verdict in verdicts.items():
                if verdict is None:
                    db.execute("DELETE FROM reviews WHERE sha256 = ? AND label = ?",
                               (sha256, label))
                else:
                    db.execute("INSERT INTO reviews (sha256, label, verdict, updated) VALUES "
                               "(?, ?, ?, ?) ON CONFLICT(sha256, label) DO UPDATE SET "
                               "verdict = excluded.verdict, updated = excluded.updated "
                               "WHERE verdict != excluded.verdict",
                               (sha256, label, verdict, now))

    def reviews(self, sha256: str) -> dict[str, str]:
        """label → verdict of this content's reviews."""
        return dict(self._db().execute("SELECT label, verdict FROM reviews WHERE sha256 = ?",
                                       (sha256,)))

    def all_reviews(self) -> dict[str, dict[str, str]]:
        """sha256 → {label: verdict}, every review in the store."""
        found: dict[str, dict[str, str]] = {}
        for sha256, label, verdict in self._db().execute(
                "SELECT sha256, label, verdict FROM reviews"):
            found.setdefault(sha256, {})[label] = verdict
        return found

    def files_with(self, sha256: str) -> list[FileRecord]:
        """Every tagged path of this content (a clip and its copies)."""
        rows = self._db().execute(f"SELECT {_RECORD} FROM files WHERE sha256 = ? AND "
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

    def last_change(self) -> int:
        """The change feed's latest seq (0: nothing changed since the store was made)."""
        return self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]

    def changed_since(self, seq: int) -> tuple[int, set[int] | None]:
        """(latest seq, ids of the files changed after seq), or (latest, None) when the feed no
        longer reaches back to seq (trimmed; a reader must then reload everything)."""
        db = self._db()
        # a subquery each: a lone MIN() or MAX() is read off the primary key; both in one
        # SELECT scan the whole feed (100,000 rows: ~13 ms, on every request)
        oldest, latest = db.execute(
            "SELECT COALESCE((SELECT MIN(seq) FROM changes), 0), "
            "COALESCE((SELECT MAX(seq) FROM changes), 0)").fetchone()
        if latest <= seq:
            return latest, set()
        if oldest > seq + 1:
            return latest, None
        ids = {r[0] for r in db.execute(
            "SELECT DISTINCT file_id FROM changes WHERE seq > ? AND seq <= ?", (seq, latest))}
        return latest, ids

    # -- the outbox of MQTT events (autotag/mqtt.py) ------------------------------------------

    def waiting_events(self, after: int = 0, limit: int = 100) -> list[Event]:
        """Events not yet acknowledged by the broker, oldest first, from seq > after."""
        rows = self._db().execute(
            "SELECT seq, id, kind, payload, created FROM outbox WHERE sent IS NULL AND seq > ? "
            "ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [Event(*row[1:], seq=row[0]) for row in rows]

    def events_waiting(self) -> int:
        return self._db().execute(
            "SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0]

    def mark_sent(self, ids: list[str], keep: float = OUTBOX_KEPT_SECONDS) -> None:
        """The broker acknowledged these events; sent ones older than `keep` seconds go
        (they are kept a while for 'clips tagged today' and for a look after the fact)."""
        now = time.time()
        with self._db() as db:
            db.executemany("UPDATE outbox SET sent = ? WHERE id = ?", [(now, i) for i in ids])
            db.execute("DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ?", (now - keep,))

    def events_since(self, kind: str, since: float, why: str | None = None) -> int:
        """Events of this kind created since `since` (time.time()), sent or not."""
        query = "SELECT COUNT(*) FROM outbox WHERE kind = ? AND created >= ?"
        if why is not None:
            query += " AND json_extract(payload, '$.why') = ?"
        return self._db().execute(query, (kind, since) + ((why,) if why else ())).fetchone()[0]

    def last_event(self, kind: str) -> Event | None:
        row = self._db().execute("SELECT seq, id, kind, payload, created FROM outbox WHERE "
                                 "kind = ? ORDER BY seq DESC LIMIT 1", (kind,)).fetchone()
        return Event(*row[1:], seq=row[0]) if row else None

    def announced(self) -> set[str]:
        """The discovery topics published retained (mqtt_entities)."""
        return {r[0] for r in self._db().execute("SELECT topic FROM mqtt_entities")}

    def set_announced(self, added: set[str], removed: set[str]) -> None:
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO mqtt_entities (topic) VALUES (?)",
                           [(t,) for t in sorted(added)])
            db.executemany("DELETE FROM mqtt_entities WHERE topic = ?",
                           [(t,) for t in sorted(removed)])

    # -- embeddings -------------------------------------------------------------------------

    def save_embedded(self, clip: Embedded, model: str) -> None:
        emb = np.ascontiguousarray(clip.embeddings, dtype=np.float32)
        windows = json.dumps([[w.start, w.end] for w in clip.windows])
        with self._db() as db:
            # immediate: the background's sum is read, then written (two writers reading it
            # in deferred transactions would deadlock on the upgrade)
            db.execute("BEGIN IMMEDIATE")
            old = db.execute("SELECT vector FROM vectors WHERE sha256 = ? AND model = ?",
                             (clip.source.sha256, model)).fetchone()
            _add_to_background(db, model, clip.clip_embedding, old[0] if old else None)
            db.execute(
                "INSERT OR REPLACE INTO clips (sha256, model, duration, windows, embeddings, "
                "clip_embedding, dim) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (clip.source.sha256, model, clip.duration, windows, emb.tobytes(),
                 clip.clip_embedding.tobytes(), emb.shape[1]))
            strip = _encode_strip(clip.thumbnails)
            if strip is not None:
                db.execute("INSERT OR REPLACE INTO thumbs (sha256, count, jpeg) VALUES (?, ?, ?)",
                           (clip.source.sha256, len(clip.thumbnails), strip))

    # -- the library's background (issue 31) -------------------------------------------------

    def background_total(self, model: str) -> tuple[int, np.ndarray] | None:
        """(clips, float64 [dim] sum of their clip embeddings) for this model, or None."""
        row = self._db().execute("SELECT count, total FROM background WHERE model = ?",
                                 (model,)).fetchone()
        return (row[0], np.frombuffer(row[1], np.float64)) if row else None

    def background_fit(self, model: str) -> tuple[int, np.ndarray, np.ndarray] | None:
        """The background last fitted against: (count, float32 [dim] mean, float32 [k, dim]
        sample), or None."""
        row = self._db().execute("SELECT fit_count, fit_mean, fit_sample FROM background "
                                 "WHERE model = ?", (model,)).fetchone()
        if not row or row[0] is None:
            return None
        mean = np.frombuffer(row[1], np.float32)
        return row[0], mean, np.frombuffer(row[2], np.float32).reshape(-1, len(mean))

    def save_background_fit(self, model: str, count: int, mean: np.ndarray,
                            sample: np.ndarray) -> None:
        with self._db() as db:
            db.execute("UPDATE background SET fit_count = ?, fit_mean = ?, fit_sample = ? "
                       "WHERE model = ?",
                       (count, np.ascontiguousarray(mean, np.float32).tobytes(),
                        np.ascontiguousarray(sample, np.float32).tobytes(), model))

    def vector_sample(self, model: str, k: int) -> np.ndarray:
        """float32 [≤k, dim]: the clip embeddings of the k lowest content hashes, a uniform
        sample that is the same for the same library (hashes are random), read in key order."""
        rows = self._db().execute("SELECT vector FROM vectors WHERE model = ? ORDER BY sha256 "
                                  "LIMIT ?", (model, k)).fetchall()
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows \
            else np.zeros((0, 0), np.float32)

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

    def durations(self, model: str, sha256s: list[str] | None = None) -> dict[str, float]:
        """sha256 → seconds of the clips stored for this model (the library view's duration
        filter and sort): of these contents (by primary key, LOOKUP_CHUNK a query), or of
        every clip (a scan of the clips table: each row's first page is read)."""
        db = self._db()
        if sha256s is None:
            return dict(db.execute("SELECT sha256, duration FROM clips WHERE model = ?",
                                   (model,)))
        found: dict[str, float] = {}
        for start in range(0, len(sha256s), LOOKUP_CHUNK):
            chunk = sha256s[start:start + LOOKUP_CHUNK]
            found.update(db.execute(
                "SELECT sha256, duration FROM clips WHERE model = ? AND sha256 IN "
                f"({','.join('?' * len(chunk))})", (model, *chunk)))
        return found

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
        """clip_rows, each row made a FileRecord."""
        rows, matrix = self.clip_rows(model)
        return [record_of(r) for r in rows], matrix

    def clip_rows(self, model: str) -> tuple[list[tuple], np.ndarray]:
        """Every file tagged with this model whose embeddings are stored, by path, with its clip
        embedding: float32 [n, dim] (row i for record i). No window embeddings: what search
        ranks by (100,000 clips: 200 MB) and the list retag walks. Two sequential scans joined
        here: SQLite's join looks each file's vector up by index, 100,000 random reads. Rows, not
        FileRecords: search makes records only of the few it shows (100,000 Paths: a second)."""
        db = self._db()
        rows = sorted(db.execute(f"SELECT {_RECORD} FROM files WHERE status = 'tagged'"),
                      key=lambda r: r[0])
        at: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            at.setdefault(r[3], []).append(i)  # copies of one content share its vector
        found = db.execute("SELECT dim FROM vectors WHERE model = ? LIMIT 1", (model,)).fetchone()
        # each vector copied into its row as it is read: no 200 MB of blobs held at once, whose
        # freed heap glibc would keep (RSS 598 → 406 MB for 100,000 clips)
        matrix = np.empty((len(rows), found[0] if found else 0), np.float32)
        stored = np.zeros(len(rows), bool)
        for sha256, blob in db.execute("SELECT sha256, vector FROM vectors WHERE model = ?",
                                       (model,)):
            for i in at.get(sha256, ()):
                matrix[i] = np.frombuffer(blob, np.float32)
                stored[i] = True
        keep = np.flatnonzero(stored)
        if len(keep) < len(rows):
            matrix = matrix[keep]
        return [rows[i] for i in keep], matrix

    def clip_vectors(self, model: str, batch: int = 10_000):
        """Every stored clip embedding of this model, `batch` at a time, in the table's order:
        (content hashes, float32 [m, dim]). For a reader that needs each once (the web app's
        tag scores) without holding them all (a million: 2 GB). Added by search (issue 31)."""
        cursor = self._db().execute("SELECT sha256, vector FROM vectors WHERE model = ?",
                                    (model,))
        while rows := cursor.fetchmany(batch):
            yield [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def clip_rows_under(self, model: str, folders: list[Path]) -> tuple[list[tuple], np.ndarray]:
        """clip_rows for the files inside these folders (or these files) only: a range of the
        path index per folder ('/' sorts just before '0'), so a folder's clips are read, not
        the library's. Sorted by path; a file inside two of the folders once."""
        rows: dict[str, tuple] = {}
        for folder in folders:
            prefix = str(folder).rstrip("/")
            for row in self._db().execute(
                    f"SELECT {_RECORD_F}, v.vector, v.dim FROM files f JOIN vectors v ON "
                    "v.sha256 = f.sha256 AND v.model = ? WHERE f.status = 'tagged' AND "
                    "((f.path >= ? AND f.path < ?) OR f.path = ?)",
                    (model, prefix + "/", prefix + "0", prefix)):
                rows[row[0]] = row
        ordered = [rows[p] for p in sorted(rows)]
        _, matrix = _records_and_matrix(ordered)
        return [r[:11] for r in ordered], matrix

    def clip_index_of(self, model: str, ids: set[int]) -> tuple[list[FileRecord], np.ndarray]:
        """clip_index for these file ids only (those still tagged with stored embeddings)."""
        rows: list = []
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):  # SQLite's bound-parameter limit
            chunk = ordered[start:start + 500]
            rows += self._db().execute(
                f"SELECT {_RECORD_F}, v.vector, v.dim FROM files f JOIN vectors v ON "
                "v.sha256 = f.sha256 AND v.model = ? WHERE f.status = 'tagged' AND f.id IN "
                f"({','.join('?' * len(chunk))})", (model, *chunk)).fetchall()
        return _records_and_matrix(rows)


_RECORD = "path, size, mtime, sha256, status, attempts, last_error, model, vocabulary, updated, id"
_RECORD_F = ", ".join("f." + c for c in _RECORD.split(", "))


def _add_to_background(db: sqlite3.Connection, model: str, new: np.ndarray,
                       old: bytes | None) -> None:
    """The background's count and sum with one clip embedding saved (`old`: the one it
    replaces, the same content embedded again)."""
    new = np.asarray(new, np.float64)
    row = db.execute("SELECT count, total FROM background WHERE model = ?", (model,)).fetchone()
    count, total = (row[0], np.frombuffer(row[1], np.float64)) if row \
        else (0, np.zeros_like(new))
    if old is not None:
        count, total = count - 1, total - np.frombuffer(old, np.float32)
    db.execute("INSERT INTO background (model, count, total) VALUES (?, ?, ?) ON CONFLICT "
               "(model) DO UPDATE SET count = excluded.count, total = excluded.total",
               (model, count + 1, (total + new).tobytes()))


def _sum_background(db: sqlite3.Connection) -> None:
    """Schema 6: the background's count and sum from every stored clip embedding (one read)."""
    totals: dict[str, tuple[int, np.ndarray]] = {}
    for model, blob in db.execute("SELECT model, vector FROM vectors"):
        count, total = totals.get(model, (0, 0.0))
        totals[model] = (count + 1, total + np.frombuffer(blob, np.float32).astype(np.float64))
    for model, (count, total) in totals.items():
        db.execute("INSERT OR REPLACE INTO background (model, count, total) VALUES (?, ?, ?)",
                   (model, count, np.asarray(total, np.float64).tobytes()))


def record_of(row) -> FileRecord:
    """A row of _RECORD's columns (clip_rows gives them) as a FileRecord."""
    return FileRecord(Path(row[0]), *row[1:11])


def _records_and_matrix(rows: list) -> tuple[list[FileRecord], np.ndarray]:
    """Rows of _RECORD_F + (vector, dim) → records and float32 [n, dim]."""
    records = [record_of(r) for r in rows]
    dim = rows[0][12] if rows else 0
    # a bytearray: one copy of the blobs, and an array the live index may write rows of
    matrix = np.frombuffer(bytearray().join(r[11] for r in rows), dtype=np.float32)
    return records, matrix.reshape(len(rows), dim)


THUMB_STRIP_HEIGHT = 120  # px; stored thumbnails are scaled to this to keep the store small
THUMB_JPEG_QUALITY = 85


def _encode_strip(thumbnails: np.ndarray) -> bytes | None:
    """uint8 [n, h, w, 3] RGB → one JPEG of the tiles side by side at THUMB_STRIP_HEIGHT."""
    if thumbnails.size == 0:
        return None
    _, h, w, _ = thumbnails.shape
    width = max(1, round(w * THUMB_STRIP_HEIGHT / h))
    tiles = [cv2.resize(t, (width, THUMB_STRIP_HEIGHT), interpolation=cv2.INTER_AREA)
             for t in thumbnails]
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, THUMB_JPEG_QUALITY])
    return jpeg.tobytes() if ok else None
