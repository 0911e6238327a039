"""`python -m benchmarks.probe KIND JSON` → one measurement in its own process → JSON result file.

Each measurement whose peak memory matters runs in a child process of its own, so the parent
reads that child's peak RSS alone from os.wait4 (ru_maxrss). Kinds:

    model    load the model as autotag does (on a runtime: tensorflow, openvino) → warm-up call
             → timed calls of `batch` windows
    article  the article's method: first 32 frames of each clip, float64, one call for all
    once     `autotag --once ...` itself, with App.tag timed (start, end, windows)

The result is written to $BENCH_RESULT as JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

WINDOW = (32, 224, 224, 3)  # frames, height, width, channels of one model window


def model(handle: str, batch: int, calls: int, threads: int = 0, inter: int = 0,
          runtime: str = "tensorflow", cache: str | None = None,
          precision: str | None = None) -> dict:
    """Windows per second of the model alone at this batch size, as autotag loads and feeds it
    (uint8 frames → float32 in [0, 1] → the `video` signature, on `runtime`). `cache`: the
    OpenVINO conversion cache (a shared one makes a warm start); `precision`: OpenVINO's
    inference precision instead of autotag's (to measure what bf16 would give)."""
    from autotag.media.pictures import to_model_input
    from autotag.model import load_model

    if inter:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(inter)
    started = time.perf_counter()
    embedder = load_model(handle, threads, runtime=runtime, batch_size=batch,
                          cache_dir=Path(cache) if cache else None,
                          **({"precision": precision} if precision else {}))
    loaded = time.perf_counter() - started
    frames = np.random.default_rng(0).integers(0, 256, (batch, *WINDOW), dtype=np.uint8)
    embedder.embed_video(to_model_input(frames))  # warm-up: tracing and oneDNN's kernel choice
    started = time.perf_counter()
    for _ in range(calls):
        embedder.embed_video(to_model_input(frames))
    seconds = time.perf_counter() - started
    return {"load_seconds": loaded, "seconds": seconds, "windows": batch * calls,
            "windows_per_second": batch * calls / seconds,
            "runtime": getattr(embedder, "runtime", "tensorflow"),
            "converted": getattr(embedder, "converted", False),
            "embedding": embedder.embed_video(to_model_input(frames[:1]))[0].tolist()}


def article_load_video(path: Path, max_frames: int = 32, size: int = 224) -> np.ndarray:
    """The article's `load_video`: read the first `max_frames` frames, crop the centre square,
    resize, RGB, repeat a short clip, / 255.0 (float64). [max_frames, size, size, 3]. The article
    read with OpenCV's VideoCapture; this reads with PyAV, autotag's one decoding stack."""
    import av
    import cv2

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            frames.append(cv2.resize(rgb[top:top + side, left:left + side], (size, size)))
            if len(frames) == max_frames:
                break
    array = np.array(frames)
    if len(array) < max_frames:
        array = array.repeat(math.ceil(max_frames / len(array)), axis=0)
    return array[:max_frames] / 255.0


def article(handle: str, clips: list[str]) -> dict:
    """The article's method on these clips, timed from the first read to the embeddings (the
    model's loading excluded, as for autotag)."""
    import tensorflow as tf

    from autotag.model import load_tensorflow_model

    module = load_tensorflow_model(handle).module  # hub.load's job, without tensorflow_hub
    started = time.perf_counter()
    videos = np.stack([article_load_video(Path(c)) for c in clips], axis=0)
    out = module.signatures["video"](tf.constant(tf.cast(videos, dtype=tf.float32)))
    out["video_embedding"].numpy()
    seconds = time.perf_counter() - started
    return {"clips": len(clips), "windows": len(clips), "seconds": seconds,
            "input_dtype": str(videos.dtype), "clips_per_second": len(clips) / seconds}


def once(argv: list[str]) -> dict:
    """Run autotag's own CLI with App.tag timed: everything before it, and the video model's
    load (lazy: it happens at the first batch, while workers decode), is startup."""
    from autotag import app, cli, model

    timing: dict = {"load": 0.0, "windows": 0, "statuses": []}
    original_tag, original_load = app.App.tag, model.load_model

    def timed_tag(self, *args, **kwargs):
        timing["start"] = time.perf_counter()
        for result in original_tag(self, *args, **kwargs):
            timing["windows"] += result.windows
            timing["statuses"].append(result.status)
            yield result
        timing["end"] = time.perf_counter()
        timing["runtime"] = getattr(self.embedder, "runtime", "tensorflow")

    def timed_load(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_load(*args, **kwargs)
        finally:
            if "start" in timing:  # loaded lazily, inside the tagging run
                timing["load"] += time.perf_counter() - started

    app.App.tag, model.load_model = timed_tag, timed_load
    started = time.perf_counter()
    code = cli.main(argv)
    statuses = timing["statuses"]
    start = timing.get("start", started)
    return {"exit_code": code,
            "startup_seconds": start - started + timing["load"],
            "seconds": timing.get("end", start) - start - timing["load"],
            "windows": timing["windows"], "clips": len(statuses),
            "runtime": timing.get("runtime", "?"),
            "tagged": statuses.count("tagged")}


KINDS = {"model": model, "article": article, "once": once}


def main() -> int:
    kind, payload = sys.argv[1], json.loads(sys.argv[2])
    result = KINDS[kind](**payload)
    Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
    return int(result.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())
