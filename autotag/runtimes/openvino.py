"""IR cached on disk (converted once, in a child process) → compiled for the CPU → float32
[B, 512] video embeddings; released when idle, compiled again on the next call.

OpenVINO is imported here only, inside functions: `import autotag` and `--help` import neither it
nor TensorFlow. The converted model (OpenVINO IR: video.xml + video.bin) is cached per model
fingerprint, OpenVINO version and batch size, written whole or not at all (a temp folder renamed
into place, with a manifest of the files' hashes), so a later start in any process skips the
conversion, and a damaged copy is noticed and rebuilt. The conversion itself needs TensorFlow to
read the SavedModel: `convert_signature` runs in runtimes/tfworker.py's child process, so this
process never imports it (issue 19). An INT8 copy made by `autotag quantize` sits in the IR
folder's `int8/`, with the report that accepted it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from autotag.atomic import TEMP_SUFFIX
from autotag.errors import AutotagError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autotag[openvino]'"
WINDOW_SHAPE = (32, 224, 224, 3)  # frames, height, width, channels: media.py's windows
DEVICE = "CPU"
# LATENCY: one request at a time, every thread on it. THROUGHPUT (2 streams × 1 thread, a batch
# split into requests in flight) was as fast within 3% on the stand-in on 2 cores (issue 14:
# 6.0-6.2 vs 5.8-6.1 windows/s, f32) and holds a second stream's activations, so LATENCY it is.
PERFORMANCE_HINT = "LATENCY"
# OpenVINO pins its inference threads to cores by default; autotag's decoding threads share those
# cores (and a NAS runs other services), and unpinned it ran the stand-in faster on a 2-core Zen 3
# (issue 19, three interleaved pairs: --once 1.50/1.38/1.39 vs 1.34/1.28/1.44 windows/s pinned;
# the model alone 1.66/1.81/1.55 vs 1.58/1.48/1.38)
CPU_PINNING = False
# f32: the same embeddings as TensorFlow's to float error. OpenVINO's default on a CPU with
# AVX-512 BF16 or AMX is bf16, about twice as fast, but 0.4% of the largest value off on the
# stand-in (cosine 0.99999), over the 0.1% issue 14 allows; model.precision: bf16 opts in.
PRECISION = "f32"
FORMAT_VERSION = 1  # bump when the conversion changes: older cached copies are then ignored
VIDEO_OUTPUT = "video_embedding"
MANIFEST = "manifest.json"
FILES = ("video.xml", "video.bin")
INT8 = "int8"  # model.precision whose weights are a quantized copy, not a compile option
INT8_FOLDER = "int8"  # inside the f32 IR's folder: the quantized IR, its manifest, its report
REPORT = "report.json"  # the quantization's validation report; {"accepted": true, ...}


class ConversionError(AutotagError):
    """The video signature could not be converted or compiled; one line saying why."""


class NotQuantized(AutotagError):
    """model.precision is int8 but no accepted INT8 model is cached; one line naming the fix."""


def int8_dir(f32_dir: Path) -> Path:
    """Where `autotag quantize` keeps the INT8 model of the f32 IR in `f32_dir`."""
    return f32_dir / INT8_FOLDER


def accepted_int8(f32_dir: Path) -> bool:
    """An INT8 model is there, whole, and its validation report accepted it."""
    folder = int8_dir(f32_dir)
    with contextlib.suppress(OSError, ValueError):
        report = json.loads((folder / REPORT).read_text())
        return isinstance(report, dict) and report.get("accepted") is True and _intact(folder)
    return False


def installed() -> bool:
    """OpenVINO can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # a broken install, a stub in sys.modules
        return False


def import_openvino():
    """`import openvino`, its converter's telemetry left out. OpenVINO's converter sends usage
    events (Google Analytics, from a pool of threads) unless a consent file in the user's home
    says no, and treats no file as yes; autotag converts on the user's behalf, often in a
    service, so it never phones home: with openvino_telemetry unimportable the converter takes
    its own no-op stub (openvino/tools/ovc/convert_impl.py)."""
    sys.modules.setdefault("openvino_telemetry", None)  # None: ImportError on import
    import openvino as ov

    return ov


def version() -> str:
    return import_openvino().get_version()


def cache_key(fingerprint: str, batch_size: int) -> str:
    """Folder name of one converted model: model, OpenVINO version, batch size, format."""
    ov_version = re.sub(r"[^A-Za-z0-9.]+", "_", version())[:48]
    return f"{fingerprint}-b{batch_size}-ov{ov_version}-f{FORMAT_VERSION}"


class CompiledVideo:
    """The video signature compiled for one batch size; a shorter batch is padded and sliced.
    `unload()` releases the compiled model (its weights and buffers: most of the process's
    memory); the next call compiles it again from the same IR, which costs the cached load
    time and no conversion."""

    def __init__(self, compile_ir, batch_size: int, path: Path, converted: bool,
                 seconds: float, compiled=None) -> None:
        self._compile_ir = compile_ir  # () → openvino.CompiledModel, from `path`
        self.batch_size = batch_size
        self.path = path  # the cached IR folder it was compiled from
        self.converted = converted  # True when this process converted it (False: the cache)
        self.seconds = seconds  # conversion (if any) + compilation
        self._lock = threading.Lock()  # a call and an unload never overlap
        self._request = None
        self._output = None
        self.last_used = time.monotonic()
        if compiled is not None:  # compiled already by the caller, as it checked the IR
            self._request = compiled.create_infer_request()
            self._output = compiled.output(VIDEO_OUTPUT)

    @property
    def loaded(self) -> bool:
        return self._request is not None

    def _load(self) -> None:
        if self._request is None:
            compiled = self._compile_ir()
            self._request = compiled.create_infer_request()
            self._output = compiled.output(VIDEO_OUTPUT)
            self.last_used = time.monotonic()

    def unload(self) -> bool:
        """Release the compiled model; False when it was not loaded."""
        with self._lock:
            if self._request is None:
                return False
            self._request = self._output = None
        gc.collect()
        _trim_heap()
        return True

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, 32, 224, 224, 3] → float32 [B, 512], any B (run batch_size at a time)."""
        with self._lock:
            if self._request is None:
                started = time.perf_counter()
                self._load()
                log.info("video model loaded again from %s in %.1f s", self.path,
                         time.perf_counter() - started)
            try:
                return self._infer(frames)
            finally:
                self.last_used = time.monotonic()

    def _infer(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                # Padded, not a second model compiled for the shorter batch: the engine runs a
                # partial batch only when it has nothing else to do (engine.py), so the padded
                # windows delay one result and take no throughput, where a second compiled model
                # costs ~50 MB of peak RSS for good (stand-in, batch 1). Windows are independent
                # in the network, so the padding cannot change the real ones.
                pad = np.zeros((self.batch_size - n, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            result = self._request.infer({0: np.ascontiguousarray(chunk, np.float32)})
            out.append(np.array(result[self._output][:n], np.float32))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def _trim_heap() -> None:
    """Give freed heap pages back to the system: glibc keeps them for reuse otherwise, and an
    unloaded model would still count in the process's resident memory."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def compile_video(convert, fingerprint: str, batch_size: int, threads: int, cache_root: Path,
                  precision: str = PRECISION,
                  quiet=contextlib.nullcontext) -> CompiledVideo:
    """The video signature compiled for the CPU, converted first unless the cache has it:
    convert(folder) writes the IR into `folder` (the child process, runtimes/child.py). A
    damaged cached copy is converted again. precision int8 compiles the accepted INT8 copy
    (NotQuantized without one). `quiet`: a context manager that hides native libraries'
    chatter on stderr (model.py's) while OpenVINO works; our log lines stay outside it.
    Raises ConversionError (one line)."""
    with quiet():
        ov = import_openvino()

    started = time.perf_counter()
    path = cache_root / cache_key(fingerprint, batch_size)
    converted = False
    compiled = None
    if _intact(path):
        try:
            compiled = _compile(ov, path, precision, threads, quiet)
        except ConversionError as exc:  # whole, but not for this OpenVINO: convert again
            if precision == INT8:
                raise
            log.info("%s; converting it again", exc)
    elif path.exists():
        log.info("the converted video model in %s is damaged or incomplete; converting it "
                 "again", path)
    if compiled is None:
        if precision == INT8:
            raise NotQuantized(not_quantized(path))
        log.info("converting the video model for OpenVINO (once, in a child process; cached in "
                 "%s)", path)
        convert(path)
        converted = True
        compiled = _compile(ov, path, precision, threads, quiet)
    video = CompiledVideo(lambda: _compile(ov, path, precision, threads, quiet), batch_size,
                          path, converted, time.perf_counter() - started, compiled)
    log.info("video model on OpenVINO %s (%s, batch %d, %s): %s in %.1f s", version(), DEVICE,
             batch_size, precision,
             "converted and compiled" if converted else "compiled from the cache", video.seconds)
    return video


def not_quantized(path: Path) -> str:
    return ("model.precision is int8 but no INT8 model that passed its validation is cached "
            f"for this model and batch size (in {int8_dir(path)}); run 'autotag quantize' "
            "(pip install 'autotag[int8]'), or set model.precision: f32")


def compile_config(precision: str, threads: int) -> dict:
    """OpenVINO's CPU settings for the video model (the runtime's and the quantizer's check)."""
    # an INT8 model's quantized layers run in int8 whatever the hint; the rest stay f32
    config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "ENABLE_CPU_PINNING": CPU_PINNING,
              "INFERENCE_PRECISION_HINT": PRECISION if precision == INT8 else precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _compile(ov, path: Path, precision: str, threads: int, quiet) -> object:
    """The IR in `path` (its INT8 copy for precision int8) compiled for the CPU."""
    if precision == INT8:
        if not accepted_int8(path):
            raise NotQuantized(not_quantized(path))
        path = int8_dir(path)
    config = compile_config(precision, threads)
    core = ov.Core()
    try:
        with quiet():
            return core.compile_model(core.read_model(path / FILES[0]), DEVICE, config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeErrors of its own
        raise ConversionError(f"OpenVINO cannot compile {path / FILES[0]}: {_reason(exc)}") \
            from None


def convert_signature(video_fn, batch_size: int, path: Path) -> None:
    """Convert and save the IR into a temp folder beside `path`, then rename it into place.
    Needs the TensorFlow signature: runs in the converting child (runtimes/tfworker.py)."""
    ov = import_openvino()

    try:
        with _root_logger_kept():
            model = ov.convert_model(video_fn, input=[(batch_size, *WINDOW_SHAPE)])
        if VIDEO_OUTPUT not in {n for o in model.outputs for n in o.get_names()}:
            raise ConversionError(f"the converted model has no '{VIDEO_OUTPUT}' output")
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - its TensorFlow frontend raises many kinds
        raise ConversionError(f"OpenVINO cannot convert the video signature: {_reason(exc)}") \
            from None
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name[:24]}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        temp.mkdir()
        # f32 weights: an f16 copy would halve the file and move embeddings off TensorFlow's
        ov.save_model(model, str(temp / FILES[0]), compress_to_fp16=False)
        _write_manifest(temp)
        if path.exists():
            shutil.rmtree(path)  # damaged, or not readable by this OpenVINO (the caller checked)
        try:
            os.replace(temp, path)
        except OSError:  # another process renamed its whole copy into place first: use it
            if not _intact(path):
                raise
    except OSError as exc:
        raise ConversionError(f"cannot write the converted model in {path.parent} "
                              f"({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _root_logger_kept():
    """convert_model sets the root logger to ERROR and adds a filter, and puts them back only
    when it succeeds: a failed conversion would silence every later warning, ours included."""
    root = logging.getLogger()
    level, filters, handlers = root.level, list(root.filters), list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.filters[:] = filters
        root.handlers[:] = handlers


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {}
    for name in FILES:
        with (folder / name).open("rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename says it is whole
        files[name] = _digest(folder / name)
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT_VERSION, "sha256": files}))


def _intact(path: Path) -> bool:
    """The folder holds both files with the hashes its manifest recorded."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        manifest = json.loads((path / MANIFEST).read_text())
        return all(_digest(path / name) == manifest["sha256"][name] for name in FILES)
    return False


def _reason(exc: BaseException) -> str:
    """The first meaningful line of an OpenVINO error (they run to dozens of lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Check ", "Exception from"))]
    text = (useful or lines or [type(exc).__name__])[0]
    return text[:200]


class OpenVinoEmbedder:
    """MIL-NCE with its video signature on OpenVINO and its text signature wherever `text`
    runs it (a child process with TensorFlow: runtimes/child.py), so this process holds no
    TensorFlow. Windows of another shape than the model's (only tests make them) load
    TensorFlow in this process for them: `tensorflow()` gives that model."""

    runtime = "openvino"

    def __init__(self, video: CompiledVideo, text, fingerprint: str, handle: str,
                 tensorflow=None) -> None:
        self.video = video
        self.text = text  # has embed_text(texts) → float32 [N, 512]
        self.fingerprint = fingerprint  # TensorFlow's own: stored embeddings stay valid
        self.handle = handle
        self._tensorflow = tensorflow  # () → model.HubEmbedder, loaded on demand

    @property
    def converted(self) -> bool:
        """True when this process converted the model (False: the cached copy was used)."""
        return self.video.converted

    @property
    def cache_path(self) -> Path:
        return self.video.path

    @property
    def resident(self) -> bool:
        """The compiled video model is in memory (False after an idle unload)."""
        return self.video.loaded

    @property
    def last_used(self) -> float:
        """time.monotonic() of the last video call (or of loading)."""
        return self.video.last_used

    def unload(self) -> bool:
        """Release the compiled video model until the next call; False when it was not loaded."""
        return self.video.unload()

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, 32, 224, 224, 3] in [0, 1] → float32 [B, 512]."""
        if tuple(frames.shape[1:]) != WINDOW_SHAPE:
            return self._tensorflow().embed_video(frames)
        return self.video(frames)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.text.embed_text(texts)
