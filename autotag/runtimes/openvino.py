"""Loaded `video` signature → ov.convert_model at [batch, 32, 224, 224, 3] → IR cached on disk
→ compiled for the CPU → float32 [B, 512] video embeddings; text stays on TensorFlow.

OpenVINO is imported here only, inside functions: `import autotag` and `--help` import neither it
nor TensorFlow. The converted model (OpenVINO IR: video.xml + video.bin) is cached per model
fingerprint, OpenVINO version and batch size, written whole or not at all (a temp folder renamed
into place, with a manifest of the files' hashes), so a later start in any process skips the
conversion, and a damaged copy is noticed and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotag.atomic import TEMP_SUFFIX

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autotag[openvino]'"
WINDOW_SHAPE = (32, 224, 224, 3)  # frames, height, width, channels: media.py's windows
DEVICE = "CPU"
# LATENCY: one request at a time, every thread on it. THROUGHPUT (2 streams × 1 thread, a batch
# split into requests in flight) was as fast within 3% on the stand-in on 2 cores (issue 14:
# 6.0-6.2 vs 5.8-6.1 windows/s, f32) and holds a second stream's activations, so LATENCY it is.
PERFORMANCE_HINT = "LATENCY"
# f32: the same embeddings as TensorFlow's to float error. OpenVINO's default on a CPU with
# AVX-512 BF16 or AMX is bf16, about twice as fast, but 0.4% of the largest value off on the
# stand-in (cosine 0.99999), over the 0.1% issue 14 allows; model.precision: bf16 opts in.
PRECISION = "f32"
FORMAT_VERSION = 1  # bump when the conversion changes: older cached copies are then ignored
VIDEO_OUTPUT = "video_embedding"
MANIFEST = "manifest.json"
FILES = ("video.xml", "video.bin")


class ConversionError(Exception):
    """The video signature could not be converted or compiled; one line saying why."""


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


@dataclass
class CompiledVideo:
    """The video signature compiled for one batch size; a shorter batch is padded and sliced."""

    compiled: object  # openvino.CompiledModel
    batch_size: int
    path: Path  # the cached IR folder it was compiled from
    converted: bool  # True when this process converted it (False: read from the cache)
    seconds: float  # conversion (if any) + compilation
    _request: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(VIDEO_OUTPUT)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, 32, 224, 224, 3] → float32 [B, 512], any B (run batch_size at a time)."""
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


def compile_video(video_fn, fingerprint: str, batch_size: int, threads: int, cache_root: Path,
                  precision: str = PRECISION,
                  quiet=contextlib.nullcontext) -> CompiledVideo:
    """The video signature compiled for the CPU, converted first unless the cache has it.
    A damaged cached copy is converted again. `quiet`: a context manager that hides native
    libraries' chatter on stderr (model.py's) while OpenVINO works; our log lines stay outside
    it. Raises ConversionError (one line)."""
    with quiet():
        ov = import_openvino()

    started = time.perf_counter()
    path = cache_root / cache_key(fingerprint, batch_size)
    config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    converted = False
    compiled = None
    if _intact(path):
        try:
            compiled = _compile(ov, path, config, quiet)
        except ConversionError as exc:  # whole, but not for this OpenVINO: convert again
            log.info("%s; converting it again", exc)
    elif path.exists():
        log.info("the converted video model in %s is damaged or incomplete; converting it "
                 "again", path)
    if compiled is None:
        log.info("converting the video model for OpenVINO (once; cached in %s)", path)
        with quiet():
            _convert(video_fn, batch_size, path)
        converted = True
        compiled = _compile(ov, path, config, quiet)
    video = CompiledVideo(compiled, batch_size, path, converted, time.perf_counter() - started)
    log.info("video model on OpenVINO %s (%s, batch %d, %s): %s in %.1f s", version(), DEVICE,
             batch_size, precision,
             "converted and compiled" if converted else "compiled from the cache", video.seconds)
    return video


def _compile(ov, path: Path, config: dict, quiet) -> object:
    core = ov.Core()
    try:
        with quiet():
            return core.compile_model(core.read_model(path / FILES[0]), DEVICE, config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeErrors of its own
        raise ConversionError(f"OpenVINO cannot compile {path / FILES[0]}: {_reason(exc)}") \
            from None


def _convert(video_fn, batch_size: int, path: Path) -> None:
    """Convert and save the IR into a temp folder beside `path`, then rename it into place."""
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


@dataclass
class OpenVinoEmbedder:
    """MIL-NCE with its video signature on OpenVINO and its text signature on TensorFlow."""

    tensorflow: object  # model.HubEmbedder: the loader, the text side, other window shapes
    video: CompiledVideo
    runtime: str = "openvino"

    @property
    def fingerprint(self) -> str:  # the same as TensorFlow's: stored embeddings stay valid
        return self.tensorflow.fingerprint

    @property
    def handle(self) -> str:
        return self.tensorflow.handle

    @property
    def converted(self) -> bool:
        """True when this process converted the model (False: the cached copy was used)."""
        return self.video.converted

    @property
    def cache_path(self) -> Path:
        return self.video.path

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, 32, 224, 224, 3] in [0, 1] → float32 [B, 512]; a window of another shape
        (only tests make them) runs on TensorFlow, which takes any."""
        if tuple(frames.shape[1:]) != WINDOW_SHAPE:
            return self.tensorflow.embed_video(frames)
        return self.video(frames)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.tensorflow.embed_text(texts)
