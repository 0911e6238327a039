"""Query text → text embedding → · every stored clip embedding → top N fresh clips → best segment.

No video is decoded and the video model is never called: clips are ranked by the clip
embeddings the state store kept when they were tagged (the mean of their window embeddings, so
a clip's score is its mean window score, the clip score tagging uses). Only the top results are
then checked against the disk (a clip gone or changed since it was embedded is left out, never
shown with stale scores) and read back window by window for the segment that matches best.

The search room: this module ranks and reads hits; vectors.py is the search index (int8 codes of
every clip embedding, memory-mapped, scanned whole, its top candidates re-ranked exactly from the
store) and `vectors.open_index` the one way to it, for `autotag search`, the web app and "more
like this"; live.py keeps the web app's index and tag scores current with the store. Memory and
time are bounded by the index's codes, not by every float32 embedding. `--under` ranks the
folders' own clips exactly (Index.load reads only theirs). Index is the exact ranking in memory:
float32 [n, 512], one matrix-vector product (a folder's clips; tests' reference).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from autotag.clip import Embedded, Segment, SourceInfo
from autotag.outputs.preview import ascii_text, label_box
from autotag.scoring import like_query, segments, window_scores
from autotag.store import FileRecord, Store, record_of

log = logging.getLogger(__name__)

CANDIDATE_SLACK = 16  # ranked beyond --top, so stale clips can be dropped without a re-sort
WIDEN = 8  # the next ranking, when too many candidates were stale, holds this many times more
SHEET_COLUMNS = 4  # tiles across the contact sheet
SHEET_TILE_HEIGHT = 180  # px
SHEET_TILE_WIDTH = 320  # px: 16:9 cells; other shapes are letterboxed
SHEET_BACKGROUND = (24, 24, 24)  # BGR
SHEET_FORMATS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 90],
                 ".png": [], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}


@dataclass(frozen=True)
class Hit:
    """One search result: the clip, its clip score for the query and where it matches best."""

    record: FileRecord
    score: float  # the mean window score, like a tag's clip score
    segment: Segment  # the run of windows around the best one that reach the threshold
    best_window: int  # index of the best window (its thumbnail goes on the contact sheet)

    def to_json(self) -> dict:
        return {"path": str(self.record.path), "score": round(self.score, 4),
                "segment": self.segment.to_json()}


class _Records(Sequence):
    """Store rows that become FileRecords when read: a search reads a few dozen of them."""

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return record_of(self.rows[i])


@dataclass(frozen=True)
class Index:
    """The clips search ranks: records[i] has clip embedding matrix[i] (float32 [n, 512])."""

    records: Sequence[FileRecord]
    matrix: np.ndarray
    keep: np.ndarray | None = None  # bool [n]: the rows a filter keeps (None: every row)

    @classmethod
    def load(cls, store: Store, model: str, under: Sequence[Path] = ()) -> Index:
        """Every clip tagged with `model`, or those inside the folders `under` (only theirs
        are read: a folder of a million-clip library costs its own clips)."""
        rows, matrix = store.clip_rows_under(model, list(under)) if under \
            else store.clip_rows(model)
        return cls(_Records(rows), matrix)

    def __len__(self) -> int:
        return len(self.records) if self.keep is None else int(self.keep.sum())

    def ranked(self, query: np.ndarray, k: int) -> list[tuple[FileRecord, float]]:
        """The best `k` clips for query (float32 [512]) with their scores, best first:
        argpartition, then a sort of the few that are left."""
        return [(self.records[i], score) for i, score in self.ranked_rows(query, k)]

    def ranked_rows(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        count = len(self)
        if not count:
            return []
        scores = self.matrix @ query.astype(np.float32)
        if self.keep is not None:
            scores[~self.keep] = -np.inf  # ranked last, and cut below
        k = min(count, k)
        rows = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        rows = rows[np.argsort(-scores[rows], kind="stable")][:k]
        return [(int(i), float(scores[i])) for i in rows]


class Ranker(Protocol):
    """What search ranks: the in-memory Index, or the on-disk vector index."""

    def __len__(self) -> int: ...

    def ranked(self, query: np.ndarray, k: int) -> list[tuple[FileRecord, float]]: ...


@dataclass(frozen=True)
class Without:
    """A ranking without one clip ("more like this" leaves out the clip it starts from; its
    copies stay: the same content is the best match)."""

    index: Ranker
    path: Path

    def __len__(self) -> int:
        return max(0, len(self.index) - 1)

    def ranked(self, query: np.ndarray, k: int) -> list[tuple[FileRecord, float]]:
        return [rs for rs in self.index.ranked(query, k + 1) if rs[0].path != self.path][:k]


# a "more like this" query in a library of one clip (no background) scores its own clip
# this × min_score
LIKE_MATCH_FACTOR = 2.0


def like_vector(store: Store, model: str, record: FileRecord, at: float | None,
                min_score: float) -> np.ndarray | None:
    """A stored clip's embedding as a query ("more like this"): its clip embedding, or with
    `at` (seconds) the window around that moment, float32 [512]; None when not stored.

    Scored against the library's background (scoring.like_query, issue 31): the direction
    every clip shares is taken out, and a score counts background spreads, so 0 is a typical
    clip of the library and min_score (3.0) three spreads more alike than one, where segments
    are cut. From the origin, every clip shares the library's common component and looks
    half as alike."""
    from autotag.vocabulary import library_background  # vocabulary imports the engine

    source = SourceInfo(record.path, record.size, record.mtime, record.sha256)
    clip = store.load_embedded(source, model, thumbnails=False)
    if clip is None:
        return None
    if at is None:
        vector = clip.clip_embedding
    else:
        row = min(range(len(clip.windows)), key=lambda i: abs(
            (clip.windows[i].start + clip.windows[i].end) / 2 - at))
        vector = clip.embeddings[row]
    vector = np.asarray(vector, np.float32)
    background = library_background(store, model, minimum=2, keep=False)
    if background is not None:
        return like_query(vector, background)
    self_score = float(vector @ vector)
    if self_score <= 0:
        return None
    return vector * np.float32(LIKE_MATCH_FACTOR * min_score / self_score)


def is_under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path.is_relative_to(f) for f in folders)  # a folder is relative to itself


def is_fresh(record: FileRecord) -> bool:
    """The file is still there, as it was when it was embedded (size and mtime)."""
    try:
        st = os.stat(record.path)
    except OSError:
        return False
    return record.matches(st.st_size, st.st_mtime)


def search(index: Ranker, store: Store, model: str, query: np.ndarray, top: int,
           threshold: float, fresh: Callable[[FileRecord], bool] = is_fresh
           ) -> tuple[list[Hit], int]:
    """The best `top` fresh clips for the query, and how many better-ranked ones were stale.
    Ranked `top` + CANDIDATE_SLACK at first, then WIDEN times as many while too many of those
    are stale, until the ranking holds every clip."""
    hits: list[Hit] = []
    seen: set[Path] = set()
    want = top + CANDIDATE_SLACK
    while True:
        candidates = index.ranked(query, want)
        for record, score in candidates:
            if record.path in seen:
                continue
            seen.add(record.path)
            if fresh(record) and (hit := _hit(store, model, record, score, query, threshold)):
                hits.append(hit)
                if len(hits) == top:
                    break
        if len(hits) == top or len(candidates) < want or want >= len(index):
            break
        want *= WIDEN
    stale = len(seen) - len(hits)
    return hits, stale


def _hit(store: Store, model: str, record: FileRecord, score: float, query: np.ndarray,
         threshold: float) -> Hit | None:
    source = SourceInfo(record.path, record.size, record.mtime, record.sha256)
    clip = store.load_embedded(source, model, thumbnails=False)  # the sheet reads its own
    if clip is None:  # removed between the index and now (another process's retag)
        return None
    _, best_window, best = best_segment(clip, query, threshold)
    return Hit(record, score, best, best_window)


def best_segment(clip: Embedded, vector: np.ndarray, threshold: float
                 ) -> tuple[np.ndarray, int, Segment]:
    """One vector's window scores on a clip (float32 [n_windows]), its best window, and the
    segment around that window (the run reaching `threshold`, or the window alone)."""
    column = window_scores(clip.embeddings, vector[None, :])[:, 0]
    best_window = int(np.argmax(column))
    spans = segments(column, clip.windows, threshold)
    start = clip.windows[best_window].start
    return column, best_window, next(s for s in spans if s.start <= start <= s.end)


# -- contact sheet ----------------------------------------------------------------------------

def contact_sheet(hits: Sequence[Hit], thumbnails: Callable[[str], np.ndarray]) -> np.ndarray:
    """BGR image: one tile per hit, SHEET_COLUMNS across, in rank order; each tile is the
    best window's stored frame with its rank, score, time and file name drawn on it."""
    columns = max(1, min(SHEET_COLUMNS, len(hits)))
    rows = max(1, -(-len(hits) // columns))
    sheet = np.full((rows * SHEET_TILE_HEIGHT, columns * SHEET_TILE_WIDTH, 3), SHEET_BACKGROUND,
                    np.uint8)
    for n, hit in enumerate(hits):
        y, x = (n // columns) * SHEET_TILE_HEIGHT, (n % columns) * SHEET_TILE_WIDTH
        sheet[y:y + SHEET_TILE_HEIGHT, x:x + SHEET_TILE_WIDTH] = _tile(
            hit, n + 1, thumbnails(hit.record.sha256))
    return sheet


def _tile(hit: Hit, rank: int, thumbs: np.ndarray) -> np.ndarray:
    tile = np.full((SHEET_TILE_HEIGHT, SHEET_TILE_WIDTH, 3), SHEET_BACKGROUND, np.uint8)
    if len(thumbs):
        frame = cv2.cvtColor(thumbs[min(hit.best_window, len(thumbs) - 1)], cv2.COLOR_RGB2BGR)
        h, w = frame.shape[:2]
        scale = min(SHEET_TILE_WIDTH / w, SHEET_TILE_HEIGHT / h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        fitted = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1
                            else cv2.INTER_LINEAR)
        top, left = (SHEET_TILE_HEIGHT - size[1]) // 2, (SHEET_TILE_WIDTH - size[0]) // 2
        tile[top:top + size[1], left:left + size[0]] = fitted
    cv2.rectangle(tile, (0, 0), (SHEET_TILE_WIDTH - 1, SHEET_TILE_HEIGHT - 1), (90, 90, 90), 1)
    label_box(tile, f"#{rank}  {hit.score:.2f}  @{hit.segment.start:.1f}s", (4, 4), 0.55)
    label_box(tile, ascii_text(hit.record.path.name)[:40], (4, SHEET_TILE_HEIGHT - 26), 0.45)
    return tile


def encode_sheet(image: np.ndarray, path: Path) -> bytes:
    """The sheet in the format path's extension names (one of SHEET_FORMATS; the CLI checks
    it before any work). Raises ValueError if OpenCV cannot encode it."""
    suffix = path.suffix.lower()
    ok, data = cv2.imencode(suffix, image, SHEET_FORMATS[suffix])
    if not ok:
        raise ValueError(f"--sheet {path}: OpenCV cannot encode {path.suffix}")
    return data.tobytes()
