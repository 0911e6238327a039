"""Config vocabulary → prompts → text embeddings (cached on disk per model) → one vector per tag.

A tag with several prompts is a prompt ensemble: its vector is the mean of its prompts' text
embeddings, so its score is the mean of the prompts' scores (CLIP's prompt ensembling).
Embeddings are cached per model fingerprint and prompt, so a restart, or adding one tag,
embeds only what is new.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag.atomic import write_atomic
from autotag.config import VocabEntry
from autotag.model import Embedder

log = logging.getLogger(__name__)

TEXT_BATCH = 256  # prompts per text-signature call


@dataclass(frozen=True)
class Vocabulary:
    """The tags and their text vectors.

    vectors: float32 [n_tags, 512], row i for entries[i].
    unknown: prompts the model knows no word of (they embed like the empty string).
    """

    entries: tuple[VocabEntry, ...]
    vectors: np.ndarray
    fingerprint: str
    unknown: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(e.label for e in self.entries)


def vocabulary_fingerprint(entries: tuple[VocabEntry, ...], model_fingerprint: str) -> str:
    """Changes when a tag, a prompt or the model changes: what makes stored tags stale."""
    spec = json.dumps([model_fingerprint, [[e.label, list(e.prompts)] for e in entries]])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def normalise_prompt(prompt: str) -> str:
    """MIL-NCE's word vocabulary is lower-case (HowTo100M's ASR text); 'Skiing' would be unknown."""
    return " ".join(prompt.lower().split())


def build_vocabulary(entries: tuple[VocabEntry, ...], embedder: Embedder,
                     cache_dir: Path | None) -> Vocabulary:
    """Embed every prompt (from the cache where possible) and average each tag's prompts."""
    prompts = sorted({normalise_prompt(p) for e in entries for p in e.prompts} | {""})
    table = embed_texts(prompts, embedder, text_cache(cache_dir, embedder))
    empty = table[""]
    unknown = tuple(p for p in prompts if p and np.allclose(table[p], empty, atol=1e-6))
    for prompt in unknown:
        log.warning("prompt %r: the model knows none of its words, so it scores like an empty "
                    "string; rephrase it in plain English words", prompt)
    vectors = np.stack([np.mean([table[normalise_prompt(p)] for p in e.prompts], axis=0)
                        for e in entries]).astype(np.float32)
    return Vocabulary(entries, vectors, vocabulary_fingerprint(entries, embedder.fingerprint),
                      unknown)


def embed_query(query: str, embedder: Embedder, cache_dir: Path | None
                ) -> tuple[np.ndarray, bool]:
    """A free-text query → (float32 [512], whether the model knows any of its words)."""
    query = normalise_prompt(query)
    table = embed_texts([query, ""], embedder, text_cache(cache_dir, embedder))
    return table[query], not np.allclose(table[query], table[""], atol=1e-6)


def text_cache(cache_dir: Path | None, embedder: Embedder) -> TextCache | None:
    """The on-disk text-embedding cache of this model, or None without a cache folder."""
    return TextCache(cache_dir / "text-embeddings" / embedder.fingerprint) if cache_dir else None


def embed_texts(texts: list[str], embedder: Embedder,
                cache: TextCache | None = None) -> dict[str, np.ndarray]:
    """text → float32 [512], calling the model only for texts not in the cache."""
    found = {t: v for t in texts if cache and (v := cache.get(t)) is not None}
    missing = [t for t in texts if t not in found]
    for i in range(0, len(missing), TEXT_BATCH):
        chunk = missing[i:i + TEXT_BATCH]
        for text, vector in zip(chunk, embedder.embed_text(chunk), strict=True):
            found[text] = vector.astype(np.float32)
            if cache:
                cache.put(text, found[text])
    if missing:
        log.info("embedded %d text(s) with the model; %d from the cache", len(missing),
                 len(texts) - len(missing))
    return found


class TextCache:
    """One .npy file per prompt, named by its hash, in a folder per model fingerprint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, text: str) -> Path:
        return self.folder / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".npy")

    def get(self, text: str) -> np.ndarray | None:
        try:
            vector = np.load(self._path(text), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return vector if vector.dtype == np.float32 and vector.ndim == 1 else None

    def put(self, text: str, vector: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, vector.astype(np.float32), allow_pickle=False)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(text), buffer.getvalue())
        except OSError as exc:  # a read-only cache costs a recomputation, nothing more
            log.debug("cannot cache a text embedding in %s: %s", self.folder, exc)
