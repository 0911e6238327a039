"""Enough clips tagged → `autotag quantize` on them in a child at idle priority → its report →
the INT8 copy run without a restart if it passed (and beats what runs): the daemon's own INT8.

Issue 34: on a CPU that gains from INT8 (AVX2, VNNI, AMX: INT8 ran 2.48× f32 on a Zen 3 and
6.0× on a Sapphire Rapids, where bf16 gave 3.7×) a user should not have to find `autotag
quantize` in the docs. The child is the command itself (analysis/quantizing.py: calibrated on
some of the clips' windows, validated against f32 on the others' held-out windows, the INT8
copy kept only when it passed the bar), started with SCHED_IDLE (nice 19 where that is refused),
so tagging and the rest of the machine come first. One quantization per converted model: its
report, accepted or not, sits beside the cached IR and is not redone; a new vocabulary keeps it
(the video side does not depend on the tags), a new model (another IR folder) makes another.
One thread owns the child; `stop()` ends both.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from autotag.config import Config

log = logging.getLogger(__name__)

# Clips tagged (in the store) before the daemon quantizes: 16 clips let the report split them
# by clip (validation windows from clips calibration never saw, at least 2 a side) across
# the library's variety, not one clip's scenes.
AUTO_INT8_CLIPS = 16
# Windows decoded from them: 80 to calibrate on (per-tensor ranges of S3D-G's activations settle
# in tens of windows; NNCF's 300 default is for ImageNet-sized variety), 40 held out, so the
# report's 97 % tag agreement lets one window differ. 120 × 4.8 MB of uint8 frames is 0.6 GB in
# the child, once, where quantize's default 300 would take 1.4 GB on a NAS.
AUTO_INT8_WINDOWS = 120
MAX_CLIPS = 200  # of the most recently tagged clips, the quantizer draws from these

# The child's first lines: the lowest priority there is, before anything is imported.
LOWER_PRIORITY = """
import os, sys
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # sched(7): only when idle
except (AttributeError, OSError):
    os.nice(19)
"""
RUN_QUANTIZE = """
from autotag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def gains_from_int8(embedder) -> bool:
    """The video model runs on OpenVINO under model.precision auto, on a CPU with int8 dot
    products worth having (precision.INT8_FLAGS)."""
    choice = getattr(embedder, "choice", None)
    return choice is not None and choice.cpu is not None and bool(choice.cpu.int8)


class AutoInt8:
    """Watches the count of tagged clips and, once, quantizes in a child; `switch(reason)` is
    called with the accepted report's verdict when the INT8 copy should run."""

    def __init__(self, config: Config, embedder_of: Callable[[], object],
                 tagged_clips: Callable[[int], list[Path]]) -> None:
        self.config = config
        self._embedder_of = embedder_of  # the running app's embedder (a reload swaps it)
        self._tagged_clips = tagged_clips  # (limit) → paths of tagged clips, newest first
        self.state = "off" if not config.model.auto_int8 else "waiting"
        self.report: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def status(self) -> dict:
        """For the status page and /metrics: where it is, and the report's verdict."""
        out: dict = {"state": self.state}
        if self.report is not None:
            out["report"] = {k: self.report.get(k) for k in (
                "accepted", "reason", "mean_cosine", "tag_agreement", "speedup", "windows",
                "created") if k in self.report}
        return out

    def check(self) -> None:
        """After a clip is tagged (and at start): quantize once enough clips are tagged."""
        if self.state != "waiting":
            return
        embedder = self._embedder_of()
        model = getattr(embedder, "loaded_model", embedder)  # LazyEmbedder: the loaded one
        if self.config.model.precision != "auto" or not gains_from_int8(model):
            return
        f32_dir = Path(model.cache_path)
        from autotag.analysis import quantizing as quantize

        existing = quantize.read_report(f32_dir)
        if existing is not None:  # done for this model: accepted (auto runs it) or refused
            self.report, self.state = existing, ("accepted" if existing.get("accepted")
                                                 else "refused")
            return
        clips = self._tagged_clips(MAX_CLIPS)
        if len(clips) < AUTO_INT8_CLIPS:
            return
        with self._lock:
            if self.state != "waiting" or self._stop.is_set():
                return
            self.state = "quantizing"
            self._thread = threading.Thread(target=self._run, args=(clips, f32_dir, model),
                                            name="autotag-int8", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the child (its temp folder is removed by the next quantization) and the thread."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join()

    def _command(self, clips: list[Path]) -> list[str]:
        config = self.config
        args = [sys.executable, "-c", LOWER_PRIORITY + RUN_QUANTIZE, "quantize", "--windows",
                str(AUTO_INT8_WINDOWS), "--model", config.model.handle]
        if config.source is not None:
            args += ["--config", str(config.source)]
        return [*args, *map(str, clips)]

    def _run(self, clips: list[Path], f32_dir: Path, model) -> None:
        from autotag.analysis import quantizing as quantize

        log.info("quantizing the video model to INT8 on %d of your tagged clips, at idle "
                 "priority in a child process (model.auto_int8: false turns this off)",
                 len(clips))
        try:
            with self._lock:
                if self._stop.is_set():
                    return
                self._proc = subprocess.Popen(self._command(clips), stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL)
            code = self._proc.wait()
        except OSError as exc:
            self.state = "failed"
            log.warning("cannot start the INT8 quantization: %s", exc)
            return
        if self._stop.is_set():
            self.state = "waiting"  # stopped: the next start tries again
            return
        self.report = quantize.read_report(f32_dir)
        if self.report is None:
            self.state = "failed"
            log.warning("the INT8 quantization ended (exit code %d) without a report; "
                        "staying at %s", code, getattr(model, "precision", "f32"))
            return
        if not self.report.get("accepted"):
            self.state = "refused"
            log.info("INT8 refused: %s; staying at %s", self.report.get("reason"),
                     getattr(model, "precision", "f32"))
            return
        self.state = self._use(model, f32_dir)  # set once the switch is made

    def _use(self, model, f32_dir: Path) -> str:
        """Run the accepted INT8 copy if auto's rule prefers it to what runs now (bf16 may be
        faster); the state that leaves."""
        from autotag.runtimes import openvino, precision

        choice = precision.choose(f32_dir, model.choice.cpu, openvino.int8_report(f32_dir))
        if choice.precision != "int8":
            log.info("INT8 accepted but %s stays: %s", choice.precision, choice.reason)
            return "accepted"
        try:
            model.switch("int8", choice.reason)
        except (openvino.ConversionError, openvino.NotQuantized) as exc:
            log.warning("the accepted INT8 copy cannot run: %s", exc)
            return "failed"
        return "accepted"

