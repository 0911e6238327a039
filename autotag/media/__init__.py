"""The media room: the only place that imports PyAV (FFmpeg's libraries).

    reader.py    clip → open → seek → decode → bwdif → (seconds, frame): the one frame reader
    sampling.py  frames on screen at each sample time → the model's windows and thumbnails
    pictures.py  a decoded frame → the model's 224-px square, a thumbnail (8-bit RGB, upright)
    playable.py  can a browser play a clip as it is (probe)
    webm.py      a segment → a short silent VP9/VP8 WebM (the web app's preview)

What the rest of autotag calls is here; the modules hold the rest.
"""

from __future__ import annotations

from autotag.media.reader import DecodeError, quiet_decoder
from autotag.media.sampling import (
    WINDOW_FPS,
    WINDOW_FRAMES,
    WINDOW_SECONDS,
    Sampled,
    sample_clip,
    window_starts,
)

__all__ = ["WINDOW_FPS", "WINDOW_FRAMES", "WINDOW_SECONDS", "DecodeError", "Sampled",
           "quiet_decoder", "sample_clip", "window_starts"]
