"""Store's clip embeddings → one in-memory matrix, kept current by the store's change feed → ranked
rows, filtered by folder and tag.

What `autotag serve` (and the daemon serving it) searches. It is loaded once (100,000 clips:
200 MB of float32 [n, 512], a few seconds) and then follows the store: before each query it asks
for the files changed since the last change it applied (one indexed SQLite query when nothing
changed) and loads only those, so clips the daemon tags, moves or forgets, in this process or
another, are found, moved or gone at the next query. A rebuild from the store is always right:
the store is the truth; this is a cache of it. From ANN_FROM clips an unfiltered query ranks
through the on-disk vector index (vector_index.py) instead, which follows the same feed.

A clip's given tags are computed here from its clip embedding (the mean of its windows, so
vector · clip embedding is the tag's clip score, as tagging computes it) with the current
vocabulary and thresholds, and its reviews winning: the tag counts and a tag's clips need no
sidecar read.
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag import vector_index
from autotag.analysis.calibration import given_reviewed, review_matrix
from autotag.config import TaggingConfig
from autotag.search import Hit, Index, search
from autotag.store import FileRecord, Store
from autotag.vector_index import IndexUnavailable, StaleIndex, VectorIndex
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

GROWTH = 1.5  # the matrix grows by this factor when full (amortised appends)
# An unfiltered query ranks through the on-disk vector index from this many clips (the matrix
# product over 50,000 clips takes ~5 ms; over 1,000,000, 100+). A filtered one ranks the rows
# its filter keeps, exactly: a tag or a folder keeps a share of the library, and a share of
# the matrix is as fast as the graph.
ANN_FROM = 50_000
MERGE_RETRY = 60.0  # seconds before a merge that did not happen (another process's) is retried


class _Closing(Exception):
    """The index closed during a build: the build stops at its next step."""


@dataclass(frozen=True)
class Filter:
    """Which clips a query ranks: inside one of these folders, and given all of these tags."""

    folders: tuple[Path, ...] = ()
    tags: tuple[str, ...] = ()
    exclude: tuple[int, ...] = ()  # file ids left out ("more like this" leaves its own clip)


class LiveIndex:
    """The clip embeddings of every file tagged with `model`, by store id, kept current."""

    def __init__(self, store: Store, model: str, vocabulary: Vocabulary,
                 tagging: TaggingConfig, ann_from: int = ANN_FROM) -> None:
        self.store, self.model = store, model
        self.vocabulary, self.tagging = vocabulary, tagging
        self._lock = threading.RLock()  # queries and refreshes come from the server's threads
        self._seq = -1
        self._version = 0  # bumped by every applied change: the caches below are per version
        self._given: tuple[int, np.ndarray] | None = None
        self._folders: dict[tuple, tuple[int, np.ndarray]] = {}
        self._ann_from = ann_from
        self._vectors: VectorIndex | None = None
        self._builder: threading.Thread | None = None  # builds the vector index if missing
        self._merger: threading.Thread | None = None  # merges its changes into its file
        self._merge_after = 0.0  # monotonic time before which no merge is tried again
        self._closing = threading.Event()
        self._reload()

    # -- following the store ------------------------------------------------------------------

    def _reload(self) -> None:
        started = time.monotonic()
        seq = self.store.last_change()  # before reading: a change made meanwhile is re-applied
        records, matrix = self.store.clip_index(self.model)
        dim = matrix.shape[1] if len(records) else 0
        self._records: list[FileRecord] = records
        self._matrix = matrix if dim else np.zeros((0, 0), np.float32)  # writable, ours
        self._row = {r.id: i for i, r in enumerate(records)}
        self._folder_counts = collections.Counter(os.path.dirname(str(r.path)) for r in records)
        self._reviews = self.store.all_reviews()  # sha256 → {label: verdict}
        self._seq = seq
        self._version += 1
        log.info("search index: %d clips loaded in %.2f s", len(records),
                 time.monotonic() - started)

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
        """The vector index once the library reaches ann_from clips: the saved one, or one
        built in a thread (minutes at a million clips: queries rank exactly meanwhile, and the
        daemon serving this tags on); then kept current with the store, its changes merged
        into its file past SYNC_AT by a thread of its own (_merge_in_thread: seconds at a
        million clips, which no query waits for)."""
        if self._vectors is None:
            if len(self._records) >= self._ann_from and self._builder is None:
                self._vectors = VectorIndex.open(self.store, self.model, build=False)
                if self._vectors is None:
                    self._builder = threading.Thread(target=self._build, daemon=True,
                                                     name="autotag-index-build")
                    self._builder.start()
            return
        try:
            self._vectors.refresh()
        except (StaleIndex, IndexUnavailable) as exc:
            log.warning("search index: %s; rebuilding it from the store", exc)
            self._vectors, self._builder = None, None
            return
        if (self._vectors.pending() >= vector_index.SYNC_AT and self._merger is None
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
        except Exception as exc:  # noqa: BLE001 - queries go on with the index they have
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

    def _build(self) -> None:
        def step(done: int, total: int) -> None:
            log.info("building the search index: %d of %d clips", done, total)
            if self._closing.is_set():
                raise _Closing

        try:
            built = VectorIndex.build(self.store, self.model, progress=step)
        except _Closing:
            return
        except Exception:  # queries go on ranking exactly; the next start tries again
            log.exception("search index: the build failed; queries rank every clip exactly")
            return
        with self._lock:
            self._vectors = built

    def ready(self, timeout: float) -> bool:
        """Wait for the vector index (built in a thread); True once queries rank through it."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)
        return self._vectors is not None

    def close(self) -> None:
        """Stop a build in progress (at its next step) and wait for its thread."""
        self._closing.set()
        for thread in (self._builder, self._merger):
            if thread is not None:
                thread.join()

    def _apply(self, ids: set[int]) -> None:
        records, matrix = self.store.clip_index_of(self.model, ids)
        current = {r.id: (r, matrix[i]) for i, r in enumerate(records)}
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

    def _put(self, record: FileRecord, vector: np.ndarray) -> None:
        row = self._row.get(record.id)
        if row is None:
            row = len(self._records)
            self._ensure(row + 1, len(vector))
            self._records.append(record)
            self._row[record.id] = row
        else:
            self._folder_counts[os.path.dirname(str(self._records[row].path))] -= 1
            self._records[row] = record
        self._folder_counts[os.path.dirname(str(record.path))] += 1
        self._matrix[row] = vector

    def _drop(self, file_id: int) -> None:
        """Remove a row by moving the last one into its place."""
        row = self._row.pop(file_id, None)
        if row is None:
            return
        self._folder_counts[os.path.dirname(str(self._records[row].path))] -= 1
        last = len(self._records) - 1
        if row != last:
            moved = self._records[last]
            self._records[row] = moved
            self._matrix[row] = self._matrix[last]
            self._row[moved.id] = row
        self._records.pop()

    def _ensure(self, rows: int, dim: int) -> None:
        if self._matrix.shape[1] != dim:  # the first clip of an empty index
            self._matrix = np.zeros((max(rows, 16), dim), np.float32)
        elif rows > len(self._matrix):
            grown = np.zeros((max(rows, int(len(self._matrix) * GROWTH) + 16), dim), np.float32)
            grown[:len(self._matrix)] = self._matrix
            self._matrix = grown

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
            keep = self._keep(where)
            if keep is None and self._vectors is not None:
                return search(self._vectors, self.store, self.model, query, top, threshold)
            view = Index(self._records, self._matrix[:len(self._records)], keep)
            return search(view, self.store, self.model, query, top, threshold)

    def scores(self, query: np.ndarray) -> tuple[list[FileRecord], np.ndarray]:
        """Every clip and its score for query (float32 [n]): what a preview of a new tag
        counts (teaching.preview), exactly, from the matrix the index holds."""
        self.refresh()
        with self._lock:
            n = len(self._records)
            records = [self._records[i] for i in range(n)]
            return records, self._matrix[:n] @ query.astype(np.float32)

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
        scores = self._matrix[:n] @ self.vocabulary.vectors.T.astype(np.float32)
        verdicts = review_matrix([r.sha256 for r in self._records], self._reviews, labels)
        return given_reviewed(scores, verdicts, labels, self.tagging)

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

    def _keep(self, where: Filter) -> np.ndarray | None:
        """bool [n] of the rows the filter keeps (None: all), cached per version."""
        if not where.folders and not where.tags and not where.exclude:
            return None
        keep = np.ones(len(self._records), bool)
        for file_id in where.exclude:
            if file_id in self._row:
                keep[self._row[file_id]] = False
        if where.folders:
            keep &= self._under(where.folders)
        if where.tags:
            labels = self.vocabulary.labels
            given = self.given()
            for tag in where.tags:
                if tag not in labels:
                    return np.zeros(len(self._records), bool)
                keep &= given[:, labels.index(tag)]
        return keep

    def _under(self, folders: Sequence[Path]) -> np.ndarray:
        key = tuple(sorted(map(str, folders)))
        cached = self._folders.get(key)
        if cached is None or cached[0] != self._version:
            prefixes = tuple(k.rstrip("/") + "/" for k in key)
            mask = np.fromiter((str(r.path).startswith(prefixes) for r in self._records), bool,
                               count=len(self._records))
            if len(self._folders) > 32:
                self._folders.clear()
            cached = self._folders[key] = (self._version, mask)
        return cached[1]
