"""Cheaper decoding that leaves what the model sees (issue 34): frames of 720p and up are decoded
without FFmpeg's in-loop deblocking filter (sampling.SKIP_LOOP_FILTER_FROM), and from 30 fps up
no frame that nothing refers to is decoded (sampling.reference_frames_only), each accepted only
with the scores' cosine to full decoding >= 0.999 on H.264 and HEVC test clips (testsrc2 with
grain, the pattern moving, so predicted frames carry the skipped filter's drift through the GOP).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from autotag import media
from autotag.engine import model_input
from autotag.media import pictures, reader, sampling

MIN_SCORE_COSINE = 0.999
SIZE = "1280x720"  # the smallest frames the filter is skipped for
PROMPTS = ["red", "green", "blue", "moving", "bright", "sky"]

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def encode(path: Path, codec: str, rate: int = 25) -> Path:
    extra = ["-x265-params", "log-level=error"] if codec == "libx265" else []
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={SIZE}:rate={rate},noise=alls=8:allf=t", "-t", "4",
                    "-c:v", codec, "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p",
                    *extra, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("decode-speed")
    return [encode(folder / "h264.mp4", "libx264"), encode(folder / "hevc.mp4", "libx265")]


def sampled(path: Path, skip: bool, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(reader, "LOOP_FILTER_SKIPPED",
                        {"skip_loop_filter": "all"} if skip else {})
    return media.sample_clip(path, 4, 20_000_000).frames


def test_skipping_the_loop_filter_keeps_the_scores(clips, embedder, monkeypatch):
    assert 720 >= sampling.SKIP_LOOP_FILTER_FROM * pictures.FRAME_SIZE  # the rule covers 720p
    texts = embedder.embed_text(PROMPTS)
    for clip in clips:
        full, cheap = sampled(clip, False, monkeypatch), sampled(clip, True, monkeypatch)
        assert not np.array_equal(full, cheap), f"{clip.name}: the option had no effect"
        a = embedder.embed_video(model_input(list(full))) @ texts.T
        b = embedder.embed_video(model_input(list(cheap))) @ texts.T
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= MIN_SCORE_COSINE, (clip.name, cosine)
        # and the pixels the model sees move by about a grey level on average
        assert np.abs(full.astype(np.float32) - cheap).mean() < 2.0, clip.name


def test_small_frames_decode_in_full(tmp_path, monkeypatch):
    """Below SKIP_LOOP_FILTER_FROM × 224 px the filter runs: a 480p frame shrinks by 2x only."""
    clip = tmp_path / "small.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=854x480:rate=25,noise=alls=8:allf=t", "-t", "2", "-c:v",
                    "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(clip)],
                   check=True)
    np.testing.assert_array_equal(sampled(clip, False, monkeypatch),
                                  sampled(clip, True, monkeypatch))


@pytest.fixture(scope="module")
def clips_30fps(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("decode-speed-30")
    return [encode(folder / "h264.mp4", "libx264", 30), encode(folder / "hevc.mp4", "libx265", 30)]


def decoded(clip: Path, reference_only: bool, monkeypatch) -> tuple[np.ndarray, int]:
    """(the frames the model sees, how many frames the decoder gave)."""
    count = []
    real = reader.FrameReader._gap  # sees every frame the decoder gives
    monkeypatch.setattr(reader.FrameReader, "_gap",
                        lambda self, frame: (count.append(1), real(self, frame))[1])
    frames = media.sample_clip(clip, 4, 20_000_000, reference_only=reference_only).frames
    monkeypatch.setattr(reader.FrameReader, "_gap", real)
    return frames, len(count)


def test_reference_frames_only_keeps_the_scores(clips_30fps, embedder, monkeypatch):
    """sampling.reference_frames_only (the default): at 30 fps a sample on a frame nothing
    refers to takes the reference frame before it. What the model sees moves by a frame; the
    scores must not (cosine >= 0.999), and fewer frames are decoded."""
    texts = embedder.embed_text(PROMPTS)
    for clip in clips_30fps:
        exact, n_exact = decoded(clip, False, monkeypatch)
        nearest, n_nearest = decoded(clip, True, monkeypatch)
        assert not np.array_equal(exact, nearest), f"{clip.name}: nothing changed"
        assert n_nearest < n_exact, (clip.name, n_nearest, n_exact)
        a = embedder.embed_video(model_input(list(exact))) @ texts.T
        b = embedder.embed_video(model_input(list(nearest))) @ texts.T
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() >= MIN_SCORE_COSINE, (clip.name, cosine)
