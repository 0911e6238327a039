"""`python -m benchmarks.cluster [--clips N]`: autotag backfill on a local Ray vs autotag --once.

Both run in child processes (this one never imports TensorFlow or Ray) on the same clips
(generated 720p H.264, 10 s, 4 windows each) and the stand-in model, each with its own state
store and outputs, sharing a warm text-embedding cache. For each run:

    throughput after start-up = (clips − 1) ÷ (last result − first result)
        model loading, Ray's start and the first clip's latency are left out of both
    overhead = --once's throughput ÷ backfill's − 1          target ≤ 15 % (issue 15)
    Ray start-up = ray.init of a local Ray; first clip = start → first result
    driver peak RSS = getrusage(RUSAGE_SELF) in the child: Ray's own processes and the model
        actor are other processes (with a warm text cache the driver never loads TensorFlow)

Measure on a quiet machine: the two runs take turns (--repeat) so a neighbour's load weighs
on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import clipset, measure
from benchmarks.__main__ import CACHE, standin

OVERHEAD_TARGET = 0.15  # backfill may take 15 % more wall time than --once after start-up
WIDTH, HEIGHT = 1280, 720  # px: docs/design/performance.md's "generated 720p" clips


def child(mode: str, config_path: Path, folder: Path) -> dict:
    """One run in this process: timestamps of every result, Ray's start, own peak RSS."""
    from autotag.app import open_app
    from autotag.config import load_config
    from autotag.files import find_clips

    config = load_config(config_path)
    clips = list(find_clips([folder]))
    started = time.perf_counter()
    ray_start: list[float] = []
    if mode == "once":
        app = open_app(config)
        results = app.tag(clips)
    else:
        from autotag import cluster

        def connect() -> None:
            t = time.perf_counter()
            cluster.connect(None)
            ray_start.append(time.perf_counter() - t)

        app = open_app(config, lazy=True)
        results = cluster.backfill(app, clips, before_cluster=connect)
    times, statuses = [], []
    try:
        for result in results:
            times.append(time.perf_counter() - started)
            statuses.append(result.status)
    finally:
        app.close()
        if ray_start:
            cluster.shutdown()
    return {"times": times, "statuses": statuses, "ray_start": ray_start[0] if ray_start else None,
            "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(ws: measure.Workspace, mode: str, folder: Path, text_cache: Path) -> dict:
    where = ws.run_dir(mode)
    config = ws.config(where)
    env = dict(ws.env(where, text_cache), RAY_USAGE_STATS_ENABLED="0")
    done = measure.run_child([sys.executable, "-m", "benchmarks.cluster", "--child", mode,
                              str(config), str(folder)], env, where)
    result = done.result
    if done.code or not result or set(result["statuses"]) != {"tagged"}:
        raise SystemExit(f"{mode} failed (exit {done.code}); see {where / 'output.log'}")
    times = result["times"]
    result["wall"] = done.seconds
    result["rate"] = (len(times) - 1) / (times[-1] - times[0])  # clips/s after the first
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12, help="generated 720p clips (12)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, taking turns")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CONFIG", "FOLDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, config, folder = args.child
        Path(os.environ["BENCH_RESULT"]).write_text(
            json.dumps(child(mode, Path(config), Path(folder))))
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    handle = str(standin(CACHE))
    clips = clipset.generated(CACHE, "cluster-720p", WIDTH, HEIGHT, args.clips)
    with tempfile.TemporaryDirectory(prefix="cluster-", dir=CACHE) as scratch:
        ws = measure.Workspace(Path(scratch), handle)
        text_cache = Path(scratch) / "text-cache"
        run(ws, "once", clips.folder, text_cache)  # warms the text cache; not counted
        runs: dict[str, list[dict]] = {"once": [], "backfill": []}
        for _ in range(args.repeat):
            for mode, done in runs.items():
                done.append(run(ws, mode, clips.folder, text_cache))
    report(runs, args.clips)
    return 0


def report(runs: dict[str, list[dict]], count: int) -> None:
    def mean(mode: str, key) -> float:
        values = [key(r) if callable(key) else r[key] for r in runs[mode]]
        return sum(values) / len(values)

    overhead = mean("once", "rate") / mean("backfill", "rate") - 1
    print(f"{count} clips of {WIDTH}x{HEIGHT}, {len(runs['once'])} run(s) each")
    for mode in runs:
        print(f"  {mode:8} after start-up {mean(mode, 'rate'):.3f} clips/s; wall "
              f"{mean(mode, 'wall'):.1f} s; first clip at "
              f"{mean(mode, lambda r: r['times'][0]):.1f} s; driver peak RSS "
              f"{mean(mode, 'driver_rss_mb'):.0f} MB")
    print(f"  Ray start-up (local ray.init): {mean('backfill', 'ray_start'):.1f} s")
    status = "met" if overhead <= OVERHEAD_TARGET else "NOT MET"
    print(f"  backfill overhead after start-up: {overhead * 100:+.1f} % "
          f"(target ≤ {OVERHEAD_TARGET * 100:.0f} %: {status})")

if __name__ == "__main__":
    sys.exit(main())
