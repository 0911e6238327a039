"""Store's clip embeddings → the search index (vectors.py: int8 codes, memory-mapped) and each
clip's tag scores (float32 [n, n_tags]), kept current by the store's change feed → ranked rows,
filtered by folder and tag.

What `autotag serve` (and the daemon serving it) searches. It is loaded once and then follows
the store: before each query it asks for the files changed since the last change it applied
(one indexed SQLite query when nothing changed) and loads only those, so clips the daemon tags,
moves or forgets, in this process or another, are found, moved or gone at the next query. A
rebuild from the store is always right: the store is the truth; this is a cache of it.

Every query, filtered or not, ranks through the one search index (vectors.open_index's): no
float32 copy of every embedding is held (a million clips: 2 GB before; now the index's codes,
512 MB of the page cache, shared with every other searching process). A clip's given tags are
computed here from its clip score per tag (vector · clip embedding, kept per clip as it is
loaded or changed) with the current vocabulary and thresholds, and its reviews winning: the tag
counts and a tag's clips need no sidecar read. Loading reads the embeddings a chunk at a time
for those scores, and a teach preview scores every clip from its code, reading exactly only the
clips near its threshold: the process's memory is the records, the tag scores and the codes.
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag.config import TaggingConfig
from autotag.scoring import given_reviewed, review_matrix
from autotag.search import Hit, search
from autotag.search.vectors import Among, IndexUnavailable, StaleIndex, VectorIndex
from autotag.store import FileRecord, Store
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

GROWTH = 1.5  # the score matrix grows by this factor when full (amortised appends)
MERGE_RETRY = 60.0  # seconds before a merge that did not happen (another process's) is retried
# a preview scores exactly the clips within this many standard deviations of their codes'
# rounding error of its threshold (a sum of 512 uniform roundings: near-Gaussian; beyond 7 σ,
# about 3 in a trillion clips)
BAND_SIGMAS = 7.0
EDGE_ROWS = 64  # clips on each side of a preview's threshold always scored exactly
EXACT_CHUNK = 20_000  # clips' float32 embeddings read from the store at a time (40 MB)
RELOAD_CHUNK = 2_000  # embeddings read at a time when the index loads: 4 MB (freed blobs of
# larger reads stay in the heap glibc keeps)


@dataclass(frozen=True)
class Filter:
    """Which clips a query ranks: inside one of these folders, and given all of these tags."""

    folders: tuple[Path, ...] = ()
    tags: tuple[str, ...] = ()
    exclude: tuple[int, ...] = ()  # file ids left out ("more like this" leaves its own clip)


@dataclass(frozen=True)
class Snapshot:
    """LiveIndex.snapshot: row i of each is clip i."""

    records: list[FileRecord]
    scores: np.ndarray  # float32 [n_clips, n_tags], the clip scores
    given: np.ndarray  # bool [n_clips, n_tags], as tagging decides (reviews winning)
    reviews: dict[str, dict[str, str]]  # sha256 → {label: verdict}
    version: int  # changes with every change applied


class LiveIndex:
    """The clips of every file tagged with `model`, by store id, kept current: the search index
    and each clip's tag scores."""

    def __init__(self, store: Store, model: str, vocabulary: Vocabulary,
                 tagging: TaggingConfig) -> None:
        self.store, self.model = store, model
        self.vocabulary, self.tagging = vocabulary, tagging
        self._lock = threading.RLock()  # queries and refreshes come from the server's threads
        self._seq = -1
        self._version = 0  # bumped by every applied change: the caches below are per version
        self._given: tuple[int, np.ndarray] | None = None
        self._folders = _PerVersion()  # folder filters' masks
        self._kept = _PerVersion()  # filters' kept file ids
        self._vectors: VectorIndex | None = None
        self._merger: threading.Thread | None = None  # merges its changes into its file
        self._merge_after = 0.0  # monotonic time before which no merge is tried again
        self._closing = threading.Event()
        self._reload()

    # -- following the store ------------------------------------------------------------------

    def _reload(self) -> None:
        """Every clip's record and tag scores, and the search index: the saved one if it is
        sound, else built from the store. The embeddings are read RELOAD_CHUNK at a time and
        scored as they come (store.clip_vectors): none is held past its chunk (a million
        clips' float32 embeddings are 2 GB; their tag scores [n, tags] a few dozen MB)."""
        started = time.monotonic()
        seq = self.store.last_change()  # before reading: a change made meanwhile is re-applied
        records, scores = self._records_and_scores()
        self._records: list[FileRecord] = records
        self._row = {r.id: i for i, r in enumerate(records)}
        self._ids = np.fromiter((r.id for r in records), np.int64, count=len(records))
        self._scores = scores  # float32 [rows, n_tags]: clip scores per tag
        self._folder_counts = collections.Counter(os.path.dirname(r.where) for r in records)
        self._reviews = self.store.all_reviews()  # sha256 → {label: verdict}
        self._vectors = VectorIndex.open(self.store, self.model, build=False)
        if self._vectors is None:  # once, when there is none: its build reads every embedding
            self._vectors = VectorIndex.build(self.store, self.model)
        self._seq = seq
        self._version += 1
        log.info("search index: %d clips loaded in %.2f s", len(records),
                 time.monotonic() - started)

    def _records_and_scores(self) -> tuple[list[FileRecord], np.ndarray]:
        """The files tagged with stored embeddings of this model, by path, and their tag
        scores (float32 [n, n_tags]), the embeddings read a chunk at a time."""
        files = self.store.files("tagged")  # by path
        at: dict[str, list[int]] = {}
        for i, record in enumerate(files):
            at.setdefault(record.sha256, []).append(i)  # copies share their content's vector
        scores = np.zeros((len(files), len(self.vocabulary.vectors)), np.float32)
        stored = np.zeros(len(files), bool)
        for hashes, matrix in self.store.clip_vectors(self.model, RELOAD_CHUNK):
            chunk = self._tag_scores(matrix)
            for sha256, row in zip(hashes, chunk, strict=True):
                for i in at.get(sha256, ()):
                    scores[i] = row
                    stored[i] = True
        keep = np.flatnonzero(stored)
        return [files[i] for i in keep], scores[keep]

    def _tag_scores(self, matrix: np.ndarray) -> np.ndarray:
        vectors = self.vocabulary.vectors.astype(np.float32)
        if not len(matrix) or not len(vectors):
            return np.zeros((len(matrix), len(vectors)), np.float32)
        return matrix.astype(np.float32, copy=False) @ vectors.T

    def refresh(self) -> None:
        """Apply what changed in the store since the last refresh (any process's writes)."""
        with self._lock:
            self._refresh_vectors()
            latest, ids = self.store.changed_since(self._seq)
            if ids is None:
                self._reload()
            elif ids:
                self._apply(ids)
                self._seq = latest
            else:
                self._seq = latest

    def _refresh_vectors(self) -> None:
        """The search index, kept current with the store; its changes merged into its file
        past SYNC_AT by a thread of its own (_merge_in_thread: seconds at a million clips,
        which no query waits for). A stale one (the feed trimmed past it) is rebuilt."""
        from autotag.search import vectors

        try:
            self._vectors.refresh()
        except (StaleIndex, IndexUnavailable) as exc:
            log.warning("search index: %s; rebuilding it from the store", exc)
            self._vectors = VectorIndex.build(self.store, self.model)
            return
        if (self._vectors.pending() >= vectors.SYNC_AT and self._merger is None
                and time.monotonic() >= self._merge_after and not self._closing.is_set()):
            self._merger = threading.Thread(target=self._merge_in_thread, daemon=True,
                                            name="autotag-index-merge")
            self._merger.start()

    def _merge_in_thread(self) -> None:
        """Merge the held changes into a new file, on an index of its own (the one queries
        use keeps answering, from its file and its overlay, meanwhile), then swap it in: it
        is current with the store once refreshed. Another process merging (its lock held)
        or a failure leaves queries as they were; a merge is tried again MERGE_RETRY later."""
        try:
            merged = VectorIndex.open(self.store, self.model, build=False)
            if merged is not None:
                merged.sync()
        except Exception as exc:
            log.warning("search index: the merge did not finish (%s)", exc,
                        exc_info=not isinstance(exc, (StaleIndex, IndexUnavailable)))
            merged = None
        with self._lock:
            current = self._vectors
            if merged is not None and (current is None or merged.pending() < current.pending()):
                self._vectors = merged
            else:
                self._merge_after = time.monotonic() + MERGE_RETRY
            self._merger = None

    def close(self) -> None:
        """Stop merging: wait for a merge in progress."""
        self._closing.set()
        if self._merger is not None:
            self._merger.join()

    def _apply(self, ids: set[int]) -> None:
        records, matrix = self.store.clip_index_of(self.model, ids)
        scores = self._tag_scores(matrix)
        current = {r.id: (r, scores[i]) for i, r in enumerate(records)}
        for record in records:  # a review changed, or a clip (re)tagged: its reviews again
            found = self.store.reviews(record.sha256)
            if found:
                self._reviews[record.sha256] = found
            else:
                self._reviews.pop(record.sha256, None)
        for file_id in ids:
            if file_id in current:
                self._put(*current[file_id])
            else:
                self._drop(file_id)  # forgotten, failed, moved away, or another model's
        self._version += 1

    def _put(self, record: FileRecord, scores: np.ndarray) -> None:
        row = self._row.get(record.id)
        if row is None:
            row = len(self._records)
            self._ensure(row + 1)
            self._records.append(record)
            self._row[record.id] = row
        else:
            self._folder_counts[os.path.dirname(self._records[row].where)] -= 1
            self._records[row] = record
        self._folder_counts[os.path.dirname(record.where)] += 1
        self._scores[row] = scores
        self._ids[row] = record.id

    def _drop(self, file_id: int) -> None:
        """Remove a row by moving the last one into its place."""
        row = self._row.pop(file_id, None)
        if row is None:
            return
        self._folder_counts[os.path.dirname(self._records[row].where)] -= 1
        last = len(self._records) - 1
        if row != last:
            moved = self._records[last]
            self._records[row] = moved
            self._scores[row] = self._scores[last]
            self._ids[row] = moved.id
            self._row[moved.id] = row
        self._records.pop()

    def _ensure(self, rows: int) -> None:
        if rows > len(self._scores):
            size = max(rows, int(len(self._scores) * GROWTH) + 16)
            grown = np.zeros((size, self._scores.shape[1]), np.float32)
            grown[:len(self._scores)] = self._scores
            self._scores = grown
            ids = np.zeros(size, np.int64)
            ids[:len(self._ids)] = self._ids
            self._ids = ids

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def search(self, query: np.ndarray, top: int, where: Filter = Filter(),
               threshold: float | None = None) -> tuple[list[Hit], int]:
        """The best `top` fresh clips for query (float32 [512]) that pass the filter, each with
        the segment where it matches best (search.search; its windows at `threshold`, default
        min_score), and how many better ones were stale."""
        self.refresh()
        threshold = self.tagging.min_score if threshold is None else threshold
        with self._lock:
            ranker = Among(self._vectors, self._among(where), frozenset(where.exclude))
            return search(ranker, self.store, self.model, query, top, threshold)

    def scores(self, query: np.ndarray, threshold: float | None = None
               ) -> tuple[list[FileRecord], np.ndarray]:
        """Every clip and its score for query (float32 [n]): what a preview of a new tag counts
        and lists at `threshold` (teaching.preview; default min_score). No float32 embedding of
        every clip is read (a million: 2 GB): each clip is scored from its int8 code
        (VectorIndex.approximate), then the clips whose code cannot tell which side of the
        threshold they are on (within their margin of it: BAND_SIGMAS of the rounding's
        spread, plus what clipping lost) are scored exactly from the store, and so are at least
        EDGE_ROWS clips on each side (the clips a preview names). The count is exact but for
        a clip beyond BAND_SIGMAS; a score far from the threshold is its code's."""
        self.refresh()
        threshold = self.tagging.min_score if threshold is None else float(threshold)
        query = np.asarray(query, np.float32)
        with self._lock:
            n = len(self._records)
            records = list(self._records)
            row_ids = self._ids[:n].copy()
            vectors = self._vectors
            ids, approx, margins = vectors.approximate(query, BAND_SIGMAS)
        return records, banded_scores(vectors, query, row_ids, threshold, (ids, approx, margins))

    def given(self) -> np.ndarray:
        """bool [n_clips, n_tags]: clip i is given tag k (its clip score reaches the tag's
        threshold and is among its top_k), as tagging decides from the same scores."""
        self.refresh()
        with self._lock:
            if self._given is None or self._given[0] != self._version:
                self._given = (self._version, self._compute_given())
            return self._given[1]

    def _compute_given(self) -> np.ndarray:
        labels = self.vocabulary.labels
        n = len(self._records)
        if not n or not len(labels):
            return np.zeros((n, len(labels)), bool)
        verdicts = review_matrix([r.sha256 for r in self._records], self._reviews, labels)
        return given_reviewed(self._scores[:n], verdicts, labels, self.tagging)

    def snapshot(self) -> Snapshot:
        """Every clip as of now, with its tag scores, given tags and reviews: what the library
        view filters, sorts and pages (arrays and lists of their own; later changes do not
        reach them)."""
        with self._lock:  # re-entrant: given() refreshes under it, so all is one version
            given = self.given()
            n = len(self._records)
            return Snapshot(list(self._records), self._scores[:n].copy(), given,
                            dict(self._reviews), self._version)

    def labels_of(self, file_ids: Sequence[int]) -> dict[int, list[str]]:
        """The tags each of these clips is given (as given() decides), for result cards."""
        given = self.given()
        labels = self.vocabulary.labels
        with self._lock:
            rows = {i: self._row[i] for i in file_ids if i in self._row}
            return {i: [labels[k] for k in np.flatnonzero(given[row])] for i, row in rows.items()
                    if row < len(given)}

    def tag_counts(self) -> dict[str, int]:
        counts = self.given().sum(axis=0)
        return {label: int(c) for label, c in zip(self.vocabulary.labels, counts, strict=True)}

    def recent(self, top: int) -> list[FileRecord]:
        """The clips tagged most recently, newest first."""
        self.refresh()
        with self._lock:
            return heapq.nlargest(top, self._records, key=lambda r: r.updated)

    def folders(self, limit: int = 200) -> list[tuple[str, int]]:
        """The folders holding clips, with their clip counts, most clips first (counted at load
        and kept by each change: every search page lists them)."""
        self.refresh()
        with self._lock:
            return heapq.nsmallest(limit, ((f, n) for f, n in self._folder_counts.items() if n),
                                   key=lambda kv: (-kv[1], kv[0]))

    def _among(self, where: Filter) -> np.ndarray | None:
        """The file ids (int64, ascending) the filter's folders and tags keep (None: all),
        cached per version."""
        if not where.folders and not where.tags:
            return None
        key = (tuple(sorted(map(str, where.folders))), tuple(sorted(where.tags)))
        return self._kept.get(key, self._version, lambda: self._ids_kept(where))

    def _ids_kept(self, where: Filter) -> np.ndarray:
        n = len(self._records)
        keep = np.ones(n, bool)
        if where.folders:
            keep &= self._under(where.folders)
        labels = self.vocabulary.labels
        for tag in where.tags:
            keep &= self.given()[:, labels.index(tag)] if tag in labels else False
        return np.sort(self._ids[:n][keep])

    def _under(self, folders: Sequence[Path]) -> np.ndarray:
        key = tuple(sorted(map(str, folders)))
        prefixes = tuple(k.rstrip("/") + "/" for k in key)
        return self._folders.get(key, self._version, lambda: np.fromiter(
            (r.where.startswith(prefixes) for r in self._records), bool,
            count=len(self._records)))


class _PerVersion:
    """Values computed for a key at one version of the index; at most 33 kept (a filter's
    folders or tags: few, but a client may send many)."""

    def __init__(self) -> None:
        self._values: dict[tuple, tuple[int, np.ndarray]] = {}

    def get(self, key: tuple, version: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
        cached = self._values.get(key)
        if cached is None or cached[0] != version:
            if len(self._values) > 32:
                self._values.clear()
            cached = self._values[key] = (version, compute())
        return cached[1]

def banded_scores(vectors: VectorIndex, query: np.ndarray, row_ids: np.ndarray, threshold: float,
                  approximate: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 [n]: each clip's score from its code (`approximate`: the ids, scores and margins
    VectorIndex.approximate gave), then exact from the store for the clips within their margin
    of `threshold` and the EDGE_ROWS nearest it on each side (LiveIndex.scores says why)."""
    ids, approx, margins = approximate
    n = len(row_ids)
    scores = np.full(n, np.nan, np.float32)
    margin = np.zeros(n, np.float32)
    if len(ids):
        order = np.argsort(ids, kind="stable")
        ids, approx, margins = ids[order], approx[order], margins[order]
        at = np.minimum(np.searchsorted(ids, row_ids), len(ids) - 1)
        inside = ids[at] == row_ids
        scores[inside], margin[inside] = approx[at[inside]], margins[at[inside]]
    unsure = np.isnan(scores) | (np.abs(scores - threshold) <= margin)  # NaN: changed since
    above = np.flatnonzero(scores >= threshold)
    below = np.flatnonzero(scores < threshold)
    rows = np.union1d(np.flatnonzero(unsure), np.concatenate([
        above[np.argsort(scores[above], kind="stable")[:EDGE_ROWS]],
        below[np.argsort(-scores[below], kind="stable")[:EDGE_ROWS]]]))
    for start in range(0, len(rows), EXACT_CHUNK):
        chunk = rows[start:start + EXACT_CHUNK]
        found, exact = vectors.exact(query, row_ids[chunk])
        by_id = dict(zip(found.tolist(), exact.tolist(), strict=True))
        # a clip gone meanwhile ranks last
        scores[chunk] = [by_id.get(int(i), -np.inf) for i in row_ids[chunk]]
    log.debug("preview scores: %d clips from their codes, %d of them exactly", n, len(rows))
    return scores
