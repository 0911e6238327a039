"""A library kind (benchmarks.scale.data) → each candidate search index, in memory → build time,
bytes, query p50/p95 and recall@10 against exact search for text, short text and clip queries,
after the exact re-rank → a table (docs/design/search.md has the one that chose).

    python -m benchmarks.scale.candidates --clips 100000                 # recall and timing
    python -m benchmarks.scale.candidates --clips 1000000 --library clustered
    python -m benchmarks.scale.candidates --clips 100000 --no-timing     # recall only

Every candidate returns its candidates, re-ranked by the exact inner product as the product
does. Timing uses every core for a query when the candidate can (the product's scan, usearch's
exact scan), one thread otherwise; build on every core. FAISS's IVF and usearch (its exact scan,
the product's until issue 31's second part, and its graph, the one before) are measured when
they are installed (`pip install faiss-cpu usearch`; autotag needs neither).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.scale import data

TOP = 10
THREADS = len(os.sched_getaffinity(0))


def measure_one(name: str, build, search, vectors: np.ndarray, sets: dict, timing: bool
                ) -> dict:
    started = time.perf_counter()
    handle, size = build(vectors)
    built = time.perf_counter() - started
    out = {"name": name, "build_s": built, "bytes": size}
    times = []
    for kind, (queries, exact) in sets.items():
        found = []
        for q in queries:
            t = time.perf_counter()
            rows = np.asarray(search(handle, q), np.int64)
            rows = rows[rows >= 0]
            found.append(rows[np.argsort(-(vectors[rows] @ q), kind="stable")][:TOP])
            times.append(time.perf_counter() - t)
        out[f"recall_{kind}"] = data.recall(found, exact)
    if timing:
        ms = np.array(times) * 1000
        out.update(p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)))
    print(json.dumps(out), flush=True)
    return out


def int8_scan(candidates: int):
    """The chosen index (autotag.search.vectors): centred int8 codes, numkong's kernel on every
    core (vectors.scan)."""
    def build(vectors):
        from autotag.search.vectors import Quantiser

        quantiser = Quantiser.fit(vectors)
        codes = quantiser.codes(vectors)
        return (quantiser, codes), codes.nbytes

    def search(handle, q):
        from autotag.search.vectors import scan

        quantiser, codes = handle
        return scan(codes, quantiser.query(q), candidates)

    return build, search


def int8_usearch(candidates: int):
    """The same codes, usearch's exact search on every core (the product's scan before):
    ~160 ns a row whatever its bytes (`pip install usearch`)."""
    build, _ = int8_scan(candidates)

    def search(handle, q):
        from usearch.index import MetricKind, search

        quantiser, codes = handle
        return search(codes, quantiser.query(q), candidates, MetricKind.IP, exact=True,
                      threads=THREADS).keys

    return build, search


def binary_scan(candidates: int):
    """Signs of the centred vectors, Hamming distance to the query's signs (usearch, exact)."""
    def build(vectors):
        mean = vectors.mean(axis=0)
        return (mean, np.packbits(vectors > mean, axis=1)), len(vectors) * vectors.shape[1] // 8

    def search(handle, q):
        from usearch.index import MetricKind, search

        _, bits = handle
        return search(bits, np.packbits(q > 0), candidates, MetricKind.Hamming, exact=True,
                      threads=THREADS).keys

    return build, search


def usearch_hnsw(candidates: int = 100, expansion_search: int = 512):
    """The index autotag had: an HNSW graph of the float16 clip vectors, inner product."""
    def build(vectors):
        from usearch.index import Index

        index = Index(ndim=vectors.shape[1], metric="ip", dtype="f16", connectivity=16,
                      expansion_add=64, expansion_search=expansion_search)
        index.add(np.arange(len(vectors)), vectors, threads=THREADS)
        return index, index.memory_usage

    return build, lambda index, q: index.search(q, candidates, threads=1).keys


def f32_scan():
    """numpy's float32 matrix-vector product: exact, every embedding in memory."""
    return (lambda v: (v, v.nbytes),
            lambda v, q: np.argpartition(-(v @ q), TOP)[:TOP])


def faiss_ivf(nprobe: int, candidates: int = 200):
    def build(vectors):
        import faiss

        faiss.omp_set_num_threads(THREADS)
        nlist = int(4 * np.sqrt(len(vectors)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 40 * nlist),
                                                 replace=False)
        index.train(vectors[sample])
        index.add(vectors)
        index.nprobe = nprobe
        return index, vectors.nbytes

    return build, lambda index, q: index.search(q[None], candidates)[1][0]


def read_floor(codes: np.ndarray, runs: int = 20) -> float:
    """p50 ms of reading every byte of the codes once, on every core (numpy's OR-reduction of
    a uint64 view, a half a thread): no scan can take less than the memory takes to read."""
    from concurrent.futures import ThreadPoolExecutor

    words = codes.reshape(-1).view(np.uint64)
    halves = np.array_split(words, THREADS)
    times = []
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(runs):
            started = time.perf_counter()
            list(pool.map(np.bitwise_or.reduce, halves))
            times.append(time.perf_counter() - started)
    return float(np.percentile(np.array(times) * 1000, 50))


def candidates_to_run() -> list[tuple[str, tuple]]:
    return [("numpy f32 exact", f32_scan()),
            ("int8 centred scan, numkong, 200 re-ranked (chosen)", int8_scan(200)),
            ("int8 centred scan, numkong, 100 re-ranked", int8_scan(100)),
            ("int8 centred, usearch exact, 200 re-ranked (before)", int8_usearch(200)),
            ("binary centred Hamming, 3,000 re-ranked", binary_scan(3_000)),
            ("usearch HNSW f16 ip, ef 512, 100 re-ranked (before)", usearch_hnsw()),
            ("faiss IVFFlat ip, nprobe 64, 200 re-ranked", faiss_ivf(64))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.candidates",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--library", choices=data.LIBRARIES, action="append",
                        help="library kinds (repeat; default: all)")
    parser.add_argument("--only", action="append", metavar="WORD",
                        help="only candidates whose name holds WORD (repeat)")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="recall only (timing on a loaded machine means nothing)")
    args = parser.parse_args(argv)
    results = []
    for kind in args.library or data.LIBRARIES:
        vectors = data.library(kind, args.clips)
        if args.timing:
            from autotag.search.vectors import Quantiser

            codes = Quantiser.fit(vectors).codes(vectors)
            print(f"{kind}: reading the {codes.nbytes / 2**20:.0f} MB of int8 codes once, "
                  f"{THREADS} threads (the floor): {read_floor(codes):.1f} ms", flush=True)
            del codes
        sets = {}
        for query_kind in data.QUERIES:
            queries = data.queries(query_kind, kind, vectors, args.queries)
            sets[query_kind] = (queries, data.exact_top(vectors, queries, TOP))
        for name, (build, search) in candidates_to_run():
            if args.only and not any(w in name for w in args.only):
                continue
            try:
                results.append({"library": kind, "clips": args.clips,
                                **measure_one(name, build, search, vectors, sets, args.timing)})
            except ImportError as exc:
                print(f"{name}: not installed ({exc.name})", file=sys.stderr)
    print(f"\n{'library':10} {'':52} {'build s':>8} {'MB':>7} {'p50 ms':>7} {'p95 ms':>7}  "
          "recall@10 text / short / clip")
    for r in results:
        print(f"{r['library']:10} {r['name']:52} {r['build_s']:8.1f} {r['bytes'] / 2**20:7.0f} "
              f"{r.get('p50_ms', float('nan')):7.2f} {r.get('p95_ms', float('nan')):7.2f}  "
              f"{r['recall_text']:.3f} / {r['recall_short']:.3f} / {r['recall_clip']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
