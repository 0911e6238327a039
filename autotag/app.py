"""Config → model → store → engine → vocabulary (prompts, examples) → outputs → tagger: the
composition root.

The one factory every command and the daemon build their collaborators with; it accepts an
embedder, so tests (and a reload that keeps the model) hand in theirs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autotag.config import Config, default_cache_dir
from autotag.engine import Engine, RetryFailed
from autotag.model import Embedder, LazyEmbedder, load_configured
from autotag.outputs import build_outputs
from autotag.passes import UpToDate, may_retry
from autotag.search.vectors import keep_current
from autotag.store import Store
from autotag.tagging import ClipResult, Tagger
from autotag.vocabulary import (
    Vocabulary,
    build_vocabulary,
    example_embeddings,
    library_background,
)

log = logging.getLogger(__name__)


@dataclass
class App:
    config: Config
    embedder: Embedder
    vocabulary: Vocabulary
    store: Store
    engine: Engine
    tagger: Tagger
    rule: UpToDate  # "is this version done?", asked by every pass over this app
    opened_at: int = -1  # the store's last change when this app opened it

    def tag(self, paths: Iterable[Path], *, force: bool = False,
            retry_failed: RetryFailed = may_retry, stop: threading.Event | None = None,
            on_windows: Callable[[int], None] | None = None) -> Iterator[ClipResult]:
        """Engine → tagging: one result per path, lazily (see Engine.embed), under the one
        up-to-date rule (passes.UpToDate; a failed version while it has retries left)."""
        outcomes = self.engine.embed(paths, fresh=self.rule.fresh, force=force,
                                     retry_failed=retry_failed, stop=stop,
                                     on_windows=on_windows)
        return self.tagger.results(outcomes)

    def close(self) -> None:
        """Close the store, first merging what this app tagged, moved or forgot into the
        search index if there is one and the changes reached its SYNC_AT (a reader would merge
        them otherwise, in the middle of someone's search)."""
        try:
            if self.store.last_change() != self.opened_at:
                keep_current(self.store, self.tagger.model)
        except Exception as exc:  # noqa: BLE001 - the index is a cache; closing must go on
            log.warning("search index not updated: %s", exc)
        finally:
            self.store.close()


def with_model(config: Config, handle: str | None) -> Config:
    """`--model` overrides model.handle (a URL, or a directory relative to the current one)."""
    if handle is None:
        return config
    if "://" not in handle:
        handle = str(Path(handle).expanduser().resolve())
    return dataclasses.replace(config, model=dataclasses.replace(config.model, handle=handle))


def open_app(config: Config, embedder: Embedder | None = None, *, lazy: bool = False,
             cache_dir: Path | None = None) -> App:
    """Load the model (unless given; lazy: on its first call, so a run with nothing to embed
    and a warm text cache never loads it), open the store, embed the vocabulary (its example
    clips through the engine: from the store, or embedded once and stored), choose outputs.
    Raises ModelError, StoreError or vocabulary.ExampleError with their one line."""
    if embedder is None:
        if lazy:
            embedder = LazyEmbedder.from_config(config.model)
        else:
            log.info("loading the model from %s", config.model.handle)
            embedder = load_configured(config.model)
    # the store and engine before the vocabulary: example tags are made of stored embeddings
    store = Store(config.state.store_path)
    try:
        engine = Engine(config, embedder, store)
        examples = example_embeddings(config.vocabulary, engine)  # stored before the background
        background = library_background(store, embedder.fingerprint) if examples else None
        vocabulary = build_vocabulary(config.vocabulary, embedder,
                                      cache_dir or default_cache_dir(), examples,
                                      background, config.tagging.min_score)
    except BaseException:
        store.close()
        raise
    judge = getattr(embedder, "judge_with", None)
    if judge is not None:  # model.precision auto: a precision's trial scores with these tags
        judge(vocabulary.vectors)
    tagger = Tagger(config, vocabulary, build_outputs(config), store, embedder.fingerprint)
    rule = UpToDate(config, store, embedder.fingerprint, vocabulary.fingerprint)
    return App(config, embedder, vocabulary, store, engine, tagger, rule, store.last_change())
