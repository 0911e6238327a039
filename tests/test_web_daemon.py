"""One service watches, tags and serves: the daemon with serve.listen, and `autotag serve` as a
process of its own reading the daemon's status."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.clips import GREEN, RED, write_video
from tests.helpers import Running, serve_process, wait_for, write_daemon_config


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body = response.read()
        kind = response.headers.get("content-type", "")
        return json.loads(body) if kind.startswith("application/json") else body.decode()


def test_the_daemon_serves_what_it_tags_in_the_same_process(tmp_path, model_dir, embedder):
    root = tmp_path / "watched"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir)
    config.write_text(config.read_text() + "serve: {listen: '127.0.0.1:0'}\n")
    with Running(config, root, embedder) as running:
        port = running.daemon.web_port
        assert port and get(port, "/api/search?q=red") == []
        write_video(root / "red one.mp4", [(RED, 3)])
        write_video(root / "green one.mp4", [(GREEN, 3)])
        wait_for(lambda: len(running.results) == 2)
        assert running.daemon.wait_idle(30)
        hits = get(port, "/api/search?q=red")
        assert hits[0]["path"] == str(root / "red one.mp4")
        status = get(port, "/api/status")
        assert status["daemon"]["state"] == "watching"
        assert status["daemon"]["counts"]["tagged"] == 2
        assert status["daemon"]["folders"] == [str(root)]
        assert {r["path"] for r in status["daemon"]["recent"]} == {
            str(root / "red one.mp4"), str(root / "green one.mp4")}
        metrics = get(port, "/metrics")
        assert "autotag_daemon_up 1" in metrics and "autotag_clips_tagged_total 2" in metrics
        assert 'autotag_model_loaded{process="daemon"} 1' in metrics
        assert 'process="web"' not in metrics  # the web app is the daemon's process
        assert get(port, "/api/jobs")["state"] == "daemon"  # its outputs: the daemon's work
        windows = re.search(r"^autotag_windows_embedded_total (\d+)$", metrics, re.MULTILINE)
        assert windows and int(windows[1]) > 0
        config.write_text(config.read_text().replace("vocabulary: [red, green]",
                                                     "vocabulary: [red, green, sea]"))
        running.daemon.request_reload()  # the pages follow the new vocabulary
        wait_for(lambda: [t["label"] for t in get(port, "/api/tags")] == ["red", "green", "sea"])
        assert running.daemon.wait_idle(30)
        (root / "red one.mp4").unlink()  # the watcher forgets it; the index follows
        wait_for(lambda: get(port, "/api/search?q=red")[0]["path"] != str(root / "red one.mp4"))
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")  # stopped with the daemon


def test_autotag_serve_runs_until_sigterm_and_reports_a_stopped_daemon(tmp_path, model_dir,
                                                                         run_once):
    root = tmp_path / "clips"
    root.mkdir()
    write_video(root / "red.mp4", [(RED, 3)])
    config = write_daemon_config(tmp_path, model_dir)
    assert run_once(config, root) == 0
    proc, port = serve_process(config, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                tags = get(port, "/api/tags")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert {t["label"]: t["count"] for t in tags} == {"red": 1, "green": 0}
        assert get(port, "/api/status")["daemon"]["state"] == "not running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "serving 1 clips at http://127.0.0.1:" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_daemon_that_may_not_or_cannot_serve_stops_at_startup_with_one_line(tmp_path,
                                                                            model_dir, capsys):
    from autotag import cli

    root = tmp_path / "watched"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir)
    base = config.read_text()
    config.write_text(base + "serve: {listen: '0.0.0.0:8765'}\n")
    assert cli.main(["--config", str(config), str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "serve.token_file" in err[0], err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config.write_text(base + f"serve: {{listen: '127.0.0.1:{busy.getsockname()[1]}'}}\n")
        assert cli.main(["--config", str(config), str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot listen" in err[0] and "serve.listen" in err[0], err
