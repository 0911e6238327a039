"""IR cached on disk (converted once, in a child process) → compiled for the CPU → float32
[B, 512] video embeddings; released when idle, compiled again on the next call.

OpenVINO is imported here only, inside functions: `import autotag` and `--help` import neither it
nor TensorFlow. The converted model (OpenVINO IR: video.xml + video.bin) is cached per model
fingerprint, OpenVINO version and batch size, written whole or not at all (a temp folder renamed
into place, with a manifest of the files' hashes), so a later start in any process skips the
conversion, and a damaged copy is noticed and rebuilt. The conversion itself needs TensorFlow to
read the SavedModel: `convert_signature` runs in autotag/tfworker.py's child process, so this
process never imports it (issue 19). An INT8 copy made by `autotag quantize` sits in the IR
folder's `int8/`, with the report that accepted it. `model.precision: auto` (the default) picks
the precision by runtimes/precision.py's rule and, where bf16 is yet to be measured on this CPU,
runs bf16 beside f32 on the first windows, then switches (or stays) without a restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
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

WINDOW_SHAPE = (32, 224, 224, 3)  # frames, height, width, channels: media's windows
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
# f32: the same embeddings as TensorFlow's to float error: the reference every other precision
# is measured against, and what auto runs where nothing faster has agreed with it (issue 34).
PRECISION = "f32"
AUTO = "auto"  # model.precision: chosen per CPU and model by runtimes/precision.py
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
                 seconds: float, compiled=None, precision: str = PRECISION) -> None:
        self._compile_ir = compile_ir  # () → openvino.CompiledModel, from `path`
        self.batch_size = batch_size
        self.precision = precision  # f32, bf16 or int8: what this compiled model runs
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

    def load(self) -> None:
        """Compile it now if it is not (a switch's check that it compiles)."""
        with self._lock:
            self._load()

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
    (NotQuantized without one); auto: runtimes/precision.py's choice, in `.choice` (the
    start-up line names it and why). `quiet`: a context manager that hides native libraries'
    chatter on stderr (model.py's) while OpenVINO works; our log lines stay outside it.
    Raises ConversionError (one line)."""
    with quiet():
        ov = import_openvino()

    started = time.perf_counter()
    path = cache_root / cache_key(fingerprint, batch_size)
    choice, converted, compiled = None, False, None
    # checked once a start: hashing the weights (32 MB for S3D) twice cost a start 0.1 s
    intact = _intact(path)
    if precision == AUTO:
        if not intact:  # the choice reads the records beside the converted model
            converted = _convert(convert, path)
            intact = _intact(path)
        choice = auto_choice(ov, path)
        precision = choice.precision
    if intact:
        try:
            compiled = _compile(ov, path, precision, threads, quiet)
        except (ConversionError, NotQuantized) as exc:
            if precision != INT8:  # whole, but not for this OpenVINO: convert again
                log.info("%s; converting it again", exc)
            elif choice is None:
                raise
            else:  # auto's INT8 copy does not compile: f32, saying why
                choice, precision = _f32_instead(exc), PRECISION
                with contextlib.suppress(ConversionError):
                    compiled = _compile(ov, path, precision, threads, quiet)
    elif path.exists():
        log.info("the converted video model in %s is damaged or incomplete; converting it "
                 "again", path)
    if compiled is None:
        if precision == INT8:
            raise NotQuantized(not_quantized(path))
        converted = _convert(convert, path)
        compiled = _compile(ov, path, precision, threads, quiet)
    video = _compiled_video(ov, path, precision, threads, quiet, batch_size, converted,
                            time.perf_counter() - started, compiled)
    video.choice = choice
    why = f" (auto: {choice.reason})" if choice is not None else ""
    log.info("video model on OpenVINO %s (%s, batch %d, %s%s): %s in %.1f s", version(), DEVICE,
             batch_size, precision, why,
             "converted and compiled" if converted else "compiled from the cache", video.seconds)
    return video


def _convert(convert, path: Path) -> bool:
    log.info("converting the video model for OpenVINO (once, in a child process; cached in "
             "%s)", path)
    convert(path)
    return True


def _compiled_video(ov, path: Path, precision: str, threads: int, quiet, batch_size: int,
                    converted: bool = False, seconds: float = 0.0,
                    compiled=None) -> CompiledVideo:
    return CompiledVideo(lambda: _compile(ov, path, precision, threads, quiet), batch_size,
                         path, converted, seconds, compiled, precision)


def compile_precision(video: CompiledVideo, precision: str, threads: int,
                      quiet=contextlib.nullcontext) -> CompiledVideo:
    """The same cached IR as `video`'s, for another precision, compiled on its first call
    (auto's bf16 trial; its switch to an INT8 copy prepared meanwhile)."""
    return _compiled_video(import_openvino(), video.path, precision, threads, quiet,
                           video.batch_size)


def auto_choice(ov, path: Path):
    """model.precision auto's choice (runtimes/precision.py) for the IR in `path` on this CPU,
    OpenVINO's OPTIMIZATION_CAPABILITIES standing in where /proc/cpuinfo has no flags."""
    from autotag.runtimes import precision

    capabilities: tuple[str, ...] = ()
    with contextlib.suppress(Exception):  # an old plugin without the property: flags alone
        capabilities = tuple(ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
    return precision.choose(path, precision.this_cpu(capabilities=capabilities),
                            int8_report(path))


def int8_report(f32_dir: Path) -> dict | None:
    """The accepted INT8 copy's report, None when no accepted copy is cached whole."""
    if not accepted_int8(f32_dir):
        return None
    with contextlib.suppress(OSError, ValueError):
        return json.loads((int8_dir(f32_dir) / REPORT).read_text())
    return None


def _f32_instead(exc: Exception):
    from autotag.runtimes import precision

    return precision.Choice(PRECISION, f"the INT8 copy does not compile ({exc})")


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
    Needs the TensorFlow signature: runs in the converting child (autotag/tfworker.py)."""
    from autotag.runtimes.ovcompat import patch_tensorflow_frontend

    ov = import_openvino()
    patch_tensorflow_frontend()  # Python 3.13 (issue 29)

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
    TensorFlow in this process for them: `tensorflow()` gives that model.

    With model.precision auto and a candidate to check (bf16 on a CPU where it has not been
    measured), the first windows run through both precisions once the vocabulary is known
    (`judge_with`): f32's embeddings are returned, and after precision.TRIAL_WINDOWS the
    verdict is recorded beside the cached model and the candidate runs from then on if it
    agreed. `switch()` changes the precision in place (the daemon's INT8 copy)."""

    runtime = "openvino"

    def __init__(self, video: CompiledVideo, text, fingerprint: str, handle: str,
                 tensorflow=None, threads: int = 0) -> None:
        from autotag.runtimes import precision

        self.video = video
        self.text = text  # has embed_text(texts) → float32 [N, 512]
        self.fingerprint = fingerprint  # TensorFlow's own: stored embeddings stay valid
        self.handle = handle
        self.threads = threads
        self._tensorflow = tensorflow  # () → model.HubEmbedder, loaded on demand
        self.choice = getattr(video, "choice", None)  # auto's (precision.Choice), else None
        self.precision_reason = (self.choice.reason if self.choice is not None
                                 else "set by model.precision")
        self._trial = None
        if self.choice is not None and self.choice.trial:
            keep = (precision.trial_file(video.path, self.choice.cpu, self.choice.trial)
                    if self.choice.cpu is not None else None)
            self._trial = precision.Trial(self.choice.trial, keep=keep)
        self._candidate: CompiledVideo | None = None
        self._vectors: np.ndarray | None = None  # the vocabulary's, for the trial's verdict
        # compiled models a switch replaced, released with the running one (unload): released
        # at the switch itself, while the new one runs, the process crashed at its exit
        # (SIGSEGV in OpenVINO's teardown, seen after the daemon's INT8 switch)
        self._retired: list[CompiledVideo] = []

    @property
    def precision(self) -> str:
        """The precision the video model runs now: f32, bf16 or int8."""
        return self.video.precision

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
        if self._candidate is not None:
            self._candidate.unload()
        loaded = self.video.unload()
        while self._retired:
            self._retired.pop().unload()
        return loaded

    def judge_with(self, vectors: np.ndarray) -> None:
        """The vocabulary's vectors float32 [n_tags, 512]: a pending trial may start."""
        self._vectors = vectors

    def switch(self, precision: str, reason: str) -> None:
        """Run `precision` from the next call on (compiled now, so a failure leaves the running
        one); raises ConversionError or NotQuantized with one line."""
        new = compile_precision(self.video, precision, self.threads)
        new.load()
        old, self.video = self.video, new
        self.precision_reason = reason
        self._trial = None  # a precision chosen for it supersedes what a trial would say
        self._retired.append(old)
        log.info("the video model runs %s from now on: %s", precision, reason)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """float32 [B, 32, 224, 224, 3] in [0, 1] → float32 [B, 512]."""
        if tuple(frames.shape[1:]) != WINDOW_SHAPE:
            return self._tensorflow().embed_video(frames)
        if self._trial is not None and self._vectors is not None:
            return self._side_by_side(frames)
        return self.video(frames)

    def _side_by_side(self, frames: np.ndarray) -> np.ndarray:
        """f32's embeddings, the candidate's beside them for the trial."""
        video, trial = self.video, self._trial
        if self._candidate is None:
            self._candidate = compile_precision(video, trial.precision, self.threads)
        self._candidate.load()  # its compile time is not the candidate's speed
        started = time.perf_counter()
        reference = video(frames)
        middle = time.perf_counter()
        candidate = self._candidate(frames)
        trial.add(reference, candidate, middle - started, time.perf_counter() - middle)
        if trial.full:
            self._conclude(trial)
        return reference

    def _conclude(self, trial) -> None:
        from autotag.runtimes import precision

        verdict = trial.verdict(self._vectors)
        if self.choice is not None and self.choice.cpu is not None:
            precision.record_verdict(self.video.path, self.choice.cpu, verdict)
        trial.forget()
        self._trial, candidate, self._candidate = None, self._candidate, None
        if verdict.accepted:
            old, self.video = self.video, candidate
            self.precision_reason = verdict.reason
            self._retired.append(old)
            log.info("%s; running %s from now on (%.1f× f32 here; recorded in %s)",
                     verdict.reason, verdict.precision, verdict.speedup,
                     self.video.path / precision.AGREEMENT)
        else:
            candidate.unload()
            self.precision_reason = verdict.reason
            log.warning("%s; staying at f32 (recorded in %s)", verdict.reason,
                        self.video.path / precision.AGREEMENT)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.text.embed_text(texts)
