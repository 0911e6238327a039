"""Search by free text and retag, from stored embeddings: no decoding, no video model call."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from autotag import cli
from autotag.app import open_app
from autotag.clip import Embedded, SourceInfo, Window
from autotag.config import load_config
from autotag.model import LazyEmbedder
from autotag.retagging import retag, stored_clips
from autotag.search import SHEET_TILE_HEIGHT, SHEET_TILE_WIDTH, Index, search
from autotag.store import Store
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import CountingEmbedder, sidecar, write_config


@pytest.fixture
def indexed(tmp_path, model_dir, run_once):
    """Four clips tagged by `autotag --once`: two red ones (one only at its end), green, blue."""
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    write_video(clips / "red.mp4", [(RED, 4)])
    write_video(clips / "sub" / "green.mp4", [(GREEN, 4)])
    write_video(clips / "sub" / "blue.mp4", [(BLUE, 4)])
    write_video(clips / "late red.mp4", [(GREEN, 12), (RED, 20)])
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    return clips, config


def search_json(config: Path, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["search", "--config", str(config), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_query_ranks_the_matching_clips_first_with_the_segment_that_matches(indexed, capsys):
    _, config = indexed
    hits = search_json(config, capsys, "red")
    assert [Path(h["path"]).name for h in hits[:2]] == ["red.mp4", "late red.mp4"]
    assert len(hits) == 4 and hits[0]["score"] > hits[1]["score"] > 0 > hits[2]["score"]
    late = hits[1]["segment"]
    assert late["start"] >= 9.0 and late["end"] == pytest.approx(32, abs=0.3)  # red from 12 s
    sea = search_json(config, capsys, "blue", "water")  # words joined: no quotes needed
    assert Path(sea[0]["path"]).name == "blue.mp4"


def test_search_ranks_through_the_saved_index_and_finds_clips_tagged_after_it(
        indexed, capsys, run_once):
    clips, config = indexed
    search_json(config, capsys, "red")  # builds the index beside the store
    folder = load_config(config).state.store_path.parent / "state.sqlite3-index"
    manifest = next(folder.glob("*.json"))
    built = json.loads(manifest.read_text())["built"]
    write_video(clips / "new red.mp4", [(RED, 4)])
    assert run_once(config, clips) == 0
    names = [Path(h["path"]).name for h in search_json(config, capsys, "red")]
    assert names[:3] == ["red.mp4", "new red.mp4", "late red.mp4"] or \
        names[:3] == ["new red.mp4", "red.mp4", "late red.mp4"]
    assert json.loads(manifest.read_text())["built"] == built  # followed, not rebuilt


def test_the_first_search_builds_the_index_and_says_so_in_plain_lines_off_a_terminal(
        indexed, capsys):
    _, config = indexed

    def search_log(query: str) -> str:
        capsys.readouterr()
        assert cli.main(["search", "--config", str(config), "--json", query]) == 0
        return capsys.readouterr().err

    assert "building the search index: 4 of 4 clips" in search_log("red")
    assert "building the search index" not in search_log("green")  # opened, not built


def test_top_and_under_restrict_the_results(indexed, capsys):
    clips, config = indexed
    assert len(search_json(config, capsys, "--top", "1", "red")) == 1
    under = search_json(config, capsys, "--under", str(clips / "sub"), "red")
    assert sorted(Path(h["path"]).name for h in under) == ["blue.mp4", "green.mp4"]


def test_plain_output_when_piped_is_one_line_per_clip(indexed, capsys):
    _, config = indexed
    capsys.readouterr()
    assert cli.main(["search", "--config", str(config), "--top", "2", "green"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("1\t") and lines[0].endswith("green.mp4")


def test_a_clip_changed_after_indexing_is_not_shown_with_its_old_scores(indexed, capsys):
    clips, config = indexed
    write_video(clips / "red.mp4", [(BLUE, 5)])  # now blue, not yet re-tagged
    hits = search_json(config, capsys, "red")
    assert str(clips / "red.mp4") not in [h["path"] for h in hits]
    assert Path(hits[0]["path"]).name == "late red.mp4"
    (clips / "late red.mp4").unlink()
    assert "late red.mp4" not in [Path(h["path"]).name for h in search_json(config, capsys, "red")]


def test_the_contact_sheet_has_one_tile_per_result_from_its_best_segment(indexed, tmp_path,
                                                                        capsys):
    _, config = indexed
    sheet = tmp_path / "sheet.png"
    hits = search_json(config, capsys, "--top", "3", "--sheet", str(sheet), "red")
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape == (SHEET_TILE_HEIGHT, 3 * SHEET_TILE_WIDTH, 3)
    expected = {"red.mp4": "red", "late red.mp4": "red", "green.mp4": "green",
                "blue.mp4": "blue"}
    for i, hit in enumerate(hits):
        b, g, r = image[SHEET_TILE_HEIGHT // 2, i * SHEET_TILE_WIDTH + SHEET_TILE_WIDTH // 2]
        seen = {"red": r > 200 > max(g, b), "green": g > 200 > max(r, b),
                "blue": b > 200 > max(r, g)}
        assert seen[expected[Path(hit["path"]).name]], (hit["path"], (b, g, r))


def test_search_with_nothing_stored_or_unknown_words_exits_1(indexed, tmp_path, model_dir,
                                                             capsys):
    _, config = indexed
    assert cli.main(["search", "--config", str(config), "skateboarding"]) == 1  # unknown word
    (tmp_path / "other").mkdir()
    empty = write_config(tmp_path / "other", model_dir)  # its own, empty state store
    assert cli.main(["search", "--config", str(empty), "red"]) == 1
    assert cli.main(["search", "--config", str(config), "--sheet", "x.gif", "red"]) == 2


def test_retag_after_a_vocabulary_change_never_calls_the_video_model(indexed, embedder, run_once):
    clips, config_path = indexed
    text = config_path.read_text().replace("vocabulary: [red, green, {sea: [blue water, blue sky]}]",
                                           "vocabulary: [crimson, grass, {sky: [blue sky]}]")
    config_path.write_text(text + "outputs: {log: matches.jsonl, previews: previews, xmp: true}\n"
                           if "outputs:" not in text else text.replace(
                               "outputs: {", "outputs: {xmp: true, "))
    config = load_config(config_path)
    counting = CountingEmbedder(embedder)
    app = open_app(config, embedder=counting)
    try:
        records = stored_clips(app.store, app.tagger.model)
        results = list(retag(app.tagger, app.store, records))
    finally:
        app.close()
    assert counting.batches == []  # the video signature was never called
    assert {r.status for r in results} == {"reused"} and len(results) == 4
    assert sidecar(clips / "red.mp4")["top"] == "crimson"
    assert sidecar(clips / "sub" / "blue.mp4")["top"] == "sky"
    xmp = (clips / "sub" / "green.mp4.xmp").read_text()
    assert "grass" in xmp and ">green<" not in xmp
    assert run_once(config_path, clips) == 0  # and --once sees them up to date
    assert all(sidecar(p)["vocabulary"] == app.vocabulary.fingerprint
               for p in clips.rglob("*.mp4"))


def test_cli_retag_with_cached_prompts_never_loads_the_model(indexed, monkeypatch, capsys):
    clips, config = indexed
    config.write_text(config.read_text().replace(
        "vocabulary: [red, green, {sea: [blue water, blue sky]}]", "vocabulary: [red, green]"))
    import autotag.model

    def no_model(*_, **__):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(autotag.model, "load_model", no_model)
    before = sidecar(clips / "sub" / "blue.mp4")
    assert cli.main(["retag", "--config", str(config), str(clips / "sub")]) == 0
    after = sidecar(clips / "sub" / "blue.mp4")
    assert before["top"] == "sea" and after["top"] is None  # no tag reaches min_score now
    assert sidecar(clips / "red.mp4")["vocabulary"] == before["vocabulary"]  # not under sub
    assert cli.main(["search", "--config", str(config), "--json", "red"]) == 0  # cached too


def test_retag_skips_clips_gone_or_changed_and_keeps_them_stored(indexed):
    clips, config_path = indexed
    (clips / "red.mp4").unlink()
    os.utime(clips / "sub" / "green.mp4", (1, 1))
    config = load_config(config_path)
    app = open_app(config, embedder=LazyEmbedder(config.model.handle))
    try:
        results = {r.path.name: r for r in retag(app.tagger, app.store,
                                                 stored_clips(app.store, app.tagger.model))}
        assert app.store.file(clips / "red.mp4") is not None  # kept: a share may come back
    finally:
        app.close()
    assert results["red.mp4"].status == "skipped" and "gone" in results["red.mp4"].reason
    assert results["green.mp4"].status == "skipped" and "changed" in results["green.mp4"].reason
    assert results["blue.mp4"].status == "reused"


# -- ranking at scale, synthetic embeddings -------------------------------------------------------

def synthetic_store(tmp_path: Path, n: int) -> tuple[Store, np.ndarray]:
    rng = np.random.default_rng(7)
    store = Store(tmp_path / "state.sqlite3")
    embeddings = rng.normal(size=(n, 2, 16)).astype(np.float32)
    for i in range(n):
        source = SourceInfo(tmp_path / f"c{i:04d}.mp4", 10, 1.0, f"{i:064x}")
        store.save_embedded(Embedded(source, 6.4, (Window(0, 3.2), Window(3.2, 6.4)),
                                     embeddings[i], np.zeros((0, 1, 1, 3), np.uint8)), "m")
        store.record_tagged(source, "m", "v")
    return store, embeddings.mean(axis=1)


def test_ranking_matches_a_full_sort_and_skips_stale_clips(tmp_path):
    n = 300
    store, clip_embeddings = synthetic_store(tmp_path, n)
    try:
        index = Index.load(store, "m")
        query = np.random.default_rng(1).normal(size=16).astype(np.float32)
        order = np.argsort(-(clip_embeddings @ query), kind="stable")
        assert [r.path for r, _ in index.ranked(query, 21)] == [index.records[i].path
                                                                 for i in order[:21]]
        stale = {index.records[i].path for i in order[:40]}  # more than the candidates
        hits, left_out = search(index, store, "m", query, 5, 0.0,
                                fresh=lambda r: r.path not in stale)
        assert [h.record.path for h in hits] == [index.records[i].path for i in order[40:45]]
        assert left_out == 40
    finally:
        store.close()


def test_more_like_this_ranks_the_same_content_first_then_by_the_moment(indexed, capsys):
    clips, config = indexed
    shutil.copy2(clips / "sub" / "green.mp4", clips / "green copy.mp4")
    assert cli.main(["--once", "--config", str(config), str(clips)]) in (0, 1)  # the copy
    like = search_json(config, capsys, "--like", str(clips / "sub" / "green.mp4"))
    names = [Path(h["path"]).name for h in like]
    assert names[0] == "green copy.mp4" and "green.mp4" not in names  # itself left out
    # in background spreads (issue 31): the same content well above a typical clip, and above
    # every other clip
    assert like[0]["score"] > 1.0 and all(h["score"] < like[0]["score"] for h in like[1:])
    late = str(clips / "late red.mp4")
    red_moment = search_json(config, capsys, "--like", f"{late}@25")
    assert Path(red_moment[0]["path"]).name == "red.mp4"
    green_moment = search_json(config, capsys, "--like", f"{late}@3")
    assert Path(green_moment[0]["path"]).name in ("green.mp4", "green copy.mp4")
    capsys.readouterr()
    assert cli.main(["search", "--config", str(config), "--like", "nowhere.mp4"]) == 2
    assert "not a clip autotag tagged" in capsys.readouterr().err
    assert cli.main(["search", "--config", str(config), "--like", late, "red"]) == 2


def test_a_folder_reads_only_its_own_clips_not_a_sibling_with_a_longer_name(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    try:
        for i, name in enumerate(["a/x.mp4", "a/sub/y.mp4", "a2/z.mp4", "a.mp4", "b/w.mp4"]):
            source = SourceInfo(tmp_path / name, 10, 1.0, f"{i:064x}")
            store.save_embedded(Embedded(source, 3.2, (Window(0, 3.2),),
                                         np.full((1, 4), i, np.float32),
                                         np.zeros((0, 1, 1, 3), np.uint8)), "m")
            store.record_tagged(source, "m", "v")
        rows, matrix = store.clip_rows_under("m", [tmp_path / "a", tmp_path / "b" / "w.mp4"])
        assert [Path(r[0]).relative_to(tmp_path).as_posix() for r in rows] == \
            ["a/sub/y.mp4", "a/x.mp4", "b/w.mp4"]
        assert matrix[:, 0].tolist() == [1.0, 0.0, 4.0]  # each row's own vector
    finally:
        store.close()
