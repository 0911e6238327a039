"""The text signature in one TensorFlow child shared by every `autotag search` of a user and
model, reached over a Unix socket, so that a new query costs milliseconds, not TensorFlow's start.

    SharedText.embed_text(texts) ─► connect to SOCKET ─► a framed JSON list in, a framed .npy
        (or the error's one line) out, as ResidentText's pipe protocol
      no server listening ─► under SOCKET.lock: start `python -m autotag.tfworker text-server
        HANDLE --socket SOCKET --idle S` in its own session; it binds SOCKET once the model
        has loaded, so the socket appearing means it is ready ─► ask it

The server outlives the command that started it and ends itself after `idle` seconds without a
call (TensorFlow's ~570 MB go with it), removing its socket. Only this user can connect: the
socket is 0600 in a 0700 folder. A server that cannot load the model exits 2; its stderr's last
line (SOCKET.log) is the ChildError. Where a socket path would be too long for AF_UNIX, the
caller uses a child per call instead (`socket_for` returns None).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from autotag.runtimes.child import CHILD_TIMEOUT, EXIT_MODEL, FAILED, FRAME, ChildError, reply

IDLE_SECONDS = 600.0  # a search session's pauses: the next query within 10 min is instant
MAX_REQUEST = 64 * 1024  # bytes of JSON per request: queries are a line of words
REQUEST_SECONDS = 2.0  # a client that connects and says nothing is dropped after this
ANSWER_SECONDS = 120.0  # a server that has a request this long without answering is stuck
SUN_PATH_MAX = 107  # AF_UNIX's sun_path on Linux (108 bytes with its NUL)

_servers: list[subprocess.Popen] = []  # started here: a thread reaps each when it ends


def socket_for(cache_dir: Path, handle: str) -> Path | None:
    """The socket of `handle`'s shared text server: $XDG_RUNTIME_DIR (per user, 0700) if set,
    else the cache folder; None when the path would not fit AF_UNIX's limit."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "autotag" if base and Path(base).is_dir() else cache_dir / "text"
    name = hashlib.sha256(handle.encode()).hexdigest()[:16] + ".sock"
    path = folder / name
    return path if len(os.fsencode(path)) <= SUN_PATH_MAX else None


def ask(path: Path, texts: list[str], timeout: float = ANSWER_SECONDS) -> np.ndarray:
    """One request to the server at `path`: float32 [N, 512]. OSError (FileNotFoundError,
    ConnectionRefusedError, ...) or EOFError when no server answers; ChildError with the
    server's one line when it answered with a failure."""
    request = json.dumps(list(texts)).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(FRAME.pack(len(request)) + request)
        status = _read(sock, 1)
        body = _read(sock, FRAME.unpack(_read(sock, FRAME.size))[0])
    if status == FAILED:
        raise ChildError(EXIT_MODEL, body.decode(errors="replace").strip())
    return np.load(io.BytesIO(body), allow_pickle=False)


def _read(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class SharedText:
    """embed_text through the shared server at `path`, starting it when none answers."""

    def __init__(self, handle: str, path: Path, threads: int = 0,
                 env: dict[str, str] | None = None, idle: float = IDLE_SECONDS) -> None:
        self.handle, self.path, self.threads, self.env, self.idle = (handle, path, threads,
                                                                     env, idle)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        with contextlib.suppress(OSError, EOFError):
            return ask(self.path, texts)
        # none answers: one caller starts it, the others wait on the lock and then ask it
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            with contextlib.suppress(OSError, EOFError):
                return ask(self.path, texts)  # started while we waited for the lock
            self._start()
        try:
            return ask(self.path, texts)
        except (OSError, EOFError) as exc:
            raise ChildError(EXIT_MODEL, f"the shared text model at {self.path} did not "
                             f"answer: {exc}") from None

    def _start(self) -> None:
        """Start the server and wait until its socket is there (it binds it once the model
        has loaded), or raise ChildError with the line it failed with."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a server's that ended without removing it (killed)
        log_path = self.path.with_name(self.path.name + ".log")
        env = {**os.environ, **(self.env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "autotag.tfworker", "text-server", self.handle,
                 "--socket", str(self.path), "--idle", str(self.idle),
                 "--threads", str(self.threads)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
                start_new_session=True)  # a Ctrl-C of the search does not end it
        _servers.append(proc)
        threading.Thread(target=proc.wait, name="autotag-text-reaper", daemon=True).start()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not self.path.exists():
            if proc.poll() is not None:
                lines = [x for x in log_path.read_text(errors="replace").splitlines()
                         if x.strip()]
                raise ChildError(EXIT_MODEL, lines[-1].strip() if lines else
                                 f"the TensorFlow text server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                proc.kill()
                raise ChildError(EXIT_MODEL, "the TensorFlow text server did not start in "
                                 f"{CHILD_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Nothing to end: the server serves the next search and ends itself when idle."""


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def serve(model, path: Path, idle: float) -> int:
    """The server's side (the TensorFlow child, tfworker): listen on `path`, answer one framed
    request per connection, end after `idle` seconds without one; exit 0. The socket is bound
    under a private name and renamed into place once listening: it appears ready."""
    os.umask(0o077)
    private = path.with_name(f".{os.getpid()}")  # no longer than `path`: AF_UNIX's limit
    with contextlib.suppress(FileNotFoundError):
        private.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(private))
        sock.listen(16)
        os.replace(private, path)
        own = os.stat(path).st_ino
        sock.settimeout(idle)
        try:
            while True:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    return 0
                with conn:
                    _answer(model, conn)
        finally:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == own:  # not a newer server's socket
                    path.unlink()


def _answer(model, conn: socket.socket) -> None:
    """One request: bounded in size and time; a bad one drops its connection, nothing else."""
    conn.settimeout(REQUEST_SECONDS)
    try:
        size = FRAME.unpack(_read(conn, FRAME.size))[0]
        if size > MAX_REQUEST:
            raise ValueError(f"a request of {size} bytes (at most {MAX_REQUEST})")
        texts = json.loads(_read(conn, size))
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError("a request is a JSON list of strings")
    except (OSError, EOFError, ValueError) as exc:
        with contextlib.suppress(OSError):
            body = f"bad request: {exc}".encode()[:500]
            conn.sendall(FAILED + FRAME.pack(len(body)) + body)
        return
    with contextlib.suppress(OSError):
        conn.sendall(reply(model, texts))
