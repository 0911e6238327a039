"""Clips → windows (media.sample_clip) → split by clip → NNCF INT8 of the f32 IR, calibrated on
one part → validated on the other against f32 (cosine, tags, speed) → report → IR/int8/.

`autotag quantize` (issue 19): post-training quantization on the user's own windows, accepted
only when the held-out windows say the INT8 model tags as the f32 one does. The INT8 model and
its report live in `int8_dir(F)` beside the cached f32 IR F (runtimes/openvino.py), written
whole or not at all: a temp folder beside it, renamed into place. A refused model keeps only
its report there (no model files), so `model.precision: int8` can never run it; the loader
compiles `F/int8/video.xml` only when the folder is intact and its report says accepted.

NNCF is imported inside functions only, after `openvino.import_openvino()` has left OpenVINO's
telemetry package unimportable: NNCF then takes its own no-op stub (nncf/telemetry/wrapper.py,
"No telemetry will be sent"), so quantizing never phones home either.

Windows are uint8 [n, 32, 224, 224, 3] (4.8 MB each: 400 windows hold 1.9 GB) and become the
model's float32 in [0, 1] one batch at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import random
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autotag import media, pictures
from autotag.atomic import TEMP_SUFFIX
from autotag.clip import Window
from autotag.config import SamplingConfig, TaggingConfig
from autotag.files import show
from autotag.runtimes import openvino
from autotag.scoring import tag_scores, window_scores
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autotag[int8]'"
REPORT = openvino.REPORT  # beside the INT8 model: {"accepted": ..., "reason": ..., figures}
REPORT_FORMAT = 1  # bump when the report's meaning changes
# The bar, checked on windows the calibration never saw. Mean cosine: INT8 noise on a network
# like S3D-G costs well under 1 % of an embedding's direction; a window whose direction moved
# more has likely lost what it was about. Tag agreement: the tags a window would be given (top
# tag, and the whole set at the configured thresholds) must match f32's for 97 % of windows;
# a score that sits on a threshold flips for the smallest error, so 100 % would refuse models
# that tag whole clips as f32 does (clip scores average the windows').
MIN_MEAN_COSINE = 0.99
MIN_TAG_AGREEMENT = 0.97  # of held-out windows, for the top tag and for the given tags each
DEFAULT_WINDOWS = 400  # decoded in all; ~1.9 GB of uint8 frames
VALIDATION_SHARE = 0.3  # of the windows held out (whole clips when there are enough)
MIN_CALIBRATION_WINDOWS = 8
MIN_VALIDATION_WINDOWS = 8
MIN_WINDOWS = MIN_CALIBRATION_WINDOWS + MIN_VALIDATION_WINDOWS
MIN_CLIPS_PER_SIDE = 2  # fewer clips on either side: windows are split within clips instead
# With few clips, each gives more windows than sampling.max_windows so the total is reached,
# but no more than this: 32 windows of one clip teach the ranges little that 8 do not.
MAX_WINDOWS_PER_CLIP = 32
SHUFFLE_SEED = 19  # clips are taken in a fixed shuffled order: every folder, reproducibly
MAX_EXAMPLES = 5  # disagreeing windows named in the report
# The INT8 model's layers that stay in floating point run at f32, as the reference does; on a
# CPU with AVX-512 BF16 OpenVINO would pick bf16 for them (see openvino.PRECISION).
INFERENCE_PRECISION = "f32"
# NNCF's CPU target: the quantization schemes OpenVINO's CPU plugin runs as int8 kernels.
TARGET_DEVICE = "CPU"

OnClip = Callable[[Path, int, int], None]  # (clip, windows so far, windows wanted)


class QuantizeError(Exception):
    """Quantization cannot be done; one line naming the fix (a usage error, exit 2)."""


def int8_dir(f32_dir: Path) -> Path:
    """Where the INT8 model of the f32 IR in `f32_dir` lives: the runtime's own answer (the
    loader and this module must agree)."""
    return openvino.int8_dir(f32_dir)


def import_nncf():
    """`import nncf`, OpenVINO's telemetry left out first; QuantizeError naming the extra."""
    openvino.import_openvino()  # sets openvino_telemetry unimportable: NNCF stubs it out
    try:
        import nncf
    except ImportError:
        raise QuantizeError(f"autotag quantize needs NNCF; run {INSTALL_HINT}") from None
    return nncf


# -- windows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipWindows:
    """One clip's decoded windows. frames: uint8 [n, 32, 224, 224, 3] RGB."""

    path: Path
    windows: tuple[Window, ...]
    frames: np.ndarray

    def subset(self, keep: Sequence[int]) -> ClipWindows:
        return ClipWindows(self.path, tuple(self.windows[i] for i in keep), self.frames[list(keep)])


def windows_per_clip(wanted: int, clips: int, sampling: SamplingConfig) -> int:
    """sampling.max_windows, or more when there are too few clips to reach `wanted`."""
    needed = math.ceil(wanted / max(clips, 1))
    return max(sampling.max_windows, min(needed, MAX_WINDOWS_PER_CLIP))


def collect_windows(paths: Sequence[Path], wanted: int, sampling: SamplingConfig,
                    on_clip: OnClip | None = None) -> list[ClipWindows]:
    """Decode clips, in a fixed shuffled order, until `wanted` windows are in hand (or the
    clips run out). A clip that cannot be decoded is one warning line, and the next is tried."""
    order = sorted(paths)
    random.Random(SHUFFLE_SEED).shuffle(order)
    per_clip = windows_per_clip(wanted, len(order), sampling)
    out: list[ClipWindows] = []
    total = 0
    for path in order:
        if total >= wanted:
            break
        try:
            sampled = media.sample_clip(path, min(per_clip, wanted - total),
                                        sampling.max_pixels, timeout=sampling.decode_timeout,
                                        skip_nonref=sampling.skip_nonref_frames)
        except (media.DecodeError, OSError) as exc:
            reason = f"cannot read: {exc.strerror or exc}" if isinstance(exc, OSError) else exc
            log.warning("skipping %s: %s", show(path), reason)
            continue
        out.append(ClipWindows(path, sampled.windows, sampled.frames))
        total += len(sampled.windows)
        if on_clip:
            on_clip(path, total, wanted)
    return out


@dataclass(frozen=True)
class Split:
    """Calibration and validation windows; by "clip" (validation clips never calibrated on) or,
    with too few clips, by "window" (every few windows of each clip held out)."""

    calibration: tuple[ClipWindows, ...]
    validation: tuple[ClipWindows, ...]
    by: str

    @staticmethod
    def count(clips: Sequence[ClipWindows]) -> int:
        return sum(len(c.windows) for c in clips)


def split_windows(clips: Sequence[ClipWindows], share: float = VALIDATION_SHARE) -> Split:
    """Hold out about `share` of the windows, whole clips when each side gets enough of them.
    QuantizeError when there are too few windows for both sides."""
    total = Split.count(clips)
    if total < MIN_WINDOWS:
        raise QuantizeError(
            f"only {total} window{'s' if total != 1 else ''} could be decoded from "
            f"{len(clips)} clip{'s' if len(clips) != 1 else ''}; quantizing needs at least "
            f"{MIN_WINDOWS} (calibration and validation): pass more clips or folders")
    calibration, validation = [], []
    held = 0
    for clip in clips:  # interleaved: each side gets clips from across the shuffled order
        seen = Split.count(calibration) + held + len(clip.windows)
        if held < share * seen:
            validation.append(clip)
            held += len(clip.windows)
        else:
            calibration.append(clip)
    if (len(calibration) >= MIN_CLIPS_PER_SIDE and len(validation) >= MIN_CLIPS_PER_SIDE
            and Split.count(calibration) >= MIN_CALIBRATION_WINDOWS
            and Split.count(validation) >= MIN_VALIDATION_WINDOWS):
        return Split(tuple(calibration), tuple(validation), "clip")
    step = max(2, round(1 / share))  # every step-th window of each clip is held out
    calibration, validation, index = [], [], 0
    for clip in clips:
        held_out = [i for i in range(len(clip.windows)) if (index + i) % step == 0]
        kept = [i for i in range(len(clip.windows)) if (index + i) % step != 0]
        index += len(clip.windows)
        if kept:
            calibration.append(clip.subset(kept))
        if held_out:
            validation.append(clip.subset(held_out))
    return Split(tuple(calibration), tuple(validation), "window")


def batches(clips: Sequence[ClipWindows], batch_size: int) -> list[np.ndarray]:
    """The clips' windows as uint8 [batch_size, 32, 224, 224, 3] batches (views where they can
    be). The last batch is filled with the first windows again: the IR's batch is fixed, and
    repeated windows move no calibration range, where zeros would."""
    frames = [c.frames[i] for c in clips for i in range(len(c.windows))]
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        chunk += [frames[i % len(frames)] for i in range(batch_size - len(chunk))]
        out.append(np.stack(chunk))
    return out


# -- quantization -----------------------------------------------------------------------------

def batch_size_of(model) -> int:
    """The batch the f32 IR was converted for (its input's first dimension)."""
    return model.inputs[0].get_partial_shape()[0].get_length()


@contextlib.contextmanager
def nncf_output(show_progress: bool) -> Iterator[None]:
    """NNCF logs INFO lines to stdout through a handler of its own and draws rich progress bars
    there (stdout is where `--json` goes): its log records go through ours instead (warnings
    and up are shown), and its bars to stderr on a terminal, else nowhere."""
    logger = logging.getLogger("nncf")
    handlers, propagate = list(logger.handlers), logger.propagate
    logger.handlers[:] = []
    logger.propagate = True
    sink = sys.stderr if show_progress else io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate


def quantize_ir(f32_dir: Path, calibration: Sequence[ClipWindows],
                show_progress: bool = False):
    """The f32 IR in `f32_dir` → NNCF post-training quantization (OpenVINO backend) calibrated
    on every calibration window → the INT8 ov.Model. QuantizeError with one line."""
    nncf = import_nncf()
    ov = openvino.import_openvino()
    model = ov.Core().read_model(f32_dir / openvino.FILES[0])
    items = batches(calibration, batch_size_of(model))
    dataset = nncf.Dataset(items, pictures.to_model_input)
    try:
        with nncf_output(show_progress), openvino._root_logger_kept():
            return nncf.quantize(model, dataset, subset_size=len(items),
                                 target_device=nncf.TargetDevice[TARGET_DEVICE])
    except Exception as exc:  # noqa: BLE001 - NNCF and OpenVINO raise many kinds
        raise QuantizeError(f"NNCF cannot quantize the video model: "
                            f"{openvino._reason(exc)}") from None


class Compiled:
    """One compiled IR and its infer request: float32 [batch_size, 32, 224, 224, 3] → float32
    [batch_size, 512] (`batches` makes every batch full)."""

    def __init__(self, compiled, batch_size: int) -> None:
        self.batch_size = batch_size
        self._request = compiled.create_infer_request()
        self._output = compiled.output(openvino.VIDEO_OUTPUT)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: np.ascontiguousarray(frames, np.float32)})
        return np.array(result[self._output], np.float32)


def compile_for_validation(path: Path, threads: int) -> Compiled:
    """The IR in `path` compiled as the runtime compiles it: LATENCY, f32 for what stays in
    floating point, model.threads."""
    ov = openvino.import_openvino()
    config = {"PERFORMANCE_HINT": openvino.PERFORMANCE_HINT,
              "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    model = core.read_model(path / openvino.FILES[0])
    return Compiled(core.compile_model(model, openvino.DEVICE, config), batch_size_of(model))


# -- validation -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figures:
    """INT8 against f32 on the held-out windows."""

    windows: int
    clips: int
    mean_cosine: float
    min_cosine: float
    top_tag_agreement: float  # share of windows whose best tag is f32's
    tag_agreement: float  # share of windows given exactly f32's tags (thresholds, top_k)
    clip_tag_agreement: float  # share of held-out clips given exactly f32's tags
    f32_windows_per_second: float
    int8_windows_per_second: float
    examples: tuple[dict, ...] = ()  # windows whose tags differ: path, start, f32, int8

    @property
    def speedup(self) -> float:
        return self.int8_windows_per_second / self.f32_windows_per_second

    def to_json(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "examples"}
        data = {k: round(v, 6) if isinstance(v, float) else v for k, v in data.items()}
        data["speedup"] = round(self.speedup, 3)
        data["examples"] = list(self.examples)
        return data


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 [n, 512] × 2 → float64 [n] cosine of each row pair (two zero rows: 1)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    return np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-30))


def given(embeddings: np.ndarray, windows: Sequence[Window], vocabulary: Vocabulary,
          tagging: TaggingConfig) -> tuple[frozenset[str], str]:
    """Windows of one clip → (the tags tagging gives it, its best tag), as tagging.py scores."""
    tags, ranking = tag_scores(window_scores(embeddings, vocabulary.vectors), windows,
                               vocabulary.labels, tagging)
    return frozenset(t.label for t in tags), ranking[0].label


def embed_side_by_side(f32: Compiled, int8: Compiled,
                       frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The same batches through both models, alternating which goes first so a neighbour's
    load weighs on both alike; the first batch once more, untimed, to warm both up.
    Returns (f32 embeddings, int8 embeddings, f32 seconds, int8 seconds)."""
    f32(pictures.to_model_input(frames[0]))
    int8(pictures.to_model_input(frames[0]))
    out = {"f32": [], "int8": []}
    seconds = {"f32": 0.0, "int8": 0.0}
    models = {"f32": f32, "int8": int8}
    for i, batch in enumerate(frames):
        x = pictures.to_model_input(batch)
        for name in (("f32", "int8") if i % 2 == 0 else ("int8", "f32")):
            started = time.perf_counter()
            out[name].append(models[name](x))
            seconds[name] += time.perf_counter() - started
    return (np.concatenate(out["f32"]), np.concatenate(out["int8"]), seconds["f32"],
            seconds["int8"])


def validate(f32: Compiled, int8: Compiled,
             validation: Sequence[ClipWindows], vocabulary: Vocabulary,
             tagging: TaggingConfig) -> Figures:
    """Both models on the held-out windows: cosine, tag agreement per window (each scored as
    a clip of one window) and per clip, and speed measured side by side."""
    n = Split.count(validation)
    full = batches(validation, f32.batch_size)
    a, b, f32_seconds, int8_seconds = embed_side_by_side(f32, int8, full)
    padded = len(full) * f32.batch_size  # the filled-in windows of the last batch ran too
    a, b = a[:n], b[:n]
    cos = cosines(a, b)
    top = agree = 0
    examples: list[dict] = []
    clips_agree = 0
    start = 0
    for clip in validation:
        stop = start + len(clip.windows)
        for i, window in enumerate(clip.windows, start):
            (tags_a, best_a), (tags_b, best_b) = (
                given(e[i:i + 1], (window,), vocabulary, tagging) for e in (a, b))
            top += best_a == best_b
            agree += tags_a == tags_b
            if (tags_a != tags_b or best_a != best_b) and len(examples) < MAX_EXAMPLES:
                examples.append({"path": str(clip.path), "start": round(window.start, 3),
                                 "f32": sorted(tags_a), "int8": sorted(tags_b),
                                 "f32_top": best_a, "int8_top": best_b})
        clips_agree += (given(a[start:stop], clip.windows, vocabulary, tagging)[0]
                        == given(b[start:stop], clip.windows, vocabulary, tagging)[0])
        start = stop
    return Figures(n, len({c.path for c in validation}), float(cos.mean()), float(cos.min()),
                   top / n, agree / n, clips_agree / len(validation),
                   padded / max(f32_seconds, 1e-9), padded / max(int8_seconds, 1e-9),
                   tuple(examples))


def judge(figures: Figures) -> str | None:
    """None when the figures pass the bar, else why not (one line). Reads the bar's constants
    when called."""
    if figures.mean_cosine < MIN_MEAN_COSINE:
        return (f"the mean cosine to f32's embeddings is {figures.mean_cosine:.4f}, below "
                f"{MIN_MEAN_COSINE}")
    for name, value in (("best tag", figures.top_tag_agreement),
                        ("tags", figures.tag_agreement)):
        if value < MIN_TAG_AGREEMENT:
            return (f"the {name} of {value:.1%} of held-out windows match f32's, below "
                    f"{MIN_TAG_AGREEMENT:.0%}")
    return None


# -- the report and the folder ----------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """What `autotag quantize` found; report.json beside the INT8 model."""

    accepted: bool
    reason: str | None  # why it was refused
    figures: Figures
    path: Path  # the INT8 folder (a refused one holds only this report)
    model: str  # the model's fingerprint
    batch_size: int
    vocabulary: str  # the vocabulary's fingerprint: the tags agreement was measured on
    tags: int
    split: str  # "clip" or "window"
    calibration_windows: int
    calibration_clips: int
    seconds: float  # quantization and validation
    f32_bytes: int
    int8_bytes: int  # 0 when refused (the model is not kept)
    openvino_version: str
    nncf_version: str
    created: str

    def to_json(self) -> dict:
        return {
            "format": REPORT_FORMAT, "accepted": self.accepted, "reason": self.reason,
            **self.figures.to_json(),
            "bar": {"min_mean_cosine": MIN_MEAN_COSINE, "min_tag_agreement": MIN_TAG_AGREEMENT},
            "split": self.split, "calibration_windows": self.calibration_windows,
            "calibration_clips": self.calibration_clips, "path": str(self.path),
            "model": self.model, "batch_size": self.batch_size, "vocabulary": self.vocabulary,
            "tags": self.tags, "seconds": round(self.seconds, 2), "f32_bytes": self.f32_bytes,
            "int8_bytes": self.int8_bytes, "openvino": self.openvino_version,
            "nncf": self.nncf_version, "created": self.created,
        }


def read_report(f32_dir: Path) -> dict | None:
    """The report.json of the INT8 model beside `f32_dir`, or None."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((int8_dir(f32_dir) / REPORT).read_text())
    return None


def quantize(f32_dir: Path, split: Split, vocabulary: Vocabulary, tagging: TaggingConfig,
             model: str, threads: int = 0, show_progress: bool = False) -> Report:
    """Quantize the f32 IR in `f32_dir` on the calibration windows, validate it on the held-out
    ones, and put the INT8 folder (model, manifest, report; a refused one: the report alone)
    in place. QuantizeError with one line."""
    if not openvino._intact(f32_dir):
        raise QuantizeError(f"the converted video model in {f32_dir} is damaged or missing; "
                            "run autotag once with model.runtime: openvino to convert it again")
    started = time.perf_counter()
    quantized = quantize_ir(f32_dir, split.calibration, show_progress)
    target = int8_dir(f32_dir)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        temp.mkdir(parents=True)
        report = _build(f32_dir, temp, quantized, split, vocabulary, tagging, model, threads,
                        started)
        _write_json(temp / REPORT, report.to_json())
        if target.exists():
            shutil.rmtree(target)  # a report or model of an earlier run: this one replaces it
        os.replace(temp, target)
    except OSError as exc:
        raise QuantizeError(f"cannot write the INT8 model in {target.parent} "
                            f"({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.info("INT8 %s: mean cosine %.4f, tags agree on %.1f%% of %d held-out windows, "
             "%.2fx f32's speed; report in %s", "accepted" if report.accepted else "refused",
             report.figures.mean_cosine, 100 * report.figures.tag_agreement,
             report.figures.windows, report.figures.speedup, target / REPORT)
    return report


def _build(f32_dir: Path, temp: Path, quantized, split: Split, vocabulary: Vocabulary,
           tagging: TaggingConfig, model: str, threads: int, started: float) -> Report:
    """Save the INT8 model in `temp`, validate what was saved, drop it again when refused."""
    ov = openvino.import_openvino()
    # f32 constants stay f32 (the quantized weights are int8 already); f16 would add an error
    # the validation did not see
    ov.save_model(quantized, str(temp / openvino.FILES[0]), compress_to_fp16=False)
    openvino._write_manifest(temp)
    try:
        f32 = compile_for_validation(f32_dir, threads)
        int8 = compile_for_validation(temp, threads)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeErrors of its own
        raise QuantizeError(f"OpenVINO cannot compile the INT8 model: "
                            f"{openvino._reason(exc)}") from None
    figures = validate(f32, int8, split.validation, vocabulary, tagging)
    reason = judge(figures)
    int8_bytes = (temp / openvino.FILES[1]).stat().st_size
    if reason is not None:  # never runnable: no model files, only the report of why
        for name in (*openvino.FILES, openvino.MANIFEST):
            (temp / name).unlink()
        int8_bytes = 0
    return Report(
        accepted=reason is None, reason=reason, figures=figures, path=int8_dir(f32_dir),
        model=model, batch_size=f32.batch_size, vocabulary=vocabulary.fingerprint,
        tags=len(vocabulary.labels), split=split.by,
        calibration_windows=Split.count(split.calibration),
        calibration_clips=len({c.path for c in split.calibration}),
        seconds=time.perf_counter() - started,
        f32_bytes=(f32_dir / openvino.FILES[1]).stat().st_size, int8_bytes=int8_bytes,
        openvino_version=openvino.version(), nncf_version=import_nncf().__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _write_json(path: Path, data: dict) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename says the folder is whole
