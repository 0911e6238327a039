"""The search index's ranking against exact search, on libraries shaped like a joint video-text
space: a large component every clip shares, clustered activities, varying norms; and on
independent vectors. Queries are text-like (the modality gap's offset: they sit apart from
every clip), short text-like (half a centre plus the offset) and clips ("more like this").

The scan and re-rank are the product's (vectors.Quantiser, vectors.scan, vectors.CANDIDATES),
on arrays: the store's part (reading the candidates' float32 rows) is test_vector_index's."""

from __future__ import annotations

import numpy as np
import pytest

from autotag.search.vectors import CANDIDATES, Quantiser, scan
from benchmarks.scale import data

CLIPS = 30_000
QUERIES = 40
TOP = 10


@pytest.fixture(scope="module", params=data.LIBRARIES)
def library(request):
    vectors = data.library(request.param, CLIPS, seed=1)
    quantiser = Quantiser.fit(vectors)
    return request.param, vectors, quantiser, quantiser.codes(vectors)


def searched(vectors: np.ndarray, quantiser: Quantiser, codes: np.ndarray,
             query: np.ndarray) -> np.ndarray:
    """The index's top TOP rows: the scan's CANDIDATES, re-ranked by the float32 score."""
    found = scan(codes, quantiser.query(query), CANDIDATES)
    return found[np.argsort(-(vectors[found] @ query), kind="stable")][:TOP]


@pytest.mark.parametrize("kind", data.QUERIES)
def test_recall_at_10_against_exact_search_reaches_0_98(library, kind):
    name, vectors, quantiser, codes = library
    queries = data.queries(kind, name, vectors, QUERIES)
    exact = data.exact_top(vectors, queries, TOP)
    found = [searched(vectors, quantiser, codes, q) for q in queries]
    assert data.recall(found, exact) >= 0.98, (name, kind)


def test_the_codes_are_centred_on_the_shared_component():
    """The component every clip shares is taken out before rounding: the codes spend their
    range on what tells clips apart (uncentred, a coordinate's codes would sit near one value)."""
    vectors = data.library("clustered", 5_000, seed=2)
    quantiser = Quantiser.fit(vectors)
    assert np.allclose(quantiser.mean, vectors.mean(axis=0), atol=1e-3)
    codes = quantiser.codes(vectors).astype(np.float32)
    assert abs(codes.mean()) < 1.0 and codes.std() > 15  # ~127 / CLIP_SD spread, centred


def test_a_text_query_ranks_apart_from_the_clips_on_the_right_side():
    """The modality gap as the test data has it: text queries score every clip far less alike
    than clips score each other (they sit apart), and yet their exact top 10 is found."""
    vectors = data.library("clustered", 10_000, seed=3)
    text = data.queries("text", "clustered", vectors, 5)
    clips = data.queries("clip", "clustered", vectors, 5)
    centre = vectors.mean(axis=0)
    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert max(cos(q, centre) for q in text) < 0.5 < min(cos(q, centre) for q in clips)
    quantiser = Quantiser.fit(vectors)
    codes = quantiser.codes(vectors)
    exact = data.exact_top(vectors, text, TOP)
    found = [searched(vectors, quantiser, codes, q) for q in text]
    assert data.recall(found, exact) == 1.0


@pytest.mark.parametrize("rows", [1, 7, 1_000, 2_500])
def test_the_scan_returns_the_rows_with_the_largest_integer_dot_products_best_first(
        monkeypatch, rows):
    """vectors.scan scores every row in blocks (SCAN_ROWS, here 256, so 2,500 rows are 10
    blocks on both cores): its rows are exactly numpy's top by the int32 dot product, in order,
    and no scan thread outlives the call."""
    import threading

    from autotag.search import vectors as vectors_module

    monkeypatch.setattr(vectors_module, "SCAN_ROWS", 256)
    rng = np.random.default_rng(rows)
    codes = rng.integers(-127, 128, (rows, 512), dtype=np.int8)
    query = rng.integers(-127, 128, 512, dtype=np.int8)
    exact = codes.astype(np.int32) @ query.astype(np.int32)
    for count in (1, 50, rows, rows + 10):
        found = scan(codes, query, count)
        assert len(found) == min(count, rows)
        assert np.array_equal(exact[found], np.sort(exact)[::-1][:len(found)])
    assert not [t for t in threading.enumerate() if t.name.startswith("autotag-scan")]


def test_the_scan_of_memory_mapped_codes_is_the_scan_of_the_same_codes_in_memory(tmp_path):
    """The index's codes are a memory-mapped .npy file: the kernel reads them in place."""
    codes = np.random.default_rng(4).integers(-127, 128, (3_000, 512), dtype=np.int8)
    np.save(tmp_path / "codes.npy", codes)
    mapped = np.load(tmp_path / "codes.npy", mmap_mode="r")
    query = codes[17]
    assert np.array_equal(scan(mapped, query, 100), scan(codes, query, 100))


@pytest.mark.parametrize("kind", data.QUERIES)
def test_a_score_from_a_code_lies_within_its_margin_of_the_exact_score(tmp_path, kind):
    """VectorIndex.approximate (the teach preview's scores): on the shared library, whose
    clips' norms vary enough that some codes clip at ±127, every clip's exact score lies
    within the margin its code gives (7 σ of the rounding + the clipping's bound), and the
    clipped codes are the ones whose margin grew."""
    from autotag.search.vectors import VectorIndex
    from autotag.store import Store

    vectors = data.library("shared", 20_000, seed=6)
    store = Store(tmp_path / "state.sqlite3")
    index = VectorIndex.from_matrix(store, "m", 0, np.arange(1, len(vectors) + 1), vectors)
    clipped = index._quantiser.clipping(vectors)
    assert (clipped > 0).any() and (clipped == 0).mean() > 0.5
    for query in data.queries(kind, "shared", vectors, 10):
        ids, approx, margins = index.approximate(query, 7.0)
        exact = vectors[ids - 1] @ query
        assert (np.abs(approx - exact) <= margins).all()
        assert np.median(np.abs(approx - exact)) < 0.2 * np.median(margins)
    store.close()
