"""A decoded frame → the model's square and a thumbnail: 8-bit RGB, BT.709 SDR, upright.

Pixels only (sampling.py decides which frames): swscale converts in each frame's own colour matrix
and range, and maps HDR (PQ, HLG) and BT.2020 frames to BT.709 SDR, tone-mapped, as a screen
shows them; OpenCV crops, shrinks and turns. A large or HDR frame is cropped and shrunk as YUV
planes before it is converted, so conversion and tone mapping run at 224 px, not at 4K.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import av
import cv2
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorPrimaries, ColorTrc, VideoReformatter

FRAME_SIZE = 224  # px, square model input
THUMB_HEIGHT = 180  # px, thumbnails for previews and contact sheets
# One OpenCV thread: parallelism comes from the engine's decoding threads, one clip each;
# OpenCV's own pool cost 10 % more CPU for nothing (issue 13)
cv2.setNumThreads(1)
# 4:2:0 (most video) → the format of its planes shrunk to FRAME_SIZE, chroma at full size;
# shrunk before it is converted to RGB from this size of square up (1080p: issue 13's benchmark)
FULL_CHROMA = {"yuv420p": "yuv444p", "yuvj420p": "yuvj444p", "yuv420p10le": "yuv444p10le"}
HDR_TRANSFERS = (ColorTrc.SMPTE2084, ColorTrc.ARIB_STD_B67)  # PQ (HDR10, Dolby Vision), HLG
CONVERTERS = 8  # per decoding thread: the model's size and a few clip sizes
TO_SDR = {"dst_color_trc": ColorTrc.BT709, "dst_color_primaries": ColorPrimaries.BT709}
SHRINK_FIRST_SIDE = 4 * FRAME_SIZE  # px
TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}

_threads = threading.local()  # swscale converters: each decoding thread has its own


def to_model_input(frames: np.ndarray) -> np.ndarray:
    """uint8 frames → float32 in [0, 1] (never float64), the model's input range."""
    out = frames.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def thumbnail(frame: VideoFrame, aspect: float = 1.0) -> np.ndarray:
    """Frame → 8-bit RGB (as _rgb), upright, THUMB_HEIGHT px high and as wide as it is shown
    (`aspect`: a stored pixel's width over its height). A larger SDR frame is shrunk and
    converted by one swscale call at the thumbnail's size (1 ms a 1080p frame, not the 5 ms of
    converting every pixel first: issue 34); HDR is tone-mapped at full size, then shrunk."""
    quarter = turns(frame)
    h, w = (frame.width, frame.height) if quarter % 2 else (frame.height, frame.width)
    if quarter % 2:  # on its side: the stored pixel's height is now its width
        aspect = 1 / aspect
    width = max(1, round(w * aspect * THUMB_HEIGHT / h))
    if h > THUMB_HEIGHT and not wide(frame):
        size = (THUMB_HEIGHT, width) if quarter % 2 else (width, THUMB_HEIGHT)  # as stored
        shrink = converter(("thumbnail", frame.width, frame.height, frame.format.name, *size))
        return _upright(shrink.reformat(frame, *size, format="rgb24", interpolation="AREA",
                                        threads=1).to_ndarray(), frame)
    rgb = _upright(_rgb(frame), frame)
    interpolation = cv2.INTER_AREA if h > THUMB_HEIGHT else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, THUMB_HEIGHT), interpolation=interpolation)


def fit(thumb: np.ndarray, width: int) -> np.ndarray:
    """A thumbnail `width` px wide, its picture scaled to fit and centred on black: a clip
    whose picture changes size (a TV recording across programmes) has one width of them."""
    if thumb.shape[1] == width:
        return thumb
    h, w = thumb.shape[:2]
    scale = min(1.0, width / w)
    inner = cv2.resize(thumb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    out = np.zeros((h, width, 3), np.uint8)
    top, left = (h - inner.shape[0]) // 2, (width - inner.shape[1]) // 2
    out[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
    return out


def model_square(frame: VideoFrame, aspect: float = 1.0) -> np.ndarray:
    """Frame → the square at its centre as it is shown, uint8 [224, 224, 3] RGB (as _rgb),
    upright. `aspect` is a stored pixel's width over its height: an anamorphic DVD's 16:9
    (64:45) or HDV's 1440×1080 (4:3) is a narrower stored rectangle, stretched back. A large
    4:2:0 frame (most video from 1080p up) or an HDR one is cropped and shrunk plane by plane
    and only then converted: 0.6 ms a 1080p frame and 1.4 ms a 2160p one, against 0.9 and
    3.9 ms converting all its pixels first, and HDR tone-mapped at 224 px, not 4K. Smaller
    frames and other formats (4:2:2, GIF) are converted first: cheaper there."""
    layout = FULL_CHROMA.get(frame.format.name)
    rows = min(frame.height, round(frame.width * aspect)) & ~1  # even: chroma is half of it
    columns = min(frame.width, round(rows / aspect)) & ~1
    top, left = (frame.height - rows) // 4 * 2, (frame.width - columns) // 4 * 2
    if layout is None or (rows * columns < SHRINK_FIRST_SIDE ** 2 and not wide(frame)):
        return _upright(_shrink(_rgb(frame)[top:top + rows, left:left + columns]), frame)
    small = VideoFrame(FRAME_SIZE, FRAME_SIZE, layout)
    for plane, into, d in zip(frame.planes, small.planes, (1, 2, 2)):  # Y, U, V (half size)
        stored = _rows(plane, layout)[top // d:(top + rows) // d, left // d:(left + columns) // d]
        _rows(into, layout)[:, :FRAME_SIZE] = _shrink(stored)
    small.colorspace, small.color_range = frame.colorspace, frame.color_range
    small.color_trc, small.color_primaries = frame.color_trc, frame.color_primaries
    return _upright(_rgb(small), frame)  # turning the square only


def _rgb(frame: VideoFrame) -> np.ndarray:
    """Frame → uint8 [h, w, 3] RGB by swscale, in the frame's own colour matrix and range; a
    wide-gamut or HDR frame (BT.2020, PQ, HLG) gamut- and tone-mapped to BT.709 SDR, as a
    screen shows it and the model saw video: as stored, PQ looks grey and flat."""
    mapped = wide(frame)
    to_rgb = converter((frame.width, frame.height, frame.format.name, mapped))
    return to_rgb.reformat(frame, format="rgb24", threads=1,
                              **(TO_SDR if mapped else {})).to_ndarray()


def converter(key: tuple) -> VideoReformatter:
    """This thread's swscale converter for frames like these (key: what makes them alike),
    kept across clips (the CONVERTERS last used): building one that tone-maps takes swscale
    about a second. The web app's previews keep theirs here too."""
    kept = _threads.__dict__.setdefault("converters", OrderedDict())
    if key in kept:
        kept.move_to_end(key)
    else:
        kept[key] = VideoReformatter()
        if len(kept) > CONVERTERS:
            kept.popitem(last=False)
    return kept[key]


def wide(frame: VideoFrame) -> bool:
    """HDR or BT.2020: gamut- and tone-mapped to BT.709 SDR wherever a frame is shown."""
    return frame.color_trc in HDR_TRANSFERS or frame.color_primaries == ColorPrimaries.BT2020


def _rows(plane: av.video.plane.VideoPlane, layout: str) -> np.ndarray:
    """A plane as [rows, line size] of its samples: uint8, or uint16 for 10 bits."""
    dtype = np.uint16 if layout.endswith("le") else np.uint8
    return np.frombuffer(plane, dtype).reshape(-1, plane.line_size // dtype().itemsize)


def _shrink(image: np.ndarray) -> np.ndarray:
    """An image (or plane) → FRAME_SIZE px square, as a mipmap: exact halvings take OpenCV's
    2×2 box fast path until the rest is under 2×, which bilinear covers without aliasing to
    speak of (0.44 ms a 720p frame; one INTER_AREA at a non-integer ratio costs 2 ms; issue 8's
    benchmark measures it)."""
    h, w = image.shape[:2]
    while min(h, w) // 2 >= FRAME_SIZE:
        h, w = h // 2, w // 2
        image = cv2.resize(image[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_LINEAR)


def _upright(rgb: np.ndarray, frame: VideoFrame) -> np.ndarray:
    """Turned as the frame's display matrix says."""
    quarter = turns(frame)
    return cv2.rotate(rgb, TURNS[quarter]) if quarter else rgb


def turns(frame: VideoFrame) -> int:
    """Counter-clockwise quarter turns its display matrix asks for."""
    return round(frame.rotation / 90) % 4
