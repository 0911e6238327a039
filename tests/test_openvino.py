"""model.runtime: openvino (issue 14) on both test-model formats: the same embeddings and tags as
TensorFlow, the conversion cached across processes, rebuilt when damaged, TensorFlow on failure,
and the configuration error when OpenVINO is missing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.config import ConfigError, load_config, openvino_installed, parse_config
from autotag.model import LazyEmbedder, choose_runtime, load_model, prepare_runtime
from autotag.runtimes import openvino as openvino_runtime
from tests.clips import BLUE, GREEN, RED, write_gif, write_video
from tests.helpers import tags_of

# the test extra installs OpenVINO, so CI runs all of this; looked up, not imported (autotag
# imports it itself, without its converter's telemetry)
pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

REPO = Path(__file__).resolve().parents[1]
BATCH = 2  # model.batch_size the OpenVINO model is compiled for (the default)
WINDOW = (32, 224, 224, 3)
MIN_COSINE = 0.9999  # issue 14: OpenVINO's embeddings are TensorFlow's to float error
MAX_RELATIVE_DIFF = 1e-3  # of the largest absolute value


@pytest.fixture(scope="module", params=["tf2", "tf1-hub"])
def runtimes(request, model_dir, model_dir_tf1, openvino_cache):
    """(TensorFlow embedder, OpenVINO embedder, model folder) for one test-model format."""
    path = str(model_dir if request.param == "tf2" else model_dir_tf1)
    on_openvino = load_model(path, runtime="openvino", batch_size=BATCH, cache_dir=openvino_cache)
    assert on_openvino.runtime == "openvino"
    return load_model(path), on_openvino, path


def windows(count: int) -> np.ndarray:
    """float32 [count, 32, 224, 224, 3]: noise, solid colours, flashing: every feature moves."""
    rng = np.random.default_rng(count)
    out = rng.random((count, *WINDOW), dtype=np.float32)
    out[0] = 0.0
    out[0, ..., 0] = 1.0  # red
    if count > 2:
        out[2, ::2] = 0.0  # flashing
    return out


def assert_same_embeddings(a: np.ndarray, b: np.ndarray) -> None:
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= MIN_COSINE, cosine
    assert np.abs(a - b).max() <= MAX_RELATIVE_DIFF * np.abs(b).max()


def test_video_embeddings_equal_tensorflows_full_and_partial_batches(runtimes):
    on_tf, on_ov, _ = runtimes
    frames = windows(5)  # two full batches and a final partial one (padded)
    ov_embeddings = on_ov.embed_video(frames)
    assert ov_embeddings.shape == (5, 512) and ov_embeddings.dtype == np.float32
    assert_same_embeddings(ov_embeddings, on_tf.embed_video(frames))
    assert_same_embeddings(on_ov.embed_video(frames[:1]), on_tf.embed_video(frames[:1]))


def test_text_runs_on_tensorflow_in_a_child_and_the_fingerprint_is_the_models(runtimes):
    on_tf, on_ov, _ = runtimes
    texts = ["red", "blue water", ""]
    np.testing.assert_allclose(on_ov.embed_text(texts), on_tf.embed_text(texts), rtol=1e-6,
                               atol=1e-6)
    assert on_ov.fingerprint == on_tf.fingerprint  # stored embeddings stay valid across runtimes


def test_other_window_shapes_run_on_tensorflow(runtimes):
    on_tf, on_ov, _ = runtimes
    small = np.random.default_rng(3).random((3, 8, 16, 16, 3), dtype=np.float32)
    np.testing.assert_array_equal(on_ov.embed_video(small), on_tf.embed_video(small))


def write_config(folder: Path, model: str, runtime: str) -> Path:
    folder.mkdir()
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{handle: '{model}', batch_size: {BATCH}, runtime: {runtime}}}\n"
        "vocabulary: [red, green, {sea: [blue water, blue sky]}, {flashing: [flashing, motion]}]\n"
        "tagging: {top_k: 2, min_score: 3.0}\n"
        f"state: {{path: '{folder / 'state.sqlite3'}'}}\n"
        f"outputs: {{sidecar_dir: '{folder / 'sidecars'}', log: null, previews: null}}\n")
    return config


def test_tags_identical_on_generated_clips(runtimes, tmp_path):
    on_tf, on_ov, model = runtimes
    clips = tmp_path / "clips"
    clips.mkdir()
    paths = [write_video(clips / "red.mp4", [(RED, 4)]),
             write_gif(clips / "green.gif", [(GREEN, 2)]),
             write_video(clips / "changes.mp4", [(RED, 8), (BLUE, 24)]),
             write_video(clips / "flashing.mp4", [(BLUE, 5, True)])]
    tags = {}
    for name, embedder in (("tensorflow", on_tf), ("openvino", on_ov)):
        tags[name] = tags_of(write_config(tmp_path / name, model, name), embedder, paths)
    for clip, tf_tags in tags["tensorflow"].items():
        ov_tags = tags["openvino"][clip]
        assert [t.label for t in ov_tags] == [t.label for t in tf_tags], clip
        for a, b in zip(ov_tags, tf_tags):
            assert a.score == pytest.approx(b.score, rel=1e-3, abs=1e-3)
            assert [(s.start, s.end) for s in a.segments] == \
                   [(s.start, s.end) for s in b.segments]
    assert tags["openvino"]["changes.mp4"][0].label == "sea"


LOAD_IN_A_CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from pathlib import Path
from autotag.model import load_model
m = load_model(sys.argv[1], runtime="openvino", batch_size=int(sys.argv[3]),
               cache_dir=Path(sys.argv[2]))
print(json.dumps({"runtime": m.runtime, "converted": m.converted}))
"""


def test_the_cached_conversion_is_reused_by_another_process(runtimes, openvino_cache):
    _, on_ov, model = runtimes
    assert on_ov.cache_path.parent == openvino_cache
    done = subprocess.run([sys.executable, "-c", LOAD_IN_A_CHILD, model, str(openvino_cache),
                           str(BATCH)], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"runtime": "openvino", "converted": False}
    assert "compiled from the cache" in done.stderr and "converting" not in done.stderr


def test_the_cache_is_keyed_by_batch_size(model_dir, openvino_cache, embedder):
    four = load_model(str(model_dir), runtime="openvino", batch_size=4, cache_dir=openvino_cache)
    assert four.converted and "-b4-" in four.cache_path.name
    frames = windows(3)
    assert_same_embeddings(four.embed_video(frames), embedder.embed_video(frames))


@pytest.mark.parametrize("damage", ["truncated weights", "missing manifest", "garbled graph"])
def test_a_damaged_cache_is_rebuilt(model_dir, tmp_path, damage, caplog, embedder):
    first = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    folder = first.cache_path
    if damage == "truncated weights":
        weights = folder / "video.bin"
        weights.write_bytes(weights.read_bytes()[:-8])
    elif damage == "missing manifest":
        (folder / "manifest.json").unlink()
    else:
        (folder / "video.xml").write_text("<net>")
    caplog.set_level(logging.INFO, "autotag")
    again = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert again.runtime == "openvino" and again.converted and again.cache_path == folder
    assert "damaged" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left
    frames = windows(2)
    assert_same_embeddings(again.embed_video(frames), embedder.embed_video(frames))


def test_a_failed_conversion_falls_back_to_tensorflow_with_one_line(model_dir, tmp_path,
                                                                    monkeypatch, capsys, caplog):
    """The converting child says why in its last stderr line; the parent warns with it, once,
    and runs the model on TensorFlow."""
    from autotag import tfworker
    from autotag.runtimes import child

    openvino = openvino_runtime.import_openvino()

    def broken(*args, **kwargs):
        # OpenVINO's own shape of error: where, then what, then dozens of lines
        raise RuntimeError("Exception from src/frontends/tensorflow/src/frontend.cpp:436:\n"
                           "[TensorFlow Frontend] Internal error, no translator found for "
                           "operation(s): Conv3DNew\nTo facilitate the conversion ...\n" * 3)

    monkeypatch.setattr(openvino, "convert_model", broken)
    folder = tmp_path / "ir"
    assert tfworker.main(["convert", str(model_dir), "2", str(folder)]) == child.EXIT_CONVERSION
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "no translator found for operation(s): Conv3DNew" in line
    assert not folder.exists()  # nothing half-written left behind

    def convert_in_child(*args, **kwargs):  # what child.convert raises for that child
        raise child.ChildError(child.EXIT_CONVERSION, line)

    monkeypatch.setattr(child, "convert", convert_in_child)
    caplog.set_level(logging.INFO, "autotag")
    model = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path / "cache")
    assert model.runtime == "tensorflow"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message and "no translator found for operation(s): Conv3DNew" in message
    assert "running it on TensorFlow" in message
    assert model.embed_video(windows(1)).shape == (1, 512)


def test_a_failed_compilation_falls_back_too(model_dir, tmp_path, monkeypatch, caplog):
    openvino = openvino_runtime.import_openvino()

    def refuse(self, *args, **kwargs):
        raise RuntimeError("Device with \"CPU\" name is not registered in the OpenVINO Runtime")

    monkeypatch.setattr(openvino.Core, "compile_model", refuse)
    model = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert model.runtime == "tensorflow"
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not registered" in warning.getMessage()


def test_runtime_is_validated_and_defaults_to_auto(tmp_path):
    assert parse_config("vocabulary: [x]\n", tmp_path).model.runtime == "auto"
    for runtime in ("auto", "tensorflow", "openvino"):
        text = f"vocabulary: [x]\nmodel: {{runtime: {runtime}}}\n"
        assert parse_config(text, tmp_path).model.runtime == runtime
    with pytest.raises(ConfigError, match="'model.runtime' must be one of auto, tensorflow, "
                                          "openvino"):
        parse_config("vocabulary: [x]\nmodel: {runtime: OpenVino}\n", tmp_path)


def test_openvino_requested_but_not_installed_is_exit_2_in_one_line(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` then fails on
    config = tmp_path / "config.yaml"
    config.write_text("vocabulary: [x]\nmodel: {runtime: openvino}\n")
    assert cli.main(["--once", "--config", str(config), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.runtime" in err
    assert "pip install 'autotag[openvino]'" in err
    # auto without OpenVINO is TensorFlow, silently
    assert parse_config("vocabulary: [x]\nmodel: {runtime: auto}\n", tmp_path)
    assert choose_runtime("auto") == "tensorflow"


def test_auto_is_openvino_on_a_cpu(model_dir, openvino_cache):
    assert choose_runtime("auto") == "openvino"  # no GPU here
    model = load_model(str(model_dir), runtime="auto", cache_dir=openvino_cache)
    assert model.runtime == "openvino"


def test_fetch_model_prepares_the_conversion_and_lazy_loading_follows_config(model_dir,
                                                                             tmp_path):
    config = parse_config(f"vocabulary: [x]\nmodel: {{handle: '{model_dir}'}}\n", tmp_path)
    path = prepare_runtime(config.model, cache_dir=tmp_path / "cache")
    assert path is not None and (path / "video.xml").is_file()
    lazy = LazyEmbedder.from_config(config.model)
    assert not lazy.loaded and lazy.requested_runtime == "auto"
    tf_only = parse_config(f"vocabulary: [x]\nmodel: {{handle: '{model_dir}', runtime: "
                           "tensorflow}\n", tmp_path)
    assert prepare_runtime(tf_only.model) is None


def test_importing_autotag_imports_neither_runtime():
    code = ("import sys, autotag, autotag.model, autotag.config, autotag.runtimes.openvino\n"
            "from autotag.config import parse_config\n"
            "from pathlib import Path\n"
            "parse_config('vocabulary: [x]\\nmodel: {runtime: openvino}\\n', Path('.'))\n"
            "bad = [m for m in ('tensorflow', 'openvino') if m in sys.modules]\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_failed_conversion_leaves_logging_as_it_was(tmp_path):
    """OpenVINO's converter sets the root logger to ERROR and restores it only on success."""
    from autotag.runtimes import openvino as runtime

    root = logging.getLogger()
    level, filters = root.level, list(root.filters)
    with pytest.raises(runtime.ConversionError, match="cannot convert"):
        runtime.convert_signature(str(tmp_path / "no-such-model.pb"), BATCH, tmp_path / "ir")
    assert root.level == level and root.filters == filters


def test_model_precision_bf16_is_an_opt_in_that_keeps_the_tags(model_dir, openvino_cache,
                                                                 tmp_path):
    """model.precision: bf16 compiles the same converted model with bf16 arithmetic where the
    CPU has it (elsewhere OpenVINO keeps f32): the ranking the tags come from is kept."""
    on_tf = load_model(str(model_dir))
    fast = load_model(str(model_dir), runtime="openvino", batch_size=BATCH, precision="bf16",
                      cache_dir=openvino_cache)
    assert fast.runtime == "openvino"
    frames = windows(4)
    a, b = fast.embed_video(frames), on_tf.embed_video(frames)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999, cosine
    texts = on_tf.embed_text(["red", "green", "blue", "moving", "bright"])
    np.testing.assert_array_equal((a @ texts.T).argmax(1), (b @ texts.T).argmax(1))
    bad = tmp_path / "config.yaml"
    bad.write_text(f"model: {{handle: '{model_dir}', precision: fp16}}\nvocabulary: [red]\n")
    with pytest.raises(ConfigError, match="model.precision"):
        load_config(bad)


def test_conversion_never_starts_openvinos_telemetry(tmp_path, model_dir):
    """OpenVINO's converter sends usage events unless told not to (no consent file counts as
    yes): autotag converts with it left out, so no telemetry thread or client id appears."""
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from autotag.model import load_model\n"
        "m = load_model(sys.argv[1], runtime='openvino', batch_size=1, cache_dir=Path(sys.argv[2]))\n"
        "assert m.runtime == 'openvino' and m.converted\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
        "print(sys.modules.get('openvino_telemetry'))\n")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script, str(model_dir), str(tmp_path / "c")],
                          capture_output=True, text=True, env=env, check=True)
    threads, module = done.stdout.splitlines()[-2:]
    assert "ThreadPoolExecutor" not in threads and module == "None"
    assert not (tmp_path / "home" / "intel").exists()  # no telemetry client id written
