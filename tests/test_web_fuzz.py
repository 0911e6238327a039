"""Property-based fuzzing of every route of the web app and every parameter it reads (issue 30):
any value of any parameter, any id, any Range, any form or JSON body → never a 500, and never a
byte of a file outside the library (the library holds symlinks to such a file and folder).

Example counts are modest so the default suite stays fast; HYPOTHESIS_PROFILE=fuzz runs more.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from autotag.app import open_app
from autotag.config import load_config
from autotag.web.library import open_library
from autotag.web.routes import create_app

settings.register_profile("web-default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("web-fuzz", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
PROFILE = settings.get_profile("web-fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
                               else "web-default")
LOCAL = "http://127.0.0.1:8765"
TOKEN = "t0ken-" + "f" * 26
MARKER = b"SECRET-OUTSIDE-THE-LIBRARY"
PARAMS = ["q", "tag", "folder", "like", "at", "top", "t", "start", "end", "window", "next",
          "written", "id"]
FORM = ["label", "verdict", "clip", "token", "next", "q", "t", "version", "csrf"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, model_dir, embedder):
    """tests/library.py's clips, plus symlinks out of the library to a secret file and folder
    (the scan leaves them out; the fuzzing must never get their bytes), and a client with the
    token (Bearer: state changes need no CSRF token, so the routes behind it are reached)."""
    from tests.library import module_library

    for made in module_library(tmp_path_factory, "fuzz", model_dir, embedder):
        outside = made["config"].parent / "outside"
        outside.mkdir()
        secret = outside / "secret.mp4"
        secret.write_bytes(MARKER * 100)
        (made["clips"] / "leak.mp4").symlink_to(secret)
        (made["clips"] / "leakdir").symlink_to(outside, target_is_directory=True)
        app = open_app(load_config(made["config"]), embedder)
        web = create_app(open_library(app), TOKEN)
        client = TestClient(web, base_url=LOCAL, headers={"Authorization": f"Bearer {TOKEN}"},
                            raise_server_exceptions=False)
        routes = [(r.path, sorted(r.methods or {"GET"})) for r in _routes(web)]
        yield client, routes
        app.close()


def _routes(web) -> list[Route]:
    """The app's own route table (Security wraps the Starlette app)."""
    inner = web.security.app
    return [r for r in inner.routes if isinstance(r, Route)]


ids = st.one_of(st.integers(1, 12), st.integers(-3, 0), st.integers(2**63 - 2, 2**64 + 2),
                st.integers(10**20, 10**30))
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "-1e308", "1e-320", "0x10", "²", "٣",
                     "9223372036854775808", "-9223372036854775809", "../../etc/passwd",
                     "/etc/passwd", "red\u2029", "red\u2028x", "%00", "\x00", "red", "sea",
                     "1", "0", "-1", "", " ", "//evil.example/", "confirm", "reject"]),
    st.integers().map(str), st.floats().map(repr))
params = st.dictionaries(st.sampled_from(PARAMS), texts, max_size=5)
ranges = st.one_of(st.none(), st.sampled_from(["bytes=0-10", "bytes=-5", "bytes=5-", "bytes=",
                                               "bytes=9-1", "bytes=0-0,2-3,4-5",
                                               "bytes=99999999999999999999-",
                                               "items=0-1", "bytes=0-1," * 200]))
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FORM), texts, max_size=4).map(lambda d: ("form", d)),
    st.dictionaries(st.sampled_from(["confirm", "reject", "clear", "x"]),
                    st.one_of(st.lists(texts, max_size=3), texts, st.integers(),
                              st.none()), max_size=3).map(lambda d: ("json", d)),
    st.binary(max_size=200).map(lambda b: ("raw", b)))


def _url(path: str, clip_id: int) -> str:
    return path.replace("{id:int}", str(abs(clip_id))).replace("{id}", str(clip_id))


def _check(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    assert MARKER not in response.content, what


@settings(PROFILE)
@given(data=st.data())
@example(data=None)
def test_no_route_and_no_parameter_gives_a_500_or_a_byte_from_outside(fuzzed, data):
    client, routes = fuzzed
    if data is None:  # one pass over every route with a plain, valid request first
        for path, methods in routes:
            for method in methods:
                if method != "HEAD":
                    _check(client.request(method, _url(path, 1)), (method, path))
        return
    path, methods = data.draw(st.sampled_from(routes))
    method = data.draw(st.sampled_from([m for m in methods if m != "HEAD"] or ["GET"]))
    url = _url(path, data.draw(ids))
    query = data.draw(params)
    headers = {}
    if (rng := data.draw(ranges)) is not None:
        headers["Range"] = rng
    if method == "GET":
        response = client.get(url, params=query, headers=headers)
    else:
        kind, body = data.draw(bodies)
        if kind == "form":
            response = client.post(url, params=query, data=body, headers=headers)
        elif kind == "json":
            response = client.post(url, params=query, json=body, headers=headers)
        else:
            response = client.post(url, params=query, content=body, headers=headers)
    _check(response, (method, url, query, headers))
