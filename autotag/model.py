"""Hub handle or SavedModel dir → runtime (OpenVINO from the cached IR, or TensorFlow) →
float32 embeddings.

TensorFlow is a loader and a converter, not a resident (issue 19): importing it costs about
570 MB that a process never gives back. On a CPU the video signature runs on OpenVINO from the
IR cached on disk, compiled in this process without TensorFlow; converting that IR (once) and
embedding text that is not cached run in a child process that exits when done
(runtimes/child.py), so a steady daemon, `--once`, `search` with a cached query and `retag` never
import TensorFlow. TensorFlow runs the model in this process only where it is the runtime (a GPU,
`model.runtime: tensorflow`, a conversion that failed), and then with oneDNN on. Its one door is
`tensorflow()`; nothing imports it when autotag is imported, so `--help` stays instant.

The interface is the hub model's (https://tfhub.dev/deepmind/mil-nce/s3d/1):
    video: float32 [B, T, H, W, 3] in [0, 1] → video_embedding [B, 512], mixed_5c [B, 1024]
    text:  string [N]                       → text_embedding [N, 512]
Scores are plain dot products of the two; the embeddings are not normalised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag.config import (
    HUB_HANDLE,
    OPENVINO_HINT,
    ModelConfig,
    default_cache_dir,
    openvino_installed,
)
from autotag.embedder import Embedder, ModelError  # noqa: F401  (their names here too)

log = logging.getLogger(__name__)

EMBED_DIM = 512  # both embeddings' width
DEFAULT_BATCH_SIZE = ModelConfig.batch_size  # windows per call the OpenVINO model is compiled for
OPENVINO_CACHE = "openvino"  # folder of converted models inside the hub cache
# what to do about a runtime that failed: fix the cause and retry, or stop asking for OpenVINO
RETRY_HINT = ("run 'autotag fetch-model' to try OpenVINO again once that is fixed, or set "
              "model.runtime: tensorflow")
INTER_OP_THREADS = 2  # TensorFlow inter-op threads when model.threads caps them (benchmarks)
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the NVIDIA driver sees


def openvino_cache_dir() -> Path:
    """Where converted models live: inside the hub cache, so $TFHUB_CACHE_DIR moves both and a
    service's cache folder keeps both (hub's own entries are sha1-named: no clash)."""
    return hub_cache_dir() / OPENVINO_CACHE


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
    runtime: str = "tensorflow"  # where embed_video runs (OpenVinoEmbedder says "openvino")
    # The loaded object: a TF2 SavedModel's signatures hold only weak references to its
    # variables, which a converter reading the function's graph (OpenVINO's) finds deleted.
    module: object = None

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

    def __init__(self, handle: str = HUB_HANDLE, threads: int = 0, runtime: str = "tensorflow",
                 batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "f32",
                 text_idle: float = 0.0) -> None:
        self.handle = handle
        # set (by `autotag search` and the web app, from the fingerprint): the text model is
        # the one every search of the user shares over this socket (runtimes/shared_text.py),
        # ending itself after text_idle seconds without a query (when this process starts it;
        # 0: shared_text's default); None: a child per call (the daemon's new prompt now and
        # then)
        self.text_socket: Path | None = None
        self.text_idle = text_idle
        self._text: TextInChild | None = None
        self.threads = threads
        self.requested_runtime = runtime  # the loaded model's .runtime says what runs
        self.batch_size = batch_size
        self.precision = precision
        self.fingerprint = fingerprint(handle)  # what load_model's embedder would carry
        self._model: Embedder | None = None
        self._vectors: np.ndarray | None = None  # the vocabulary's, for precision auto

    @classmethod
    def from_config(cls, model: ModelConfig) -> LazyEmbedder:
        """From config's model section (handle, threads, runtime, batch_size)."""
        return cls(model.handle, model.threads, model.runtime, model.batch_size, model.precision)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def runtime(self) -> str | None:
        """Where the video signature runs once loaded ("tensorflow" or "openvino"), else None."""
        return getattr(self._model, "runtime", "tensorflow") if self._model else None

    @property
    def last_used(self) -> float | None:
        """time.monotonic() of the last video call, None when nothing can be unloaded."""
        return getattr(self._model, "last_used", None)

    @property
    def resident(self) -> bool:
        """The video model is in memory now (loaded, and not released by an idle unload)."""
        return self._model is not None and getattr(self._model, "resident", True)

    def unload(self) -> bool:
        """Release the compiled video model until the next call (OpenVINO only)."""
        unload = getattr(self._model, "unload", None)
        return bool(unload and unload())

    @property
    def loaded_model(self) -> Embedder | None:
        """The model once loaded (OpenVINO's or TensorFlow's embedder), else None."""
        return self._model

    @property
    def running_precision(self) -> str | None:
        """The precision the loaded video model runs (f32, bf16, int8), None before loading."""
        return running_precision(self._model) if self._model is not None else None

    @property
    def precision_reason(self) -> str | None:
        return getattr(self._model, "precision_reason", None)

    def judge_with(self, vectors: np.ndarray) -> None:
        """The vocabulary's vectors, for model.precision auto's trial (handed on at loading)."""
        self._vectors = vectors
        judge = getattr(self._model, "judge_with", None)
        if judge is not None:
            judge(vectors)

    def switch(self, precision: str, reason: str) -> None:
        """Run another precision from the next call on (OpenVINO only; loads the model)."""
        self._get().switch(precision, reason)

    def _get(self) -> Embedder:
        if self._model is None:
            log.info("loading the model from %s", self.handle)
            self._model = load_model(self.handle, self.threads, runtime=self.requested_runtime,
                                     batch_size=self.batch_size, precision=self.precision)
            if self._vectors is not None and hasattr(self._model, "judge_with"):
                self._model.judge_with(self._vectors)
        return self._model

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        return self._get().embed_video(frames)

    @property
    def _text_in_child(self) -> bool:
        return self._model is None and choose_runtime(self.requested_runtime) == "openvino"

    @property
    def text_shared(self) -> bool:
        """New queries go to the shared text model (a process of its own that may need starting),
        so starting it ahead of a query saves that query TensorFlow's start."""
        return self.text_socket is not None and self._text_in_child

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text before any video: on OpenVINO the text side is a child process anyway, so a
        search for a new query (or retag with a new prompt) compiles no video model for it."""
        if self._text_in_child:
            # the web app sets the socket after the vocabulary may have been embedded
            if self._text is None or self._text.socket != self.text_socket:
                self._text = TextInChild(self.handle, self.threads, self.text_idle,
                                         self.text_socket)
            return self._text.embed_text(texts)
        return self._get().embed_text(texts)


class TextInChild:
    """The text signature in a TensorFlow child process, its failures as ModelError: what
    OpenVINO's embedder embeds text with. With a socket, the server every search of the user
    shares (runtimes/shared_text.py; started with `idle` when none answers); without, a child
    per call (runtimes/child.py)."""

    def __init__(self, handle: str, threads: int = 0, idle: float = 0.0,
                 socket: Path | None = None) -> None:
        from autotag.runtimes import child, shared_text

        # the child finds the model where this process does
        env = {"TFHUB_CACHE_DIR": str(hub_cache_dir())}
        self.socket = socket
        if socket is not None:
            self._child = shared_text.SharedText(handle, socket, threads, env,
                                                 idle or shared_text.IDLE_SECONDS)
        else:
            self._child = child.ChildText(handle, threads, env)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        from autotag.runtimes import child

        try:
            return self._child.embed_text(texts)
        except child.ChildError as exc:
            raise ModelError(str(exc)) from None


def running_precision(embedder: object) -> str:
    """What an embedder's video model runs: OpenVINO's says; TensorFlow runs f32."""
    value = getattr(embedder, "running_precision", None) or getattr(embedder, "precision", None)
    return value if isinstance(value, str) and value != "auto" else "f32"


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
def native_stderr_quiet(quiet: bool | None = None) -> Iterator[None]:
    """Native libraries (TensorFlow's oneDNN, CUDA and absl banners, OpenVINO, Ray's C++ side)
    write straight to file descriptor 2, past Python's logging; hide it while they start.
    quiet: None hides it unless debug logging is on."""
    if quiet is None:
        quiet = not log.isEnabledFor(logging.DEBUG)
    if not quiet:
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


def tensorflow():
    """The one door to TensorFlow: the tensorflow module, imported with oneDNN on.
    TensorFlow's wheels turn oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX;
    on an AVX2 CPU it ran the stand-in 2.4x faster (issue 19: 0.75 → 1.8 windows/s on a Zen 3),
    within float error. A TF_ENABLE_ONEDNN_OPTS the user set is left alone."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is not for users
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with native_stderr_quiet():
        import tensorflow as tf
    return tf


def load_tensorflow_model(handle: str = HUB_HANDLE, threads: int = 0) -> HubEmbedder:
    """The SavedModel loaded by TensorFlow, both signatures on it; ModelError with one line.
    threads caps TensorFlow's threads (set before its runtime starts, or they cannot be)."""
    tf = tensorflow()
    if threads:
        with contextlib.suppress(RuntimeError):  # already started in this process: kept
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, INTER_OP_THREADS))
    with native_stderr_quiet():
        return _load(tf, handle)


def load_model(handle: str = HUB_HANDLE, threads: int = 0, *, runtime: str = "tensorflow",
               batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "f32",
               cache_dir: Path | None = None, retry: bool = False) -> Embedder:
    """Load the model from a hub URL (downloaded once into `hub_cache_dir()`) or a local
    SavedModel directory, with its video signature on `runtime` ("auto", "tensorflow",
    "openvino"; config's model.runtime). On OpenVINO it runs the IR converted for
    `batch_size` windows per call (model.batch_size), from the conversion cache (`cache_dir`,
    default `openvino_cache_dir()`), converting it first in a child process when the cache
    does not have it; when that fails, one warning says why and TensorFlow runs it. `threads`
    (model.threads) caps both runtimes' threads; `precision` (model.precision) is OpenVINO's
    inference precision, or int8 for the copy `autotag quantize` accepted. Raises ModelError
    with one line naming the fix. The result's `.runtime` says where the video signature runs.
    A failed OpenVINO conversion is recorded and not tried again until `retry` is set.

    runtime defaults to "tensorflow" so that `load_model(handle, threads)` behaves as before
    issue 14; the app passes config.model.runtime (default "auto")."""
    chosen = choose_runtime(runtime)
    if chosen == "openvino":
        embedder = _on_openvino(handle, threads, batch_size, precision,
                                cache_dir or openvino_cache_dir(), retry)
        if embedder is not None:
            return embedder
    elif precision == "int8":
        raise ModelError("model.precision int8 runs on OpenVINO; set model.runtime: auto (or "
                         "openvino), or model.precision: f32")
    return load_tensorflow_model(handle, threads)


def load_configured(model: ModelConfig, cache_dir: Path | None = None,
                    retry: bool = False) -> Embedder:
    """`load_model` with config's model section: handle, threads, runtime and batch_size."""
    return load_model(model.handle, model.threads, runtime=model.runtime,
                      batch_size=model.batch_size, precision=model.precision,
                      cache_dir=cache_dir, retry=retry)


def prepare_runtime(model: ModelConfig, cache_dir: Path | None = None) -> Path | None:
    """What `autotag fetch-model` calls after fetching: load the model as a start would, so the
    OpenVINO conversion is cached and a service starts fast; a conversion that failed before
    is tried again. Returns the converted model's folder, or None when the video signature
    runs on TensorFlow (nothing to prepare)."""
    embedder = load_configured(model, cache_dir, retry=True)
    return getattr(embedder, "cache_path", None)


def choose_runtime(runtime: str) -> str:
    """"tensorflow" or "openvino" for a requested runtime. auto: OpenVINO when it is installed
    and there is no GPU TensorFlow can use (a GPU runs the model faster than a CPU compiled for;
    issue 14). Decided without importing TensorFlow."""
    if runtime == "tensorflow":
        return runtime
    if runtime == "openvino":
        if not openvino_installed():
            raise ModelError("model.runtime is openvino but OpenVINO is not installed; run "
                             f"{OPENVINO_HINT} or set model.runtime: auto")
        return runtime
    if runtime != "auto":
        raise ModelError(f"unknown model.runtime {runtime!r}; use auto, tensorflow or openvino")
    if not openvino_installed():
        return "tensorflow"
    return "tensorflow" if gpu_for_tensorflow() else "openvino"


def gpu_for_tensorflow() -> bool:
    """An NVIDIA GPU that TensorFlow can use: the driver lists one, and TensorFlow's CUDA
    libraries are installed (tensorflow[and-cuda]'s nvidia-* wheels). Asking TensorFlow itself
    costs its 570 MB import; a CPU-only TensorFlow with a GPU beside it runs on the CPU, where
    OpenVINO is faster."""
    try:
        if not any(NVIDIA_GPUS.iterdir()):
            return False
        return importlib.util.find_spec("nvidia.cudnn") is not None
    except (OSError, ImportError, ValueError):
        return False


def _on_openvino(handle: str, threads: int, batch_size: int, precision: str,
                 cache_dir: Path, retry: bool = False) -> Embedder | None:
    """The model with its video signature compiled by OpenVINO and its text signature in a
    child process; None after one warning line saying why, when conversion or compilation
    fails (TensorFlow runs it). The failure is recorded beside the cache (runtimes/failed.py),
    so later runs skip OpenVINO with one info line instead of converting again, until a
    version changes or `retry` (autotag fetch-model). ModelError when the model itself cannot
    be loaded, or int8 is asked for without an accepted INT8 copy."""
    from autotag.runtimes import child, failed, openvino

    env = {"TFHUB_CACHE_DIR": str(hub_cache_dir())}  # the child finds the model where we do
    model_fingerprint = fingerprint(handle)
    failure = None
    try:
        if precision != openvino.INT8:  # int8 never falls back: it is an error at every start
            with native_stderr_quiet():  # the key holds OpenVINO's version: imports it
                key = openvino.cache_key(model_fingerprint, batch_size)
            failure = failed.Failure(cache_dir, key, precision)
            if (known := None if retry else failure.read()) is not None:
                log.info("the video model runs on TensorFlow: OpenVINO failed with it on %s "
                         "(%s); %s", known["when"], known["reason"], RETRY_HINT)
                return None
        video = openvino.compile_video(
            lambda folder: child.convert(handle, batch_size, folder, threads, env),
            model_fingerprint, batch_size, threads, cache_dir, precision,
            quiet=native_stderr_quiet)
    except openvino.NotQuantized as exc:
        raise ModelError(str(exc)) from None
    except child.ChildError as exc:
        if exc.code != child.EXIT_CONVERSION:
            raise ModelError(str(exc)) from None
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure here has the same remedy: TensorFlow
        reason = _one_line(exc)
    else:
        if failure is not None:
            failure.clear()  # a retry that worked
        return openvino.OpenVinoEmbedder(
            video, TextInChild(handle, threads), model_fingerprint, handle,
            tensorflow=functools.cache(lambda: load_tensorflow_model(handle, threads)),
            threads=threads)
    if precision == "int8":
        raise ModelError(f"the INT8 model cannot run on OpenVINO ({reason}); run 'autotag "
                         "quantize' again, or set model.precision: f32")
    if failure is not None:
        failure.write(reason)  # later runs go to TensorFlow at once, until a version changes
    log.warning("OpenVINO cannot run the video model (%s); running it on TensorFlow, now and "
                "in later runs; %s", reason, RETRY_HINT)
    return None


def _load(tf, handle: str) -> HubEmbedder:
    from autotag import hub

    try:
        path = hub.resolve(handle, hub_cache_dir())
        # a TF1 Hub module (the real model) has one MetaGraph, with the empty tag set: asked for
        # by name, as tensorflow_hub's load did; a TF2 SavedModel takes the default
        tags = [] if (path / hub.MODULE_PROTO).is_file() else None
        module = tf.saved_model.load(str(path), tags=tags)
    except OSError as exc:  # URLError is an OSError: no network, DNS, proxy
        if "://" in handle:
            raise ModelError(
                f"cannot download the model {handle} ({_reason(exc)}); run "
                "'autotag fetch-model' where there is network, or set model.handle to a "
                "local SavedModel directory") from None
        raise ModelError(f"cannot read the model at {handle} ({_reason(exc)}); set "
                         "model.handle to a SavedModel directory") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt SavedModel raises TensorFlow's own
        raise ModelError(f"cannot load the model at {handle}: {_reason(exc)}; point "
                         "model.handle at an intact copy of MIL-NCE") from None
    signatures = getattr(module, "signatures", {})
    missing = [s for s in ("video", "text") if s not in signatures]
    if missing:
        raise ModelError(f"the model at {handle} has no '{missing[0]}' signature; model.handle "
                         f"must be MIL-NCE ({HUB_HANDLE}) or a copy of it")
    return HubEmbedder(signatures["video"], signatures["text"], fingerprint(handle), handle,
                       module=module)


def fetch_model(handle: str = HUB_HANDLE) -> Path:
    """Download the model into the persistent cache (no TensorFlow needed) and return the
    SavedModel directory; a local handle is returned as it is."""
    from autotag import hub

    try:
        return hub.resolve(handle, hub_cache_dir())
    except OSError as exc:
        raise ModelError(f"cannot download the model {handle} ({_reason(exc)}); check the "
                         "network or proxy settings") from None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().splitlines()[0][:200] if str(reason).strip() else type(exc).__name__


__all__ = ["EMBED_DIM", "Embedder", "HubEmbedder", "LazyEmbedder", "ModelError", "choose_runtime",
           "fetch_model", "fingerprint", "gpu_for_tensorflow", "hub_cache_dir",
           "load_configured", "load_model", "load_tensorflow_model", "openvino_cache_dir",
           "prepare_runtime", "tensorflow"]
