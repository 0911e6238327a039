"""path → probe → window times → seek/grab → centre crop 224 → uint8 RGB windows + thumbnails.

The only module that decodes (OpenCV's FFmpeg backend, which also reads GIFs with their real
per-frame delays). A clip becomes up to `max_windows` windows of WINDOW_FRAMES frames at
WINDOW_FPS, spread evenly over its whole duration; frame i of a window is the frame on screen at
`start + i / WINDOW_FPS`. Frames no window needs are grabbed (demuxed and decoded, never
converted or copied), and long gaps between windows are skipped by seeking, so a 10-minute clip
costs about what a 10-second one does; memory holds the sampled frames at 224 px and one
full-size frame at a time. In clips of at least SKIP_MIN_FPS, frames that no other frame refers
to (most B-frames) are not decoded at all (`sampling.skip_nonref_frames`; FFmpeg's
skip_frame=nonref), which takes about 40 % off decoding an H.264 clip; a sample is then the last
decoded frame at or before its time.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from autotag.clip import Window

log = logging.getLogger(__name__)

WINDOW_FRAMES = 32  # frames per model window
WINDOW_FPS = 10.0  # the model was trained on ~10 fps clips
WINDOW_SECONDS = WINDOW_FRAMES / WINDOW_FPS  # 3.2 s
FRAME_SIZE = 224  # px, square model input
THUMB_HEIGHT = 180  # px, thumbnails for previews and contact sheets
SEEK_GAP = 4.0  # s; a gap to the next window longer than this is seeked over, not grabbed
SEEK_BACKOFF = 1.0  # s; seek this far before the target: keyframe seeks may land late
GIF_MIN_DELAY = 0.011  # s; browsers show GIF frames of 0 or 1 cs for 100 ms, and so do we
GIF_DEFAULT_DELAY = 0.1  # s
OPEN_TIMEOUT_MS = 30_000  # FFmpeg's own interrupt timeouts: a stuck read ends
READ_TIMEOUT_MS = 30_000
FFMPEG_LOG_QUIET = -8  # AV_LOG_QUIET
# One decoding thread per clip: FFmpeg's frame threads cost about a third more CPU in all (and
# make each retrieve wait on the thread pipeline), and on a CPU the model already keeps every
# core busy; parallelism comes from the pipeline's decode workers, one clip each (issue 8).
DECODE_THREADS = 1
# Skipping non-reference frames leaves x264/x265's default B-pyramid (and phones' P-only
# streams) most of every second frame, so at twice the sampling rate a sample is the last
# decoded frame at or before its time, a few source frames early at most (x264's defaults at
# 30 fps: 3); below it, frames a window needs would go missing. Streams sparser than that are
# caught by SKIP_PROBE_GAPS.
SKIP_MIN_FPS = 2 * WINDOW_FPS
# While skipping, the last this many gaps between decoded frames decide: on average longer
# than a sampling step (IBBP at 25 fps leaves 8.3 frames a second), the clip is decoded again,
# every frame. Gaps count at most MAX_LOOKAHEAD (a longer one is a hole in the stream).
SKIP_PROBE_GAPS = 16
LOOKAHEAD_GAPS = 8  # a frame is retrieved if a target may come before the next: the longest
MAX_LOOKAHEAD = 2 / WINDOW_FPS  # of the last 8 gaps ahead, at most 0.2 s
OPENCV_SEEK_FRAMES = 16  # OpenCV seeks to the keyframe this many frames before the one asked
BLACK_MEAN = 0.5  # grey levels: a clip whose every sampled frame is darker is "all black"
SEEK_TRIES = 4  # seeks that land too late (skipping) before the clip is decoded whole
SEEK_MARGIN = 0.25  # s; a seek must land at least this far before its target
# OpenCV takes FFmpeg decoder options only from this variable, read when a capture opens
# ("avdiscard" is its name for AVCodecContext.skip_frame); a user's own options are kept.
CAPTURE_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_USER_CAPTURE_OPTIONS = os.environ.get(CAPTURE_OPTIONS)
_OPEN_LOCK = threading.Lock()  # the variable is process-wide; decode workers open in turn


class DecodeError(Exception):
    """This file cannot be sampled; the message is the reason, without the path."""


@dataclass(frozen=True)
class Sampled:
    """A clip's model windows.

    frames: uint8 [n_windows, 32, 224, 224, 3] RGB.
    thumbnails: uint8 [n_windows, THUMB_HEIGHT, w, 3] RGB, each window's middle frame uncropped.
    """

    duration: float  # seconds
    windows: tuple[Window, ...]
    frames: np.ndarray
    thumbnails: np.ndarray


def window_starts(duration: float, max_windows: int) -> list[float]:
    """Start times of n = min(max_windows, ceil(duration / 3.2)) windows, at least one, spread
    evenly so the first starts at 0 and the last ends at the clip's end. A single window of a
    longer clip (max_windows: 1) sits in its middle, the likeliest place for what it is about."""
    n = max(1, min(max_windows, math.ceil(max(duration, 0.0) / WINDOW_SECONDS - 1e-9)))
    last = max(0.0, duration - WINDOW_SECONDS)
    return [last / 2] if n == 1 else [last * i / (n - 1) for i in range(n)]


def to_model_input(frames: np.ndarray) -> np.ndarray:
    """uint8 frames → float32 in [0, 1] (never float64), the model's input range."""
    out = frames.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def quiet_decoder(debug: bool = False) -> None:
    """OpenCV and FFmpeg warn on stderr about broken files; autotag reports them in one line."""
    level = cv2.utils.logging.LOG_LEVEL_DEBUG if debug else cv2.utils.logging.LOG_LEVEL_SILENT
    cv2.utils.logging.setLogLevel(level)
    if not debug:  # FFmpeg's own lines ("[h264 @ 0x...] error while decoding MB") bypass that
        # level; OpenCV's FFmpeg backend hands this to av_log_set_level when it starts (-8: quiet)
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_LOG_QUIET))


def sample_clip(path: Path, max_windows: int, max_pixels: int,
                timeout: float | None = None, skip_nonref: bool = True) -> Sampled:
    """Decode the windows of one clip. Raises DecodeError with the reason.

    skip_nonref: leave out frames no other frame refers to, in clips of ≥ SKIP_MIN_FPS.
    """
    if path.stat().st_size == 0:
        raise DecodeError("the file is empty")
    deadline = time.monotonic() + timeout if timeout else None
    if path.suffix.lower() == ".gif":
        cap = _open(path, max_pixels)
        try:
            times = _gif_times(cap, deadline)
        finally:
            cap.release()
        cap = _open(path, max_pixels)
        try:
            return _Sampler(cap, max_windows, deadline, known_times=times).run()
        finally:
            cap.release()
    if skip_nonref:
        try:
            return _sample_video(path, max_windows, max_pixels, deadline, skipping=True)
        except _Unopened:
            raise  # the file itself is the problem: opening it again would say the same
        except (_TooSparse, DecodeError):  # or a decoder that gives nothing when told to skip:
            pass  # every frame, as if skipping were off (the error, if any, is that one's)
    return _sample_video(path, max_windows, max_pixels, deadline, skipping=False)


class _Unopened(DecodeError):
    """The file cannot be opened as a video this size or smaller (whatever the decoder skips)."""


class _TooSparse(Exception):
    """Skipping non-reference frames would leave fewer frames than the windows sample."""


def _sample_video(path: Path, max_windows: int, max_pixels: int, deadline: float | None,
                  skipping: bool) -> Sampled:
    cap = _open(path, max_pixels, skipping)
    try:
        if skipping and not _fps(cap) >= SKIP_MIN_FPS:
            raise _TooSparse
        return _Sampler(cap, max_windows, deadline, skipping=skipping).run()
    finally:
        cap.release()


def _open(path: Path, max_pixels: int, skip_nonref: bool = False) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS,
              cv2.CAP_PROP_N_THREADS, DECODE_THREADS]
    options = f"avdiscard;{'nonref' if skip_nonref else 'default'}"
    if _USER_CAPTURE_OPTIONS:
        options = f"{_USER_CAPTURE_OPTIONS}|{options}"
    with _OPEN_LOCK:  # set, never unset: no other thread's getenv sees the list reshuffled
        os.environ[CAPTURE_OPTIONS] = options
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # honour rotation metadata (OpenCV's default)
    if not cap.isOpened():
        raise _Unopened("not a video OpenCV can read (unknown format, unsupported codec, "
                          "or no video stream)")
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        cap.release()
        raise _Unopened("no video stream")
    if width * height > max_pixels:
        cap.release()
        raise _Unopened(f"frames of {width}×{height} are larger than sampling.max_pixels "
                          f"({max_pixels}); raise it to tag this clip")
    return cap


def _nothing_decoded(cap: cv2.VideoCapture) -> str:
    """Why a clip that opened gave no frame, naming its codec."""
    tag = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    codec = tag.to_bytes(4, "little").decode("latin-1").strip("\0 ") if 0 < tag < 2**32 else ""
    if codec.upper() == "AV01":  # opencv-python's FFmpeg decodes AV1 only on hardware it lacks
        return ("AV1 video cannot be decoded here (OpenCV's FFmpeg has no software AV1 "
                "decoder); convert it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    shown = f"{codec} video" if codec.isprintable() and codec else "the video stream"
    return (f"no frame could be decoded from {shown} (truncated or corrupt file, or a codec "
            "this FFmpeg cannot decode)")


def _fps(cap: cv2.VideoCapture) -> float:
    """The stream's frame rate, or 0 when it has none worth believing."""
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    return fps if 0 < fps < 1000 else 0.0


def _gif_times(cap: cv2.VideoCapture, deadline: float | None) -> list[float]:
    """Every frame's start time in seconds, from a grab-only pass (GIFs are small), with the
    browsers' rule for tiny delays applied."""
    stamps = []
    while cap.grab():
        _check_deadline(deadline)
        stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    if not stamps:
        raise DecodeError("no frame could be decoded")
    times = [0.0]
    for a, b in zip(stamps, stamps[1:]):
        delay = b - a
        times.append(times[-1] + (GIF_DEFAULT_DELAY if delay < GIF_MIN_DELAY else delay))
    # the last frame's own delay is not in the stamps: assume it equals the one before
    last = times[-1] - times[-2] if len(times) > 1 else GIF_DEFAULT_DELAY
    times.append(times[-1] + last)  # the end of the animation
    return times


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeError("decoding took longer than sampling.decode_timeout; raise it for "
                          "very long or slow clips")


class _Sampler:
    """One pass over a clip, keeping only the frames the windows need."""

    def __init__(self, cap: cv2.VideoCapture, max_windows: int, deadline: float | None,
                 known_times: list[float] | None = None, skipping: bool = False) -> None:
        self.cap = cap
        self.deadline = deadline
        self.known_times = known_times  # GIF: frame start times + the end
        self.frame_index = -1
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
        self.fps = _fps(cap) or 25.0
        self.skipping = skipping
        self.prev_time: float | None = None
        self.recent: deque[float] = deque(maxlen=LOOKAHEAD_GAPS)  # gaps between decoded frames
        self.probe: deque[float] = deque(maxlen=SKIP_PROBE_GAPS)
        # before any gap is seen: one frame, or with skipping a B-pyramid's two and one more
        self.first_gap = (3.0 if skipping else 1.0) / self.fps
        self.backoff = SEEK_BACKOFF  # grows when a seek lands late (skipping)
        self.reach = 0.0  # s, the longest distance back to a keyframe seen by a seek
        # keyframes seen while reading on (skipping): seeks aim just past the one expected
        self.first_key: float | None = None
        self.last_key: float | None = None
        self.key_period: float | None = None
        if known_times:
            self.duration = known_times[-1]
        else:
            self.duration = count / self.fps if count > 0 else 0.0
        self.starts = window_starts(self.duration, max_windows)

    def run(self) -> Sampled:
        targets = [_tick(s + self._offset(i)) for s in self.starts for i in range(WINDOW_FRAMES)]
        picked, last_time = self._pick(targets)
        if not picked:
            raise DecodeError(_nothing_decoded(self.cap))
        if all(shown.model.mean() < BLACK_MEAN for shown in set(picked.values())):
            # OpenCV's FFmpeg (swscale) refuses to convert interlaced frames and hands them
            # over black, saying so only on stderr: tagging them would tag nothing
            raise DecodeError("every frame decoded black: an all-black clip, or interlaced "
                              "video (camcorder AVCHD, TV recordings) that OpenCV's FFmpeg "
                              "cannot convert; deinterlace it, e.g. ffmpeg -i IN -vf yadif "
                              "-c:v libx264 OUT.mp4")
        frames, thumbs, windows = [], [], []
        for w, start in enumerate(self.starts):
            if w and start > last_time:  # a truncated file: keep the windows that decoded
                break
            window = [picked[w * WINDOW_FRAMES + i] for i in range(WINDOW_FRAMES)]
            frames.append(np.stack([shown.model for shown in window]))
            thumbs.append(window[WINDOW_FRAMES // 2].thumbnail())
            end = min(start + WINDOW_SECONDS, max(self.duration, last_time))
            windows.append(Window(start, max(end, start)))
        duration = self.duration if self.duration > 0 else last_time
        return Sampled(duration, tuple(windows), np.stack(frames), np.stack(thumbs))

    def _offset(self, i: int) -> float:
        """Frame i's time in its window; a clip shorter than a window is looped to fill it."""
        offset = i / WINDOW_FPS
        if 0 < self.duration < WINDOW_SECONDS:
            offset %= self.duration
        return offset

    def _pick(self, targets: list[float]) -> tuple[dict[int, _Shown], float]:
        """Target index → the frame on screen at that time; and the last frame's time.

        Frames are grabbed in order. A target is given a frame once the next frame's time is
        known: the last decoded frame at or before it (with skipping, the frames in between
        were never decoded). A frame is retrieved (converted) only when a target may fall
        before the next frame: exactly known for GIFs; for videos, as far ahead as the
        longest of the last few gaps between decoded frames. Targets before the first frame
        (or the first after a seek) take that frame; targets past the end of a truncated
        stream take the last frame.
        """
        order = sorted(range(len(targets)), key=targets.__getitem__)
        picked: dict[int, _Shown] = {}
        current: _Shown | None = None  # the last retrieved frame, on screen until the next
        p, last_time = 0, 0.0
        while p < len(order):
            _check_deadline(self.deadline)
            if self._maybe_seek(targets[order[p]], last_time) and current is not None:
                current.release()  # a frame from before a seek shows nothing after it
                current = None
            if not self.cap.grab():
                break
            self.frame_index += 1
            t = self._frame_time()
            self._observe(t)
            if self.skipping:
                self._note_keyframe(t)
            last_time = max(last_time, t)
            late = []  # on screen before this frame: the previous decoded frame's
            while p < len(order) and targets[order[p]] < t:
                late.append(order[p])
                p += 1
            if late and current is not None:
                _assign(picked, late, current)
                late = []
            if late or (p < len(order) and targets[order[p]] < self._next_time(t)):
                ok, frame = self.cap.retrieve()
                if ok and frame is not None:
                    if current is not None:
                        current.release()
                    current = _Shown(frame)
                    _assign(picked, late, current)  # none before it: the earliest there is
        if current is not None:  # the last frame stays on screen to the end
            _assign(picked, [i for i in order if i not in picked], current)
            current.release()
        return picked, last_time

    def _observe(self, t: float) -> None:
        """Keep the gaps between decoded frames; while skipping, raise _TooSparse when the
        last SKIP_PROBE_GAPS of them average more than a sampling step."""
        if self.prev_time is not None and t > self.prev_time:
            gap = min(t - self.prev_time, MAX_LOOKAHEAD)
            self.recent.append(gap)
            if self.skipping:
                self.probe.append(gap)
                if len(self.probe) == SKIP_PROBE_GAPS and \
                        sum(self.probe) / SKIP_PROBE_GAPS > 1.05 / WINDOW_FPS:
                    raise _TooSparse
        self.prev_time = t

    def _next_time(self, t: float) -> float:
        """The latest the frame after this one is expected: exact for GIFs; for videos, the
        longest recent gap ahead, plus their spread (one frame at a constant frame rate)."""
        if self.known_times:
            nxt = self.frame_index + 1
            return _tick(self.known_times[nxt]) if nxt < len(self.known_times) else math.inf
        if not self.recent:
            return _tick(t + self.first_gap - TICK_SLACK)
        # the longest recent gap, and as much again as the gaps vary (none at a constant rate:
        # times on the microsecond grid vary by a few ticks, and a sample at the next frame's
        # start is that frame's, so the horizon stops a little short)
        longest = max(self.recent)
        spread = longest - min(self.recent)
        ahead = longest + (spread if spread > TICK_SLACK else 0.0)
        return _tick(t + min(ahead, MAX_LOOKAHEAD) - TICK_SLACK)

    def _frame_time(self) -> float:
        if self.known_times:
            return _tick(self.known_times[min(self.frame_index, len(self.known_times) - 1)])
        return _tick(max(0.0, self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0))

    def _maybe_seek(self, target: float, prev_time: float) -> bool:
        """Skip a long gap (from the start too) by seeking a little before the target (GIFs
        are read through); True when it did.

        OpenCV seeks to the keyframe before and then grabs forward counting one frame a grab,
        so while skipping it lands past where it was asked, by about as much again as the
        distance from that keyframe. So a seek aims just past the keyframe expected before the
        target (where keyframes have come so far), where it landed is checked, the backoff is
        grown from any overshoot and kept for this clip's next seeks, and a seek that still
        lands too late makes the clip decode without skipping."""
        if self.known_times or target - prev_time < SEEK_GAP:
            return False
        for attempt in range(SEEK_TRIES):
            aim = target - self.backoff
            # OpenCV's 16 counted grabs cover 16 decoded frames, `ratio` source frames each
            counted = (OPENCV_SEEK_FRAMES + 1) * self._ratio() / self.fps
            keyframe = (self._keyframe_before(target - SEEK_MARGIN - counted)
                        if attempt == 0 else None)
            if keyframe is not None and keyframe > aim - self.backoff:
                # just past a keyframe: OpenCV starts 16 frames before what it is asked for,
                # finds that keyframe and counts 16 grabs; the rest is read with skipping
                aim = keyframe + (OPENCV_SEEK_FRAMES + 1) / self.fps
            frame = max(0, int(aim * self.fps))
            if attempt == 0 and frame <= self.frame_index + 1:
                return False  # nothing worth skipping: read on
            if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, frame):
                if attempt == 0:
                    return False  # not seekable: read on
                raise _TooSparse  # a retry that failed leaves the stream who knows where
            self.frame_index = frame - 1
            self.prev_time = None  # the next gap is not a decoding gap
            if not self.skipping:
                return True
            landed = self._frame_time()  # the frame OpenCV's seek decoded last
            self._learn_backoff(aim, landed)
            if landed <= target - SEEK_MARGIN:
                return True
            self.backoff = max(self.backoff, target - aim + landed - (target - SEEK_MARGIN))
        raise _TooSparse

    def _ratio(self) -> float:
        """Source frames per decoded frame, lately (1 without skipping)."""
        return max(1.0, sum(self.probe) / len(self.probe) * self.fps) if self.probe else 1.0

    def _keyframe_before(self, t: float) -> float | None:
        """Where the keyframe before `t` is expected while skipping: on the grid of the
        keyframes seen so far (their first, and the longest interval between two)."""
        if not self.skipping or self.key_period is None or self.first_key is None:
            return None
        return self.first_key + math.floor((t - self.first_key) / self.key_period) * \
            self.key_period

    def _note_keyframe(self, t: float) -> None:
        if int(self.cap.get(cv2.CAP_PROP_FRAME_TYPE)) != ord("I"):
            return
        if self.first_key is None:
            self.first_key = t
        elif self.last_key is not None and t > self.last_key:
            self.key_period = max(self.key_period or 0.0, t - self.last_key)
        self.last_key = t

    def _learn_backoff(self, aim: float, landed: float) -> None:
        """While skipping, OpenCV lands at K + (aim - K) * r, K being the keyframe before and
        r the source frames per decoded one: the distance to K follows from the overshoot,
        and the backoff that lands in time from any keyframe that far back is kept."""
        ratio = self._ratio()
        if ratio < 1.05 or landed <= aim:
            return
        reach = (landed - aim) / (ratio - 1)  # how far before `aim` the keyframe was
        self.reach = max(self.reach, reach)
        self.backoff = max(self.backoff, SEEK_MARGIN + (ratio - 1) * self.reach + 4 / self.fps)


TICK_SLACK = 1e-5  # s: ten ticks, more than rounding to the grid makes of a frame's length


def _tick(seconds: float) -> float:
    """Times compared on a microsecond grid: 2.4 + 0.3 and a frame's 2.7 s are the same
    instant, so a sample at a frame's start takes that frame, not the one retrieved before."""
    return round(seconds, 6)


class _Shown:
    """A retrieved frame, converted at once to its model frame (uint8 [224, 224, 3] RGB) and,
    when it is a window's middle frame, its thumbnail. The full-size frame is released as soon
    as the next one is retrieved, so sampling a clip holds one full-size frame, not one per
    target (256 targets of a 1080p clip would be 1.5 GB; issue 8's peak-RSS figures)."""

    __slots__ = ("bgr", "model", "thumb")

    def __init__(self, bgr: np.ndarray) -> None:
        self.bgr: np.ndarray | None = bgr
        self.model = _model_frame(bgr)
        self.thumb: np.ndarray | None = None

    def thumbnail(self) -> np.ndarray:
        if self.thumb is None:
            assert self.bgr is not None, "thumbnails are made while the frame is on screen"
            self.thumb = _thumbnail(self.bgr)
        return self.thumb

    def release(self) -> None:
        self.bgr = None


def _assign(picked: dict[int, _Shown], targets: list[int], shown: _Shown) -> None:
    """These targets show `shown`; a window's middle frame gets its thumbnail now, while the
    full-size frame is still there."""
    for i in targets:
        picked[i] = shown
        if i % WINDOW_FRAMES == WINDOW_FRAMES // 2:
            shown.thumbnail()


def _model_frame(bgr: np.ndarray) -> np.ndarray:
    """BGR frame → centre square crop → 224×224 RGB uint8."""
    h, w = bgr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = bgr[top:top + side, left:left + side]
    # A mipmap: exact halvings take OpenCV's 2×2 box fast path until the rest is under 2×,
    # which bilinear covers without aliasing to speak of. 0.44 ms a 720p frame, where one
    # INTER_AREA at 720 → 224 (a non-integer ratio) costs 2 ms and INTER_AREA for the last
    # step 1.4 ms; 0.5 grey levels from the latter on average. Issue 8's benchmark measures it.
    while side // 2 >= FRAME_SIZE:
        side //= 2
        square = cv2.resize(square[:2 * side, :2 * side], (side, side),
                            interpolation=cv2.INTER_AREA)
    resized = cv2.resize(square, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _thumbnail(bgr: np.ndarray) -> np.ndarray:
    """BGR frame → RGB, THUMB_HEIGHT px high, aspect kept."""
    h, w = bgr.shape[:2]
    width = max(1, round(w * THUMB_HEIGHT / h))
    interpolation = cv2.INTER_AREA if h > THUMB_HEIGHT else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(bgr, (width, THUMB_HEIGHT), interpolation=interpolation),
                        cv2.COLOR_BGR2RGB)
