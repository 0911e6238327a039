"""A small tagged library for the web app's tests: clips whose answers the test model knows.

    red.webm      VP9 in WebM (every browser plays it): red for 4 s
    late red.webm green for 12 s, then red for 20 s: a query for red matches from 12 s
    sub/green.mp4 green, MPEG-4 part 2 (no browser plays it: the page shows an encoded preview)
    sub/blue.avi  blue, MJPEG in AVI (an encoded preview too)
    spin.gif      an animated GIF of blue (shown as an image)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotag import cli
from tests.clips import BLUE, GREEN, RED, ffmpeg, write_gif, write_video
from tests.helpers import write_config

SERVE = "serve: {listen: '127.0.0.1:0'}\n"


def to_webm(source: Path, target: Path) -> Path:
    ffmpeg("-i", str(source), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
           "-b:v", "200k", "-pix_fmt", "yuv420p", "-an", str(target))
    source.unlink()
    return target


def build_library(folder: Path, model_dir: Path, embedder, extra: str = "") -> dict[str, Path]:
    """Clips under folder/clips tagged by `autotag --once`; returns name → path, plus the
    config as 'config'."""
    clips = folder / "clips"
    (clips / "sub").mkdir(parents=True)
    made = {
        "red": to_webm(write_video(folder / "red.mp4", [(RED, 4)], size=(96, 64)),
                       clips / "red.webm"),
        "late red": to_webm(write_video(folder / "late.mp4", [(GREEN, 12), (RED, 20)],
                                        size=(96, 64)), clips / "late red.webm"),
        "green": write_video(clips / "sub" / "green.mp4", [(GREEN, 6)], size=(96, 64)),
        "blue": write_video(clips / "sub" / "blue.avi", [(BLUE, 6)], size=(96, 64),
                            fourcc="MJPG"),
        "gif": write_gif(clips / "spin.gif", [(BLUE, 2)]),
    }
    config = write_config(folder, model_dir, extra)
    config.write_text(config.read_text().replace(  # XMP too: a review must leave it at once
        "outputs: {log: matches.jsonl, previews: previews}",
        "outputs: {log: matches.jsonl, previews: previews, xmp: true}"))
    env = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "XDG_DATA_HOME")}
    assert cli.main(["--once", "--config", str(config), str(clips)], embedder=embedder) == 0, env
    made["config"] = config
    made["clips"] = clips
    return made


def module_library(tmp_path_factory, name: str, model_dir: Path, embedder
                   ) -> Iterator[dict[str, Path]]:
    """build_library in a folder of its own for a module's tests, with the caches and state
    there too (the autouse per-test isolation does not reach a module-scoped fixture)."""
    folder = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder / "xdg-cache"))
        mp.setenv("XDG_DATA_HOME", str(folder / "xdg-data"))
        yield build_library(folder, model_dir, embedder)
