"""`autotag quantize` (issue 19) on the test model: NNCF's INT8 calibrated on coloured clips and
validated on others; the report, its bar and its refusal, the configuration errors, INT8's tags
equal to f32's, and `eval --precision int8` side by side.

The clips are four 3.2-s parts each (red, green, blue, flashing blue) in rotated orders, so
every window is one colour, every clip holds every colour (calibration sees what validation
does), and no window straddles a change to put a score on a threshold.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.analysis import quantizing as q
from autotag.clip import Window
from autotag.config import openvino_installed
from autotag.model import load_model
from autotag.runtimes import openvino
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import REPO, tags_of

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

BATCH = 2  # the IR's batch (model.batch_size's default)
WINDOWS = 32  # --windows: 8 clips of 4 windows; a few seconds of NNCF on the test model
PARTS = [(RED, 3.2), (GREEN, 3.2), (BLUE, 3.2), (BLUE, 3.2, True)]
# tests/labelled.py's, so that `eval` finds these prompts' text embeddings cached
VOCABULARY = "[red, green, {sea: [blue water, blue sky]}, sky, bright]"


def write_clips(folder: Path, count: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # sizes differ so that no two clips are the same content (the store would reuse one)
    return [write_video(folder / f"clip{i}.mp4", PARTS[i % 4:] + PARTS[:i % 4],
                        size=(64 + 16 * (i // 4), 48))
            for i in range(count)]


def write_config(folder: Path, model: Path, precision: str = "f32", watch: Path | None = None
                 ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model}', batch_size: {BATCH}, precision: {precision}}}\n"
        f"vocabulary: {VOCABULARY}\n"
        "tagging: {top_k: 2, min_score: 3.0}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        + (f"watch: {{paths: ['{watch}']}}\n" if watch else "")
        + f"outputs: {{sidecar_dir: '{folder / 'sidecars'}', log: null, previews: null}}\n")
    return config


@pytest.fixture(scope="module")
def f32(model_dir, openvino_cache, tmp_path_factory):
    """The test model on OpenVINO at f32, converted once in the session's cache, its IR copied
    into a cache of this module's own: quantizing writes beside it."""
    converted = load_model(str(model_dir), runtime="openvino", batch_size=BATCH,
                           cache_dir=openvino_cache).cache_path
    return load_copy(model_dir, converted, tmp_path_factory.mktemp("quantize-cache"))


def load_copy(model_dir: Path, converted: Path, cache: Path):
    """The f32 model from a copy of the IR folder `converted` in `cache` (no int8 in it)."""
    shutil.copytree(converted, cache / converted.name, ignore=shutil.ignore_patterns("int8"))
    embedder = load_model(str(model_dir), runtime="openvino", batch_size=BATCH, cache_dir=cache)
    assert embedder.runtime == "openvino" and not embedder.converted
    return embedder


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """XDG folders for the whole module, set for its module-scoped fixtures too (conftest's
    per-test ones come later): one text-embedding cache, since uncached text is embedded by
    a TensorFlow child process (8 s a time here) and every test embeds the same prompts."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
            patch.setenv(name, str(folder / name.lower()))
        yield folder


@pytest.fixture(autouse=True)
def _shared_text_cache(home, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg_cache_home"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder)
    return folder


@pytest.fixture(scope="module")
def quantized(home, f32, clips, model_dir, tmp_path_factory):
    """`autotag quantize` once, through the CLI, on watch.paths (no DIR): (exit code, stdout,
    stderr, report.json). Module-scoped, so captured by hand (capfd is per test)."""
    config = write_config(tmp_path_factory.mktemp("quantize"), model_dir, watch=clips)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["quantize", "--config", str(config), "--windows", str(WINDOWS)],
                        embedder=f32)
    report = json.loads((openvino.int8_dir(f32.cache_path) / q.REPORT).read_text())
    return code, out.getvalue(), err.getvalue(), report


# -- the report -------------------------------------------------------------------------------

def test_quantize_accepts_the_test_model_and_keeps_the_report_beside_the_ir(quantized, f32):
    code, out, err, report = quantized
    assert code == 0, err
    assert report["accepted"] is True and report["reason"] is None
    # figures present and plausible: measured on held-out windows of held-out clips
    assert report["split"] == "clip"
    assert report["windows"] >= q.MIN_VALIDATION_WINDOWS
    assert report["calibration_windows"] >= q.MIN_CALIBRATION_WINDOWS
    assert report["windows"] + report["calibration_windows"] == WINDOWS
    assert report["clips"] >= q.MIN_CLIPS_PER_SIDE and report["calibration_clips"] >= 2
    assert q.MIN_MEAN_COSINE <= report["mean_cosine"] <= 1.0 + 1e-9
    assert report["min_cosine"] <= report["mean_cosine"]
    assert report["top_tag_agreement"] == report["tag_agreement"] == 1.0
    assert report["clip_tag_agreement"] == 1.0
    assert report["f32_windows_per_second"] > 0 and report["int8_windows_per_second"] > 0
    assert report["speedup"] == pytest.approx(
        report["int8_windows_per_second"] / report["f32_windows_per_second"], rel=1e-2)
    assert report["bar"] == {"min_mean_cosine": q.MIN_MEAN_COSINE,
                             "min_tag_agreement": q.MIN_TAG_AGREEMENT}
    assert report["batch_size"] == BATCH and report["tags"] == 5
    # the test model's features are a few values per window: NNCF's default ranges (means of
    # each batch's extremes) clip pure colours, and the full ranges pass
    assert [a["ranges"] for a in report["attempts"]] == list(q.RANGES)
    assert report["ranges"] == "full" and report["attempts"][0]["accepted"] is False
    # the INT8 model is whole, beside the f32 IR, and the loader's check accepts it
    folder = openvino.int8_dir(f32.cache_path)
    assert folder == f32.cache_path / "int8"
    assert {p.name for p in folder.iterdir()} == {"video.xml", "video.bin", "manifest.json",
                                                  "report.json"}
    assert openvino._intact(folder)
    assert not [p for p in f32.cache_path.iterdir() if p.name.startswith(".")]  # no temp left
    # the table on stdout, the verdict on stderr
    assert "mean cosine to f32" in out and "tags given as f32's" in out and "met" in out
    assert "INT8 accepted" in err and "model.precision: int8" in err


def test_int8_tags_equal_f32_tags_on_the_test_clips(quantized, f32, model_dir, clips, tmp_path):
    int8 = load_model(str(model_dir), runtime="openvino", batch_size=BATCH, precision="int8",
                      cache_dir=f32.cache_path.parent)
    paths = sorted(clips.iterdir())
    tags = {}
    for name, embedder in (("f32", f32), ("int8", int8)):
        tags[name] = tags_of(write_config(tmp_path / name, model_dir, name), embedder, paths)
    for clip, f32_tags in tags["f32"].items():
        int8_tags = tags["int8"][clip]
        assert [t.label for t in int8_tags] == [t.label for t in f32_tags], clip
        for a, b in zip(int8_tags, f32_tags, strict=True):
            assert a.score == pytest.approx(b.score, abs=0.05)
            assert [(s.start, s.end) for s in a.segments] == [(s.start, s.end)
                                                              for s in b.segments]


# -- refusal and configuration errors ---------------------------------------------------------

def test_refused_below_the_bar_then_precision_int8_is_a_config_error(f32, clips, model_dir,
                                                                     tmp_path, monkeypatch,
                                                                     capfd):
    # the CLI loads the model itself here, from a cache holding a copy of the f32 IR
    cache = tmp_path / "hub" / "openvino"
    cache.mkdir(parents=True)
    shutil.copytree(f32.cache_path, cache / f32.cache_path.name,
                    ignore=shutil.ignore_patterns("int8"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub"))  # openvino_cache_dir()
    monkeypatch.setattr(q, "MIN_MEAN_COSINE", 1.01)  # a bar no model reaches
    config = write_config(tmp_path / "run", model_dir, precision="int8")
    code = cli.main(["quantize", "--config", str(config), "--windows", str(WINDOWS), "--json",
                     str(clips)])
    out, err = capfd.readouterr()
    assert code == 1, err
    report = json.loads(out)
    assert report["accepted"] is False and "cosine" in report["reason"]
    assert report["mean_cosine"] > 0.99  # the figures are still there to read
    assert [a["accepted"] for a in report["attempts"]] == [False, False]
    folder = openvino.int8_dir(cache / f32.cache_path.name)
    assert {p.name for p in folder.iterdir()} == {"report.json"}  # no model that could run
    assert json.loads((folder / "report.json").read_text()) == report
    refusal = [line for line in err.splitlines() if "INT8 refused" in line]
    assert len(refusal) == 1 and "below 1.01" in refusal[0]
    assert "model.precision: f32" in refusal[0]
    # model.precision: int8 without a validated model: exit 2, naming the command
    assert cli.main(["--once", "--config", str(config), str(clips)]) == 2
    err = capfd.readouterr().err
    assert "autotag quantize" in err and "int8" in err


def test_refused_when_tags_disagree_and_the_line_says_autotag_stays_at_f32(
        f32, clips, model_dir, tmp_path, monkeypatch, capfd):
    # the figures the test model reaches (tags agree on every window) made to miss the bar
    monkeypatch.setattr(q, "MIN_TAG_AGREEMENT", 1.5)
    embedder = load_copy(model_dir, f32.cache_path, tmp_path)
    config = write_config(tmp_path / "run", model_dir)
    code = cli.main(["quantize", "--config", str(config), "--windows", "16", str(clips)],
                    embedder=embedder)
    out, err = capfd.readouterr()
    assert code == 1
    assert "NOT MET" in out
    line = next(x for x in err.splitlines() if "INT8 refused" in x)
    assert "first tag given" in line and "autotag stays at f32" in line


def test_without_nncf_one_line_names_the_extra(clips, tmp_path, model_dir, monkeypatch, capfd):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf → ImportError
    config = write_config(tmp_path, model_dir)
    assert cli.main(["quantize", "--config", str(config), str(clips)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'autotag[int8]'" in err[0]


def test_usage_errors_are_one_line(f32, tmp_path, model_dir, capfd):
    config = write_config(tmp_path / "run", model_dir)
    assert cli.main(["quantize", "--config", str(config)], embedder=f32) == 2  # no DIR, no watch
    assert "watch.paths" in capfd.readouterr().err
    assert cli.main(["quantize", "--config", str(config), "--windows", "3", str(tmp_path)],
                    embedder=f32) == 2
    assert "too few" in capfd.readouterr().err
    short = tmp_path / "short"
    short.mkdir()
    write_video(short / "one.mp4", [(RED, 2)])  # one window
    assert cli.main(["quantize", "--config", str(config), str(short)], embedder=f32) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autotag: error: only 1 window could be decoded from 1 clip")


def test_nncf_sends_no_telemetry_outside_pytest():
    """NNCF stubs its telemetry inside pytest whatever we do, so look from a plain process."""
    code = ("from autotag.analysis.quantizing import import_nncf; import sys; import_nncf(); "
            "from nncf.telemetry import telemetry; "
            "print(type(telemetry).__name__, sys.modules['openvino_telemetry'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MagicMock", "None"]


# -- the stages alone -------------------------------------------------------------------------

def fake_clips(counts: list[int]) -> list[q.ClipWindows]:
    return [q.ClipWindows(Path(f"c{i}.mp4"), tuple(Window(3.2 * j, 3.2 * j + 3.2)
                                                   for j in range(n)),
                          np.full((n, 1, 1, 1, 3), i, np.uint8))
            for i, n in enumerate(counts)]


def test_validation_windows_come_from_clips_calibration_never_saw():
    split = q.split_windows(fake_clips([4] * 10))
    assert split.by == "clip"
    assert not {c.path for c in split.calibration} & {c.path for c in split.validation}
    held = q.Split.count(split.validation)  # a third of 40, in whole clips of 4
    assert abs(held - 40 * q.VALIDATION_SHARE) <= 4
    assert q.Split.count(split.calibration) == 40 - held


def test_with_too_few_clips_windows_are_split_within_clips():
    split = q.split_windows(fake_clips([20, 6]))
    assert split.by == "window"
    assert q.Split.count(split.calibration) + q.Split.count(split.validation) == 26
    assert q.Split.count(split.validation) >= q.MIN_VALIDATION_WINDOWS
    for cal, val in zip(split.calibration, split.validation, strict=True):
        assert not set(cal.windows) & set(val.windows)  # no window on both sides
    with pytest.raises(q.QuantizeError, match="only 15 windows could be decoded from 2 clips"):
        q.split_windows(fake_clips([10, 5]))


def test_batches_are_full_and_repeat_windows_rather_than_pad_with_black():
    out = list(q.Batches(fake_clips([1, 2]), 2))
    assert [b.shape for b in out] == [(2, 1, 1, 1, 3)] * 2
    assert [int(b[0, 0, 0, 0, 0]) for b in out] == [0, 1]  # clip 0, then clip 1's second
    assert int(out[1][1, 0, 0, 0, 0]) == 0  # the first window again, not black


def test_the_bar():
    figures = q.Figures(20, 3, 0.995, 0.98, 0.97, 0.99, 1.0, 5.0, 10.0)
    assert q.judge(figures) is None
    assert figures.speedup == 2.0
    assert "cosine" in q.judge(q.Figures(20, 3, 0.989, 0.98, 1.0, 1.0, 1.0, 5.0, 10.0))
    assert "first tag given" in q.judge(q.Figures(20, 3, 0.999, 0.98, 0.96, 1.0, 1.0, 5.0, 10.0))
    assert "tags given match f32's on 95.0%" in q.judge(q.Figures(20, 3, 0.999, 0.98, 1.0, 0.95, 1.0, 5.0, 10.0))


# -- eval --precision int8 --------------------------------------------------------------------

def test_eval_precision_int8_shows_f32_and_int8_side_by_side(quantized, f32, model_dir,
                                                             tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's tables unwrapped
    from tests.labelled import CONFIG, build_labelled
    from tests.labelled import write_config as write_labelled_config

    root = build_labelled(tmp_path / "labelled")
    config = write_labelled_config(tmp_path, model_dir,
                                   CONFIG.replace("batch_size: 4", f"batch_size: {BATCH}"))
    assert cli.main(["eval", "--config", str(config), "--precision", "int8", "--json",
                     str(root)], embedder=f32) == 0
    data = json.loads(capfd.readouterr().out)
    assert set(data) == {"f32", "int8", "agreement"}
    assert data["int8"]["map"] == pytest.approx(data["f32"]["map"], abs=0.02)
    assert data["agreement"]["clips"] == 6 and data["agreement"]["top1"] == 1.0
    assert cli.main(["eval", "--config", str(config), "--precision", "int8", str(root)],
                    embedder=f32) == 0
    out = capfd.readouterr().out
    assert "f32 and INT8 side by side" in out
    for column in ("AP f32", "AP int8", "recall int8"):
        assert column in out
    # the usual output is unchanged without --precision
    assert cli.main(["eval", "--config", str(config), str(root)], embedder=f32) == 0
    assert "AP int8" not in capfd.readouterr().out
    # --report shows one model
    assert cli.main(["eval", "--config", str(config), "--precision", "int8", "--report",
                     str(tmp_path / "r.html"), str(root)], embedder=f32) == 2
