"""Decoding: windows over the whole clip, at the right times; GIF timing; odd sizes; rotation;
real clips nobody here made, in the containers and codecs people have."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotag.media import (
    WINDOW_FRAMES,
    DecodeError,
    pictures,
    sample_clip,
    window_starts,
)
from autotag.media.pictures import FRAME_SIZE, THUMB_HEIGHT, to_model_input
from autotag.media.sampling import KEYFRAME_PULL
from tests.clips import (
    BLUE,
    CODECS,
    COUNTED_FPS,
    GREEN,
    RED,
    ffmpeg,
    frame_number,
    needs_ffmpeg,
    write_counted,
    write_gif,
    write_video,
)

BIG = 10**9  # max_pixels that refuses nothing


def colour(frame: np.ndarray) -> str:
    r, g, b = frame.reshape(-1, 3).mean(axis=0)
    return "red" if r > 128 > max(g, b) else "blue" if b > 128 > max(r, g) else \
        "green" if g > 128 > max(r, b) else "other"


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
@pytest.mark.parametrize("name, options", [
    ("bt709 tv range", ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "tv"]),
    ("full range", ["-pix_fmt", "yuvj420p", "-color_range", "pc"]),
    ("turned", ["-pix_fmt", "yuv420p", "-metadata:s:v:0", "rotate=90"]),
])
def test_large_frames_shrunk_before_conversion_match_converting_first(
        tmp_path, monkeypatch, name, options):
    # 1080p (and up) 4:2:0 is cropped and shrunk as YUV planes and converted at 224 px; the
    # same clip converted whole first (below the size where shrinking first pays) must give the
    # same pictures: the same square, colours, range and way up
    path = tmp_path / "big.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=10:d=1", "-c:v", "libx264",
           "-preset", "ultrafast", *options, str(path))
    shrunk_first = sample_clip(path, 1, BIG).frames
    monkeypatch.setattr(pictures, "SHRINK_FIRST_SIDE", 10**6)
    converted_first = sample_clip(path, 1, BIG).frames
    difference = np.abs(shrunk_first.astype(int) - converted_first.astype(int))
    assert converted_first.std() > 30  # a picture, not a flat frame
    assert difference.mean() < 2.0, name  # rounding; 8 px off or the wrong matrix: 6 to 8
    assert np.percentile(difference, 99) < 24, name


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
    # reached by seeking, each window between the first and the last starts at the keyframe
    # before its even place (one every 10 s here), so no frame before it is decoded
    assert [w.start % 10 for w in s.windows[:-1]] == [0] * 7
    even = window_starts(600, 8)
    assert all(0 <= e - w.start <= KEYFRAME_PULL for w, e in zip(s.windows, even, strict=True))
    assert [colour(w[0]) for w in s.frames] == ["red"] * 4 + ["blue"] * 4


@needs_ffmpeg
def test_a_truncated_clip_is_tagged_for_what_it_holds_and_said_to_be_cut_short(tmp_path, caplog):
    whole = tmp_path / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=30", "-c:v", "libx264", "-g", "20",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"  # a download that stopped halfway: the header says 30 s
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    s = sample_clip(cut, 8, BIG)
    assert 10 < s.duration < 20  # what its frames hold, not the header's 30 s
    assert s.windows[-1].end <= s.duration + 0.01
    assert "cut short" in s.damage
    assert f"{cut}: its frames end at " in caplog.text  # one line naming the file


@needs_ffmpeg
def test_a_clip_damaged_in_the_middle_is_tagged_and_said_to_be_damaged(tmp_path, caplog):
    whole = tmp_path / "whole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=6", "-c:v", "libx264", "-g", "50",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 40_000] = bytes(40_000)  # 40 kB of zeros over the middle
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    s = sample_clip(damaged, 8, BIG)
    assert s.duration == pytest.approx(6, abs=0.1) and len(s.windows) == 2
    assert "damaged frame" in s.damage
    assert f"{damaged}: " in caplog.text and "damaged frame" in caplog.text
    assert sample_clip(whole, 8, BIG).damage is None


# -- real clips nobody here made ----------------------------------------------------------------

@needs_ffmpeg
@pytest.mark.parametrize("name", ["original.mp4", *CODECS])
def test_real_clips_decode_in_every_container_and_codec(real_clips, name):
    s = sample_clip(real_clips[name], 8, BIG)
    assert s.damage is None  # whole files: no false alarm, after seeks too
    assert s.duration > 0.5
    assert s.frames.shape[1:] == (WINDOW_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
    assert s.frames.std() > 5  # real pictures, not black frames


# -- skipping non-reference frames ---------------------------------------------------------------

def on_screen(path: Path, fps: int, skip_nonref: bool,
              reference_only: bool = False) -> tuple[list, list]:
    """(window starts, [(frame on screen at each sample's time, frame the sample shows)])."""
    s = sample_clip(path, 8, BIG, skip_nonref=skip_nonref, reference_only=reference_only)
    pairs = [(int(round((w.start + i / 10) * fps, 6)), frame_number(frame))
             for w, frames in zip(s.windows, s.frames, strict=True)
             for i, frame in enumerate(frames)]
    return [w.start for w in s.windows], pairs


@needs_ffmpeg
@pytest.mark.parametrize("name, encoder, seconds, early", [
    ("x264 default", [], 12, 1),  # B-pyramid: every other frame a reference
    ("IBBP", ["-bf", "2", "-x264-params", "b-pyramid=none:b-adapt=0"], 12, 2),  # a third
    ("P only", ["-bf", "0"], 12, 0),  # as many phones write: nothing to skip
    ("a minute, seeks", [], 60, 1),  # windows 5 s apart: reached by seeking from keyframes
])
def test_skipping_nonref_frames_shows_the_last_decoded_frame_never_a_later_one(
        tmp_path, name, encoder, seconds, early):
    path = write_counted(tmp_path / "counted.mp4", encoder, seconds=seconds)
    starts, exact = on_screen(path, COUNTED_FPS, False)
    assert all(want == got for want, got in exact), name
    # only frames no sample shows are skipped (issue 13): every sample is exact
    skipped_starts, skipped = on_screen(path, COUNTED_FPS, True)
    assert skipped_starts == starts and skipped == exact, name
    # reference frames only (issue 34): a sample on a frame nothing refers to shows the
    # reference frame before it, never a later one, never one frame for two sample times
    nearest_starts, nearest = on_screen(path, COUNTED_FPS, True, reference_only=True)
    assert nearest_starts == starts
    shifts = [got - want for want, got in nearest]
    assert max(shifts) <= 0 and min(shifts) >= -early, (name, min(shifts))
    assert (min(shifts) < 0) == (early > 0), name  # it changed what it may, nothing else
    for window in range(len(starts)):
        shown = [got for _, got in nearest[window * WINDOW_FRAMES:(window + 1) * WINDOW_FRAMES]]
        assert shown == sorted(set(shown)), name  # in order, no frame twice


@needs_ffmpeg
def test_reference_frames_further_apart_than_the_samples_turn_reference_only_off(tmp_path):
    # IBBBP at 30 fps: references every fourth frame (0.13 s) would show a frame for two sample
    # times; the first such gap turns it off. Only what was decided before the decoder gave the
    # frame after the gap (the B-frames behind it) can differ: one sample at the clip's start.
    path = write_counted(tmp_path / "ibbbp.mp4", ["-bf", "3", "-x264-params",
                                                   "b-pyramid=none:b-adapt=0"])
    _, exact = on_screen(path, COUNTED_FPS, False)
    _, nearest = on_screen(path, COUNTED_FPS, True, reference_only=True)
    differ = [(want, got) for want, got in nearest if want != got]
    assert len(differ) <= 1 and all(want <= 3 for want, _ in differ), differ
    assert nearest[len(nearest) // 2:] == exact[len(exact) // 2:]


@needs_ffmpeg
def test_a_stream_sparse_without_its_nonref_frames_is_still_sampled_exactly(tmp_path):
    # IBBP at 25 fps: the reference frames alone come 8.3 a second, fewer than the 10 sampled;
    # the B-frames a sample shows are decoded, the others skipped
    path = write_counted(tmp_path / "ibbp25.mp4", ["-bf", "2", "-x264-params",
                                                    "b-pyramid=none:b-adapt=0"], fps=25)
    _, exact = on_screen(path, 25, False)
    _, skipped = on_screen(path, 25, True)
    assert skipped == exact and all(want == got for want, got in exact)
    # reference frames only is for 30 fps and up: at 25 fps every sample stays exact
    _, nearest = on_screen(path, 25, True, reference_only=True)
    assert nearest == exact


@needs_ffmpeg
def test_slow_clips_are_not_skipped(tmp_path):
    path = tmp_path / "slow.mp4"  # 15 fps: skipping would lose frames the windows need
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=15:duration=4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(path))
    exact, skipped, nearest = (sample_clip(path, 8, BIG, skip_nonref=s, reference_only=r)
                               for s, r in ((False, False), (True, False), (True, True)))
    assert np.array_equal(exact.frames, skipped.frames)
    assert np.array_equal(exact.frames, nearest.frames)  # 15 fps: sampled exactly


@needs_ffmpeg
def test_an_av1_clip_decodes(tmp_path):
    path = tmp_path / "clip.mkv"  # AV1: what yt-dlp and newer phones often write (dav1d decodes)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1", "-c:v", "libsvtav1",
           "-preset", "12", "-svtav1-params", "verbosity=0", "-pix_fmt", "yuv420p", str(path))
    sampled = sample_clip(path, 8, BIG)
    assert sampled.duration == pytest.approx(1.0, abs=0.05) and sampled.frames.std() > 5


@needs_ffmpeg
@pytest.mark.parametrize("name, codec", [
    ("avchd.mts", ["-c:v", "libx264", "-flags", "+ildct+ilme", "-x264-params", "tff=1"]),
    ("dvb.ts", ["-c:v", "mpeg2video", "-flags", "+ildct+ilme", "-top", "1"]),
])
def test_interlaced_video_is_sampled_never_black(tmp_path, name, codec):
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2", *codec, "-pix_fmt", "yuv420p",
           str(path))
    # a process of its own: what was decoded before must not matter (OpenCV's swscale once
    # left interlaced frames black in a fresh buffer, a former clip's pixels in a reused one)
    code = ("import sys; from pathlib import Path; from autotag.media import sample_clip\n"
            "print(sample_clip(Path(sys.argv[1]), 8, 10**9).frames.std())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert float(out) > 5, out


def test_a_thumbnail_is_the_whole_frame_shrunk_as_shown():
    """A 1080p frame's thumbnail (shrunk and converted by one swscale call) is the picture
    converted at full size and then shrunk, within a grey level or two."""
    import cv2
    from av.video.frame import VideoFrame

    y, x = np.mgrid[0:1080, 0:1920]
    rgb = np.stack([x * 255 // 1919, y * 255 // 1079, ((x // 240 + y // 270) % 2) * 200],
                   axis=2).astype(np.uint8)
    frame = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    thumb = pictures.thumbnail(frame)
    assert thumb.shape == (THUMB_HEIGHT, 320, 3)
    full = cv2.resize(frame.to_ndarray(format="rgb24"), (320, THUMB_HEIGHT),
                      interpolation=cv2.INTER_AREA)
    assert np.abs(thumb.astype(np.float32) - full).mean() < 2.0
    assert np.abs(thumb.astype(np.float32) - cv2.resize(rgb, (320, THUMB_HEIGHT),
                                                        interpolation=cv2.INTER_AREA)).mean() < 4
