"""`autotag search`'s text model: one TensorFlow child shared by every search of a user and
model over a Unix socket (runtimes/shared_text.py), started by the first new query and ending
itself when idle, so the next new query does not wait for TensorFlow to start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autotag.model import fingerprint
from autotag.runtimes import shared_text
from autotag.runtimes.child import ChildError
from autotag.runtimes.shared_text import FRAME, SharedText, servers, socket_for
from tests.clips import BLUE, RED, write_video
from tests.helpers import write_config


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def sock(tmp_path):
    return tmp_path / "run" / "text.sock"  # its server is ended by conftest's _isolated_home


def test_two_searches_with_new_queries_share_one_text_model(tmp_path, model_dir, embedder,
                                                            monkeypatch):
    """Two `autotag search` commands, each with a query no cache holds: the first starts the
    shared text model, the second asks the same one (no second TensorFlow start), and both
    rank by what the model says."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 4.0)])
    write_video(clips / "blue.mp4", [(BLUE, 4.0)])
    config = write_config(tmp_path, model_dir)
    # $XDG_RUNTIME_DIR (systemd's per-user /run/user/UID), short: pytest's folders can be too
    # long for a socket's path
    runtime = Path(tempfile.mkdtemp(prefix="autotag-run-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_RUNTIME_DIR": str(runtime)}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    path = socket_for(tmp_path / "cache" / "autotag", fingerprint(str(model_dir)))
    assert path is not None and path.parent == runtime / "autotag"
    try:
        _two_searches(clips, config, env, path)
    finally:
        shared_text.stop(runtime)
        shutil.rmtree(runtime, ignore_errors=True)


def _two_searches(clips: Path, config: Path, env: dict, path: Path) -> None:
    def autotag(command: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autotag", command, "--config",
                               str(config), *argv],
                              capture_output=True, text=True, env=env, timeout=300,
                              check=False)

    assert autotag("--once", str(clips)).returncode == 0
    first = autotag("search", "--json", "a", "red", "thing")
    assert first.returncode == 0, first.stderr
    started = servers(path)
    assert len(started) == 1
    second = autotag("search", "--json", "something", "blue")
    assert second.returncode == 0, second.stderr
    assert servers(path) == started  # the same child answered: TensorFlow started once
    assert json.loads(first.stdout)[0]["path"].endswith("red.mp4")
    assert json.loads(second.stdout)[0]["path"].endswith("blue.mp4")
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # only its user may connect
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_shared_text_model_answers_as_the_model_and_ends_itself_when_idle(sock, model_dir,
                                                                           embedder):
    texts = ["red", "blue water"]
    first = SharedText(str(model_dir), sock, idle=2.0).embed_text(texts)
    np.testing.assert_allclose(first, embedder.embed_text(texts), atol=1e-5)
    [pid] = servers(sock)
    again = SharedText(str(model_dir), sock, idle=2.0).embed_text(["green"])  # another search
    np.testing.assert_allclose(again, embedder.embed_text(["green"]), atol=1e-5)
    assert servers(sock) == [pid]
    assert wait_until(lambda: not servers(sock))  # idle: it ended by itself
    assert not sock.exists()  # and took its socket with it
    later = SharedText(str(model_dir), sock, idle=2.0).embed_text(texts)  # a new one starts
    np.testing.assert_allclose(later, first, atol=1e-5)
    assert servers(sock) not in ([], [pid])


def test_first_queries_at_the_same_moment_start_one_shared_text_model(sock, model_dir,
                                                                      embedder):
    results: dict[int, np.ndarray] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(3)

    def search(i: int) -> None:
        start.wait()
        try:
            results[i] = SharedText(str(model_dir), sock, idle=30.0).embed_text(["red"])
        except BaseException as exc:  # noqa: BLE001 - every failure is reported
            failures.append(exc)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(servers(sock)) == 1
    for vector in results.values():
        np.testing.assert_allclose(vector, embedder.embed_text(["red"]), atol=1e-5)


def test_the_shared_text_model_bounds_what_a_client_sends(sock, model_dir, embedder):
    """An oversized request is refused with one line, a client that connects and says nothing
    is dropped, and the server goes on answering the others."""
    text = SharedText(str(model_dir), sock, idle=30.0)
    text.embed_text(["red"])
    with socket.socket(socket.AF_UNIX) as big:
        big.connect(str(sock))
        big.sendall(FRAME.pack(shared_text.MAX_REQUEST + 1))
        reply = big.recv(4096)
    assert reply[:1] == b"1" and b"bad request" in reply
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(str(sock))  # holds the server until REQUEST_SECONDS pass
        np.testing.assert_allclose(text.embed_text(["blue"]), embedder.embed_text(["blue"]),
                                   atol=1e-5)
    with pytest.raises(ChildError, match="bad request"):
        shared_text.ask(sock, [1, 2])  # not strings


def test_a_killed_shared_text_model_is_started_again(sock, model_dir, embedder):
    text = SharedText(str(model_dir), sock, idle=30.0)
    text.embed_text(["red"])
    [pid] = servers(sock)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not servers(sock))
    assert sock.exists()  # killed: its socket stays behind, refusing connections
    np.testing.assert_allclose(text.embed_text(["green"]), embedder.embed_text(["green"]),
                               atol=1e-5)
    assert len(servers(sock)) == 1 and servers(sock) != [pid]


def test_a_shared_text_model_that_cannot_load_the_model_says_why(sock, tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ChildError) as failed:
        SharedText(str(broken), sock, idle=30.0).embed_text(["red"])
    assert str(broken) in str(failed.value) and "\n" not in str(failed.value), failed.value
    assert not sock.exists() and wait_until(lambda: not servers(sock), 10)


def test_a_socket_path_too_long_for_af_unix_gives_a_query_its_own_child_and_says_so_once(
        tmp_path, model_dir, embedder, caplog):
    long = tmp_path / ("x" * 120) / "text.sock"
    text = SharedText(str(model_dir), long, idle=30.0)
    np.testing.assert_allclose(text.embed_text(["red"]), embedder.embed_text(["red"]),
                               atol=1e-5)
    assert "set XDG_RUNTIME_DIR" in caplog.text and not servers(tmp_path)
    caplog.clear()
    text.embed_text(["blue water"])
    assert "cannot share" not in caplog.text  # said once, not at every query


def test_the_socket_is_in_the_runtime_folder_when_there_is_one(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert socket_for(tmp_path, "handle").parent == tmp_path / "text"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    assert socket_for(tmp_path, "handle").parent == tmp_path / "run" / "autotag"


def test_a_folder_that_cannot_hold_the_socket_gives_a_query_its_own_child(tmp_path, model_dir,
                                                                          embedder, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the socket's folder would be")
    text = SharedText(str(model_dir), blocked / "text.sock", idle=30.0)
    np.testing.assert_allclose(text.embed_text(["red"]), embedder.embed_text(["red"]),
                               atol=1e-5)
    assert "cannot share the text model" in caplog.text and not servers(blocked / "text.sock")
