"""Vocabulary: prompt ensembles, the on-disk cache, unknown-word prompts."""

from __future__ import annotations

import logging

import numpy as np

from autotag.config import VocabEntry
from autotag.vocabulary import build_vocabulary, vocabulary_fingerprint


class CountingText:
    """Wraps an embedder and counts the texts it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.texts: list[str] = []

    def embed_text(self, texts):
        self.texts.extend(texts)
        return self.inner.embed_text(texts)

    def embed_video(self, frames):
        return self.inner.embed_video(frames)


ENTRIES = (VocabEntry("red", ("red",)), VocabEntry("sea", ("blue water", "Sky")))


def test_prompt_ensemble_is_the_mean_of_its_prompts(embedder, tmp_path):
    vocab = build_vocabulary(ENTRIES, embedder, tmp_path)
    expected = embedder.embed_text(["blue water", "sky"]).mean(axis=0)
    np.testing.assert_allclose(vocab.vectors[1], expected, rtol=1e-6)
    assert vocab.labels == ("red", "sea")
    assert vocab.vectors.dtype == np.float32


def test_text_embeddings_are_cached_across_restarts(embedder, tmp_path):
    first = CountingText(embedder)
    build_vocabulary(ENTRIES, first, tmp_path)
    assert sorted(first.texts) == ["", "blue water", "red", "sky"]
    again = CountingText(embedder)
    vocab = build_vocabulary(ENTRIES + (VocabEntry("grass", ("green grass",)),), again, tmp_path)
    assert again.texts == ["green grass"]  # only the new prompt is embedded
    assert vocab.vectors.shape == (3, 512)


def test_unknown_prompts_are_reported(embedder, tmp_path, caplog):
    entries = (VocabEntry("red", ("red",)), VocabEntry("zz", ("qwxz blorp",)))
    with caplog.at_level(logging.WARNING):
        vocab = build_vocabulary(entries, embedder, tmp_path)
    assert vocab.unknown == ("qwxz blorp",)
    assert "qwxz blorp" in caplog.text and "knows none of its words" in caplog.text


def test_fingerprint_changes_with_prompts_and_model():
    base = vocabulary_fingerprint(ENTRIES, "m1")
    assert base == vocabulary_fingerprint(ENTRIES, "m1")
    assert base != vocabulary_fingerprint(ENTRIES, "m2")
    assert base != vocabulary_fingerprint(ENTRIES[:1], "m1")
