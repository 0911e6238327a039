"""path → demux (PyAV, seek by timestamp) → decode → bwdif if interlaced → pictures → windows.

The only module that decodes: FFmpeg's own libraries through PyAV; pictures.py turns the frames it
picks into the model's squares and thumbnails. A clip becomes up to `max_windows` windows of
WINDOW_FRAMES frames at WINDOW_FPS, spread evenly over its whole duration; frame i of a window is
the frame on screen at `start + i / WINDOW_FPS`: the last frame whose presentation timestamp is at
or before that time, so variable frame rates and GIF delays are sampled as they play. A window
reached by seeking starts at the keyframe before its even place (the first and last stay at the
clip's start and end), so a 10-minute clip costs about what its windows hold, not what lies before
them. With `sampling.skip_nonref_frames`, a frame on screen at no sample time that no other frame
refers to (most B-frames) is not decoded at all: no sample changes. Interlaced frames (by their own
flags) are deinterlaced with FFmpeg's bwdif, one frame per frame. Memory holds the windows at 224
px and a few full-size frames, whatever the clip's length.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.filter
import numpy as np
from av.video.frame import VideoFrame

from autotag import pictures
from autotag.clip import Window
from autotag.errors import AutotagError
from autotag.files import show

log = logging.getLogger(__name__)

WINDOW_FRAMES = 32  # frames per model window
WINDOW_FPS = 10.0  # the model was trained on ~10 fps clips
WINDOW_SECONDS = WINDOW_FRAMES / WINDOW_FPS  # 3.2 s
# Without an index (MPEG-TS/PS) where the keyframe before a window is is unknown: a gap to the
# next window longer than this is seeked over, a shorter one decoded through.
SEEK_GAP = 4.0  # s
# Containers without an index seek by estimate and can land after the target (MPEG-TS: 19 seeks
# in 20, by seconds; issue 13): such a seek is tried again 1, 3, 7 s earlier, then from the start.
SEEK_BACKOFF = 1.0  # s, doubled on each try
SEEK_TRIES = 4  # seeks per window before the last one, to the start: bounded, never a loop
IO_TIMEOUT = 30.0  # s; FFmpeg's own open and read timeouts: a stuck read (a network share) ends
# A damaged or odd metadata tag must not stop the pictures from being read: PyAV 18 decodes tags
# strictly unless told to replace; 19 dropped the option (always UTF-8 with surrogateescape, which
# never fails). 19's wheels need Python 3.12, so 3.11 keeps 18: both are supported (issue 29).
OPEN_OPTIONS = {"metadata_errors": "replace"} if int(av.__version__.split(".")[0]) < 19 else {}
# Packets looked at on each side, in decode order, for when a frame leaves the screen (the next
# presentation timestamp): B-pyramids reorder over far fewer than this.
PTS_NEIGHBOURS = 16
# One decoding thread per clip: on 2 cores the model keeps every core busy and parallelism comes
# from the engine's decode workers, one clip each; frame threads cost more CPU than they save
# (issue 13; PySceneDetect's PyAV backend turns them off) and x264 writes one slice a frame.
DECODE_THREADS = 1
# Frames at least this many times the model's square on their shorter side (720p and up) are
# decoded without the in-loop deblocking filter (FFmpeg's skip_loop_filter; HEVC's SAO too):
# its edges are a pixel or two wide, and the 224-px square is shrunk by 3x or more, so the
# model sees what it saw (scores' cosine to full decoding >= 0.999: tests/test_decode_speed.py)
# for less CPU a frame (benchmarks.decoding measures it). Smaller frames decode in full.
SKIP_LOOP_FILTER_FROM = 3  # × pictures.FRAME_SIZE
LOOP_FILTER_SKIPPED = {"skip_loop_filter": "all"}
# bwdif on frames flagged interlaced only, one output frame per frame, field order per frame.
DEINTERLACER = ("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
# A window reached by seeking starts at the keyframe before it when that is at most this earlier:
# no frame before its first sample is decoded (a 10-minute clip costs what its windows hold).
KEYFRAME_PULL = 10.0  # s
# A stream whose frames end this much (or a frame) before its header's duration was cut short.
TRUNCATED_SLACK = 1.0  # s
SEEK_AHEAD = 1.5 / WINDOW_FPS  # s; a target nearer than this to the last frame is decoded on to
TICK_SLACK = 1e-5  # s: ten ticks, more than rounding to the grid makes of a frame's length


class DecodeError(AutotagError):
    """This file cannot be sampled; the message is the reason, without the path."""


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


def quiet_decoder(debug: bool = False) -> None:
    """FFmpeg's warnings about broken files ("[h264 @ 0x...] error while decoding MB") stay off
    stderr: autotag reports a bad file in one line. With debug they go to the `libav.*` loggers."""
    av.logging.set_level(av.logging.VERBOSE if debug else None)


def sample_clip(path: Path, max_windows: int, max_pixels: int,
                timeout: float | None = None, skip_nonref: bool = True,
                shown: Path | None = None) -> Sampled:
    """Decode the windows of one clip. Raises DecodeError with the reason.

    skip_nonref: leave out frames no sample shows and no other frame refers to.
    shown: the clip's name in log lines when `path` is not it (a /proc/self/fd/N).
    """
    if path.stat().st_size == 0:
        raise DecodeError("the file is empty")
    deadline = time.monotonic() + timeout if timeout else None
    try:
        container = open_input(path)
    except av.FFmpegError as exc:
        raise DecodeError(f"not a video FFmpeg can read ({_reason(exc)})") from None
    try:
        with container:
            sampled = _Clip(container, max_pixels, deadline, skip_nonref).sample(max_windows)
    except av.FFmpegError as exc:  # what decoding packet by packet does not absorb
        raise DecodeError(f"the file could not be read ({_reason(exc)})") from None
    if sampled.damage:
        log.warning("%s: %s; tagged from what decoded", show(shown or path), sampled.damage)
    return sampled


def open_input(source: Path | BinaryIO) -> av.container.InputContainer:
    """`source` (a path, or a file object already opened and checked) opened for reading with
    FFmpeg's timeouts, whatever PyAV's version."""
    name = str(source) if isinstance(source, Path) else source
    return av.open(name, timeout=(IO_TIMEOUT, IO_TIMEOUT), **OPEN_OPTIONS)


def _reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason in one line, without the path PyAV appends."""
    return (exc.strerror or type(exc).__name__).strip().replace("\n", " ")


def _tick(seconds: float) -> float:
    """Times compared on a microsecond grid: 2.4 + 0.3 and a frame's 2.7 s are the same
    instant, so a sample at a frame's start takes that frame, not the one before."""
    return round(seconds, 6)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeError("decoding took longer than sampling.decode_timeout; raise it for "
                          "very long or slow clips")


class _Clip:
    """One open clip: its video stream decoded forward from wherever it was seeked to, one packet
    at a time. Owns its converters and deinterlacer: nothing is shared between threads."""

    def __init__(self, container: av.container.InputContainer, max_pixels: int,
                 deadline: float | None, skip_nonref: bool) -> None:
        streams = [s for s in container.streams.video
                   if not s.disposition & av.stream.Disposition.attached_pic]  # not cover art
        if not streams or streams[0].codec_context is None or streams[0].time_base is None:
            raise DecodeError("no video stream FFmpeg can decode")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            kind = container.format.name.removesuffix("_pipe").replace("image2", "picture")
            raise DecodeError(f"a still image ({kind}), not a video")
        self.container, self.stream = container, streams[0]
        ctx = self.stream.codec_context
        if ctx.width * ctx.height > max_pixels:
            raise DecodeError(f"frames of {ctx.width}×{ctx.height} are larger than "
                              f"sampling.max_pixels ({max_pixels}); raise it to tag this clip")
        ctx.thread_type, ctx.thread_count = "NONE", DECODE_THREADS
        limit_pixels(ctx, max_pixels)
        if min(ctx.width, ctx.height) >= SKIP_LOOP_FILTER_FROM * pictures.FRAME_SIZE:
            ctx.options = {**ctx.options, **LOOP_FILTER_SKIPPED}  # read when the codec opens
        self.ctx = ctx
        self.max_pixels = max_pixels
        self.deadline = deadline
        self.skip_nonref = skip_nonref
        self.aspect = _pixel_aspect(self.stream)
        self.start = self.stream.start_time or 0  # pts of the stream's first frame
        self.start_seconds = float(self.start * self.stream.time_base)
        self.seconds_per_tick = float(self.stream.time_base)  # floats: Fractions cost µs a packet
        # GIF frames are drawn over the ones before: read through, never seeked into
        self.seekable = container.format.name != "gif"
        self.sought = -math.inf  # the last target seeked for
        self.ran_out = False  # frames ended before the last sample time: a truncated file?
        self.read_failed = False  # reading the file stopped on an error
        self.damaged = 0  # frames the decoder flagged or packets it refused, once in step
        self.in_step = False  # a clean frame came since the start or the last seek: before it,
        # a seek's leading frames may miss their references and TS packets be cut (no damage)
        self.deinterlacer: av.filter.Graph | None = None
        self.deinterlaced: tuple = ()  # the size and format the deinterlacer was built for
        self.interlaced = False  # a frame said so: its neighbours are decoded too
        self.wanted: list[float] = []  # sample times, sorted

    def sample(self, max_windows: int) -> Sampled:
        duration = self._duration()
        starts = self._at_keyframes(window_starts(duration, max_windows))
        targets = [_tick(s + _offset(i, duration)) for s in starts for i in range(WINDOW_FRAMES)]
        picked, last_time = self._pick(targets)
        if not picked:
            raise DecodeError(f"no frame could be decoded from the {self.ctx.name} video "
                              "(truncated or corrupt file)")
        damage = []
        rate = self.stream.guessed_rate or self.stream.average_rate
        decoded_to = last_time + (1 / float(rate) if rate else 0.0)  # the last frame's end
        if self.ran_out and duration - decoded_to > max(TRUNCATED_SLACK, decoded_to - last_time):
            if self.stream.duration or self.read_failed:  # not a container's longer audio
                damage.append(f"its frames end at {decoded_to:.1f} s of the {duration:.1f} s "
                              "its header says (cut short)")
            duration = decoded_to
        if self.damaged:
            damage.append(f"{self.damaged} damaged frame{'s' * (self.damaged > 1)} concealed "
                          "by the decoder")
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
        """Seconds, from the stream's header, else the container's; 0 when neither knows."""
        if self.stream.duration:
            return float(self.stream.duration * self.stream.time_base)
        return (self.container.duration or 0) / av.time_base

    def _pick(self, targets: list[float]) -> tuple[dict[int, _Shown], float]:
        """Target index → the frame on screen at that time; and the last frame's time.

        A target is given a frame once the next frame's time is known: the last frame at or
        before it. Targets before the first frame (or the first after a seek) take that frame;
        targets past the end of a truncated stream take the last frame.
        """
        order = sorted(range(len(targets)), key=targets.__getitem__)
        self.wanted = sorted(targets)
        picked: dict[int, _Shown] = {}
        frames = self._frames()
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
                shown.model = pictures.model_square(shown.frame, self.aspect)
            if i % WINDOW_FRAMES == WINDOW_FRAMES // 2 and shown.thumb is None:
                shown.thumb = pictures.thumbnail(shown.frame, self.aspect)

    # -- seeking -------------------------------------------------------------------------------

    def _at_keyframes(self, starts: list[float]) -> list[float]:
        """A window between the first and last that a seek reaches starts at the keyframe
        before it (at most KEYFRAME_PULL earlier, never in the window before), where the seek
        lands. Clips without an index (MPEG-TS/PS, GIF) keep their windows: keyframes unknown."""
        moved, probed = starts[:1], False
        for start in starts[1:-1]:
            end = moved[-1] + WINDOW_SECONDS
            key = self._keyframe_before(start) if self.seekable else None
            if key is not None and key > end:
                probed, key = True, self._keyframe_time(start)
            moved.append(key if key is not None and end < key <= start
                         and start - key <= KEYFRAME_PULL else start)
        if probed:  # back to where decoding starts
            self.container.seek(self.start, stream=self.stream, backward=True)
        return moved + starts[1:][-1:]

    def _keyframe_time(self, target: float) -> float | None:
        """When the keyframe a seek for `target` lands on is shown: its packet's timestamp."""
        try:
            self.container.seek(self._pts(target), stream=self.stream, backward=True)
            packet = next(self.container.demux(self.stream), None)
        except av.FFmpegError:
            return None
        if packet is None or packet.pts is None or not packet.is_keyframe:
            return None
        return self._time(packet.pts)

    def _seek_for(self, target: float, last_time: float | None) -> Iterator | None:
        """Frames from the keyframe before `target` when that is cheaper than decoding on to it
        (None: decode on). With an index that reaches the target, where the keyframe before it
        is decides; without one (MPEG-TS/PS), a gap longer than SEEK_GAP."""
        here = last_time if last_time is not None else 0.0
        if not self.seekable or target - here <= SEEK_AHEAD or target <= self.sought:
            return None  # one seek per target at most: where it landed, decoding goes on
        self.sought = target
        key = self._keyframe_before(target)
        if (key is not None and key <= here + TICK_SLACK) or \
                (key is None and target - here < SEEK_GAP):
            return None
        return self._seek(target)

    def _keyframe_before(self, target: float) -> float | None:
        entries = self.stream.index_entries
        pts = self._pts(target)
        if not len(entries) or entries[len(entries) - 1].timestamp < pts:
            return None  # no index, or one built only as far as the demuxer has read
        i = entries.search_timestamp(pts, backward=True)
        return self._time(entries[i].timestamp) if i >= 0 else 0.0

    def _seek(self, target: float) -> Iterator | None:
        """Seek to the keyframe before `target` and check where it landed: after the target
        (an estimate without an index), again further back, at last from the start."""
        for attempt in range(SEEK_TRIES + 1):
            aim = max(0.0, target - SEEK_BACKOFF * (2 ** attempt - 1))
            if attempt == SEEK_TRIES:
                aim = 0.0
            try:
                self.container.seek(self._pts(aim), stream=self.stream, backward=True)
            except av.FFmpegError as exc:
                if attempt == 0:  # not seekable (nothing moved): read on
                    log.debug("seeking failed (%s): reading on", _reason(exc))
                    self.seekable = False
                    return None
                continue
            self.deinterlacer, self.in_step = None, False  # what came before the seek is gone
            frames = self._frames()
            first = next(frames, None)
            if first is not None and (first[0] <= target + TICK_SLACK or aim == 0.0):
                return _resumed(first, frames)
            frames.close()
            log.debug("a seek for %.2f s landed at %s", target, first and round(first[0], 2))
        return self._frames()  # nothing decodes from the start either: the stream has ended

    def _pts(self, seconds: float) -> int:
        return self.start + int(seconds / self.stream.time_base)

    def _time(self, pts: int) -> float:
        return _tick((pts - self.start) * self.seconds_per_tick)

    # -- decoding ------------------------------------------------------------------------------

    def _frames(self) -> Iterator[tuple[float, VideoFrame]]:
        """(time, frame) in presentation order from where the container is, deinterlaced once a
        frame says it is interlaced. A packet that does not decode is skipped, not the rest."""
        for packet in self._packets():
            try:
                decoded = self.ctx.decode(packet)
            except av.FFmpegError as exc:
                too_large(self.ctx.width, self.ctx.height, self.max_pixels)  # FFmpeg's refusal
                log.debug("skipping a packet at %s: %s", packet.pts, _reason(exc))
                self.damaged += self.in_step
                continue
            for frame in decoded:
                too_large(frame.width, frame.height, self.max_pixels)
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
        it: a frame on screen at no sample time (where the next frame starts is the nearest
        later timestamp among the neighbouring packets), with every decoded frame's neighbours
        kept for the deinterlacer. A read error ends the stream (a truncated file)."""
        behind: deque[float] = deque(maxlen=PTS_NEIGHBOURS)
        ahead: deque[tuple[float | None, av.Packet]] = deque()
        for packet in itertools.chain(self._demux(), [None]):
            if packet is not None:
                ahead.append((None if packet.pts is None else self._time(packet.pts), packet))
                if len(ahead) <= PTS_NEIGHBOURS:
                    continue
            while ahead and (packet is None or len(ahead) > PTS_NEIGHBOURS):
                _check_deadline(self.deadline)
                t, head = ahead.popleft()
                if self.skip_nonref:
                    times = [*behind, *(x for x, _ in ahead if x is not None)]
                    self.ctx.skip_frame = ("DEFAULT" if t is None or self._shown(t, times)
                                           else "NONREF")
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

    def _shown(self, t: float, times: list[float]) -> bool:
        """Whether a sample shows the frame starting at `t` (or, interlaced, its neighbours),
        judged from the neighbouring frames' times; True when they do not tell."""
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
        i = bisect.bisect_left(self.wanted, t - TICK_SLACK / 10)
        return i < len(self.wanted) and self.wanted[i] < end

    # -- conversion ----------------------------------------------------------------------------


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


def _pixel_aspect(stream: av.video.stream.VideoStream) -> float:
    """A stored pixel's width over its height (an anamorphic 16:9 DVD's is 64:45), as the
    container says, else the bitstream; 1 when neither does (or says something absurd)."""
    for ratio in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if ratio and 0.1 < ratio < 10:
            return float(ratio)
    return 1.0


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
        yield _tick(float(pts * (frame.time_base or time_base)) - start), frame


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
