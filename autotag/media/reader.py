"""clip → open (PyAV, FFmpeg's timeouts) → seek by timestamp → decode → bwdif if interlaced →
(seconds, frame) in presentation order.

The one frame reader: window sampling (sampling.py), thumbnails (pictures.py turns its frames
into pictures) and the web preview's transcoding (webm.py) all read frames through `FrameReader`,
so a rule of reading (the frame-size limit on every frame, the deinterlacer rebuilt when the
picture changes size, a seek that landed after its target tried again further back, a read
error ending the stream without losing the frames the decoder holds) is written once.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Protocol

import av
import av.filter
from av.video.frame import VideoFrame

from autotag.errors import AutotagError

log = logging.getLogger(__name__)

IO_TIMEOUT = 30.0  # s; FFmpeg's own open and read timeouts: a stuck read (a network share) ends
# A damaged or odd metadata tag must not stop the pictures from being read: PyAV 18 decodes tags
# strictly unless told to replace; 19 dropped the option (always UTF-8 with surrogateescape, which
# never fails). 19's wheels need Python 3.12, so 3.11 keeps 18: both are supported (issue 29).
OPEN_OPTIONS = {"metadata_errors": "replace"} if int(av.__version__.split(".")[0]) < 19 else {}
# Packets looked at on each side, in decode order, for when a frame leaves the screen (the next
# presentation timestamp): B-pyramids reorder over far fewer than this.
PTS_NEIGHBOURS = 16
# reference_only: this many packets in a row without a frame out means the stream marks (nearly)
# every frame as one nothing refers to; it is then decoded as `wanted` alone says, to the end
STARVED_PACKETS = 2 * PTS_NEIGHBOURS
# One decoding thread per clip: on 2 cores the model keeps every core busy and parallelism comes
# from the engine's decode workers, one clip each; frame threads cost more CPU than they save
# (issue 13; PySceneDetect's PyAV backend turns them off) and x264 writes one slice a frame.
DECODE_THREADS = 1
# Decoding without the in-loop deblocking filter (FFmpeg's skip_loop_filter; HEVC's SAO too),
# for readers whose pictures are shrunk by 3x or more (sampling.py decides when).
LOOP_FILTER_SKIPPED = {"skip_loop_filter": "all"}
# bwdif on frames flagged interlaced only, one output frame per frame, field order per frame.
DEINTERLACER = ("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
# Containers without an index seek by estimate and can land after the target (MPEG-TS: 19 seeks
# in 20, by seconds; issue 13): such a seek is tried again 1, 3, 7 s earlier, then from the start.
SEEK_BACKOFF = 1.0  # s, doubled on each try
SEEK_TRIES = 4  # seeks per target before the last one, to the start: bounded, never a loop
TICK_SLACK = 1e-5  # s: ten ticks, more than rounding to the grid makes of a frame's length


class DecodeError(AutotagError):
    """This file cannot be read; the message is the reason, without the path."""


class Opens(Protocol):
    """A clip opened through the library's opener (autotag.opener.Source): read from the file
    object it gives, never by its path (issue 30: a path is a race)."""

    path: Path

    def open(self) -> BinaryIO: ...


Clip = Path | Opens


def quiet_decoder(debug: bool = False) -> None:
    """FFmpeg's warnings about broken files ("[h264 @ 0x...] error while decoding MB") stay off
    stderr: autotag reports a bad file in one line. With debug they go to the `libav.*` loggers."""
    av.logging.set_level(av.logging.VERBOSE if debug else None)


def open_input(source: Path | BinaryIO) -> av.container.InputContainer:
    """`source` (a path, or a file object already opened and checked) opened for reading with
    FFmpeg's timeouts, whatever PyAV's version."""
    name = str(source) if isinstance(source, Path) else source
    return av.open(name, timeout=(IO_TIMEOUT, IO_TIMEOUT), **OPEN_OPTIONS)


@contextmanager
def opened(clip: Clip) -> Iterator[av.container.InputContainer]:
    """The clip's container: a path is opened by FFmpeg; a Source's checked file object is
    read through PyAV (and closed with the container). DecodeError when FFmpeg cannot open it;
    the opener's own errors (NotServable) pass up."""
    file = None if isinstance(clip, Path) else clip.open()
    try:
        try:
            container = open_input(clip if file is None else file)
        except (av.FFmpegError, OSError) as exc:
            raise DecodeError(f"not a video FFmpeg can read ({reason(exc)})") from None
        with container:
            yield container
    finally:
        if file is not None:
            file.close()


def name_of(clip: Clip) -> Path:
    """The clip's path, for messages."""
    return clip if isinstance(clip, Path) else clip.path


def reason(exc: Exception) -> str:
    """FFmpeg's reason in one line, without the path PyAV appends."""
    return (getattr(exc, "strerror", None) or type(exc).__name__).strip().replace("\n", " ")


def video_stream(container: av.container.InputContainer) -> av.video.VideoStream | None:
    """The first video stream that is not cover art and that FFmpeg can decode."""
    streams = [s for s in container.streams.video
               if not s.disposition & av.stream.Disposition.attached_pic
               and s.codec_context is not None and s.time_base is not None]
    return streams[0] if streams else None


def duration(container: av.container.InputContainer, stream: av.video.VideoStream) -> float:
    """Seconds, from the stream's header, else the container's; 0 when neither knows."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return (container.duration or 0) / av.time_base


def pixel_aspect(stream: av.video.VideoStream) -> float:
    """A stored pixel's width over its height (an anamorphic 16:9 DVD's is 64:45), as the
    container says, else the bitstream; 1 when neither does (or says something absurd)."""
    for ratio in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if ratio and 0.1 < ratio < 10:
            return float(ratio)
    return 1.0


def limit_pixels(ctx: av.codec.context.CodecContext, max_pixels: int) -> None:
    """FFmpeg's own cap on a decoded picture (AVCodecContext.max_pixels), set before the decoder
    opens: a frame past it is refused before its buffer is allocated. The header's size is
    only the first part's (issue 30: 320×240, then 16000×16000 frames took 1.28 GB)."""
    ctx.options = {**ctx.options, "max_pixels": str(max_pixels)}


def too_large(width: int, height: int, max_pixels: int) -> None:
    """DecodeError if a frame (or the size the decoder was told of) exceeds max_pixels."""
    if width * height > max_pixels:
        raise DecodeError(f"frames of {width}×{height} are larger than sampling.max_pixels "
                          f"({max_pixels}); raise it to tag this clip")


def tick(seconds: float) -> float:
    """Times compared on a microsecond grid: 2.4 + 0.3 and a frame's 2.7 s are the same
    instant, so a sample at a frame's start takes that frame, not the one before."""
    return round(seconds, 6)


class FrameReader:
    """One video stream of an open container: seeked by timestamp, decoded forward one packet
    at a time, deinterlaced, each frame with its time in seconds from the stream's first. Owns
    its decoder and deinterlacer: nothing is shared between threads.

    wanted: sorted times (s) a caller will look at; a frame shown at none of them that no other
    frame refers to (most B-frames) is not decoded. None: every frame is decoded.
    reference_gap (with `wanted`), seconds: no frame that nothing refers to is decoded, shown or
    not, while the reference frames come at least this often: a wanted time on one sees the
    reference frame before it, a frame or two earlier. Sparser references (IBBP at 25 fps, a
    15-fps clip) would show one frame twice: from the first such gap on, `wanted` alone decides.
    Progressive pictures only (bwdif reads the frames either side of the one it shows).
    None: off.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.VideoStream,
                 max_pixels: int, *, threads: int = DECODE_THREADS, skip_loop_filter: bool = False,
                 deadline: float | None = None) -> None:
        self.container, self.stream = container, stream
        ctx = stream.codec_context
        if threads != 1:  # 0: FFmpeg's choice (the preview's: a person waits for it)
            ctx.thread_type, ctx.thread_count = "AUTO", threads
        else:
            ctx.thread_type, ctx.thread_count = "NONE", 1
        limit_pixels(ctx, max_pixels)
        if skip_loop_filter:
            ctx.options = {**ctx.options, **LOOP_FILTER_SKIPPED}  # read when the codec opens
        self.ctx = ctx
        self.max_pixels = max_pixels
        self.deadline = deadline
        self.aspect = pixel_aspect(stream)
        self.start = stream.start_time or 0  # pts of the stream's first frame
        self.start_seconds = float(self.start * stream.time_base)
        self.seconds_per_tick = float(stream.time_base)  # floats: Fractions cost µs a packet
        # GIF frames are drawn over the ones before: read through, never seeked into
        self.seekable = container.format.name != "gif"
        self.wanted: list[float] | None = None
        self.reference_gap: float | None = None
        self.unanswered = 0  # packets sent since the decoder last gave a frame
        self.last_out: float | None = None  # the last frame's time, since the start or a seek
        self.read_failed = False  # reading the file stopped on an error
        self.damaged = 0  # frames the decoder flagged or packets it refused, once in step
        self.in_step = False  # a clean frame came since the start or the last seek: before it,
        # a seek's leading frames may miss their references and TS packets be cut (no damage)
        self.deinterlacer: av.filter.Graph | None = None
        self.deinterlaced: tuple = ()  # the size and format the deinterlacer was built for
        self.interlaced = False  # a frame said so: its neighbours are decoded too

    # -- seeking -------------------------------------------------------------------------------

    def seek(self, target: float) -> Iterator[tuple[float, VideoFrame]] | None:
        """Frames from the keyframe before `target` (s), checked to have landed at or before it:
        after it (an estimate without an index), tried again further back, at last from the
        start. None when the container cannot seek (then nothing moved: read on)."""
        for attempt in range(SEEK_TRIES + 1):
            aim = max(0.0, target - SEEK_BACKOFF * (2 ** attempt - 1))
            if attempt == SEEK_TRIES:
                aim = 0.0
            try:
                self.container.seek(self.pts(aim), stream=self.stream, backward=True)
            except av.FFmpegError as exc:
                if attempt == 0:  # not seekable (nothing moved): read on
                    log.debug("seeking failed (%s): reading on", reason(exc))
                    self.seekable = False
                    return None
                continue
            # what came before the seek is gone
            self.deinterlacer, self.in_step, self.last_out = None, False, None
            frames = self.frames()
            first = next(frames, None)
            if first is not None and (first[0] <= target + TICK_SLACK or aim == 0.0):
                return _resumed(first, frames)
            frames.close()
            log.debug("a seek for %.2f s landed at %s", target, first and round(first[0], 2))
        return self.frames()  # nothing decodes from the start either: the stream has ended

    def rewind(self) -> None:
        """Back to the stream's start (after probing keyframes)."""
        self.container.seek(self.start, stream=self.stream, backward=True)

    def keyframe_before(self, target: float) -> float | None:
        """When the last indexed keyframe at or before `target` is shown; None without an index
        that reaches the target (MPEG-TS/PS, or one built only as far as the demuxer read)."""
        entries = self.stream.index_entries
        pts = self.pts(target)
        if not len(entries) or entries[len(entries) - 1].timestamp < pts:
            return None
        i = entries.search_timestamp(pts, backward=True)
        return self.time(entries[i].timestamp) if i >= 0 else 0.0

    def keyframe_time(self, target: float) -> float | None:
        """When the keyframe a seek for `target` lands on is shown: its packet's timestamp."""
        try:
            self.container.seek(self.pts(target), stream=self.stream, backward=True)
            packet = next(self.container.demux(self.stream), None)
        except av.FFmpegError:
            return None
        if packet is None or packet.pts is None or not packet.is_keyframe:
            return None
        return self.time(packet.pts)

    def pts(self, seconds: float) -> int:
        return self.start + int(seconds / self.stream.time_base)

    def time(self, pts: int) -> float:
        return tick((pts - self.start) * self.seconds_per_tick)

    # -- decoding ------------------------------------------------------------------------------

    def frames(self) -> Iterator[tuple[float, VideoFrame]]:
        """(time, frame) in presentation order from where the container is, deinterlaced once a
        frame says it is interlaced. A packet that does not decode is skipped, not the rest."""
        for packet in self._packets():
            try:
                decoded = self.ctx.decode(packet)
            except av.FFmpegError as exc:
                too_large(self.ctx.width, self.ctx.height, self.max_pixels)  # FFmpeg's refusal
                log.debug("skipping a packet at %s: %s", packet.pts, reason(exc))
                self.damaged += self.in_step
                continue
            self.unanswered = 0 if decoded else self.unanswered + 1
            for frame in decoded:
                too_large(frame.width, frame.height, self.max_pixels)
                self._gap(frame)
                if frame.is_corrupt:
                    self.damaged += self.in_step
                else:
                    self.in_step = True
                yield from self._deinterlaced(frame)
        if self.deinterlacer is not None:
            self.deinterlacer.push(None)  # its last frame waits for a next one: flush it
            yield from self._pull()

    def _deinterlaced(self, frame: VideoFrame) -> Iterator[tuple[float, VideoFrame]]:
        shape = (frame.width, frame.height, frame.format.name)
        if self.deinterlacer is not None and shape != self.deinterlaced:
            # the picture changed size (a TV recording across programmes): a graph of its own
            self.deinterlacer.push(None)
            yield from self._pull()
            self.deinterlacer = None
        if self.deinterlacer is None and frame.interlaced_frame:
            self.interlaced, self.deinterlaced = True, shape
            self.deinterlacer = deinterlacer(frame, self.stream.time_base)
        if self.deinterlacer is None:
            yield from _timed(frame, self.start_seconds, self.stream.time_base)
            return
        self.deinterlacer.push(frame)
        yield from self._pull()

    def _pull(self) -> Iterator[tuple[float, VideoFrame]]:
        for frame in drained(self.deinterlacer):
            yield from _timed(frame, self.start_seconds, self.stream.time_base)

    def _packets(self) -> Iterator[av.Packet]:
        """The stream's packets in decode order, each with the decoder told whether it may skip
        it: a frame on screen at no wanted time (where the next frame starts is the nearest
        later timestamp among the neighbouring packets), with every decoded frame's neighbours
        kept for the deinterlacer. A read error ends the stream (a truncated file)."""
        behind: deque[float] = deque(maxlen=PTS_NEIGHBOURS)
        ahead: deque[tuple[float | None, av.Packet]] = deque()
        for packet in itertools.chain(self._demux(), [None]):
            if packet is not None:
                ahead.append((None if packet.pts is None else self.time(packet.pts), packet))
                if len(ahead) <= PTS_NEIGHBOURS:
                    continue
            while ahead and (packet is None or len(ahead) > PTS_NEIGHBOURS):
                _check_deadline(self.deadline)
                t, head = ahead.popleft()
                if self.wanted is not None:
                    times = [*behind, *(x for x, _ in ahead if x is not None)]
                    self.ctx.skip_frame = ("NONREF" if self._references_only() or not (
                        t is None or self._shown(t, times)) else "DEFAULT")
                if t is not None:
                    behind.append(t)
                yield head

    def _demux(self) -> Iterator[av.Packet]:
        try:
            yield from self.container.demux(self.stream)
        except (av.FFmpegError, IndexError) as exc:  # IndexError: PyAV 18's demux, flushing
            # at the end, trips on a stream that appeared mid-file (MPEG-TS/PS may add some)
            log.debug("reading stopped: %s", exc)
            self.read_failed = True
            yield av.Packet()  # flushes the decoder: the frames it holds still come out

    def _references_only(self) -> bool:
        """Whether every frame nothing refers to is skipped now: asked for, the pictures are
        progressive, and the decoder still gives frames (else off for good)."""
        if self.reference_gap is not None and self.unanswered >= STARVED_PACKETS:
            log.debug("%d packets gave no frame with reference frames only: decoding the "
                      "others again", self.unanswered)
            self.reference_gap = None
        return self.reference_gap is not None and not self.interlaced

    def _gap(self, frame: VideoFrame) -> None:
        """Reference frames only, off for good at the first gap between two decoded frames
        longer than reference_gap: a wanted time in it would show the frame before again."""
        if self.reference_gap is None or frame.pts is None:
            return
        t = self.time(frame.pts)
        if self.last_out is not None and t - self.last_out > self.reference_gap + TICK_SLACK:
            log.debug("reference frames %.3f s apart: decoding the others shown again",
                      t - self.last_out)
            self.reference_gap = None
        self.last_out = t

    def _shown(self, t: float, times: list[float]) -> bool:
        """Whether a wanted time shows the frame starting at `t` (or, interlaced, its
        neighbours), judged from the neighbouring frames' times; True when they do not tell."""
        later = [x for x in times if x > t]
        if not later:
            return True
        end = min(later)
        if self.interlaced:  # bwdif reads the frames either side of a frame it shows
            earlier = [x for x in times if x < t]
            t = max(earlier) if earlier else t
            after = [x for x in later if x > end]
            if not after:
                return True
            end = min(after)
        wanted = self.wanted or []
        i = bisect.bisect_left(wanted, t - TICK_SLACK / 10)
        return i < len(wanted) and wanted[i] < end


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeError("decoding took longer than sampling.decode_timeout; raise it for "
                          "very long or slow clips")


def _resumed(first: tuple, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def deinterlacer(frame: VideoFrame, time_base: Fraction) -> av.filter.Graph:
    """A configured DEINTERLACER (bwdif) graph for frames like this one: push frames in (None
    at the end, to flush the one it holds back), take them out with drained()."""
    graph = av.filter.Graph()
    source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                              time_base=time_base)
    graph.link_nodes(source, graph.add(*DEINTERLACER), graph.add("buffersink"))
    graph.configure()
    return graph


def drained(graph: av.filter.Graph) -> Iterator[VideoFrame]:
    """Every frame the graph has ready now."""
    while True:
        try:
            yield graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def _timed(frame: VideoFrame, start: float,
           time_base: Fraction) -> Iterator[tuple[float, VideoFrame]]:
    """The frame with its presentation time in seconds from `start` (its decode time when it has
    none, as in AVI). In the frame's own time base (bwdif halves the stream's), else the
    stream's (a damaged packet can leave a frame without one)."""
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is not None:
        yield tick(float(pts * (frame.time_base or time_base)) - start), frame

