"""The kinds of clip cameras, TV recorders and downloads make (issue 13), each made here with
ffmpeg: AV1 in MP4 and WebM, 10-bit (HEVC Main 10, VP9 profile 2, AV1), HDR10 and HLG, interlaced
MPEG-2 576i top field first and 480i bottom field first, interlaced H.264 1080i in MPEG-TS,
anamorphic DVD and HDV, a recording whose picture changes size, and a clip whose frame rate
changes mid-clip. Each is sampled from the pictures it holds, at the
right frames, with its true duration, and tagged with its colour by the test model."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from autotag.media import sample_clip
from autotag.media.pictures import to_model_input
from tests.clips import (
    BAR_SPAN,
    BAR_STEP,
    COUNTED,
    HLG_PEAK,
    REFERENCE_WHITE,
    bar_position,
    ffmpeg,
    frame_number,
    write_counted,
    write_hdr,
    write_interlaced,
)
from tests.helpers import ContainerProxy

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

BIG = 10**9  # max_pixels that refuses nothing
RED, GREEN, BLUE = (230, 20, 10), (0, 255, 0), (0, 0, 255)
SOLID = "color=c=0x{:02x}{:02x}{:02x}:s=64x64:r=25:d=4"  # 4 s: two windows
SVT = ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "verbosity=0"]

# name → (colour, seconds, ffmpeg output options)
SOLIDS = {
    "av1.mp4": (GREEN, SVT + ["-pix_fmt", "yuv420p"]),
    "av1.webm": (BLUE, ["-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p"]),
    "av1-10bit.mkv": (RED, SVT + ["-pix_fmt", "yuv420p10le"]),
    # HEVC Main 10 with a BT.2020 matrix, as SDR (not tagged HDR: see the HDR test below)
    "hevc-main10.mp4": (RED, ["-vf", "scale=out_color_matrix=bt2020:out_range=tv",
                              "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt",
                              "yuv420p10le", "-x265-params", "log-level=error",
                              "-colorspace", "bt2020nc"]),
    "vp9-profile2.webm": (GREEN, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used",
                                  "8", "-pix_fmt", "yuv420p10le"]),
}
# name → (colour, size, field rate, top field first, ffmpeg video options)
INTERLACED = {
    "dvd-576i-tff.mpg": (RED, (720, 576), "50", True, ["-c:v", "mpeg2video", "-q:v", "2"]),
    "tv-480i-bff.mpg": (BLUE, (720, 480), "60000/1001", False,
                        ["-c:v", "mpeg2video", "-q:v", "2"]),
    "avchd-1080i-tff.mts": (GREEN, (1920, 1080), "50", True,
                            ["-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "tff=1"]),
}
# white (SDR reference white), mid grey, a 1,000 cd/m² highlight and BT.709 red at white's light
HDR_BANDS = [(1.0, 1.0, 1.0), (0.286, 0.286, 0.286), (HLG_PEAK / REFERENCE_WHITE,) * 3,
             (1.0, 0.0, 0.0)]
HDR = {"hdr10-pq.mp4": ("pq", HDR_BANDS), "hlg.mp4": ("hlg", HDR_BANDS),
       "hdr10-red.mp4": ("pq", [(1.0, 0.0, 0.0)])}
VFR_SECONDS, VFR_FPS, VFR_CHANGE = 12, 30, 6  # 30 fps for 6 s, then every third frame (10 fps)


def colour(frames: np.ndarray) -> str:
    r, g, b = frames.reshape(-1, 3).mean(axis=0)
    return "red" if r > 128 > max(g, b) else "blue" if b > 128 > max(r, g) else \
        "green" if g > 128 > max(r, b) else "other"


def name_of(rgb: tuple[int, int, int]) -> str:
    return {RED: "red", GREEN: "green", BLUE: "blue"}[rgb]


@pytest.fixture(scope="session")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """Every clip, made once per session (seconds: the 1080i one is the dearest)."""
    folder = tmp_path_factory.mktemp("kinds")
    clips = {}
    for name, (rgb, options) in SOLIDS.items():
        clips[name] = folder / name
        ffmpeg("-f", "lavfi", "-i", SOLID.format(*rgb), *options, str(clips[name]))
    for name, (transfer, bands) in HDR.items():
        clips[name] = write_hdr(folder / name, transfer, bands)
    for name, (rgb, size, rate, tff, codec) in INTERLACED.items():
        clips[name] = write_interlaced(folder / name, rgb, size, rate, tff, codec)
    clips["vfr.mp4"] = folder / "vfr.mp4"  # a phone's screen recording: the rate drops mid-clip
    ffmpeg("-f", "lavfi", "-i", COUNTED.format(fps=VFR_FPS, seconds=VFR_SECONDS),
           "-vf", f"select='lt(t\\,{VFR_CHANGE})+not(mod(n\\,3))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clips["vfr.mp4"]))
    return clips


@pytest.mark.parametrize("name", SOLIDS)
def test_av1_and_ten_bit_clips_decode_to_their_colour_and_duration(kinds, name):
    rgb, _ = SOLIDS[name]
    s = sample_clip(kinds[name], 8, BIG)
    assert s.duration == pytest.approx(4.0, abs=0.05)
    assert [w.start for w in s.windows] == pytest.approx([0.0, 0.8])
    assert colour(s.frames) == name_of(rgb)
    # 10-bit, BT.2020 or not, comes out as the 8-bit colour it was made from
    assert s.frames.reshape(-1, 3).mean(axis=0) == pytest.approx(rgb, abs=8)


@pytest.mark.parametrize("name", ["hdr10-pq.mp4", "hlg.mp4"])
def test_hdr_clips_are_tone_mapped_to_what_a_screen_shows(kinds, name):
    # as stored, PQ's reference white is a grey of 147 and HLG's 190, and BT.2020's red shown
    # as BT.709 is washed out: the model would see dim, flat pictures
    s = sample_clip(kinds[name], 8, BIG)
    for picture in (s.frames[0, 0], s.thumbnails[0]):
        row, width = picture[picture.shape[0] // 2].astype(int), picture.shape[1]
        white, grey, highlight, red = (row[int((i + 0.5) * width / 4)] for i in range(4))
        assert white.min() >= 235 and np.ptp(white) <= 12, (name, white)
        assert 120 <= grey.mean() <= 175 and np.ptp(grey) <= 12, (name, grey)
        assert highlight.min() >= 245, (name, highlight)
        assert red[0] >= 180 and max(red[1:]) <= 60, (name, red)


# stored size, pixel aspect, shown size, container and codec: a 16:9 DVD and HDV's 1440×1080
ANAMORPHIC = {"dvd-16x9.mpg": ((720, 576), "64/45", (1024, 576), ["-c:v", "mpeg2video"]),
              "hdv.mts": ((1440, 1080), "4/3", (1920, 1080),
                          ["-c:v", "libx264", "-preset", "ultrafast"])}


@pytest.mark.parametrize("name", ANAMORPHIC)
def test_anamorphic_clips_are_seen_as_shown_not_as_stored(tmp_path, name):
    # a white square as shown, half the picture's height, stored squeezed into narrower pixels:
    # the model must see a square (as stored it would be 0.7 or 0.75 as wide as high)
    (w, h), aspect, (shown_w, _), codec = ANAMORPHIC[name]
    box = h // 2
    path = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", f"color=black:s={shown_w}x{h}:r=25:d=2,drawbox=x=(iw-{box})/2:"
           f"y=(ih-{box})/2:w={box}:h={box}:color=white:t=fill,scale={w}:{h},setsar={aspect}",
           *codec, str(path))
    s = sample_clip(path, 8, BIG)
    white = s.frames[0, 0].mean(axis=2) > 128
    middle = white.shape[0] // 2
    assert white[middle].sum() == pytest.approx(112, abs=6), name  # wide ...
    assert white[:, middle].sum() == pytest.approx(112, abs=6), name  # ... as it is high
    assert s.thumbnails.shape[1:] == (180, 320, 3)  # 16:9 as shown


@pytest.mark.parametrize("name", INTERLACED)
def test_interlaced_clips_are_deinterlaced_first_field_first(kinds, name):
    rgb, (w, h), rate, _, _ = INTERLACED[name]
    frame_rate = float(Fraction(rate)) / 2
    s = sample_clip(kinds[name], 8, BIG)
    assert s.duration == pytest.approx(2.0, abs=0.05)
    assert colour(s.frames) == name_of(rgb)
    assert s.thumbnails.shape[1:] == (180, round(w * 180 / h), 3)
    for window, frames in zip(s.windows, s.frames, strict=True):
        for i, frame in enumerate(frames):
            t = (window.start + i / 10) % s.duration  # a clip shorter than a window loops
            k = int(round(t * frame_rate, 6))  # the frame on screen; its first field is 2k
            first, second = (2 * k * BAR_STEP) % BAR_SPAN, ((2 * k + 1) * BAR_STEP) % BAR_SPAN
            at = bar_position(frame)
            # a bar where the first field has it (woven fields would show two faint bars, the
            # wrong field order the second field's place)
            assert at is not None and abs(at - first) < 2 < abs(at - second), (t, at, first)


def test_an_interlaced_recording_whose_picture_changes_size_is_sampled_across_the_change(
        tmp_path):
    # a TV recording across programmes: 576i red for 4 s, then 1080i blue for 4 s, one stream
    parts = [write_interlaced(tmp_path / "sd.ts", RED, (720, 576), "50", True,
                              ["-c:v", "mpeg2video", "-q:v", "2"], seconds=4),
             write_interlaced(tmp_path / "hd.ts", BLUE, (1920, 1080), "50", True,
                              ["-c:v", "mpeg2video", "-q:v", "2"], seconds=4)]
    listing = tmp_path / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    path = tmp_path / "recording.ts"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))
    s = sample_clip(path, 8, BIG)
    assert s.duration == pytest.approx(8, abs=0.2)
    assert [colour(w[0]) for w in s.frames] == ["red", "red", "blue"]
    assert all(bar_position(w[0]) is not None for w in s.frames)  # deinterlaced both sides
    assert s.thumbnails.shape[:3] == (3, 180, 225)  # one width: the 16:9 one letterboxed


def test_a_variable_frame_rate_clip_is_sampled_at_the_frames_on_screen(kinds):
    # exact sampling: reference frames only would show a B-frame's time the frame before it
    s = sample_clip(kinds["vfr.mp4"], 8, BIG, reference_only=False)
    # MP4 keeps no duration for the last frame of a VFR stream: the header says 11.8 s
    assert s.duration == pytest.approx(VFR_SECONDS, abs=0.25)
    for window, frames in zip(s.windows, s.frames, strict=True):
        for i, frame in enumerate(frames):
            n = int(round((window.start + i / 10) * VFR_FPS, 6))  # frame n of the 30-fps source
            if n >= VFR_CHANGE * VFR_FPS:
                n -= n % 3  # after the change only every third frame is left, each shown longer
            assert frame_number(frame) == n, (window.start + i / 10, n)


def test_no_kind_is_taken_for_damaged_or_truncated(kinds):
    # seeks into MPEG-TS/PS land mid-packet and open GOPs lose their leading frames' references:
    # none of that is damage
    assert {name: sample_clip(path, 8, BIG).damage for name, path in kinds.items()} == \
        dict.fromkeys(kinds)


def test_each_kind_is_tagged_with_its_colour_by_the_model(kinds, embedder):
    words = ["red", "green", "blue"]
    text = embedder.embed_text(words)
    for name, rgb in [("av1.webm", BLUE), ("hdr10-red.mp4", RED),
                      ("avchd-1080i-tff.mts", GREEN), ("tv-480i-bff.mpg", BLUE)]:
        video = embedder.embed_video(to_model_input(sample_clip(kinds[name], 8, BIG).frames))
        assert {words[int(np.argmax(text @ v))] for v in video} == {name_of(rgb)}, name


DIGEST = ("import hashlib, sys; from pathlib import Path; from autotag.media import sample_clip\n"
          "for p in sys.argv[1:]: d = hashlib.sha256(sample_clip(Path(p), 8, 10**9).frames)"
          ".hexdigest()\n"
          "print(d)")


def test_the_same_clip_gives_the_same_pixels_in_any_process(kinds):
    """Nothing depends on what the process decoded before (OpenCV's converter once left a
    former clip's pixels in the frames it refused)."""
    clip = str(kinds["avchd-1080i-tff.mts"])

    def digest(*paths: str) -> str:
        return subprocess.run([sys.executable, "-c", DIGEST, *paths], capture_output=True,
                              text=True, check=True, timeout=120).stdout.strip()

    alone = digest(clip)
    after_others = digest(str(kinds["dvd-576i-tff.mpg"]), str(kinds["hdr10-red.mp4"]), clip)
    assert alone == after_others == hashlib.sha256(sample_clip(Path(clip), 8, BIG).frames) \
        .hexdigest()


def test_mpeg_ts_seeks_land_before_their_windows_or_back_off_boundedly(tmp_path, monkeypatch):
    """MPEG-TS has no index: FFmpeg seeks by estimate and often lands after the target. Every
    sample must still be the frame on screen, with a bounded number of seeks."""
    from autotag.media import reader
    from autotag.media.reader import SEEK_TRIES

    path = write_counted(tmp_path / "counted.ts", ["-g", "90"], seconds=60)
    seeks = []
    real_open = reader.av.open

    class Counting(ContainerProxy):
        def seek(self, *args, **kwargs):
            seeks.append(args[0])
            return self.inner.seek(*args, **kwargs)

    monkeypatch.setattr(reader.av, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    s = sample_clip(path, 8, BIG, reference_only=False)  # exact: each sample its frame
    assert s.duration == pytest.approx(60, abs=0.1)
    for window, frames in zip(s.windows, s.frames, strict=True):
        for i, frame in enumerate(frames):
            assert frame_number(frame) == int(round((window.start + i / 10) * 30, 6))
    assert 0 < len(seeks) <= 7 * (SEEK_TRIES + 1)  # windows 2..8 are seeked to, each bounded
