"""Model loading: local SavedModel, the hub cache (tensorflow_hub's layout), offline errors."""

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


# -- the real model's TF1 Hub module format (issue 14) ---------------------------------------

def test_the_tf1_hub_format_test_model_is_the_real_format(model_dir_tf1):
    from tensorflow.core.protobuf import saved_model_pb2

    assert (model_dir_tf1 / "tfhub_module.pb").is_file()
    saved = saved_model_pb2.SavedModel.FromString((model_dir_tf1 / "saved_model.pb").read_bytes())
    (meta,) = saved.meta_graphs
    assert list(meta.meta_info_def.tags) == []  # the empty tag set
    assert set(meta.signature_def) >= {"video", "text"}
    assert all(len(meta.signature_def[s].inputs) == 1 for s in ("video", "text"))
    assert "saved_model_main_op" in meta.collection_def  # the vocabulary table's initialiser


def test_tf1_hub_format_loads_and_means_the_same(embedder, embedder_tf1):
    assert embedder_tf1.fingerprint != embedder.fingerprint
    windows = np.random.default_rng(1).random((3, 32, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(embedder_tf1.embed_video(windows), embedder.embed_video(windows),
                               rtol=1e-5, atol=1e-5)
    texts = ["red", "blue water", "a person skiing", "", "Dark NIGHT"]
    np.testing.assert_array_equal(embedder_tf1.embed_text(texts), embedder.embed_text(texts))


def test_tf1_hub_format_loads_from_the_hub_cache(model_dir_tf1, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    shutil.copytree(model_dir_tf1, cache / hashlib.sha1(HUB_HANDLE.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    model = load_model(HUB_HANDLE)
    assert model.embed_text(["blue sky"])[0, 2] == pytest.approx(2.0)
