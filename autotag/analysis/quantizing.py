"""Clips → windows (media.sample_clip) → split by clip → NNCF INT8 of the f32 IR, calibrated on
one part → validated on the other against f32 (cosine, tags, speed) → report → IR/int8/.

`autotag quantize` (issue 19): post-training quantization on the user's own windows, accepted
only when the held-out windows say the INT8 model tags as the f32 one does. The INT8 model and
its report live in `openvino.int8_dir(F)` beside the cached f32 IR F, written
whole or not at all: a temp folder beside it, renamed into place. A refused model keeps only
its report there (no model files), so `model.precision: int8` can never run it; the loader
compiles `F/int8/video.xml` only when the folder is intact and its report says accepted.

NNCF is imported inside functions only, after `openvino.import_openvino()` has left OpenVINO's
telemetry package unimportable: NNCF then takes its own no-op stub (nncf/telemetry/wrapper.py,
"No telemetry will be sent"), so quantizing never phones home either.

Windows are uint8 [n, 32, 224, 224, 3] (4.8 MB each: 300 windows hold 1.4 GB) and become the
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

from autotag import media
from autotag.atomic import TEMP_SUFFIX
from autotag.clip import Window
from autotag.config import SamplingConfig, TaggingConfig
from autotag.errors import AutotagError
from autotag.files import show
from autotag.media import pictures
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
# Windows decoded in all: 200 to calibrate on, 100 to validate on (97 % of 100 lets 3 flip).
# NNCF's own default is 300 calibration samples; quantizing costs about 2.5 f32 passes over the
# calibration windows (statistics with extra outputs, then bias correction: 14 windows of the
# stand-in took 53 s against 21 s for one plain pass) and validating one pass of each model.
DEFAULT_WINDOWS = 300  # ~1.4 GB of uint8 frames
VALIDATION_SHARE = 1 / 3  # of the windows held out (whole clips when there are enough)
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
# How an activation's range is taken from the calibration windows, tried in this order until
# one passes the bar. "mean": NNCF's default, the mean over calibration batches of each batch's
# extremes: right for convolutions, whose millions of values per window put each batch's
# extremes in the tails already. "full": the extremes of the whole calibration set, for tensors
# with a few values per window (a head after pooling; the test model's five features: on its
# coloured clips "mean" clipped every pure colour, cosine 0.98, and "full" gave 0.999998).
RANGES = ("mean", "full")

OnClip = Callable[[Path, int, int], None]  # (clip, windows so far, windows wanted)


class QuantizeError(AutotagError):
    """Quantization cannot be done; one line naming the fix (a usage error, exit 2)."""


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
                                        skip_nonref=sampling.skip_nonref_frames,
                                        reference_only=sampling.reference_frames_only)
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


class Batches:
    """The clips' windows as uint8 [batch_size, 32, 224, 224, 3] batches, each stacked when it
    is asked for: a copy of every calibration window at once would double the memory. NNCF
    iterates it more than once (statistics, then bias correction). The last batch is filled
    with the first windows again: the IR's batch is fixed, and repeated windows move no range,
    where black ones would."""

    def __init__(self, clips: Sequence[ClipWindows], batch_size: int) -> None:
        self.batch_size = batch_size
        self._windows = [(c.frames, i) for c in clips for i in range(len(c.windows))]

    def __len__(self) -> int:
        return math.ceil(len(self._windows) / self.batch_size)

    def __getitem__(self, k: int) -> np.ndarray:
        picks = [(k * self.batch_size + j) % len(self._windows) for j in range(self.batch_size)]
        return np.stack([self._windows[p][0][self._windows[p][1]] for p in picks])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))


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


def quantize_ir(f32_dir: Path, calibration: Sequence[ClipWindows], ranges: str = RANGES[0],
                show_progress: bool = False):
    """The f32 IR in `f32_dir` → NNCF post-training quantization (OpenVINO backend) calibrated
    on every calibration window, activation ranges as `ranges` says (RANGES) → the INT8
    ov.Model. QuantizeError with one line."""
    nncf = import_nncf()
    ov = openvino.import_openvino()
    model = ov.Core().read_model(f32_dir / openvino.FILES[0])
    items = Batches(calibration, batch_size_of(model))
    dataset = nncf.Dataset(items, pictures.to_model_input)
    try:
        with nncf_output(show_progress), openvino._root_logger_kept():
            return nncf.quantize(model, dataset, subset_size=len(items),
                                 target_device=nncf.TargetDevice[TARGET_DEVICE],
                                 advanced_parameters=_advanced(nncf, ranges))
    except Exception as exc:  # noqa: BLE001 - NNCF and OpenVINO raise many kinds
        raise QuantizeError(f"NNCF cannot quantize the video model: "
                            f"{openvino._reason(exc)}") from None


def _advanced(nncf, ranges: str):
    """NNCF's advanced parameters for one of RANGES (None: its defaults)."""
    if ranges == "mean":
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


class Compiled:
    """One compiled IR and its infer request: float32 [batch_size, 32, 224, 224, 3] → float32
    [batch_size, 512] (`Batches` makes every batch full)."""

    def __init__(self, compiled, batch_size: int) -> None:
        self.batch_size = batch_size
        self._request = compiled.create_infer_request()
        self._output = compiled.output(openvino.VIDEO_OUTPUT)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: np.ascontiguousarray(frames, np.float32)})
        return np.array(result[self._output], np.float32)


def compile_for_validation(path: Path, threads: int) -> Compiled:
    """The IR in `path` compiled as the runtime compiles it (openvino.compile_config: LATENCY,
    unpinned, f32 for what stays in floating point, model.threads)."""
    ov = openvino.import_openvino()
    config = openvino.compile_config(INFERENCE_PRECISION, threads)
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
    top_tag_agreement: float  # share of windows whose first given tag (or none) is f32's
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
          tagging: TaggingConfig) -> tuple[frozenset[str], str | None]:
    """Windows of one clip → (the tags tagging gives it, the first of them or None), as
    tagging.py scores. The best of tags below their thresholds is not counted: which of
    several scores that no one is shown wins is noise (the stand-in's random tags flipped)."""
    tags, _ = tag_scores(window_scores(embeddings, vocabulary.vectors), windows,
                         vocabulary.labels, tagging)
    return frozenset(t.label for t in tags), tags[0].label if tags else None


def embed_side_by_side(f32: Compiled, int8: Compiled,
                       frames: Batches) -> tuple[np.ndarray, np.ndarray, float, float]:
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
    full = Batches(validation, f32.batch_size)
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
    for name, value in (("first tag given matches", figures.top_tag_agreement),
                        ("tags given match", figures.tag_agreement)):
        if value < MIN_TAG_AGREEMENT:
            return (f"the {name} f32's on {value:.1%} of held-out windows, below "
                    f"{MIN_TAG_AGREEMENT:.0%}")
    return None


def margin(figures: Figures) -> float:
    """How far the figures clear the bar (negative: short of it), the worst of its parts: the
    better of two refused attempts is the one reported."""
    return min(figures.mean_cosine - MIN_MEAN_COSINE, figures.top_tag_agreement -
               MIN_TAG_AGREEMENT, figures.tag_agreement - MIN_TAG_AGREEMENT)


# -- the report and the folder ----------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """One quantization and its validation."""

    ranges: str  # one of RANGES
    figures: Figures
    reason: str | None  # why it was refused; None: accepted

    def to_json(self) -> dict:
        f = self.figures
        return {"ranges": self.ranges, "accepted": self.reason is None, "reason": self.reason,
                "mean_cosine": round(f.mean_cosine, 6),
                "top_tag_agreement": round(f.top_tag_agreement, 6),
                "tag_agreement": round(f.tag_agreement, 6)}


@dataclass(frozen=True)
class Report:
    """What `autotag quantize` found; report.json beside the INT8 model. Its figures are the
    accepted attempt's, or the best refused one's."""

    attempts: tuple[Attempt, ...]
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

    @property
    def chosen(self) -> Attempt:
        accepted = [a for a in self.attempts if a.reason is None]
        return accepted[0] if accepted else max(
            self.attempts, key=lambda a: (margin(a.figures), a.figures.mean_cosine))

    @property
    def accepted(self) -> bool:
        return self.chosen.reason is None

    @property
    def reason(self) -> str | None:
        return self.chosen.reason

    @property
    def figures(self) -> Figures:
        return self.chosen.figures

    def to_json(self) -> dict:
        return {
            "format": REPORT_FORMAT, "accepted": self.accepted, "reason": self.reason,
            **self.figures.to_json(), "ranges": self.chosen.ranges,
            "bar": {"min_mean_cosine": MIN_MEAN_COSINE, "min_tag_agreement": MIN_TAG_AGREEMENT},
            "attempts": [a.to_json() for a in self.attempts],
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
        return json.loads((openvino.int8_dir(f32_dir) / REPORT).read_text())
    return None


def quantize(f32_dir: Path, split: Split, vocabulary: Vocabulary, tagging: TaggingConfig,
             model: str, threads: int = 0, show_progress: bool = False) -> Report:
    """Quantize the f32 IR in `f32_dir` on the calibration windows (each of RANGES in turn
    until one passes), validate each on the held-out ones, and put the INT8 folder (model,
    manifest, report; a refused one: the report alone) in place. QuantizeError, one line."""
    if not openvino._intact(f32_dir):
        raise QuantizeError(f"the converted video model in {f32_dir} is damaged or missing; "
                            "run autotag once with model.runtime: openvino to convert it again")
    started = time.perf_counter()
    target = openvino.int8_dir(f32_dir)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        temp.mkdir(parents=True)
        f32 = _compile(f32_dir, threads)
        attempts = []
        for ranges in RANGES:
            attempts.append(_attempt(f32_dir, temp, ranges, f32, split, vocabulary, tagging,
                                     threads, show_progress))
            if attempts[-1].reason is None:
                break
            if ranges != RANGES[-1]:
                log.info("INT8 with %s ranges: %s; trying %s ranges", ranges,
                         attempts[-1].reason, RANGES[RANGES.index(ranges) + 1])
        report = _report(f32_dir, temp, tuple(attempts), f32.batch_size, split, vocabulary,
                         model, started)
        _write_json(temp / REPORT, report.to_json())
        if target.exists():
            shutil.rmtree(target)  # a report or model of an earlier run: this one replaces it
        os.replace(temp, target)
    except OSError as exc:
        raise QuantizeError(f"cannot write the INT8 model in {target.parent} "
                            f"({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.debug("INT8 against f32 on %d held-out windows: mean cosine %.4f, tags agree on %.1f%%, "
             "%.2fx the speed: %s; report in %s", report.figures.windows,
             report.figures.mean_cosine, 100 * report.figures.tag_agreement,
             report.figures.speedup, "accepted" if report.accepted else "refused",
             target / REPORT)
    return report


def _attempt(f32_dir: Path, temp: Path, ranges: str, f32: Compiled, split: Split,
             vocabulary: Vocabulary, tagging: TaggingConfig, threads: int,
             show_progress: bool) -> Attempt:
    """Quantize with `ranges`, save the model in `temp` (over an earlier attempt's) and
    validate what was saved; a refused model's files are removed: never runnable."""
    ov = openvino.import_openvino()
    quantized = quantize_ir(f32_dir, split.calibration, ranges, show_progress)
    # f32 constants stay f32 (the quantized weights are int8 already); f16 would add an error
    # the validation did not see
    ov.save_model(quantized, str(temp / openvino.FILES[0]), compress_to_fp16=False)
    del quantized
    figures = validate(f32, _compile(temp, threads), split.validation, vocabulary, tagging)
    reason = judge(figures)
    if reason is None:
        openvino._write_manifest(temp)
    else:
        for name in openvino.FILES:
            (temp / name).unlink()
    return Attempt(ranges, figures, reason)


def _compile(path: Path, threads: int) -> Compiled:
    try:
        return compile_for_validation(path, threads)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeErrors of its own
        raise QuantizeError(f"OpenVINO cannot compile {path / openvino.FILES[0]}: "
                            f"{openvino._reason(exc)}") from None


def _report(f32_dir: Path, temp: Path, attempts: tuple[Attempt, ...], batch_size: int,
            split: Split, vocabulary: Vocabulary, model: str, started: float) -> Report:
    weights = temp / openvino.FILES[1]
    return Report(
        attempts=attempts, path=openvino.int8_dir(f32_dir), model=model, batch_size=batch_size,
        vocabulary=vocabulary.fingerprint, tags=len(vocabulary.labels), split=split.by,
        calibration_windows=Split.count(split.calibration),
        calibration_clips=len({c.path for c in split.calibration}),
        seconds=time.perf_counter() - started,
        f32_bytes=(f32_dir / openvino.FILES[1]).stat().st_size,
        int8_bytes=weights.stat().st_size if weights.exists() else 0,
        openvino_version=openvino.version(), nncf_version=import_nncf().__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _write_json(path: Path, data: dict) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename says the folder is whole
