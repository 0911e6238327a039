"""One truth: whatever changes what a clip's outputs should say (an output switched on, new
thresholds, a review, a tag taught or calibrated in the web app, a SIGHUP to `autotag serve`)
brings every output up to date from stored embeddings, under the one up-to-date rule that
`--once`, the daemon and the cluster driver share; clips that would share an output's name
never write into each other's; an orphan autotag alone wrote goes with its clip."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

from starlette.testclient import TestClient

from autotag.app import open_app
from autotag.config import load_config
from autotag.daemon.service import Daemon
from autotag.outputs import own_outputs
from autotag.outputs.nfo import Nfo
from autotag.outputs.xmp import Xmp
from autotag.passes import MAX_RETRIES
from autotag.web.library import open_library
from autotag.web.routes import create_app
from tests.clips import BLUE, GREEN, RED, write_gif, write_video
from tests.helpers import (
    CountingEmbedder,
    serve_process,
    sidecar,
    tagged,
    wait_for,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1:8765"


def _switch_on(config: Path, outputs: str) -> None:
    text = config.read_text()
    config.write_text(text.replace("previews: previews}", f"previews: previews, {outputs}}}"))


def _tags_in_nfo(path: Path) -> list[str]:
    return re.findall(r"<tag>([^<]*)</tag>", path.read_text())


def _library(tmp_path: Path, model_dir: Path) -> tuple[Path, Path]:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 2)])
    write_video(clips / "green.mp4", [(GREEN, 2)])
    return clips, write_config(tmp_path, model_dir)


# -- the rule -----------------------------------------------------------------------------------

def test_an_output_switched_on_later_is_written_by_once_from_stored_embeddings(
        tmp_path, model_dir, embedder, capsys):
    from autotag import cli

    clips, config = _library(tmp_path, model_dir)
    counting = CountingEmbedder(embedder)

    def once() -> str:
        capsys.readouterr()
        assert cli.main(["--once", "--config", str(config), str(clips)], embedder=counting) == 0
        return capsys.readouterr().err

    once()
    calls = len(counting.batches)
    assert not list(clips.glob("*.xmp")) and not list(clips.glob("*.nfo"))
    _switch_on(config, "xmp: true, nfo: true")
    assert "2 tagged from stored embeddings" in once()
    assert len(counting.batches) == calls  # no decoding, no video model call
    assert _tags_in_nfo(clips / "red.nfo") == ["red"]
    assert "red" in (clips / "red.mp4.xmp").read_text()
    assert sidecar(clips / "red.mp4")["outputs"]["nfo"] == str(clips / "red.nfo")
    assert "2 up to date" in once()  # and then it is done: a comparison, nothing rewritten


def test_a_threshold_changed_in_the_config_rewrites_the_outputs_at_the_next_pass(
        tmp_path, model_dir, run_once, capsys):
    clips, config = _library(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    assert [t["label"] for t in sidecar(clips / "red.mp4")["tags"]] == ["red"]
    config.write_text(config.read_text().replace(
        "tagging: {top_k: 2, min_score: 3.0}", "tagging: {top_k: 2, min_score: 3.0, "
        "thresholds: {red: 1000.0}}"))
    capsys.readouterr()
    assert run_once(config, clips) == 0
    assert "2 tagged from stored embeddings" in capsys.readouterr().err
    assert sidecar(clips / "red.mp4")["tags"] == []  # red's new threshold is out of reach


def test_once_and_the_daemon_retry_a_failed_file_under_the_same_rule(tmp_path, model_dir,
                                                                      embedder, run_once,
                                                                      capsys):
    clips, config = _library(tmp_path, model_dir)
    bad = clips / "bad.mp4"
    bad.write_bytes(b"not a video" * 10)
    daemon = Daemon(load_config(config), [clips], open_app=None, reload_config=None)

    def daemon_would_queue() -> bool:
        daemon._app = open_app(load_config(config), embedder)  # the daemon's own question
        try:
            return not daemon.watching.known([(bad, bad.stat())])[0]
        finally:
            daemon._app.close()

    for attempt in range(1, MAX_RETRIES + 2):  # --once tries it each run, retries left
        assert daemon_would_queue()
        capsys.readouterr()
        assert run_once(config, clips) == 1
        assert "bad.mp4" in capsys.readouterr().err
        app = open_app(load_config(config), embedder)
        try:
            assert app.store.file(bad).attempts == attempt
        finally:
            app.close()
    assert not daemon_would_queue()  # no retry left: both wait for the file to change
    capsys.readouterr()
    assert run_once(config, clips) == 0
    assert "failed before" in capsys.readouterr().err
    app = open_app(load_config(config), embedder)
    try:
        assert app.store.file(bad).attempts == MAX_RETRIES + 1  # not tried again
    finally:
        app.close()
    with bad.open("ab") as f:  # a new version: tried again by both
        f.write(b"more")
    assert daemon_would_queue()


def test_a_store_older_than_the_outputs_digest_reads_each_sidecar_once(tmp_path, model_dir,
                                                                       embedder):
    import sqlite3

    clips, config = _library(tmp_path, model_dir)
    app = open_app(load_config(config), embedder)
    try:
        paths = sorted(clips.glob("*.mp4"))
        assert all(r.status == "tagged" for r in app.tag(paths))
        with sqlite3.connect(app.store.path) as db:  # as a schema 5 store left it
            db.execute("UPDATE files SET outputs = NULL")
        db.close()
        items = [(p, p.stat()) for p in paths]
        assert app.rule.fresh_many(items) == [True, True]  # read: every output there
        noted = app.store.versions([str(p) for p in paths])
        assert {v.outputs for v in noted.values()} == {app.rule.digest}
    finally:
        app.close()


# -- shared names and orphans ------------------------------------------------------------------

SIX = ("bikes.mp4", "bikes.mkv", "bikes.mov", "bikes.webm", "bikes.avi", "bikes.gif")


def _six(clips: Path) -> None:
    from tests.library import to_webm

    colours = (RED, GREEN, BLUE, RED, GREEN, BLUE)
    for name, colour in zip(SIX, colours, strict=True):
        if name.endswith(".gif"):
            write_gif(clips / name, [(colour, 2)])
        elif name.endswith(".webm"):
            to_webm(write_video(clips.parent / "webm.mp4", [(colour, 2)]), clips / name)
        else:
            write_video(clips / name, [(colour, 2)],
                        fourcc="MJPG" if name.endswith(".avi") else "mp4v")


def test_six_clips_of_one_stem_write_no_nfo_and_say_so_in_one_line(tmp_path, model_dir,
                                                                     run_once, capsys):
    clips, config = _library(tmp_path, model_dir)
    _switch_on(config, "nfo: true, xmp: true")
    _six(clips)
    capsys.readouterr()
    assert run_once(config, clips) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "bikes.nfo" in line]
    assert len(said) == 1, said
    assert all(name in said[0] for name in SIX)
    assert not (clips / "bikes.nfo").exists()
    assert _tags_in_nfo(clips / "red.nfo") == ["red"]  # a stem of its own: written
    for name in SIX:  # each its own XMP, by its full name
        assert (clips / f"{name}.xmp").exists()
        assert sidecar(clips / name)["outputs"].get("nfo") is None


def test_a_clip_sharing_a_stem_later_takes_autotags_tags_out_of_the_nfo(tmp_path):
    bikes = tmp_path / "bikes.mp4"
    bikes.write_bytes(b"a")
    nfo = Nfo()
    nfo.write(tagged(bikes, "red"))
    assert _tags_in_nfo(tmp_path / "bikes.nfo") == ["red"]
    (tmp_path / "bikes.mkv").write_bytes(b"b")
    assert nfo.write(tagged(tmp_path / "bikes.mkv", "green")) is None
    assert not (tmp_path / "bikes.nfo").exists()  # autotag's alone, made for bikes.mp4: gone
    # a person's NFO: its own content stays, autotag's tags come out
    (tmp_path / "bikes.mkv").unlink()
    nfo.write(tagged(bikes, "red"))
    text = (tmp_path / "bikes.nfo").read_text().replace("<movie>", "<movie><title>B</title>")
    (tmp_path / "bikes.nfo").write_text(text)
    (tmp_path / "bikes.mkv").write_bytes(b"b")
    nfo.write(tagged(bikes, "red"))
    assert "<title>B</title>" in (tmp_path / "bikes.nfo").read_text()
    assert _tags_in_nfo(tmp_path / "bikes.nfo") == []


def test_a_lightroom_style_xmp_of_a_shared_stem_is_left_to_no_clip(tmp_path):
    for name in ("bikes.mp4", "bikes.mkv"):
        (tmp_path / name).write_bytes(b"x")
    user = tmp_path / "bikes.xmp"
    user.write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf="
                    "'http://www.w3.org/1999/02/22-rdf-syntax-ns#'/></x:xmpmeta>")
    before = user.read_text()
    written = Xmp("Activity").write(tagged(tmp_path / "bikes.mp4", "red"))
    assert written == tmp_path / "bikes.mp4.xmp" and user.read_text() == before


def test_an_orphan_is_removed_only_when_its_content_is_autotags_alone(tmp_path):
    from autotag.config import OutputsConfig

    config = OutputsConfig(sidecars=False, log=None, previews=None, xmp=True, nfo=True)
    clips = {name: tmp_path / name for name in ("mine.mp4", "theirs.mp4", "shared.mp4")}
    for clip in clips.values():
        clip.write_bytes(b"x")
        Xmp("Activity").write(tagged(clip, "red"))
        Nfo().write(tagged(clip, "red"))
    theirs = tmp_path / "theirs.nfo"
    theirs.write_text(theirs.read_text().replace("<movie>", "<movie><plot>mine</plot>"))
    xmp = tmp_path / "theirs.mp4.xmp"
    xmp.write_text(xmp.read_text().replace("<rdf:Description", "<rdf:Description "
                                           "xmp:Rating='5' xmlns:xmp='http://ns.adobe.com/"
                                           "xap/1.0/'"))
    (tmp_path / "shared.mkv").write_bytes(b"y")  # shared.nfo: bikes.mkv's stem still
    for clip in clips.values():
        clip.unlink()
    assert own_outputs(clips["mine.mp4"], config) == [tmp_path / "mine.mp4.xmp",
                                                      tmp_path / "mine.nfo"]
    assert own_outputs(clips["theirs.mp4"], config) == []
    assert own_outputs(clips["shared.mp4"], config) == [tmp_path / "shared.mp4.xmp"]


# -- the web app ---------------------------------------------------------------------------------

def test_a_review_in_the_web_app_rewrites_sidecar_xmp_and_nfo_with_no_retag(
        tmp_path, model_dir, embedder, run_once):
    clips, config = _library(tmp_path, model_dir)
    _switch_on(config, "xmp: true, nfo: true")
    assert run_once(config, clips) == 0
    app = open_app(load_config(config), embedder)
    client = TestClient(create_app(open_library(app)), base_url=LOCAL)
    try:
        red = app.store.file(clips / "red.mp4").id
        csrf = client.get("/api/session").json()["csrf"]
        done = client.post(f"/api/clips/{red}/reviews", json={"reject": ["red"]},
                           headers={"Origin": LOCAL, "X-CSRF-Token": csrf})
        assert done.status_code == 200
        assert sidecar(clips / "red.mp4")["tags"] == []
        assert _tags_in_nfo(clips / "red.nfo") == []
        assert ">red<" not in (clips / "red.mp4.xmp").read_text()
    finally:
        app.close()


def _reloading_client(config: Path, embedder):
    """The web app with what `autotag serve` does on a change (cli.serve._reload)."""
    import argparse

    from autotag.cli import serve
    from autotag.cli.common import Context

    opened = [open_app(load_config(config), embedder)]
    args = argparse.Namespace(config=config, model=None, debug=False)
    web = create_app(open_library(opened[0]),
                     reload=lambda: serve._reload(args, Context(embedder=embedder), web, opened))
    return TestClient(web, base_url=LOCAL), web, opened


def test_calibrate_and_teach_in_the_web_app_bring_every_file_up_to_date(
        tmp_path, model_dir, embedder, run_once):
    clips, config = _library(tmp_path, model_dir)
    write_video(clips / "sky.mp4", [(BLUE, 2)])
    write_video(clips / "sea.mp4", [(BLUE, 2)])
    config.write_text(f"model: {{handle: '{model_dir}'}}\nvocabulary:\n  - red\n  - green\n"
                      f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
                      "outputs: {log: null, previews: null, nfo: true}\n")  # a block list
    assert run_once(config, clips) == 0
    client, web, opened = _reloading_client(config, embedder)
    try:
        page = client.get("/", params={"q": "blue"})
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)[1]
        ids = {Path(h["path"]).name: h["id"]
               for h in client.get("/api/search", params={"q": "blue"}).json()}
        taught = client.post("/tags", data={"csrf": csrf, "label": "sky",
                                            "clip": [ids["sky.mp4"]]},
                             headers={"Origin": LOCAL}, follow_redirects=False)
        assert taught.status_code == 303, taught.text
        wait_for(lambda: client.get("/api/jobs").json()["state"] == "done")
        jobs = client.get("/api/jobs").json()
        assert jobs["done"] == jobs["total"] == 4 and jobs["failed"] == 0
        assert "sky" in _tags_in_nfo(clips / "sky.nfo")  # no retag command
        assert "sky" in [t["label"] for t in sidecar(clips / "sea.mp4")["tags"]]
        assert "sky" not in _tags_in_nfo(clips / "red.nfo")
    finally:
        web.state.library.close()
        for app in opened:
            app.close()


def test_autotag_serve_reloads_on_sighup_and_brings_the_outputs_up_to_date(
        tmp_path, model_dir, run_once):
    clips, config = _library(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    proc, port = serve_process(config, tmp_path)

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.load(r)

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        try:
            return get("/healthz")["ok"]
        except OSError:
            return False

    try:
        wait_for(up, 120)
        assert get("/api/jobs")["state"] == "idle"
        _switch_on(config, "nfo: true")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: up() and get("/api/jobs")["state"] == "done", 120)
        assert _tags_in_nfo(clips / "red.nfo") == ["red"]
        assert proc.poll() is None  # it lives on
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "reloading the configuration" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stopped_daemon_is_not_said_to_have_a_model_loaded(tmp_path, model_dir, embedder,
                                                             run_once):
    from autotag.status import status_path, write_status

    clips, config = _library(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    loaded = load_config(config)
    write_status(status_path(loaded.state.store_path), {  # as a daemon left it, then ended
        "state": "watching", "pid": 2**22 + 12345, "queue": 3, "in_progress": 1,
        "model": {"resident": True}, "counts": {}})
    app = open_app(loaded, embedder)
    try:
        client = TestClient(create_app(open_library(app)), base_url=LOCAL)
        daemon = client.get("/api/status").json()["daemon"]
        assert daemon["state"] == "not running" and "model" not in daemon
        assert (daemon["queue"], daemon["in_progress"]) == (0, 0)
        metrics = dict(re.findall(r"^(autotag_\w+(?:\{[^}]*\})?) (\S+)$",
                                  client.get("/metrics").text, re.MULTILINE))
        assert metrics["autotag_daemon_up"] == "0"
        assert metrics['autotag_model_loaded{process="daemon"}'] == "0"
        assert 'autotag_model_loaded{process="web"}' in metrics  # this process, said apart
        assert "autotag_model_loaded" not in metrics  # no unlabelled sample to contradict
    finally:
        app.close()
