"""The embedding engine on its own: one outcome per path, failures isolated, nothing kept."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np

from autotag.app import open_app
from autotag.config import load_config
from autotag.engine import EMBEDDED, FAILED, SKIPPED, STORED, Engine
from autotag.store import Store
from tests.clips import GREEN, RED, write_gif, write_video
from tests.helpers import DEADLINE, write_config


class FastEmbedder:
    """No model: each window's embedding is its first pixel's colour (float32 [B, 512])."""

    fingerprint = "fast-fake"

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros((frames.shape[0], 512), np.float32)
        out[:, :3] = frames[:, 0, 0, 0, :]
        return out

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 512), np.float32)


def engine_for(tmp_path: Path, model_dir: Path, embedder, extra: str = "") -> Engine:
    config = load_config(write_config(tmp_path, model_dir, extra))
    return Engine(config, embedder, Store(config.state.store_path))


def test_a_bad_clip_is_one_failure_and_the_engine_goes_on(tmp_path, model_dir, embedder):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", [(RED, 2)])
    (clips / "bad.mp4").write_bytes(b"not a video" * 50)
    write_video(clips / "c.mp4", [(GREEN, 2)])
    engine = engine_for(tmp_path, model_dir, embedder)
    paths = [clips / "a.mp4", clips / "bad.mp4", clips / "missing.mp4", clips / "c.mp4"]
    outcomes = {o.path.name: o for o in engine.embed(paths)}
    assert set(outcomes) == {"a.mp4", "bad.mp4", "missing.mp4", "c.mp4"}
    assert outcomes["bad.mp4"].status == FAILED and outcomes["bad.mp4"].retryable
    assert "\n" not in outcomes["bad.mp4"].reason
    assert outcomes["missing.mp4"].status == FAILED
    assert "cannot read" in outcomes["missing.mp4"].reason
    for name in ("a.mp4", "c.mp4"):
        assert outcomes[name].status == EMBEDDED
        assert outcomes[name].clip.embeddings.shape == (1, 512)
    # the same content again: from the store, no decoding; an up-to-date rule is obeyed
    again = list(engine.embed([clips / "a.mp4"]))
    assert [o.status for o in again] == [STORED]
    fresh = list(engine.embed([clips / "a.mp4"], fresh=lambda path, st: True))
    assert [(o.status, o.reason) for o in fresh] == [(SKIPPED, "up to date")]
    engine.store.close()


def test_a_partial_batch_runs_as_soon_as_every_worker_waits_for_a_path(tmp_path, model_dir,
                                                                         embedder):
    """The daemon's source blocks between arrivals: the one clip that came must not wait for a
    full batch, nor for a poll."""
    clip = tmp_path / "red.mp4"
    write_video(clip, [(RED, 2)])  # one window; the batch size is 8
    engine = engine_for(tmp_path, model_dir, embedder)
    release = threading.Event()
    timed_out = threading.Event()

    def source():
        yield clip
        if not release.wait(DEADLINE):  # blocks as the daemon's queue does while nothing comes
            timed_out.set()

    outcomes = engine.embed(source())
    first = next(outcomes)
    # it came while the source was still blocked: not because the source gave up and ended
    assert not timed_out.is_set()
    assert (first.path, first.status) == (clip, EMBEDDED)
    release.set()
    assert list(outcomes) == []
    engine.store.close()


def test_memory_stays_flat_over_3000_clips_in_daemon_mode(tmp_path, model_dir):
    """The daemon runs for months: a clip's result is handed on and forgotten. 3,000 distinct
    clips (a GIF with bytes after its trailer: a new hash each, decoded each time) through
    the engine and the tagging step, from a source that blocks like the daemon's queue."""
    clips = tmp_path / "clips"
    clips.mkdir()
    base = tmp_path / "base.gif"
    write_gif(base, [(RED, 0.2), (GREEN, 0.2)], delay_ms=100, size=(16, 16))
    data = base.read_bytes()
    paths = []
    for i in range(3000):
        path = clips / f"clip{i:04d}.gif"
        path.write_bytes(data + f"{i}".encode())  # after the GIF trailer: ignored by decoders
        paths.append(path)
    config_path = write_config(tmp_path, model_dir)
    config_path.write_text(config_path.read_text().replace(
        "outputs: {log: matches.jsonl, previews: previews}",
        "outputs: {sidecars: false, log: null, previews: null}"))  # the store is written
    app = open_app(load_config(config_path), embedder=FastEmbedder())
    marks: dict[int, int] = {}
    done = 0
    stop = threading.Event()

    def arrivals():  # the daemon's inbox: paths as they come, then a wait for more
        yield from paths
        stop.wait(DEADLINE)

    tracemalloc.start()
    try:
        for result in app.tag(arrivals(), stop=stop):
            assert result.status == "tagged", result.reason
            done += 1
            if done in (1000, 3000):
                marks[done] = tracemalloc.get_traced_memory()[0]
            if done == 3000:
                stop.set()  # as the daemon stops: the source ends, the engine winds down
    finally:
        tracemalloc.stop()
        app.close()
    assert done == 3000
    grown = marks[3000] - marks[1000]
    assert grown < 1_000_000, f"traced memory grew {grown / 1e6:.2f} MB from clip 1000 to 3000"
