"""Generate small test clips: solid-colour (optionally flashing) MP4 and GIF files.

A clip is a list of parts, each (rgb, seconds[, moving]); the test model (testmodel.py) scores
colours and motion, so what a test writes here decides which tag must win and when.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def frames_for(parts: list[tuple], fps: float, size: tuple[int, int]) -> list[np.ndarray]:
    """RGB uint8 frames [h, w, 3]; a part (rgb, seconds, True) alternates with black each frame."""
    w, h = size
    frames = []
    for part in parts:
        rgb, seconds = part[0], part[1]
        moving = len(part) > 2 and part[2]
        for i in range(max(1, round(seconds * fps))):
            frame = np.empty((h, w, 3), np.uint8)
            frame[:] = (0, 0, 0) if moving and i % 2 else rgb
            frames.append(frame)
    return frames


def write_video(path: Path, parts: list[tuple], fps: float = 10.0,
                size: tuple[int, int] = (64, 48), fourcc: str = "mp4v") -> Path:
    """Write parts as a video (MPEG-4 part 2 in .mp4 by default; 'MJPG' for .avi)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames_for(parts, fps, size):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_gif(path: Path, parts: list[tuple], delay_ms: int = 100,
              size: tuple[int, int] = (32, 24)) -> Path:
    """Write parts as an animated GIF whose frames each last delay_ms (0: the GIF says 0, which
    players show as 100 ms; the parts' seconds are counted at that rate)."""
    frames = frames_for(parts, 1000.0 / (delay_ms or 100), size)
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    animation.durations = [delay_ms] * len(frames)
    assert cv2.imwriteanimation(str(path), animation), f"OpenCV cannot write {path}"
    return path
