"""Tagged files + their clip embeddings → (records, float32 [n, dim]): what search ranks and retag walks.

No window embeddings are read: a clip's vector comes from the vectors table (2 KB a clip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotag.store.connection import Connection
from autotag.store.records import RECORD, RECORD_F, FileRecord, record_of, records_and_matrix


class ClipRows(Connection):
    """The library as rows and a matrix, whole, under some folders, or by file id."""

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
        rows = sorted(db.execute(f"SELECT {RECORD} FROM files WHERE status = 'tagged'"),
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
        tag scores, the search index's build) without holding them all (a million: 2 GB)."""
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
                    f"SELECT {RECORD_F}, v.vector, v.dim FROM files f JOIN vectors v ON "
                    "v.sha256 = f.sha256 AND v.model = ? WHERE f.status = 'tagged' AND "
                    "((f.path >= ? AND f.path < ?) OR f.path = ?)",
                    (model, prefix + "/", prefix + "0", prefix)):
                rows[row[0]] = row
        ordered = [rows[p] for p in sorted(rows)]
        _, matrix = records_and_matrix(ordered)
        return [r[:11] for r in ordered], matrix

    def clip_index_of(self, model: str, ids: set[int]) -> tuple[list[FileRecord], np.ndarray]:
        """clip_index for these file ids only (those still tagged with stored embeddings)."""
        rows: list = []
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):  # SQLite's bound-parameter limit
            chunk = ordered[start:start + 500]
            rows += self._db().execute(
                f"SELECT {RECORD_F}, v.vector, v.dim FROM files f JOIN vectors v ON "
                "v.sha256 = f.sha256 AND v.model = ? WHERE f.status = 'tagged' AND f.id IN "
                f"({','.join('?' * len(chunk))})", (model, *chunk)).fetchall()
        return records_and_matrix(rows)
