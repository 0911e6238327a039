"""`autotag --once` end to end on generated clips with the test model (colour and motion)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.app import open_app
from autotag.config import load_config
from tests.clips import BLUE, GREEN, RED, write_gif, write_video
from tests.helpers import SCHEMA, CountingEmbedder, sidecar, write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def library(tmp_path, model_dir):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    write_video(clips / "red.mp4", [(RED, 4)])
    write_gif(clips / "sub" / "green.gif", [(GREEN, 2)], delay_ms=100)
    # 8 s of red, then 24 s of blue: the clip is about the blue, and says when the red was
    write_video(clips / "changes.mp4", [(RED, 8), (BLUE, 24)])
    write_video(clips / ".hidden.mp4", [(RED, 1)])
    return clips, write_config(tmp_path, model_dir)


def test_right_tags_segments_and_outputs(library, run_once):
    clips, config = library
    assert run_once(config, clips) == 0
    assert sidecar(clips / "red.mp4")["top"] == "red"
    assert sidecar(clips / "sub" / "green.gif")["top"] == "green"
    changes = sidecar(clips / "changes.mp4")
    assert changes["top"] == "sea"
    assert changes["duration"] == pytest.approx(32, abs=0.2)
    assert len(changes["windows"]) == 8
    assert changes["windows"][-1]["end"] == pytest.approx(32, abs=0.3)  # sampled to the end
    sea = next(t for t in changes["tags"] if t["label"] == "sea")
    assert sea["segments"][0]["start"] >= 5.0  # the blue starts at 8 s
    assert sea["segments"][-1]["end"] == pytest.approx(32, abs=0.3)
    red = next(t for t in changes["ranking"] if t["label"] == "red")
    assert red["segments"][0]["start"] == 0.0 and red["segments"][0]["end"] <= 11.0
    assert not Path(f"{clips / '.hidden.mp4'}.autotag.json").exists()
    log_lines = (config.parent / "matches.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["label"] for line in log_lines) == ["green", "red", "sea"]
    assert len(list((config.parent / "previews").glob("*.jpg"))) == 3


def test_a_path_typed_with_dots_is_recorded_in_one_absolute_form(library, monkeypatch, capsys, run_once):
    clips, config = library
    work = clips.parent / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert run_once(config, Path("..") / "clips") == 0
    assert sidecar(clips / "red.mp4")["source"]["path"] == str(clips / "red.mp4")
    assert run_once(config, clips) == 0  # the same clips: all up to date, nothing doubled
    lines = (config.parent / "matches.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(".." not in json.loads(x)["path"] for x in lines)


def test_sidecars_validate_against_the_schema(library, run_once):
    jsonschema = pytest.importorskip("jsonschema")
    clips, config = library
    assert run_once(config, clips) == 0
    schema = json.loads(SCHEMA.read_text())
    for path in clips.rglob("*.autotag.json"):
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_second_run_skips_up_to_date_clips_and_force_redoes_them(library, run_once):
    clips, config = library
    assert run_once(config, clips) == 0
    before = {p: p.stat().st_mtime_ns for p in clips.rglob("*.autotag.json")}
    log_before = (config.parent / "matches.jsonl").read_text()
    assert run_once(config, clips) == 0
    assert {p: p.stat().st_mtime_ns for p in clips.rglob("*.autotag.json")} == before
    assert (config.parent / "matches.jsonl").read_text() == log_before
    assert run_once(config, clips, extra=["--force"]) == 0
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())


def test_force_decodes_again_so_new_sampling_settings_apply(library, run_once):
    clips, config = library
    assert run_once(config, clips) == 0
    assert len(sidecar(clips / "changes.mp4")["windows"]) == 8
    config.write_text(config.read_text() + "sampling: {max_windows: 2}\n")
    assert run_once(config, clips / "changes.mp4", extra=["--force"]) == 0
    assert len(sidecar(clips / "changes.mp4")["windows"]) == 2


def test_a_clip_whose_xmp_cannot_be_merged_is_reported_on_every_run(library, capsys, run_once):
    clips, config = library
    config.write_text(config.read_text().replace("outputs: {", "outputs: {xmp: true, "))
    (clips / "red.mp4.xmp").write_text("<x:xmpmeta><unclosed>")  # the user's, broken
    for _ in range(2):  # not "up to date" the second time: it is named again
        capsys.readouterr()
        assert run_once(config, clips) == 1
        err = capsys.readouterr().err
        assert "red.mp4" in err and "left untouched" in err
    assert (clips / "red.mp4.xmp").read_text() == "<x:xmpmeta><unclosed>"


def test_copy_is_tagged_from_stored_embeddings_and_batches_span_clips(library, embedder):
    clips, config_path = library
    config = load_config(config_path)
    counting = CountingEmbedder(embedder)
    app = open_app(config, embedder=counting)
    results = list(app.tag(sorted(p for p in clips.rglob("*") if p.suffix in {".mp4", ".gif"}
                                  and not p.name.startswith("."))))
    assert {r.status for r in results} == {"tagged"}
    assert max(counting.batches) == 8 and sum(counting.batches) == 8 + 2 + 1
    assert len(counting.batches) == 2  # 11 windows from three clips: one full batch, one rest
    shutil.copy(clips / "red.mp4", clips / "copy of red.mp4")
    calls = len(counting.batches)
    (result,) = app.tag([clips / "copy of red.mp4"])
    assert (result.status, result.tags[0].label) == ("reused", "red")
    assert len(counting.batches) == calls
    assert sidecar(clips / "copy of red.mp4")["top"] == "red"
    app.close()


def test_a_bad_file_fails_alone_with_exit_1(library, capsys, run_once):
    clips, config = library
    (clips / "broken.mp4").write_bytes(b"this is not a video" * 100)
    assert run_once(config, clips) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "Traceback" not in err
    assert sidecar(clips / "red.mp4")["top"] == "red"
    assert not Path(f"{clips / 'broken.mp4'}.autotag.json").exists()


def test_model_failure_fails_only_the_culprit(library, embedder):
    clips, config_path = library

    class NanOnBlue(CountingEmbedder):
        def embed_video(self, frames):
            out = super().embed_video(frames)
            if (frames[..., 2].mean(axis=(1, 2, 3)) > 0.5).any():
                out = out.copy()
                out[:] = np.nan
            return out

    app = open_app(load_config(config_path), embedder=NanOnBlue(embedder))
    results = {r.path.name: r for r in app.tag(
        [clips / "red.mp4", clips / "changes.mp4", clips / "sub" / "green.gif"])}
    assert results["changes.mp4"].status == "failed"
    assert "NaN" in results["changes.mp4"].reason
    assert results["red.mp4"].status == results["green.gif"].status == "tagged"
    app.close()


def test_usage_and_config_errors_exit_2_in_one_line(tmp_path, capsys):
    bad = tmp_path / "config.yaml"
    bad.write_text("vocabulary: [x]\nmodel: {batchsize: 3}\n")
    assert cli.main(["--once", "--config", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.batchsize" in err
    assert cli.main(["--once", "--config", str(tmp_path / "nope.yaml"), str(tmp_path)]) == 2


def test_autotag_once_as_a_subprocess(library):
    clips, config = library
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "autotag", "--once", "--config", str(config),
                           str(clips)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sidecar(clips / "red.mp4")["top"] == "red"
    assert "Traceback" not in done.stderr
    again = subprocess.run([sys.executable, "-m", "autotag", "--once", "--config", str(config),
                            str(clips)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "3 up to date" in again.stderr


def test_help_does_not_import_tensorflow():
    code = ("import sys, autotag.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--once" in done.stdout


def test_mistakes_on_the_command_line_exit_2(tmp_path, model_dir, capsys):
    config = write_config(tmp_path, model_dir)
    assert cli.main(["--config", str(config), "frobnicate"]) == 2  # not a daemon on a typo
    assert "frobnicate is not a folder" in capsys.readouterr().err
    assert cli.main(["search", "--config", str(config), "--sheet",
                     str(tmp_path / "nowhere" / "x.png"), "red"]) == 2
    assert "does not exist" in capsys.readouterr().err
