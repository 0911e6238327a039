"""A library kind + a query kind → synthetic clip embeddings float32 [n, 512] and queries float32
[count, 512] shaped like a joint video-text space's: what search indexes are measured on.

Libraries (LIBRARIES):
  - iid: independent Gaussian vectors, no shared part, no clusters (no near neighbours at all:
    the case a graph index answers worst);
  - shared: the same with a large "video" component every clip carries and norms that vary
    (MIL-NCE's video embeddings are neither centred nor normalised);
  - clustered: the shared component + one of CENTRES activities + noise, norms varying.

Queries (QUERIES):
  - text: an activity's centre + the "text" offset every text embedding carries (the modality
    gap: Liang et al., Mind the Gap, NeurIPS 2022) + a little noise;
  - short: half a centre + the offset (a one-word query says less than a clip shows);
  - clip: a library clip's own embedding ("more like this": in distribution).
On the iid and shared libraries a "centre" is a random direction (there are no activities).
"""

from __future__ import annotations

import numpy as np

DIM = 512
CENTRES = 400  # activities (2,500 clips each at a million)
SHARED = 2.0  # the video component's spread per coordinate (its norm ~45; a centre's ~23)
NOISE = 1.2  # a clip's spread around its activity, per coordinate
NORM_SIGMA = 0.25  # log-normal spread of the clips' norms
GAP = 1.5  # the text offset's spread per coordinate (its norm ~34)
QUERY_NOISE = 0.5
LIBRARIES = ("iid", "shared", "clustered")
QUERIES = ("text", "short", "clip")


def _shared() -> np.ndarray:
    return (SHARED * np.random.default_rng(101).standard_normal(DIM)).astype(np.float32)


def _gap() -> np.ndarray:
    return (GAP * np.random.default_rng(202).standard_normal(DIM)).astype(np.float32)


def centres(count: int = CENTRES) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((count, DIM), dtype=np.float32)


def library(kind: str, n: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """float32 [n, DIM] clip embeddings of one LIBRARIES kind (made in chunks: a million is
    2 GB, not 6)."""
    if kind not in LIBRARIES:
        raise ValueError(f"library kind {kind!r}: one of {', '.join(LIBRARIES)}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    at = centres()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = rng.standard_normal((m, DIM), dtype=np.float32)
        if kind == "iid":
            out[start:start + m] = noise
            continue
        rows = _shared() + NOISE * noise
        if kind == "clustered":
            rows += at[rng.integers(0, len(at), m)]
        rows *= rng.lognormal(0, NORM_SIGMA, (m, 1)).astype(np.float32)
        out[start:start + m] = rows
    return out


def queries(kind: str, library_kind: str, data: np.ndarray, count: int,
            seed: int = 5) -> np.ndarray:
    """float32 [count, DIM] queries of one QUERIES kind for a library of `library_kind`."""
    if kind not in QUERIES:
        raise ValueError(f"query kind {kind!r}: one of {', '.join(QUERIES)}")
    rng = np.random.default_rng(seed)
    if kind == "clip":
        return data[rng.integers(0, len(data), count)].copy()
    at = centres() if library_kind == "clustered" else \
        rng.standard_normal((count, DIM), dtype=np.float32)
    picked = at[rng.integers(0, len(at), count)]
    if kind == "short":
        return (0.5 * picked + _gap()).astype(np.float32)
    return (picked + _gap() + QUERY_NOISE * rng.standard_normal((count, DIM), dtype=np.float32)
            ).astype(np.float32)


def exact_top(data: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000
              ) -> np.ndarray:
    """int [count, k]: each query's exact top k rows by inner product, best first (in chunks
    of rows: a million rows × 100 queries is not held at once)."""
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start in range(0, len(data), chunk):
        scores = queries @ data[start:start + chunk].T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(best_rows, order, axis=1)


def recall(found: np.ndarray | list, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k found."""
    return float(np.mean([len(set(np.asarray(f).tolist()) & set(e.tolist())) / len(e)
                          for f, e in zip(found, exact, strict=True)]))
