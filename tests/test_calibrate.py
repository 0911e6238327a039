"""`autotag calibrate`: per-tag thresholds for a target precision, the temperature, and writing
them into the config with its comments kept. The labelled layout and its hand-computed scores
are tests/labelled.py's (see its docstring)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil

import numpy as np
import pytest
import yaml

from autotag import cli
from autotag.analysis.calibration import calibrate, fit_temperature, nll, precision_threshold
from autotag.analysis.config_editor import CannotEdit, edited_config, set_tagging, snippet
from autotag.analysis.metrics import clip_scores, given_tags
from autotag.config import load_config
from autotag.vocabulary import build_vocabulary
from tests.clips import BLUE, GREEN, RED, write_gif, write_video
from tests.labelled import CONFIG, build_labelled, embed_labelled, write_config


def scored(root, config, embedder, cache):
    data = embed_labelled(root, config, embedder)
    return data, clip_scores(data.embeddings, build_vocabulary(config.vocabulary, embedder,
                                                          cache).vectors)


def test_thresholds_reach_the_target_precision_on_the_calibration_set(labelled, embedder,
                                                                      tmp_path):
    root, config_path = labelled
    config = load_config(config_path)
    data, scores = scored(root, config, embedder, tmp_path / "cache")
    # minimum=1: the rule itself, on clips too few for the CLI's guard (MIN_REVIEWS; its own
    # test is in test_calibrate_reviews.py)
    result = calibrate(data, scores, config, target=0.9, minimum=1)
    # each threshold lies between the lowest score that keeps precision >= 0.9 and the next
    # lower score: red (10.0 | purple 7.1), green (10.0 | sky.gif -1.1), sea (20 | sky.gif 10.2),
    # sky (sky.gif 5.1 | purple 0.9)
    assert result.thresholds == {"red": 8.5, "green": 4.4, "sea": 15.0, "sky": 3.0}
    assert {t.label: t.recall for t in result.tags} == {"red": 0.5, "green": 1.0, "sea": 0.5,
                                                        "sky": 1.0}
    tagging = dataclasses.replace(config.tagging, thresholds=result.thresholds)
    given = given_tags(scores, data.labels, tagging)  # what tagging now gives
    truth = data.truth
    for j, label in enumerate(data.labels):
        if label in result.thresholds:
            assert (given[:, j] & truth[:, j]).sum() >= 0.9 * given[:, j].sum(), label
    assert result.nll_after < result.nll_before


def test_precision_threshold_picks_the_most_recall_the_target_allows():
    scores = np.array([9.0, 7.0, 5.0, 1.0])
    positive = np.array([True, True, False, True])
    threshold, precision, recall, _ = precision_threshold(scores, positive, 0.9)
    assert (threshold, precision, recall) == (6.0, 1.0, pytest.approx(2 / 3))
    # 0.75 is reached with every clip tagged: the threshold is just below the lowest score
    threshold, precision, recall, _ = precision_threshold(scores, positive, 0.75)
    assert threshold <= 1.0 and (precision, recall) == (0.75, 1.0)
    # a negative above every positive: 0.9 is out of reach; the best point is reported
    threshold, precision, recall, at = precision_threshold(np.array([5.0, 4.0, 3.0]),
                                                           np.array([False, True, True]), 0.9)
    assert threshold is None and precision == pytest.approx(2 / 3) and at == 3.0


def test_temperature_recovers_the_one_that_generated_the_labels():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (4000, 5))
    p = np.exp(logits / 2.0)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    truth = np.zeros_like(logits, bool)
    truth[np.arange(len(labels)), labels] = True
    t = fit_temperature(logits, truth)
    assert t == pytest.approx(2.0, rel=0.1)
    assert nll(logits, truth, t) <= min(nll(logits, truth, t * 1.05), nll(logits, truth, t / 1.05))


def diff_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


def build_labelled_x5(root):
    """tests/labelled.py's layout with each clip five times over, as distinct content of the
    same colour (and so the same scores): every tag has MIN_REVIEWS clips and more of other
    tags, and each point of each precision-recall curve, so each threshold, is the same."""
    build_labelled(root)
    for i in range(1, 5):
        seconds = 2 + 0.1 * i  # another length: another file, the same mean colour
        write_video(root / "red" / f"red{i}.mp4", [(RED, seconds)])
        write_gif(root / "red" / f"darkred{i}.gif", [((150, 0, 0), seconds)])
        write_video(root / "Green" / f"green{i}.mp4", [(GREEN, seconds)])
        write_video(root / "sea" / f"blue{i}.mp4", [(BLUE, seconds)])
        write_gif(root / "sea" / f"purple{i}.gif", [((255, 0, 150), seconds)])
        write_gif(root / "sky" / f"sky{i}.gif", [((100, 150, 255), seconds)])
        os.symlink(f"../sea/blue{i}.mp4", root / "sky" / f"blue{i}.mp4")
    return root


@pytest.fixture
def labelled_x5(tmp_path, model_dir):
    return build_labelled_x5(tmp_path / "labelled"), write_config(tmp_path, model_dir)


def test_cli_calibrate_write_keeps_the_rest_of_the_config_and_tagging_uses_it(
        labelled_x5, embedder, tmp_path, capsys):
    root, config_path = labelled_x5
    before_text = config_path.read_text()
    before = load_config(config_path)
    assert cli.main(["calibrate", "--config", str(config_path), str(root)],
                    embedder=embedder) == 0
    out = capsys.readouterr().out
    assert "temperature:" in out and "    red: 8.5" in out  # printed, for pasting
    assert config_path.read_text() == before_text  # nothing written without --write

    assert cli.main(["calibrate", "--write", "--config", str(config_path), str(root)],
                    embedder=embedder) == 0
    after_text = config_path.read_text()
    removed, added = diff_lines(before_text, after_text)
    assert [line.split("#")[0].strip() for line in removed] == ["temperature: 1.0",
                                                                "thresholds: {}"]
    assert added[0].startswith("  temperature: ") and added[0].endswith("# softmax temperature")
    assert added[1] == "  thresholds:                # per-tag min_score (autotag calibrate)"
    assert added[2:] == ["    red: 8.5", "    green: 4.4", "    sea: 15.0", "    sky: 3.0"]
    assert "# a comment continued on a second line" in after_text
    after = load_config(config_path)
    assert after.tagging.thresholds == {"red": 8.5, "green": 4.4, "sea": 15.0, "sky": 3.0}
    assert after.tagging.temperature != 1.0
    assert (after.tagging.top_k, after.tagging.min_score) == (2, 3.0)
    assert (after.vocabulary, after.model, after.state, after.outputs) == (
        before.vocabulary, before.model, before.state, before.outputs)

    # tagging uses the thresholds: darkred.gif (red 5.9) was tagged red at min_score 3, not now
    clips = tmp_path / "to-tag"
    clips.mkdir()
    shutil.copy(root / "red" / "darkred.gif", clips)
    shutil.copy(root / "red" / "red.mp4", clips)
    assert cli.main(["--once", "--config", str(config_path), str(clips)], embedder=embedder) == 0
    tags = {p.name: [t["label"] for t in json.loads(
        (clips / f"{p.name}.autotag.json").read_text())["tags"]]
        for p in clips.iterdir() if not p.name.endswith(".json")}
    assert tags == {"darkred.gif": [], "red.mp4": ["red"]}


def test_calibrate_write_refuses_a_layout_it_cannot_edit_and_says_what_to_paste(
        tmp_path, model_dir, capsys):
    """The model loads from the config's model.handle, as users run it (no embedder passed)."""
    root = build_labelled_x5(tmp_path / "labelled")
    text = CONFIG.replace("tagging:\n", "tagging: &tagging\n")
    config_path = write_config(tmp_path, model_dir, text)
    before = config_path.read_text()
    assert cli.main(["calibrate", "--write", "--config", str(config_path), str(root)]) == 1
    err = capsys.readouterr().err
    assert "not writing" in err and "by hand" in err and "red: 8.5" in err
    assert config_path.read_text() == before
    assert cli.main(["calibrate", "--write", "--model", str(model_dir), "--config",
                     str(config_path), str(root)]) == 2


BLOCK = ("a: 1\ntagging:\n  top_k: 3\n  thresholds:   # mine\n    x: 1  # old note\n    y: 2\n"
         "  min_score: 2.0\nstate: {}\n")


@pytest.mark.parametrize(("text", "expected"), [
    # a block with thresholds in the middle: replaced in place; a missing temperature appended
    (BLOCK, ("a: 1\ntagging:\n  top_k: 3\n  thresholds:   # mine\n    x: 1.5\n"
             "  min_score: 2.0\n  temperature: 0.5\nstate: {}\n")),
    # flow style: rewritten as a block, its values kept
    ("tagging: {top_k: 2, min_score: 3.0}  # note\nb: 2\n",
     ("tagging:  # note\n  top_k: 2\n  min_score: 3.0\n  temperature: 0.5\n  thresholds:\n"
      "    x: 1.5\nb: 2\n")),
    # no tagging section: appended
    ("vocabulary: [x]", ("vocabulary: [x]\ntagging:\n  temperature: 0.5\n  thresholds:\n"
                         "    x: 1.5\n")),
    # Windows line ends stay Windows line ends
    ("tagging:\r\n  temperature: 1.0\r\n", ("tagging:\r\n  temperature: 0.5\r\n"
                                             "  thresholds:\r\n    x: 1.5\r\n")),
])
def test_set_tagging_edits_only_its_two_keys(text, expected):
    values = {"temperature": 0.5, "thresholds": {"x": 1.5}}
    assert set_tagging(text, values) == expected
    loaded = yaml.safe_load(expected)
    assert loaded["tagging"]["thresholds"] == {"x": 1.5}


def test_edited_config_checks_the_result(tmp_path, model_dir):
    path = tmp_path / "config.yaml"
    path.write_text("vocabulary: [x, 'yes']\ntagging:\n  temperature: [1\n")
    with pytest.raises(CannotEdit, match="not valid YAML"):
        edited_config(path, {"x": 1.0}, 1.0)
    path.write_text("vocabulary: [x, 'yes']\n")
    with pytest.raises(CannotEdit, match="not be a valid config"):
        edited_config(path, {"nope": 1.0}, 1.0)  # a tag not in the vocabulary
    text = edited_config(path, {"x": 1.0, "yes": 2.0}, 1.0)
    assert "'yes': 2.0" in text  # quoted where YAML needs it
    assert snippet({"yes": 2.0}, 1.5) == "  temperature: 1.5\n  thresholds:\n    'yes': 2.0\n"


def test_a_tag_whose_target_is_out_of_reach_keeps_its_threshold(tmp_path):
    from autotag.analysis.calibration import Calibration, TagThreshold, merged_thresholds
    from autotag.config import parse_config

    config = parse_config("vocabulary: [red, green, blue]\ntagging: {thresholds: {green: 1.0}}\n",
                          base=tmp_path)
    tags = (TagThreshold("red", 2, 4, 8.5, 1.0, 0.5, 10.0, 3.0),
            TagThreshold("green", 2, 4, None, 0.6, 1.0, 2.0, 1.0))
    calibration = Calibration(0.9, tags, 2.0, 1.0, 0.5, 6)
    assert calibration.thresholds == {"red": 8.5}
    assert merged_thresholds(config, calibration) == {"red": 8.5, "green": 1.0}


def test_the_editor_can_leave_the_temperature_alone(tmp_path, model_dir):
    """calibrate --from-reviews sets thresholds only: the temperature line stays as it was."""
    path = write_config(tmp_path, model_dir)
    before = path.read_text()
    text = edited_config(path, {"red": 5.5}, None)
    removed, added = diff_lines(before, text)
    assert [line.split("#")[0].strip() for line in removed] == ["thresholds: {}"]
    assert added == ["  thresholds:                # per-tag min_score (autotag calibrate)",
                     "    red: 5.5"]
    assert snippet({"red": 5.5}, None) == "  thresholds:\n    red: 5.5\n"
