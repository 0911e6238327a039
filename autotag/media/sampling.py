"""path → FrameReader (seek, decode, bwdif) → the frames on screen at each sample time → the
model's squares and thumbnails (pictures.py) → windows.

A clip becomes up to `max_windows` windows of WINDOW_FRAMES frames at WINDOW_FPS, spread evenly
over its whole duration; frame i of a window is the frame on screen at `start + i / WINDOW_FPS`:
the last frame whose presentation timestamp is at or before that time, so variable frame rates
and GIF delays are sampled as they play. A window reached by seeking starts at the keyframe
before its even place (the first and last stay at the clip's start and end), so a 10-minute clip
costs about what its windows hold, not what lies before them. With
`sampling.skip_nonref_frames`, a frame on screen at no sample time that no other frame refers to
(most B-frames) is not decoded at all: no sample changes. With `sampling.reference_frames_only`
as well (the default), no such frame is decoded even when a sample time falls on it: that sample
takes the frame before it, a frame or two (33-67 ms at 30 fps) earlier; the scores' cosine to
exact sampling is above 0.9998 on the test clips, and H.264 decodes 15 %, HEVC 25 % less (issue
34). Memory holds the windows at 224 px and a few full-size frames, whatever the clip's length.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.frame import VideoFrame

from autotag.clip import Window
from autotag.files import show
from autotag.media import pictures
from autotag.media.reader import (
    DecodeError,
    FrameReader,
    open_input,
    reason,
    tick,
    video_stream,
)
from autotag.media.reader import duration as stream_duration

log = logging.getLogger(__name__)

WINDOW_FRAMES = 32  # frames per model window
WINDOW_FPS = 10.0  # the model was trained on ~10 fps clips
WINDOW_SECONDS = WINDOW_FRAMES / WINDOW_FPS  # 3.2 s
# sampling.reference_frames_only from 29.97 fps up, where samples fall on every third frame or
# further apart: a B-pyramid's references come every other frame, IBBP's every third, so no two
# sample times fall back on the same one. Slower clips (25, 24, 15 fps) are sampled exactly;
# the reader's gap check turns it off where references come further apart still (IBBBP).
REFERENCE_ONLY_FROM_FPS = 29.0
# Without an index (MPEG-TS/PS) where the keyframe before a window is is unknown: a gap to the
# next window longer than this is seeked over, a shorter one decoded through.
SEEK_GAP = 4.0  # s
# Frames at least this many times the model's square on their shorter side (720p and up) are
# decoded without the in-loop deblocking filter (reader.LOOP_FILTER_SKIPPED): its edges are a
# pixel or two wide, and the 224-px square is shrunk by 3x or more, so the model sees what it
# saw (scores' cosine to full decoding >= 0.999: tests/test_decode_speed.py) for less CPU a
# frame (benchmarks.decoding measures it). Smaller frames decode in full.
SKIP_LOOP_FILTER_FROM = 3  # × pictures.FRAME_SIZE
# A window reached by seeking starts at the keyframe before it when that is at most this earlier:
# no frame before its first sample is decoded (a 10-minute clip costs what its windows hold).
KEYFRAME_PULL = 10.0  # s
# A stream whose frames end this much (or a frame) before its header's duration was cut short.
TRUNCATED_SLACK = 1.0  # s
SEEK_AHEAD = 1.5 / WINDOW_FPS  # s; a target nearer than this to the last frame is decoded on to
TICK_SLACK = 1e-5  # s: ten ticks, more than rounding to the grid makes of a frame's length


@dataclass(frozen=True)
class Sampled:
    """A clip's model windows.

    frames: uint8 [n_windows, 32, 224, 224, 3] RGB.
    thumbnails: uint8 [n_windows, THUMB_HEIGHT, w, 3] RGB, each window's middle frame uncropped.
    """

    duration: float  # seconds: as far as frames decoded, when short of the header's
    windows: tuple[Window, ...]
    frames: np.ndarray
    thumbnails: np.ndarray
    damage: str | None = None  # what of a damaged or truncated file could not be decoded


def window_starts(duration: float, max_windows: int) -> list[float]:
    """Start times of n = min(max_windows, ceil(duration / 3.2)) windows, at least one, spread
    evenly so the first starts at 0 and the last ends at the clip's end. A single window of a
    longer clip (max_windows: 1) sits in its middle, the likeliest place for what it is about."""
    n = max(1, min(max_windows, math.ceil(max(duration, 0.0) / WINDOW_SECONDS - 1e-9)))
    last = max(0.0, duration - WINDOW_SECONDS)
    return [last / 2] if n == 1 else [last * i / (n - 1) for i in range(n)]


def sample_clip(path: Path, max_windows: int, max_pixels: int,
                timeout: float | None = None, skip_nonref: bool = True,
                shown: Path | None = None, reference_only: bool = True) -> Sampled:
    """Decode the windows of one clip. Raises DecodeError with the reason.

    skip_nonref: leave out frames no sample shows and no other frame refers to.
    reference_only (with skip_nonref): leave them out even where a sample shows one; the
    sample takes the frame before it.
    shown: the clip's name in log lines when `path` is not it (a /proc/self/fd/N).
    """
    if path.stat().st_size == 0:
        raise DecodeError("the file is empty")
    deadline = time.monotonic() + timeout if timeout else None
    try:
        container = open_input(path)
    except av.FFmpegError as exc:
        raise DecodeError(f"not a video FFmpeg can read ({reason(exc)})") from None
    try:
        with container:
            sampled = _Clip(container, max_pixels, deadline, skip_nonref,
                            reference_only).sample(max_windows)
    except av.FFmpegError as exc:  # what decoding packet by packet does not absorb
        raise DecodeError(f"the file could not be read ({reason(exc)})") from None
    if sampled.damage:
        log.warning("%s: %s; tagged from what decoded", show(shown or path), sampled.damage)
    return sampled


class _Clip:
    """One open clip's windows: which frame each sample time shows, read through a FrameReader
    that seeks where cheaper than decoding on. Owns its reader: nothing is shared between
    threads."""

    def __init__(self, container: av.container.InputContainer, max_pixels: int,
                 deadline: float | None, skip_nonref: bool, reference_only: bool) -> None:
        stream = video_stream(container)
        if stream is None:
            raise DecodeError("no video stream FFmpeg can decode")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            kind = container.format.name.removesuffix("_pipe").replace("image2", "picture")
            raise DecodeError(f"a still image ({kind}), not a video")
        ctx = stream.codec_context
        if ctx.width * ctx.height > max_pixels:
            raise DecodeError(f"frames of {ctx.width}×{ctx.height} are larger than "
                              f"sampling.max_pixels ({max_pixels}); raise it to tag this clip")
        shrunk = min(ctx.width, ctx.height) >= SKIP_LOOP_FILTER_FROM * pictures.FRAME_SIZE
        self.reader = FrameReader(container, stream, max_pixels, skip_loop_filter=shrunk,
                                  deadline=deadline)
        self.container, self.stream = container, stream
        self.skip_nonref = skip_nonref
        self.reference_only = reference_only
        self.sought = -math.inf  # the last target seeked for
        self.ran_out = False  # frames ended before the last sample time: a truncated file?

    def sample(self, max_windows: int) -> Sampled:
        duration = self._duration()
        starts = self._at_keyframes(window_starts(duration, max_windows))
        targets = [tick(s + _offset(i, duration)) for s in starts for i in range(WINDOW_FRAMES)]
        picked, last_time = self._pick(targets)
        if not picked:
            raise DecodeError(f"no frame could be decoded from the {self.reader.ctx.name} video "
                              "(truncated or corrupt file)")
        damage = []
        rate = self.stream.guessed_rate or self.stream.average_rate
        decoded_to = last_time + (1 / float(rate) if rate else 0.0)  # the last frame's end
        if self.ran_out and duration - decoded_to > max(TRUNCATED_SLACK, decoded_to - last_time):
            if self.stream.duration or self.reader.read_failed:  # not a container's longer audio
                damage.append(f"its frames end at {decoded_to:.1f} s of the {duration:.1f} s "
                              "its header says (cut short)")
            duration = decoded_to
        damaged = self.reader.damaged
        if damaged:
            damage.append(f"{damaged} damaged frame{'s' * (damaged > 1)} concealed by the "
                          "decoder")
        frames, thumbs, windows = [], [], []
        for w, start in enumerate(starts):
            if w and start > last_time:  # a truncated file: keep the windows that decoded
                break
            window = [picked[w * WINDOW_FRAMES + i] for i in range(WINDOW_FRAMES)]
            frames += [shown.model for shown in window]
            thumbs.append(window[WINDOW_FRAMES // 2].thumb)
            end = min(start + WINDOW_SECONDS, max(duration, last_time))
            windows.append(Window(start, max(end, start)))
        # one copy into the clip's array (uint8 [n, 32, 224, 224, 3]), not one per window too
        clip = np.stack(frames).reshape(len(windows), WINDOW_FRAMES, *frames[0].shape)
        return Sampled(duration if duration > 0 else last_time, tuple(windows), clip,
                       np.stack([pictures.fit(t, thumbs[0].shape[1]) for t in thumbs]),
                       "; ".join(damage) or None)

    def _duration(self) -> float:
        return stream_duration(self.container, self.stream)

    def _pick(self, targets: list[float]) -> tuple[dict[int, _Shown], float]:
        """Target index → the frame on screen at that time; and the last frame's time.

        A target is given a frame once the next frame's time is known: the last frame at or
        before it. Targets before the first frame (or the first after a seek) take that frame;
        targets past the end of a truncated stream take the last frame.
        """
        order = sorted(range(len(targets)), key=targets.__getitem__)
        if self.skip_nonref:
            self.reader.wanted = sorted(targets)
            rate = self.stream.guessed_rate or self.stream.average_rate
            if self.reference_only and rate and float(rate) >= REFERENCE_ONLY_FROM_FPS:
                self.reader.reference_gap = 1 / WINDOW_FPS  # never a frame for two samples
        picked: dict[int, _Shown] = {}
        frames = self.reader.frames()
        current: _Shown | None = None  # the last decoded frame, on screen until the next
        p, last_time = 0, None
        while p < len(order):
            seeked = self._seek_for(targets[order[p]], last_time)
            if seeked is not None:
                frames.close()
                frames, current = seeked, None  # nothing before a seek shows after it
            item = next(frames, None)
            if item is None:  # the stream ended with targets after its last frame
                self.ran_out = True
                break
            last_time, frame = item
            shown = _Shown(frame)
            late = []  # on screen before this frame: the previous frame's
            while p < len(order) and targets[order[p]] < last_time:
                late.append(order[p])
                p += 1
            self._assign(picked, late, current or shown)  # none before it: the earliest
            if current is not None:  # one full-size frame at a time, not one per target
                current.frame = None
            current = shown
        frames.close()
        if current is not None:  # the last frame stays on screen to the end
            self._assign(picked, [i for i in order if i not in picked], current)
        return picked, last_time or 0.0

    def _assign(self, picked: dict[int, _Shown], targets: list[int], shown: _Shown) -> None:
        """These targets show `shown`: converted once to its model frame, and to a thumbnail
        when it is a window's middle frame, while the full-size frame is still there."""
        for i in targets:
            picked[i] = shown
            if shown.model is None:
                shown.model = pictures.model_square(shown.frame, self.reader.aspect)
            if i % WINDOW_FRAMES == WINDOW_FRAMES // 2 and shown.thumb is None:
                shown.thumb = pictures.thumbnail(shown.frame, self.reader.aspect)

    # -- seeking -------------------------------------------------------------------------------

    def _at_keyframes(self, starts: list[float]) -> list[float]:
        """A window between the first and last that a seek reaches starts at the keyframe
        before it (at most KEYFRAME_PULL earlier, never in the window before), where the seek
        lands. Clips without an index (MPEG-TS/PS, GIF) keep their windows: keyframes unknown."""
        moved, probed = starts[:1], False
        for start in starts[1:-1]:
            end = moved[-1] + WINDOW_SECONDS
            key = self.reader.keyframe_before(start) if self.reader.seekable else None
            if key is not None and key > end:
                probed, key = True, self.reader.keyframe_time(start)
            moved.append(key if key is not None and end < key <= start
                         and start - key <= KEYFRAME_PULL else start)
        if probed:  # back to where decoding starts
            self.reader.rewind()
        return moved + starts[1:][-1:]

    def _seek_for(self, target: float, last_time: float | None) -> Iterator | None:
        """Frames from the keyframe before `target` when that is cheaper than decoding on to it
        (None: decode on). With an index that reaches the target, where the keyframe before it
        is decides; without one (MPEG-TS/PS), a gap longer than SEEK_GAP."""
        here = last_time if last_time is not None else 0.0
        if not self.reader.seekable or target - here <= SEEK_AHEAD or target <= self.sought:
            return None  # one seek per target at most: where it landed, decoding goes on
        self.sought = target
        key = self.reader.keyframe_before(target)
        if (key is not None and key <= here + TICK_SLACK) or \
                (key is None and target - here < SEEK_GAP):
            return None
        return self.reader.seek(target)


def _offset(i: int, duration: float) -> float:
    """Frame i's time in its window; a clip shorter than a window is looped to fill it."""
    offset = i / WINDOW_FPS
    if 0 < duration < WINDOW_SECONDS:
        offset %= duration
    return offset


class _Shown:
    """A decoded frame and, once a sample shows it, its model frame and thumbnail (uint8 RGB)."""

    __slots__ = ("frame", "model", "thumb")

    def __init__(self, frame: VideoFrame) -> None:
        self.frame: VideoFrame | None = frame
        self.model: np.ndarray | None = None
        self.thumb: np.ndarray | None = None
