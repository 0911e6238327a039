"""Hub handle or SavedModel dir → loaded MIL-NCE → `video`/`text` signatures → float32 embeddings.

The only module that imports TensorFlow, and only inside `load_model`, so `import autotag` and
`autotag --help` stay instant (rclip and whisper load their models lazily the same way).

The interface is the hub model's (https://tfhub.dev/deepmind/mil-nce/s3d/1):
    video: float32 [B, T, H, W, 3] in [0, 1] → video_embedding [B, 512], mixed_5c [B, 1024]
    text:  string [N]                       → text_embedding [N, 512]
Scores are plain dot products of the two; the embeddings are not normalised.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from autotag.config import HUB_HANDLE, default_cache_dir

log = logging.getLogger(__name__)

EMBED_DIM = 512  # both embeddings' width


class Embedder(Protocol):
    """What the pipeline needs from a model; tests hand the pipeline their own."""

    fingerprint: str  # changes when the weights or the handle change

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, T, H, W, 3] in [0, 1] → float32 [B, 512]."""

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """N strings → float32 [N, 512]."""


class ModelError(Exception):
    """The model cannot be loaded or does not have the MIL-NCE interface; one line, with the fix."""


def hub_cache_dir() -> Path:
    """Where downloaded hub models live: $TFHUB_CACHE_DIR if set, else a per-user cache.

    tensorflow_hub's own default is a folder under /tmp, which a reboot or systemd's PrivateTmp
    empties; a service must find the model where `autotag fetch-model` left it.
    """
    env = os.environ.get("TFHUB_CACHE_DIR")
    return Path(env) if env else default_cache_dir() / "tfhub"


@dataclass
class HubEmbedder:
    """The MIL-NCE model behind its two signatures."""

    video_fn: object
    text_fn: object
    fingerprint: str
    handle: str

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        out = self.video_fn(tf.constant(frames, dtype=tf.float32))
        return out["video_embedding"].numpy().astype(np.float32, copy=False)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        import tensorflow as tf

        out = self.text_fn(tf.constant(list(texts), dtype=tf.string))
        return out["text_embedding"].numpy().astype(np.float32, copy=False)


class LazyEmbedder:
    """The model, loaded on its first call: `search` and `retag` need only text embeddings,
    usually cached on disk (vocabulary.TextCache), so a warm cache never loads TensorFlow."""

    def __init__(self, handle: str = HUB_HANDLE, threads: int = 0) -> None:
        self.handle = handle
        self.threads = threads
        self.fingerprint = fingerprint(handle)  # what load_model's embedder would carry
        self._model: HubEmbedder | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _get(self) -> HubEmbedder:
        if self._model is None:
            log.info("loading the model from %s", self.handle)
            self._model = load_model(self.handle, self.threads)
        return self._model

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        return self._get().embed_video(frames)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self._get().embed_text(texts)


def fingerprint(handle: str) -> str:
    """A short id of the model: the handle, plus the graph file's hash for a local directory,
    so replacing the weights in place invalidates cached text embeddings and stored tags."""
    digest = hashlib.sha256(handle.encode())
    pb = Path(handle) / "saved_model.pb"
    if pb.is_file():
        with pb.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """TensorFlow's C++ side prints banners (oneDNN, CUDA, absl) straight to file descriptor 2,
    past TF_CPP_MIN_LOG_LEVEL; hide them while it starts, unless debug logging is on."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_model(handle: str = HUB_HANDLE, threads: int = 0) -> HubEmbedder:
    """Load the model from a hub URL (downloaded once into `hub_cache_dir()`) or a local
    SavedModel directory. Raises ModelError with one line naming the fix."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is not for users
    os.environ.setdefault("TFHUB_CACHE_DIR", str(hub_cache_dir()))
    with _native_stderr_quiet():
        import tensorflow as tf
        import tensorflow_hub as hub

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        return _load(hub, handle)


def _load(hub, handle: str) -> HubEmbedder:
    try:
        module = hub.load(handle)
    except OSError as exc:  # URLError is an OSError: no network, DNS, proxy
        if "://" in handle:
            raise ModelError(
                f"cannot download the model {handle} ({_reason(exc)}); run "
                "'autotag fetch-model' where there is network, or set model.handle to a "
                "local SavedModel directory") from None
        raise ModelError(f"cannot read the model at {handle} ({_reason(exc)}); set "
                         "model.handle to a SavedModel directory") from None
    except Exception as exc:  # a corrupt SavedModel raises TensorFlow's own errors
        raise ModelError(f"cannot load the model at {handle}: {_reason(exc)}; point "
                         "model.handle at an intact copy of MIL-NCE") from None
    signatures = getattr(module, "signatures", {})
    missing = [s for s in ("video", "text") if s not in signatures]
    if missing:
        raise ModelError(f"the model at {handle} has no '{missing[0]}' signature; model.handle "
                         f"must be MIL-NCE ({HUB_HANDLE}) or a copy of it")
    return HubEmbedder(signatures["video"], signatures["text"], fingerprint(handle), handle)


def fetch_model(handle: str = HUB_HANDLE) -> Path:
    """Download the model into the persistent cache and return the SavedModel directory."""
    os.environ.setdefault("TFHUB_CACHE_DIR", str(hub_cache_dir()))
    import tensorflow_hub as hub

    try:
        return Path(hub.resolve(handle))
    except OSError as exc:
        raise ModelError(f"cannot download the model {handle} ({_reason(exc)}); check the "
                         "network or proxy settings") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().splitlines()[0][:200] if str(reason).strip() else type(exc).__name__


__all__ = ["EMBED_DIM", "Embedder", "HubEmbedder", "LazyEmbedder", "ModelError", "fetch_model",
           "fingerprint", "hub_cache_dir", "load_model"]
