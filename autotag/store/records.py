"""What the store hands out: a file's record, a version for the up-to-date rule, an outbox event.

Plain frozen values (no connection), and the column list a record is read by.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)  # slots: the web app holds one per clip (a million)
class FileRecord:
    # the path as text, `path` the Path made of it when asked: a Path object costs about 430
    # bytes more than its text (CPython 3.11), 430 MB in a web app of a million clips
    where: str
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

    def __post_init__(self) -> None:
        if not isinstance(self.where, str):  # given a Path
            object.__setattr__(self, "where", os.fspath(self.where))

    @property
    def path(self) -> Path:
        return Path(self.where)

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


RECORD = "path, size, mtime, sha256, status, attempts, last_error, model, vocabulary, updated, id"
RECORD_F = ", ".join("f." + c for c in RECORD.split(", "))


def record_of(row) -> FileRecord:
    """A row of RECORD's columns (clip_rows gives them) as a FileRecord. Its status, model and
    vocabulary are the same few strings in every row: one copy of each is kept (sys.intern),
    not one a record (the web app holds a million records)."""
    path, size, mtime, sha256, status, attempts, error, model, vocabulary, updated, id_ = row[:11]
    return FileRecord(path, size, mtime, sha256, _one(status), attempts, error,
                      _one(model), _one(vocabulary), updated, id_)


def _one(text: str | None) -> str | None:
    return sys.intern(text) if text is not None else None


def records_and_matrix(rows: list) -> tuple[list[FileRecord], np.ndarray]:
    """Rows of RECORD_F + (vector, dim) → records and float32 [n, dim]."""
    records = [record_of(r) for r in rows]
    dim = rows[0][12] if rows else 0
    # a bytearray: one copy of the blobs, and an array the live index may write rows of
    matrix = np.frombuffer(bytearray().join(r[11] for r in rows), dtype=np.float32)
    return records, matrix.reshape(len(rows), dim)
