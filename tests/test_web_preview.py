"""What a browser plays as it is, and the WebM previews of what it does not."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from autotag.media import webm
from autotag.media.playable import Playability, playability
from autotag.media.webm import PREVIEW_FPS, PREVIEW_HEIGHT, PreviewError
from autotag.web import preview_cache as preview
from autotag.web.preview_cache import PREVIEW_MAX_SECONDS, PreviewCache, clamp
from tests.clips import (
    FFMPEG,
    RED,
    ffmpeg,
    frame_number,
    needs_ffmpeg,
    write_counted,
    write_gif,
    write_interlaced,
    write_video,
)

pytestmark = needs_ffmpeg

SOURCE = "testsrc=s=64x48:r=10:d=1"  # tiny: a clip costs milliseconds to make and probe
KEY = hashlib.sha256(b"clip").hexdigest()


def has_encoder(name: str) -> bool:
    if FFMPEG is None:
        return False
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"],
                         capture_output=True, text=True, check=False).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def make(path: Path, *options: str, source: str = SOURCE) -> Path:
    ffmpeg("-f", "lavfi", "-i", source, *options, str(path))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kinds")
    h264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]
    makers = [
        lambda: make(folder / "h264.mp4", *h264),
        lambda: make(folder / "vp9.webm", *vp9, "-pix_fmt", "yuv420p"),
        lambda: make(folder / "vp9-rgb.webm", *vp9),  # testsrc is RGB: kept, as profile 1
        lambda: write_video(folder / "mjpeg.avi", [(RED, 1)], fourcc="MJPG"),
        lambda: make(folder / "mpeg2.ts", "-c:v", "mpeg2video", "-f", "mpegts"),
        lambda: make(folder / "h264.avi", *h264),
        lambda: make(folder / "h264.mkv", *h264),
        lambda: make(folder / "h264-10bit.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p10le"),
        lambda: make(folder / "h264-422.mp4", "-c:v", "libx264", "-pix_fmt", "yuv422p"),
        lambda: make(folder / "ac3.mp4", "-f", "lavfi", "-i", "sine=d=1", *h264, "-c:a", "ac3"),
        lambda: write_interlaced(folder / "interlaced.mp4", (0, 0, 255), (160, 128), "50", True,
                                 h264, seconds=1),
        lambda: write_gif(folder / "clip.gif", [(RED, 1)]),
    ]
    with ThreadPoolExecutor(2) as pool:  # one ffmpeg a core
        list(pool.map(lambda maker: maker(), makers))
    return folder


@pytest.mark.parametrize("name, mime", [
    ("h264.mp4", "video/mp4"),
    ("vp9.webm", "video/webm"),
    ("clip.gif", "image/gif"),
])
def test_playable(clips, name, mime):
    assert playability(clips / name) == Playability(True, mime, "")


@pytest.mark.parametrize("name, reason", [
    ("mjpeg.avi", "Motion JPEG video"),
    ("mpeg2.ts", "MPEG-2 video"),
    ("h264.avi", "AVI container"),
    ("interlaced.mp4", "interlaced"),
    ("h264-10bit.mp4", "10-bit H.264"),
    ("h264-422.mp4", "4:2:2 H.264"),
    ("h264.mkv", "H.264 in WebM/Matroska"),
    ("vp9-rgb.webm", "RGB VP9"),
    ("ac3.mp4", "AC-3 audio in MP4/MOV"),
])
def test_not_playable(clips, name, reason):
    assert playability(clips / name) == Playability(False, None, reason)


@pytest.mark.skipif(not has_encoder("libx265"), reason="this ffmpeg has no libx265 to make HEVC")
def test_ten_bit_hevc_is_not_playable(tmp_path):
    path = make(tmp_path / "hevc.mp4", "-c:v", "libx265", "-preset", "ultrafast",
                "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1")
    assert playability(path) == Playability(False, None, "10-bit HEVC")


@pytest.mark.parametrize("content", [b"", b"\x00not a video at all" * 100])
def test_what_ffmpeg_cannot_open_raises_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(PreviewError, match=r"broken\.mp4: not a video FFmpeg can read"):
        playability(path)
    with pytest.raises(PreviewError, match=r"broken\.mp4"):
        PreviewCache(tmp_path / "cache").get(KEY, path, 0, 2)


# -- previews ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def avi(tmp_path_factory) -> Path:
    """6 s of MJPEG, tiny: no browser plays it."""
    return make(tmp_path_factory.mktemp("avi") / "camera.avi", "-c:v", "mjpeg",
                source="testsrc=s=64x48:r=10:d=6")


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        assert container.format.name == "matroska,webm"
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("vp9", "vp8")
        assert not container.streams.audio
        return list(container.decode(stream))


def seconds(frames: list[av.VideoFrame]) -> float:
    return frames[-1].time + 1 / PREVIEW_FPS


def test_a_preview_is_a_small_webm_of_the_segment(tmp_path):
    avi = make(tmp_path / "camera.avi", "-c:v", "mjpeg", "-q:v", "8",
               source="testsrc=s=480x400:r=12:d=5")  # taller than a preview
    path = PreviewCache(tmp_path).get(KEY, avi, 1.5, 4.5)
    assert path == tmp_path / f"{KEY}-1.5-4.5.webm"
    frames = decoded(path)
    assert seconds(frames) == pytest.approx(3.0, abs=0.1)
    assert (frames[0].width, frames[0].height) == (432, PREVIEW_HEIGHT)  # 6:5 kept
    assert frames[0].to_ndarray(format="rgb24").std() > 30  # a picture, not a flat frame


def test_encoded_once(tmp_path, avi, monkeypatch):
    calls = []
    encode = preview.encode
    monkeypatch.setattr(preview, "encode", lambda *a: (calls.append(a), encode(*a)))
    cache = PreviewCache(tmp_path)
    first = cache.get(KEY, avi, 2.0, 4.0)
    inode = first.stat().st_ino
    again = cache.get(KEY, avi, 2.04, 3.96)  # the same after rounding to 0.1 s
    assert again == first and again.stat().st_ino == inode
    assert len(calls) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_concurrent_calls_wait_for_one_encoding(tmp_path, avi, monkeypatch):
    calls = []
    encode = preview.encode

    def slow(*args):
        calls.append(args)
        time.sleep(0.2)
        encode(*args)

    monkeypatch.setattr(preview, "encode", slow)
    cache = PreviewCache(tmp_path)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(KEY, avi, 0, 2)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert not cache._locks  # the lock table keeps nothing once no one waits


def test_start_and_end_beyond_the_clip_are_clamped(tmp_path, avi):
    cache = PreviewCache(tmp_path)
    tail = cache.get(KEY, avi, 4.0, 100.0)
    assert tail.name == f"{KEY}-4.0-6.0.webm"
    assert seconds(decoded(tail)) == pytest.approx(2.0, abs=0.1)
    past = cache.get(KEY, avi, 50.0, 60.0)  # wholly after the end: its last second
    assert past.name == f"{KEY}-5.0-6.0.webm"
    assert seconds(decoded(past)) == pytest.approx(1.0, abs=0.1)
    before = cache.get(KEY, avi, -3.0, 0.5)
    assert before.name == f"{KEY}-0.0-1.0.webm"


def test_clamp():
    assert clamp(0.0, 30.0, 100.0) == (0.0, PREVIEW_MAX_SECONDS)
    assert clamp(1.04, 3.06, 6.0) == (1.0, 3.1)
    assert clamp(5.0, 5.0, 60.0) == (5.0, 6.0)  # too short: widened
    assert clamp(0.0, 5.0, 0.45) == (0.0, 0.4)  # a clip shorter than the minimum
    assert clamp(10.0, 14.0, 0.0) == (10.0, 14.0)  # duration unknown


@pytest.mark.parametrize("key", ["../x", "", "x" * 64, KEY.upper(), KEY + "/", f"{KEY[:-1]}\n"])
def test_a_key_that_is_not_a_sha256_is_refused(tmp_path, avi, key):
    with pytest.raises(ValueError, match="sha256"):
        PreviewCache(tmp_path / "cache").get(key, avi, 0, 2)
    assert not list((tmp_path / "cache").iterdir())


def test_the_least_recently_used_previews_are_evicted(tmp_path, avi):
    cache = PreviewCache(tmp_path)
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    a = cache.get(keys[0], avi, 0, 1)
    b = cache.get(keys[1], avi, 0, 1)
    now = time.time()
    os.utime(a, (now - 300, now - 300))
    os.utime(b, (now - 200, now - 200))
    assert cache.get(keys[0], avi, 0, 1) == a  # used again: now the most recent
    cache.max_bytes = int(2.5 * a.stat().st_size)
    c = cache.get(keys[2], avi, 0, 1)
    assert a.exists() and c.exists() and not b.exists()
    cache.max_bytes = 1  # even alone over budget, the preview just made is kept
    d = cache.get(keys[1], avi, 1, 2)
    assert [p.name for p in tmp_path.iterdir()] == [d.name]


def test_stale_temp_files_are_removed(tmp_path):
    stale, fresh = tmp_path / ".a.webm.1234.tmp", tmp_path / ".b.webm.5678.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    PreviewCache(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_an_undecodable_clip_raises_preview_error(tmp_path, avi):
    # a real AVI header and index, every frame's JPEG data overwritten
    data = write_video(tmp_path / "small.avi", [(RED, 1)], fourcc="MJPG").read_bytes()
    broken = tmp_path / "garbled.avi"
    broken.write_bytes(re.sub(rb"\xff\xd8.{200}", lambda m: bytes(len(m[0])), data,
                              flags=re.DOTALL))
    with pytest.raises(PreviewError, match=r"garbled\.avi"):
        PreviewCache(tmp_path / "cache").get(KEY, broken, 0, 2)
    assert not [p for p in (tmp_path / "cache").iterdir()]


def test_rotation_is_honoured_as_ffmpeg_shows_it(tmp_path):
    wide = make(tmp_path / "wide.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                source="testsrc=s=96x32:r=10:d=1")
    turned = tmp_path / "turned.mp4"
    ffmpeg("-i", str(wide), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(turned))
    shown = tmp_path / "shown.png"  # the ffmpeg CLI turns the picture (autorotate)
    ffmpeg("-i", str(turned), "-frames:v", "1", str(shown))
    want = cv2.cvtColor(cv2.imread(str(shown)), cv2.COLOR_BGR2RGB)
    frames = decoded(PreviewCache(tmp_path / "cache").get(KEY, turned, 0, 1))
    got = frames[0].to_ndarray(format="rgb24")
    assert got.shape == want.shape == (96, 32, 3)  # portrait, as the camera meant it
    difference = np.abs(got.astype(int) - want.astype(int)).mean()
    assert difference < 20, difference  # VP9 at a low rate; turned the wrong way: ~90


def combing(rgb: np.ndarray) -> float:
    """How much each row differs from the mean of the rows either side: woven fields of a
    moving picture comb, a deinterlaced frame does not."""
    rows = rgb.astype(float).mean(axis=2)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def test_an_interlaced_clip_is_deinterlaced(tmp_path, clips):
    source = clips / "interlaced.mp4"
    frames = decoded(PreviewCache(tmp_path).get(KEY, source, 0, 1))
    assert len(frames) == PREVIEW_FPS
    assert (frames[0].width, frames[0].height) == (160, 128)
    with av.open(str(source)) as container:
        woven = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert max(combing(f.to_ndarray(format="rgb24")) for f in frames[1:]) \
        < min(combing(f) for f in woven[1:]) / 3


def test_a_gif_previews_from_its_start(tmp_path, clips):
    frames = decoded(PreviewCache(tmp_path).get(KEY, clips / "clip.gif", 0, 1))
    assert len(frames) == PREVIEW_FPS
    red = frames[0].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    assert red[0] > 150 and red[1] < 80 and red[2] < 80


COUNTED_RATE = 20  # fps: fewer frames to draw than tests.clips' 30, the same numbering


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Path:
    """8 s of H.264 whose frame n shows n (tests/clips.py), a keyframe every second."""
    return write_counted(tmp_path_factory.mktemp("counted") / "counted.mp4", ["-g", "20"],
                         fps=COUNTED_RATE, seconds=8)


@pytest.mark.parametrize("container", ["mp4", "mpegts"])
def test_each_frame_is_the_one_on_screen_at_its_time(tmp_path, counted, container):
    # frame k of a preview from `start` must show the source frame on screen at
    # start + k / PREVIEW_FPS, whether the seek had an index (MP4) or landed by estimate and
    # had to go back (MPEG-TS)
    source = counted
    if container != "mp4":
        source = tmp_path / f"counted.{container}"
        ffmpeg("-i", str(counted), "-c", "copy", "-f", container, str(source))
    frames = decoded(PreviewCache(tmp_path / "cache").get(KEY, source, 5.0, 6.5))
    shown = [frame_number(cv2.resize(f.to_ndarray(format="rgb24"), (224, 224),
                                     interpolation=cv2.INTER_NEAREST)) for f in frames]
    want = [math.floor((5.0 + k / PREVIEW_FPS) * COUNTED_RATE + 1e-6) for k in range(18)]
    assert shown == want


def test_vp8_when_there_is_no_vp9(tmp_path, avi, monkeypatch):
    monkeypatch.setattr(webm, "ENCODERS", webm.ENCODERS[1:])
    path = PreviewCache(tmp_path).get(KEY, avi, 0, 1)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        assert len(list(container.decode(video=0))) == PREVIEW_FPS


def test_an_interlaced_recording_whose_picture_changes_size_previews_across_the_change(
        tmp_path):
    """The preview reads through the same frame reader as tagging: its deinterlacer is built
    again when the picture changes size (576i red, then 1080i blue, in one MPEG-TS stream)."""
    parts = [write_interlaced(tmp_path / "sd.ts", (230, 20, 10), (720, 576), "50", True,
                              ["-c:v", "mpeg2video", "-q:v", "2"], seconds=4),
             write_interlaced(tmp_path / "hd.ts", (0, 0, 255), (1920, 1080), "50", True,
                              ["-c:v", "mpeg2video", "-q:v", "2"], seconds=4)]
    listing = tmp_path / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    recording = tmp_path / "recording.ts"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(recording))
    frames = [f.to_ndarray(format="rgb24")
              for f in decoded(PreviewCache(tmp_path / "cache").get(KEY, recording, 3.0, 5.0))]
    assert len(frames) == 2 * PREVIEW_FPS
    before, after = frames[:PREVIEW_FPS - 1], frames[PREVIEW_FPS + 1:]  # either side of 4 s

    def bar(rgb: np.ndarray) -> np.ndarray:  # the moving bar: bright in all three channels
        return rgb.min(axis=2) > 120

    assert all(f[..., 0].mean() > f[..., 2].mean() for f in before)  # red
    assert all(f[..., 2].mean() > f[..., 0].mean() for f in after)  # blue, pictures decoded
    assert all(bar(f).any() for f in after)  # the bar: the 1080i pictures themselves
    # (the preview's own decode loop, before the one reader, fed the 1080i frames to the 576i
    # deinterlacer and the preview failed: "Operation not permitted")
