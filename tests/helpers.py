"""Helpers the test modules share (fixtures live in conftest.py): configs, the counting
embedder, sidecar reading, a daemon running in a thread."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from autotag.app import open_app
from autotag.clip import Embedded, Segment, SourceInfo, Tag, Tagged, Window
from autotag.config import load_config
from autotag.daemon.service import Daemon
from autotag.tagging import ClipResult

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "autotag" / "schemas" / "sidecar.schema.json"
DEADLINE = 30.0  # s; generous upper bound for anything to happen


class ContainerProxy:
    """A PyAV container passed through, for a test to override one of its methods (slow
    demuxing, counted seeks) while the media reader uses it as usual, `with` included."""

    def __init__(self, inner):
        self.inner = inner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CountingEmbedder:
    """The real test model, counting video calls and their batch sizes."""

    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def embed_video(self, frames):
        assert frames.dtype == np.float32
        with self.lock:
            self.batches.append(frames.shape[0])
        return self.inner.embed_video(frames)

    def embed_text(self, texts):
        return self.inner.embed_text(texts)


def write_config(folder: Path, model_dir: Path, extra: str = "") -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}', batch_size: 8}}\n"
        "vocabulary: [red, green, {sea: [blue water, blue sky]}]\n"
        "tagging: {top_k: 2, min_score: 3.0}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        "outputs: {log: matches.jsonl, previews: previews}\n" + extra)
    return config


def sidecar(path: Path) -> dict:
    return json.loads(Path(f"{path}.autotag.json").read_text())


def write_daemon_config(folder: Path, model_dir: Path, vocabulary: str = "[red, green]") -> Path:
    path = folder / "config.yaml"
    path.write_text(
        f"model: {{handle: '{model_dir}'}}\nvocabulary: {vocabulary}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n"
        "outputs: {log: matches.jsonl, previews: null}\n")
    return path


def wait_for(condition, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def log_lines(config: Path) -> list[dict]:
    path = config.parent / "matches.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Running:
    """A daemon in a thread of this process, with a counting embedder."""

    def __init__(self, config_path: Path, root: Path, embedder, notifier=None) -> None:
        self.config_path = config_path
        self.embedder = CountingEmbedder(embedder)
        self.results: list[ClipResult] = []
        self.daemon = Daemon(load_config(config_path), [root],
                             open_app=lambda c, e: open_app(c, embedder=self.embedder),
                             reload_config=lambda: load_config(config_path),
                             notifier=notifier, on_result=self.results.append)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.code = self.daemon.run()

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.daemon.ready.wait(DEADLINE)
        return self

    def __exit__(self, *exc) -> None:
        self.daemon.request_stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


def tagged(clip: Path, *labels: str) -> Tagged:
    tags = tuple(Tag(label, 8.0 - i, 0.5, (Segment(0.0, 3.2, 8.0 - i),))
                 for i, label in enumerate(labels))
    embedded = Embedded(SourceInfo(clip, 10, 1.0, "0" * 64), 3.2, (Window(0.0, 3.2),),
                        np.zeros((1, 512), np.float32), np.zeros((1, 18, 32, 3), np.uint8))
    return Tagged(embedded, "model", "vocab", tags, tags)




class DaemonProcess:
    """`autotag --debug --config CONFIG DIR` in a subprocess, as users run it, its stderr
    collected by a reader thread it owns. command: what runs instead of `-m autotag` (a script
    that reports on the process after `cli.main` returns)."""

    def __init__(self, config: Path, root: Path, command: list[str] = ("-m", "autotag"),
                 env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, *command, "--debug", "--config", str(config), str(root)],
            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, name="daemon-stderr")
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(timeout=60)


def tags_of(config: Path, embedder, paths: list[Path]) -> dict[str, tuple]:
    """Tag `paths` with `embedder` under `config` (all must be tagged): clip name → its tags.
    What tests comparing two runtimes or precisions on the same clips both need."""
    app = open_app(load_config(config), embedder)
    try:
        results = list(app.tag(paths))
    finally:
        app.close()
    assert [r.status for r in results] == ["tagged"] * len(paths)
    return {r.path.name: r.tags for r in results}


def serve_process(config: Path, folder: Path) -> tuple[subprocess.Popen, int]:
    """`autotag serve` on a free loopback port as users start it, its home and caches in
    `folder`, its stderr piped: (the process, its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotag", "serve", "--config", str(config), "--listen",
         f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True, cwd=folder,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(folder),
             "XDG_CACHE_HOME": str(folder / "xdg-cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
             "XDG_DATA_HOME": str(folder / "xdg-data")})
    return proc, port
