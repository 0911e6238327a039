"""The web app's query text: the TensorFlow text model every search of the user shares
(runtimes/shared_text.py), `autotag search`'s too; the daemon's own prompts still use a child
per call."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from autotag.app import open_app
from autotag.config import default_cache_dir, load_config
from autotag.model import LazyEmbedder, ModelError
from autotag.runtimes import shared_text
from autotag.runtimes.shared_text import servers, socket_for
from autotag.web.library import _query_embedder, open_library
from autotag.web.routes import create_app
from tests.helpers import write_config

LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def runtime_dir(monkeypatch):
    """$XDG_RUNTIME_DIR, short (pytest's folders can be too long for a socket's path); the
    server started under it is ended afterwards."""
    runtime = Path(tempfile.mkdtemp(prefix="autotag-run-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime
    shared_text.stop(runtime)
    shutil.rmtree(runtime, ignore_errors=True)


def test_the_web_app_asks_the_text_model_the_search_command_shares(tmp_path, model_dir,
                                                                   embedder, runtime_dir):
    config = load_config(write_config(tmp_path, model_dir))
    queries = _query_embedder(LazyEmbedder(str(model_dir), runtime="openvino"), config)
    path = socket_for(default_cache_dir(), queries.fingerprint)
    assert queries.text_socket == path  # where `autotag search` asks
    assert queries.text_idle == config.model.idle_unload_seconds
    first = queries.embed_text(["red", "blue water"])
    np.testing.assert_allclose(first, embedder.embed_text(["red", "blue water"]), atol=1e-5)
    [pid] = servers(runtime_dir)
    # `autotag search` in a terminal meanwhile: the same server answers, TensorFlow started once
    search = LazyEmbedder(str(model_dir), runtime="openvino")
    search.text_socket = socket_for(default_cache_dir(), search.fingerprint)
    np.testing.assert_allclose(search.embed_text(["green"]), embedder.embed_text(["green"]),
                               atol=1e-5)
    assert servers(runtime_dir) == [pid]
    assert not queries.loaded and not search.loaded  # no video model compiled for text
    # the server is nobody's child, and the process that started it was waited for: nothing
    # of it is left for this process to reap (a zombie has no command line: any zombie counts)
    assert not [pid for pid, state in _children() if state == "Z" or "tfworker" in _cmdline(pid)]


def test_the_web_app_s_queries_with_a_model_that_cannot_load_say_why(tmp_path, runtime_dir):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    config = load_config(write_config(tmp_path, broken))
    queries = _query_embedder(LazyEmbedder(str(broken), runtime="openvino"), config)
    with pytest.raises(ModelError) as failed:
        queries.embed_text(["red"])
    assert str(failed.value) and "\n" not in str(failed.value)
    assert not servers(runtime_dir)


def test_the_search_box_s_first_keystroke_starts_the_text_model_ahead(tmp_path, model_dir,
                                                                       runtime_dir):
    """POST /api/search/warm (app.js sends it on the search box's first input): the shared text
    model starts in the background, once however often it is asked; only from our page."""
    app = open_app(load_config(write_config(tmp_path, model_dir)),
                   LazyEmbedder(str(model_dir), runtime="openvino"))
    library = open_library(app)
    client = TestClient(create_app(library), base_url=LOCAL)
    try:
        assert client.post("/api/search/warm").status_code == 403  # no Origin, no CSRF token
        assert client.get("/api/search/warm").status_code == 405
        assert not servers(runtime_dir)
        csrf = client.get("/api/session").json()["csrf"]
        ours = {"Origin": LOCAL, "X-CSRF-Token": csrf}
        started = client.post("/api/search/warm", headers=ours)
        assert started.status_code == 202 and started.json() == {"text_model": "starting"}
        assert client.post("/api/search/warm", headers=ours).status_code == 202  # a second key
        library._warming.join(120)
        assert len(servers(runtime_dir)) == 1  # started once
        assert client.post("/api/search/warm", headers=ours).status_code == 202  # it answers
        library._warming.join(120)
        assert len(servers(runtime_dir)) == 1
    finally:
        library.close()
        app.close()


def test_warming_is_not_needed_where_the_app_embeds_text_itself(tmp_path, model_dir, embedder):
    app = open_app(load_config(write_config(tmp_path, model_dir)), embedder)
    library = open_library(app)
    client = TestClient(create_app(library), base_url=LOCAL)
    try:
        csrf = client.get("/api/session").json()["csrf"]
        done = client.post("/api/search/warm", headers={"Origin": LOCAL, "X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json() == {"text_model": "not needed"}
        assert library._warming is None
    finally:
        library.close()
        app.close()


def _children() -> list[tuple[int, str]]:
    """This process's children: (pid, state letter)."""
    me = os.getpid()
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(parent) == me:
            out.append((int(stat.parent.name), state))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
