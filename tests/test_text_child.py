"""The web app's query text: a TensorFlow child kept between queries that ends itself when idle
(runtimes/child.py ResidentText; the daemon's own prompts still use a child per call)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from autotag.model import LazyEmbedder, ModelError


def test_a_resident_text_child_answers_many_queries_then_ends_itself_when_idle(model_dir,
                                                                                 embedder):
    lazy = LazyEmbedder(str(model_dir), runtime="openvino", text_idle=3.0)
    try:
        first = lazy.embed_text(["red", "blue water"])
        child = lazy._text._child
        pid = child._proc.pid
        second = lazy.embed_text(["green"])
        assert child._proc.pid == pid  # the same child: TensorFlow started once
        np.testing.assert_allclose(first, embedder.embed_text(["red", "blue water"]), atol=1e-5)
        np.testing.assert_allclose(second, embedder.embed_text(["green"]), atol=1e-5)
        assert not lazy.loaded  # no video model was compiled for text
        deadline = time.monotonic() + 30
        while child._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert child._proc.poll() == 0  # it ended by itself, idle
        again = lazy.embed_text(["red"])  # a new child, transparently
        np.testing.assert_allclose(again, first[:1], atol=1e-5)
        assert child._proc.pid != pid
    finally:
        lazy.close()
    assert not child.running


def test_a_resident_text_child_that_cannot_load_the_model_says_why(tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    lazy = LazyEmbedder(str(broken), runtime="openvino", text_idle=30.0)
    try:
        with pytest.raises(ModelError) as failed:
            lazy.embed_text(["red"])
        assert str(failed.value) and "\n" not in str(failed.value)
    finally:
        lazy.close()
