"""Issue 2's finish line: real clips in the containers people have, plus generated ones, through
`autotag --once`; a second run writes nothing; a long clip is tagged for what fills it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.clips import CODECS, GREEN, RED, ffmpeg, needs_ffmpeg, write_gif, write_video
from tests.helpers import SCHEMA, sidecar, write_config


def outputs_state(folder: Path) -> dict[Path, int]:
    """Every output autotag may write (all but the state store), with its mtime."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and ".sqlite3" not in p.name}


@needs_ffmpeg
def test_real_and_generated_clips_each_get_a_valid_sidecar_log_line_and_preview(
        tmp_path, model_dir, real_clips, run_once):  # noqa: F811 - the fixture
    jsonschema = pytest.importorskip("jsonschema")
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, path in real_clips.items():
        shutil.copy(path, clips / name)
    write_video(clips / "generated.mp4", [(RED, 3)])
    write_gif(clips / "generated.gif", [(GREEN, 2)])
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    names = sorted(p.name for p in clips.iterdir() if not p.name.endswith(".autotag.json"))
    assert len(names) == len(CODECS) + 3
    schema = json.loads(SCHEMA.read_text())
    for name in names:
        data = sidecar(clips / name)
        jsonschema.validate(data, schema)
        assert Path(data["preview"]).is_file(), name
    lines = (tmp_path / "matches.jsonl").read_text().splitlines()
    assert sorted(Path(json.loads(line)["path"]).name for line in lines) == names
    assert sidecar(clips / "generated.mp4")["top"] == "red"
    before = outputs_state(tmp_path)
    assert run_once(config, clips) == 0
    assert outputs_state(tmp_path) == before  # nothing rewritten, no log line appended


@needs_ffmpeg
def test_twenty_seconds_then_nine_minutes_is_tagged_for_the_nine_minutes(tmp_path, model_dir, run_once):
    clips = tmp_path / "clips"
    clips.mkdir()
    path = clips / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:r=5:d=20", "-f", "lavfi",
           "-i", "color=c=blue:s=32x32:r=5:d=540", "-filter_complex", "[0][1]concat=n=2:v=1",
           "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", str(path))
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    data = sidecar(path)
    assert data["top"] == "sea" and data["duration"] == pytest.approx(560, abs=1)
    sea = next(t for t in data["tags"] if t["label"] == "sea")
    assert sea["segments"][0]["start"] >= 20 - 3.2  # the blue starts at 20 s ...
    assert sea["segments"][-1]["end"] == pytest.approx(560, abs=1)  # ... and lasts to the end
    red = next(t for t in data["ranking"] if t["label"] == "red")
    assert red["segments"][0]["start"] == 0.0 and red["segments"][-1]["end"] <= 20 + 3.2
