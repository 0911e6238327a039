"""Config vocabulary → one vector per tag, float32 [n_tags, 512]:

    prompts  → text embeddings (cached on disk per model) → their mean ──────────────┐
    examples → the engine: stored clip embeddings (or embedded once, then stored)     ├→ mean
             → fitted against the library's background (scoring.fit_examples) ────────┘

A tag with several prompts is a prompt ensemble: its vector is the mean of its prompts' text
embeddings, so its score is the mean of the prompts' scores (CLIP's prompt ensembling).
Embeddings are cached per model fingerprint and prompt, so a restart, or adding one tag,
embeds only what is new.

Tags from examples (issues 21, 31). A tag may name example clips instead of, or beside,
prompts. It means "more like these than like the rest of the library": scoring.fit_examples
measures the examples against the library's background (the store's mean clip embedding, kept
current as clips are saved, and a sample of the library's clips): the mean's direction, which
every clip shares, is taken out, the examples' centroid is the direction, and the threshold
falls HELD_OUT_FRACTION of the way from a typical clip to the examples (each scored by the
others' direction, in the background's spread). The vector is scaled so that a typical
clip scores 0 and the threshold tagging.min_score: an example tag is given, segmented and
searched like a text tag. The background a tag was fitted against is stored and kept until the
library grows or shrinks by a quarter (REFIT_CHANGE), so adding a clip does not re-tag the
library; its key is in the fingerprint, so a refit re-tags every clip from stored embeddings.

A library of fewer than MIN_BACKGROUND clips has no background to speak of: its example tags
are scaled from the origin (the examples' mean score MATCH_SCORE: MATCH_SCORE · c / (c · c)),
with a warning, until a start or reload finds enough clips. A tag with prompts and examples
averages its text vector and its example vector: its score is the mean of the two scores. The
fingerprint holds each example's content hash and a digest of its stored embeddings.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autotag.atomic import write_atomic
from autotag.config import ConfigError, VocabEntry
from autotag.engine import EMBEDDED, STORED
from autotag.model import Embedder, ModelError
from autotag.scoring import STANDS_OUT, Background, fit_examples

if TYPE_CHECKING:
    from autotag.engine import Engine
    from autotag.store import Store

log = logging.getLogger(__name__)

TEXT_BATCH = 256  # prompts per text-signature call
# The raw score an example tag's own examples get, on average: twice tagging.min_score's
# default (3.0), a good text match (MIL-NCE scores matches about 4..9)
MATCH_SCORE = 6.0
# The example rules, in the fingerprint: a new rule or MATCH_SCORE re-tags every clip
EXAMPLE_RULE = f"centroid-scaled-to-{MATCH_SCORE:g}"  # from the origin: no background yet
BACKGROUND_RULE = "centroid-off-mean-half-way-v1"  # scoring.fit_examples
MIN_BACKGROUND = 16  # clips the store must hold before example tags are fitted against them
BACKGROUND_SAMPLE = 2000  # clips whose scores give the background's spread (4 MB at 512 wide)
REFIT_CHANGE = 1.25  # the fitted background is kept until the library is this × larger/smaller
# Examples whose centroid is this small against their own size (c·c / mean e·e) cancel out:
# nothing in common to find (and the vector would divide by nearly zero)
MIN_COHERENCE = 1e-6


@dataclass(frozen=True)
class Vocabulary:
    """The tags and their vectors.

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


@dataclass(frozen=True)
class Example:
    """One example clip as its tag uses it."""

    path: Path
    sha256: str  # its content: what the fingerprint names
    embedding: np.ndarray  # float32 [512]: its clip embedding (the mean of its windows)


class ExampleError(ConfigError, ModelError):
    """An example clip cannot make its tag's vector (it does not decode; the examples cancel
    out): one line naming the tag, the clip and the fix. A configuration problem found when
    the app is built, so it is caught where a model that cannot load is (exit 2; a reload
    keeps the running configuration)."""


def vocabulary_fingerprint(entries: tuple[VocabEntry, ...], model_fingerprint: str,
                           examples: Mapping[Path, Example] | None = None,
                           background: Background | None = None,
                           at: float = MATCH_SCORE / 2) -> str:
    """Changes when a tag, a prompt, an example's content, the background example tags were
    fitted against (and the score their threshold maps to) or the model changes: what makes
    stored tags stale. A vocabulary of prompts only hashes as it did before examples existed.
    examples: every entry's examples (example_embeddings), needed when any entry has some."""
    rule = [BACKGROUND_RULE, background.key(), at] if background is not None \
        else EXAMPLE_RULE
    spec = json.dumps([model_fingerprint,
                       [_entry_spec(e, examples or {}, rule) for e in entries]])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _entry_spec(entry: VocabEntry, examples: Mapping[Path, Example], rule) -> list:
    spec: list = [entry.label, list(entry.prompts)]
    if entry.examples:  # content, not paths: a renamed example changes nothing
        spec.append([rule, sorted(_example_key(_example(entry, path, examples))
                                  for path in entry.examples)])
    return spec


def _example_key(example: Example) -> str:
    """Its content hash and a digest of its stored embedding (`--force` may re-embed it)."""
    embedding = np.ascontiguousarray(example.embedding, dtype=np.float32)
    return f"{example.sha256}:{hashlib.sha256(embedding.tobytes()).hexdigest()[:16]}"


def _example(entry: VocabEntry, path: Path, examples: Mapping[Path, Example]) -> Example:
    try:
        return examples[path]
    except KeyError:  # a caller's mistake, not the user's
        raise ValueError(f"the tag {entry.label!r} has the example {path}, whose embedding was "
                         "not given; pass example_embeddings(...) as examples") from None


def normalise_prompt(prompt: str) -> str:
    """MIL-NCE's word vocabulary is lower-case (HowTo100M's ASR text); 'Skiing' would be unknown."""
    return " ".join(prompt.lower().split())


def build_vocabulary(entries: tuple[VocabEntry, ...], embedder: Embedder,
                     cache_dir: Path | None,
                     examples: Mapping[Path, Example] | None = None,
                     background: Background | None = None,
                     at: float = MATCH_SCORE / 2) -> Vocabulary:
    """Embed every prompt (from the cache where possible), average each tag's prompts, and
    combine them with its examples' vector (examples: example_embeddings' answer; needed when
    an entry has examples), fitted against `background` (library_background's answer) so
    that its threshold scores `at` (tagging.min_score). Raises ExampleError for examples
    that cancel out."""
    examples = examples or {}
    if background is None and any(e.examples for e in entries):
        log.warning("the library holds fewer than %d clips, so tags from examples are scored "
                    "from the origin (they may tag nearly every clip); they are fitted against "
                    "the library at the next start or reload once it holds more",
                    MIN_BACKGROUND)
    prompts = sorted({normalise_prompt(p) for e in entries for p in e.prompts} | {""})
    table = embed_texts(prompts, embedder, text_cache(cache_dir, embedder))
    empty = table[""]
    unknown = tuple(p for p in prompts if p and np.allclose(table[p], empty, atol=1e-6))
    for prompt in unknown:
        log.warning("prompt %r: the model knows none of its words, so it scores like an empty "
                    "string; rephrase it in plain English words", prompt)
    vectors = np.stack([tag_vector(e, table, examples, background, at)
                        for e in entries]).astype(np.float32)
    return Vocabulary(entries, vectors, vocabulary_fingerprint(
        entries, embedder.fingerprint, examples, background, at), unknown)


def tag_vector(entry: VocabEntry, table: Mapping[str, np.ndarray],
               examples: Mapping[Path, Example], background: Background | None = None,
               at: float = MATCH_SCORE / 2) -> np.ndarray:
    """One tag's vector, float32 [512]: the mean of its prompts' text embeddings (table: the
    normalised prompt's), its examples' vector (example_vector), or the mean of the two."""
    parts = []
    if entry.prompts:
        parts.append(np.mean([table[normalise_prompt(p)] for p in entry.prompts], axis=0))
    if entry.examples:
        embeddings = np.stack([_example(entry, p, examples).embedding for p in entry.examples])
        vector = example_vector(embeddings) if background is None \
            else _fitted(entry.label, embeddings, background, at)
        if vector is None:
            raise ExampleError(f"vocabulary: the examples of the tag {entry.label!r} cancel "
                               "out (their embeddings have nothing in common, or the model "
                               "sees nothing in them); choose clips that show the same thing")
        parts.append(vector)
    return np.mean(parts, axis=0).astype(np.float32)


def _fitted(label: str, embeddings: np.ndarray, background: Background, at: float
            ) -> np.ndarray | None:
    fit = fit_examples(embeddings, background, at)
    if fit is None:
        return None
    log.info("the tag %r from %d example(s): its threshold %.1f background spreads above a "
             "typical clip; the examples score %.1f of them held out", label,
             len(embeddings), fit.threshold_spreads, float(np.mean(fit.examples)) / fit.spread)
    if np.mean(fit.examples) / fit.spread < STANDS_OUT:
        log.warning("the examples of the tag %r are hardly more alike than a typical clip of "
                    "the library (held out, %.1f background spreads above one); choose clips "
                    "that show one thing the rest of the library does not", label,
                    float(np.mean(fit.examples)) / fit.spread)
    return fit.vector


def library_background(store: Store, model: str, minimum: int = MIN_BACKGROUND,
                       keep: bool = True) -> Background | None:
    """The background example tags are fitted against: the one fitted last, while the library
    is within REFIT_CHANGE of its size then, else a new one (the store's mean, a sample of
    BACKGROUND_SAMPLE clips), saved unless keep is False (a reader: "more like this" leaves
    the store as it was). None below `minimum` clips."""
    live = store.background_total(model)
    if live is None or live[0] < minimum:
        return None
    count, total = live
    fitted = store.background_fit(model)
    if fitted is not None and count / REFIT_CHANGE <= fitted[0] <= count * REFIT_CHANGE:
        return Background(*fitted)
    mean = (total / count).astype(np.float32)
    background = Background(count, mean, store.vector_sample(model, BACKGROUND_SAMPLE))
    if not keep:
        return background
    try:
        store.save_background_fit(model, count, background.mean, background.sample)
    except sqlite3.Error as exc:  # a read-only store: fitted again next time
        log.debug("cannot keep the fitted background in the store: %s", exc)
    log.info("example tags are fitted against a new background: %d clips", count)
    return background


def example_vector(embeddings: np.ndarray) -> np.ndarray | None:
    """Examples' clip embeddings float32 [n, 512] → the tag's vector float32 [512], scaled so
    that the examples' mean score is MATCH_SCORE: MATCH_SCORE · c / (c · c), c their centroid.
    None when the centroid is (nearly) zero against the examples' own size."""
    embeddings = np.asarray(embeddings, np.float64)
    centroid = embeddings.mean(axis=0)
    power = float(centroid @ centroid)
    own = float(np.mean(np.sum(embeddings * embeddings, axis=1)))
    if not power > MIN_COHERENCE * own or not np.isfinite(power):
        return None
    return (MATCH_SCORE * centroid / power).astype(np.float32)


def example_embeddings(entries: tuple[VocabEntry, ...], engine: Engine) -> dict[Path, Example]:
    """Every entry's example clips → their clip embeddings, from the engine: the store's when
    it holds this content for this model (no decoding), else decoded and embedded once and
    saved to the store by the engine (not tagged: no sidecar, no files record; an example
    inside a tagged folder is tagged there, from these stored embeddings). Raises
    ExampleError naming the first example that cannot be used; ModelError propagates."""
    paths = list(dict.fromkeys(p for e in entries for p in e.examples))
    if not paths:
        return {}
    found: dict[Path, Example] = {}
    embedded = 0
    outcomes = engine.embed(paths)  # no `fresh`: an example is never "up to date", it is read
    try:
        for outcome in outcomes:
            if outcome.status not in (EMBEDDED, STORED) or outcome.clip is None:
                label = next(e.label for e in entries if outcome.path in e.examples)
                raise ExampleError(f"vocabulary: the tag {label!r} cannot use its example "
                                   f"{outcome.path}: {outcome.reason}; fix or replace the clip, "
                                   "or remove it from the tag's examples")
            clip = outcome.clip
            found[outcome.path] = Example(outcome.path, clip.source.sha256, clip.clip_embedding)
            embedded += outcome.status == EMBEDDED
    finally:
        outcomes.close()
    log.info("example clips: %d from the state store, %d embedded now (and stored)",
             len(found) - embedded, embedded)
    return found


def embed_query(query: str, embedder: Embedder, cache_dir: Path | None
                ) -> tuple[np.ndarray, bool]:
    """A free-text query → (float32 [512], whether the model knows any of its words)."""
    query = normalise_prompt(query)
    cache = QueryCache(cache_dir / "query-embeddings" / embedder.fingerprint) if cache_dir \
        else None
    table = embed_texts([query, ""], embedder, cache)
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


QUERY_CACHE_FILES = 4096  # query embeddings kept on disk at most (2 KB each: ~8 MB)
QUERY_CACHE_AGE = 30 * 86400.0  # s; a query not asked for this long is embedded again
QUERY_CACHE_SWEEP = 64  # new entries between two sweeps of the folder


class QueryCache(TextCache):
    """TextCache for search queries, which anyone who can search makes up: bounded in count
    (least recently used deleted first) and in age (issue 30: it grew without end, 300 files
    in 1.7 s). Vocabulary prompts stay in TextCache: the config bounds them."""

    def __init__(self, folder: Path, max_files: int = QUERY_CACHE_FILES,
                 max_age: float = QUERY_CACHE_AGE) -> None:
        super().__init__(folder)
        self.max_files, self.max_age = max_files, max_age

    def get(self, text: str) -> np.ndarray | None:
        path = self._path(text)
        try:
            if time.time() - path.stat().st_mtime > self.max_age:
                path.unlink(missing_ok=True)
                return None
        except OSError:
            return None
        vector = super().get(text)
        if vector is not None:
            try:
                os.utime(path)  # used now: its mtime is its place in the LRU order
            except OSError:
                pass
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        super().put(text, vector)
        with _sweep_lock:
            count = _puts[self.folder] = _puts.get(self.folder, QUERY_CACHE_SWEEP) + 1
            if count < QUERY_CACHE_SWEEP:
                return
            _puts[self.folder] = 0
        self.sweep()

    def sweep(self) -> None:
        """Delete entries past max_age, then the least recently used past max_files."""
        now = time.time()
        files = []
        try:
            with os.scandir(self.folder) as scan:
                for entry in scan:
                    try:
                        files.append((entry.stat().st_mtime, entry.path))
                    except OSError:
                        continue
        except OSError:
            return
        files.sort(reverse=True)  # newest first
        for k, (mtime, path) in enumerate(files):
            if k >= self.max_files or now - mtime > self.max_age:
                with contextlib.suppress(OSError):
                    os.unlink(path)


_sweep_lock = threading.Lock()
_puts: dict[Path, int] = {}  # cache folder → entries put since its last sweep (first: sweep)
