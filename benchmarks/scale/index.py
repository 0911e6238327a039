"""Synthetic store (N clips, clustered embeddings, cached) → today's brute force and the vector
index, each in a child process → build time, query p50/p95, recall@10, memory → `autotag search`'s
whole time, this checkout and --before's.

    python -m benchmarks.scale.index                           # 100,000 and 1,000,000 clips
    python -m benchmarks.scale.index --clips 100000 --before /tmp/scale-before

The embeddings are benchmarks.scale.data's (--library: clustered by default, a large shared
"video" component + one of its activities + noise, norms varying as MIL-NCE's do); the queries
are its text queries (an activity + the text offset of the modality gap), short text queries
and clips ("more like this"), recall reported for each. Each clip has WINDOWS windows whose
mean is its clip embedding (the window count changes only the top hits' segment read). The media are empty files with the mtimes the store
records, so the top hits are fresh. No model is loaded: model.handle is an empty directory and
the query's text embedding is in the text-embedding cache (benchmarks.serve.fill_text_cache).

Measured, each in its own process (its memory is VmHWM, the peak):
  - brute force, today's search (search.Index.load: every clip embedding into one matrix, then
    one matrix-vector product and a partial sort per query): load time, query p50/p95;
  - the search index: its first build from the store, then a process that opens it (mapped) and
    runs the same queries through VectorIndex.ranked (the int8 scan, then the exact re-rank
    from the store): open time, query p50/p95, recall@10 against the brute force's top 10;
  - `autotag search --json --top 10 QUERY` as a user runs it (benchmarks.serve.Command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.scale import data
from benchmarks.serve import (
    Command,
    build_media,
    checkout_env,
    clip_path,
    command,
    fill_text_cache,
    schema_by,
    time_commands,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
SIZES = (100_000, 1_000_000)
QUICK_SIZES = (3_000,)
DIM = 512
WINDOWS = 2
QUERIES = 100  # of each kind (data.QUERIES)
TOP = 10
BATCH = 5_000  # clips per transaction while filling
MTIME0 = 1_700_000_000

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from autotag.store import Store
store_path, model, mode, queries_path, TOP = sys.argv[1:5] + [int(sys.argv[5])]
queries = np.load(queries_path)
store = Store(Path(store_path))
started = time.perf_counter()
if mode == "brute":
    from autotag.search import Index
    index = Index.load(store, model)
    rank = lambda q: index.ranked(q, TOP)
elif mode == "build":
    from autotag.search.vectors import VectorIndex
    index = VectorIndex.build(store, model)
    rank = lambda q: index.ranked(q, TOP)
else:
    from autotag.search.vectors import VectorIndex
    index = VectorIndex.open(store, model, build=False)
    assert index is not None, "no sound index to open"
    rank = lambda q: index.ranked(q, TOP)
opened = time.perf_counter() - started
times, tops = [], []
for q in queries:
    t = time.perf_counter()
    found = rank(q)
    times.append(time.perf_counter() - t)
    tops.append([r.id for r, _ in found])
print(json.dumps({"open_s": opened, "query_s": times, "tops": tops,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# -- the synthetic library ------------------------------------------------------------------------

LIBRARY = "clustered"  # benchmarks.scale.data's kind (--library)
WINDOW_SPREAD = 0.3  # a window's offset from its clip embedding, per coordinate


def use_library(kind: str) -> None:
    """Draw the stores and queries from this kind of library (the store cache keys on it)."""
    global LIBRARY
    LIBRARY = kind


def clip_vectors(rng: np.random.Generator, clips: np.ndarray) -> np.ndarray:
    """float32 [n, WINDOWS, DIM]: each clip's windows, spread around its clip embedding (their
    mean is the clip embedding: the first half of the windows + d, the second - d)."""
    spread = WINDOW_SPREAD * rng.standard_normal((len(clips), WINDOWS // 2, DIM),
                                                 dtype=np.float32)
    return np.concatenate([clips[:, None, :] + spread, clips[:, None, :] - spread], axis=1)


def query_sets(count: int = QUERIES) -> dict[str, np.ndarray]:
    """Each of data.QUERIES kinds: float32 [count, DIM] (clip queries drawn from the library's
    first BATCH clips, which are the same at every size)."""
    first = data.library(LIBRARY, BATCH)
    return {kind: data.queries(kind, LIBRARY, first, count) for kind in data.QUERIES}


def fill(path: Path, media: Path, clips: int, model: str) -> None:
    """`clips` tagged clips into the empty store at `path`: their embeddings, then file rows
    (the vectors table is filled by the store's own trigger)."""
    rng = np.random.default_rng(1)
    windows = json.dumps([[i * 3.2, (i + 1) * 3.2] for i in range(WINDOWS)])
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")  # a scratch file until it is renamed in place
        db.execute("PRAGMA synchronous = OFF")
        for start in range(0, clips, BATCH):
            n = min(BATCH, clips - start)
            means = data.library(LIBRARY, n, seed=start // BATCH)
            embeddings = clip_vectors(rng, means)
            db.execute("BEGIN")
            for j in range(n):
                i = start + j
                sha = hashlib.sha256(f"clip {i}".encode()).hexdigest()
                db.execute("INSERT INTO clips (sha256, model, duration, windows, embeddings, "
                           "clip_embedding, dim) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (sha, model, WINDOWS * 3.2, windows, embeddings[j].tobytes(),
                            means[j].tobytes(), DIM))
                db.execute("INSERT INTO files (path, size, mtime, sha256, status, attempts, "
                           "model, vocabulary, updated) VALUES (?, 0, ?, ?, 'tagged', 0, ?, "
                           "'v', ?)", (str(clip_path(media, i)), float(MTIME0 + i), sha, model,
                                       float(MTIME0 + i + 60)))
            db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()


def cached_store(checkout: Path, clips: int, media: Path, model: str, cache: Path) -> Path:
    """The store of `clips` clips in `checkout`'s schema, built once under `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="scale-build-", dir=cache)) / "state.sqlite3"
    try:
        key = hashlib.sha256(f"{schema_by(checkout, fresh)} {model} {WINDOWS} {LIBRARY} "
                             f"{data.CENTRES} {data.SHARED} {data.NOISE} {data.GAP}"
                             .encode()).hexdigest()[:12]
        path = cache / f"scale-store-{clips}-{key}.sqlite3"
        if not path.exists():
            fill(fresh, media, clips, model)
            fresh.replace(path)
        return path
    finally:
        shutil.rmtree(fresh.parent, ignore_errors=True)


def model_of(handle: Path) -> str:
    from autotag.config import ModelConfig
    from autotag.model import LazyEmbedder

    return LazyEmbedder.from_config(ModelConfig(handle=str(handle))).fingerprint


# -- measuring ------------------------------------------------------------------------------------

def child(store: Path, model: str, mode: str, queries: Path) -> dict:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", CHILD, str(store), model, mode,
                               str(queries), str(TOP)], capture_output=True, text=True, cwd=cwd,
                              env=checkout_env(ROOT), check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.splitlines()[-1])
    times = np.array(out.pop("query_s")) * 1000
    out.update(p50_ms=float(np.percentile(times, 50)), p95_ms=float(np.percentile(times, 95)))
    return out


def recall(found: list[list[int]], exact: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact,
                                                                        strict=True)]))


def at_size(clips: int, folder: Path, cache: Path, before: Path | None, say) -> dict:
    handle = cache / "scale-model"  # a fixed path: the fingerprint, and so the cached store
    handle.mkdir(parents=True, exist_ok=True)
    model = model_of(handle)
    media, _ = build_media(cache, clips)
    say(f"{clips:,} clips: store (cached after the first run)")
    source = cached_store(ROOT, clips, media, model, cache)
    store = folder / f"after-{clips}" / "state.sqlite3"
    store.parent.mkdir()
    os.link(source, store)  # read only here: a hard link, not a copy of gigabytes
    queries = folder / "queries.npy"
    sets = query_sets()
    np.save(queries, np.concatenate(list(sets.values())))
    say(f"{clips:,} clips: brute force")
    brute = child(store, model, "brute", queries)
    say(f"{clips:,} clips: building the index")
    built = child(store, model, "build", queries)
    say(f"{clips:,} clips: the index, opened")
    opened = child(store, model, "open", queries)
    index_bytes = sum(f.stat().st_size for f in store.parent.glob("*-index/*.np[yz]"))
    result = {
        "clips": clips,
        "brute": {k: brute[k] for k in ("open_s", "p50_ms", "p95_ms", "peak_mb")},
        "build": {"seconds": built["open_s"], "peak_mb": built["peak_mb"],
                  "bytes": index_bytes, "recall@10": recall(built["tops"], brute["tops"])},
        "index": {**{k: opened[k] for k in ("open_s", "p50_ms", "p95_ms", "peak_mb")},
                  "recall@10": recall(opened["tops"], brute["tops"]),
                  **{f"recall@10 {kind}": recall(opened["tops"][i * QUERIES:(i + 1) * QUERIES],
                                                 brute["tops"][i * QUERIES:(i + 1) * QUERIES])
                     for i, kind in enumerate(sets)}},
    }
    result["cli"] = cli_times(clips, folder, cache, before, handle, model, media, store, say)
    return result


def cli_times(clips: int, folder: Path, cache: Path, before: Path | None, handle: Path,
              model: str, media: Path, store: Path, say) -> dict:
    """`autotag search` start to printed result, this checkout and (100,000 clips or fewer)
    `before`'s, on their own stores of the same clips."""
    home = folder / "home"
    env = dict(os.environ, XDG_CACHE_HOME=str(home / "cache"),
               XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"))
    query = "someone skateboarding"
    fill_text_cache(home / "cache", model, [query])
    commands: list[Command] = [command("after", ROOT, _config(folder, "after", handle, store),
                                       env, folder, query)]
    if before is not None and clips <= SIZES[0]:
        say(f"{clips:,} clips: the store in {before}'s schema")
        theirs = folder / f"before-{clips}" / "state.sqlite3"
        theirs.parent.mkdir()
        os.link(cached_store(before, clips, media, model, cache), theirs)
        commands.append(command("before", before, _config(folder, "before", handle, theirs),
                                env, folder, query))
    say(f"{clips:,} clips: autotag search, {len(commands)} checkout(s)")
    return time_commands(commands)


def _config(folder: Path, name: str, handle: Path, store: Path) -> Path:
    import yaml

    path = folder / f"config-{name}.yaml"
    path.write_text(yaml.safe_dump({"model": {"handle": str(handle)},
                                    "state": {"path": str(store)},
                                    "vocabulary": ["someone skateboarding"]}))
    return path


# -- the run --------------------------------------------------------------------------------------

def measure(quick: bool = False, before: Path | None = None, sizes: tuple[int, ...] = (),
            cache: Path = CACHE, say=print) -> dict:
    """Figures for benchmarks.scale: {"rows": [...], "notes": [...], "sizes": {...}}."""
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    rows, detail = [], {}
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale-index-", dir=cache) as tmp:
        for clips in sizes:
            folder = Path(tmp) / str(clips)
            folder.mkdir()
            r = detail[clips] = at_size(clips, folder, cache, before, say)
            n = f"{clips:,} clips"
            rows += [
                {"metric": f"{n}: query p50", "before": r["brute"]["p50_ms"],
                 "after": r["index"]["p50_ms"], "unit": "ms"},
                {"metric": f"{n}: query p95", "before": r["brute"]["p95_ms"],
                 "after": r["index"]["p95_ms"], "unit": "ms"},
                *({"metric": f"{n}: recall@10, {kind} queries", "before": 1.0,
                   "after": r["index"][f"recall@10 {kind}"], "unit": ""}
                  for kind in data.QUERIES),
                {"metric": f"{n}: load / open", "before": r["brute"]["open_s"],
                 "after": r["index"]["open_s"], "unit": "s"},
                {"metric": f"{n}: peak memory of a searching process",
                 "before": r["brute"]["peak_mb"], "after": r["index"]["peak_mb"], "unit": "MB"},
                {"metric": f"{n}: index build (once)", "before": None,
                 "after": r["build"]["seconds"], "unit": "s"},
                {"metric": f"{n}: index file", "before": None,
                 "after": r["build"]["bytes"] / 2**20, "unit": "MB"},
                {"metric": f"{n}: autotag search, start to result",
                 "before": r["cli"].get("before", {}).get("median_s"),
                 "after": r["cli"]["after"]["median_s"], "unit": "s"},
            ]
    notes = [(f"benchmarks.scale.data's {LIBRARY} library ({data.CENTRES} activities, a shared "
              f"video component), {WINDOWS} windows a clip, {QUERIES} queries of each kind "
              f"({', '.join(data.QUERIES)}); before = today's brute force (search.Index) in the same "
              "checkout, and `autotag search` of --before's checkout")]
    if before is not None and any(c > SIZES[0] for c in sizes):
        notes.append("the before checkout's autotag search is timed at 100,000 clips only "
                     "(a second million-clip store in its schema would double the disk)")
    return {"rows": rows, "notes": notes, "sizes": detail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, action="append", metavar="N",
                        help="library sizes (repeat; default: 100,000 and 1,000,000)")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also time `autotag search` of this checkout (a git worktree)")
    parser.add_argument("--library", choices=data.LIBRARIES, default="clustered",
                        help="benchmarks.scale.data's library kind (default: clustered)")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    use_library(args.library)
    out = measure(args.quick, args.before, tuple(args.clips or ()))
    print(json.dumps(out["rows"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
