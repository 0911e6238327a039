"""TensorFlow's work in a child process → its result on disk or on stdout → the child exits.

    parent: convert(handle, batch, folder) ─► `python -m autotag.tfworker convert ...`
            ─► the child loads the SavedModel with TensorFlow, converts the video signature
               to OpenVINO IR in `folder` (atomically) ─► exit 0
    parent: ChildText.embed_text(texts) ─► `python -m autotag.tfworker text ...`
            ─► JSON list of texts on stdin ─► float32 [N, 512] as .npy on stdout ─► exit 0
    parent: shared_text.SharedText.embed_text(texts) ─► `... tfworker text-server HANDLE
            --socket S --idle I`, kept: one server every search of the user asks (the CLI's
            and the web app's), ending itself after I seconds without a call

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
import subprocess
import sys
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

