"""clip → probe (PyAV: container, codecs, pixel format, the first frame's interlacing) → can
Chromium and Firefox play it as it is, and as what (`playability`).

A conservative list of what both play natively (MDN's "Media container formats" and "Web video
codec guide"); any other clip is previewed as a WebM (webm.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import av

from autotag.files import show
from autotag.media.reader import (
    Clip,
    DecodeError,
    limit_pixels,
    name_of,
    opened,
    video_stream,
)
from autotag.media.webm import MAX_PIXELS, PreviewError

# Format name (as FFmpeg's demuxer says) → (MIME type, video codecs, audio codecs).
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
CHROMA = {"422": "4:2:2", "444": "4:4:4", "440": "4:4:0", "411": "4:1:1", "410": "4:1:0"}


@dataclass(frozen=True)
class Playability:
    playable: bool
    mime: str | None  # the Content-Type to serve the original with when playable
    reason: str  # why not, in a few words; "" when playable


# -- can a browser play it? --------------------------------------------------------------------


def playability(path: Clip, max_pixels: int = MAX_PIXELS) -> Playability:
    """Whether Chromium and Firefox play `path` as it is, and as what. Decodes one frame at
    most (to see whether it is interlaced; none larger than max_pixels). Raises PreviewError
    when FFmpeg cannot open it."""
    try:
        with opened(path) as container:
            return _playability(container, max_pixels)
    except DecodeError as exc:
        raise PreviewError(f"{show(name_of(path))}: {exc}") from None


def _playability(container: av.container.InputContainer, max_pixels: int) -> Playability:
    """The probe itself, on an open container."""
    if container.format.name == "gif":
        return Playability(True, "image/gif", "")  # the page shows it as an image
    stream = video_stream(container)
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
    limit_pixels(ctx, max_pixels)
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


