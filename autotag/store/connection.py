"""state.path → one SQLite connection per thread (WAL), the schema created or migrated once.

Every part of the store (files, embeddings, reviews, ...) asks `_db()` for its thread's
connection: sqlite3 objects must not cross threads, and WAL mode lets `autotag search` read
while the daemon writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from autotag.errors import AutotagError
from autotag.store.schema import SCHEMA_VERSION, migrate

LOOKUP_CHUNK = 500  # paths per bulk query (versions): one statement, well under SQLite's limit
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another's lock


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


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a property of the file: the first connection sets it for all).
    Changing the mode needs the file to itself, and SQLite answers "database is locked" at once
    instead of calling the busy handler, so two openers of a fresh store (`--once` and its MQTT
    thread, the daemon and `autotag search`) would fail the one that lost: it waits here, as a
    writer waits for a lock, up to BUSY_TIMEOUT."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class Connection:
    """The store's file: its per-thread connections, opened, upgraded and closed here."""

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
                migrate(db, version, self.path)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


    def _db(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 objects are used by the thread that made them)."""
        db = getattr(self._local, "db", None)
        if db is None or self._local.generation != self._generation:
            # check_same_thread off only so that close() may close it from another thread
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
            _use_wal(db)
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
