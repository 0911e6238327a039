"""`python -m benchmarks.stages FOLDER [--precision P]` → `autotag --once --force FOLDER` in a
child, timed by stage and by thread → the limit (decoding alone + the model alone on the same
windows, 2 workers, all cores) → a table: where the time goes, and how near the limit it runs.

Issue 34: with bf16 the model is no longer the wall, so the question is what else is. The
child runs autotag's own CLI with a few functions wrapped (nothing else changes):

    start-up:  imports, config, store and vocabulary (everything before App.tag), the video
               model's load (lazy: inside the run, while workers decode)
    decoding:  engine.decode per clip (CPU of its own thread: the decoder releases the GIL)
    the model: engine.embed_windows (uint8 → float32 included), wall on the model loop's thread
    outputs:   Tagger.result per clip (scores, sidecar, log, preview JPEG, XMP, store)

and /proc/self/task/*/stat is sampled every SAMPLE_SECONDS for each thread's CPU, grouped as
decode workers, the model loop (the main thread) and the rest (OpenVINO's pool, others), so "do
both cores stay busy" is the CPU used over wall × cores while tagging.

The limit comes from a second child, which decodes the same clips alone (engine.decode, the
config's decode_workers threads) and then runs the model alone (the same compiled model, the
config's batch size) on the windows it decoded: limit = those two walls added, the best the
pipeline could do if it overlapped them perfectly on these cores.

Timing figures need a quiet machine; CPU seconds per stage are steadier under load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

SAMPLE_SECONDS = 0.1  # between reads of the threads' CPU times
TICK = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in clock ticks


# -- the child's measurements ------------------------------------------------------------------

class ThreadCpu:
    """Each thread's CPU seconds, read from /proc every SAMPLE_SECONDS (a thread's last reading
    is kept after it ends) and grouped by what the thread is; owns its sampling thread."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, float]] = {}  # tid → (group, CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-thread-cpu", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.read()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.read()

    def read(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        main = threading.main_thread().native_id
        for task in Path("/proc/self/task").iterdir():
            try:
                fields = (task / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # ended between the listing and the read
            tid = int(task.name)
            seconds = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
            name = names.get(tid, "")
            group = ("decode workers" if name.startswith("autotag-decode") else
                     "main thread (model calls, outputs)" if tid == main else
                     "sampler" if name == "bench-thread-cpu" else
                     "other threads (the runtime's pool, ...)")
            old = self.seen.get(tid)
            if old is None or seconds >= old[1]:
                self.seen[tid] = (old[0] if old and old[0] != group and group.startswith(
                    "other") else group, seconds)

    def ended(self, group: str) -> None:
        """The calling thread is about to end: its own CPU clock, exact (a worker that ends
        between two readings would otherwise lose up to SAMPLE_SECONDS)."""
        tid, seconds = threading.get_native_id(), time.thread_time()
        if seconds >= self.seen.get(tid, (group, 0.0))[1]:
            self.seen[tid] = (group, seconds)

    def groups(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for group, seconds in self.seen.values():
            out[group] = out.get(group, 0.0) + seconds
        return out


class Stage:
    """Calls of one wrapped function: their count, wall seconds and the calling thread's CPU."""

    def __init__(self) -> None:
        self.calls, self.wall, self.cpu = 0, 0.0, 0.0
        self._lock = threading.Lock()

    def wrap(self, fn):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.calls += 1
                    self.wall += time.perf_counter() - wall
                    self.cpu += time.thread_time() - cpu
        return timed

    def figures(self) -> dict:
        return {"calls": self.calls, "wall": self.wall, "cpu": self.cpu}


def child_once(argv: list[str]) -> dict:
    """autotag's CLI on argv, its stages timed (see the module's docstring)."""
    started, cpu0 = time.perf_counter(), time.process_time()
    from autotag import app, cli, engine, model, tagging  # the imports count as start-up
    imported = time.perf_counter()
    stages = {name: Stage() for name in ("decode", "model", "to float32", "outputs", "load")}
    engine.decode = stages["decode"].wrap(engine.decode)
    engine.embed_windows = stages["model"].wrap(engine.embed_windows)
    engine.model_input = stages["to float32"].wrap(engine.model_input)
    tagging.Tagger.result = stages["outputs"].wrap(tagging.Tagger.result)
    model.load_model = stages["load"].wrap(model.load_model)
    marks: dict = {"windows": 0}
    original_tag = app.App.tag

    def timed_tag(self, *args, **kwargs):
        marks["tag_start"], marks["tag_cpu0"] = time.perf_counter(), time.process_time()
        for result in original_tag(self, *args, **kwargs):
            marks["windows"] += result.windows
            yield result
        marks["tag_end"], marks["tag_cpu1"] = time.perf_counter(), time.process_time()

    app.App.tag = timed_tag
    threads = ThreadCpu()
    original_worker = engine._Run._worker

    def worker(self):
        try:
            return original_worker(self)
        finally:
            threads.ended("decode workers")

    engine._Run._worker = worker
    with threads:
        code = cli.main(argv)
    ended = time.perf_counter()
    start, end = marks.get("tag_start", ended), marks.get("tag_end", ended)
    load = stages["load"].wall
    tag_cpu = marks.get("tag_cpu1", 0.0) - marks.get("tag_cpu0", 0.0)
    return {"exit_code": code, "windows": marks["windows"], "cores": os.cpu_count(),
            "imports": imported - started, "before_tag": start - imported, "load": load,
            "tagging": end - start - load, "after_tag": ended - end, "total": ended - started,
            "process_cpu": time.process_time() - cpu0, "tagging_cpu": tag_cpu,
            "stages": {k: v.figures() for k, v in stages.items()}, "threads": threads.groups()}


def child_limit(config_path: str, folder: str) -> dict:
    """Decoding alone, then the model alone on the windows decoded: the limit's two parts."""
    from concurrent.futures import ThreadPoolExecutor

    from autotag import engine
    from autotag.clip import SourceInfo
    from autotag.config import load_config
    from autotag.model import load_model

    config = load_config(Path(config_path))
    clips = sorted(p for p in Path(folder).iterdir() if p.is_file())
    sources = [SourceInfo(p, p.stat().st_size, p.stat().st_mtime, "") for p in clips]
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(config.sampling.decode_workers) as pool:
        sampled = list(pool.map(lambda s: engine.decode(s, config.sampling), sources))
    decode_wall, decode_cpu = time.perf_counter() - wall, time.process_time() - cpu
    windows = [w for s in sampled for w in s.frames]
    m = config.model
    embedder = load_model(m.handle, runtime=m.runtime, batch_size=m.batch_size, threads=m.threads,
                          precision=m.precision)
    batch = m.batch_size
    engine.embed_windows(embedder, windows[:batch])  # a warm-up call, as the run's first one
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(windows), batch):
        engine.embed_windows(embedder, windows[i:i + batch])
    model_wall, model_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"windows": len(windows), "decode_wall": decode_wall, "decode_cpu": decode_cpu,
            "model_wall": model_wall, "model_cpu": model_cpu,
            "precision": getattr(embedder, "precision", None)}


# -- the parent --------------------------------------------------------------------------------

def run_child(kind: str, args: list[str], env: dict[str, str], folder: Path) -> dict:
    from benchmarks import measure

    argv = [sys.executable, "-m", "benchmarks.stages", "--child", kind, json.dumps(args)]
    child = measure.run_child(argv, env, folder)
    if not child.result:
        raise RuntimeError(f"{kind}: no result\n"
                           + (folder / "output.log").read_text(errors="replace")[-800:])
    return dict(child.result, child_seconds=child.seconds)


def render(once: dict, limit: dict) -> str:
    s, t = once["stages"], once["tagging"]
    n = once["windows"]
    limit_s = limit["decode_wall"] + limit["model_wall"]
    lines = [
        f"{n} windows, {once['cores']} cores, the model at {limit['precision']}",
        "",
        "| stage | wall s | CPU s | note |", "|---|---:|---:|---|",
        f"| imports (autotag, its CLI) | {once['imports']:.2f} | | |",
        f"| config, store, vocabulary | {once['before_tag']:.2f} | | before App.tag |",
        f"| video model load | {s['load']['wall']:.2f} | {s['load']['cpu']:.2f} | inside the run |",
        (f"| tagging after the load | {t:.2f} | {once['tagging_cpu']:.2f} | "
        f"{once['tagging_cpu'] / max(t + s['load']['wall'], 1e-9) / once['cores']:.0%} of "
        f"the cores busy |"),
        (f"| … decoding (engine.decode) | {s['decode']['wall']:.2f} | {s['decode']['cpu']:.2f} "
        f"| {s['decode']['calls']} clips, summed over workers; "
        f"{s['decode']['cpu'] / max(n, 1) * 1000:.0f} ms CPU a window |"),
        (f"| … the model (embed_windows) | {s['model']['wall']:.2f} | "
        f"{s['model']['cpu']:.2f} | {s['model']['calls']} calls; CPU of the calling thread |"),
        (f"| … of which uint8 → float32 | {s['to float32']['wall']:.2f} | "
        f"{s['to float32']['cpu']:.2f} | |"),
        (f"| … outputs (Tagger.result) | {s['outputs']['wall']:.2f} | "
        f"{s['outputs']['cpu']:.2f} | scores, sidecar, log, preview, store |"),
        f"| after the run | {once['after_tag']:.2f} | | exit |",
        (f"| total (in the process) | {once['total']:.2f} | {once['process_cpu']:.2f} | "
        f"child wall {once['child_seconds']:.2f} |"),
        "", "| threads | CPU s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in sorted(once["threads"].items())]
    rate = n / max(t, 1e-9)
    limit_rate = limit["windows"] / max(limit_s, 1e-9)
    lines += [
        "", "| the limit, the same clips | wall s | CPU s |", "|---|---:|---:|",
        (f"| decoding alone ({limit['windows']} windows) | {limit['decode_wall']:.2f} | "
        f"{limit['decode_cpu']:.2f} |"),
        f"| the model alone | {limit['model_wall']:.2f} | {limit['model_cpu']:.2f} |",
        f"| limit (the two added) | {limit_s:.2f} | |", "",
        (f"--once after start-up: {rate:.2f} windows/s; the limit {limit_rate:.2f} windows/s: "
        f"**{rate / limit_rate:.2f} × the limit** (with start-up: "
        f"{n / once['child_seconds']:.2f} windows/s, {n / once['child_seconds'] / limit_rate:.2f} ×)")]
    return "\n".join(lines) + "\n"


def measure_stages(handle: str, folder: Path, precision: str, cache: Path,
                   scratch_parent: Path, overrides: dict | None = None) -> tuple[dict, dict]:
    """(the --once child's figures, the limit child's) on `folder` with the model `handle`;
    `cache`: the hub/OpenVINO/text cache (kept: the conversion and auto's verdict happen once)."""
    from benchmarks import measure

    scratch = Path(tempfile.mkdtemp(prefix="stages-", dir=scratch_parent))
    try:
        ws = measure.Workspace(scratch, handle, overrides or {})
        model = {"precision": precision}
        for _ in range(2 if precision == "auto" else 1):  # the first converts (once); auto's
            run = ws.run_dir("warm")                       # second records its verdict
            config = ws.config(run, model=model)
            run_child("once", ["--once", "--force", "--config", str(config), str(folder)],
                      ws.env(run, cache), run)
        run = ws.run_dir("once")
        config = ws.config(run, model=model)
        once = run_child("once", ["--once", "--force", "--config", str(config), str(folder)],
                         ws.env(run, cache), run)
        run = ws.run_dir("limit")
        limit = run_child("limit", [str(ws.config(run, model=model)), str(folder)],
                          ws.env(run, cache), run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return once, limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__)
    parser.add_argument("folder", type=Path, nargs="?", help="the clips (default: 4 generated "
                        "1080p30 H.264 clips of 20 s with grain, made here once)")
    parser.add_argument("--precision", default="auto", help="model.precision (default auto: "
                        "two warm-up runs first record its verdict)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, payload = args.child[0], json.loads(args.child[1])
        result = child_once(payload) if kind == "once" else child_limit(*payload)
        Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
        return 0
    from benchmarks import measure

    handle = str(measure.standin(measure.CACHE))
    folder = (args.folder or grain_clips(measure.CACHE / "clips")).resolve()
    # the converted model and auto's verdict are kept between runs
    once, limit = measure_stages(handle, folder, args.precision, measure.CACHE / "stages-cache",
                                 measure.CACHE)
    print(render(once, limit))
    return 0


GRAIN = (1920, 1080, 20, 4)  # width, height, seconds, copies: the quiet run's 1080p set


def grain_clips(cache: Path) -> Path:
    """4 copies (remuxed: each its own hash) of a 20 s 1080p30 H.264 clip with film grain:
    issue 34's 1080p set (28 windows). Encoded once, about a minute."""
    from benchmarks import clipset

    width, height, seconds, count = GRAIN
    source = cache / "sources" / f"grain-{width}x{height}-{seconds}s.mp4"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        tmp = source.with_name("tmp-" + source.name)
        clipset.ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={clipset.FPS},"
                       "noise=alls=6:allf=t", "-t", str(seconds), "-c:v", "libx264", "-preset",
                       "fast", "-g", str(clipset.GOP), "-pix_fmt", "yuv420p", str(tmp))
        tmp.replace(source)
    return clipset.copies(source, cache / "sets" / f"grain-{height}p-{count}", count)


if __name__ == "__main__":
    sys.exit(main())
