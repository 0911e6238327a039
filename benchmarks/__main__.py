"""`python -m benchmarks [--quick]` → stand-in model (cached) → every measurement → table + file.

Builds what it needs under benchmarks/.cache/ (the stand-in SavedModel, the clips) once, runs
everything side by side in one run, prints the table and writes it to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import measure, report, runtimes, suite
from benchmarks.measure import CACHE, RESULTS, standin

QUICK = {"model_calls": 2, "cheap": (1280, 720, 4), "heavy": (1920, 1080, 2),
         "codecs": ("h264", "vp9"), "rss_clips": (10, 40), "watch_clips": 1,
         "sweep_batches": (1, 4, 8), "sweep_threads": ((1, 1), (2, 2))}


def settings(args: argparse.Namespace, handle: str) -> suite.Settings:
    """The configured defaults (config.yaml) under test, unless overridden on the command line."""
    defaults = yaml.safe_load(measure.BASE_CONFIG.read_text())
    model, sampling = defaults["model"], defaults["sampling"]
    return suite.Settings(
        cache=CACHE, handle=handle,
        batch_size=args.batch_size or model["batch_size"],
        threads=model["threads"] if args.threads is None else args.threads,
        max_windows=sampling["max_windows"], max_pixels=sampling["max_pixels"],
        runtime=args.runtime or model.get("runtime", "auto"),
        compare_runtimes=not args.no_compare, **(QUICK if args.quick else {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer clips and sweep points")
    parser.add_argument("--batch-size", type=int, help="model.batch_size to test")
    parser.add_argument("--threads", type=int, help="model.threads to test")
    parser.add_argument("--runtime", choices=("auto", "tensorflow", "openvino"),
                        help="model.runtime to test (the side-by-side block runs both anyway)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the TensorFlow vs OpenVINO block")
    parser.add_argument("--keep", action="store_true", help="keep the runs' scratch folders")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    handle = str(standin(CACHE))
    s = settings(args, handle)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    overrides = {"model": {"batch_size": s.batch_size, "threads": s.threads,
                           "runtime": suite.concrete_runtime(s.runtime)}}
    say = lambda m: print(f"[{time.perf_counter() - started:5.0f} s] {m}", flush=True)  # noqa: E731
    try:
        results = suite.run(s, measure.Workspace(scratch, handle, overrides), say=say)
        # the runtimes side by side on this CPU (issue 19): its own workspace and caches
        table = runtimes.render(runtimes.run(
            measure.Workspace(scratch / "runtimes", handle,
                              {"model": {"batch_size": runtimes.BATCH}}), None, say=say), None)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = report.render(results) + "\n" + table
    path = report.write(results, text, RESULTS)
    print(f"written to {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
