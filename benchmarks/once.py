"""`python -m benchmarks.once [--runtime R] [--repeat N]`: `autotag --once` windows/s after
startup on each clip set, N times, with the stand-in model `python -m benchmarks` built.

For a before-and-after of the whole pipeline with less noise than one benchmark run: it only
calls the checkout's own `benchmarks.measure.once`, so from an older checkout's folder
`PYTHONPATH=. .venv/bin/python /path/to/this/benchmarks/once.py` runs that checkout's autotag on
the same clips and model (issue 13 compared 35d7a71 this way, one set after the other).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
SETS = ("generated 720p-6", "real-h264-vp9-mpeg4-hevc-4", "generated 1080p-3")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.once", description=__doc__)
    parser.add_argument("--runtime", choices=("auto", "tensorflow", "openvino"),
                        help="model.runtime (default: the checkout's config; 35d7a71 has none)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each set")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the checkout being measured
    from benchmarks import measure

    models = sorted(CACHE.glob("standin-*"), key=lambda p: p.stat().st_mtime)  # the newest
    if not models or not all((CACHE / "clips" / "sets" / name).is_dir() for name in SETS):
        print(f"no stand-in model or clips under {CACHE}: run `python -m benchmarks` once first",
              file=sys.stderr)
        return 2
    sections = {"model": {"runtime": args.runtime}} if args.runtime else {}
    for run in range(1, args.repeat + 1):
        for name in SETS:
            scratch = Path(tempfile.mkdtemp(prefix="autotag-once-"))
            try:
                result = measure.once(measure.Workspace(scratch, str(models[-1])), "once",
                                      CACHE / "clips" / "sets" / name, **sections).result
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            print(f"run {run}, {name}: {result['windows'] / result['seconds']:.2f} windows/s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
