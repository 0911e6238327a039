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
