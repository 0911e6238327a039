"""N clips → `autotag backfill` (this checkout and `before`'s, each a child on a Ray of its own)
with a stand-in model in Ray's workers → seconds from the command's start to the first model
call, and the driver's peak memory, at 10,000 and 100,000 clips.

    python -m benchmarks.scale.plan                          # this checkout
    python -m benchmarks.scale.plan --before /tmp/scale-before

The archive: copies of one tiny clip (64 × 48, 1 s, MPEG-4: a few KB), in folders of FOLDER,
each a file of its own (the walk counts a hard link once). The model: a stand-in written into
the run's folder and installed by Ray's worker_process_setup_hook in every Ray worker, as
tests/test_cluster.py installs its crash (nothing of it is in the product): its first call
writes the time to a file, and it returns ones. The driver is `autotag backfill` itself, run
by a three-line script that starts Ray first with that hook (backfill then joins that Ray, as it
joins one already started); its text embeddings are cached beforehand, so it loads no model.
The run goes on HOLD_SECONDS past the first model call, the driver's VmHWM (its own peak RSS,
not Ray's processes') is read from /proc, and it is stopped (SIGINT, as Ctrl-C). 44dee5f walks,
stats, hashes and plans every clip before Ray is asked for anything: its first call waits for
that, and its peak holds the whole plan.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIPS = (10_000, 100_000)
QUICK_CLIPS = (200,)  # Ray's start alone is 10-30 s on two busy cores
FOLDER = 1_000  # clips per folder
HOLD_SECONDS = 10.0  # the run goes on this long after the first model call
QUICK_HOLD_SECONDS = 2.0
FIRST_CALL_TIMEOUT = 900.0  # s; a run whose model is not called by then is reported as such
STOP_TIMEOUT = 60.0  # s for the driver to stop after SIGINT, then SIGKILL
OBJECT_STORE = 256 * 2**20  # bytes: Ray's object store for the run (its minimum is 75 MB)
VOCABULARY = ["red", "green"]

STANDIN = '''
"""The benchmark's stand-in model (benchmarks.scale.plan), installed in each Ray worker."""
import os, time
import numpy as np

class StandIn:
    def __init__(self, fingerprint):
        self.fingerprint = fingerprint

    def embed_video(self, frames):
        try:  # the first call of the run: its time
            fd = os.open(os.environ["SCALE_MARK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, repr(time.time()).encode())
            os.close(fd)
        except FileExistsError:
            pass
        return np.ones((len(frames), 512), np.float32)

    def embed_text(self, texts):
        return np.ones((len(texts), 512), np.float32)

def setup():
    from autotag import cluster
    from autotag.model import fingerprint
    cluster.load_embedder = lambda model, threads: StandIn(fingerprint(model.handle))
'''

DRIVER = '''
import logging, os, sys
import ray
ray.init(num_cpus=2, include_dashboard=False, object_store_memory=int(sys.argv[3]),
         log_to_driver=False, logging_level=logging.ERROR,
         runtime_env={"worker_process_setup_hook": "scale_standin.setup",
                      "env_vars": {k: os.environ[k] for k in ("PYTHONPATH", "SCALE_MARK")}})
import time
with open(os.environ["SCALE_MARK"] + ".ray", "w") as f:  # Ray is up: the rest is autotag's
    f.write(repr(time.time()))
from autotag import cli
sys.exit(cli.main(["backfill", "--config", sys.argv[1], sys.argv[2]]))
'''


def measure(quick: bool = False, before: Path | None = None) -> dict:
    """Figures for the report: {"rows": [...], "notes": [...]} (see benchmarks.scale)."""
    counts = QUICK_CLIPS if quick else CLIPS
    hold = QUICK_HOLD_SECONDS if quick else HOLD_SECONDS
    scratch = Path(tempfile.mkdtemp(prefix="scale-plan-"))
    notes: list[str] = []
    figures: dict[tuple[str, int], dict] = {}
    sides = {"after": ROOT} | ({"before": before} if before is not None else {})
    try:
        clip = tiny_clip(scratch / "clip.mp4")
        clip_bytes = clip.stat().st_size
        (scratch / "scale_standin.py").write_text(STANDIN)
        for n in counts:
            library = archive(scratch / f"archive-{n}", clip, n)
            for name, checkout in sides.items():
                figures[name, n] = run_backfill(checkout, scratch / f"{name}-{n}", library,
                                                hold)
                if figures[name, n]["first_call_s"] is None:
                    notes.append(f"{name}, {n:,} clips: no model call within "
                                 f"{FIRST_CALL_TIMEOUT:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for n in counts:
        for key, metric, unit in (("first_call_s", "command start → first model call", "s"),
                                  ("after_ray_s", "Ray started → first model call", "s"),
                                  ("peak_mb", "driver peak memory (VmHWM)", "MB")):
            rows.append({"metric": f"backfill, {n:,} clips: {metric}", "unit": unit,
                         **{side: figures.get((side, n), {}).get(key)
                            for side in ("before", "after")}})
    notes.append(f"copies of one {clip_bytes:,}-byte clip; the driver's memory read "
                 f"{hold:g} s after the first model call; a stand-in model in Ray's workers")
    return {"rows": rows, "notes": notes}


def tiny_clip(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10", "-t", "1", "-c:v", "mpeg4", str(path)],
                   check=True)
    return path


def archive(root: Path, clip: Path, n: int) -> Path:
    """n copies of `clip`, FOLDER a folder (each its own file)."""
    data = clip.read_bytes()
    for i in range(n):
        folder = root / f"{i // FOLDER:04d}"
        if i % FOLDER == 0:
            folder.mkdir(parents=True)
        (folder / f"clip{i:06d}.mp4").write_bytes(data)
    return root


def run_backfill(checkout: Path, folder: Path, library: Path, hold: float) -> dict:
    """One backfill of `checkout` over `library`: first model call (s after the command's
    start) and the driver's VmHWM (MB) once the run has gone on `hold` s past it."""
    sys.path.insert(0, str(ROOT))
    from autotag.model import fingerprint
    from benchmarks.serve import fill_text_cache

    folder.mkdir()
    handle = folder / "model"  # empty: only its fingerprint is used (the stand-in's too)
    handle.mkdir()
    config = folder / "config.yaml"
    config.write_text(json.dumps({"model": {"handle": str(handle)},
                                  "state": {"path": str(folder / "state.sqlite3")},
                                  "vocabulary": VOCABULARY,
                                  "outputs": {"previews": None, "log": None}}))
    fill_text_cache(folder / "xdg" / "cache", fingerprint(str(handle)), VOCABULARY)
    token = folder / "ray-token"
    token.write_text(secrets.token_hex(32))
    mark = folder / "first-call"
    env = dict(os.environ, XDG_CACHE_HOME=str(folder / "xdg" / "cache"),
               XDG_CONFIG_HOME=str(folder / "xdg" / "config"), SCALE_MARK=str(mark),
               PYTHONPATH=os.pathsep.join([str(checkout), str(folder.parent)]),
               RAY_ADDRESS="local", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_BACKEND_LOG_LEVEL="fatal", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryFile("w+") as err:
        started = time.time()
        child = subprocess.Popen([sys.executable, "-c", DRIVER, str(config), str(library),
                                  str(OBJECT_STORE)], env=env, cwd=folder,
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        first = wait_for_mark(mark, child, started)
        if first is not None:
            time.sleep(hold)
        peak = vm_hwm(child.pid)
        stop(child)
        print(f"{checkout.name} {library.name}: first call {first and first - started}, "
              f"peak {peak} MB", file=sys.stderr)
        err.seek(0)
        tail = err.read()[-1500:]
    if first is None and child.returncode not in (None, 0, -signal.SIGINT, 130):
        raise RuntimeError(f"backfill of {checkout} exited {child.returncode}: {tail}")
    ray_up = float((folder / "first-call.ray").read_text()) if first is not None else None
    return {"first_call_s": None if first is None else first - started,
            "after_ray_s": None if first is None else first - ray_up, "peak_mb": peak}


def wait_for_mark(mark: Path, child: subprocess.Popen, started: float) -> float | None:
    while time.time() - started < FIRST_CALL_TIMEOUT and child.poll() is None:
        if mark.exists() and mark.read_text():
            return float(mark.read_text())
        time.sleep(0.1)
    return None


def vm_hwm(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(child: subprocess.Popen) -> None:
    """SIGINT (Ctrl-C), then its whole session if it outlives STOP_TIMEOUT."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.plan",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="an older checkout (git worktree add /tmp/scale-before 44dee5f)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIPS} clips")
    args = parser.parse_args()
    print(json.dumps(measure(args.quick, args.before and args.before.resolve()), indent=1))


if __name__ == "__main__":
    main()
