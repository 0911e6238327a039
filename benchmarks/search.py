"""Synthetic state store (N clips × 8 windows × 512 float32) → load → query → retag → a table.

Search and retag at library scale, without a model: embeddings are random (their values do not
change the cost), so this runs in about a minute for 100,000 clips on 2 cores.

    python -m benchmarks.search                 # 100,000 clips, retag of 1,000
    python -m benchmarks.search --clips 20000   # smaller

Measured, side by side in one run:
  - loading the index (every clip embedding) from the store, and its memory;
  - one query: ranking every clip (matrix-vector product + partial sort), then the top 10's best
    segments read back from the store; median of QUERIES queries;
  - retag per clip (scores + sidecar + log line), against writing the same sidecar bytes with
    the same atomic write (temp file, fsync, rename): "disk speed" is that ratio near 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from autotag.atomic import write_atomic
from autotag.clip import Embedded, SourceInfo, Window
from autotag.config import parse_config
from autotag.outputs import build_outputs
from autotag.retagging import retag, stored_clips
from autotag.search import Index, search
from autotag.store import Store
from autotag.tagging import Tagger
from autotag.vocabulary import Vocabulary, vocabulary_fingerprint

DIM = 512
WINDOWS = 8  # per clip, sampling.max_windows' default
QUERIES = 20
TOP = 10
TAGS = 12  # the example config's vocabulary size
MODEL = "synthetic"
RESULTS = Path(__file__).parent / "results"


def build_store(folder: Path, clips: int, files: int) -> Store:
    """A store with `clips` embedded clips; the first `files` also exist on disk (for retag)."""
    rng = np.random.default_rng(0)
    store = Store(folder / "state.sqlite3")
    windows = tuple(Window(i * 3.2, i * 3.2 + 3.2) for i in range(WINDOWS))
    no_thumbs = np.zeros((0, 1, 1, 3), np.uint8)
    media = folder / "media"
    media.mkdir()
    for i in range(clips):
        path = media / f"clip{i:06d}.mp4"
        if i < files:
            path.write_bytes(b"x")
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime
        else:
            size, mtime = 1, 0.0
        source = SourceInfo(path, size, mtime, f"{i:064x}")
        embeddings = rng.standard_normal((WINDOWS, DIM), dtype=np.float32)
        store.save_embedded(Embedded(source, WINDOWS * 3.2, windows, embeddings, no_thumbs), MODEL)
        store.record_tagged(source, MODEL, "old")
    return store


def time_queries(store: Store, index: Index) -> tuple[float, float]:
    """Median seconds of (ranking alone, a whole search of the top 10 incl. their segments)."""
    rng = np.random.default_rng(1)
    rank, whole = [], []
    for _ in range(QUERIES):
        query = rng.standard_normal(DIM, dtype=np.float32)
        started = time.perf_counter()
        index.ranked(query, TOP)
        rank.append(time.perf_counter() - started)
        started = time.perf_counter()
        hits, _ = search(index, store, MODEL, query, TOP, 0.0, fresh=lambda r: True)
        whole.append(time.perf_counter() - started)
        assert len(hits) == TOP
    return statistics.median(rank), statistics.median(whole)


def time_retag(folder: Path, store: Store, files: int) -> tuple[float, float]:
    """Seconds per clip: retag (sidecar + log line), and the same sidecars' bare atomic writes."""
    config = parse_config(
        "vocabulary: [" + ", ".join(f"tag{i}" for i in range(TAGS)) + "]\n"
        "outputs: {previews: null, log: matches.jsonl}\n", base=folder)
    vectors = np.random.default_rng(2).standard_normal((TAGS, DIM), dtype=np.float32)
    vocabulary = Vocabulary(config.vocabulary, vectors,
                            vocabulary_fingerprint(config.vocabulary, MODEL))
    tagger = Tagger(config, vocabulary, build_outputs(config), store, MODEL)
    records = [r for r in stored_clips(store, MODEL) if r.mtime][:files]
    started = time.perf_counter()
    results = list(retag(tagger, store, records))  # a generator: the work is in consuming it
    per_clip = (time.perf_counter() - started) / len(records)
    assert {r.status for r in results} == {"reused"}, {r.reason for r in results}
    sidecars = [Path(f"{r.path}.autotag.json") for r in records]
    payloads = [p.read_bytes() for p in sidecars]
    bare = folder / "bare"
    bare.mkdir()
    started = time.perf_counter()
    for i, data in enumerate(payloads):
        write_atomic(bare / f"{i}.json", data)
    return per_clip, (time.perf_counter() - started) / len(records)


def run(clips: int, files: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="autotag-bench-search-"))
    try:
        started = time.perf_counter()
        store = build_store(folder, clips, files)
        built = time.perf_counter() - started
        started = time.perf_counter()
        index = Index.load(store, MODEL)
        loaded = time.perf_counter() - started
        rank, whole = time_queries(store, index)
        retag_s, disk_s = time_retag(folder, store, files)
        store.close()
        return {"clips": clips, "build_s": built, "load_s": loaded,
                "index_mb": index.matrix.nbytes / 2**20, "rank_ms": rank * 1e3,
                "query_ms": whole * 1e3, "retag_clips": files, "retag_ms": retag_s * 1e3,
                "disk_ms": disk_s * 1e3, "retag_ratio": retag_s / disk_s}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(r: dict) -> str:
    met = "met" if r["query_ms"] < 100 else "NOT met"
    return "\n".join([
        f"| search and retag, {r['clips']:,} clips × {WINDOWS} windows | figure |",
        "|---|---|",
        f"| load the index from the store | {r['load_s']:.2f} s ({r['index_mb']:.0f} MB) |",
        f"| rank every clip for one query (median of {QUERIES}) | {r['rank_ms']:.1f} ms |",
        (f"| whole query: rank + top {TOP} best segments | {r['query_ms']:.1f} ms "
         f"(target < 100 ms: {met}) |"),
        (f"| retag per clip: scores, sidecar, log line ({r['retag_clips']:,} clips) "
         f"| {r['retag_ms']:.2f} ms |"),
        f"| the same sidecars' atomic writes alone (disk speed) | {r['disk_ms']:.2f} ms |",
        f"| retag ÷ disk speed | {r['retag_ratio']:.2f} |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--retag", type=int, default=1_000, help="clips retagged (with files)")
    args = parser.parse_args(argv)
    result = run(args.clips, min(args.retag, args.clips))
    text = table(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search.md").write_text(text + "\n")
    (RESULTS / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
