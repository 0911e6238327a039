"""Settings → child processes (model alone, autotag --once, the article, the daemon) → figures.

The parent never imports TensorFlow: everything that loads the model runs in a child whose peak
RSS is read alone from os.wait4. Decoding alone runs here, on one thread, with autotag's own
sampler. Every run gets its own state store, sidecar folder and (unless shared on purpose) text
cache, so nothing is "up to date" or reused from another run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
CACHE = HERE / ".cache"  # the stand-in model, generated clips, stores (kept between runs)
RESULTS = HERE / "results"  # every run's table and rows (not committed)
BASE_CONFIG = ROOT / "config.yaml"  # the shipped defaults, vocabulary included
CHILD_TIMEOUT = 900.0  # s; a child that takes longer is killed (a hung run, not a slow one)
READY_TIMEOUT = 300.0  # s from the daemon's start to READY=1
SIDECAR_TIMEOUT = 120.0  # s from a clip's last write to its sidecar
SIDECAR_POLL = 0.01  # s between looks for the sidecar
WRITE_CHUNKS = 4  # a clip arrives in this many writes ...
WRITE_GAP = 0.1  # s ... this far apart (a copy in progress)


@dataclass(frozen=True)
class Child:
    """One child process: its wall time, peak RSS and the JSON it wrote."""

    seconds: float
    peak_rss_mb: float
    code: int
    result: dict


@dataclass
class Workspace:
    """Scratch folders for one benchmark run, and the knobs every run shares."""

    root: Path
    handle: str  # the model: a SavedModel directory
    overrides: dict = field(default_factory=dict)  # config keys set for every run
    _runs: itertools.count = field(default_factory=itertools.count)

    def run_dir(self, name: str) -> Path:
        path = self.root / f"{next(self._runs):02d}-{name}"
        path.mkdir(parents=True)
        return path

    def config(self, folder: Path, **sections: dict) -> Path:
        """A config file: the shipped config.yaml with the model, state and outputs in
        `folder`, the workspace's overrides and then `sections` applied."""
        data = yaml.safe_load(BASE_CONFIG.read_text())
        data["model"]["handle"] = self.handle
        data["state"] = {"path": str(folder / "state.sqlite3")}
        data["outputs"].update(sidecar_dir=str(folder / "sidecars"),
                               log=str(folder / "matches.jsonl"),
                               previews=str(folder / "previews"))
        for key, values in [*self.overrides.items(), *sections.items()]:
            data.setdefault(key, {}).update(values)
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def env(self, folder: Path, cache: Path | None = None) -> dict[str, str]:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                   XDG_CACHE_HOME=str(cache or folder / "cache"),
                   XDG_DATA_HOME=str(folder / "data"), XDG_CONFIG_HOME=str(folder / "xdg"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.pop("NOTIFY_SOCKET", None)
        return env


def run_child(argv: list[str], env: dict[str, str], folder: Path,
              timeout: float = CHILD_TIMEOUT) -> Child:
    """Run argv to its end; its own peak RSS comes from wait4, its result from $BENCH_RESULT."""
    result_path = folder / "result.json"
    env = dict(env, BENCH_RESULT=str(result_path))
    with open(folder / "output.log", "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    return Child(seconds, usage.ru_maxrss / 1024, proc.returncode, result)


def probe(ws: Workspace, name: str, kind: str, **payload) -> Child:
    """Run one `benchmarks.probe` measurement in a child of its own."""
    folder = ws.run_dir(name)
    argv = [sys.executable, "-m", "benchmarks.probe", kind, json.dumps(payload)]
    child = run_child(argv, ws.env(folder), folder)
    if not child.result:
        tail = (folder / "output.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"{name}: the probe wrote no result (exit {child.code}):\n{tail}")
    return child


# -- the measurements -------------------------------------------------------------------------

def model_alone(ws: Workspace, batch: int, calls: int, threads: int = 0, inter: int = 0,
                runtime: str = "tensorflow", cache: Path | None = None,
                precision: str | None = None) -> Child:
    """The model alone on `runtime`; for OpenVINO, `cache` is the conversion cache (None: a
    fresh one in the run's folder, i.e. a cold start)."""
    name = f"model-{runtime}{'-' + precision if precision else ''}-b{batch}-t{threads}-i{inter}"
    return probe(ws, name, "model", handle=ws.handle, batch=batch, calls=calls, threads=threads,
                 inter=inter, runtime=runtime, cache=str(cache) if cache else None,
                 precision=precision)


def article(ws: Workspace, clips: list[Path]) -> Child:
    return probe(ws, "article", "article", handle=ws.handle, clips=[str(c) for c in clips])


def once(ws: Workspace, name: str, folder: Path, **sections: dict) -> Child:
    """`autotag --once FOLDER` with a fresh state store and sidecar folder."""
    run = ws.run_dir(name)
    argv = ["--once", "--config", str(ws.config(run, **sections)), str(folder)]
    child = probe_in(ws, run, "once", argv=argv)
    if child.result.get("tagged") != len([p for p in folder.iterdir() if p.is_file()]):
        tail = (run / "output.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"{name}: not every clip was tagged: {child.result}\n{tail}")
    return child


def probe_in(ws: Workspace, folder: Path, kind: str, **payload) -> Child:
    argv = [sys.executable, "-m", "benchmarks.probe", kind, json.dumps(payload)]
    return run_child(argv, ws.env(folder), folder)


def decoding(clips: list[Path], max_windows: int, max_pixels: int,
             repeat: int = 1) -> tuple[float, float, int]:
    """(seconds, CPU seconds, windows) autotag's sampler takes for these clips, one after
    another on this thread (the best of `repeat` passes: the page cache and the CPU's clock
    settle). CPU time is what decoding takes from the model on a loaded CPU (issue 13)."""
    from autotag import media

    best = (float("inf"), float("inf"), 0)
    for _ in range(repeat):
        started, cpu, windows = time.perf_counter(), time.process_time(), 0
        for clip in clips:
            windows += len(media.sample_clip(clip, max_windows, max_pixels).windows)
        best = min(best, (time.perf_counter() - started, time.process_time() - cpu, windows))
    return best


@dataclass(frozen=True)
class DaemonRun:
    ready_seconds: float  # process start → READY=1
    latencies: list[float]  # per clip: last write → sidecar, minus the stability delay
    peak_rss_mb: float


def daemon(ws: Workspace, name: str, cache: Path, arrivals: list[Path],
           stability: float) -> DaemonRun:
    """Start `autotag DIR` under a NOTIFY_SOCKET of ours, time READY=1, then copy `arrivals`
    in one by one and time each one's sidecar; SIGTERM it and read its peak RSS."""
    run = ws.run_dir(name)
    watched = run / "watched"
    watched.mkdir()
    config = ws.config(run, watch={"stability_seconds": stability, "rescan_seconds": 0})
    sock_dir = Path(tempfile.mkdtemp(prefix="autotag-bench-"))  # AF_UNIX paths are short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(sock_dir / "notify"))
        env = dict(ws.env(run, cache), NOTIFY_SOCKET=str(sock_dir / "notify"))
        argv = [sys.executable, "-m", "autotag", "--config", str(config), str(watched)]
        with open(run / "output.log", "ab") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run)
            try:
                ready = _wait_ready(sock, proc) - started
                latencies = [_arrival(clip, watched, config, stability) for clip in arrivals]
            finally:
                proc.send_signal(signal.SIGTERM)
                killer = threading.Timer(30, proc.kill)
                killer.start()
                _, status, usage = os.wait4(proc.pid, 0)
                killer.cancel()
                proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return DaemonRun(ready, latencies, usage.ru_maxrss / 1024)


def _wait_ready(sock: socket.socket, proc: subprocess.Popen) -> float:
    deadline = time.monotonic() + READY_TIMEOUT
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}) before READY=1")
            continue
        if "READY=1" in message.split("\n"):
            return time.perf_counter()
    raise RuntimeError("the daemon did not send READY=1")


def _arrival(clip: Path, watched: Path, config: Path, stability: float) -> float:
    """Write `clip` into the watched folder in chunks; seconds from the last write to its
    sidecar, beyond the stability delay."""
    from autotag.config import load_config
    from autotag.outputs import sidecar_path

    target = watched / clip.name
    sidecar = sidecar_path(target, load_config(config).outputs)
    data = clip.read_bytes()
    step = -(-len(data) // WRITE_CHUNKS)
    with open(target, "wb") as f:
        for i in range(0, len(data), step):
            if i:
                time.sleep(WRITE_GAP)
            f.write(data[i:i + step])
            f.flush()
    last_write = time.perf_counter()
    deadline = last_write + SIDECAR_TIMEOUT
    while not sidecar.exists():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no sidecar for {target.name} within {SIDECAR_TIMEOUT:.0f} s")
        time.sleep(SIDECAR_POLL)
    return time.perf_counter() - last_write - stability


def window_count(clip: Path, max_windows: int) -> int:
    """How many windows autotag's sampler takes from this clip."""
    from autotag import media

    return len(media.sample_clip(clip, max_windows, media_limit()).windows)


def media_limit() -> int:
    from autotag.config import SamplingConfig

    return SamplingConfig().max_pixels


def standin(cache: Path) -> Path:
    """The stand-in SavedModel, built by a child process once per version of standin.py."""
    digest = hashlib.sha256((HERE / "standin.py").read_bytes()).hexdigest()[:12]
    path = cache / f"standin-{digest}"
    if not (path / "saved_model.pb").exists():
        tmp = Path(tempfile.mkdtemp(prefix="standin-", dir=cache))
        subprocess.run([sys.executable, "-m", "benchmarks.standin", str(tmp / "model")],
                       check=True, cwd=HERE.parent, env=Workspace(tmp, "").env(tmp))
        (tmp / "model").replace(path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path
