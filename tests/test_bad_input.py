"""Bad input: every bad file named once with its reason, the good ones tagged, nothing lost.

One corpus of broken, odd and awkward files goes through `autotag --once` as a user runs it (a
subprocess), and the guarantees are checked over all of it at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autotag.config import OutputsConfig
from autotag.files import show
from autotag.outputs import sidecar_path
from tests.clips import BLUE, GREEN, RED, write_gif, write_video

REPO = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None and not os.environ.get("CI"),
                                  reason="ffmpeg not installed (CI installs it)")


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG or "ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def write_8k(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=7680x4320:r=1:d=1", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def build_corpus(folder: Path) -> tuple[list[Path], list[Path]]:
    """Write the corpus; returns (good clips, bad files)."""
    good = [
        write_video(folder / "plain red.mp4", [(RED, 4)]),
        write_video(folder / "ünïcödé 動画.mp4", [(BLUE, 2)]),
        write_video(folder / "new\nline.mp4", [(GREEN, 2)]),
        write_video(folder / "-leading-dash.mp4", [(RED, 2)]),
        write_video(folder / (("long" * 60) + ".mp4"), [(RED, 1)]),  # 244-byte name
        write_video(folder / "one frame.mp4", [(RED, 0.1)]),
        write_gif(folder / "one frame.gif", [(GREEN, 0.1)]),
        write_video(folder / "tiny 16x16.mp4", [(BLUE, 2)], size=(16, 16)),
        write_gif(folder / "zero delays.gif", [(RED, 1)], delay_ms=0),
    ]
    sub = folder / "sub"
    sub.mkdir()
    os.symlink(folder / "plain red.mp4", sub / "link to red.mp4")  # tagged once, as the original
    os.symlink(folder, sub / "loop")  # a folder containing itself
    bad = [folder / "empty.mp4", folder / "text.mp4", folder / "random.gif",
           folder / "truncated.mp4", folder / "huge frames.mp4"]
    bad[0].write_bytes(b"")
    bad[1].write_text("this is not a video, just a file with a video's name\n" * 50)
    bad[2].write_bytes(os.urandom(4096))
    whole = write_video(folder / "whole.mp4", [(GREEN, 6)], size=(320, 240)).read_bytes()
    (folder / "whole.mp4").unlink()
    bad[3].write_bytes(whole[:200])  # the header and little else: no frame decodes
    write_video(bad[4], [(RED, 1)], size=(640, 480))  # over max_pixels in this config
    if FFMPEG:
        bad.append(folder / "audio only.mp4")
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
               str(bad[-1]))
        bad.append(folder / "8K frames.mp4")  # refused before a frame is decoded
        write_8k(bad[-1])
        bad.append(folder / "a photo.mp4")  # a JPEG with a video's name: not a video
        ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", "-f", "mjpeg",
               str(bad[-1]))
        good.append(folder / "hour long.mp4")  # sampled at bounded cost
        ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=1:d=3600", "-c:v", "libx264",
               "-g", "300", "-pix_fmt", "yuv420p", str(good[-1]))
        good.append(folder / "variable rate.mkv")
        ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=32x32:r=25:d=4",
               "-vf", "setpts='if(lt(N,50),N/(25*TB),(50+(N-50)*4)/(25*TB))'",
               "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(good[-1]))
    return good, bad


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_ffmpeg
def test_bad_input_corpus_through_once(tmp_path, model_dir):
    clips = tmp_path / "clips"
    clips.mkdir()
    good, bad = build_corpus(clips)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}'}}\nvocabulary: [red, green, blue]\n"
        "tagging: {min_score: 3.0}\nsampling: {max_pixels: 100000}\n"
        f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
        "outputs: {log: matches.jsonl, previews: previews}\n")
    originals = {p: digest(p) for p in good + bad}
    done = subprocess.run([sys.executable, "-m", "autotag", "--once", "--config", str(config),
                           str(clips)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    err = done.stderr
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert not re.search(r"^\[[\w,]+ @ 0x", err, re.M)  # no FFmpeg chatter beside our lines
    # every bad file named once, with a reason
    for path in bad:
        lines = [line for line in err.splitlines() if show(path) in line]
        assert len(lines) == 1, (path.name, lines)
        assert "skipping" in lines[0] and len(lines[0]) > len(show(path)) + 12
    assert "sampling.max_pixels" in err
    # every good file tagged, under one path
    for path in good:
        sidecar = sidecar_path(path, OutputsConfig())
        assert sidecar.is_file(), (path.name, err)
        assert json.loads(sidecar.read_text())["source"]["path"] == str(path)
    assert not Path(f"{clips / 'sub' / 'link to red.mp4'}.autotag.json").exists()
    assert json.loads(Path(f"{clips / 'hour long.mp4'}.autotag.json").read_text())[
        "duration"] == pytest.approx(3600, abs=2)
    # originals byte-identical; no temp files anywhere
    assert {p: digest(p) for p in originals} == originals
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".autotag.tmp")]
    # every bad file recorded in the state store with its reason
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        failed = dict(db.execute("SELECT path, last_error FROM files WHERE status = 'failed'"))
    assert set(failed) == {str(p) for p in bad}
    assert all(failed.values())


def _stderr_lines(proc: subprocess.Popen, into: list[str]) -> threading.Thread:
    """Collect the daemon's stderr lines in a thread (owned by the test, ends at EOF)."""
    def read() -> None:
        for line in proc.stderr:
            into.append(line)
    reader = threading.Thread(target=read, name="stderr-reader")
    reader.start()
    return reader


def _wait_for(condition, what: str, deadline: float = 300.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@needs_ffmpeg
def test_bad_input_corpus_arriving_in_watch_mode(tmp_path, model_dir):
    """The same corpus written into a watched folder while the daemon runs: each bad file named
    once (after its retries) and recorded, each good one tagged once under one path, originals
    unchanged, no temp files, no traceback, and the daemon still stops cleanly with exit 0."""
    clips = tmp_path / "clips"
    clips.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}'}}\nvocabulary: [red, green, blue]\n"
        "tagging: {min_score: 3.0}\nsampling: {max_pixels: 100000}\n"
        f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
        "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n"
        "outputs: {log: matches.jsonl, previews: previews}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "autotag", "--config", str(config),
                             str(clips)], stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = _stderr_lines(proc, lines)
    try:
        _wait_for(lambda: any("watching" in x for x in lines), "the daemon to start", 120)
        good, bad = build_corpus(clips)
        originals = {p: digest(p) for p in good + bad}
        _wait_for(lambda: all(sidecar_path(p, OutputsConfig()).is_file() for p in good)
                  and all(any(f"skipping {p}" in x for x in lines) for p in bad),
                  "every clip to be tagged or failed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=60)
    err = "".join(lines)
    assert "Traceback" not in err
    assert not re.search(r"^\[[\w,]+ @ 0x", err, re.M)
    for path in bad:
        assert len([x for x in lines if f"skipping {path}:" in x]) == 1, (path.name, err)
    assert "sampling.max_pixels" in err
    for path in good:
        assert json.loads(sidecar_path(path, OutputsConfig()).read_text())["source"][
            "path"] == str(path)
    logged = [json.loads(x)["path"] for x in (tmp_path / "matches.jsonl").read_text()
              .splitlines()]
    assert sorted(logged) == sorted(str(p) for p in good)  # each good clip once, one path
    assert not Path(f"{clips / 'sub' / 'link to red.mp4'}.autotag.json").exists()
    assert {p: digest(p) for p in originals} == originals
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".autotag.tmp")]
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        failed = dict(db.execute("SELECT path, last_error FROM files WHERE status = 'failed'"))
    assert set(failed) == {str(p) for p in bad}


@needs_ffmpeg
def test_8k_frames_are_refused_at_the_default_pixel_limit_naming_the_setting(tmp_path):
    from autotag import media
    from autotag.config import SamplingConfig

    with pytest.raises(media.DecodeError, match=r"7680×4320 .*sampling\.max_pixels"):
        media.sample_clip(write_8k(tmp_path / "8k.mp4"), 8, SamplingConfig().max_pixels)
