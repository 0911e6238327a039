"""The store's schema and its migrations: a new store → tables and triggers; schema N → SCHEMA_VERSION.

Run once per store by Connection (inside one BEGIN IMMEDIATE transaction, so one migrating
process at a time); nothing else here touches a row after the migration.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCHEMA_VERSION = 8  # 2: files.id, changes, roots; 3: vectors; 4: reviews; 5: files.sidecar;
# 6: files.outputs; 7: background; 8: outbox, mqtt_entities
CHANGES_KEPT = 100_000  # rows of the change feed kept; a reader further behind reloads all

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


def migrate(db: sqlite3.Connection, version: int, path: Path) -> None:
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
        log.info("upgrading the state store %s to schema %d (once)", path,
                 SCHEMA_VERSION)
        db.execute(_MIGRATE_VECTORS)
    if 0 < version < 7:
        _sum_background(db)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _sum_background(db: sqlite3.Connection) -> None:
    """Schema 6: the background's count and sum from every stored clip embedding (one read)."""
    totals: dict[str, tuple[int, np.ndarray]] = {}
    for model, blob in db.execute("SELECT model, vector FROM vectors"):
        count, total = totals.get(model, (0, 0.0))
        totals[model] = (count + 1, total + np.frombuffer(blob, np.float32).astype(np.float64))
    for model, (count, total) in totals.items():
        db.execute("INSERT OR REPLACE INTO background (model, count, total) VALUES (?, ?, ?)",
                   (model, count, np.asarray(total, np.float64).tobytes()))
