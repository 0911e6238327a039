"""Events → the outbox → MQTT (autotag/mqtt.py): written with the clip's record, sent, marked, trimmed.

The transactional outbox: an event is added in the same transaction as the record it is about
(Files.record_tagged, record_failure call `add_event`), so an event is never lost with the
broker away nor sent for a record that was not written. Also the Home Assistant discovery
topics announced, so what is gone is removed.
"""

from __future__ import annotations

import sqlite3
import time

from autotag.store.connection import Connection
from autotag.store.records import Event

OUTBOX_KEPT_SECONDS = 2 * 86400.0  # sent MQTT events kept this long (today's count needs them)


def add_event(db: sqlite3.Connection, event: Event) -> None:
    db.execute("INSERT INTO outbox (id, kind, payload, created) VALUES (?, ?, ?, ?)",
               (event.id, event.kind, event.payload, event.created))


class Outbox(Connection):
    """The outbox and mqtt_entities tables."""

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
