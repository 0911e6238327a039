"""`autotag init`: the packaged default config, and a missing config that says to run it."""

from __future__ import annotations

from pathlib import Path

from autotag import cli
from autotag.config import default_config_text, load_config
from tests.clips import RED, write_video

REPO = Path(__file__).resolve().parents[1]


def test_the_packaged_default_is_the_repositorys_config():
    assert default_config_text() == (REPO / "config.yaml").read_text(encoding="utf-8")


def test_init_writes_the_default_to_the_user_config_and_never_overwrites(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init"]) == 0
    written = tmp_path / "xdg-config" / "autotag" / "config.yaml"  # conftest's XDG_CONFIG_HOME
    assert written.read_text(encoding="utf-8") == default_config_text()
    assert load_config(written).labels  # a config autotag reads as it is
    written.write_text("vocabulary: [mine]\n")
    assert cli.main(["init"]) == 2  # an existing file is the user's
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err
    assert written.read_text() == "vocabulary: [mine]\n"
    assert cli.main(["init", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere").read_text(encoding="utf-8") == default_config_text()


def test_a_missing_config_says_to_run_init(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--once", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "autotag init" in err and "Traceback" not in err


def test_config_and_startup_errors_name_the_config_file(tmp_path, capsys, model_dir):
    """Which config was read is the first of several places: an error about its settings says
    which file they are in (a user who edits another one learns why nothing changed)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {{handle: '{model_dir}'}}\nvocabulary: [red]\ntagging: {{topk: 2}}\n")
    assert cli.main(["--once", "--config", str(bad), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "tagging.topk" in err
    not_a_model = tmp_path / "not a model"
    not_a_model.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {{handle: '{not_a_model}', runtime: tensorflow}}\n"
                      f"vocabulary: [red]\nstate: {{path: '{tmp_path / 's.sqlite3'}'}}\n")
    assert cli.main(["search", "--config", str(config), "red"]) == 1  # nothing stored: no model
    capsys.readouterr()
    assert cli.main(["retag", "--config", str(config), str(tmp_path / "no such folder")]) == 2
    assert "no such folder does not exist" in capsys.readouterr().err
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 1)])
    assert cli.main(["--once", "--config", str(config), str(clips)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after "loading the model from"
    assert error.startswith("autotag: error:") and error.endswith(f"(config: {config})"), error
