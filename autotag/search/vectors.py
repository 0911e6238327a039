"""Store's clip embeddings → centred int8 codes (a memory-mapped file beside the store) + the
changes since it was saved (exact, in memory) → an exact SIMD scan of every code → the top
candidates re-ranked by the exact float32 score from the store.

The index is a cache of the store, never the truth: it lives beside the store
(`state.sqlite3-index/`), one file per model, and is rebuilt from the store whenever it is
missing, stale (another store, a change feed trimmed past it) or corrupt (its size or CRC-32 is
not the one its manifest recorded, or numpy cannot read it). A reader opens it in
milliseconds: the codes are memory-mapped (their pages are the kernel's page cache, shared by
every process that searches, not each one's heap), and the files tagged, moved or forgotten
since it was saved are read from the store's change feed (`changed_since`) into a small exact
overlay; those ids are left out of the scan. Once the overlay holds more than SYNC_AT changes,
the process that sees it (under a lock file, one at a time) merges it into a new file, written
beside the old one and published by rewriting the manifest atomically (a reader holding the old
file keeps reading it).

Why a scan and not a graph (docs/design/search.md has the table, from
`python -m benchmarks.scale.candidates`): a query is text, and in a joint video-text space text
embeddings sit apart from video ones (the modality gap). A graph built from clip vectors walks
toward a text query from the wrong side: usearch's HNSW (ef 512, 100 candidates re-ranked) kept
recall@10 at 0.97 for clip-like queries but fell to 0.58-0.74 for text-like ones, and to 0.00 on
unclustered vectors. A scan of every code has no such blind side: its only error is the int8
rounding, and re-ranking its top CANDIDATES exactly removes it (recall@10 1.000 on every
library and query set measured). Binary codes (1 bit a coordinate, a Hamming prefilter) were
8 times smaller but kept 0.97-0.98 even with 3,000 candidates re-ranked.

The codes are the clip embeddings less the library's mean (the component every clip shares,
which says nothing about which clip is best: q · x = q · mean + q · (x - mean)), divided per
coordinate by CLIP_SD of its spread over 127, rounded. A query is scaled by the same steps and
rounded to int8 too: the scan ranks by the integer dot product (numkong's SIMD kernel on every
core), which orders clips as q · (x - mean) does up to rounding. Beside the codes each row keeps
the norm of what clipping at ±127 lost (most rows: 0), so a score read from a code comes with a
margin the exact score lies within (approximate: what the teach preview counts with).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autotag.atomic import AtomicWriteError, write_atomic
from autotag.errors import AutotagError
from autotag.store import FileRecord, Store

log = logging.getLogger(__name__)

FORMAT = 4  # the manifest's and files' layout; another one is rebuilt (2: usearch HNSW graph;
# 3: without each code's clipping)
CLIP_SD = 5.0  # a coordinate's codes span ± this many standard deviations (beyond: clipped)
CANDIDATES = 200  # codes re-ranked exactly per query (at least 8 × what is asked): 100 kept
# recall@10 at 1.000 on every library and query set of benchmarks.scale.candidates
MAX_CANDIDATES = 20_000  # a query widened past this many (most of them stale) stops there
SUBSET_SHARE = 0.5  # a filter keeping less than this share of the rows scans only theirs
FIT_SAMPLE = 200_000  # rows of a matrix the mean and the steps are estimated from
FIT_CHUNK = 10_000  # rows summed at a time while fitting (their float64 copy: 40 MB)
SYNC_AT = 2_000  # changes held in memory before they are merged into a new file
REFIT_ADDED = 1.0  # rows added since the build, as a share of the build, that ask a rebuild
# (their codes use the steps fitted then: a library that doubled is fitted again)
SCAN_ROWS = 65_536  # rows a scan task scores: 32 MB of codes, its scores 256 KB
BUILD_CHUNK = 50_000  # rows quantised per step (progress, and Ctrl-C between steps)
BUILD_READ = 2_000  # embeddings read from the store per step of a build: 4 MB (the freed blobs
# of larger reads stay in the heap glibc keeps)
CRC_CHUNK = 64 * 2**20  # bytes checksummed per read


class IndexUnavailable(AutotagError):
    """The index cannot be read or written here (a read-only state folder)."""


class StaleIndex(Exception):
    """The store's change feed no longer reaches back to the index's last change."""


@dataclass(frozen=True)
class Manifest:
    """What the index files hold and how to check them; JSON beside them."""

    format: int
    model: str
    store: int  # the store file's inode: a store deleted and made again is another store
    seq: int  # the store's last change merged into the file
    count: int  # rows in the file
    built: int  # rows when the codes' steps were fitted (a full build)
    dim: int  # the clip embedding's size
    file: str  # the codes' file name (.npy, int8 [count, dim]), in the same folder
    meta: str  # the ids' and the quantiser's file name (.npz)
    bytes: int  # of both files
    crc32: int  # of both files, the codes first
    built_at: float  # time.time() of the last full build

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data) if data.get("format") == FORMAT else None
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Quantiser:
    """float32 [n, dim] clip embeddings ↔ int8 codes: centred by `mean`, `step` a code."""

    mean: np.ndarray  # float32 [dim]: the library's mean clip embedding
    step: np.ndarray  # float32 [dim]: one code's width per coordinate

    @classmethod
    def fit(cls, matrix: np.ndarray) -> Quantiser:
        """Fitted on float32 [n, dim] (on FIT_SAMPLE of its rows when it has more)."""
        rows = matrix
        if len(matrix) > FIT_SAMPLE:
            rows = matrix[np.sort(np.random.default_rng(0).choice(len(matrix), FIT_SAMPLE,
                                                                  replace=False))]
        return cls.fit_chunks((rows[i:i + FIT_CHUNK] for i in range(0, len(rows), FIT_CHUNK)),
                              matrix.shape[1])

    @classmethod
    def fit_chunks(cls, chunks: Iterable[np.ndarray], dim: int) -> Quantiser:
        """Fitted on float32 [m, dim] chunks, each let go after its turn: the mean and spread
        per coordinate from float64 sums (of each row less the first chunk's mean, so the sum
        of squares does not cancel against a large shared component)."""
        count, shift = 0, None
        total, squares = np.zeros(dim), np.zeros(dim)
        for chunk in chunks:
            if not len(chunk):
                continue
            rows = chunk.astype(np.float64)
            if shift is None:
                shift = rows.mean(axis=0)
            rows -= shift
            total += rows.sum(axis=0)
            squares += (rows * rows).sum(axis=0)
            count += len(rows)
        if not count:
            return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))
        centre = total / count
        spread = np.sqrt(np.maximum(squares / count - centre * centre, 0.0))
        step = np.maximum(spread * CLIP_SD / 127, 1e-12)  # a constant coordinate: any step
        return cls((shift + centre).astype(np.float32), step.astype(np.float32))

    def codes(self, matrix: np.ndarray) -> np.ndarray:
        """int8 [n, dim] of float32 [n, dim]."""
        return np.clip(np.rint((matrix - self.mean) / self.step), -127, 127).astype(np.int8)

    def clipping(self, matrix: np.ndarray) -> np.ndarray:
        """float32 [n]: the norm, in steps, of what each row's code lost to clipping at ±127
        (0 for most rows). A code's rounding is at most half a step a coordinate; a clipped
        coordinate errs by more, and this bounds it (VectorIndex.approximate)."""
        scaled = (matrix - self.mean) / self.step
        lost = np.where(np.abs(scaled) > 127.5, scaled - np.clip(scaled, -127, 127), 0.0)
        return np.sqrt((lost.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)

    def query(self, query: np.ndarray) -> np.ndarray:
        """int8 [dim]: the query in the codes' steps, its largest coordinate at ±127 (the scan
        ranks by the integer dot product; its scale does not change the order)."""
        return self.query_scaled(query, parts=1)[0][0]

    def query_scaled(self, query: np.ndarray, parts: int = 2
                     ) -> tuple[np.ndarray, np.ndarray, float]:
        """(int8 [parts, dim] codes, float64 [parts] factors, offset): query · x ≈ offset +
        Σ factor[i] × (code[i] · codes(x)), a clip's score from its code (offset = query ·
        mean, the part every clip shares). The second part is the first's rounding, rounded
        again: the query's own rounding error shrinks ~127 times, leaving the codes'."""
        offset = float(query.astype(np.float64) @ self.mean)
        rest = query.astype(np.float64) * self.step
        codes, factors = [], []
        for _ in range(parts):
            top = np.abs(rest).max()
            if not top > 0:
                break
            code = np.rint(rest * (127 / top))
            codes.append(code.astype(np.int8))
            factors.append(top / 127)
            rest = rest - code * (top / 127)
        if not codes:
            return np.zeros((1, len(query)), np.int8), np.zeros(1), offset
        return np.stack(codes), np.array(factors), offset


def scan(codes: np.ndarray, query: np.ndarray, count: int) -> np.ndarray:
    """Rows of codes (int8 [n, dim]) with the `count` largest dot products with query (int8
    [dim]), best first: every row scored exactly by numkong's SIMD kernel in blocks of
    SCAN_ROWS, one block a task on every core, then numpy's argpartition of the scores.

    Why not usearch's own exact search (the scan until issue 31's second part): it spends about
    160 ns a row whatever the row's bytes, most of it per row, not per byte; numkong's kernel
    spends about 60 ns on the same 512 bytes on one core, which puts a million rows under the
    50 ms target on two (docs/design/search.md, Timing)."""
    n = len(codes)
    if not n or count <= 0:
        return np.zeros(0, np.int64)
    count = min(count, n)
    # float32 holds every integer score exactly (|score| <= dim * 127 * 127: 8.3 M < 2^24 at 512);
    # numkong's int32 output takes a path ten times slower than its float32 one
    scores = np.empty(n, np.float32)
    _score_blocks(codes, np.ascontiguousarray(query, np.int8)[None, :], scores)
    top = np.argpartition(-scores, count - 1)[:count] if count < n else np.arange(n)
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


def _score_blocks(codes: np.ndarray, query: np.ndarray, out: np.ndarray,
                  weights: np.ndarray | None = None) -> None:
    """out[i] = codes[i] · query[0] (float32, exact), or with weights (float [k]) Σ weights[j]
    × codes[i] · query[j] (every query row in one pass over the codes), in blocks of SCAN_ROWS
    rows, on _threads() threads (numkong releases the GIL); the threads are this call's and
    end with it."""
    import numkong

    def block(start: int) -> None:
        stop = min(start + SCAN_ROWS, len(codes))
        if weights is None:
            numkong.cdist(query, codes[start:stop], metric="dot", out=out[start:stop][None, :])
            return
        parts = np.asarray(numkong.cdist(query, codes[start:stop], metric="dot",
                                         out_dtype="float32"))
        out[start:stop] = weights.astype(np.float32) @ parts

    starts = range(0, len(codes), SCAN_ROWS)
    workers = min(_threads(), len(starts))
    if workers <= 1:
        for start in starts:
            block(start)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="autotag-scan") as pool:
        for done in [pool.submit(block, start) for start in starts]:
            done.result()  # raises a block's error here


def folder_of(store: Store) -> Path:
    return store.path.with_name(store.path.name + "-index")


def _stem(model: str) -> str:
    return "clips-" + hashlib.sha256(model.encode()).hexdigest()[:16]


def _crc32(*paths: Path) -> int:
    crc = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(CRC_CHUNK):
                crc = zlib.crc32(chunk, crc)
    return crc


@dataclass
class _Overlay:
    """The store's changes since the file was saved: ids to leave out of the scan, and the
    current records and vectors of those still tagged (ranked exactly)."""

    changed: set[int]
    records: dict[int, FileRecord]
    vectors: dict[int, np.ndarray]

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [m], float32 [m, dim]) of the changed clips still tagged."""
        ids = np.fromiter(self.vectors, np.int64, count=len(self.vectors))
        return ids, (np.stack([self.vectors[int(i)] for i in ids]) if len(ids)
                     else np.zeros((0, 0), np.float32))


class VectorIndex:
    """The clip embeddings of every file tagged with `model`, as int8 codes by file id."""

    def __init__(self, store: Store, model: str, manifest: Manifest, codes: np.ndarray,
                 ids: np.ndarray, quantiser: Quantiser, folder: Path,
                 clipped: np.ndarray) -> None:
        self.store, self.model, self.folder = store, model, folder
        self.manifest = manifest
        self._codes = codes  # int8 [n, dim], memory-mapped once saved
        self._clipped = clipped  # float32 [n]: Quantiser.clipping of each row
        self._ids = ids  # int64 [n], ascending: row → file id
        self._quantiser = quantiser
        self._seq = manifest.seq
        self._overlay = _Overlay(set(), {}, {})
        self._overlay_matrix: tuple[np.ndarray, np.ndarray] | None = None
        self._dead = np.zeros(len(ids), bool)  # rows whose file changed since the save

    # -- opening and building ------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, model: str, *, build: bool = True,
             progress: Callable[[int, int], None] | None = None) -> VectorIndex | None:
        """The index of this store and model, current with the store: the saved one if it is
        sound, else rebuilt (build=False: None instead). progress(done, total) while building."""
        folder = folder_of(store)
        loaded = cls._load(store, model, folder)
        if loaded is not None:
            try:
                loaded.refresh()
                return loaded
            except StaleIndex as exc:
                log.info("search index: %s; it is rebuilt from the store", exc)
        if not build:
            return None
        return cls.build(store, model, progress=progress)

    @classmethod
    def _load(cls, store: Store, model: str, folder: Path) -> VectorIndex | None:
        manifest = Manifest.read(folder / f"{_stem(model)}.json")
        if manifest is None:
            return None
        reason = _unsound(store, model, manifest, folder)
        if reason:
            log.warning("search index %s: %s; it is rebuilt from the store", folder, reason)
            return None
        try:
            codes, ids, quantiser, clipped = _read(folder, manifest)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("search index %s: unreadable (%s); it is rebuilt from the store",
                        folder, exc)
            return None
        return cls(store, model, manifest, codes, ids.astype(np.int64), quantiser, folder,
                   clipped.astype(np.float32))

    @classmethod
    def build(cls, store: Store, model: str, *,
              progress: Callable[[int, int], None] | None = None) -> VectorIndex:
        """Every stored clip embedding of `model` into new codes, saved and published. The
        embeddings are read BUILD_READ at a time, twice (the steps fitted on every clip, then
        the codes): a build never holds them all (a million clips' are 2 GB), only the codes it
        makes."""
        started = time.monotonic()
        seq = store.last_change()  # before reading: a change made meanwhile is applied later
        ids, codes, clipped, quantiser = _codes_of_store(store, model, progress)
        return cls._built(store, model, seq, ids, codes, clipped, quantiser, started)

    @classmethod
    def from_matrix(cls, store: Store, model: str, seq: int, ids: np.ndarray,
                    matrix: np.ndarray, *,
                    progress: Callable[[int, int], None] | None = None) -> VectorIndex:
        """An index of these clips (file ids int64 [n], float32 [n, dim], the store as it was
        at change `seq`), saved and published when the folder can be written; current with
        the store once returned."""
        started = time.monotonic()
        ids, codes, clipped, quantiser = _codes_of_matrix(ids, matrix, progress)
        return cls._built(store, model, seq, ids, codes, clipped, quantiser, started)

    @classmethod
    def _built(cls, store: Store, model: str, seq: int, ids: np.ndarray, codes: np.ndarray,
               clipped: np.ndarray, quantiser: Quantiser, started: float) -> VectorIndex:
        """A new index of these codes (rows sorted by file id), published when the folder can
        be written, current with the store once returned."""
        manifest = Manifest(FORMAT, model, _identity(store), seq, len(ids), len(ids),
                            codes.shape[1], "", "", 0, 0, time.time())
        index = cls(store, model, manifest, codes, ids, quantiser, folder_of(store), clipped)
        with contextlib.suppress(IndexUnavailable):
            index._publish(manifest)
        log.info("search index: %d clips built in %.1f s", len(ids), time.monotonic() - started)
        index.refresh()
        return index

    def _publish(self, manifest: Manifest) -> None:
        """Save the codes and the ids under new names, then point the manifest at them (the
        commit); the codes are memory-mapped from the saved file afterwards."""
        stem = _stem(self.model)
        name = f"{stem}-{time.time_ns():x}"
        try:
            codes, meta = _save(self.folder, name, self._codes, {
                "ids": self._ids, "mean": self._quantiser.mean, "step": self._quantiser.step,
                "clipped": self._clipped})
            size = codes.stat().st_size + meta.stat().st_size
            manifest = _replace(manifest, file=codes.name, meta=meta.name, bytes=size,
                                crc32=_crc32(codes, meta))
            write_atomic(self.folder / f"{stem}.json",
                         json.dumps(asdict(manifest), indent=1).encode())
            self._codes = np.load(codes, mmap_mode="r")
        except (OSError, AtomicWriteError) as exc:
            raise IndexUnavailable(f"cannot save the search index in {self.folder}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        self.manifest = manifest
        keep = {manifest.file, manifest.meta}
        for old in [*self.folder.glob(f"{stem}-*.npy"), *self.folder.glob(f"{stem}-*.npz")]:
            if old.name not in keep:  # a reader that maps it keeps its pages until it closes
                with contextlib.suppress(OSError):
                    old.unlink()

    # -- following the store ------------------------------------------------------------------

    def refresh(self) -> None:
        """Apply what changed in the store since the last refresh (any process's writes).
        Raises StaleIndex when the feed no longer reaches back to the file's seq."""
        latest, ids = self.store.changed_since(self._seq)
        if ids is None:
            raise StaleIndex(f"the store's change feed no longer reaches change {self._seq}")
        if not ids:
            self._seq = latest
            return
        records, matrix = self.store.clip_index_of(self.model, ids)
        overlay = self._overlay
        overlay.changed |= ids
        for file_id in ids:
            overlay.records.pop(file_id, None)
            overlay.vectors.pop(file_id, None)
        for record, vector in zip(records, matrix, strict=True):
            overlay.records[record.id] = record
            overlay.vectors[record.id] = np.array(vector, np.float32)
        self._dead[_rows_of(self._ids, np.fromiter(ids, np.int64, count=len(ids)))] = True
        self._overlay_matrix = None
        self._seq = latest

    def pending(self) -> int:
        """Changes held in memory, not yet in the file."""
        return len(self._overlay.changed)

    def sync(self, force: bool = False) -> bool:
        """Merge the overlay into a new file if it holds SYNC_AT changes (or force), under the
        folder's lock; False if another process holds the lock or nothing needed merging."""
        if not self._overlay.changed or (len(self._overlay.changed) < SYNC_AT and not force):
            return False
        with _locked(self.folder / f"{_stem(self.model)}.lock") as held:
            if not held:
                return False
            added = len(self._ids) + len(self._overlay.vectors) - self.manifest.built
            if added > REFIT_ADDED * max(self.manifest.built, 1):
                rebuilt = VectorIndex.build(self.store, self.model)
                self.__dict__.update(rebuilt.__dict__)
                return True
            self._merge()
        return True

    def _merge(self) -> None:
        """The file's rows less the changed ones, plus the overlay's clips quantised with the
        same steps, sorted by id, into a new file."""
        started = time.monotonic()
        overlay = self._overlay
        alive = ~self._dead
        new_ids, matrix = overlay.matrix()
        ids = np.concatenate([self._ids[alive], new_ids])
        codes = np.concatenate([np.asarray(self._codes[alive]),
                                self._quantiser.codes(matrix) if len(new_ids)
                                else np.zeros((0, self._codes.shape[1]), np.int8)])
        clipped = np.concatenate([self._clipped[alive], self._quantiser.clipping(matrix)
                                  if len(new_ids) else np.zeros(0, np.float32)])
        order = np.argsort(ids, kind="stable")
        self._ids, self._codes, self._clipped = ids[order], codes[order], clipped[order]
        manifest = _replace(self.manifest, seq=self._seq, count=len(ids))
        self._publish(manifest)
        self._overlay = _Overlay(set(), {}, {})
        self._overlay_matrix = None
        self._dead = np.zeros(len(self._ids), bool)
        log.info("search index: %d changes merged in %.1f s", len(overlay.changed),
                 time.monotonic() - started)

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Clips it ranks."""
        return int(len(self._ids) - self._dead.sum()) + len(self._overlay.vectors)

    def ranked(self, query: np.ndarray, k: int, keep: Callable[[FileRecord], bool] | None = None,
               among: np.ndarray | None = None) -> list[tuple[FileRecord, float]]:
        """The best `k` clips for query (float32 [dim]) by exact score (query · clip
        embedding, from the store), best first; `among` (file ids, int64, ascending) limits
        them to those files, `keep` filters the candidates' records."""
        query = np.asarray(query, np.float32)
        scored = self._overlay_ranked(query, k, keep, among)
        scored += self._scan_ranked(query, k, keep, among)
        scored.sort(key=lambda rs: -rs[1])
        return scored[:k]

    def _allowed(self, among: np.ndarray | None) -> np.ndarray | None:
        """bool [n] of the rows a query may return (None: every row not changed)."""
        if among is None:
            return None if not self._dead.any() else ~self._dead
        allowed = np.zeros(len(self._ids), bool)
        allowed[_rows_of(self._ids, among)] = True
        return allowed & ~self._dead

    def _scan_ranked(self, query: np.ndarray, k: int, keep, among) -> list[tuple[FileRecord,
                                                                               float]]:
        """Scan candidates, widened until k of them pass (or the rows run out), each scored
        exactly from the store's float32 clip embedding."""
        if not len(self._ids):
            return []
        allowed = self._allowed(among)
        rows = None  # scan every row; else only these
        if allowed is not None and allowed.sum() < SUBSET_SHARE * len(allowed):
            rows = np.flatnonzero(allowed)
        total = len(self._ids) if rows is None else len(rows)
        code = self._quantiser.query(query)
        want = max(CANDIDATES, 8 * k)
        while True:
            count = min(want, total, MAX_CANDIDATES)
            if not count:
                return []
            if rows is None:
                found = scan(self._codes, code, count)
                if allowed is not None:
                    found = found[allowed[found]]
            else:
                found = rows[scan(self._codes[rows], code, count)]
            scored = self._exact(query, self._ids[found], keep)
            if len(scored) >= k or count >= min(total, MAX_CANDIDATES):
                return scored
            want = count * 4

    def approximate(self, query: np.ndarray, sigmas: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(file ids int64 [m], float32 [m] scores, float32 [m] margins) of every clip it
        ranks: query · clip embedding estimated from the int8 codes, and how far the exact
        score may lie from it. A code's rounding errs by at most half a step a coordinate,
        uniformly: their sum over the coordinates is near-Gaussian with a spread this query
        fixes (|query × step| / √12), of which the margin takes `sigmas`; a clipped code's
        loss is bounded (Cauchy-Schwarz: |query × step| × Quantiser.clipping), and so is the
        query's own rounding. The changes held in memory are scored exactly (margin 0). What
        a count over the whole library needs without reading its float32 embeddings
        (LiveIndex.scores)."""
        query = np.asarray(query, np.float32)
        scores, margins = _code_scores(self._quantiser, self._codes, self._clipped, query, sigmas)
        alive = ~self._dead
        if self._overlay_matrix is None:
            self._overlay_matrix = self._overlay.matrix()
        ids, matrix = self._overlay_matrix
        exact = (matrix @ query).astype(np.float32) if len(ids) else np.zeros(0, np.float32)
        return (np.concatenate([self._ids[alive], ids]), np.concatenate([scores[alive], exact]),
                np.concatenate([margins[alive], np.zeros(len(ids), np.float32)]))

    def exact(self, query: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file ids int64 [m], float32 [m] scores) of those of these files still tagged:
        query · clip embedding read from the store."""
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        records, matrix = self.store.clip_index_of(self.model, set(np.asarray(ids).tolist()))
        found = np.fromiter((r.id for r in records), np.int64, count=len(records))
        return found, (matrix @ np.asarray(query, np.float32)).astype(np.float32)

    def _exact(self, query: np.ndarray, ids: np.ndarray, keep) -> list[tuple[FileRecord, float]]:
        if not len(ids):
            return []
        records, matrix = self.store.clip_index_of(self.model, set(ids.tolist()))
        return [(r, float(s)) for r, s in zip(records, matrix @ query, strict=True)
                if keep is None or keep(r)]

    def _overlay_ranked(self, query: np.ndarray, k: int, keep,
                        among) -> list[tuple[FileRecord, float]]:
        if self._overlay_matrix is None:
            self._overlay_matrix = self._overlay.matrix()
        ids, matrix = self._overlay_matrix
        if not len(ids):
            return []
        scores = matrix @ query
        if among is not None:
            at = np.minimum(np.searchsorted(among, ids), max(len(among) - 1, 0))
            inside = among[at] == ids if len(among) else np.zeros(len(ids), bool)
            scores = np.where(inside, scores, -np.inf)
        out = []
        for row in np.argsort(-scores, kind="stable"):
            if scores[row] == -np.inf:
                break
            record = self._overlay.records[int(ids[row])]
            if keep is None or keep(record):
                out.append((record, float(scores[row])))
                if len(out) == k:
                    break
        return out


@dataclass(frozen=True)
class Among:
    """A ranking limited to some files (a folder's, a tag's: file ids, int64, ascending; None:
    every file) and without others ("more like this" leaves out its own clip)."""

    index: VectorIndex
    ids: np.ndarray | None = None
    exclude: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return max(0, (len(self.index) if self.ids is None else len(self.ids))
                   - len(self.exclude))

    def ranked(self, query: np.ndarray, k: int) -> list[tuple[FileRecord, float]]:
        keep = (lambda r: r.id not in self.exclude) if self.exclude else None
        return self.index.ranked(query, k, keep=keep, among=self.ids)


def open_index(store: Store, model: str,
               progress: Callable[[int, int], None] | None = None) -> VectorIndex:
    """The one way to the search index of a store: the saved one, current with the store, or
    one built from the store (saved beside it when its folder can be written)."""
    index = VectorIndex.open(store, model, progress=progress)
    assert index is not None  # build=True: built when not sound
    return index


def keep_current(store: Store, model: str) -> bool:
    """Merge the store's changes into the saved index of this model, if there is one and they
    reached SYNC_AT (a writer's last step: `--once`, backfill, retag, a daemon stopping). A
    missing or unsound index is left to the next reader to build. True if merged."""
    index = VectorIndex.open(store, model, build=False)
    return index is not None and index.sync()


def _unsound(store: Store, model: str, manifest: Manifest, folder: Path) -> str | None:
    """Why the saved index cannot be used for this store (None: it can)."""
    if manifest.model != model:
        return "it was built for another model"
    if manifest.store != _identity(store):
        return "it was built from another state store"
    if manifest.seq > store.last_change():
        return "it is newer than the state store (a store restored from a backup?)"
    paths = (folder / manifest.file, folder / manifest.meta)
    try:
        size = sum(p.stat().st_size for p in paths)
    except OSError:
        return f"its file {manifest.file} is missing"
    if size != manifest.bytes:
        return f"its files are {size} bytes, not the {manifest.bytes} they were saved with"
    if _crc32(*paths) != manifest.crc32:
        return "its file's checksum is not the one it was saved with (a damaged disk?)"
    return None


def _identity(store: Store) -> int:
    try:
        return store.path.stat().st_ino
    except OSError:
        return 0


def _replace(manifest: Manifest, **changes) -> Manifest:
    return Manifest(**{**asdict(manifest), **changes})


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock file: yields False if another process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _codes_of_store(store: Store, model: str, progress: Callable[[int, int], None] | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Quantiser]:
    """(file ids, int8 codes, clipping, quantiser) of every stored clip embedding of `model`,
    rows sorted by file id: the embeddings read BUILD_READ at a time, twice (VectorIndex.build)."""
    rows_of: dict[str, list[int]] = {}
    for record in store.files("tagged"):
        rows_of.setdefault(record.sha256, []).append(record.id)  # copies share a vector
    ids = np.sort(np.fromiter((i for found in rows_of.values() for i in found), np.int64))
    found = next(store.clip_vectors(model, 1), None)
    dim = found[1].shape[1] if found is not None else 512
    quantiser = Quantiser.fit_chunks((m for _, m in store.clip_vectors(model, BUILD_READ)),
                                     dim)  # a first pass: the mean and spread of every clip
    codes = np.zeros((len(ids), dim), np.int8)
    clipped = np.zeros(len(ids), np.float32)
    stored = np.zeros(len(ids), bool)
    for hashes, matrix in store.clip_vectors(model, BUILD_READ):
        take, rows = [], []
        for k, sha256 in enumerate(hashes):
            for file_id in rows_of.get(sha256, ()):
                take.append(k)
                rows.append(file_id)
        at = np.searchsorted(ids, np.array(rows, np.int64))
        codes[at] = quantiser.codes(matrix[take])
        clipped[at] = quantiser.clipping(matrix[take])
        stored[at] = True
        if progress:
            progress(int(stored.sum()), len(ids))
    if not stored.all():  # files tagged with another model only
        ids, codes, clipped = ids[stored], codes[stored], clipped[stored]
    return ids, codes, clipped, quantiser


def _codes_of_matrix(ids: np.ndarray, matrix: np.ndarray,
                     progress: Callable[[int, int], None] | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Quantiser]:
    """(file ids, int8 codes, clipping, quantiser) of these clips, rows sorted by file id."""
    order = np.argsort(ids, kind="stable")
    ids = np.ascontiguousarray(ids[order])
    dim = matrix.shape[1] if matrix.ndim == 2 and matrix.shape[1] else 512
    quantiser = Quantiser.fit(matrix.reshape(-1, dim))
    codes = np.empty((len(ids), dim), np.int8)
    clipped = np.empty(len(ids), np.float32)
    for start in range(0, len(ids), BUILD_CHUNK):
        stop = min(start + BUILD_CHUNK, len(ids))
        rows = matrix[order[start:stop]]
        codes[start:stop] = quantiser.codes(rows)
        clipped[start:stop] = quantiser.clipping(rows)
        if progress:
            progress(stop, len(ids))
    return ids, codes, clipped, quantiser


def _save(folder: Path, name: str, codes: np.ndarray, meta: dict[str, np.ndarray]
          ) -> tuple[Path, Path]:
    """The codes (.npy) and the rest (.npz) under new names in `folder`, each written to a
    temporary file, synced and renamed: a reader of the old names is never disturbed."""
    codes_path, meta_path = folder / f"{name}.npy", folder / f"{name}.npz"
    folder.mkdir(parents=True, exist_ok=True)
    for path, write in ((codes_path, lambda f: np.save(f, codes)),
                        (meta_path, lambda f: np.savez(f, **meta))):
        temp = path.with_name(f".{path.name}.tmp")
        with open(temp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    return codes_path, meta_path


def _read(folder: Path, manifest: Manifest
          ) -> tuple[np.ndarray, np.ndarray, Quantiser, np.ndarray]:
    """(codes memory-mapped, file ids, quantiser, clipping) of a saved index; ValueError when
    its arrays are not the shapes its manifest says."""
    codes = np.load(folder / manifest.file, mmap_mode="r")
    with np.load(folder / manifest.meta) as meta:
        ids, quantiser = meta["ids"], Quantiser(meta["mean"], meta["step"])
        clipped = meta["clipped"]
    if codes.dtype != np.int8 or codes.shape != (manifest.count, manifest.dim) \
            or ids.shape != (manifest.count,) or clipped.shape != (manifest.count,):
        raise ValueError("its arrays are not the shape its manifest says")
    return codes, ids, quantiser, clipped


def _code_scores(quantiser: Quantiser, codes: np.ndarray, clipped: np.ndarray,
                 query: np.ndarray, sigmas: float) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n] scores, float32 [n] margins): query · each row's embedding estimated from
    its int8 code, and how far the exact score may lie from it (VectorIndex.approximate)."""
    query_codes, factors, offset = quantiser.query_scaled(query)
    scaled = query.astype(np.float64) * quantiser.step
    rest = scaled - (factors[:, None] * query_codes.astype(np.float64)).sum(axis=0)
    size = float(np.linalg.norm(scaled))
    scores = np.empty(len(codes), np.float32)
    if len(scores):
        _score_blocks(codes, query_codes, scores, factors)
        scores += np.float32(offset)
    fixed = sigmas * size / np.sqrt(12) + float(np.linalg.norm(rest)) * 127 * np.sqrt(
        len(scaled))
    return scores, (fixed + size * clipped.astype(np.float64)).astype(np.float32)


def _rows_of(held: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The rows of `held` (file ids, ascending) that hold these file ids (those it holds)."""
    if not len(held) or not len(ids):
        return np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(held, ids), len(held) - 1)
    return at[held[at] == ids]
