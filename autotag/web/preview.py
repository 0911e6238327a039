"""path → probe (PyAV) → playable as is? else: seek → decode → bwdif → pick at 12 fps → ≤ 360 px
→ VP9 (or VP8) WebM in the preview cache.

A browser plays a clip from the store as it is only when its container and codec are on a
conservative list of what Chromium and Firefox play natively (`playability`). Any other clip gets
a short silent preview of the segment being looked at: encoded once per (content, start, end),
kept in a folder under a byte budget, least recently used deleted first (`PreviewCache`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import av.filter
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, VideoReformatter

from autotag import pictures
from autotag.errors import AutotagError
from autotag.files import show
from autotag.media import IO_TIMEOUT, deinterlacer, drained

log = logging.getLogger(__name__)

PREVIEW_MAX_SECONDS = 12.0  # a preview is at most this long
PREVIEW_MIN_SECONDS = 1.0  # s; a span shorter than this (or past the clip's end) is widened
PREVIEW_HEIGHT = 360  # px, at most (as shown: after rotation)
PREVIEW_FPS = 12  # frames per second of a preview
PREVIEW_BITRATE = 600_000  # bit/s: plenty for 360 px at 12 fps
PREVIEW_GOP = 2 * PREVIEW_FPS  # frames between keyframes: a browser seeks within 2 s
ROUND_TO = 0.1  # s; start and end are rounded to this, so a cache name is stable
# libvpx in realtime mode at its fastest speed. A 10 s 1080p30 H.264 segment takes ~1.7 s on
# 2 cores, most of it decoding the source; VP9 at 360 px and 12 fps costs ~4 ms a frame.
ENCODERS = (
    ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0"}),
    ("libvpx", {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}),  # VP8
)
ENCODE_THREADS = 2  # the web app's preview is what the user waits for
# A seek without an index (MPEG-TS/PS) can land after the target: tried again this much
# earlier (s), then from the start (media.py's SEEK_BACKOFF, for the same reason).
SEEK_RETRIES = (0.0, 1.0, 3.0, 7.0)
KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 in hex: nothing a path can be made of
TEMP_SUFFIX = ".tmp"
STALE_TEMP = 3600.0  # s; a temp file this old was left by a crash

# What Chromium and Firefox both play natively, conservatively (MDN's "Media container
# formats" and "Web video codec guide"): format name (as FFmpeg's demuxer says) → codecs.
MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MATROSKA = "matroska,webm"
PLAYABLE = {
    MP4: ("video/mp4", {"h264", "vp9", "av1"}, {"aac", "mp3", "opus", "flac"}),
    MATROSKA: ("video/webm", {"vp8", "vp9", "av1"}, {"opus", "vorbis"}),
}
EIGHT_BIT_420 = {"yuv420p", "yuvj420p"}  # H.264's only playable pixel formats (High profile)
DEEP_420 = EIGHT_BIT_420 | {"yuv420p10le"}  # VP9 profile 2 and AV1 Main 10 play too
CONTAINERS = {  # FFmpeg's demuxer names → what a person calls them
    "avi": "AVI", "mpegts": "MPEG-TS", "mpeg": "MPEG-PS", "asf": "ASF/WMV", "flv": "FLV",
    "ogg": "Ogg", "dv": "DV", "mxf": "MXF", "rm": "RealMedia", "nut": "NUT",
}
CODECS = {  # FFmpeg's decoder names → what a person calls them
    "h264": "H.264", "hevc": "HEVC", "vp8": "VP8", "vp9": "VP9", "av1": "AV1",
    "mpeg1video": "MPEG-1 video", "mpeg2video": "MPEG-2 video", "mpeg4": "MPEG-4 Part 2",
    "mjpeg": "Motion JPEG", "prores": "ProRes", "dvvideo": "DV", "theora": "Theora",
    "wmv1": "WMV", "wmv2": "WMV", "wmv3": "WMV", "vc1": "VC-1", "flv1": "Sorenson Spark",
    "h263": "H.263", "msmpeg4v3": "MS MPEG-4", "rawvideo": "uncompressed video",
    "dnxhd": "DNxHD", "cinepak": "Cinepak", "huffyuv": "HuffYUV", "ffv1": "FFV1",
}
AUDIO = {"ac3": "AC-3", "eac3": "E-AC-3", "dts": "DTS", "truehd": "TrueHD", "alac": "ALAC",
         "amr_nb": "AMR", "amr_wb": "AMR-WB", "wmav2": "WMA", "mp2": "MPEG audio layer 2"}
UNSPECIFIED = 2  # FFmpeg's AVCOL_SPC/PRI/TRC_UNSPECIFIED
CHROMA = {"422": "4:2:2", "444": "4:4:4", "440": "4:4:0", "411": "4:1:1", "410": "4:1:0"}


class PreviewError(AutotagError):
    """A clip that cannot be probed or previewed; the message names the file and the reason."""


@dataclass(frozen=True)
class Playability:
    playable: bool
    mime: str | None  # the Content-Type to serve the original with when playable
    reason: str  # why not, in a few words; "" when playable


# -- can a browser play it? --------------------------------------------------------------------


def playability(path: Path) -> Playability:
    """Whether Chromium and Firefox play `path` as it is, and as what. Decodes one frame at
    most (to see whether it is interlaced). Raises PreviewError when FFmpeg cannot open it."""
    with _open(path) as container:
        if container.format.name == "gif":
            return Playability(True, "image/gif", "")  # the page shows it as an image
        stream = _video_stream(container)
        if stream is None:
            return _not("no video stream")
        ctx = stream.codec_context
        codec = ctx.name
        allowed = PLAYABLE.get(container.format.name)
        if not any(codec in codecs for _, codecs, _ in PLAYABLE.values()):
            return _not(_codec_reason(codec, ctx.format.name if ctx.format else None))
        if allowed is None:
            return _not(f"{_container_name(container)} container")
        mime, codecs, audio = allowed
        if codec not in codecs:
            return _not(f"{CODECS[codec]} in {_container_name(container)}")
        depth = _format_reason(codec, ctx.format.name if ctx.format else None)
        if depth:
            return _not(depth)
        for track in container.streams.audio:
            name = track.codec_context.name if track.codec_context else "unknown"
            if name not in audio:  # whether the video would then play alone differs
                name = "PCM" if name.startswith("pcm_") else AUDIO.get(name, name.upper())
                return _not(f"{name} audio in {_container_name(container)}")
        if _interlaced(container, stream):
            return _not("interlaced")
        return Playability(True, mime, "")


def _not(reason: str) -> Playability:
    return Playability(False, None, reason)


def _container_name(container: av.container.InputContainer) -> str:
    name = container.format.name
    if name == MATROSKA:
        return "WebM/Matroska"
    if name == MP4:
        return "MP4/MOV"
    return CONTAINERS.get(name, name.split(",")[0].upper())


def _codec_reason(codec: str, pix_fmt: str | None) -> str:
    name = CODECS.get(codec, codec.upper())
    if codec == "hevc":  # Firefox plays none; Chromium only with the platform's decoder
        return f"{_bits(pix_fmt)}-bit HEVC" if _bits(pix_fmt) != 8 else "HEVC"
    return name if name.endswith("video") else f"{name} video"


def _format_reason(codec: str, pix_fmt: str | None) -> str:
    """Why this pixel format does not play with this codec ("" when it does)."""
    if pix_fmt in (EIGHT_BIT_420 if codec == "h264" else DEEP_420):
        return ""
    if pix_fmt is None:
        return f"{CODECS[codec]} of an unknown pixel format"
    if pix_fmt.startswith(("gbr", "rgb", "bgr")):
        return f"RGB {CODECS[codec]}"
    for digits, chroma in CHROMA.items():
        if digits in pix_fmt:
            return f"{chroma} {CODECS[codec]}"
    if _bits(pix_fmt) != 8:
        return f"{_bits(pix_fmt)}-bit {CODECS[codec]}"
    return f"{CODECS[codec]} in {pix_fmt}"


def _bits(pix_fmt: str | None) -> int:
    """yuv420p10le → 10; 8 for formats that name no depth."""
    match = re.search(r"p(\d+)(le|be)$", pix_fmt or "")
    return int(match.group(1)) if match else 8


def _interlaced(container: av.container.InputContainer, stream: av.video.VideoStream) -> bool:
    """The first frame's own flag (or the stream's field order when no frame decodes)."""
    try:
        for frame in container.decode(stream):
            return bool(frame.interlaced_frame)
    except av.FFmpegError:
        pass
    return (stream.codec_context.field_order or "progressive") not in ("progressive", "unknown")


# -- opening -----------------------------------------------------------------------------------


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), timeout=(IO_TIMEOUT, IO_TIMEOUT), metadata_errors="replace")
    except (av.FFmpegError, OSError) as exc:
        raise PreviewError(f"{show(path)}: not a video FFmpeg can read ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    return (getattr(exc, "strerror", None) or type(exc).__name__).strip().replace("\n", " ")


def _video_stream(container: av.container.InputContainer) -> av.video.VideoStream | None:
    streams = [s for s in container.streams.video
               if not s.disposition & av.stream.Disposition.attached_pic  # not cover art
               and s.codec_context is not None and s.time_base is not None]
    return streams[0] if streams else None


def _duration(container: av.container.InputContainer, stream: av.video.VideoStream) -> float:
    """Seconds, from the stream's header, else the container's; 0 when neither knows."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


# -- the cache ---------------------------------------------------------------------------------


class PreviewCache:
    """Previews in `folder`, at most `max_bytes` of them: `get` encodes a preview once, and
    concurrent calls for the same one wait for that encoding. Thread-safe; one per process."""

    def __init__(self, folder: Path, max_bytes: int = 512 * 2**20) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()  # the lock table and eviction
        self._locks: dict[str, list] = {}  # preview name → [its lock, callers holding or waiting]
        self._remove_stale_temps()

    def get(self, key: str, path: Path, start: float, end: float) -> Path:
        """The WebM preview of `path` (content sha256 `key`) from `start` to `end` seconds,
        clamped to the clip and to PREVIEW_MAX_SECONDS. Raises ValueError for a key that is not
        a sha256, PreviewError for a clip that cannot be decoded."""
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ValueError("a preview key is a sha256 in lower-case hex")
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError("a preview's start and end are finite seconds")
        with _open(path) as container:
            stream = _video_stream(container)
            if stream is None:
                raise PreviewError(f"{show(path)}: no video stream")
            start, end = clamp(start, end, _duration(container, stream))
        target = self.folder / f"{key}-{start:.1f}-{end:.1f}.webm"
        with self._lock_for(target.name):
            if target.exists():
                _touch(target)
                return target
            began = time.monotonic()
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
            try:
                encode(path, start, end, temp)
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
            log.info("preview of %s %.1f–%.1f s encoded in %.1f s", show(path), start, end,
                     time.monotonic() - began)
        self._evict(keep=target)
        return target

    def _lock_for(self, name: str) -> _Held:
        with self._guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        return _Held(self, name, entry)

    def _release(self, name: str, entry: list) -> None:
        with self._guard:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[name]  # the table holds only previews being made

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used previews (by mtime, which `get` touches) until the
        folder holds at most max_bytes; never `keep`, the one just made."""
        with self._guard:
            files = []
            for entry in os.scandir(self.folder):
                if entry.name.endswith(".webm") and not entry.name.startswith("."):
                    try:
                        stat = entry.stat()
                    except FileNotFoundError:
                        continue
                    files.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
            total = sum(size for _, size, _ in files)
            for _, size, file in sorted(files):
                if total <= self.max_bytes:
                    break
                if file == keep or file.name in self._locks:
                    continue
                file.unlink(missing_ok=True)
                total -= size
                log.debug("evicted preview %s", file.name)

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                try:
                    if now - entry.stat().st_mtime > STALE_TEMP:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    pass


class _Held:
    """One preview's lock, held for a `with` block; the table entry goes when nobody waits."""

    def __init__(self, cache: PreviewCache, name: str, entry: list) -> None:
        self.cache, self.name, self.entry = cache, name, entry

    def __enter__(self) -> None:
        self.entry[0].acquire()

    def __exit__(self, *exc: object) -> None:
        self.entry[0].release()
        self.cache._release(self.name, self.entry)


def _touch(path: Path) -> None:
    """Mark a preview used now: its mtime is its place in the LRU order."""
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


def clamp(start: float, end: float, duration: float) -> tuple[float, float]:
    """(start, end) rounded to ROUND_TO, inside [0, duration] (when known), at least
    PREVIEW_MIN_SECONDS long where the clip allows and at most PREVIEW_MAX_SECONDS."""
    last = math.floor(duration / ROUND_TO + 1e-6) * ROUND_TO if duration > 0 else math.inf
    start = min(max(0.0, _round(start)), last)
    end = min(max(_round(end), start + PREVIEW_MIN_SECONDS), start + PREVIEW_MAX_SECONDS, last)
    start = max(0.0, min(start, end - PREVIEW_MIN_SECONDS))
    return _round(start), _round(end)


def _round(seconds: float) -> float:
    return round(round(seconds / ROUND_TO) * ROUND_TO, 1)


# -- encoding ----------------------------------------------------------------------------------


def encoder() -> tuple[str, dict[str, str]]:
    """VP9 when PyAV's FFmpeg has libvpx-vp9, else VP8; with its realtime options."""
    for name, options in ENCODERS:
        if name in av.codecs_available:
            return name, options
    raise PreviewError("this PyAV has neither libvpx-vp9 nor libvpx to encode previews with")


def encode(path: Path, start: float, end: float, out: Path) -> None:
    """Write a silent WebM of `path` from `start` to `end` s (as given) at PREVIEW_FPS, at most
    PREVIEW_HEIGHT px high as shown, to `out`. Raises PreviewError when nothing decodes."""
    times = [start + k / PREVIEW_FPS
             for k in range(max(1, math.ceil((end - start) * PREVIEW_FPS - 1e-6)))]
    try:
        with _open(path) as container:
            stream = _video_stream(container)
            if stream is None:
                raise PreviewError(f"{show(path)}: no video stream")
            stream.codec_context.thread_type = "AUTO"
            with _Writer(out, _aspect(stream)) as writer:
                for k, frame in enumerate(_pick(_Frames(container, stream).from_(start), times)):
                    writer.write(frame, k)
                if not writer.frames:
                    raise PreviewError(f"{show(path)}: no frame could be decoded "
                                       "(truncated or corrupt file)")
    except av.FFmpegError as exc:
        raise PreviewError(f"{show(path)}: the preview could not be made ({_why(exc)})") from None


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


class _Frames:
    """(seconds, frame) of one stream from a time on, in presentation order, deinterlaced (as
    media.py does: bwdif, built when a frame says it is interlaced)."""

    def __init__(self, container: av.container.InputContainer,
                 stream: av.video.VideoStream) -> None:
        self.container, self.stream = container, stream
        self.first = stream.start_time or 0
        self.deinterlacer: av.filter.Graph | None = None

    def from_(self, start: float) -> Iterator[tuple[float, VideoFrame]]:
        """Seek to the keyframe before `start`; where that lands after it (no index), again
        further back, then from the start. GIFs (frames drawn over the last) are read through."""
        if self.container.format.name == "gif" or start <= 0:
            return self._decoded()
        for back in SEEK_RETRIES:
            aim = max(0.0, start - back)
            try:
                self.container.seek(self.first + int(aim / self.stream.time_base),
                                    stream=self.stream, backward=True)
            except av.FFmpegError as exc:  # not seekable: nothing moved, decode on from here
                log.debug("seeking failed (%s): decoding from the start", _why(exc))
                return self._decoded()
            self.deinterlacer = None
            frames = self._decoded()
            head = next(frames, None)
            if head is None or head[0] <= start + 1e-6 or aim == 0.0:
                return _chain(head, frames)
            frames.close()
        self.container.seek(self.first, stream=self.stream, backward=True)
        return self._decoded()

    def _decoded(self) -> Iterator[tuple[float, VideoFrame]]:
        for packet in self._demux():
            try:
                decoded = self.stream.codec_context.decode(packet)
            except av.FFmpegError:  # one bad packet, not the rest
                continue
            for frame in decoded:
                yield from self._deinterlaced(frame)
        if self.deinterlacer is not None:
            self.deinterlacer.push(None)
            yield from self._pull()

    def _demux(self) -> Iterator[av.Packet]:
        try:
            yield from self.container.demux(self.stream)
        except (av.FFmpegError, IndexError) as exc:  # IndexError: see media.py's _demux
            log.debug("reading stopped: %s", exc)  # a truncated file: preview what decoded
            yield av.Packet()  # flushes the decoder

    def _deinterlaced(self, frame: VideoFrame) -> Iterator[tuple[float, VideoFrame]]:
        if self.deinterlacer is None and frame.interlaced_frame:
            self.deinterlacer = deinterlacer(frame, self.stream.time_base)
        if self.deinterlacer is None:
            yield from self._timed(frame)
            return
        self.deinterlacer.push(frame)
        yield from self._pull()

    def _pull(self) -> Iterator[tuple[float, VideoFrame]]:
        for frame in drained(self.deinterlacer):
            yield from self._timed(frame)

    def _timed(self, frame: VideoFrame) -> Iterator[tuple[float, VideoFrame]]:
        pts = frame.pts if frame.pts is not None else frame.dts  # AVI: decode time only
        if pts is not None:
            time_base = frame.time_base or self.stream.time_base
            yield float(pts * time_base) - float(self.first * self.stream.time_base), frame


def _chain(head: tuple | None, rest: Iterator) -> Iterator:
    if head is not None:
        yield head
    yield from rest


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
        if _wide(frame):  # shrunk first, then tone-mapped: 8 ms a frame, not 47 at 1080p
            small = self.scaler.reformat(frame, *self.size, threads=1, interpolation="AREA")
            key = (*self.size, small.format.name, small.color_trc, small.color_primaries)
            rgb = pictures.converter(("preview", *key)).reformat(small, format="rgb24", threads=1, **pictures.TO_SDR)
            out = self.to_yuv.reformat(rgb, format="yuv420p", threads=1,
                                       dst_colorspace=Colorspace.ITU709,
                                       dst_color_range=ColorRange.MPEG)
        else:  # the frame's own matrix kept: no conversion, and its tag says which it is
            out = self.scaler.reformat(frame, *self.size, format="yuv420p", threads=1,
                                       interpolation="AREA", src_color_range=frame.color_range,
                                       dst_color_range=ColorRange.MPEG)
        return _turned(out, self.turns) if self.turns else out

    def _start(self, frame: VideoFrame) -> None:
        self.turns = round(frame.rotation / 90) % 4
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
        if _wide(frame):
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


def _aspect(stream: av.video.VideoStream) -> float:
    """A stored pixel's width over its height (an anamorphic DVD's 64:45), as the container
    says, else the bitstream (as media.py reads it); 1 when neither does."""
    for ratio in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if ratio and 0.1 < ratio < 10:
            return float(ratio)
    return 1.0


def _even(pixels: float) -> int:
    return max(2, round(pixels / 2) * 2)


def _wide(frame: VideoFrame) -> bool:
    """HDR or BT.2020: tone-mapped to SDR, as pictures.py does for the model's frames."""
    return frame.color_trc in pictures.HDR_TRANSFERS or \
        frame.color_primaries == ColorPrimaries.BT2020


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
