"""Hub handles resolved by autotag itself (issue 29): the compressed tarball fetched from a hub
served on loopback, unpacked atomically into the per-user cache under tensorflow_hub's key,
loaded and embedded; no tensorflow_hub, and no pkg_resources anywhere on the way."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from autotag import hub
from autotag.model import ModelError, fetch_model, load_model
from tests.clips import RED, write_video
from tests.helpers import sidecar

REPO = Path(__file__).resolve().parents[1]
MODEL_PATH = "/deepmind/mil-nce/s3d/1"  # the real handle's path, on our own server
ARCHIVE_PATH = "/models/s3d-1.tar.gz"  # where the hub redirects the compressed format, as tfhub.dev


def tarball(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """folder as the hub serves it: a tar.gz whose members are `./saved_model.pb` and so on."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=".")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Hub:
    """A model hub on 127.0.0.1: MODEL_PATH?tf-hub-format=compressed redirects to the archive.
    Its thread is owned here and stopped by close()."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name for it
                outer.requests.append(self.path)
                if self.path == f"{MODEL_PATH}?tf-hub-format=compressed":
                    self.send_response(302)
                    self.send_header("Location", ARCHIVE_PATH)
                    self.end_headers()
                elif self.path == ARCHIVE_PATH:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-tar")
                    self.send_header("Content-Length", str(len(outer.archive)))
                    self.end_headers()
                    self.wfile.write(outer.archive)
                else:
                    self.send_error(404)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-hub")
        self.thread.start()

    @property
    def handle(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{MODEL_PATH}"

    @property
    def downloads(self) -> int:
        return self.requests.count(ARCHIVE_PATH)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def served(model_dir_tf1, tmp_path, monkeypatch):
    """(the hub serving the TF1 Hub-format test model, the cache folder it downloads into)."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    server = Hub(tarball(model_dir_tf1))
    yield server, cache
    server.close()


def test_a_hub_handle_is_downloaded_unpacked_loaded_and_embeds(served):
    server, cache = served
    model = load_model(server.handle)
    red = np.zeros((1, 32, 16, 16, 3), np.float32)
    red[..., 0] = 1.0
    scores = model.embed_video(red) @ model.embed_text(["red", "blue", "green"]).T
    assert scores.argmax() == 0 and scores[0, 0] > 4
    # tensorflow_hub's layout and key: a cache it filled is ours, and the reverse
    entry = cache / hashlib.sha1(server.handle.encode()).hexdigest()
    assert (entry / "saved_model.pb").is_file() and (entry / "tfhub_module.pb").is_file()
    assert server.requests == [f"{MODEL_PATH}?tf-hub-format=compressed", ARCHIVE_PATH]
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no temp folder left
    load_model(server.handle)
    assert server.downloads == 1  # the second load is the cache's


def test_fetch_model_downloads_without_importing_tensorflow(served):
    server, cache = served
    code = ("import sys; from autotag.model import fetch_model\n"
            f"print(fetch_model({server.handle!r}))\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == hub.cache_entry(server.handle, cache)
    assert fetch_model(server.handle) == hub.cache_entry(server.handle, cache)
    assert server.downloads == 1


def test_concurrent_loads_download_once(served):
    server, cache = served
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(hub.resolve(server.handle, cache)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 1 and len(paths) == 4
    assert server.downloads == 1


def test_a_download_cut_short_leaves_nothing_and_says_so_in_one_line(served):
    server, cache = served
    server.archive = server.archive[: len(server.archive) // 2]
    with pytest.raises(ModelError) as info:
        load_model(server.handle)
    message = str(info.value)
    assert "\n" not in message and "cannot download the model" in message
    assert "tar archive" in message and "model.handle" in message
    assert hub.cached(server.handle, cache) is None
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp" or p.is_dir()]


@pytest.mark.parametrize("name", ["../escaped.txt", "/../../escaped.txt"])
def test_an_archive_naming_files_outside_its_folder_is_refused(model_dir_tf1, served, name):
    server, cache = served
    server.archive = tarball(model_dir_tf1, {name: b"outside"})
    with pytest.raises(ModelError, match="outside its folder"):
        load_model(server.handle)
    assert not list(cache.parent.rglob("escaped.txt"))
    assert hub.cached(server.handle, cache) is None


def test_a_missing_model_on_the_hub_is_one_line(served):
    server, _ = served
    with pytest.raises(ModelError) as info:
        load_model(server.handle.replace("s3d", "nothing"))
    assert "\n" not in str(info.value) and "Not Found" in str(info.value)


# -- with current setuptools: no pkg_resources at all ---------------------------------------------

# A sitecustomize that makes pkg_resources unimportable in the process and in every child it
# starts (the OpenVINO converter, the text child): what a venv with setuptools >= 81 is.
NO_PKG_RESOURCES = """\
import importlib.abc, sys

class _Removed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pkg_resources" or name.startswith("pkg_resources."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Removed())
"""

CONFIG = """\
model:
  handle: '{handle}'
vocabulary: [red, green, blue]
state:
  path: '{state}'
outputs: {{log: null, previews: null}}
"""


def test_autotag_once_tags_a_clip_from_a_hub_handle_without_pkg_resources(served, tmp_path):
    """The issue's failure, end to end: `autotag --once` with the hub handle, in a Python
    where `import pkg_resources` fails, downloads the model, converts it for OpenVINO, embeds
    the vocabulary in the text child and tags the clip."""
    server, _ = served
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_PKG_RESOURCES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    probe = subprocess.run([sys.executable, "-c", "import pkg_resources"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 1 and "No module named 'pkg_resources'" in probe.stderr

    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 4.0)])
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(handle=server.handle, state=tmp_path / "state.sqlite3"))
    done = subprocess.run([sys.executable, "-m", "autotag", "--once", "--config", str(config),
                           str(clips)], env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert sidecar(clips / "red.mp4")["top"] == "red"
    assert "pkg_resources" not in done.stderr and "Traceback" not in done.stderr
    assert "OpenVINO cannot run" not in done.stderr  # converted in its child, as on any Python
    assert server.downloads == 1  # by the first child; the others found it cached
