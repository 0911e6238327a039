"""Embedded clip ⇄ the store: window embeddings (float32 [n, dim]), clip embedding, thumbnail strip.

By content hash and model, so a copy or a rename is tagged without the model, and search and
retag read them back without decoding a frame. Saving a clip also adds it to the library's
background (store/background.py), in the same transaction.
"""

from __future__ import annotations

import json

import cv2
import numpy as np

from autotag.clip import Embedded, SourceInfo, Window
from autotag.store.background import add_to_background
from autotag.store.connection import LOOKUP_CHUNK, Connection

THUMB_STRIP_HEIGHT = 120  # px; stored thumbnails are scaled to this to keep the store small
THUMB_JPEG_QUALITY = 85


class Embeddings(Connection):
    """The clips and thumbs tables (vectors follows clips by trigger)."""

    def save_embedded(self, clip: Embedded, model: str) -> None:
        emb = np.ascontiguousarray(clip.embeddings, dtype=np.float32)
        windows = json.dumps([[w.start, w.end] for w in clip.windows])
        with self._db() as db:
            # immediate: the background's sum is read, then written (two writers reading it
            # in deferred transactions would deadlock on the upgrade)
            db.execute("BEGIN IMMEDIATE")
            old = db.execute("SELECT vector FROM vectors WHERE sha256 = ? AND model = ?",
                             (clip.source.sha256, model)).fetchone()
            add_to_background(db, model, clip.clip_embedding, old[0] if old else None)
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
