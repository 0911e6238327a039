"""Reviews win: a rejected tag stays off a clip's every output, a confirmed one stays on, through
retag, --force, a rename and a reload; by content, so copies follow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from autotag import cli
from tests.clips import GREEN, RED, write_video
from tests.helpers import Running, log_lines, sidecar, wait_for, write_config

SCHEMA = json.loads((Path(__file__).parents[1] / "autotag" / "schemas" /
                     "sidecar.schema.json").read_text())


def labels(clip: Path) -> list[str]:
    data = sidecar(clip)
    jsonschema.validate(data, SCHEMA)
    return [t["label"] for t in data["tags"]]


@pytest.fixture
def library(tmp_path, model_dir, run_once):
    clips = tmp_path / "clips"
    clips.mkdir()
    red = write_video(clips / "red.mp4", [(RED, 4)])
    mixed = write_video(clips / "mixed.mp4", [(RED, 8), (GREEN, 2)])
    config = write_config(tmp_path, model_dir, "outputs: {log: matches.jsonl, previews: previews, "
                                               "xmp: true, nfo: true}\n")
    assert run_once(config, clips) == 0
    return config, clips, red, mixed


def review(config, embedder, *args) -> int:
    return cli.main(["review", "--config", str(config), *map(str, args)], embedder=embedder)


def test_a_rejected_tag_leaves_every_output_at_once_and_stays_off(library, embedder, run_once):
    config, clips, red, _ = library
    assert labels(red) == ["red"]
    xmp, nfo = clips / "red.mp4.xmp", clips / "red.nfo"
    assert "Activity|red" in xmp.read_text() and "<tag>red</tag>" in nfo.read_text()
    lines = len(log_lines(config))
    assert review(config, embedder, red, "--reject", "red") == 0
    assert labels(red) == [] and sidecar(red)["reviews"] == {"confirmed": [], "rejected": ["red"]}
    assert "Activity|red" not in xmp.read_text() and ">red<" not in xmp.read_text()
    assert "<tag>red</tag>" not in nfo.read_text()
    assert len(log_lines(config)) == lines + 1 and log_lines(config)[-1].get("top") is None
    assert cli.main(["retag", "--config", str(config)], embedder=embedder) == 0
    assert labels(red) == []
    assert run_once(config, clips, extra=["--force"]) == 0
    assert labels(red) == []
    moved = red.rename(clips / "renamed red.mp4")  # the review follows the content
    assert run_once(config, clips) == 0
    assert labels(moved) == [] and sidecar(moved)["reviews"]["rejected"] == ["red"]
    copy = shutil.copy2(moved, clips / "copy of red.mp4")
    assert run_once(config, clips) == 0
    assert labels(Path(copy)) == []


def test_a_confirmed_tag_under_its_threshold_is_written_and_clear_undoes_it(library, embedder):
    config, _, _, mixed = library
    ranking = {t["label"]: t["score"] for t in sidecar(mixed)["ranking"]}
    assert "green" not in labels(mixed) and ranking["green"] < 3.0
    assert review(config, embedder, mixed, "--confirm", "green") == 0
    data = sidecar(mixed)
    assert labels(mixed) == ["red", "green"]
    assert data["tags"][1]["review"] == "confirmed" and data["reviews"]["confirmed"] == ["green"]
    assert "<tag>green</tag>" in mixed.with_suffix(".nfo").read_text()
    assert review(config, embedder, mixed, "--clear", "green") == 0
    assert labels(mixed) == ["red"] and sidecar(mixed)["reviews"]["confirmed"] == []


def test_review_refuses_unknown_tags_and_untagged_clips_in_one_line(library, embedder, capsys,
                                                                    tmp_path):
    config, _, red, _ = library
    assert review(config, embedder, red, "--reject", "purple") == 2
    assert "'purple' is not a tag" in capsys.readouterr().err
    assert review(config, embedder, red, "--reject", "red", "--confirm", "red") == 2
    stranger = write_video(tmp_path / "stranger.mp4", [(RED, 2)])
    assert review(config, embedder, stranger, "--reject", "red") == 1
    assert "not tagged yet" in capsys.readouterr().err


def test_a_review_holds_through_the_daemons_reload(tmp_path, model_dir, embedder):
    root = tmp_path / "watched"
    root.mkdir()
    config = write_config(tmp_path, model_dir, "watch: {stability_seconds: 0.3, "
                                               "rescan_seconds: 0}\n")
    with Running(config, root, embedder) as running:
        clip = write_video(root / "red.mp4", [(RED, 3)])
        wait_for(lambda: len(running.results) == 1)
        assert review(config, embedder, clip, "--reject", "red") == 0
        config.write_text(config.read_text().replace("vocabulary: [red, green,",
                                                     "vocabulary: [red, green, purple,"))
        running.daemon.request_reload()  # a new vocabulary: every clip re-tagged
        wait_for(lambda: len(running.results) == 2)
        assert "red" not in {t.label for t in running.results[-1].tags}
    assert labels(clip) == [] and sidecar(clip)["reviews"]["rejected"] == ["red"]


def test_a_rejected_tag_stays_off_through_backfill(library, embedder):
    config, clips, red, _ = library
    assert review(config, embedder, red, "--reject", "red") == 0
    moved = red.rename(clips / "moved red.mp4")  # stored content: backfill tags it without Ray
    assert cli.main(["backfill", "--config", str(config), str(clips)], embedder=embedder) == 0
    assert labels(moved) == [] and sidecar(moved)["reviews"]["rejected"] == ["red"]
