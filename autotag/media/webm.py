"""clip → FrameReader (seek, decode, bwdif) → the frame on screen at 12 fps → ≤ 360 px, upright,
yuv420p → VP9 (or VP8) → a silent WebM: the web app's preview of a segment no browser plays.

Reading is the reader's (the same seek, deinterlacer and frame-size limit as tagging); this
module picks the frames at PREVIEW_FPS and writes them. Where a preview is kept and how long it
may be is the web app's (autotag/web/preview_cache.py).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, VideoReformatter

from autotag.errors import AutotagError
from autotag.files import show
from autotag.media import pictures
from autotag.media.reader import (
    Clip,
    DecodeError,
    FrameReader,
    name_of,
    opened,
    reason,
    tick,
    video_stream,
)
from autotag.media.reader import duration as stream_duration

log = logging.getLogger(__name__)

PREVIEW_HEIGHT = 360  # px, at most (as shown: after rotation)
PREVIEW_FPS = 12  # frames per second of a preview
PREVIEW_BITRATE = 600_000  # bit/s: plenty for 360 px at 12 fps
PREVIEW_GOP = 2 * PREVIEW_FPS  # frames between keyframes: a browser seeks within 2 s
# libvpx in realtime mode at its fastest speed. A 10 s 1080p30 H.264 segment takes ~1.7 s on
# 2 cores, most of it decoding the source; VP9 at 360 px and 12 fps costs ~4 ms a frame.
ENCODERS = (
    ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0"}),
    ("libvpx", {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}),  # VP8
)
ENCODE_THREADS = 2  # the web app's preview is what the user waits for
DECODE_THREADS = 0  # FFmpeg's choice (frame threads on every core): the user waits for it
UNSPECIFIED = 2  # FFmpeg's AVCOL_SPC/PRI/TRC_UNSPECIFIED
MAX_PIXELS = 20_000_000  # frames larger than this are refused (sampling.max_pixels' default)


class PreviewError(AutotagError):
    """A clip that cannot be probed or previewed; the message names the file and the reason."""


def encoder() -> tuple[str, dict[str, str]]:
    """VP9 when PyAV's FFmpeg has libvpx-vp9, else VP8; with its realtime options."""
    for name, options in ENCODERS:
        if name in av.codecs_available:
            return name, options
    raise PreviewError("this PyAV has neither libvpx-vp9 nor libvpx to encode previews with")


def encode(path: Clip, start: float, end: float, out: Path,
           max_pixels: int = MAX_PIXELS) -> None:
    """Write a silent WebM of `path` from `start` to `end` s (as given) at PREVIEW_FPS, at most
    PREVIEW_HEIGHT px high as shown, to `out`. Raises PreviewError when nothing decodes or a
    frame is larger than max_pixels."""
    times = [tick(start + k / PREVIEW_FPS)
             for k in range(max(1, math.ceil((end - start) * PREVIEW_FPS - 1e-6)))]
    with _video(path) as (container, stream):
        reader = FrameReader(container, stream, max_pixels, threads=DECODE_THREADS)
        reader.wanted = times  # frames shown at none of them (most B-frames) not decoded
        with _Writer(out, reader.aspect) as writer:
            for k, frame in enumerate(_pick(_from(reader, start), times)):
                writer.write(frame, k)
            if not writer.frames:
                raise PreviewError(f"{show(name_of(path))}: no frame could be decoded "
                                   "(truncated or corrupt file)")


def _from(reader: FrameReader, start: float) -> Iterator[tuple[float, VideoFrame]]:
    """Frames from the keyframe before `start`; GIFs (frames drawn over the last) and a start
    at 0 are read through from the beginning."""
    seeked = reader.seek(start) if reader.seekable and start > 0 else None
    return seeked if seeked is not None else reader.frames()


def duration(path: Clip) -> float:
    """The clip's duration in seconds (0 when its headers do not say). PreviewError when it
    cannot be opened or has no video."""
    with _video(path) as (container, stream):
        return stream_duration(container, stream)


@contextmanager
def _video(path: Clip) -> Iterator[tuple[av.container.InputContainer, av.video.VideoStream]]:
    """The clip's container and video stream. PreviewError naming the file when FFmpeg cannot
    open or read it, it has no video, or a frame is larger than max_pixels (DecodeError)."""
    name = show(name_of(path))
    try:
        with opened(path) as container:
            stream = video_stream(container)
            if stream is None:
                raise PreviewError(f"{name}: no video stream")
            yield container, stream
    except DecodeError as exc:
        raise PreviewError(f"{name}: {exc}") from None
    except av.FFmpegError as exc:
        raise PreviewError(f"{name}: the preview could not be made ({reason(exc)})") from None


def _pick(frames: Iterator[tuple[float, VideoFrame]], times: list[float]
          ) -> Iterator[VideoFrame]:
    """The frame on screen at each time: the last one at or before it (the first one for times
    before it); the last frame for times after the stream ends."""
    current: VideoFrame | None = None
    k = 0
    for t, frame in frames:
        while k < len(times) and times[k] < t - 1e-6:
            yield current if current is not None else frame
            k += 1
        if k == len(times):
            return
        current = frame
    if current is not None:
        yield from (current for _ in times[k:])


class _Writer:
    """Frames → ≤ PREVIEW_HEIGHT px yuv420p, limited range, upright → VP9/VP8 → WebM. The size
    is fixed by the first frame (a later one of another size is scaled to it). The colour
    matrix is kept (and tagged) as the clip has it; HDR and BT.2020 are tone-mapped to BT.709
    SDR as pictures.py does, through RGB."""

    def __init__(self, out: Path, aspect: float) -> None:
        self.out, self.aspect = out, aspect
        self.container = av.open(str(out), "w", format="webm")
        self.stream: av.video.VideoStream | None = None
        self.frames = 0
        self.size: tuple[int, int] = (0, 0)  # stored orientation, before turning
        self.turns = 0  # counter-clockwise quarter turns, as pictures.py turns
        self.scaler = VideoReformatter()  # one each, kept: building one costs (pictures.py)
        self.to_yuv = VideoReformatter()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is None and self.stream is not None:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
        if kind is None:
            _fsync(self.out)

    def write(self, frame: VideoFrame, k: int) -> None:
        if self.stream is None:
            self._start(frame)
        out = self._picture(frame)
        out.pts, out.time_base = k, Fraction(1, PREVIEW_FPS)
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self.frames += 1

    def _picture(self, frame: VideoFrame) -> VideoFrame:
        if pictures.wide(frame):  # shrunk first, then tone-mapped: 8 ms a frame, not 47 at 1080p
            small = self.scaler.reformat(frame, *self.size, threads=1, interpolation="AREA")
            key = (*self.size, small.format.name, small.color_trc, small.color_primaries)
            rgb = pictures.converter(("preview", *key)).reformat(
                small, format="rgb24", threads=1, **pictures.TO_SDR)
            out = self.to_yuv.reformat(rgb, format="yuv420p", threads=1,
                                       dst_colorspace=Colorspace.ITU709,
                                       dst_color_range=ColorRange.MPEG)
        else:  # the frame's own matrix kept: no conversion, and its tag says which it is
            out = self.scaler.reformat(frame, *self.size, format="yuv420p", threads=1,
                                       interpolation="AREA", src_color_range=frame.color_range,
                                       dst_color_range=ColorRange.MPEG)
        return _turned(out, self.turns) if self.turns else out

    def _start(self, frame: VideoFrame) -> None:
        self.turns = pictures.turns(frame)
        shown_w, shown_h = frame.width * self.aspect, float(frame.height)
        if self.turns % 2:
            shown_w, shown_h = shown_h, shown_w
        height = min(PREVIEW_HEIGHT, shown_h)
        width, height = _even(shown_w * height / shown_h), _even(height)
        self.size = (height, width) if self.turns % 2 else (width, height)
        name, options = encoder()
        stream = self.container.add_stream(name, rate=PREVIEW_FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = PREVIEW_BITRATE
        ctx = stream.codec_context
        ctx.gop_size, ctx.thread_count = PREVIEW_GOP, ENCODE_THREADS
        ctx.color_range = ColorRange.MPEG
        if pictures.wide(frame):
            ctx.colorspace = Colorspace.ITU709
            ctx.color_primaries, ctx.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        else:
            if frame.colorspace != UNSPECIFIED:
                ctx.colorspace = frame.colorspace
            if frame.color_primaries != UNSPECIFIED:
                ctx.color_primaries = frame.color_primaries
            if frame.color_trc != UNSPECIFIED:
                ctx.color_trc = frame.color_trc
        self.stream = stream


def _turned(frame: VideoFrame, turns: int) -> VideoFrame:
    """A yuv420p frame (even sides) turned counter-clockwise, plane by plane: no conversion."""
    w, h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    out = VideoFrame(w, h, "yuv420p")
    for source, into in zip(frame.planes, out.planes):
        turned = np.rot90(_samples(source)[:source.height, :source.width], turns)
        _samples(into)[:into.height, :into.width] = turned
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    out.color_primaries, out.color_trc = frame.color_primaries, frame.color_trc
    return out


def _samples(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """uint8 [rows, line size] over the plane's own memory."""
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)


def _even(pixels: float) -> int:
    return max(2, round(pixels / 2) * 2)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
