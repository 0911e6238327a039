"""TensorFlow's work in a child process → its result on disk or on stdout → the child exits.

    parent: convert(handle, batch, folder) ─► `python -m autotag.tfworker convert ...`
            ─► the child loads the SavedModel with TensorFlow, converts the video signature
               to OpenVINO IR in `folder` (atomically) ─► exit 0
    parent: ChildText.embed_text(texts) ─► `python -m autotag.tfworker text ...`
            ─► JSON list of texts on stdin ─► float32 [N, 512] as .npy on stdout ─► exit 0
    parent: ResidentText.embed_text(texts) ─► `... tfworker text-server HANDLE --idle S`, kept
            ─► per call: a framed JSON list in, a framed .npy (or error line) out ─► the child
               exits by itself after S seconds without a call (or when the parent goes)

TensorFlow is a loader and a converter, not a resident (issue 19): importing it costs about
570 MB of resident memory that a process never gives back, so a daemon that loaded it once to
embed a new prompt held it for months. Here it lives only as long as the child. Exit codes: 0
done; 2 the model cannot be loaded (a ModelError: stderr's last line says why); 1 the
conversion failed (a ConversionError; the parent runs the model on TensorFlow instead).
This module is the parent's side (no TensorFlow, no autotag import); tfworker.py the child's.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from autotag.errors import AutotagError

CHILD_TIMEOUT = 1800.0  # s; a first run downloads the model (about 100 MB) before converting
EXIT_CONVERSION = 1
EXIT_MODEL = 2


class ChildError(AutotagError):
    """A child's failure: its exit code and the last line it wrote to stderr."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code = code


def run(args: list[str], stdin: bytes = b"", threads: int = 0,
        env: dict[str, str] | None = None) -> bytes:
    """Run one child command (with `env` added to ours: the hub cache); its stdout, or
    ChildError with its one line. The child's chatter stays in its stderr."""
    env = {**os.environ, **(env or {})}
    command = [sys.executable, "-m", "autotag.tfworker", *args, "--threads",
               str(threads)]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, env=env,
                              timeout=CHILD_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChildError(EXIT_MODEL, f"the TensorFlow child process failed: {exc}") from None
    if done.returncode != 0:
        lines = [x for x in done.stderr.decode(errors="replace").splitlines() if x.strip()]
        raise ChildError(done.returncode, lines[-1].strip() if lines else
                         f"the TensorFlow child process exited with {done.returncode}")
    return done.stdout


def convert(handle: str, batch_size: int, folder: Path, threads: int = 0,
            env: dict[str, str] | None = None) -> None:
    """The video signature converted to OpenVINO IR in `folder`, by a child process."""
    run(["convert", handle, str(batch_size), str(folder)], threads=threads, env=env)


class ChildText:
    """The text signature, run in a child process for each call: only texts that are not in
    the text-embedding cache get here (a new prompt, a new query), and rarely."""

    def __init__(self, handle: str, threads: int = 0, env: dict[str, str] | None = None) -> None:
        self.handle = handle
        self.threads = threads
        self.env = env

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N strings → float32 [N, 512]."""
        out = run(["text", self.handle], json.dumps(list(texts)).encode(), self.threads,
                  self.env)
        return np.load(io.BytesIO(out), allow_pickle=False)


FRAME = struct.Struct(">I")  # a frame's length, before its bytes
OK, FAILED = b"0", b"1"  # a reply's first byte: .npy bytes follow, or the error's one line


def reply(model, texts: list[str]) -> bytes:
    """The server's side of one request (tfworker's pipe, shared_text's socket): the model's
    embeddings as a framed .npy, or its failure's line; the server goes on either way."""
    try:
        buffer = io.BytesIO()
        np.save(buffer, model.embed_text(texts), allow_pickle=False)
        status, body = OK, buffer.getvalue()
    except Exception as exc:  # noqa: BLE001 - the client gets the one line
        status, body = FAILED, str(exc).encode()
    return status + FRAME.pack(len(body)) + body


class ResidentText:
    """The text signature in a child kept between calls (the web app: each new query would
    otherwise start TensorFlow, seconds, again). The child ends itself after `idle` seconds
    without a call, so its ~570 MB go away when nobody searches; the next call starts a new one.
    Calls are serialised (one child, one request at a time)."""

    def __init__(self, handle: str, threads: int = 0, env: dict[str, str] | None = None,
                 idle: float = 300.0) -> None:
        self.handle, self.threads, self.env, self.idle = handle, threads, env, idle
        self._proc: subprocess.Popen | None = None
        self._reaper: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N strings → float32 [N, 512]; ChildError if the child cannot load the model."""
        with self._lock:
            request = json.dumps(list(texts)).encode()
            for attempt in range(2):  # a child that just ended for idleness: start another
                if not self.running:
                    self._stop()  # one that ended idle: its pipes closed, its reaper joined
                    self._start()
                try:
                    return self._ask(request)
                except (BrokenPipeError, EOFError):
                    failed = self._stop()
                    if attempt or failed:
                        raise ChildError(EXIT_MODEL, failed or "the TensorFlow text child "
                                         "ended unexpectedly") from None
            raise AssertionError("unreachable")

    def _start(self) -> None:
        env = {**os.environ, **(self.env or {})}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "autotag.tfworker", "text-server", self.handle,
             "--idle", str(self.idle), "--threads", str(self.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # The child ends itself when idle, with no call of ours to notice: a thread of this
        # object waits for it, so it is reaped then and never lingers as a zombie (issue 30).
        # It ends with the child; close() ends the child.
        self._reaper = threading.Thread(target=self._proc.wait, name="autotag-text-reaper",
                                        daemon=True)
        self._reaper.start()

    def _ask(self, request: bytes) -> np.ndarray:
        proc = self._proc
        proc.stdin.write(FRAME.pack(len(request)) + request)
        proc.stdin.flush()
        status = proc.stdout.read(1)
        head = proc.stdout.read(FRAME.size)
        if len(status) != 1 or len(head) != FRAME.size:
            raise EOFError
        body = proc.stdout.read(FRAME.unpack(head)[0])
        if status == FAILED:
            self._stop()
            raise ChildError(EXIT_MODEL, body.decode(errors="replace").strip())
        return np.load(io.BytesIO(body), allow_pickle=False)

    def _stop(self) -> str:
        """End the child; the last line it wrote to stderr if it failed ('' otherwise)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.join()
        lines = [x for x in proc.stderr.read().decode(errors="replace").splitlines() if x.strip()]
        proc.stdout.close()
        proc.stderr.close()
        return lines[-1].strip() if proc.returncode not in (0, None) and lines else ""

    def close(self) -> None:
        with self._lock:
            self._stop()
