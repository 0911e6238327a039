"""Clustered synthetic clip embeddings (benchmarks.scale.index's) → each candidate vector index,
in memory → build time, query p50/p95 and recall@10 after the exact re-rank → a table.

How the search index was chosen (docs/design/search-at-scale.md). Not part of `python -m
benchmarks.scale`: it needs what autotag does not install,

    .venv/bin/pip install faiss-cpu sqlite-vec apsw
    python -m benchmarks.scale.candidates --clips 200000

(apsw: Python's own sqlite3 module here is built without extension loading, which sqlite-vec
needs). Every candidate answers RERANK candidates, re-ranked by the exact inner product as the
product does; one thread per query, all cores to build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.scale import index as index_module
from benchmarks.scale.index import centres, clip_vectors, query_vectors

RERANK = 100  # vector_index.RERANK
TOP = 10
THREADS = len(os.sched_getaffinity(0))


def measure_one(name: str, build, search, data: np.ndarray, queries: np.ndarray,
                exact: np.ndarray) -> dict:
    started = time.perf_counter()
    handle = build(data)
    built = time.perf_counter() - started
    times, recalls = [], []
    for q, truth in zip(queries, exact, strict=True):
        t = time.perf_counter()
        ids = np.asarray(search(handle, q), np.int64)
        ids = ids[ids >= 0]
        top = ids[np.argsort(-(data[ids] @ q))[:TOP]]
        times.append(time.perf_counter() - t)
        recalls.append(len(set(top.tolist()) & set(truth.tolist())) / TOP)
    ms = np.array(times) * 1000
    out = {"name": name, "build_s": built, "p50_ms": float(np.percentile(ms, 50)),
           "p95_ms": float(np.percentile(ms, 95)), "recall@10": float(np.mean(recalls))}
    print(json.dumps(out), flush=True)
    return out


def usearch_candidate(dtype: str, expansion_add: int):
    def build(data):
        from usearch.index import Index

        index = Index(ndim=data.shape[1], metric="cos" if dtype == "i8" else "ip", dtype=dtype,
                      connectivity=16, expansion_add=expansion_add, expansion_search=256)
        index.add(np.arange(len(data)), data, threads=THREADS)
        return index

    return build, lambda index, q: index.search(q, RERANK, threads=1).keys


def faiss_hnsw():
    def build(data):
        import faiss

        faiss.omp_set_num_threads(THREADS)
        index = faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        index.add(data)
        index.hnsw.efSearch = 256
        faiss.omp_set_num_threads(1)
        return index

    return build, lambda index, q: index.search(q[None], RERANK)[1][0]


def faiss_ivf(nprobe: int):
    def build(data):
        import faiss

        faiss.omp_set_num_threads(THREADS)
        nlist = int(4 * np.sqrt(len(data)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(data.shape[1]), data.shape[1], nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(data), min(len(data), 40 * nlist),
                                                 replace=False)
        index.train(data[sample])
        index.add(data)
        index.nprobe = nprobe
        faiss.omp_set_num_threads(1)
        return index

    return build, lambda index, q: index.search(q[None], RERANK)[1][0]


def sqlite_vec(folder: Path):
    def build(data):
        import apsw
        import sqlite_vec as vec

        db = apsw.Connection(str(folder / "vec.sqlite3"))
        db.enable_load_extension(True)
        db.load_extension(vec.loadable_path())
        db.execute(f"CREATE VIRTUAL TABLE v USING vec0(e float[{data.shape[1]}] "
                   "distance_metric=cosine)")
        with db:
            db.executemany("INSERT INTO v(rowid, e) VALUES (?, ?)",
                           ((i, data[i].tobytes()) for i in range(len(data))))
        return db

    def search(db, q):
        return [r[0] for r in db.execute("SELECT rowid FROM v WHERE e MATCH ? AND k = ?",
                                         (q.tobytes(), RERANK))]

    return build, search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.candidates",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--centres", type=int, default=400,
                        help="activities (default 400: 500 clips each at 200,000, as a million "
                             "clips have at benchmarks.scale.index's 2,000)")
    args = parser.parse_args(argv)
    index_module.CENTRES = args.centres  # centres() and query_vectors() read it
    rng = np.random.default_rng(0)
    data = clip_vectors(rng, args.clips, centres()).mean(axis=1)
    queries = query_vectors(args.queries)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :TOP]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("numpy brute force (today)", lambda d: d,
                 lambda d, q: np.argpartition(-(d @ q), RERANK)[:RERANK]),
                ("usearch HNSW int8 cos, ef_add 64", *usearch_candidate("i8", 64)),
                ("usearch HNSW int8 cos, ef_add 128", *usearch_candidate("i8", 128)),
                ("usearch HNSW f16 ip, ef_add 64 (chosen)", *usearch_candidate("f16", 64)),
                ("faiss HNSWFlat ip, ef_add 64", *faiss_hnsw()),
                ("faiss IVFFlat ip, nprobe 16", *faiss_ivf(16)),
                ("faiss IVFFlat ip, nprobe 64", *faiss_ivf(64)),
                ("sqlite-vec vec0 (exact, cosine)", *sqlite_vec(Path(tmp)))]
        for name, build, search in runs:
            try:
                results.append(measure_one(name, build, search, data, queries, exact))
            except ImportError as exc:
                print(f"{name}: not installed ({exc.name})", file=sys.stderr)
    print(f"\n{'':44}  {'build s':>8}  {'p50 ms':>7}  {'p95 ms':>7}  recall@10")
    for r in results:
        print(f"{r['name']:44}  {r['build_s']:8.1f}  {r['p50_ms']:7.2f}  {r['p95_ms']:7.2f}  "
              f"{r['recall@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
