"""`python -m benchmarks.decoding [--repeat N] [--codecs]`: decoding alone, CPU per window.

The clip sets and the 10-second and 10-minute clips are the ones `python -m benchmarks` built
under benchmarks/.cache/clips (run it once first). Each set is decoded by `media.sample_clip`, one
clip after another on one thread, the best of N passes, and reported as CPU time per sampled
window (what decoding takes from the model on a loaded CPU) and wall time.

It only calls `autotag.media.sample_clip(path, max_windows, max_pixels)`, so it also measures an
older checkout side by side (issue 13's before-and-after): from that checkout's folder,
`PYTHONPATH=. .venv/bin/python /path/to/this/benchmarks/decoding.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

CLIPS = Path(__file__).resolve().parent / ".cache" / "clips"
SETS = ("generated 720p-6", "real-h264-vp9-mpeg4-hevc-4", "generated 1080p-3")
LONG = ("1920x1080-10s.mp4", "1920x1080-10s-x60.mp4")  # the same 10 s, once and looped 60 times
MAX_WINDOWS, MAX_PIXELS = 8, 3840 * 2160


def timed(sample_clip, clips: list[Path], max_windows: int, repeat: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, windows): the best of `repeat` passes."""
    best = (float("inf"), float("inf"), 0)
    for _ in range(repeat):
        cpu, wall, windows = time.process_time(), time.perf_counter(), 0
        for clip in clips:
            windows += len(sample_clip(clip, max_windows, MAX_PIXELS).windows)
        best = min(best, (time.process_time() - cpu, time.perf_counter() - wall, windows))
    return best


# --codecs (issue 34): decoding CPU per window by size and codec, the loop filter run and
# skipped side by side; clips made here by Debian's ffmpeg from testsrc2 with grain
SIZES = ((1280, 720), (1920, 1080), (3840, 2160))
CODECS = (("h264", "libx264", ()), ("hevc", "libx265", ("-x265-params", "log-level=error")))
CODEC_SECONDS = 8  # 3 windows


def codec_clip(folder: Path, width: int, height: int, name: str, encoder: str,
               extra: tuple[str, ...]) -> Path:
    import subprocess

    path = folder / f"{name}-{height}p.mp4"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={width}x{height}:rate=30,noise=alls=6:allf=t", "-t",
                        str(CODEC_SECONDS), "-c:v", encoder, "-preset", "fast", "-pix_fmt",
                        "yuv420p", *extra, str(path)], check=True)
    return path


def codecs(clips_dir: Path, repeat: int) -> None:
    """CPU per window with the loop filter run (as at 49c77ea) and skipped (media's rule)."""
    from autotag import media

    skipped = dict(media.LOOP_FILTER_SKIPPED) if hasattr(media, "LOOP_FILTER_SKIPPED") else None
    for width, height in SIZES:
        for name, encoder, extra in CODECS:
            clip = codec_clip(clips_dir / "codecs", width, height, name, encoder, extra)
            row = []
            for label, options in (("filtered", {}), ("skipped", skipped)):
                if options is None:
                    continue
                media.LOOP_FILTER_SKIPPED = options
                cpu, _, windows = timed(media.sample_clip, [clip], MAX_WINDOWS, repeat)
                row.append(f"{label} {cpu / windows * 1000:.0f} ms")
            print(f"{name} {height}p: CPU a window: {', '.join(row)}")
    if skipped is not None:
        media.LOOP_FILTER_SKIPPED = skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoding", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="passes per set (the best counts)")
    parser.add_argument("--clips", type=Path, default=CLIPS, help="where the clips are")
    parser.add_argument("--codecs", action="store_true",
                        help="720p, 1080p and 2160p H.264 and HEVC clips, the loop filter run "
                             "and skipped (made here with ffmpeg)")
    args = parser.parse_args(argv)
    clips_dir = args.clips
    sys.path.insert(0, os.getcwd())  # the checkout being measured
    from autotag.media import sample_clip

    if args.codecs:
        codecs(clips_dir, args.repeat)
        return 0

    missing = [name for name in SETS if not (clips_dir / "sets" / name).is_dir()]
    if missing or not all((clips_dir / "sources" / name).exists() for name in LONG):
        print(f"clips missing under {clips_dir}: run `python -m benchmarks` once first",
              file=sys.stderr)
        return 2
    print(f"autotag from {Path(sys.modules['autotag.media'].__file__).parent}")
    for name in SETS:
        clips = sorted(p for p in (clips_dir / "sets" / name).iterdir() if p.is_file())
        cpu, wall, windows = timed(sample_clip, clips, MAX_WINDOWS, args.repeat)
        print(f"{name}: {cpu / windows * 1000:.0f} ms CPU a window ({cpu:.2f} s CPU, "
              f"{wall:.2f} s, {windows} windows)")
    short, long = (clips_dir / "sources" / name for name in LONG)
    windows = len(sample_clip(short, MAX_WINDOWS, MAX_PIXELS).windows)
    (s_cpu, s_wall, _), (l_cpu, l_wall, _) = (timed(sample_clip, [clip], windows, args.repeat)
                                              for clip in (short, long))
    print(f"10-minute vs 10-second 1080p, {windows} windows: {l_wall:.2f} s vs {s_wall:.2f} s "
          f"= {l_wall / s_wall:.2f}x (CPU {l_cpu:.2f} s vs {s_cpu:.2f} s = {l_cpu / s_cpu:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
