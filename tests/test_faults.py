"""Faults around the clips: full disks, unwritable folders, files that change or vanish mid-read,
decoders that hang, unreadable files. Each is one failed clip with a reason; nothing partial is
left; the rest is tagged. (Root ignores permissions, so denials are injected where the kernel
would raise them.)"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from autotag import engine, media
from autotag.app import open_app
from autotag.config import load_config
from autotag.media import reader
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import ContainerProxy, Running, log_lines, wait_for, write_daemon_config


@pytest.fixture
def library(tmp_path, model_dir):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, colour in (("a.mp4", RED), ("b.mp4", GREEN), ("c.mp4", BLUE)):
        write_video(clips / name, [(colour, 2)])
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{handle: '{model_dir}'}}\nvocabulary: [red, green, blue]\n"
                      f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
                      "outputs: {log: matches.jsonl, previews: previews, xmp: true}\n")
    return clips, config


def run(config_path: Path, clips: list[Path], embedder, extra: str = ""):
    config = load_config(config_path)
    app = open_app(config, embedder=embedder)
    try:
        return {r.path.name: r for r in app.tag(clips)}
    finally:
        app.close()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".autotag.tmp")]


def test_disk_full_leaves_no_partial_output_and_says_so(library, embedder):
    clips, config = library
    real_write = os.write

    def full_for_b(fd, data):  # every write of an output for b.mp4 hits a full disk
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "b.mp4" in name or ("matches.jsonl" in name and b"b.mp4" in bytes(data)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with mock.patch("autotag.atomic.os.write", full_for_b):
        results = run(config, sorted(clips.iterdir()), embedder)
    assert results["b.mp4"].status == "failed"
    assert "disk is full" in results["b.mp4"].reason
    assert {results["a.mp4"].status, results["c.mp4"].status} == {"tagged"}
    assert not (clips / "b.mp4.autotag.json").exists()
    assert not (clips / "b.mp4.xmp").exists()
    log = (config.parent / "matches.jsonl").read_text()
    assert "b.mp4" not in log and log.endswith("\n") and log.count("\n") == 2
    assert leftovers(config.parent) == []


def test_unwritable_folder_is_reported_and_sidecar_dir_writes_elsewhere(library, embedder):
    clips, config = library
    real_open = os.open

    def read_only_clips(path, flags, *args):  # clips/ is a read-only share
        if Path(path).parent == clips and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    with mock.patch("autotag.atomic.os.open", read_only_clips):
        results = run(config, [clips / "a.mp4"], embedder)
        assert results["a.mp4"].status == "failed"
        assert "outputs.sidecar_dir" in results["a.mp4"].reason
        mirror = config.parent / "sidecars"
        config.write_text(config.read_text().replace(
            "xmp: true", f"sidecar_dir: '{mirror}'"))
        results = run(config, [clips / "a.mp4"], embedder)
    assert results["a.mp4"].status in ("tagged", "reused")
    mirrored = mirror / clips.relative_to("/") / "a.mp4.autotag.json"
    assert mirrored.is_file()
    assert leftovers(config.parent) == []


def test_file_deleted_or_replaced_while_decoding(library, embedder):
    clips, config = library
    real = media.sample_clip

    def meddling(path, *args, **kwargs):
        sampled = real(path, *args, **kwargs)
        if path.name == "a.mp4":
            path.unlink()
        elif path.name == "b.mp4":
            write_video(path, [(RED, 3)])  # replaced by another clip mid-read
        return sampled

    with mock.patch.object(engine.media, "sample_clip", meddling):
        results = run(config, sorted(clips.iterdir()), embedder)
    assert results["a.mp4"].status == results["b.mp4"].status == "failed"
    assert results["b.mp4"].retryable and "changed while" in results["b.mp4"].reason
    assert results["c.mp4"].status == "tagged"
    assert not (clips / "b.mp4.autotag.json").exists()


def test_a_hanging_decode_is_cut_off_by_the_timeout(library, embedder):
    clips, config = library
    config.write_text(config.read_text() + "sampling: {decode_timeout: 0.5}\n")
    real_open = reader.av.open

    class SlowContainer(ContainerProxy):
        """A container whose demuxing takes forever (a stuck network read)."""

        def demux(self, *args, **kwargs):
            for packet in self.inner.demux(*args, **kwargs):
                time.sleep(0.2)
                yield packet

    def slow_open(path, *args, **kwargs):
        container = real_open(path, *args, **kwargs)
        return SlowContainer(container) if str(path).endswith("a.mp4") else container

    with mock.patch.object(reader.av, "open", slow_open):
        started = time.monotonic()
        results = run(config, sorted(clips.iterdir()), embedder)
    assert results["a.mp4"].status == "failed"
    assert "sampling.decode_timeout" in results["a.mp4"].reason
    assert time.monotonic() - started < 20
    assert results["c.mp4"].status == "tagged"


def test_unreadable_file_is_reported(library, embedder):
    clips, config = library
    real = engine.hash_file

    def denied(path):
        if path.name == "a.mp4":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path)

    with mock.patch.object(engine, "hash_file", denied):
        results = run(config, sorted(clips.iterdir()), embedder)
    assert results["a.mp4"].status == "failed"
    assert "Permission denied" in results["a.mp4"].reason
    assert results["b.mp4"].status == "tagged"


def test_originals_are_never_written(library, embedder):
    clips, config = library
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in clips.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in clips.iterdir()}
    run(config, sorted(clips.iterdir()), embedder)
    originals = [p for p in clips.iterdir() if p.name in before]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in originals} == before
    assert {p.name: p.stat().st_mtime_ns for p in originals} == mtimes


class FailsOnBlue:
    """The real test model, except that a call holding a blue window raises (as TensorFlow does
    on a bad input) and one holding a green window returns NaN."""

    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint

    def embed_video(self, frames):
        channel_means = frames.mean(axis=(1, 2, 3))  # [B, 3] RGB
        if (channel_means[:, 2] > 0.5).any():
            raise RuntimeError("INVALID_ARGUMENT: blue is not allowed\nsecond line")
        out = self.inner.embed_video(frames)
        if (channel_means[:, 1] > 0.5).any():
            out = np.full_like(out, np.nan)
        return out

    def embed_text(self, texts):
        return self.inner.embed_text(texts)


def test_model_exception_and_nan_fail_only_their_clips_in_once_mode(library, embedder):
    clips, config = library
    results = run(config, sorted(clips.iterdir()), FailsOnBlue(embedder))
    assert results["c.mp4"].status == "failed"
    assert "RuntimeError: INVALID_ARGUMENT: blue is not allowed" in results["c.mp4"].reason
    assert "\n" not in results["c.mp4"].reason
    assert results["b.mp4"].status == "failed" and "NaN" in results["b.mp4"].reason
    assert results["a.mp4"].status == "tagged"
    assert not (clips / "c.mp4.autotag.json").exists()


def test_model_exception_and_nan_fail_only_their_clips_in_watch_mode(tmp_path, model_dir,
                                                                     embedder):
    root = tmp_path / "inbox"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir)
    with Running(config, root, FailsOnBlue(embedder)) as daemon:
        for name, colour in (("blue.mp4", BLUE), ("green.mp4", GREEN), ("red.mp4", RED)):
            write_video(root / name, [(colour, 2)])
        wait_for(lambda: {r.path.name for r in daemon.results} >= {"blue.mp4", "green.mp4",
                                                                     "red.mp4"})
        write_video(root / "later red.mp4", [(RED, 3)])  # the daemon goes on after the faults
        wait_for(lambda: len(log_lines(config)) == 2)
    results = {r.path.name: r for r in daemon.results}
    assert results["blue.mp4"].status == "failed" and "RuntimeError" in results["blue.mp4"].reason
    assert results["green.mp4"].status == "failed" and "NaN" in results["green.mp4"].reason
    assert results["red.mp4"].status == results["later red.mp4"].status == "tagged"
    assert daemon.daemon.counts["failed"] == 2
    assert daemon.code == 0
    assert sorted(Path(x["path"]).name for x in log_lines(config)) == ["later red.mp4", "red.mp4"]


def test_filesystem_faults_in_watch_mode(tmp_path, model_dir, embedder):
    """The daemon meets a full disk, a clip deleted mid-read and a read-only folder (with
    outputs.sidecar_dir) as --once does: each named with its reason, nothing partial, the rest
    tagged, and it goes on running."""
    root = tmp_path / "inbox"
    root.mkdir()
    mirror = tmp_path / "sidecars"
    config = write_daemon_config(tmp_path, model_dir)
    config.write_text(config.read_text().replace("outputs: {",
                                                 f"outputs: {{sidecar_dir: '{mirror}', "))
    real_write, real_open, real_sample = os.write, os.open, media.sample_clip

    def full_for_full(fd, data):  # every output of full.mp4 meets a full disk
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "full.mp4" in name or ("matches.jsonl" in name and b"full.mp4" in bytes(data)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    def read_only_inbox(path, flags, *args):  # the watched folder itself is a read-only share
        if Path(path).parent == root and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    def vanishing(path, *args, **kwargs):
        sampled = real_sample(path, *args, **kwargs)
        clip = kwargs.get("shown") or path  # the daemon reads the checked file by descriptor
        if clip.name == "vanishes.mp4":
            clip.unlink()  # deleted while it was being read
        return sampled

    with mock.patch("autotag.atomic.os.write", full_for_full), \
            mock.patch("autotag.atomic.os.open", read_only_inbox), \
            mock.patch.object(engine.media, "sample_clip", vanishing), \
            Running(config, root, embedder) as daemon:
        for name, colour in (("full.mp4", RED), ("vanishes.mp4", GREEN), ("fine.mp4", BLUE)):
            write_video(root / name, [(colour, 2)])
        wait_for(lambda: {r.path.name for r in daemon.results if r.status != "failed"
                          or not r.retryable} >= {"full.mp4", "fine.mp4"})
        wait_for(lambda: any(r.path.name == "vanishes.mp4" for r in daemon.results))
        write_video(root / "later.mp4", [(RED, 3)])  # and it goes on
        wait_for(lambda: len(log_lines(config)) == 2)
    results = {r.path.name: r for r in daemon.results}
    assert results["full.mp4"].status == "failed" and "disk is full" in results["full.mp4"].reason
    assert results["vanishes.mp4"].status == "failed"
    assert results["fine.mp4"].status == results["later.mp4"].status == "tagged"
    assert (mirror / root.relative_to("/") / "fine.mp4.autotag.json").is_file()
    assert not list(mirror.rglob("full.mp4*")) and not list(mirror.rglob("vanishes.mp4*"))
    assert sorted(Path(x["path"]).name for x in log_lines(config)) == ["fine.mp4", "later.mp4"]
    assert leftovers(tmp_path) == [] and not list(root.glob("*.autotag.json"))
    assert daemon.code == 0
