"""Issue 30, each finding a test: the symlink race on media and previews, clips outside the library,
bodies, slow clients, forwarded headers, the login limit, parameters out of range, pixel caps,
preview encodes, the query cache, the reload signal and the text child's zombie."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Self

import pytest
from starlette.testclient import TestClient

from autotag import cli, opener
from autotag.app import open_app
from autotag.config import load_config
from autotag.opener import Expected, NotServable, open_beneath, open_checked
from autotag.web.library import open_library
from autotag.web.routes import create_app
from tests.clips import RED, write_video
from tests.helpers import write_config

LOCAL = "http://127.0.0.1:8765"
TOKEN = "t0ken-" + "x" * 26
AT_FDCWD = -100
RENAME_EXCHANGE = 2
RACE_REQUESTS = 2000  # at most, each way of opening
RACE_SECONDS = 60.0  # and at most this long

_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): a and b trade places in one step (what an attacker runs)."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def library(tmp_path, model_dir, embedder):
    """lib/dir/clip.mp4 tagged; outside/dir/clip.mp4 the same size and mtime, other bytes."""
    lib = tmp_path / "lib"
    (lib / "dir").mkdir(parents=True)
    clip = write_video(lib / "dir" / "clip.mp4", [(RED, 3)])
    outside = tmp_path / "outside" / "dir" / "clip.mp4"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"OUTSIDE!" * (clip.stat().st_size // 8 + 1))
    os.truncate(outside, clip.stat().st_size)
    st = clip.stat()
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    config = write_config(tmp_path, model_dir)
    assert cli.main(["--once", "--config", str(config), str(lib)], embedder=embedder) == 0
    return {"lib": lib, "clip": clip, "outside": outside, "config": config}


def client_for(config: Path, embedder, token=None):
    """(app, TestClient) over the config's store; ask for only_id(client) before the test
    changes the library."""
    app = open_app(load_config(config), embedder)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app, TestClient(create_app(open_library(app), token), base_url=LOCAL, headers=headers)


def only_id(client) -> int:
    (hit,) = client.get("/api/search", params={"q": "red"}).json()
    return hit["id"]


# -- 1. open once, serve what was checked ---------------------------------------------------------

class Swapper:
    """A thread swapping the clip's folder with a symlink to the outside folder, and the clip
    file with a symlink to the outside file, back and forth, until stopped."""

    def __init__(self, lib: Path, outside: Path) -> None:
        self.folder, self.folder_link = lib / "dir", lib / ".alias"
        self.folder_link.symlink_to(outside.parent, target_is_directory=True)
        self.file, self.file_link = lib / "dir" / "clip.mp4", lib / "dir" / ".clip"
        self.file_link.symlink_to(outside)
        self.swaps = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="swapper")

    def _run(self) -> None:
        while not self.stop.is_set():
            for a, b in ((self.folder, self.folder_link), (self.file, self.file_link)):
                exchange(a, b)
                time.sleep(0)  # let a request see it swapped
                exchange(a, b)
                self.swaps += 2

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("way", ["openat2", "per-component walk"])
def test_no_byte_from_outside_is_ever_served_while_folders_and_files_are_swapped(
        library, embedder, monkeypatch, way):
    if way != "openat2":
        monkeypatch.setattr(opener, "_openat2_works", False)
    app, client = client_for(library["config"], embedder)
    data = library["clip"].read_bytes()
    outside = library["outside"].read_bytes()
    rng = random.Random(30)
    statuses: dict[int, int] = {}
    try:
        clip_id = only_id(client)
        assert client.get(f"/api/clips/{clip_id}/media").content == data
        deadline = time.monotonic() + RACE_SECONDS
        with Swapper(library["lib"], library["outside"]) as swapper:
            for n in range(RACE_REQUESTS):
                if time.monotonic() > deadline:
                    break
                start = rng.randrange(len(data))
                headers = {"Range": f"bytes={start}-"} if n % 2 else {}
                response = client.get(f"/api/clips/{clip_id}/media", headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                body = response.content
                assert b"OUTSIDE!" not in body and outside[:64] not in body, (n, statuses)
                if response.status_code == 200:
                    assert body == data
                elif response.status_code == 206:
                    assert body == data[start:]
                else:
                    assert response.status_code == 404, response.text
        assert n + 1 >= 200, "too few requests to race"
        assert swapper.swaps >= 100, swapper.swaps
        assert statuses.get(404, 0) > 0, statuses  # the requests did meet the swapped state
        assert statuses.get(200, 0) + statuses.get(206, 0) > 0, statuses
    finally:
        app.close()


def test_the_preview_transcoder_reads_only_the_checked_file(library, embedder, tmp_path):
    """The web preview opens the clip through the same opener: a symlink swapped in for the
    clip (or its folder) gets 404, never a preview of the outside file."""
    real_outside = library["outside"]
    write_video(real_outside, [(RED, 3)], size=(96, 64))  # a real video outside this time
    app, client = client_for(library["config"], embedder)
    try:
        clip_id = only_id(client)
        moved = tmp_path / "kept.mp4"
        shutil.move(library["clip"], moved)
        library["clip"].symlink_to(real_outside)
        st = moved.stat()
        os.utime(real_outside, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.truncate(real_outside, st.st_size) if real_outside.stat().st_size > st.st_size \
            else None
        response = client.get(f"/api/clips/{clip_id}/preview", params={"start": 0, "end": 2})
        assert response.status_code == 404, response.text
        assert client.get(f"/api/clips/{clip_id}/media").status_code == 404
    finally:
        app.close()


def test_the_opener_refuses_symlinks_dot_dot_and_fifos_without_blocking(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"inside")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "link.mp4").symlink_to(tmp_path / "secret")
    (root / "inner.mp4").symlink_to(root / "sub" / "a.mp4")  # even one that stays inside
    (root / "dirlink").symlink_to(root / "sub")
    os.mkfifo(root / "fifo.mp4")
    for use in (None, False):
        fd = open_beneath(root, "sub/a.mp4", use_openat2=use)
        assert os.read(fd, 10) == b"inside"
        os.close(fd)
        for bad in ("link.mp4", "inner.mp4", "dirlink/a.mp4", "../secret", "sub/../../secret",
                    "/etc/passwd"):
            with pytest.raises(OSError):
                os.close(open_beneath(root, bad, use_openat2=use))
    began = time.monotonic()
    with pytest.raises(NotServable, match="regular file"):
        open_checked(str(root), str(root / "fifo.mp4"), Expected(0, 0.0))
    assert time.monotonic() - began < 5  # a FIFO never blocks the server's thread
    st = (root / "sub" / "a.mp4").stat()
    with pytest.raises(NotServable, match="changed"):
        open_checked(str(root), str(root / "sub" / "a.mp4"), Expected(st.st_size + 1,
                                                                     st.st_mtime))
    with pytest.raises(NotServable, match="outside"):
        open_checked(None, str(tmp_path / "secret"), Expected(6, 0.0))


# -- 2. the library's edge: one rule ---------------------------------------------------------------

def test_a_symlink_out_of_the_library_is_neither_tagged_nor_shown_unless_opted_in(
        tmp_path, model_dir, embedder):
    lib = tmp_path / "lib"
    lib.mkdir()
    write_video(lib / "inside.mp4", [(RED, 3)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = write_video(elsewhere / "outside.mp4", [(RED, 4)])
    (lib / "out.mp4").symlink_to(outside)
    (lib / "outdir").symlink_to(elsewhere, target_is_directory=True)
    config = write_config(tmp_path, model_dir)
    assert cli.main(["--once", "--config", str(config), str(lib)], embedder=embedder) == 0
    app, client = client_for(config, embedder)
    try:
        names = {h["name"] for h in client.get("/api/search", params={"q": "red"}).json()}
        assert names == {"inside.mp4"}  # the scan did not follow either link out
    finally:
        app.close()
    opted = tmp_path / "opted.yaml"
    opted.write_text(config.read_text() + "watch: {follow_symlinks_out: true}\n")
    assert cli.main(["--once", "--config", str(opted), str(lib)], embedder=embedder) == 0
    app, client = client_for(opted, embedder)
    try:
        hits = {h["name"]: h["id"] for h in client.get("/api/search",
                                                       params={"q": "red"}).json()}
        assert "out.mp4" in hits  # opted in: tagged ...
        served = client.get(f"/api/clips/{hits['out.mp4']}/media")
        assert served.status_code == 200 and served.content == outside.read_bytes()  # ... served
        out_id = hits["out.mp4"]
    finally:
        app.close()
    app, client = client_for(config, embedder)  # the default again, over the same store
    try:
        for url in (f"/api/clips/{out_id}", f"/api/clips/{out_id}/thumbnail",
                    f"/api/clips/{out_id}/media", f"/clips/{out_id}",
                    f"/api/clips/{out_id}/preview"):
            response = client.get(url)
            assert response.status_code == 404, (url, response.status_code)
        assert client.get("/api/search", params={"like": out_id}).status_code == 404
    finally:
        app.close()


def test_the_watcher_asks_the_same_edge(tmp_path):
    from autotag.config import WatchConfig
    from autotag.daemon.watcher import Watcher

    lib = tmp_path / "lib"
    lib.mkdir()
    (tmp_path / "outside.mp4").write_bytes(b"x")
    (lib / "in.mp4").write_bytes(b"x")
    (lib / "out.mp4").symlink_to(tmp_path / "outside.mp4")
    for follow, expected in ((False, {"in.mp4"}), (True, {"in.mp4", "out.mp4"})):
        watcher = Watcher([lib], WatchConfig(follow_symlinks_out=follow), out=None)
        assert {p.name for p in (lib / "in.mp4", lib / "out.mp4") if watcher._wanted(p)} \
            == expected


# -- 3. limits -------------------------------------------------------------------------------------

def test_a_body_past_the_cap_is_refused_while_it_streams_in(library, embedder):
    """413 for a Content-Length past the cap before a byte is read, and for a chunked body at
    the chunk that crosses it: the app asks for no chunk past the cap."""
    import asyncio

    from autotag.web.security import MAX_BODY_BYTES

    app, client = client_for(library["config"], embedder, token=TOKEN)
    try:
        clip_id = only_id(client)
        big = client.post(f"/api/clips/{clip_id}/reviews", content=b"{" * (MAX_BODY_BYTES + 1),
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        fine = client.post(f"/api/clips/{clip_id}/reviews", json={"confirm": ["red"]})
        assert fine.status_code == 200, fine.text
        chunks, sent = 0, []

        async def receive() -> dict:  # a chunked body that would never end
            nonlocal chunks
            chunks += 1
            return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": f"/api/clips/{clip_id}/reviews",
                 "raw_path": f"/api/clips/{clip_id}/reviews".encode(), "query_string": b"",
                 "root_path": "", "scheme": "http", "http_version": "1.1",
                 "asgi": {"version": "3.0"}, "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 8765),
                 "headers": [(b"host", b"127.0.0.1:8765"), (b"transfer-encoding", b"chunked"),
                             (b"authorization", f"Bearer {TOKEN}".encode()),
                             (b"content-type", b"application/json")]}
        asyncio.run(asyncio.wait_for(client.app(scope, receive, send), 30))
        assert sent[0]["status"] == 413
        assert chunks == MAX_BODY_BYTES // 4096 + 1  # not one chunk past the one that crossed
    finally:
        app.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, model_dir, embedder):
    """tests/library.py's five clips, for the tests that change nothing in the library."""
    from tests.library import module_library

    yield from module_library(tmp_path_factory, "security", model_dir, embedder)


@contextlib.contextmanager
def live(made, embedder, token=None, extra: str = ""):
    """The app on a real uvicorn (WebServer, port 0), as autotag serve runs it."""
    from autotag.web.server import WebServer

    config_path = made["config"]
    if extra:
        config_path = made["config"].with_name("config-live.yaml")
        config_path.write_text(made["config"].read_text() + extra)
    config = load_config(config_path)
    app = open_app(config, embedder)
    web_app = create_app(open_library(app), token)
    server = WebServer(web_app, "127.0.0.1", 0, config.serve)
    server.start()
    try:
        yield server.port_bound, web_app
    finally:
        server.stop()
        app.close()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes the connection within `seconds` (whatever it sends first)."""
    sock.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_slow_clients_are_closed_within_the_request_deadline(shared, embedder, monkeypatch):
    """Nothing at all, half a head, a body that never comes: each connection is closed by the
    server within the deadline (it held them past 90 s)."""
    from autotag.web import server as web_server

    monkeypatch.setattr(web_server, "REQUEST_TIMEOUT", 2.0)
    with live(shared, embedder) as (port, _):
        origin = f"http://127.0.0.1:{port}"
        silent = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 100\r\n\r\ntoken=abc".encode())
        kept = socket.create_connection(("127.0.0.1", port))  # a keep-alive after a request
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.5)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # and half of the next one
        try:
            for name, sock in (("silent", silent), ("half a head", half),
                               ("a body that never comes", body), ("half after one", kept)):
                assert closed_within(sock, 2.0 + 15.0), name
        finally:
            for sock in (silent, half, body, kept):
                sock.close()
        ok = socket.create_connection(("127.0.0.1", port))  # and it still answers
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        ok.settimeout(15)
        assert ok.recv(100).startswith(b"HTTP/1.1 200")
        ok.close()


def _bearer(port: int, token: str, forwarded: str | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    connection.request("GET", "/api/tags", headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_addresses_count_only_from_trusted_proxies_and_the_token_always_works(
        shared, embedder, trusted):
    """Seven wrong tokens, each claiming another X-Forwarded-For: without trusted proxies all
    count against the real peer (the back-off holds the last answers), with 127.0.0.1 trusted
    each against its forwarded address; the right token gets in at once either way."""
    extra = "serve: {trusted_proxies: [127.0.0.1]}\n" if trusted else ""
    with live(shared, embedder, TOKEN, extra) as (port, web_app):
        failures = web_app.security.failures
        for n in range(7):
            began = time.monotonic()
            assert _bearer(port, f"wrong-{n}", f"10.9.8.{n}") == 401
        held = time.monotonic() - began
        if trusted:
            assert failures.count("127.0.0.1") == 0
            assert [failures.count(f"10.9.8.{n}") for n in range(7)] == [1] * 7
        else:
            assert failures.count("127.0.0.1") == 7
            assert all(failures.count(f"10.9.8.{n}") == 0 for n in range(7))
            assert held >= 2.0  # the seventh wrong answer waited (1 s, then 2 s)
        assert _bearer(port, TOKEN, "10.9.8.0") == 200


# -- the reload signal, the text child, the query cache --------------------------------------------

def test_the_reload_signal_goes_only_to_the_process_holding_the_stores_lock(tmp_path):
    import signal
    import subprocess
    import sys

    from autotag.status import signal_daemon

    store = tmp_path / "state.sqlite3"
    sleeper = subprocess.Popen(["sleep", "60"])  # a stale status file's PID, reused
    try:
        assert not signal_daemon(sleeper.pid, store, signal.SIGHUP)
        time.sleep(0.3)
        assert sleeper.poll() is None  # alive: it was not sent SIGHUP
    finally:
        sleeper.kill()
        sleeper.wait()
    got = tmp_path / "got-sighup"
    daemon = subprocess.Popen([sys.executable, "-c", f"""
import signal, sys, time
from pathlib import Path
from autotag.daemon.service import acquire_lock
lock = acquire_lock(Path({str(store)!r}))
signal.signal(signal.SIGHUP, lambda *a: Path({str(got)!r}).write_text("yes"))
print("locked", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE)
    try:
        assert daemon.stdout.readline().strip() == b"locked"
        assert signal_daemon(daemon.pid, store, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not got.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got.read_text() == "yes"
        assert not signal_daemon(daemon.pid, tmp_path / "other.sqlite3", signal.SIGHUP)
        assert not signal_daemon(True, store, signal.SIGHUP)
    finally:
        daemon.kill()
        daemon.wait()
        daemon.stdout.close()


def test_the_query_cache_on_disk_is_bounded_in_count_and_age(tmp_path):
    import numpy as np

    from autotag.vocabulary import QueryCache

    cache = QueryCache(tmp_path / "q", max_files=50, max_age=3600)
    vector = np.ones(512, np.float32)
    for n in range(300):
        cache.put(f"query {n}", vector)
    assert len(list((tmp_path / "q").iterdir())) <= 50 + 64  # swept every 64 new entries
    cache.sweep()
    assert len(list((tmp_path / "q").iterdir())) == 50
    assert cache.get("query 299") is not None and cache.get("query 0") is None
    old = cache._path("query 299")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert cache.get("query 299") is None and not old.exists()  # too old: asked again


# -- pixels, previews, parameters, sidecars --------------------------------------------------------

def _mixed_sizes(folder: Path) -> Path:
    """An MPEG-TS whose header says 320×240 and whose second second is 1000×1000 (concatenated
    streams: the decoder meets the new size mid-file, as with 16000×16000 in the issue)."""
    from tests.clips import ffmpeg

    parts = []
    for name, size, colour in (("a", "320x240", "red"), ("b", "1000x1000", "blue")):
        part = folder / f"{name}.ts"
        ffmpeg("-f", "lavfi", "-i", f"color={colour}:s={size}:d=2:r=10", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(part))
        parts.append(part.read_bytes())
        part.unlink()
    mixed = folder / "mixed.ts"
    mixed.write_bytes(b"".join(parts))
    return mixed


def test_max_pixels_is_checked_on_every_decoded_frame_when_tagging(tmp_path):
    from autotag.media import DecodeError, sample_clip

    clip = _mixed_sizes(tmp_path)
    sampled = sample_clip(clip, 8, 2_000_000)  # under the cap: both parts decode
    assert sampled.windows and not sampled.damage
    with pytest.raises(DecodeError) as refused:
        sample_clip(clip, 8, 100_000)  # 320×240 = 76,800 passes the header; 1000×1000 not
    message = str(refused.value)
    assert "1000×1000" in message and "sampling.max_pixels" in message and "\n" not in message


def test_max_pixels_is_checked_on_every_decoded_frame_of_a_preview(tmp_path):
    from autotag.media.webm import PreviewError
    from autotag.web.preview_cache import PreviewCache

    clip = _mixed_sizes(tmp_path)
    cache = PreviewCache(tmp_path / "previews", max_pixels=100_000)
    with pytest.raises(PreviewError, match="1000×1000.*sampling.max_pixels"):
        cache.get("a" * 64, clip, 0.0, 4.0)
    assert PreviewCache(tmp_path / "p2", max_pixels=2_000_000).get("b" * 64, clip, 0.0, 4.0)


def test_at_most_max_previews_are_encoded_at_once(tmp_path):
    """A third preview while two are being encoded is told Busy (the web app's 429)."""
    from autotag.web import preview_cache as preview
    from autotag.web.preview_cache import Busy, PreviewCache

    clip = write_video(tmp_path / "clip.mp4", [(RED, 6)])
    cache = PreviewCache(tmp_path / "previews", encodes=2)
    entered, release = threading.Semaphore(0), threading.Event()
    real_encode = preview.encode

    def slow_encode(*args, **kwargs):
        entered.release()
        release.wait(30)
        return real_encode(*args, **kwargs)

    results: list = []
    threads = [threading.Thread(target=lambda s=s: results.append(cache.get("c" * 64, clip, s,
                                                                             s + 1)))
               for s in (0.0, 2.0)]
    original, preview.encode = preview.encode, slow_encode
    try:
        for t in threads:
            t.start()
        assert entered.acquire(timeout=30) and entered.acquire(timeout=30)
        with pytest.raises(Busy):
            cache.get("c" * 64, clip, 4.0, 5.0)
    finally:
        release.set()
        for t in threads:
            t.join()
        preview.encode = original
    assert len(results) == 2
    assert cache.get("c" * 64, clip, 4.0, 5.0)  # and once they are done, it is made


@pytest.mark.parametrize("url", [
    "/api/clips/9223372036854775808", "/api/clips/99999999999999999999999/media",
    "/api/clips/9223372036854775808/thumbnail", "/clips/18446744073709551616",
    "/api/search?like=9223372036854775808", "/api/search?like=1&at=nan",
    "/api/search?like=1&at=inf", "/api/search?like=1&at=-1", "/api/search?like=%C2%B2",
    "/api/clips/1/preview?end=1e308", "/api/clips/1/preview?start=nan",
    "/api/clips/1/preview?start=5&end=1", "/api/clips/1/thumbnail?window=99999999999999999999",
    "/api/search?q=red&top=99999999999999999999999", "/api/search?tag=red%E2%80%A9",
    "/?like=%C2%B2", "/clips/1?t=1e308", "/clips/1?t=nan", "/api/search?like=-5",
])
def test_parameters_out_of_range_are_400_or_404_never_500(shared, embedder, url):
    app, client = client_for(shared["config"], embedder)
    try:
        response = client.get(url)
        assert response.status_code in (200, 400, 404), (url, response.status_code,
                                                          response.text[:200])
    finally:
        app.close()


def test_a_label_with_a_paragraph_separator_is_refused_not_a_500(shared, embedder):
    app, client = client_for(shared["config"], embedder, token=TOKEN)
    try:
        for label in ("new\u2029tag", "new\u2028tag", "tab\there", "a" * 61):
            response = client.post("/tags", data={"label": label, "clip": "1"})
            assert response.status_code == 400, (label, response.status_code)
        response = client.post("/tags", data={"label": "x", "clip": "99999999999999999999"})
        assert response.status_code == 404
    finally:
        app.close()


@pytest.mark.parametrize("kind", ["xmp", "nfo"])
def test_a_deeply_nested_sidecar_is_a_clear_error_not_a_recursion_error(tmp_path, kind):
    from autotag.outputs import OutputError
    from autotag.outputs.nfo import Nfo, nfo_path
    from autotag.outputs.xmp import Xmp, xmp_path
    from tests.helpers import tagged

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    deep = "<a>" * 50_000 + "</a>" * 50_000
    if kind == "xmp":
        path, output = xmp_path(clip), Xmp("Activity")
        path.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/">' + deep + "</x:xmpmeta>")
    else:
        path, output = nfo_path(clip), Nfo()
        path.write_text("<movie>" + deep + "</movie>")
    before = path.read_bytes()
    with pytest.raises(OutputError) as refused:
        output.write(tagged(clip, "red"))
    assert "nests elements more than" in str(refused.value)
    assert path.read_bytes() == before


def test_the_new_keys_are_validated(tmp_path, model_dir):
    from autotag.config import ConfigError

    base = write_config(tmp_path, model_dir).read_text()
    for bad, words in (("serve: {trusted_proxies: [nginx.lan]}", "trusted_proxies"),
                       ("serve: {max_connections: 0}", "max_connections"),
                       ("serve: {max_previews: -1}", "max_previews"),
                       ("watch: {follow_symlinks_out: yes please}", "follow_symlinks_out")):
        path = tmp_path / "bad.yaml"
        path.write_text(base + bad + "\n")
        with pytest.raises(ConfigError, match=words):
            load_config(path)
    path.write_text(base + "serve: {trusted_proxies: [127.0.0.1, 10.0.0.0/8, '::1']}\n")
    assert load_config(path).serve.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "::1")


def test_a_clip_tagged_by_naming_the_file_is_served(tmp_path, model_dir, embedder):
    """A root may be a file (autotag --once clip.mp4): it is opened from its own folder."""
    lib = tmp_path / "lib"
    lib.mkdir()
    clip = write_video(lib / "named.mp4", [(RED, 3)])
    config = write_config(tmp_path, model_dir)
    assert cli.main(["--once", "--config", str(config), str(clip)], embedder=embedder) == 0
    app, client = client_for(config, embedder)
    try:
        response = client.get(f"/api/clips/{only_id(client)}/media")
        assert response.status_code == 200 and response.content == clip.read_bytes()
    finally:
        app.close()


def test_tagging_decodes_the_checked_file_not_a_symlink_swapped_in(tmp_path):
    """The engine's decode, given the library's edge, reads the file it checked: a clip swapped
    for a symlink to an outside video of the same size and mtime after it was planned is
    refused; by path (no edge) the outside video would be decoded and its frames stored."""
    from autotag.clip import SourceInfo
    from autotag.config import SamplingConfig
    from autotag.engine import decode
    from autotag.files import Edge
    from autotag.media import DecodeError
    from tests.clips import BLUE

    lib = tmp_path / "lib"
    lib.mkdir()
    clip = write_video(lib / "clip.mp4", [(RED, 3)])
    edge = Edge.of([lib])
    st = clip.stat()
    planned = SourceInfo(clip, st.st_size, st.st_mtime, None)
    inside = decode(planned, SamplingConfig(), edge)
    assert inside.frames[0, 0, 0, 0, 0] > 200  # red
    outside = write_video(tmp_path / "outside.mp4", [(BLUE, 3)])
    data = outside.read_bytes()[:st.st_size].ljust(st.st_size, b"\0")
    outside.write_bytes(data)
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    clip.unlink()
    clip.symlink_to(outside)
    with pytest.raises(DecodeError, match="watched folders"):
        decode(planned, SamplingConfig(), edge)
