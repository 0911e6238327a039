"""Clip embeddings → the library's background: its count and sum, and the background last fitted.

Issue 31: likeness is measured against the library's mean, never from the origin. The sum is
kept as clips are saved (add_to_background, in save_embedded's transaction), so the mean is
read, never recomputed; a tag from examples keeps the background it was fitted against until
the library has grown or shrunk by a quarter.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from autotag.store.connection import Connection


class Background(Connection):
    """The background table, and a stable sample of the vectors table."""

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


def add_to_background(db: sqlite3.Connection, model: str, new: np.ndarray,
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
