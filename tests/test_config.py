"""Config: every key validated at startup, one-line errors naming the key, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotag.config import HUB_HANDLE, Config, ConfigError, find_config, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def parse(text: str, base: Path = Path("/base")) -> Config:
    return parse_config(text, base=base)


def test_example_config_is_valid_and_documents_the_defaults():
    config = load_config(REPO / "config.yaml")
    defaults = parse("vocabulary: [x]")
    assert config.model == defaults.model
    assert config.tagging == defaults.tagging
    assert config.sampling == defaults.sampling
    assert config.watch == defaults.watch
    assert config.hooks == defaults.hooks
    assert config.state == defaults.state
    # outputs' relative paths resolve against the file's folder
    assert config.outputs.log == REPO / "autotag-matches.jsonl"
    assert config.outputs.previews == REPO / "previews"
    assert config.model.handle == HUB_HANDLE
    assert config.vocabulary[1].label == "biking"
    assert config.vocabulary[1].prompts == ("riding a bike", "mountain biking")


def test_default_paths_resolve_against_the_config_folder_too(tmp_path):
    config = parse("vocabulary: [x]", base=tmp_path)
    assert config.outputs.log == tmp_path / "autotag-matches.jsonl"
    assert config.outputs.previews == tmp_path / "previews"
    assert parse("vocabulary: [x]\noutputs: {log: null}", base=tmp_path).outputs.log is None


def test_vocabulary_forms():
    config = parse("vocabulary:\n  - skiing\n  - biking: [riding a bike, mountain biking]\n"
                   "  - surf: surfing\n")
    assert [(e.label, e.prompts) for e in config.vocabulary] == [
        ("skiing", ("skiing",)), ("biking", ("riding a bike", "mountain biking")),
        ("surf", ("surfing",))]


@pytest.mark.parametrize("text, key", [
    ("vocabulary: [x]\nmodel: {batchsize: 3}", "model.batchsize"),
    ("vocabulary: [x]\ntaging: {}", "taging"),
    ("vocabulary: [x]\nmodel: {batch_size: many}", "model.batch_size"),
    ("vocabulary: [x]\nmodel: {batch_size: 0}", "model.batch_size"),
    ("vocabulary: [x]\nmodel: {batch_size: 2.5}", "model.batch_size"),
    ("vocabulary: [x]\ntagging: {min_score: true}", "tagging.min_score"),
    ("vocabulary: [x]\noutputs: {sidecars: 'yes'}", "outputs.sidecars"),
    ("vocabulary: [x]\nwatch: {paths: /x}", "watch.paths"),
    ("vocabulary: [x]\nwatch: {stability_seconds: -1}", "watch.stability_seconds"),
    ("vocabulary: [x]\ntagging: {thresholds: {y: 1}}", "tagging.thresholds"),
    ("vocabulary: [hiking/trekking]", "vocabulary"),
    ("vocabulary: ['a|b']", "vocabulary"),
    ("vocabulary: [x]\ntagging: {thresholds: {x: high}}", "tagging.thresholds.x"),
    ("vocabulary: []", "vocabulary"),
    ("vocabulary: skiing", "vocabulary"),
    ("vocabulary: [x, X]", "vocabulary"),
    ("vocabulary: [{biking: []}]", "vocabulary[0]"),
    ("vocabulary: [3]", "vocabulary[0]"),
    ("model: {}", "vocabulary"),
    ("vocabulary: [x]\nmodel: [1]", "model"),
    ("- a\n- b", "top level"),
])
def test_bad_values_name_the_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert key in message
    assert "\n" not in message


def test_broken_yaml_says_where():
    with pytest.raises(ConfigError, match=r"broken YAML at line \d+, column \d+"):
        parse("vocabulary: [x]\nmodel: {batch_size: 8\nstate: {}\n")


def test_model_directory_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="model.handle"):
        parse("vocabulary: [x]\nmodel: {handle: nowhere}", base=tmp_path)
    (tmp_path / "m").mkdir()
    config = parse("vocabulary: [x]\nmodel: {handle: m}", base=tmp_path)
    assert config.model.handle == str(tmp_path / "m")


def test_find_config_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no config file found"):
        find_config(None)
    xdg = tmp_path / "xdg-config" / "autotag"
    xdg.mkdir(parents=True)
    (xdg / "config.yaml").write_text("vocabulary: [x]")
    assert find_config(None) == xdg / "config.yaml"
    (tmp_path / "config.yaml").write_text("vocabulary: [y]")
    assert find_config(None) == tmp_path / "config.yaml"
    with pytest.raises(ConfigError, match="--config"):
        find_config(tmp_path / "missing.yaml")
