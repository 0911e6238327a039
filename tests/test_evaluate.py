"""`autotag eval` on a labelled folder of generated clips, scored by the test model.

Every expected figure here is computed by hand from the clip scores in tests/labelled.py's
docstring (the layout and the test model's colour scores).
"""

from __future__ import annotations

import base64
import html.parser
import json
import re

import cv2
import numpy as np
import pytest

from autotag import cli
from autotag.analysis.evaluation import embed_prompts, evaluate, prompt_sets, set_vectors
from autotag.analysis.labelling import EvalError, fold_name, load_labelled, match_folders
from autotag.analysis.metrics import average_precision, given_tags, top_k_accuracy
from autotag.clip import Window
from autotag.config import TaggingConfig, VocabEntry, load_config
from autotag.engine import Engine
from autotag.scoring import tag_scores
from autotag.store import Store
from autotag.vocabulary import build_vocabulary
from tests.labelled import embed_labelled, write_config


class CountingEmbedder:
    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.windows = 0

    def embed_video(self, frames):
        self.windows += len(frames)
        return self.inner.embed_video(frames)

    def embed_text(self, texts):
        return self.inner.embed_text(texts)


def run_evaluation(labelled, embedder, tmp_path):
    root, config_path = labelled
    config = load_config(config_path)
    data = embed_labelled(root, config, embedder)
    table = embed_prompts(prompt_sets(config.vocabulary), embedder, tmp_path / "cache")
    return evaluate(data, config.vocabulary, table, config.tagging)


def test_accuracy_ap_and_precision_match_hand_computed_values(labelled, embedder, tmp_path):
    ev = run_evaluation(labelled, embedder, tmp_path)
    clips = {c.path.name: c for c in ev.labelled.clips}
    assert sorted(clips) == ["blue.mp4", "darkred.gif", "green.mp4", "purple.gif", "red.mp4",
                             "sky.gif"]
    assert clips["blue.mp4"].labels == {"sea", "sky"}  # the symlink: one clip, both tags
    assert ev.labelled.folders == {"Green": "green", "red": "red", "sea": "sea", "sky": "sky"}
    assert ev.labelled.unmatched == ("cats",)
    assert ev.top1 == pytest.approx(4 / 6)
    assert top_k_accuracy(ev.scores, ev.labelled.truth, 2) == pytest.approx(1.0)
    assert ev.k == 5 and ev.topk == 1.0
    ap = {t.label: t.ap for t in ev.tags}
    # red: red.mp4 (right), purple.gif (wrong), darkred.gif (right) → (1/1 + 2/3) / 2
    assert ap == pytest.approx({"red": 5 / 6, "green": 1.0, "sea": 5 / 6, "sky": 1.0})
    assert ev.map == pytest.approx(11 / 12)
    assert "bright" not in ap  # a tag without clips has no AP, and is not in the mean
    # given with top_k 2, min_score 3: red → red.mp4, darkred, purple; sea, sky → blue, sky.gif
    figures = {t.label: (t.given, t.correct, t.clips) for t in ev.tags}
    assert figures == {"red": (3, 2, 2), "green": (1, 1, 1), "sea": (2, 1, 2), "sky": (2, 2, 2)}
    red = ev.tags[0]
    assert (red.precision, red.recall) == (pytest.approx(2 / 3), 1.0)
    configured = ev.tags[[t.label for t in ev.tags].index("sea")]
    assert configured.prompt_ap == pytest.approx({"blue water": 5 / 6, "blue sky": 5 / 6})


def test_the_confusable_pair_is_in_the_confusion_list(labelled, embedder, tmp_path):
    ev = run_evaluation(labelled, embedder, tmp_path)
    pairs = {(c.true, c.predicted): (c.clips, c.share) for c in ev.confusions}
    assert pairs == {("sky", "sea"): (1, 0.5), ("sea", "red"): (1, 0.5)}
    rows, cols, counts = ev.matrix
    assert rows == cols == ("red", "green", "sea", "sky")
    assert counts.tolist() == [[2, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]]


def test_prompt_sets_are_compared_side_by_side(labelled, embedder, tmp_path):
    ev = run_evaluation(labelled, embedder, tmp_path)
    sets = {s.name: s for s in ev.sets}
    assert list(sets) == ["name", "configured", "templates"]
    # "sea" is no word of the model: as a bare name it scores 0 everywhere, all clips tie,
    # and AP is the share of its clips, 2/6; but sky.gif now goes to "sky": top-1 is 5/6
    assert "sea" in sets["name"].unknown
    assert sets["name"].ap["sea"] == pytest.approx(1 / 3)
    assert sets["name"].top1 == pytest.approx(5 / 6)
    assert sets["name"].map == pytest.approx((5 / 6 + 1 + 1 / 3 + 1) / 4)
    assert sets["configured"].map == pytest.approx(11 / 12)
    assert sets["templates"].prompts[0] == ("red", "a person red", "someone red", "people red")


def test_configured_vectors_are_the_vocabularys(embedder, tmp_path):
    entries = (VocabEntry("red", ("red",)), VocabEntry("sea", ("Blue water", "blue sky")))
    table = embed_prompts(prompt_sets(entries), embedder, tmp_path)
    vocab = build_vocabulary(entries, embedder, tmp_path)
    np.testing.assert_allclose(set_vectors(prompt_sets(entries)["configured"], table),
                               vocab.vectors, rtol=1e-6)


def test_average_precision_is_scikit_learns():
    # scikit-learn's documented example, and a tie: one threshold for all three tied clips
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]),
                             np.array([0, 0, 1, 1], bool)) == pytest.approx(0.8333, abs=1e-4)
    assert average_precision(np.array([0.5, 0.5, 0.5, 0.1]),
                             np.array([1, 0, 1, 0], bool)) == pytest.approx(2 / 3)
    assert np.isnan(average_precision(np.array([1.0, 2.0]), np.array([0, 0], bool)))


def test_given_tags_follow_tagging_rules():
    rng = np.random.default_rng(7)
    labels = [f"t{i}" for i in range(6)]
    tagging = TaggingConfig(top_k=2, min_score=0.5, thresholds={"t0": 1.5, "t3": -0.5})
    scores = rng.normal(0, 1, (300, 6)).astype(np.float32)
    scores[:, 4] = scores[:, 5]  # ties go to the earlier tag, as in tagging
    given = given_tags(scores, labels, tagging)
    for i in range(len(scores)):
        tags, _ = tag_scores(scores[i][None, :], [Window(0, 1)], labels, tagging)
        assert {labels[j] for j in np.flatnonzero(given[i])} == {t.label for t in tags}


def test_folder_names_match_tags_loosely(tmp_path):
    assert fold_name("ApplyEyeMakeup") == fold_name("apply eye makeup")
    assert fold_name("brush_hair") == fold_name("Brush Hair")
    for name in ("PlayingGuitar", "skiing", "other", ".hidden"):
        (tmp_path / name).mkdir()
    assert match_folders(tmp_path, ["playing guitar", "skiing"]) == (
        {"PlayingGuitar": "playing guitar", "skiing": "skiing"}, ("other",))
    with pytest.raises(EvalError, match="same subfolder"):
        match_folders(tmp_path, ["ice-skating", "ice skating"])


def test_stored_embeddings_are_reused_and_nothing_is_written_beside_clips(labelled, embedder,
                                                                         tmp_path):
    root, config_path = labelled
    before = sorted(p for p in root.rglob("*"))
    counting = CountingEmbedder(embedder)
    config = load_config(config_path)
    store = Store(config.state.store_path)
    try:
        first = load_labelled(root, Engine(config, counting, store))
        assert counting.windows == 6  # six distinct clips of one window each
        again = load_labelled(root, Engine(config, counting, store))
        assert counting.windows == 6  # all from the store
        assert store.files() == []  # eval tags nothing: the files table stays as it was
    finally:
        store.close()
    for a, b in zip(first.clips, again.clips, strict=True):
        np.testing.assert_array_equal(a.embedding, b.embedding)
    assert sorted(p for p in root.rglob("*")) == before


class _Resources(html.parser.HTMLParser):
    """Every tag and every attribute that can load something."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]


def test_cli_eval_prints_tables_json_and_a_self_contained_report(labelled, embedder, tmp_path,
                                                                  capsys):
    root, config = labelled
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()
    assert cli.main(["eval", "--config", str(config), "--report", str(report), str(root)],
                    embedder=embedder) == 0
    out = capsys.readouterr().out
    assert "top-1 66.7%" in out and "mAP 0.917" in out
    assert re.search(r"sky\s+│\s+sea\s+│\s+1", out)  # the confusion table
    assert "the model knows no word of 'sea'" in out

    page = report.read_text(encoding="utf-8")
    parser = _Resources()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags
    assert all(u.startswith(("data:", "#")) for u in parser.urls), parser.urls
    assert "url(" not in page and "@import" not in page
    images = [u for u in parser.urls if u.startswith("data:image/")]
    decoded = [cv2.imdecode(np.frombuffer(base64.b64decode(u.split(",", 1)[1]), np.uint8),
                            cv2.IMREAD_COLOR) for u in images]
    assert all(im is not None and im.size for im in decoded)
    assert len(set(images)) == 1 + 6  # the confusion matrix and each clip's frames
    assert "<figure>" in page and "taken for <b>red</b>" in page
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]  # one file

    assert cli.main(["eval", "--config", str(config), "--json", str(root)],
                    embedder=embedder) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["clips"], data["top1"], data["map"]) == (6, 0.6667, 0.9167)
    assert data["unmatched_folders"] == ["cats"]
    assert {"true": "sky", "predicted": "sea", "clips": 1, "share": 0.5} in data["confusions"]
    assert [s["name"] for s in data["prompt_sets"]] == ["name", "configured", "templates"]


def test_cli_eval_a_broken_clip_is_named_and_exits_1(labelled, embedder, capsys):
    root, config = labelled
    (root / "red" / "broken.mp4").write_bytes(b"not a video" * 50)
    assert cli.main(["eval", "--config", str(config), "--json", str(root)],
                    embedder=embedder) == 1
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err and "Traceback" not in captured.err
    data = json.loads(captured.out)
    assert data["clips"] == 6 and data["failed"][0]["path"].endswith("broken.mp4")


def test_cli_eval_usage_errors_exit_2_in_one_line(tmp_path, model_dir, capsys):
    config = write_config(tmp_path, model_dir)
    (tmp_path / "empty" / "unrelated").mkdir(parents=True)
    cases = [[str(tmp_path / "missing")], [str(tmp_path / "empty")],
             ["--report", str(tmp_path / "no" / "such" / "r.html"), str(tmp_path / "empty")],
             ["--template", "no placeholder", str(tmp_path / "empty")]]
    for args in cases:
        assert cli.main(["eval", "--config", str(config), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("autotag: error:") and err.count("\n") == 0, err


def test_cli_eval_again_reuses_everything_and_never_loads_the_model(labelled, capsys):
    """The model loads from the config's model.handle, as users run it (no embedder passed),
    and lazily: on the second run clips' embeddings come from the store and prompts from the
    text cache, so it is not loaded at all."""
    root, config = labelled
    assert cli.main(["eval", "--config", str(config), "--json", str(root)]) == 0
    first = capsys.readouterr()
    assert "loading the model" in first.err
    assert cli.main(["eval", "--config", str(config), "--json", str(root)]) == 0
    again = capsys.readouterr()
    assert "loading the model" not in again.err
    assert json.loads(again.out)["map"] == json.loads(first.out)["map"]
