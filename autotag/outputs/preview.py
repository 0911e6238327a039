"""Tagged clip → thumbnails side by side → times and top tags drawn on boxes → JPEG.

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


def render(tagged: Tagged) -> np.ndarray:
    """The annotated strip as a BGR image."""
    thumbs = tagged.clip.thumbnails
    if thumbs.size == 0:
        thumbs = np.zeros((1, TILE_HEIGHT, TILE_HEIGHT * 16 // 9, 3), np.uint8)
    pick = np.linspace(0, len(thumbs) - 1, min(MAX_TILES, len(thumbs))).round().astype(int)
    h, w = thumbs.shape[1:3]
    width = max(1, round(w * TILE_HEIGHT / h))
    tiles = []
    for i in pick:
        tile = cv2.cvtColor(cv2.resize(thumbs[i], (width, TILE_HEIGHT),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
        if i < len(tagged.clip.windows):
            window = tagged.clip.windows[i]
            label_box(tile, f"{window.start:.1f}s", (2, TILE_HEIGHT - 26), 0.45)
        tiles.append(tile)
    strip = np.hstack(tiles)
    y = 4
    lines = [f"{t.label}  {t.score:.2f}  ({t.confidence:.0%})" for t in tagged.tags]
    for line in lines or ["no tag"]:
        y += label_box(strip, ascii_text(line), (4, y), 0.6) + 2
    return strip


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
