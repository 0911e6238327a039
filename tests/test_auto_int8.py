"""The daemon's own INT8 (issue 34) on the test model: once enough clips are tagged, a CPU that
gains from INT8 gets a copy quantized in a child at idle priority, validated against f32 on
held-out windows (analysis/quantizing.py's report), and run without a restart; the status says
which precision runs and shows the report; model.auto_int8: false never starts it; a report
already there (a new vocabulary) is not redone. The CPU is the test's /proc/cpuinfo: an AVX2
one, where auto runs f32 until INT8 arrives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from autotag.analysis import quantizing as q
from autotag.app import open_app
from autotag.config import load_config, openvino_installed
from autotag.daemon import int8 as auto_int8
from autotag.daemon.service import Daemon
from autotag.model import load_model
from autotag.runtimes import openvino
from autotag.runtimes import precision as p
from tests.clips import BLUE, GREEN, RED, write_video
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO not installed")

BATCH = 2
CLIPS = 8  # AUTO_INT8_CLIPS for the test: 8 clips of 4 windows, as test_quantize's
WINDOWS = 32
PARTS = [(RED, 3.2), (GREEN, 3.2), (BLUE, 3.2), (BLUE, 3.2, True)]
QUANTIZED = 600.0  # s: NNCF's import and a quantization on a machine shared with others
AVX2 = "model name\t: AMD Ryzen 7 5800X\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def setup(tmp_path, monkeypatch, model_dir, openvino_cache):
    """(config path, watched folder): the session's converted test model in a hub cache of the
    test's own (so its INT8 copy lands there), an AVX2 CPU, the test's thresholds."""
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2)
    monkeypatch.setattr(p, "CPUINFO", info)
    monkeypatch.setattr(auto_int8, "AUTO_INT8_CLIPS", CLIPS)
    monkeypatch.setattr(auto_int8, "AUTO_INT8_WINDOWS", WINDOWS)
    hub = tmp_path / "hub"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(hub))
    converted = load_model(str(model_dir), runtime="openvino", batch_size=BATCH,
                           cache_dir=openvino_cache).cache_path
    shutil.copytree(converted, hub / "openvino" / converted.name,
                    ignore=shutil.ignore_patterns("int8", p.AGREEMENT))
    watched = tmp_path / "clips"
    watched.mkdir()

    def config(extra: str = "") -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(
            f"model: {{handle: '{model_dir}', batch_size: {BATCH}, runtime: openvino{extra}}}\n"
            "vocabulary: [red, green, {sea: [blue water, blue sky]}, sky, bright]\n"
            "tagging: {top_k: 2, min_score: 3.0}\n"
            f"state: {{path: '{tmp_path / 'state.sqlite3'}'}}\n"
            "watch: {stability_seconds: 0.3, rescan_seconds: 0}\n"
            f"outputs: {{sidecar_dir: '{tmp_path / 'sidecars'}', log: null, previews: null}}\n")
        return path
    return config, watched


class Running:
    """The daemon in a thread, the model loaded as the CLI's daemon loads it."""

    def __init__(self, config: Path, root: Path) -> None:
        self.results = []
        self.daemon = Daemon(load_config(config), [root], open_app=lambda c, e: open_app(c, e),
                             reload_config=lambda: load_config(config),
                             on_result=self.results.append)
        self.thread = threading.Thread(target=self.daemon.run)

    def __enter__(self) -> Running:
        self.thread.start()
        if not self.daemon.ready.wait(120):
            self.__exit__()
            raise AssertionError("the daemon did not start in 120 s")
        return self

    def __exit__(self, *exc) -> None:
        self.daemon.request_stop()
        self.thread.join(60)
        assert not self.thread.is_alive()

    def model(self) -> dict:
        return self.daemon.status_snapshot()["model"]

    def tagged(self) -> int:
        return sum(r.status == "tagged" for r in self.results)


def write_clips(folder: Path, count: int, first: int = 0) -> list[Path]:
    return [write_video(folder / f"clip{i}.mp4", PARTS[i % 4:] + PARTS[:i % 4],
                        size=(64 + 16 * (i // 4), 48)) for i in range(first, first + count)]


def test_enough_tagged_clips_make_an_int8_copy_that_runs_without_a_restart(setup, monkeypatch):
    config, watched = setup
    # SCHED_IDLE means no CPU while the cores are busy, and CI's (and this machine's) are: the
    # child runs at normal priority here; the priority itself is the next test's subject
    monkeypatch.setattr(auto_int8, "LOWER_PRIORITY", "import os, sys\n")
    with Running(config(), watched) as running:
        embedder = running.daemon._app.embedder
        assert running.model()["precision"] == "f32"
        assert "neither AVX-512 BF16 nor AMX" in running.model()["precision_reason"]
        write_clips(watched, CLIPS - 1)
        wait_for(lambda: running.tagged() == CLIPS - 1, 120)
        assert running.model()["int8"] == {"state": "waiting"}  # one clip short
        write_clips(watched, 1, first=CLIPS - 1)
        wait_for(lambda: running.model()["int8"]["state"] != "waiting", 120)
        wait_for(lambda: running.model()["int8"]["state"] != "quantizing", QUANTIZED)
        status = running.model()
        assert status["int8"]["state"] == "accepted", status
        assert status["int8"]["report"]["accepted"] is True
        assert status["precision"] == "int8" and embedder.precision == "int8"
        assert "INT8 copy validated on your clips" in status["precision_reason"]
        report = json.loads((openvino.int8_dir(embedder.cache_path) / q.REPORT).read_text())
        assert report["accepted"] and report["mean_cosine"] >= q.MIN_MEAN_COSINE
        # the next clip runs on INT8 and is tagged as f32 tags it
        (red,) = [write_video(watched / "red.mp4", [(RED, 3.2)])]
        wait_for(lambda: any(r.path == red for r in running.results), 120)
        (result,) = [r for r in running.results if r.path == red]
        assert result.status == "tagged" and result.tags[0].label == "red"
    # the next start runs INT8 at once, by auto's rule, and quantizes nothing again
    with Running(config(), watched) as running:
        assert running.model()["precision"] == "int8"
        assert running.model()["int8"]["state"] == "accepted"


def test_auto_int8_false_never_quantizes(setup):
    config, watched = setup
    with Running(config(", auto_int8: false"), watched) as running:
        write_clips(watched, CLIPS)
        wait_for(lambda: running.tagged() == CLIPS, 120)
        assert running.model()["int8"] == {"state": "off"}
        assert running.model()["precision"] == "f32"
        assert not openvino.int8_dir(running.daemon._app.embedder.cache_path).exists()


def test_the_child_runs_at_idle_priority_with_the_quantize_command(setup):
    """The command line the daemon starts: SCHED_IDLE (or nice 19) set first, then `autotag
    quantize` on the tagged clips with the daemon's config and model."""
    config, watched = setup
    cfg = load_config(config())
    worker = auto_int8.AutoInt8(cfg, lambda: None, lambda n: [])
    command = worker._command([watched / "a.mp4"])
    assert command[2].startswith(auto_int8.LOWER_PRIORITY) and "SCHED_IDLE" in command[2]
    check = auto_int8.LOWER_PRIORITY + "print(os.sched_getscheduler(0), os.getpriority(0, 0))"
    policy, nice = subprocess.run([sys.executable, "-c", check], capture_output=True,
                                  text=True, check=True).stdout.split()
    assert int(policy) == os.SCHED_IDLE or int(nice) == 19
    assert command[3:] == ["quantize", "--windows", str(WINDOWS), "--model", cfg.model.handle,
                           "--config", str(cfg.source), str(watched / "a.mp4")]
