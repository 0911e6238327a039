"""`python -m benchmarks.decoding [--repeat N] [--codecs [--before CHECKOUT]]`: decoding alone,
CPU per window.

The clip sets and the 10-second and 10-minute clips are the ones `python -m benchmarks` built
under benchmarks/.cache/clips (run it once first). Each set is decoded by `media.sample_clip`, one
clip after another on one thread, the best of N passes, and reported as CPU time per sampled
window (what decoding takes from the model on a loaded CPU) and wall time.

It only calls `autotag.media.sample_clip(path, max_windows, max_pixels)`, so it also measures an
older checkout side by side (issue 13's before-and-after): from that checkout's folder,
`PYTHONPATH=. .venv/bin/python /path/to/this/benchmarks/decoding.py`.

`--codecs --before CHECKOUT` (issue 34) measures this checkout and another one (a `git worktree`
of 49c77ea, say) side by side on the same clips: each clip decoded by each checkout's
`sample_clip` in a child process of its own, the two alternating, and the scores' cosine between
the two decodings: the frames each gave, embedded by the test suite's colour-and-motion model
(tests/testmodel.py, through the product's loader) and scored against a few prompts.
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


def codecs(clips_dir: Path, repeat: int, sizes: tuple = SIZES) -> None:
    """CPU per window with the loop filter run (as at 49c77ea) and skipped (media's rule)."""
    from autotag import media

    try:
        from autotag.media import reader as rules  # the media room (issue 33)
    except ImportError:
        rules = media  # a checkout from before it
    skipped = dict(rules.LOOP_FILTER_SKIPPED) if hasattr(rules, "LOOP_FILTER_SKIPPED") else None
    for width, height in sizes:
        for name, encoder, extra in CODECS:
            clip = codec_clip(clips_dir / "codecs", width, height, name, encoder, extra)
            row = []
            for label, options in (("filtered", {}), ("skipped", skipped)):
                if options is None:
                    continue
                rules.LOOP_FILTER_SKIPPED = options
                cpu, _, windows = timed(media.sample_clip, [clip], MAX_WINDOWS, repeat)
                row.append(f"{label} {cpu / windows * 1000:.0f} ms")
            print(f"{name} {height}p: CPU a window: {', '.join(row)}")
    if skipped is not None:
        rules.LOOP_FILTER_SKIPPED = skipped


# -- side by side with another checkout --------------------------------------------------------

PROMPTS = ["red", "green", "blue", "moving", "bright", "sky"]  # tests/test_decode_speed.py's


def one(clip: Path, frames_out: Path, repeat: int) -> None:
    """(child) This checkout's CPU per window on one clip, best of `repeat`; its frames saved."""
    import numpy as np

    from autotag.media import sample_clip

    best, frames = float("inf"), None
    for _ in range(repeat):
        cpu = time.process_time()
        sampled = sample_clip(clip, MAX_WINDOWS, MAX_PIXELS)
        best = min(best, (time.process_time() - cpu) / len(sampled.windows))
        frames = sampled.frames
    np.save(frames_out, frames)
    print(f"{best * 1000:.1f}")


def child(checkout: Path, clip: Path, frames_out: Path, repeat: int) -> float:
    """CPU ms per window of `checkout`'s decoding of `clip`, in a process of its own."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(clip),
                           "--frames", str(frames_out), "--repeat", str(repeat)],
                          cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def scores_cosine(a, b, folder: Path) -> float:
    """The smallest per-window cosine between the two decodings' scores (test model)."""
    import numpy as np

    from autotag.engine import model_input
    from autotag.model import load_model
    from tests.testmodel import build

    model_dir = folder / "colour-motion"
    if not (model_dir / "saved_model.pb").exists():
        build(model_dir)
    embedder = load_model(str(model_dir))
    texts = embedder.embed_text(PROMPTS)
    x = embedder.embed_video(model_input(list(a))) @ texts.T
    y = embedder.embed_video(model_input(list(b))) @ texts.T
    cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    return float(cosine.min())


def side_by_side(clips_dir: Path, before: Path, repeat: int, rounds: int,
                 sizes: tuple = SIZES) -> None:
    """CPU per window of `before` and of this checkout, alternating, and the scores' cosine."""
    import tempfile

    import numpy as np

    here = Path(__file__).resolve().parents[1]
    print(f"before: {before}; now: {here}; best of {repeat} in each of {rounds} alternating "
          "rounds, CPU per sampled window")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        for width, height in sizes:
            for name, encoder, extra in CODECS:
                clip = codec_clip(clips_dir / "codecs", width, height, name, encoder, extra)
                then_ms, now_ms = [], []
                for _ in range(rounds):
                    then_ms.append(child(before, clip, folder / "before.npy", repeat))
                    now_ms.append(child(here, clip, folder / "now.npy", repeat))
                a, b = np.load(folder / "before.npy"), np.load(folder / "now.npy")
                cosine = scores_cosine(a, b, folder) if a.shape == b.shape else float("nan")
                then, now = min(then_ms), min(now_ms)
                print(f"{name} {height}p: before {then:.0f} ms, now {now:.0f} ms "
                      f"({(now / then - 1) * 100:+.0f} %); scores' cosine {cosine:.5f}",
                      flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoding", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="passes per set (the best counts)")
    parser.add_argument("--clips", type=Path, default=CLIPS, help="where the clips are")
    parser.add_argument("--codecs", action="store_true",
                        help="720p, 1080p and 2160p H.264 and HEVC clips, the loop filter run "
                             "and skipped (made here with ffmpeg)")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="with --codecs: that checkout (a git worktree of 49c77ea) and this "
                             "one side by side, and the scores' cosine between them")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --before: alternating rounds (the best counts)")
    parser.add_argument("--sizes", default="720,1080,2160",
                        help="with --codecs: frame heights to measure, comma-separated")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a --before child
    parser.add_argument("--frames", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    clips_dir = args.clips
    sys.path.insert(0, os.getcwd())  # the checkout being measured
    if args.one:
        one(args.one, args.frames, args.repeat)
        return 0
    from autotag.media import sample_clip

    sizes = tuple(s for s in SIZES if str(s[1]) in args.sizes.split(","))
    if args.codecs and args.before:
        side_by_side(clips_dir, args.before.resolve(), args.repeat, args.rounds, sizes)
        return 0
    if args.codecs:
        codecs(clips_dir, args.repeat, sizes)
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
