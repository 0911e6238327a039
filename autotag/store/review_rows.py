"""(content, label) → confirmed | rejected: a person's word on a tag, and the change feed that follows it.

Reviews are kept by content hash (they follow renames and copies) and by label (they outlive a
vocabulary change). `changes` is the feed a reader in any process follows (the web app's index):
a row per insert, update or delete of a file, its embeddings or its reviews (triggers).
"""

from __future__ import annotations

import time

from autotag.store.connection import Connection


class Reviews(Connection):
    """The reviews table."""

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


class ChangeFeed(Connection):
    """The change feed: what changed since the seq a reader last saw."""

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
