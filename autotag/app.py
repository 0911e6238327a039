"""Config → model → vocabulary → store → outputs → pipeline: the composition root.

Builds the collaborators once and hands them to each other, so the pipeline, the daemon and
the search and retag commands share one way of starting up, and tests can build the same
objects with a fake embedder.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from autotag.config import Config, default_cache_dir
from autotag.model import Embedder, load_model
from autotag.outputs import build_outputs
from autotag.pipeline import Pipeline, Tagger
from autotag.store import Store
from autotag.vocabulary import Vocabulary, build_vocabulary

log = logging.getLogger(__name__)


@dataclass
class App:
    config: Config
    embedder: Embedder
    vocabulary: Vocabulary
    store: Store
    tagger: Tagger
    pipeline: Pipeline

    def close(self) -> None:
        self.store.close()


def with_model(config: Config, handle: str | None) -> Config:
    """`--model` overrides model.handle (a URL, or a directory relative to the current one)."""
    if handle is None:
        return config
    if "://" not in handle:
        handle = str(Path(handle).expanduser().resolve())
    return dataclasses.replace(config, model=dataclasses.replace(config.model, handle=handle))


def open_app(config: Config, embedder: Embedder | None = None,
             cache_dir: Path | None = None) -> App:
    """Load the model (unless given), embed the vocabulary, open the store, choose outputs."""
    if embedder is None:
        log.info("loading the model from %s", config.model.handle)
        embedder = load_model(config.model.handle, config.model.threads)
    vocabulary = build_vocabulary(config.vocabulary, embedder, cache_dir or default_cache_dir())
    store = Store(config.state.store_path)
    tagger = Tagger(config, vocabulary, build_outputs(config), store, embedder.fingerprint)
    return App(config, embedder, vocabulary, store, tagger,
               Pipeline(config, embedder, tagger, store))
