"""The on-disk vector index: exact scores, recall against exact search, kept current with the
store (tagged, moved, forgotten), merged, and rebuilt when missing, stale or corrupt."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from autotag.clip import Embedded, SourceInfo, Window
from autotag.search import Index, search
from autotag.search import vectors as vector_index
from autotag.search.vectors import VectorIndex, folder_of
from autotag.store import Store

DIM = 64
MODEL = "m"


def add_clip(store: Store, path: Path, vector: np.ndarray, sha256: str,
             model: str = MODEL) -> None:
    """A tagged clip whose file is there as it was tagged (search shows only fresh clips)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    os.utime(path, (1.0, 1.0))
    source = SourceInfo(path, 10, 1.0, sha256)
    windows = np.stack([vector, vector]).astype(np.float32)  # their mean is the vector
    store.save_embedded(Embedded(source, 6.4, (Window(0, 3.2), Window(3.2, 6.4)), windows,
                                 np.zeros((0, 1, 1, 3), np.uint8)), model)
    store.record_tagged(source, model, "v")


@pytest.fixture
def library(tmp_path):
    """A store of 1,500 clips in 30 clusters, norms varying (MIL-NCE's are not normalised)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, DIM)).astype(np.float32)
    vectors = (centres[rng.integers(0, 30, 1500)] + 0.6 * rng.normal(size=(1500, DIM))) * \
        rng.lognormal(0, 0.3, size=(1500, 1))
    store = Store(tmp_path / "state.sqlite3")
    for i, v in enumerate(vectors.astype(np.float32)):
        add_clip(store, tmp_path / f"c{i:05d}.mp4", v, f"{i:064x}")
    yield store, vectors.astype(np.float32), Queries(rng, centres)
    store.close()


class Queries:
    """Queries as text is to video: near one activity's clips (a query near none ranks by norm
    alone, README: Search at scale)."""

    def __init__(self, rng: np.random.Generator, centres: np.ndarray) -> None:
        self.rng, self.centres = rng, centres

    def normal(self, size: int) -> np.ndarray:
        centre = self.centres[self.rng.integers(0, len(self.centres))]
        return (centre + 0.8 * self.rng.normal(size=size)).astype(np.float32)


def exact_top(store: Store, query: np.ndarray, k: int) -> list[Path]:
    return [r.path for r, _ in Index.load(store, MODEL).ranked(query, k)]


def near_exact(found: list[Path], store: Store, query: np.ndarray) -> bool:
    """The approximate top k holds nearly all of the exact top k (a graph built on two threads
    is not the same graph twice: one miss in a run is allowed; the recall test measures it)."""
    exact = exact_top(store, query, len(found))
    return len(set(found) & set(exact)) >= len(exact) - 1


def test_scores_are_exact_and_recall_at_10_reaches_the_target(library):
    store, vectors, rng = library
    index = VectorIndex.open(store, MODEL)
    recalls = []
    for _ in range(30):
        query = rng.normal(DIM)
        got = index.ranked(query, 10)
        for record, score in got:  # the store's float32 embedding, not the int8 codes'
            row = int(record.path.stem[1:])
            assert score == pytest.approx(float(vectors[row] @ query), rel=1e-5)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        recalls.append(len({r.path for r, _ in got} & set(exact_top(store, query, 10))) / 10)
    assert np.mean(recalls) >= 0.98


def test_recall_at_10_for_text_like_queries_across_the_modality_gap(library):
    """Queries carrying an offset no clip has (a text embedding's side of the modality gap),
    whole or short (half an activity + the offset), through the store-backed index."""
    store, _, rng = library
    index = VectorIndex.open(store, MODEL)
    gap = (1.5 * np.random.default_rng(9).normal(size=DIM)).astype(np.float32)
    recalls = []
    for _ in range(20):
        centre = rng.centres[rng.rng.integers(0, len(rng.centres))]
        for query in (centre + gap + 0.3 * rng.rng.normal(size=DIM), 0.5 * centre + gap):
            query = query.astype(np.float32)
            got = {r.path for r, _ in index.ranked(query, 10)}
            recalls.append(len(got & set(exact_top(store, query, 10))) / 10)
    assert np.mean(recalls) >= 0.98


def test_the_index_is_saved_beside_the_store_and_opened_without_a_rebuild(library, monkeypatch):
    store, _, rng = library
    VectorIndex.open(store, MODEL)
    manifest = json.loads(next(folder_of(store).glob("*.json")).read_text())
    assert manifest["count"] == 1500 and (folder_of(store) / manifest["file"]).is_file()
    monkeypatch.setattr(VectorIndex, "build", classmethod(lambda *a, **k: pytest.fail("rebuilt")))
    query = rng.normal(DIM)
    assert near_exact([r.path for r, _ in VectorIndex.open(store, MODEL).ranked(query, 5)],
                      store, query)


def test_clips_tagged_moved_and_forgotten_after_the_save_are_found_moved_and_gone(
        library, tmp_path):
    store, vectors, _ = library
    VectorIndex.open(store, MODEL)
    query = vectors[7] / np.linalg.norm(vectors[7])
    strong = (vectors[7] * 5).astype(np.float32)  # outranks every stored clip for this query
    add_clip(store, tmp_path / "new.mp4", strong, "f" * 64)
    store.forget(tmp_path / "c00007.mp4")  # the best match so far
    old = store.file(tmp_path / "c00008.mp4")
    store.forget(old.path)  # moved: the same content at another path
    add_clip(store, tmp_path / "moved" / "c00008.mp4", vectors[8], old.sha256)
    for index in (VectorIndex.open(store, MODEL), _synced(store)):
        top = [r.path for r, _ in index.ranked(query, 1500)]
        assert top[0] == tmp_path / "new.mp4"
        assert tmp_path / "c00007.mp4" not in top and tmp_path / "c00008.mp4" not in top
        assert tmp_path / "moved" / "c00008.mp4" in top
        assert near_exact(top[:10], store, query)


def _synced(store: Store) -> VectorIndex:
    index = VectorIndex.open(store, MODEL)
    assert index.pending() > 0 and index.sync(force=True)
    reopened = VectorIndex.open(store, MODEL)
    assert reopened.pending() == 0  # the changes are in the file now
    return reopened


def test_a_large_overlay_is_merged_by_the_process_that_sees_it(library, tmp_path, monkeypatch):
    store, vectors, _ = library
    VectorIndex.open(store, MODEL)
    monkeypatch.setattr(vector_index, "SYNC_AT", 3)
    for i in range(3):
        add_clip(store, tmp_path / f"n{i}.mp4", vectors[i], f"{i:063x}e")
    index = VectorIndex.open(store, MODEL)
    assert index.sync() and VectorIndex.open(store, MODEL).pending() == 0
    assert len(list(folder_of(store).glob("*.npy"))) == 1  # the old file is removed


def test_a_merge_skips_while_another_process_holds_the_lock(library, tmp_path):
    store, vectors, _ = library
    index = VectorIndex.open(store, MODEL)
    add_clip(store, tmp_path / "n.mp4", vectors[0], "e" * 64)
    index.refresh()
    with vector_index._locked(folder_of(store) / f"{vector_index._stem(MODEL)}.lock") as held:
        assert held
        assert not index.sync(force=True)
    assert index.sync(force=True)


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "other store",
                                    "trimmed feed", "garbage manifest"])
def test_a_missing_stale_or_corrupt_index_is_rebuilt_from_the_store(library, damage, caplog,
                                                                     monkeypatch):
    store, _, rng = library
    VectorIndex.open(store, MODEL)
    folder = folder_of(store)
    manifest_path = next(folder.glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    graph = folder / manifest["file"]
    if damage == "missing":
        graph.unlink()
    elif damage == "truncated":
        graph.write_bytes(graph.read_bytes()[:-100])
    elif damage == "flipped":
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif damage == "other store":
        manifest_path.write_text(json.dumps({**manifest, "store": manifest["store"] + 1}))
    elif damage == "trimmed feed":
        real, asked = Store.changed_since, []
        # the feed kept no change as old as the file's (CHANGES_KEPT): the first ask says so
        monkeypatch.setattr(Store, "changed_since", lambda self, seq: (
            (seq, None) if not asked and not asked.append(seq) else real(self, seq)))
    else:
        manifest_path.write_text("{not json")
    builds = []
    real_build = VectorIndex.build.__func__
    monkeypatch.setattr(VectorIndex, "build", classmethod(
        lambda cls, *a, **k: builds.append(1) or real_build(cls, *a, **k)))
    with caplog.at_level(logging.INFO, logger="autotag.search.vectors"):
        index = VectorIndex.open(store, MODEL)
    assert builds == [1]
    query = rng.normal(DIM)
    assert near_exact([r.path for r, _ in index.ranked(query, 10)], store, query)
    if damage not in ("missing", "garbage manifest"):
        assert "it is rebuilt from the store" in caplog.text


def test_an_unwritable_state_folder_still_searches(library, monkeypatch):
    store, _, rng = library

    def refuse(self, manifest):
        raise vector_index.IndexUnavailable("read-only")

    monkeypatch.setattr(VectorIndex, "_publish", refuse)
    index = VectorIndex.open(store, MODEL)
    query = rng.normal(DIM)
    hits, stale = search(index, store, MODEL, query, 3, 0.0, fresh=lambda r: True)
    assert near_exact([h.record.path for h in hits], store, query) and stale == 0


def test_an_empty_store_gives_an_empty_index(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    try:
        index = VectorIndex.open(store, MODEL)
        assert len(index) == 0 and index.ranked(np.ones(DIM, np.float32), 5) == []
        add_clip(store, tmp_path / "a.mp4", np.ones(DIM, np.float32), "a" * 64)
        index.refresh()
        assert [r.path.name for r, _ in index.ranked(np.ones(DIM, np.float32), 5)] == ["a.mp4"]
    finally:
        store.close()


def test_the_live_index_ranks_every_query_through_the_one_index_and_follows_the_store(
        library, tmp_path, monkeypatch):
    """The web app's index opens (or builds and saves) the one search index, ranks unfiltered,
    folder-filtered and "more like this" queries through it, finds a clip tagged after it
    opened, and holds no float32 copy of the embeddings (it once held every one: 2 GB at a
    million clips; it used to rank below 50,000 clips and filtered queries from that copy)."""
    from autotag.config import TaggingConfig
    from autotag.search.live import Filter, LiveIndex
    from autotag.vocabulary import Vocabulary

    store, _, rng = library
    vocabulary = Vocabulary((), np.zeros((0, DIM), np.float32), "v")
    live = LiveIndex(store, MODEL, vocabulary, TaggingConfig(min_score=0.0))
    assert VectorIndex.open(store, MODEL, build=False) is not None  # built and saved
    limits = []
    real = VectorIndex.ranked
    monkeypatch.setattr(VectorIndex, "ranked", lambda self, q, k, keep=None, among=None: (
        limits.append(among) or real(self, q, k, keep, among)))
    query = rng.normal(DIM)
    hits, _ = live.search(query, 5)
    assert limits and near_exact([h.record.path for h in hits], store, query)
    add_clip(store, tmp_path / "late.mp4", (query * 50).astype(np.float32), "d" * 64)
    hits, _ = live.search(query, 5)
    assert hits[0].record.path == tmp_path / "late.mp4"
    limits.clear()
    (hit, *_), _ = live.search(query, 5, Filter(folders=(tmp_path,), exclude=(hits[0].record.id,)))
    assert limits and limits[0] is not None  # through the index, limited to the folder's ids
    assert hit.record.path == exact_top(store, query, 2)[1]
    add_clip(store, tmp_path / "sub" / "only.mp4", -query, "c" * 64)  # the worst match there is
    hits, _ = live.search(query, 5, Filter(folders=(tmp_path / "sub",)))
    assert [h.record.path for h in hits] == [tmp_path / "sub" / "only.mp4"]
    held = [v for v in vars(live).values() if isinstance(v, np.ndarray) and v.ndim == 2
            and v.shape[1] == DIM]
    assert not held
    live.close()


def test_the_live_index_merges_in_a_thread_while_queries_go_on(library, tmp_path, monkeypatch):
    """Past SYNC_AT changes the live index's file is merged by a thread of its own: a query
    meanwhile is answered at once (the held changes ranked exactly), and once the merge is
    done the live index ranks from the new file, nothing held."""
    import threading

    from autotag.config import TaggingConfig
    from autotag.search.live import LiveIndex
    from autotag.vocabulary import Vocabulary

    store, _, rng = library
    live = LiveIndex(store, MODEL, Vocabulary((), np.zeros((0, DIM), np.float32), "v"),
                     TaggingConfig(min_score=0.0))
    monkeypatch.setattr(vector_index, "SYNC_AT", 3)
    release, merging = threading.Event(), threading.Event()
    real = VectorIndex._merge

    def slow_merge(self):
        merging.set()
        assert release.wait(30)
        real(self)

    monkeypatch.setattr(VectorIndex, "_merge", slow_merge)
    query = rng.normal(DIM)
    for i in range(3):
        add_clip(store, tmp_path / f"new{i}.mp4", (query * (40 + i)).astype(np.float32),
                 f"e{i}" * 32)
    hits, _ = live.search(query, 3)  # meets 3 changes: the merge starts in its thread
    assert merging.wait(30)
    merger = live._merger
    hits, _ = live.search(query, 3)  # answered while the merge waits
    assert [h.record.path.name for h in hits] == ["new2.mp4", "new1.mp4", "new0.mp4"]
    seq = vector_index.Manifest.read(next(folder_of(store).glob("*.json"))).seq
    release.set()
    merger.join(30)
    hits, _ = live.search(query, 3)
    assert live._vectors.pending() == 0
    assert vector_index.Manifest.read(next(folder_of(store).glob("*.json"))).seq > seq
    assert [h.record.path.name for h in hits] == ["new2.mp4", "new1.mp4", "new0.mp4"]
    live.close()


def test_a_writer_merges_its_changes_into_the_saved_index_when_it_closes(
        tmp_path, model_dir, embedder, monkeypatch):
    """--once (and backfill, retag, the daemon stopping) close their app: what they tagged is
    in the index's file afterwards, not left for the next search to merge."""
    from autotag.app import open_app
    from autotag.config import load_config
    from tests.helpers import write_config

    monkeypatch.setattr(vector_index, "SYNC_AT", 1)
    config = load_config(write_config(tmp_path, model_dir))
    app = open_app(config, embedder=embedder)
    model = embedder.fingerprint
    VectorIndex.open(app.store, model)  # the first search built it
    add_clip(app.store, tmp_path / "a.mp4", np.ones(512, np.float32), "a" * 64, model)
    app.close()
    store = Store(config.state.store_path)
    try:
        index = VectorIndex.open(store, model, build=False)
        assert index.pending() == 0 and len(index) == 1
    finally:
        store.close()


def test_a_preview_s_scores_are_exact_near_its_threshold_without_reading_every_embedding(
        library, monkeypatch):
    """LiveIndex.scores (the teach preview's): for thresholds across the library's scores, the
    count of clips reaching it and the clips on either side of it are exact search's, and the
    float32 embeddings read from the store are those of a sample and the band around the
    threshold, never the whole library's (2 GB at a million clips)."""
    from autotag.config import TaggingConfig
    from autotag.search.live import LiveIndex
    from autotag.vocabulary import Vocabulary

    store, vectors, rng = library
    live = LiveIndex(store, MODEL, Vocabulary((), np.zeros((0, DIM), np.float32), "v"),
                     TaggingConfig(min_score=0.0))
    everything = Index.load(store, MODEL)  # exact search's, read before the store is watched
    paths = [r.path for r in everything.records]
    read: list[int] = []
    real = Store.clip_index_of
    monkeypatch.setattr(Store, "clip_index_of", lambda self, model, ids: (
        read.append(len(ids)) or real(self, model, ids)))
    monkeypatch.setattr(Store, "clip_index", lambda *a: pytest.fail("read every embedding"))
    monkeypatch.setattr(Store, "clip_rows", lambda *a: pytest.fail("read every embedding"))
    for _ in range(3):
        query = rng.normal(DIM)
        exact = dict(zip(paths, (everything.matrix @ query).tolist(), strict=True))
        ordered = sorted(exact.values())
        for threshold in (ordered[len(ordered) // 2], ordered[-10], ordered[-200]):
            read.clear()
            records, scores = live.scores(query, threshold)
            got = dict(zip((r.path for r in records), scores.tolist(), strict=True))
            assert sum(s >= threshold for s in got.values()) == \
                sum(s >= threshold for s in exact.values())
            edge = sorted(exact, key=lambda p: abs(exact[p] - threshold))[:20]
            assert all(abs(got[p] - exact[p]) < 1e-3 * (1 + abs(exact[p])) for p in edge)
            assert 0 < sum(read) < len(vectors)
    live.close()


def _chunks_read(monkeypatch) -> list[int]:
    """The sizes of the chunks store.clip_vectors hands out from now on (a list filled as they
    are read); reading every embedding at once (clip_index, clip_rows) fails the test."""
    chunks: list[int] = []
    real = Store.clip_vectors
    monkeypatch.setattr(Store, "clip_vectors", lambda self, model, batch: (
        (chunks.append(len(h)) or (h, m)) for h, m in real(self, model, batch)))
    monkeypatch.setattr(Store, "clip_index", lambda *a: pytest.fail("read every embedding"))
    monkeypatch.setattr(Store, "clip_rows", lambda *a: pytest.fail("read every embedding"))
    return chunks


def test_the_live_index_loads_without_holding_every_embedding(library, monkeypatch):
    """With the index saved, the web app's index reads the embeddings a chunk at a time for
    its tag scores (store.clip_vectors) and never all at once (clip_index / clip_rows: 2 GB
    at a million clips); its tag scores are each clip's exact clip scores."""
    from autotag.config import TaggingConfig
    from autotag.search import live as live_module
    from autotag.search.live import LiveIndex
    from autotag.vocabulary import Vocabulary

    store, _, rng = library
    VectorIndex.open(store, MODEL)  # saved beside the store
    everything = Index.load(store, MODEL)
    tags = np.stack([rng.normal(DIM) for _ in range(3)])
    vocabulary = Vocabulary((), tags, "v")
    monkeypatch.setattr(live_module, "RELOAD_CHUNK", 200)
    chunks = _chunks_read(monkeypatch)
    live = LiveIndex(store, MODEL, vocabulary, TaggingConfig(min_score=0.0))
    assert chunks and max(chunks) <= 200 and sum(chunks) == len(everything)
    snap = live.snapshot()
    assert [r.path for r in snap.records] == [r.path for r in everything.records]
    assert np.allclose(snap.scores, everything.matrix @ tags.T, atol=1e-4)
    live.close()


def test_a_build_reads_the_embeddings_a_chunk_at_a_time_and_codes_them_as_from_a_matrix(
        library, monkeypatch):
    """VectorIndex.build never holds every embedding (clip_rows / clip_index: 2 GB at a million
    clips): it fits the steps on store.clip_vectors' chunks, then codes them in a second pass,
    giving the codes an index built from the whole matrix gives."""
    store, _, _ = library
    everything = Index.load(store, MODEL)
    ids = np.array([r.id for r in everything.records], np.int64)
    expected = VectorIndex.from_matrix(store, MODEL, store.last_change(), ids, everything.matrix)
    monkeypatch.setattr(vector_index, "BUILD_READ", 256)
    chunks = _chunks_read(monkeypatch)
    built = VectorIndex.build(store, MODEL)
    assert chunks and max(chunks) <= 256 and sum(chunks) == 2 * len(ids) + 1  # fit, codes
    assert np.array_equal(built._ids, expected._ids)
    assert np.allclose(built._quantiser.mean, expected._quantiser.mean, atol=1e-5)
    assert np.allclose(built._quantiser.step, expected._quantiser.step, rtol=1e-5)
    # the same codes, but for a value within float rounding of a half step
    apart = np.abs(np.asarray(built._codes, np.int16) - np.asarray(expected._codes, np.int16))
    assert apart.max() <= 1 and (apart == 0).mean() > 0.9999
