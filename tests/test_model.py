"""Model loading through tensorflow_hub: local SavedModel, the hub cache, clear offline errors."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from autotag.config import HUB_HANDLE
from autotag.model import ModelError, fingerprint, hub_cache_dir, load_model


def test_signatures_match_the_hub_model(embedder):
    import tensorflow as tf

    video = embedder.video_fn(tf.zeros((2, 32, 64, 64, 3)))
    assert video["video_embedding"].shape == (2, 512)
    assert video["mixed_5c"].shape == (2, 1024)
    text = embedder.embed_text(["red", "a person skiing", ""])
    assert text.shape == (3, 512) and text.dtype == np.float32


def test_the_test_model_means_something(embedder):
    red = np.zeros((1, 32, 16, 16, 3), np.float32)
    red[..., 0] = 1.0
    scores = embedder.embed_video(red) @ embedder.embed_text(["red", "blue", "green"]).T
    assert scores.argmax() == 0 and scores[0, 0] > 4 > 0 > scores[0, 1]


def test_hub_cache_is_persistent_and_honours_tfhub_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    assert hub_cache_dir() == tmp_path / "xdg-cache" / "autotag" / "tfhub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "mine"))
    assert hub_cache_dir() == tmp_path / "mine"


def test_hub_handle_loads_from_the_cache_without_network(model_dir, tmp_path, monkeypatch):
    # tensorflow_hub keeps a downloaded handle in <cache>/<sha1(handle)>: what fetch-model leaves
    cache = tmp_path / "hub"
    shutil.copytree(model_dir, cache / hashlib.sha1(HUB_HANDLE.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    model = load_model(HUB_HANDLE)
    assert model.embed_text(["red"])[0, 0] == pytest.approx(1.0)


def test_unreachable_hub_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelError) as info:
        load_model("http://127.0.0.1:9/deepmind/mil-nce/s3d/1")  # refused at once, no network
    message = str(info.value)
    assert "\n" not in message and "model.handle" in message and "fetch-model" in message


def test_a_folder_that_is_not_the_model_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="model.handle"):
        load_model(str(tmp_path / "junk"))


def test_fingerprint_follows_the_weights(model_dir, tmp_path):
    copy = shutil.copytree(model_dir, tmp_path / "m")
    before = fingerprint(str(copy))
    assert before == fingerprint(str(copy))
    (copy / "saved_model.pb").write_bytes((copy / "saved_model.pb").read_bytes() + b"\0")
    assert fingerprint(str(copy)) != before
