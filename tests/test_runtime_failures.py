"""A runtime that cannot be used (issue 29): OpenVINO's failed conversion says why once, with
the fix, is recorded beside the cache and not tried again on every run, until a version
changes or `autotag fetch-model` retries; the converter's child reports a broken TensorFlow in
one line; OpenVINO's TensorFlow frontend converts on Python 3.13."""

from __future__ import annotations

import logging
import sys

import pytest

from autotag.config import openvino_installed, parse_config
from autotag.model import ModelError, load_model, prepare_runtime
from autotag.runtimes import child, failed

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

REASON = "OpenVINO cannot convert the video signature: no translator found for Conv3DNew"


class Conversions:
    """child.convert replaced by a failing conversion; `calls` lists the folders it was asked
    for, and `works()` puts the real conversion back (the user fixed the cause)."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list = []
        self._monkeypatch = monkeypatch
        self._real = child.convert
        monkeypatch.setattr(child, "convert", self._broken)

    def _broken(self, handle, batch_size, folder, *args, **kwargs):
        self.calls.append(folder)
        raise child.ChildError(child.EXIT_CONVERSION, REASON)

    def _counted(self, handle, batch_size, folder, *args, **kwargs):
        self.calls.append(folder)
        return self._real(handle, batch_size, folder, *args, **kwargs)

    def works(self) -> None:
        self._monkeypatch.setattr(child, "convert", self._counted)


@pytest.fixture
def conversions(monkeypatch) -> Conversions:
    return Conversions(monkeypatch)


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failed_conversion_warns_once_and_is_not_tried_on_the_next_run(model_dir, tmp_path,
                                                                        conversions, caplog):
    calls = conversions.calls
    caplog.set_level(logging.INFO, "autotag")
    first = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert first.runtime == "tensorflow" and len(calls) == 1
    (warning,) = warnings_in(caplog)
    assert "\n" not in warning and REASON in warning
    assert "autotag fetch-model" in warning and "model.runtime: tensorflow" in warning
    (record,) = tmp_path.glob(f"*{failed.SUFFIX}")
    assert REASON in record.read_text()

    caplog.clear()
    second = load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert second.runtime == "tensorflow"
    assert len(calls) == 1  # not converted again
    assert warnings_in(caplog) == []  # said once; now an info line says why TensorFlow runs it
    assert any(REASON in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_a_new_version_tries_again(model_dir, tmp_path, conversions, monkeypatch):
    calls = conversions.calls
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    versions = failed.versions()
    monkeypatch.setattr(failed, "versions", lambda: {**versions, "tensorflow": "99.0"})
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert len(calls) == 2


def test_the_record_is_per_precision_and_batch_size(model_dir, tmp_path, conversions):
    calls = conversions.calls
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path, precision="bf16")
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path, batch_size=4)
    assert len(calls) == 3


def test_fetch_model_retries_and_a_success_clears_the_record(model_dir, tmp_path, conversions):
    calls = conversions.calls
    load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert list(tmp_path.glob(f"*{failed.SUFFIX}"))
    conversions.works()  # the user fixed the cause
    config = parse_config(f"vocabulary: [x]\nmodel: {{handle: '{model_dir}'}}\n", tmp_path)
    path = prepare_runtime(config.model, cache_dir=tmp_path)
    assert path is not None and (path / "video.xml").is_file() and len(calls) == 2
    assert not list(tmp_path.glob(f"*{failed.SUFFIX}"))
    assert load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path).runtime == "openvino"


def test_a_model_that_cannot_be_loaded_is_an_error_and_not_recorded(model_dir, tmp_path,
                                                                    monkeypatch):
    def unloadable(*args, **kwargs):
        raise child.ChildError(child.EXIT_MODEL, "cannot download the model (no network)")

    monkeypatch.setattr(child, "convert", unloadable)
    with pytest.raises(ModelError, match="no network"):
        load_model(str(model_dir), runtime="openvino", cache_dir=tmp_path)
    assert not list(tmp_path.glob(f"*{failed.SUFFIX}"))  # the next run tries again


def test_the_converter_child_reports_a_broken_tensorflow_in_one_line(model_dir, tmp_path,
                                                                     monkeypatch, capsys):
    """What tensorflow_hub did with setuptools >= 81: an ImportError while loading. It is not a
    conversion failure (the parent could not run TensorFlow either): exit EXIT_MODEL, one line."""
    from autotag import model, tfworker

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'pkg_resources'")

    monkeypatch.setattr(model, "load_tensorflow_model", broken)
    code = tfworker.main(["convert", str(model_dir), "2", str(tmp_path / "ir")])
    assert code == child.EXIT_MODEL
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "ModuleNotFoundError: No module named 'pkg_resources'" in line


def test_openvinos_tensorflow_frontend_reads_tensorflows_version_on_this_python():
    """On Python 3.13 OpenVINO's own get_environment_setup raises NameError (its exec pair under
    PEP 667) and every conversion fails; after the patch it answers on every Python."""
    pytest.importorskip("openvino.frontend.tensorflow.utils")
    import tensorflow as tf
    from openvino.frontend.tensorflow import utils

    from autotag.runtimes.ovcompat import patch_tensorflow_frontend

    patch_tensorflow_frontend()
    setup = utils.get_environment_setup("tf")
    assert setup["tensorflow"] == tf.__version__
    assert setup["python_version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")


def test_the_frontend_patch_builds_the_answer_when_the_original_fails(monkeypatch):
    pytest.importorskip("openvino.frontend.tensorflow.utils")
    import tensorflow as tf
    from openvino.frontend.tensorflow import utils

    from autotag.runtimes import ovcompat

    def as_on_313(framework):
        raise NameError("name 'tensorflow' is not defined")

    monkeypatch.setattr(utils, "get_environment_setup", as_on_313)
    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    ovcompat.patch_tensorflow_frontend()
    setup = utils.get_environment_setup("tf")
    assert setup["tensorflow"] == tf.__version__
    assert set(setup) == {"python_version", "sys_platform", "tensorflow"}
