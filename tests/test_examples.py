"""Tags from example clips (issue 21): config → stored clip embeddings → a scaled vector that
tags, re-tags, reloads and ranks like a text tag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.app import open_app
from autotag.config import ConfigError, VocabEntry, load_config, parse_config
from autotag.search.live import Filter, LiveIndex
from autotag.vocabulary import (
    MATCH_SCORE,
    Example,
    ExampleError,
    build_vocabulary,
    example_vector,
    vocabulary_fingerprint,
)
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import CountingEmbedder, Running, log_lines, sidecar, wait_for

TAG = "purple_thing"
MIN_SCORE = 3.0
BLUE_EXAMPLES = f"{{{TAG}: {{examples: [ex/a.mp4, ex/b.mp4]}}}}"


def write_config(folder: Path, model_dir: Path, entry: str = BLUE_EXAMPLES, extra: str = ""
                 ) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model_dir}', batch_size: 8}}\n"
        f"vocabulary: [red, green, {entry}]\n"
        f"tagging: {{top_k: 3, min_score: {MIN_SCORE}}}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        "outputs: {log: matches.jsonl, previews: null}\n" + extra)
    return config


@pytest.fixture
def library(tmp_path, model_dir):
    """(config, clips folder): two blue examples outside the folder (each clip one window);
    the folder holds a blue clip the examples are not, a red and a green one."""
    ex, clips = tmp_path / "ex", tmp_path / "clips"
    ex.mkdir()
    clips.mkdir()
    write_video(ex / "a.mp4", [(BLUE, 2)])
    write_video(ex / "b.mp4", [(BLUE, 3)])
    write_video(clips / "blue.mp4", [(BLUE, 2.5)])
    write_video(clips / "red.mp4", [(RED, 2)])
    write_video(clips / "green.mp4", [(GREEN, 2)])
    return write_config(tmp_path, model_dir), clips


def score(clip: Path, label: str = TAG) -> float:
    return next(t["score"] for t in sidecar(clip)["ranking"] if t["label"] == label)


def given(clip: Path) -> list[str]:
    return [t["label"] for t in sidecar(clip)["tags"]]


def once(config: Path, embedder, *paths: Path) -> int:
    return cli.main(["--once", "--config", str(config), *map(str, paths)], embedder=embedder)


# -- config -----------------------------------------------------------------------------------

def test_entry_forms_resolve_examples_against_the_config_folder(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("rex1.mp4", "rex2.mp4", "soup.mp4"):
        (tmp_path / "clips" / name).write_bytes(b"x")
    config = parse_config(
        "vocabulary:\n  - skiing\n"
        "  - our_dog: {examples: [clips/rex1.mp4, clips/rex2.mp4]}\n"
        "  - cooking: {prompts: [cooking, chopping vegetables], examples: [clips/soup.mp4]}\n"
        "  - biking: {prompts: riding a bike}\n", base=tmp_path)
    assert [(e.label, e.prompts, e.examples) for e in config.vocabulary] == [
        ("skiing", ("skiing",), ()),
        ("our_dog", (), (tmp_path / "clips/rex1.mp4", tmp_path / "clips/rex2.mp4")),
        ("cooking", ("cooking", "chopping vegetables"), (tmp_path / "clips/soup.mp4",)),
        ("biking", ("riding a bike",), ())]


@pytest.mark.parametrize("entry, words", [
    ("{dog: {examples: []}}", ["'vocabulary[0]'", "needs prompts or examples"]),
    ("{dog: {example: [a.mp4]}}", ["unknown key 'example'", "prompts and/or examples"]),
    ("{dog: {examples: [1, 2]}}", ["examples must be a list of clip paths"]),
    ("{dog: {prompts: [], examples: [a.mp4]}}", ["non-empty list of prompt strings"]),
    ("{dog: {examples: [.]}}", ["'dog'", "is not a file"]),
])
def test_bad_entries_are_one_line_naming_the_entry(tmp_path, entry, words):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"vocabulary: [{entry}]", base=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_missing_example_is_a_config_error_naming_it(library, run_once, capsys):
    config, clips = library
    config.write_text(config.read_text().replace("ex/b.mp4", "ex/missing.mp4"))
    assert run_once(config, clips) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert TAG in lines[0] and "ex/missing.mp4" in lines[0] and "vocabulary[2]" in lines[0]
    assert not Path(f"{clips / 'blue.mp4'}.autotag.json").exists()


def test_an_example_that_does_not_decode_stops_the_start_in_one_line(library, run_once,
                                                                     capsys):
    config, clips = library
    (config.parent / "ex" / "b.mp4").write_bytes(b"not a video")
    assert run_once(config, clips) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and TAG in lines[0] and "b.mp4" in lines[0], lines


# -- the vector and its scale -------------------------------------------------------------------

def test_the_examples_own_mean_score_is_the_match_score():
    rng = np.random.default_rng(0)
    examples = rng.normal(size=(3, 512)).astype(np.float32) + 4.0
    vector = example_vector(examples)
    assert vector.dtype == np.float32 and vector.shape == (512,)
    assert np.mean(examples @ vector) == pytest.approx(MATCH_SCORE, rel=1e-5)
    assert example_vector(examples[:1]) @ examples[0] == pytest.approx(MATCH_SCORE, rel=1e-5)
    assert example_vector(np.stack([examples[0], -examples[0]])) is None  # they cancel out


def test_prompts_and_examples_average_their_vectors(embedder, tmp_path):
    clip = np.zeros(512, np.float32)
    clip[2] = 10.0  # the test model's blue
    example = Example(tmp_path / "x.mp4", "0" * 64, clip)
    entries = (VocabEntry("sea", ("blue water",), (example.path,)),)
    vocab = build_vocabulary(entries, embedder, tmp_path, {example.path: example})
    text = embedder.embed_text(["blue water"])[0]
    np.testing.assert_allclose(vocab.vectors[0], (text + example_vector(clip[None])) / 2,
                               rtol=1e-6)
    with pytest.raises(ExampleError, match="cancel out"):
        build_vocabulary((VocabEntry("nothing", (), (example.path,)),), embedder, tmp_path,
                         {example.path: Example(example.path, "0" * 64, clip * 0)})


def test_an_example_tag_finds_a_clip_it_was_not_given(library, run_once):
    config, clips = library
    assert run_once(config, clips) == 0
    blue, red, green = (clips / n for n in ("blue.mp4", "red.mp4", "green.mp4"))
    assert TAG in given(blue) and TAG not in given(red) + given(green)
    assert MIN_SCORE < score(blue) == pytest.approx(MATCH_SCORE, abs=0.5)
    assert score(red) < 0 and score(green) < 0  # on the test model: -2.85, as text's -5 of 10
    assert given(red) == ["red"] and given(green) == ["green"]


# -- embedded once, stored --------------------------------------------------------------------

def test_an_example_is_embedded_once_and_not_tagged(library, embedder):
    config, clips = library
    counting = CountingEmbedder(embedder)
    open_app(load_config(config), embedder=counting).close()
    assert sum(counting.batches) == 2  # one window each
    app = open_app(load_config(config), embedder=counting)  # a restart: from the store
    try:
        assert sum(counting.batches) == 2
        example = config.parent / "ex" / "a.mp4"
        assert app.store.file(example) is None  # stored embeddings, no files record
    finally:
        app.close()
    assert not Path(f"{example}.autotag.json").exists()
    assert once(config, counting, clips) == 0
    assert sum(counting.batches) == 2 + 3  # the three clips, no example again
    assert once(config, counting, clips) == 0
    assert sum(counting.batches) == 5  # everything up to date


def test_an_example_inside_the_tagged_folder_is_embedded_once(library, embedder):
    config, clips = library
    config.write_text(config.read_text().replace("ex/b.mp4", "clips/blue.mp4"))
    counting = CountingEmbedder(embedder)
    assert once(config, counting, clips) == 0
    assert sum(counting.batches) == 4  # a, blue (as an example, then reused), red, green
    assert TAG in given(clips / "blue.mp4")


# -- the fingerprint and re-tagging -----------------------------------------------------------

def test_the_fingerprint_follows_the_examples_content_not_their_paths(tmp_path):
    one = np.ones(512, np.float32)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    prompts_only = (VocabEntry("red", ("red",)),)
    entries = prompts_only + (VocabEntry("dog", (), (a,)),)

    def fingerprint(example: Example, path: Path = a) -> str:
        moved = prompts_only + (VocabEntry("dog", (), (path,)),)
        return vocabulary_fingerprint(moved, "m", {path: example})

    base = fingerprint(Example(a, "1" * 64, one))
    assert base == fingerprint(Example(b, "1" * 64, one), b)  # renamed: the same content
    assert base != fingerprint(Example(a, "2" * 64, one))  # other content under the same name
    assert base != fingerprint(Example(a, "1" * 64, 2 * one))  # embedded again differently
    assert base != vocabulary_fingerprint(prompts_only, "m")
    with pytest.raises(ValueError):
        vocabulary_fingerprint(entries, "m")  # examples' embeddings are needed


def test_new_examples_retag_every_clip_from_stored_embeddings(library, embedder):
    config, clips = library
    blue, red = clips / "blue.mp4", clips / "red.mp4"
    assert once(config, embedder, clips) == 0
    before = sidecar(blue)["vocabulary"]
    # the red clip (stored by the first run) becomes the example: nothing to decode
    config.write_text(config.read_text().replace("[ex/a.mp4, ex/b.mp4]", "[clips/red.mp4]"))
    counting = CountingEmbedder(embedder)
    assert once(config, counting, clips) == 0
    assert counting.batches == []  # re-tagged from stored embeddings, example included
    after = {sidecar(c)["vocabulary"] for c in clips.glob("*.mp4")}
    assert after != {before} and len(after) == 1
    assert TAG in given(red) and TAG not in given(blue)


def test_an_example_rewritten_in_place_retags(library, embedder):
    config, clips = library
    assert once(config, embedder, clips) == 0
    before = sidecar(clips / "red.mp4")["vocabulary"]
    write_video(config.parent / "ex" / "a.mp4", [(RED, 1.5)])  # same path, other content
    write_video(config.parent / "ex" / "b.mp4", [(RED, 3)])
    counting = CountingEmbedder(embedder)
    assert once(config, counting, clips) == 0
    assert sum(counting.batches) == 2  # the two new examples; the clips from the store
    assert sidecar(clips / "red.mp4")["vocabulary"] != before
    assert TAG in given(clips / "red.mp4") and TAG not in given(clips / "blue.mp4")


def test_a_reload_with_new_examples_retags_the_watched_clips(library, embedder):
    config, clips = library
    config.write_text(config.read_text() + "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n")
    with Running(config, clips, embedder) as run:
        wait_for(lambda: len(log_lines(config)) == 3)
        assert TAG in given(clips / "blue.mp4") and TAG not in given(clips / "red.mp4")
        config.write_text(config.read_text().replace("[ex/a.mp4, ex/b.mp4]",
                                                     "[clips/red.mp4]"))
        run.daemon.request_reload()
        wait_for(lambda: TAG in given(clips / "red.mp4"))
        wait_for(lambda: TAG not in given(clips / "blue.mp4"))
        calls = sum(run.embedder.batches)
    assert calls == 2 + 3  # the examples and the clips once; the reload decoded nothing


# -- search -----------------------------------------------------------------------------------

def test_the_index_ranks_an_example_tags_clips_like_any_tags(library, embedder, run_once):
    config, clips = library
    assert run_once(config, clips) == 0
    app = open_app(load_config(config), embedder=embedder)
    try:
        index = LiveIndex(app.store, embedder.fingerprint, app.vocabulary,
                          app.config.tagging)
        assert index.tag_counts()[TAG] == 1
        vector = app.vocabulary.vectors[app.vocabulary.labels.index(TAG)]
        (hit,), _ = index.search(vector, 10, Filter(tags=(TAG,)))
        assert hit.record.path == clips / "blue.mp4" and hit.score > MIN_SCORE
    finally:
        app.close()


def test_eval_scores_an_example_tag_with_the_vector_tagging_uses(tmp_path, model_dir, embedder,
                                                                  capsys):
    from autotag import cli
    from tests.clips import BLUE, RED, write_video

    root = tmp_path / "labelled"
    for name in ("red", "bluish"):
        (root / name).mkdir(parents=True)
    write_video(root / "red" / "a.mp4", [(RED, 2)])
    write_video(root / "bluish" / "b.mp4", [(BLUE, 2)])
    example = write_video(tmp_path / "example.mp4", [(BLUE, 3)])
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{handle: '{model_dir}'}}\n"
                      f"vocabulary: [red, {{bluish: {{examples: ['{example}']}}}}]\n"
                      f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n")
    assert cli.main(["eval", "--config", str(config), "--json", str(root)],
                    embedder=embedder) == 0
    result = json.loads(capsys.readouterr().out)
    configured = next(s for s in result["prompt_sets"] if s["name"] == "configured")
    assert configured["top1"] == 1.0, configured
