"""Synthetic snapshot (N clips × the shipped vocabulary's tags) → the library view's filter and sort
(library_view.choose) for each sort and filter → median milliseconds a page request spends there.

    python -m benchmarks.library_view                    # 100,000 clips
    python -m benchmarks.library_view --clips 2000       # a quick check that it runs

What a /library request costs beyond the live index's own snapshot (its scores and given tags are
cached per change, as search uses them) and the store's durations (read once per content): the
masks, the sort keys and the ordering over every clip, in Python and numpy; and, once per change
of the index, the columns read from its records (paths, dates, durations). Clips are spread over
1,000 folders and a year of dates; scores are random (their values do not change the cost).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from autotag.search.live import Snapshot
from autotag.store import FileRecord
from autotag.web.library_view import Columns, View, choose

CLIPS = 100_000
TAGS = 12  # about the shipped vocabulary's size
RUNS = 5  # timed runs per view (the median is reported)
FOLDERS = 1_000
MTIME0 = 1_700_000_000  # s
YEAR = 365 * 86400  # s
VIEWS = {
    "newest": View(),
    "name": View(sort="name"),
    "best": View(sort="best"),
    "longest": View(sort="longest"),
    "tag + best": View(tags=("t0",), sort="best"),
    "folder": View(folder="/lib/f7"),
    "a month": View(since=MTIME0 + 100 * 86400, until=MTIME0 + 130 * 86400),
    "untagged": View(untagged=True),
    "needs review": View(review=True),
}


def snapshot(clips: int, seed: int = 1) -> tuple[Snapshot, dict[str, float], list[str],
                                                   np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = [f"t{k}" for k in range(TAGS)]
    thresholds = np.full(TAGS, 3.0, np.float32)
    mtimes = MTIME0 + rng.uniform(0, YEAR, clips)
    records = [FileRecord(Path(f"/lib/f{i % FOLDERS}/clip {i}.mp4"), 1, float(mtimes[i]),
                          f"{i:064x}", "tagged", 0, None, "m", "v", float(mtimes[i]), i + 1)
               for i in range(clips)]
    scores = rng.normal(0.0, 2.0, (clips, TAGS)).astype(np.float32)
    given = scores >= thresholds
    reviews = {records[i].sha256: {"t0": "confirmed"} for i in range(0, clips, 50)}
    durations = {r.sha256: float(d) for r, d in zip(records, rng.uniform(1, 600, clips))}
    return Snapshot(records, scores, given, reviews, 1), durations, labels, thresholds


def measure(clips: int, runs: int = RUNS) -> dict[str, float]:
    snap, durations, labels, thresholds = snapshot(clips)
    started = time.perf_counter()
    columns = Columns.of(snap, durations)  # once per change of the index, not per request
    for name in ("paths", "names", "mtimes", "seconds", "rows_of"):
        getattr(columns, name)
    out = {"columns (once)": (time.perf_counter() - started) * 1000}
    for name, view in VIEWS.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            choose(snap, durations, labels, thresholds, view, columns)
            times.append((time.perf_counter() - started) * 1000)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=CLIPS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)
    figures = measure(args.clips, args.runs)
    print(f"library view over {args.clips:,} clips: median ms of filter + sort "
          f"({args.runs} runs)")
    for name, ms in figures.items():
        print(f"  {name:<14} {ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
