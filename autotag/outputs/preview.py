"""Tagged clip → thumbnails side by side → top tags in a band above them, each tile's time in a
band under it (never over a picture) → JPEG.

Text is drawn with OpenCV's Hershey fonts, which are ASCII only: other letters are transliterated
where Unicode can decompose them (é → e) and replaced by '?' otherwise.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from autotag.clip import Tagged
from autotag.outputs.base import write_file

MAX_TILES = 8  # thumbnails across
TILE_HEIGHT = 160  # px
FONT = cv2.FONT_HERSHEY_SIMPLEX
JPEG_QUALITY = 88
PAD = 6  # px around text
TEXT_BG = (0, 0, 0)  # BGR: white text on a black box reads on any frame
TEXT_FG = (255, 255, 255)
TAG_SCALE = 0.6  # font scale of the tag lines (in the band above the pictures)
TIME_SCALE = 0.45  # font scale of a tile's time (in the band under it)


def ascii_text(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c if c.isascii() and c.isprintable() else ("" if unicodedata.combining(c)
                                                             else "?") for c in decomposed)


def preview_name(clip: Path) -> str:
    """Unique per clip path: two run.mp4 in different folders get different previews."""
    digest = hashlib.sha256(str(clip.absolute()).encode()).hexdigest()[:8]
    return f"{ascii_text(clip.name).replace('?', '_').replace('/', '_')[:100]}.{digest}.jpg"


def label_box(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> int:
    """Draw text on a filled box with its top-left corner at origin; returns the box height."""
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = origin
    w = min(w, image.shape[1] - x - 2 * PAD)
    cv2.rectangle(image, (x, y), (x + w + 2 * PAD, y + h + base + 2 * PAD), TEXT_BG, cv2.FILLED)
    cv2.putText(image, text, (x + PAD, y + PAD + h), FONT, scale, TEXT_FG, thickness,
                cv2.LINE_AA)
    return h + base + 2 * PAD


def _text_size(text: str, scale: float) -> tuple[int, int]:
    """(width, height) in px of a label_box of this text, padding included."""
    (w, h), base = cv2.getTextSize(text, FONT, scale, max(1, round(scale * 2)))
    return w + 2 * PAD, h + base + 2 * PAD


def _tag_lines(tagged: Tagged) -> list[str]:
    """A tag's line: its score over its threshold would need the config; the raw score is
    what the sidecar holds too, and the softmax share is left out (it reads as a probability
    of the tag, which it is not)."""
    return [ascii_text(f"{t.label}  {t.score:.2f}") for t in tagged.tags] or ["no tag"]


def render(tagged: Tagged) -> np.ndarray:
    """The annotated strip as a BGR image: the tags in a band above the pictures and each
    tile's time in a band under it, so no label covers a picture (a portrait or rotated
    clip's narrow tiles included), and the image as wide as its widest label, so none is
    cut."""
    thumbs = tagged.clip.thumbnails
    if thumbs.size == 0:
        thumbs = np.zeros((1, TILE_HEIGHT, TILE_HEIGHT * 16 // 9, 3), np.uint8)
    pick = np.linspace(0, len(thumbs) - 1, min(MAX_TILES, len(thumbs))).round().astype(int)
    h, w = thumbs.shape[1:3]
    width = max(1, round(w * TILE_HEIGHT / h))
    times = [f"{tagged.clip.windows[i].start:.1f}s" if i < len(tagged.clip.windows) else ""
             for i in pick]
    time_h = _text_size("0.0s", TIME_SCALE)[1]
    # a tile at least as wide as its time label, the picture centred on black in it
    tile_w = max(width, max((_text_size(t, TIME_SCALE)[0] for t in times if t), default=0))
    tiles = []
    for i, when in zip(pick, times):
        tile = np.zeros((TILE_HEIGHT + time_h, tile_w, 3), np.uint8)
        left = (tile_w - width) // 2
        tile[:TILE_HEIGHT, left:left + width] = cv2.cvtColor(
            cv2.resize(thumbs[i], (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA),
            cv2.COLOR_RGB2BGR)
        if when:
            label_box(tile, when, (max(0, (tile_w - _text_size(when, TIME_SCALE)[0]) // 2),
                                   TILE_HEIGHT), TIME_SCALE)
        tiles.append(tile)
    strip = np.hstack(tiles)
    lines = _tag_lines(tagged)
    sizes = [_text_size(line, TAG_SCALE) for line in lines]
    band_h = 4 + sum(lh + 2 for _, lh in sizes)
    out_w = max(strip.shape[1], max(lw for lw, _ in sizes) + 8)
    out = np.zeros((band_h + strip.shape[0], out_w, 3), np.uint8)
    out[band_h:, :strip.shape[1]] = strip
    y = 4
    for line in lines:
        y += label_box(out, line, (4, y), TAG_SCALE) + 2
    return out


class Preview:
    name = "preview"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, tagged: Tagged) -> Path:
        ok, jpeg = cv2.imencode(".jpg", render(tagged), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            from autotag.outputs.base import OutputError

            raise OutputError("cannot encode the preview JPEG")
        return write_file(self.folder / preview_name(tagged.clip.source.path), jpeg.tobytes())
