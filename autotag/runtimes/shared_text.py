"""The text signature in one TensorFlow process shared by every search of a user and model
(`autotag search`, the web app), reached over a Unix socket, so that a new query costs
milliseconds, not TensorFlow's start.

    SharedText.embed_text(texts) ─► connect to SOCKET ─► a framed JSON list in, a framed .npy
        (or the error's one line) out (reply)
      no server listening ─► under SOCKET.lock: run `python -m autotag.tfworker text-server
        HANDLE --socket SOCKET --idle S`, which forks the server off (detach) and exits once
        it listens (0) or with the line it failed with (2: the ChildError) ─► ask it

The server is nobody's child, in a session of its own; it outlives the command that started it
and ends itself after `idle` seconds without a call (TensorFlow's ~570 MB go with it), removing
its socket. Only this user can connect: the socket is 0600 in a 0700 folder. Where the socket's
path would be too long for AF_UNIX, or its folder cannot be written, a new query starts a child
of its own instead, and says so once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from autotag.runtimes.child import CHILD_TIMEOUT, EXIT_MODEL, ChildError, ChildText

log = logging.getLogger(__name__)

IDLE_SECONDS = 600.0  # a search session's pauses: the next query within 10 min is instant
MAX_REQUEST = 64 * 1024  # bytes of JSON per request: queries are a line of words
REQUEST_SECONDS = 2.0  # a client that connects and says nothing is dropped after this
ANSWER_SECONDS = 120.0  # a server that has a request this long without answering is stuck
SUN_PATH_MAX = 107  # AF_UNIX's sun_path on Linux (108 bytes with its NUL)
FRAME = struct.Struct(">I")  # a frame's length, before its bytes
OK, FAILED = b"0", b"1"  # a reply's first byte: .npy bytes follow, or the error's one line


def socket_for(cache_dir: Path, model: str) -> Path:
    """The socket of the shared text server of `model` (its fingerprint: the handle and, for a
    folder, its graph's hash, so a model replaced in place gets a new server, not the old one's
    answers): $XDG_RUNTIME_DIR (per user, 0700) if set, else the cache folder."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base) / "autotag" if base and Path(base).is_dir() else cache_dir / "text"
    return folder / (hashlib.sha256(model.encode()).hexdigest()[:16] + ".sock")


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
        self._said = False  # why the model cannot be shared, once

    def embed_text(self, texts: list[str]) -> np.ndarray:
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            return self._alone(texts, "its socket's path would be longer than a Unix socket's "
                                      "may be (set XDG_RUNTIME_DIR, or a shorter XDG_CACHE_HOME)")
        with contextlib.suppress(OSError, EOFError):
            return ask(self.path, texts)
        # none answers: one caller starts it, the others wait on the lock and then ask it
        with contextlib.ExitStack() as held:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                held.enter_context(_locked(self.path.with_name(self.path.name + ".lock")))
            except OSError as exc:  # a runtime or cache folder we cannot write: our own child
                return self._alone(texts, f"{self.path.parent}: {exc.strerror or exc}")
            with contextlib.suppress(OSError, EOFError):
                return ask(self.path, texts)  # started while we waited for the lock
            self._start()
        try:
            return ask(self.path, texts)
        except (OSError, EOFError) as exc:
            raise ChildError(EXIT_MODEL, f"the shared text model at {self.path} did not "
                             f"answer: {exc}") from None

    def _alone(self, texts: list[str], why: str) -> np.ndarray:
        """The texts embedded by a child of this call's own; why the model is not shared, said
        once (the CLI and the web app keep one SharedText)."""
        if not self._said:
            self._said = True
            log.warning("cannot share the text model (%s): each new query starts its own", why)
        return ChildText(self.handle, self.threads, self.env).embed_text(texts)

    def _start(self) -> None:
        """Start the server and return once it listens, or raise ChildError with the line it
        failed with. The process started here forks the server off (detach) and exits when
        the server is ready: the server is nobody's child to reap, in a session of its own (a
        Ctrl-C of the search does not reach it), its output in SOCKET.log."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a server's that ended without removing it (killed)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "autotag.tfworker", "text-server", self.handle,
                 "--socket", str(self.path), "--idle", str(self.idle),
                 "--threads", str(self.threads)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, **(self.env or {})}, timeout=CHILD_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ChildError(EXIT_MODEL, f"the TensorFlow text server did not start: {exc}")
        if done.returncode != 0:
            lines = [x for x in done.stderr.decode(errors="replace").splitlines() if x.strip()]
            raise ChildError(EXIT_MODEL, lines[-1].strip() if lines else
                             f"the TensorFlow text server exited with {done.returncode}")


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def detach(path: Path) -> int:
    """The server's first step, before TensorFlow (forking a process with its threads is
    unsafe): fork. The parent, the process SharedText started, waits for the server's word on a
    pipe and exits with it: 0 when it listens, 2 with its one line on stderr when it cannot.
    The child goes on as the server, in a session of its own, stdin from /dev/null and its
    output to SOCKET.log; it gets the pipe's end to write that word to (ready, failed)."""
    read, write = os.pipe()
    if os.fork():
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            word = pipe.read().decode(errors="replace").strip()
        if word == "ready":
            os._exit(0)
        sys.stderr.write(f"{word or 'the TensorFlow text server ended before it listened'}\n")
        sys.stderr.flush()
        os._exit(EXIT_MODEL)
    os.close(read)
    os.setsid()
    os.umask(0o077)
    log = os.open(path.with_name(path.name + ".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                  0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(fd, target)
    os.close(null)
    os.close(log)
    return write


def failed(ready: int, line: str) -> None:
    """The server could not start: its one line to the process waiting in detach."""
    with contextlib.suppress(OSError):
        os.write(ready, line.encode()[:500])
        os.close(ready)


def serve(model, path: Path, idle: float, ready: int) -> int:
    """The server's side (the TensorFlow child, tfworker): listen on `path`, answer one framed
    request per connection, end after `idle` seconds without one; exit 0. The socket is bound
    under a private name and renamed into place once listening, then `ready` is told."""
    private = path.with_name(f".{os.getpid()}")  # no longer than `path`: AF_UNIX's limit
    with contextlib.suppress(FileNotFoundError):
        private.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(private))
        sock.listen(16)
        os.replace(private, path)
        own = os.stat(path).st_ino
        os.write(ready, b"ready")
        os.close(ready)
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


def servers(under: Path) -> list[int]:
    """The pids of the shared text servers whose socket is `under` or lies below it (a folder),
    read from /proc: what a test or a benchmark ends when it is done with them (`stop`)."""
    found = []
    prefix = os.fsencode(under)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if (b"text-server" in argv and b"--socket" in argv[:-1]
                and argv[argv.index(b"--socket") + 1].startswith(prefix)):
            found.append(int(entry.name))
    return found


def stop(under: Path) -> None:
    """End the shared text servers whose socket is `under` or below it (SIGTERM)."""
    for pid in servers(under):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def reply(model, texts: list[str]) -> bytes:
    """The server's side of one request: the model's embeddings as a framed .npy, or its
    failure's line; the server goes on either way."""
    try:
        buffer = io.BytesIO()
        np.save(buffer, model.embed_text(texts), allow_pickle=False)
        status, body = OK, buffer.getvalue()
    except Exception as exc:  # noqa: BLE001 - the client gets the one line
        status, body = FAILED, str(exc).encode()
    return status + FRAME.pack(len(body)) + body
