"""autotag serve through Starlette's test client: the JSON API, media by id with HTTP Range, and the
security rules (Host, token, CSRF, traversal, symlinks out of the library, stale clips)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import autotag.web
from autotag import cli
from autotag.app import open_app
from autotag.config import load_config
from autotag.store import Store
from autotag.web.library import open_library
from autotag.web.routes import create_app
from tests.clips import RED, write_video
from tests.library import module_library

LOCAL = "http://127.0.0.1:8765"
TOKEN = "t0ken-" + "x" * 26


@pytest.fixture(scope="module")
def made(tmp_path_factory, model_dir, embedder):
    yield from module_library(tmp_path_factory, "web", model_dir, embedder)


@pytest.fixture
def served(made, embedder):
    """(client, app, library) over the module's library; a fresh app per test."""
    app = open_app(load_config(made["config"]), embedder)
    library = open_library(app)
    client = TestClient(create_app(library), base_url=LOCAL)
    yield client, app, library
    app.close()


def serve(made, embedder, token=None, extra: str = ""):
    config = load_config(made["config"])
    if extra:
        config_path = made["config"].with_name("config-extra.yaml")
        config_path.write_text(made["config"].read_text() + extra)
        config = load_config(config_path)
    app = open_app(config, embedder)
    return app, TestClient(create_app(open_library(app), token), base_url=LOCAL)


def ids(client, query: str) -> dict[str, int]:
    return {h["name"]: h["id"] for h in client.get("/api/search", params={"q": query}).json()}


# -- the API -----------------------------------------------------------------------------------

def test_search_api_ranks_the_matching_clips_first_with_the_moment_they_match(served):
    client, _, _ = served
    hits = client.get("/api/search", params={"q": "red", "top": 3}).json()
    assert [h["name"] for h in hits[:2]] == ["red.webm", "late red.webm"]
    assert len(hits) == 3
    late = hits[1]
    assert set(late) >= {"id", "path", "score", "segment", "thumbnail"}
    assert late["segment"]["start"] >= 9.0 and late["segment"]["end"] == pytest.approx(32, abs=0.5)
    assert late["path"].endswith("late red.webm") and isinstance(late["id"], int)
    thumb = client.get(late["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


def test_search_filters_by_tag_and_folder(served, made):
    client, _, _ = served
    tagged_red = client.get("/api/search", params={"q": "blue", "tag": "red"}).json()
    assert sorted(h["name"] for h in tagged_red) == ["late red.webm", "red.webm"]
    sub = client.get("/api/search", params={"q": "red", "folder": str(made["clips"] / "sub")})
    assert sorted(h["name"] for h in sub.json()) == ["blue.avi", "green.mp4"]
    best_sea = client.get("/api/search", params={"tag": "sea"}).json()  # a tag's clips
    assert {h["name"] for h in best_sea} == {"blue.avi", "spin.gif"}
    assert client.get("/api/search", params={"q": "red", "tag": "nope"}).status_code == 400
    assert client.get("/api/search").status_code == 400


def test_clip_api_gives_tags_thresholds_confidences_segments_and_outputs(served):
    client, _, _ = served
    late = ids(client, "red")["late red.webm"]
    detail = client.get(f"/api/clips/{late}", params={"q": "red"}).json()
    assert detail["tags"][0]["label"] == "red" and detail["tags"][0]["threshold"] == 3.0
    assert 0 < detail["tags"][0]["confidence"] <= 1
    assert detail["tags"][0]["segments"][0]["start"] >= 9.0
    assert {t["label"] for t in detail["ranking"]} == {"red", "green", "sea"}
    assert detail["kind"] == "video" and detail["playable"] is True
    assert detail["start"] == pytest.approx(detail["match"]["segment"]["start"], abs=0.1)
    assert detail["start"] >= 9.0
    sidecar = next(o for o in detail["outputs"] if o["kind"] == "sidecar")
    assert sidecar["exists"] and sidecar["path"].endswith("late red.webm.autotag.json")
    assert client.get(f"/api/clips/{late}").json()["start"] >= 9.0  # the top tag's segment


def test_a_clips_outputs_in_the_api_are_the_files_its_tagging_wrote(served):
    client, _, _ = served
    late = ids(client, "red")["late red.webm"]
    shown = {o["kind"]: o for o in client.get(f"/api/clips/{late}").json()["outputs"]}
    assert all(o["exists"] for o in shown.values()), shown
    written = json.loads(Path(shown["sidecar"]["path"]).read_text())["outputs"]
    assert shown["preview image"]["path"] == written["preview"]
    assert shown["XMP"]["path"] == written["xmp"]
    assert set(shown) == {"preview image", "XMP", "sidecar", "match log"}


def test_tags_api_counts_the_clips_given_each_tag(served):
    client, _, _ = served
    tags = {t["label"]: t for t in client.get("/api/tags").json()}
    assert {k: t["count"] for k, t in tags.items()} == {"red": 2, "green": 1, "sea": 2}
    assert tags["sea"]["prompts"] == ["blue water", "blue sky"]


def test_a_clip_browsers_cannot_play_gets_an_encoded_preview_of_its_segment(served):
    client, _, _ = served
    blue = ids(client, "blue")["blue.avi"]
    detail = client.get(f"/api/clips/{blue}").json()
    assert detail["kind"] == "preview" and "JPEG" in detail["reason"]
    preview = client.get(detail["preview"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "video/webm"
    assert preview.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM
    gif = ids(client, "blue")["spin.gif"]
    assert client.get(f"/api/clips/{gif}").json()["kind"] == "image"


def test_status_metrics_and_health(served):
    client, _, _ = served
    status = client.get("/api/status").json()
    assert status["store"]["tagged"] == 5 and status["store"]["indexed"] == 5
    assert status["daemon"]["state"] == "not running"
    assert status["model"]["runtime"]
    client.get("/api/search", params={"q": "green"})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(re.findall(r"^(autotag_\w+(?:\{[^}]*\})?) (\S+)$", metrics.text, re.MULTILINE))
    assert samples["autotag_index_clips"] == "5"
    assert float(samples["autotag_search_latency_seconds_count"]) >= 1
    assert samples["autotag_daemon_up"] == "0"
    assert client.get("/healthz").json()["ok"] is True


def test_pages_render(served):
    client, _, _ = served
    page = client.get("/", params={"q": "red"})
    assert page.status_code == 200 and "late red.webm" in page.text
    late = ids(client, "red")["late red.webm"]
    clip = client.get(f"/clips/{late}", params={"q": "red"})
    assert clip.status_code == 200 and "<svg" in clip.text and 'id="player"' in clip.text
    assert re.search(r'src="/api/clips/\d+/media#t=1\d\.\d"', clip.text)
    for path in ("/tags", "/status", "/"):
        assert client.get(path).status_code == 200
    assert client.get("/clips/999999").status_code == 404


# -- media, Range and what may be served ---------------------------------------------------------

def test_media_is_served_with_http_range(served, made):
    client, _, _ = served
    red = ids(client, "red")["red.webm"]
    data = (made["clips"] / "red.webm").read_bytes()
    whole = client.get(f"/api/clips/{red}/media")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/clips/{red}/media", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    tail = client.get(f"/api/clips/{red}/media", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    open_ended = client.get(f"/api/clips/{red}/media", headers={"Range": f"bytes={len(data) - 5}-"})
    assert open_ended.content == data[-5:]
    beyond = client.get(f"/api/clips/{red}/media", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    overlong = client.get(f"/api/clips/{red}/media", headers={"Range": "bytes=0-99999999999"})
    assert overlong.status_code == 206 and overlong.content == data  # clamped to the file
    backwards = client.get(f"/api/clips/{red}/media", headers={"Range": "bytes=50-10"})
    assert backwards.status_code in (400, 416) and data[:10] not in backwards.content
    many = client.get(f"/api/clips/{red}/media", headers={"Range": "bytes=0-9,20-29"})
    assert many.status_code == 206 and data[:10] in many.content and data[20:30] in many.content


@pytest.mark.parametrize("url", [
    "/api/clips/../../etc/passwd/media",
    "/api/clips/%2e%2e%2f%2e%2e%2fetc%2fpasswd/media",
    "/api/clips/1%2f..%2f..%2fconfig.yaml/media",
    "/api/clips/1%00/media",
    "/api/clips/-1/media",
    "/api/clips/999999/media",
    "/static/../config.yaml",
    "/static/%2e%2e/%2e%2e/config.yaml",
    "/static/..%2f..%2fconfig.yaml",
    "/static/%00",
    "/static/",
    "/clips/",
    "/config.yaml",
    "/etc/passwd",
])
def test_no_url_reads_a_file_that_is_not_a_clip_or_an_asset(served, url):
    client, _, _ = served
    response = client.get(url)
    assert response.status_code in (400, 404), (url, response.status_code)
    assert b"vocabulary" not in response.content and b"root:" not in response.content


def test_a_clip_deleted_or_changed_after_it_was_indexed_is_not_served(made, embedder, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    victim = write_video(extra / "gone.mp4", [(RED, 3)])
    assert cli.main(["--once", "--config", str(made["config"]), str(extra)],
                    embedder=embedder) == 0
    app, client = serve(made, embedder)
    try:
        gone = ids(client, "red")["gone.mp4"]
        assert client.get(f"/api/clips/{gone}/media").status_code == 200
        victim.write_bytes(b"not the clip that was tagged")
        assert client.get(f"/api/clips/{gone}/media").status_code == 404
        victim.unlink()
        assert client.get(f"/api/clips/{gone}/media").status_code == 404
        assert "gone.mp4" not in ids(client, "red")  # search leaves stale clips out
        page = client.get(f"/clips/{gone}")
        assert page.status_code == 200 and "gone from disk" in page.text  # it says so
    finally:
        app.close()
        Store(made["config"].parent / "state.sqlite3").forget(victim)


def test_a_symlink_swapped_in_that_leads_out_of_the_library_is_not_followed(made, embedder,
                                                                               tmp_path):
    extra = tmp_path / "lib2"
    extra.mkdir()
    clip = write_video(extra / "swap.mp4", [(RED, 3)])
    assert cli.main(["--once", "--config", str(made["config"]), str(extra)],
                    embedder=embedder) == 0
    outside = tmp_path / "private" / "secret.mp4"
    outside.parent.mkdir()
    shutil.copy2(clip, outside)  # same size and mtime: the store cannot tell them apart
    clip.unlink()
    clip.symlink_to(outside)
    app, client = serve(made, embedder)
    try:
        swapped = ids(client, "red")["swap.mp4"]
        assert client.get(f"/api/clips/{swapped}/media").status_code == 404
    finally:
        app.close()
        Store(made["config"].parent / "state.sqlite3").forget(clip)


# -- Host, token, CSRF, headers -------------------------------------------------------------------

@pytest.mark.parametrize("host,allowed", [
    ("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
    ("192.168.1.20:8765", True), ("evil.example", False), ("evil.example:8765", False),
    ("127.0.0.1.nip.io", False), ("", False),
])
def test_requests_for_another_host_name_are_refused(served, host, allowed):
    client, _, _ = served
    response = client.get("/api/tags", headers={"Host": host})
    assert (response.status_code == 200) is allowed, response.text


def test_a_configured_host_name_is_answered(made, embedder):
    app, client = serve(made, embedder, extra="serve: {hosts: [nas.lan]}\n")
    try:
        assert client.get("/api/tags", headers={"Host": "nas.lan:8765"}).status_code == 200
        assert client.get("/api/tags", headers={"Host": "other.lan"}).status_code == 400
    finally:
        app.close()


def test_with_a_token_every_request_without_it_is_refused(made, embedder):
    app, client = serve(made, embedder, token=TOKEN)
    try:
        assert client.get("/api/search", params={"q": "red"}).status_code == 401
        assert client.get("/api/clips/1/media").status_code == 401
        assert client.get("/metrics").status_code == 401
        page = client.get("/")
        assert page.status_code == 401 and 'name="token"' in page.text  # the login form
        bad = client.get("/api/tags", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        good = client.get("/api/tags", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
        assert client.get("/api/tags", cookies={"autotag_session": "forged"}).status_code == 401
        assert client.get("/healthz").status_code == 200  # nothing private
        assert client.get("/static/app.css").status_code == 200
    finally:
        app.close()


def _csrf(client) -> str:
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', client.get("/login").text)[1]


def test_the_login_form_sets_a_session_cookie_and_failures_are_rate_limited(made, embedder):
    app, client = serve(made, embedder, token=TOKEN)
    try:
        csrf = _csrf(client)
        form = {"csrf": csrf, "next": "/tags"}
        for n in range(6):
            began = time.monotonic()
            wrong = client.post("/login", data={**form, "token": f"wrong{n}"},
                                headers={"Origin": LOCAL})
            assert wrong.status_code == 401
        assert time.monotonic() - began >= 1.0  # the sixth wrong token's answer is held back
        right = client.post("/login", data={**form, "token": TOKEN}, headers={"Origin": LOCAL},
                            follow_redirects=False)
        assert right.status_code == 303  # the right token is never locked out (issue 30)
        app.close()
        app, client = serve(made, embedder, token=TOKEN)  # a fresh limiter
        csrf = _csrf(client)
        ok = client.post("/login", data={"csrf": csrf, "next": "//evil.example/", "token": TOKEN},
                         headers={"Origin": LOCAL}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # never another site
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert TOKEN not in cookie
        assert client.get("/api/search", params={"q": "red"}).status_code == 200
    finally:
        app.close()


def test_a_state_change_needs_the_same_origin_and_the_csrf_token(made, embedder):
    app, client = serve(made, embedder, token=TOKEN)
    try:
        csrf = _csrf(client)
        login = {"csrf": csrf, "token": TOKEN, "next": "/"}
        assert client.post("/login", data=login).status_code == 403  # no Origin
        assert client.post("/login", data=login,
                           headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/login", data=login, headers={"Origin": "null"}).status_code == 403
        assert client.post("/login", data={**login, "csrf": "0" * 64},
                           headers={"Origin": LOCAL}).status_code == 403
        assert client.post("/login", data={k: v for k, v in login.items() if k != "csrf"},
                           headers={"Origin": LOCAL}).status_code == 403
        referer = client.post("/login", data=login, headers={"Referer": LOCAL + "/login"},
                              follow_redirects=False)
        assert referer.status_code == 303
        csrf = _csrf(client)  # the session's own token now
        assert client.post("/logout", data={"csrf": csrf},
                           headers={"Origin": "http://evil.example"}).status_code == 403
        out = client.post("/logout", headers={"Origin": LOCAL, "X-CSRF-Token": csrf},
                          follow_redirects=False)
        assert out.status_code == 303
    finally:
        app.close()


def test_every_response_carries_the_security_headers(served):
    client, _, _ = served
    red = ids(client, "red")["red.webm"]
    for url in ("/", "/api/tags", f"/api/clips/{red}/media", "/static/app.css", "/nope",
                "/api/clips/999999"):
        headers = client.get(url).headers
        assert "default-src 'self'" in headers["content-security-policy"], url
        assert "frame-ancestors 'none'" in headers["content-security-policy"], url
        assert headers["x-content-type-options"] == "nosniff", url
        assert headers["cross-origin-resource-policy"] == "same-origin", url
    assert client.get("/", headers={"Host": "evil.example"}).headers[
        "x-content-type-options"] == "nosniff"


def test_it_works_under_a_path_prefix_whether_the_proxy_strips_it_or_not(made, embedder):
    app, client = serve(made, embedder, extra="serve: {root_path: /autotag}\n")
    try:
        for prefix in ("/autotag", ""):  # Caddy's handle_path strips it; Traefik may not
            page = client.get(prefix + "/", params={"q": "red"})
            assert page.status_code == 200
            assert 'href="/autotag/static/app.css"' in page.text
            assert re.search(r'href="/autotag/clips/\d+\?q=red', page.text)
            hits = client.get(prefix + "/api/search", params={"q": "red"}).json()
            assert hits[0]["thumbnail"].startswith("/autotag/api/clips/")
            assert client.get(hits[0]["thumbnail"]).status_code == 200
    finally:
        app.close()


# -- the index follows the store ------------------------------------------------------------------

def test_the_index_follows_clips_tagged_moved_and_forgotten_after_it_loaded(made, embedder,
                                                                              tmp_path):
    app, client = serve(made, embedder)
    store = Store(made["config"].parent / "state.sqlite3")
    extra = tmp_path / "later"
    extra.mkdir()
    try:
        assert "new red.mp4" not in ids(client, "red")
        clip = write_video(extra / "new red.mp4", [(RED, 3)])
        assert cli.main(["--once", "--config", str(made["config"]), str(extra)],
                        embedder=embedder) == 0  # another process's write, as the daemon's
        assert "new red.mp4" in ids(client, "red")
        moved = clip.rename(extra / "moved red.mp4")
        assert cli.main(["--once", "--config", str(made["config"]), str(extra)],
                        embedder=embedder) == 0
        store.forget(clip)
        found = ids(client, "red")
        assert "moved red.mp4" in found and "new red.mp4" not in found
        store.forget(moved)
        assert "moved red.mp4" not in ids(client, "red")
    finally:
        app.close()
        store.close()


def test_a_version_1_store_is_upgraded_keeping_every_id_and_every_clip_vector(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL,
            sha256 TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT, model TEXT, vocabulary TEXT, updated REAL NOT NULL);
        CREATE INDEX files_sha256 ON files (sha256);
        CREATE TABLE clips (sha256 TEXT NOT NULL, model TEXT NOT NULL, duration REAL NOT NULL,
            windows TEXT NOT NULL, embeddings BLOB NOT NULL, clip_embedding BLOB NOT NULL,
            dim INTEGER NOT NULL, PRIMARY KEY (sha256, model));
        CREATE TABLE thumbs (sha256 TEXT PRIMARY KEY, count INTEGER NOT NULL, jpeg BLOB NOT NULL);
        INSERT INTO files VALUES ('/a.mp4', 1, 1.0, 'aa', 'tagged', 0, NULL, 'm', 'v', 5.0);
        INSERT INTO files VALUES ('/b.mp4', 2, 2.0, NULL, 'failed', 3, 'bad', NULL, NULL, 6.0);
        DELETE FROM files WHERE path = '/a.mp4';
        INSERT INTO files VALUES ('/c.mp4', 3, 3.0, 'cc', 'tagged', 0, NULL, 'm', 'v', 7.0);
        INSERT INTO clips VALUES ('cc', 'm', 3.2, '[[0, 3.2]]', zeroblob(8), X'0000803F00000040', 2);
        PRAGMA user_version = 1;
    """)
    before = dict(db.execute("SELECT path, rowid FROM files"))
    db.close()
    store = Store(path)
    assert {str(r.path): r.id for r in store.files()} == before == {"/b.mp4": 2, "/c.mp4": 3}
    assert store.file(Path("/b.mp4")).last_error == "bad"
    records, matrix = store.clip_index("m")  # from the vectors table the upgrade filled
    assert [str(r.path) for r in records] == ["/c.mp4"] and matrix.tolist() == [[1.0, 2.0]]
    seq = store.last_change()
    store.record_failure(Path("/d.mp4"), 4, 4.0, "broken")
    latest, changed = store.changed_since(seq)
    assert changed == {4} and latest > seq  # a new id, never a reused one
    store.close()


def test_serve_refuses_an_address_off_loopback_without_a_token(made, capsys):
    code = cli.main(["serve", "--config", str(made["config"]), "--listen", "0.0.0.0:8765"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "serve.token_file" in err[0], err
    short = made["config"].parent / "short-token"
    short.write_text("abc")
    config = made["config"].with_name("config-token.yaml")
    config.write_text(made["config"].read_text() + f"serve: {{token_file: '{short}'}}\n")
    code = cli.main(["serve", "--config", str(config), "--listen", "0.0.0.0:8765"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "at least" in err[0], err
    assert cli.main(["serve", "--config", str(made["config"]), "--listen", "nonsense"]) == 2


def test_the_store_never_changes_a_clip(made, embedder):
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in made["clips"].rglob("*")
              if p.is_file() and not p.name.endswith((".json", ".xmp", ".nfo"))}
    app, client = serve(made, embedder)
    try:
        for file_id in ids(client, "red").values():
            client.get(f"/clips/{file_id}")
            client.get(f"/api/clips/{file_id}/media")
            detail = client.get(f"/api/clips/{file_id}").json()
            if detail["preview"]:
                client.get(detail["preview"])
    finally:
        app.close()
    after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in before}
    assert after == before
    assert os.listdir(made["clips"] / "sub")  # nothing moved away


def test_an_index_further_behind_than_the_change_feed_reaches_reloads_everything(served,
                                                                                  monkeypatch):
    client, app, library = served
    index, store = library.index, app.store
    index.refresh()
    behind = index._seq
    reloads = []
    original = index._reload
    monkeypatch.setattr(index, "_reload", lambda: (reloads.append(1), original()))
    try:
        store.record_failure(Path("/nowhere/a.mp4"), 1, 1.0, "test")
        with store._db() as db:
            db.execute("DELETE FROM changes")  # trimmed past what the index saw
        store.record_failure(Path("/nowhere/b.mp4"), 1, 1.0, "test")
        assert store.changed_since(behind)[1] is None
        assert "red.webm" in ids(client, "red")
        assert reloads == [1]
        index.refresh()
        assert reloads == [1]  # caught up: no reload for nothing
    finally:
        store.forget(Path("/nowhere/a.mp4"))
        store.forget(Path("/nowhere/b.mp4"))


def test_a_review_from_the_api_or_the_page_rewrites_the_sidecar_and_the_page(made, embedder):
    from tests.helpers import sidecar

    app, client = serve(made, embedder)
    clip = made["clips"] / "red.webm"
    try:
        red = ids(client, "red")["red.webm"]
        csrf = client.get("/api/session").json()["csrf"]
        refused = client.post(f"/api/clips/{red}/reviews", json={"reject": ["red"]})
        assert refused.status_code == 403  # no Origin, no CSRF token: not from our page
        done = client.post(f"/api/clips/{red}/reviews", json={"reject": ["red"]},
                           headers={"Origin": LOCAL, "X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json()["tags"] == []
        assert sidecar(clip)["reviews"]["rejected"] == ["red"]
        red_tag = client.get("/api/tags").json()[0]
        assert (red_tag["label"], red_tag["count"]) == ("red", 1)
        page = client.get(f"/clips/{red}")
        assert 'class="badge rejected"' in page.text
        undo = client.post(f"/clips/{red}/reviews", data={
            "csrf": csrf, "label": "red", "verdict": "clear"}, headers={"Origin": LOCAL},
            follow_redirects=False)
        # back to the row reviewed (app.js gives it the focus again)
        assert undo.status_code == 303 and undo.headers["location"].endswith("#tag-red")
        assert [t["label"] for t in sidecar(clip)["tags"]] == ["red"]
        bad = client.post(f"/api/clips/{red}/reviews", json={"reject": ["purple"]},
                          headers={"Origin": LOCAL, "X-CSRF-Token": csrf})
        assert bad.status_code == 400 and "purple" in bad.json()["error"]
    finally:
        app.close()


def test_more_like_this_from_the_api_leaves_the_clip_itself_out(served):
    client, _, _ = served
    red = ids(client, "red")["red.webm"]
    like = client.get("/api/search", params={"like": red}).json()
    assert like[0]["name"] == "late red.webm" and red not in {h["id"] for h in like}
    late = ids(client, "red")["late red.webm"]
    early = client.get("/api/search", params={"like": late, "at": 3}).json()
    assert early[0]["name"] == "green.mp4"  # the green moment of late red
    page = client.get("/", params={"like": late, "at": 3})
    assert "clips like late red.webm" in page.text
    assert client.get("/api/search", params={"like": 999999}).status_code == 404


def test_the_calibrate_page_shows_gains_and_losses_then_writes_the_thresholds(
        tmp_path, model_dir, embedder, run_once):
    from autotag.reviews import Verdicts, review
    from tests.clips import GREEN

    clips = tmp_path / "clips"
    clips.mkdir()
    for n in range(12):  # red for n of 12 seconds: the red clip score spreads
        write_video(clips / f"shade{n:02d}.mp4", [(RED, n + 0.5), (GREEN, 12 - n)])
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{handle: '{model_dir}'}}\nvocabulary: [red, green]\n"
                      f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
                      "tagging: {min_score: 3.0}\noutputs: {log: null, previews: null}\n")
    assert run_once(config, clips) == 0
    app = open_app(load_config(config), embedder)
    reloads = []
    client = TestClient(create_app(open_library(app), reload=lambda: reloads.append(1)),
                        base_url=LOCAL)
    try:
        page = client.get("/calibrate")
        assert page.status_code == 200 and "No threshold would change" in page.text
        for n in range(12):  # the person: red from 7 s of 12 on, not below 5 s
            record = app.store.file(clips / f"shade{n:02d}.mp4")
            if n >= 7 or n <= 4:
                review(app.tagger, app.store, record,
                       Verdicts(confirm=("red",)) if n >= 7 else Verdicts(reject=("red",)))
        page = client.get("/calibrate")
        assert "Write these thresholds" in page.text
        version = re.search(r'name="version" value="([0-9a-f]+)"', page.text)[1]
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)[1]
        assert client.post("/calibrate", data={"csrf": csrf, "version": "stale"},
                           headers={"Origin": LOCAL}).status_code == 409
        done = client.post("/calibrate", data={"csrf": csrf, "version": version},
                           headers={"Origin": LOCAL}, follow_redirects=False)
        assert done.status_code == 303 and reloads == [1]
        from tests.helpers import sidecar

        written = load_config(config).tagging.thresholds["red"]
        red = {n: next(t["score"] for t in sidecar(clips / f"shade{n:02d}.mp4")["ranking"]
                       if t["label"] == "red") for n in range(12)}
        assert max(red[n] for n in range(5)) < written <= min(red[n] for n in range(7, 12))
    finally:
        app.close()


def test_a_tag_taught_from_selected_clips_is_added_to_the_config_and_finds_a_third(
        tmp_path, model_dir, embedder, run_once):
    from tests.clips import BLUE

    clips = tmp_path / "clips"
    clips.mkdir()
    for name, colour in (("sky one", BLUE), ("sky two", BLUE), ("sky three", BLUE),
                         ("fire", RED)):
        write_video(clips / f"{name}.mp4", [(colour, 3)])
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{handle: '{model_dir}'}}\n# my tags\nvocabulary:\n  - red\n"
                      f"  - green\nstate: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
                      "outputs: {log: null, previews: null}\n")
    assert run_once(config, clips) == 0
    opened = [open_app(load_config(config), embedder)]

    def reload():  # what autotag serve does: the config again, a new library
        opened.append(open_app(load_config(config), embedder))
        web.state.library = open_library(opened[-1])

    web = create_app(open_library(opened[0]), reload=reload)
    client = TestClient(web, base_url=LOCAL)
    try:
        found = ids(client, "blue")
        page = client.get("/", params={"q": "blue"})
        assert f'name="clip" value="{found["sky one.mp4"]}"' in page.text
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)[1]
        body = {"csrf": csrf, "label": "sky",
                "clip": [found["sky one.mp4"], found["sky two.mp4"]]}
        taught = client.post("/tags", data=body, headers={"Origin": LOCAL},
                             follow_redirects=False)
        assert taught.status_code == 303, taught.text
        text = config.read_text()
        assert "# my tags" in text and "  - sky: {examples: [" in text  # an edit, not a rewrite
        assert [e.label for e in load_config(config).vocabulary] == ["red", "green", "sky"]
        listed = {t["label"]: t for t in client.get("/api/tags").json()}
        tags = {label: t["count"] for label, t in listed.items()}
        assert sorted(Path(p).name for p in listed["sky"]["examples"]) == ["sky one.mp4", "sky two.mp4"]
        assert "sky one.mp4" in client.get("/tags").text
        assert tags["sky"] == 3  # the two examples and the third blue clip; not the red one
        sky = [h["name"] for h in client.get("/api/search", params={"tag": "sky"}).json()]
        assert "sky three.mp4" in sky and "fire.mp4" not in sky
        again = client.post("/tags", data=body, headers={"Origin": LOCAL})
        assert again.status_code == 409 and "already" in again.text
    finally:
        for app in opened:
            app.close()


# -- the web app's place among the rooms -------------------------------------------------------

def _imported(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_web_app_imports_neither_the_daemon_nor_a_command():
    """The daemon hands the app its status (Library.status); the app never reaches up."""
    web = Path(autotag.web.__file__).parent
    reaching = {f"{p.name}: {m}" for p in sorted(web.glob("*.py")) for m in _imported(p)
                if m.split(".")[:2] in (["autotag", "daemon"], ["autotag", "cli"])}
    assert reaching == set()
