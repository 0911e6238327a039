"""Store's clip embeddings → an on-disk HNSW graph (usearch, float16, memory-mapped) + the changes
since it was saved (exact, in memory) → candidates → re-ranked exactly from the store.

The index is a cache of the store, never the truth: it lives beside the store
(`state.sqlite3-index/`), one file per model, and is rebuilt from the store whenever it is
missing, stale (another store, a change feed trimmed past it) or corrupt (its size or CRC-32 is
not the one its manifest recorded, or usearch cannot read it). A reader opens it in
milliseconds: the graph is memory-mapped (usearch `view`), and the files tagged, moved or
forgotten since it was saved are read from the store's change feed (`changed_since`) into a
small exact overlay; those ids are left out of the graph's answers. Once the overlay holds more
than SYNC_AT changes, the process that sees it (under a lock file, one at a time) merges it into
a new file: removed ids out, changed ones in, written beside the old one and published by
rewriting the manifest atomically (a reader holding the old file keeps reading it).

Why usearch's HNSW (docs/design/search-at-scale.md has the figures of `python -m benchmarks.scale`
and `benchmarks.scale.candidates`): it builds a million clips in minutes on two cores, keeps
recall@10 at 0.98+ after the exact re-rank, answers in milliseconds, and its file is mapped, not
loaded. FAISS's IVF lists matched it on clustered vectors (faster, a third of the build) but
lost recall on unclustered ones (0.89-0.93), and need a partition trained on the library as it
was; sqlite-vec is exact only.

The graph ranks by the inner product itself (usearch's "ip" on float16 vectors), as the clip
score is query · clip embedding and MIL-NCE's embeddings are not normalised; its candidates are
re-ranked by that score in float32, from the store. A cosine graph of int8 vectors (half the
file, faster to build) was tried: where an activity has more clips than the re-rank takes (500
a centre, a million clips), its candidates are the best-aligned, not the longest, and recall@10
fell to 0.3; the MIPS-to-cosine reduction (an extra coordinate bringing every norm to the
largest) crowds every vector into a narrow cone around that axis and lost more still.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autotag.atomic import AtomicWriteError, write_atomic
from autotag.errors import AutotagError
from autotag.store import FileRecord, Store

log = logging.getLogger(__name__)

FORMAT = 2  # the manifest's and file's layout; another one is rebuilt (1: int8, cosine)
CONNECTIVITY = 16  # HNSW's M: edges per node (usearch's default)
EXPANSION_ADD = 64  # efConstruction: candidates kept while linking a node (128: the same
# recall, 1.3-2x the build time; 32: recall@10 0.96, benchmarks.scale)
EXPANSION_SEARCH = 512  # ef: candidates kept while walking the graph for a query (a million
# clips: recall@10 0.96 at 256, 0.99 at 512, 0.994 at 1,024 for twice the time)
RERANK = 100  # graph candidates re-ranked exactly per query (at least 4 × what is asked)
MAX_CANDIDATES = 20_000  # a query widened past this many (most of them stale) stops there
SYNC_AT = 2_000  # changes held in memory before they are merged into a new file
REBUILD_REMOVED = 0.25  # share of removed entries (kept by usearch, marked) that asks a rebuild
BUILD_CHUNK = 20_000  # clips added to the graph per step (progress, and Ctrl-C between steps)
CRC_CHUNK = 64 * 2**20  # bytes checksummed per read


class IndexUnavailable(AutotagError):
    """The index cannot be read or written here (a read-only state folder, usearch missing)."""


@dataclass(frozen=True)
class Manifest:
    """What the index file holds and how to check it; JSON beside it."""

    format: int
    model: str
    store: int  # the store file's inode: a store deleted and made again is another store
    seq: int  # the store's last change merged into the file
    count: int  # entries in the graph (removed ones included)
    removed: int  # entries removed since the build (still in the file, marked)
    dim: int  # the clip embedding's size
    file: str  # the graph's file name, in the same folder
    bytes: int
    crc32: int
    built: float  # time.time() of the last full build

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data) if data.get("format") == FORMAT else None
        except (OSError, ValueError, TypeError):
            return None


def folder_of(store: Store) -> Path:
    return store.path.with_name(store.path.name + "-index")


def _stem(model: str) -> str:
    return "clips-" + hashlib.sha256(model.encode()).hexdigest()[:16]


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _tune(graph):
    graph.expansion_add, graph.expansion_search = EXPANSION_ADD, EXPANSION_SEARCH
    return graph


def _graph(dim: int):
    from usearch.index import Index

    return Index(ndim=dim, metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


@dataclass
class _Overlay:
    """The store's changes since the file was saved: ids to leave out of the graph's answers,
    and the current records and vectors of those still tagged (ranked exactly)."""

    changed: set[int]
    records: dict[int, FileRecord]
    vectors: dict[int, np.ndarray]

    def matrix(self) -> tuple[list[int], np.ndarray]:
        ids = list(self.vectors)
        return ids, (np.stack([self.vectors[i] for i in ids]) if ids
                     else np.zeros((0, 0), np.float32))


class VectorIndex:
    """The clip embeddings of every file tagged with `model`, as an HNSW graph over file ids."""

    def __init__(self, store: Store, model: str, manifest: Manifest, graph, folder: Path) -> None:
        self.store, self.model, self.folder = store, model, folder
        self.manifest, self._graph = manifest, graph
        self._seq = manifest.seq
        self._overlay = _Overlay(set(), {}, {})
        self._overlay_matrix: tuple[list[int], np.ndarray] | None = None

    # -- opening and building ------------------------------------------------------------------

    @classmethod
    def open(cls, store: Store, model: str, *, build: bool = True,
             progress: Callable[[int, int], None] | None = None) -> VectorIndex | None:
        """The index of this store and model, current with the store: the saved one if it is
        sound, else rebuilt (build=False: None instead). progress(done, total) while building.
        Raises IndexUnavailable when the folder cannot be written to build it."""
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
        stem = _stem(model)
        manifest = Manifest.read(folder / f"{stem}.json")
        if manifest is None:
            return None
        reason = _unsound(store, model, manifest, folder)
        if reason:
            log.warning("search index %s: %s; it is rebuilt from the store", folder, reason)
            return None
        from usearch.index import Index

        try:
            graph = Index.restore(str(folder / manifest.file), view=True)
        except Exception as exc:  # noqa: BLE001 - usearch raises RuntimeError, ValueError, ...
            log.warning("search index %s: unreadable (%s); it is rebuilt from the store",
                        folder, exc)
            return None
        _tune(graph)  # a saved graph comes back with usearch's defaults (ef 64: recall 0.85)
        if graph.ndim != manifest.dim:
            log.warning("search index %s: not built for %d-dimensional embeddings; it is "
                        "rebuilt from the store", folder, manifest.dim)
            return None
        return cls(store, model, manifest, graph, folder)

    @classmethod
    def build(cls, store: Store, model: str, *,
              progress: Callable[[int, int], None] | None = None) -> VectorIndex:
        """Every stored clip embedding of `model` into a new graph, saved and published."""
        started = time.monotonic()
        folder = folder_of(store)
        seq = store.last_change()  # before reading: a change made meanwhile is applied later
        rows, matrix = store.clip_rows(model)
        ids = np.fromiter((r[10] for r in rows), np.uint64, count=len(rows))
        del rows
        dim = matrix.shape[1] if len(matrix) else 512
        graph = _graph(dim)
        for start in range(0, len(ids), BUILD_CHUNK):
            stop = min(start + BUILD_CHUNK, len(ids))
            graph.add(ids[start:stop], matrix[start:stop], threads=_threads())
            if progress:
                progress(stop, len(ids))
        del matrix
        manifest = Manifest(FORMAT, model, _identity(store), seq, len(ids), 0, dim, "", 0, 0,
                            time.time())
        index = cls(store, model, manifest, graph, folder)
        with contextlib.suppress(IndexUnavailable):
            index._publish(graph, manifest)
        log.info("search index: %d clips built in %.1f s", len(ids), time.monotonic() - started)
        index.refresh()
        return index

    def _publish(self, graph, manifest: Manifest) -> None:
        """Save the graph under a new name, then point the manifest at it (the commit)."""
        stem = _stem(self.model)
        name = f"{stem}-{time.time_ns():x}.usearch"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = self.folder / f".{name}.tmp"
            graph.save(str(temp))
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(temp, self.folder / name)
            size = (self.folder / name).stat().st_size
            manifest = _replace(manifest, file=name, bytes=size, crc32=_crc32(self.folder / name))
            write_atomic(self.folder / f"{stem}.json",
                         json.dumps(asdict(manifest), indent=1).encode())
        except (OSError, AtomicWriteError, RuntimeError) as exc:
            raise IndexUnavailable(f"cannot save the search index in {self.folder}: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        self.manifest = manifest
        for old in self.folder.glob(f"{stem}-*.usearch"):
            if old.name != name:  # a reader that maps it keeps its pages until it closes
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
            removed = self.manifest.removed + len(self._overlay.changed)
            if removed > REBUILD_REMOVED * max(self.manifest.count, 1):
                rebuilt = VectorIndex.build(self.store, self.model)
                self.__dict__.update(rebuilt.__dict__)
                return True
            self._merge()
        return True

    def _merge(self) -> None:
        started = time.monotonic()
        from usearch.index import Index

        graph = _tune(Index.restore(str(self.folder / self.manifest.file), view=False))
        overlay = self._overlay
        present = [i for i in overlay.changed if graph.contains(i)]
        if present:
            graph.remove(np.array(present, np.uint64))
        ids, matrix = overlay.matrix()
        if ids:
            graph.add(np.array(ids, np.uint64), matrix, threads=_threads())
        manifest = _replace(self.manifest, seq=self._seq, count=len(graph),
                            removed=self.manifest.removed + len(present))
        self._publish(graph, manifest)
        self._graph = graph
        self._overlay = _Overlay(set(), {}, {})
        self._overlay_matrix = None
        log.info("search index: %d changes merged in %.1f s", len(overlay.changed),
                 time.monotonic() - started)

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Clips it ranks (an estimate while changes are held: removed ones may be counted)."""
        base = len(self._graph) - len(self._overlay.changed)
        return max(0, base) + len(self._overlay.vectors)

    def ranked(self, query: np.ndarray, k: int,
               keep: Callable[[FileRecord], bool] | None = None) -> list[tuple[FileRecord, float]]:
        """The best `k` clips for query (float32 [dim]) by exact score (query · clip
        embedding, from the store), best first; `keep` filters the candidates."""
        query = np.asarray(query, np.float32)
        scored = self._overlay_ranked(query, k, keep)
        scored += self._graph_ranked(query, k, keep)
        scored.sort(key=lambda rs: -rs[1])
        return scored[:k]

    def _graph_ranked(self, query: np.ndarray, k: int, keep) -> list[tuple[FileRecord, float]]:
        """Graph candidates, widened until k of them pass (or the graph is exhausted), each
        scored exactly from the store's float32 clip embedding."""
        total = len(self._graph)
        want = max(RERANK, 4 * k)
        changed = self._overlay.changed
        while True:
            count = min(want, total, MAX_CANDIDATES)
            if not count:
                return []
            found = self._graph.search(query, count, threads=1)
            ids = {int(i) for i in found.keys if int(i) not in changed}
            records, matrix = self.store.clip_index_of(self.model, ids) if ids else ([], None)
            scored = [] if matrix is None else [
                (r, float(s)) for r, s in zip(records, matrix @ query, strict=True)
                if keep is None or keep(r)]
            if len(scored) >= k or count >= min(total, MAX_CANDIDATES):
                return scored
            want = count * 4

    def _overlay_ranked(self, query: np.ndarray, k: int, keep) -> list[tuple[FileRecord, float]]:
        if self._overlay_matrix is None:
            self._overlay_matrix = self._overlay.matrix()
        ids, matrix = self._overlay_matrix
        if not ids:
            return []
        scores = matrix @ query
        order = np.argsort(-scores, kind="stable")
        out = []
        for row in order:
            record = self._overlay.records[ids[row]]
            if keep is None or keep(record):
                out.append((record, float(scores[row])))
                if len(out) == k:
                    break
        return out


def keep_current(store: Store, model: str) -> bool:
    """Merge the store's changes into the saved index of this model, if there is one and they
    reached SYNC_AT (a writer's last step: `--once`, backfill, retag, a daemon stopping). A
    missing or unsound index is left to the next reader to build. True if merged."""
    index = VectorIndex.open(store, model, build=False)
    return index is not None and index.sync()


class StaleIndex(Exception):
    """The store's change feed no longer reaches back to the index's last change."""


def _unsound(store: Store, model: str, manifest: Manifest, folder: Path) -> str | None:
    """Why the saved index cannot be used for this store (None: it can)."""
    if manifest.model != model:
        return "it was built for another model"
    if manifest.store != _identity(store):
        return "it was built from another state store"
    if manifest.seq > store.last_change():
        return "it is newer than the state store (a store restored from a backup?)"
    path = folder / manifest.file
    try:
        size = path.stat().st_size
    except OSError:
        return f"its file {manifest.file} is missing"
    if size != manifest.bytes:
        return f"its file is {size} bytes, not the {manifest.bytes} it was saved with"
    if _crc32(path) != manifest.crc32:
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
