"""`python -m benchmarks.runtimes [--before CHECKOUT]` → the runtimes side by side on this CPU →
a table (issue 19).

    model alone, windows/s:  TensorFlow as the default install ran it before issue 19 (oneDNN
                             off on a CPU without AVX-512 VNNI/BF16 or AMX), TensorFlow with
                             oneDNN, OpenVINO f32, OpenVINO INT8 (`autotag quantize`), bf16
                             where the CPU has it
    autotag --once:          windows/s after startup and peak RSS, on each of those, and
                             model.precision auto (the default since issue 34: run twice, the
                             first run's bf16 check recorded); on 1080p clips too
    the daemon:              resident memory after tagging (steady) and after an idle release

Every figure comes from a child process of its own (peak RSS from wait4), one after another in
one run, with the stand-in model and clips `python -m benchmarks` builds (built here if
missing). --before runs the same `--once` and daemon figures on another checkout's autotag
(a `git worktree` of the commit to compare with), with the same model, clips and venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks import clipset, measure

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
BATCH = 2  # model.batch_size: the default
CALLS = 6  # timed model calls per runtime (12 windows), after one warm-up call
CLIPS = (1280, 720, 4)  # the --once clip set: 4 generated 720p clips of 10 s (16 windows)
QUANTIZE_WINDOWS = 48  # windows `autotag quantize` decodes from the clips
IDLE_SECONDS = 3.0  # model.idle_unload_seconds for the daemon's release figure
SETTLE_SECONDS = 2.0  # after a daemon's last sidecar, before its resident memory is read
NEW_KEYS = ("idle_unload_seconds", "auto_int8")  # model keys an older checkout does not know
OLD_PRECISIONS = ("f32", "bf16", "int8")  # before issue 34: auto is f32 there (its default)
CLIPS_1080P = (1920, 1080, 2)  # the 1080p --once set: 2 generated clips of 10 s (8 windows)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass
class Row:
    name: str
    model: float | None = None  # windows/s, the model alone
    once: float | None = None  # windows/s, autotag --once after startup
    once_rss: float | None = None  # MB, peak RSS of autotag --once
    note: str = ""


@dataclass
class Figures:
    cpu: str
    rows: list[Row] = field(default_factory=list)
    daemon: dict[str, float] = field(default_factory=dict)  # label → resident MB
    quantize: dict | None = None  # the report `autotag quantize` kept
    before: list[Row] = field(default_factory=list)
    before_daemon: dict[str, float] = field(default_factory=dict)


def cpu() -> tuple[str, set[str]]:
    """The CPU's model name and flags, from /proc/cpuinfo (lscpu's source)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def env_for(ws: measure.Workspace, folder: Path, cache: Path, checkout: Path | None,
            onednn: str | None) -> dict[str, str]:
    env = ws.env(folder, cache)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(checkout), env["PYTHONPATH"]])
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    return env


def model_alone(ws, cache: Path, runtime: str, precision: str | None = None,
                onednn: str | None = None) -> float:
    folder = ws.run_dir(f"model-{runtime}-{precision or 'f32'}-{onednn}")
    payload = {"handle": ws.handle, "batch": BATCH, "calls": CALLS, "runtime": runtime,
               "cache": str(cache / "autotag" / "tfhub" / "openvino"), "precision": precision}
    argv = [sys.executable, "-m", "benchmarks.probe", "model", json.dumps(payload)]
    child = measure.run_child(argv, env_for(ws, folder, cache, None, onednn), folder)
    if not child.result:
        raise RuntimeError(f"model alone on {runtime}: no result\n"
                           + (folder / "output.log").read_text(errors="replace")[-800:])
    return child.result["windows_per_second"]


def config_for(ws, folder: Path, checkout: Path | None, **sections) -> Path:
    """The shipped config with `sections`; for another checkout, without the keys it predates
    (a key it does not know is a configuration error there)."""
    path = ws.config(folder, **sections)
    if checkout is not None:
        data = yaml.safe_load(path.read_text())
        for key in NEW_KEYS:
            data["model"].pop(key, None)
        if data["model"].get("precision") not in OLD_PRECISIONS:
            data["model"]["precision"] = "f32"
        path.write_text(yaml.safe_dump(data))
    return path


def once(ws, cache: Path, clips: Path, model: dict, checkout: Path | None = None,
         onednn: str | None = None) -> tuple[float, float]:
    """(windows/s after startup, peak RSS MB) of `autotag --once` on `clips`."""
    folder = ws.run_dir(f"once-{model.get('runtime')}-{model.get('precision', 'f32')}-"
                        f"{clips.name}")
    argv = ["--once", "--config", str(config_for(ws, folder, checkout, model=model)),
            str(clips)]
    child = measure.run_child([sys.executable, "-m", "benchmarks.probe", "once",
                               json.dumps({"argv": argv})],
                              env_for(ws, folder, cache, checkout, onednn), folder)
    result = child.result
    if result.get("exit_code") != 0 or not result.get("windows"):
        raise RuntimeError(f"--once {model}: {result}\n"
                           + (folder / "output.log").read_text(errors="replace")[-800:])
    return result["windows"] / result["seconds"], child.peak_rss_mb


def quantize(ws, cache: Path, clips: Path) -> dict | None:
    """`autotag quantize CLIPS` as a user runs it; the report it printed (--json)."""
    folder = ws.run_dir("quantize")
    argv = [sys.executable, "-m", "autotag", "quantize", "--json", "--windows",
            str(QUANTIZE_WINDOWS), "--config", str(ws.config(folder)), str(clips)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=folder, check=False,
                          env=env_for(ws, folder, cache, None, None), timeout=1800)
    (folder / "output.log").write_text(done.stderr)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"accepted": False, "reason": (done.stderr.strip().splitlines() or ["?"])[-1]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon(ws, cache: Path, clips: list[Path], checkout: Path | None = None,
           idle: float | None = IDLE_SECONDS) -> dict[str, float]:
    """Resident memory of `autotag DIR` after tagging `clips` (steady) and, with `idle`, after
    its idle release; systemd's notify socket says when it is ready and what it did."""
    folder = ws.run_dir("daemon")
    watched = folder / "watched"
    watched.mkdir()
    model = {"idle_unload_seconds": idle} if idle else {}
    config = config_for(ws, folder, checkout, model=model,
                        watch={"stability_seconds": 0.5, "rescan_seconds": 0})
    sock_dir = Path(tempfile.mkdtemp(prefix="autotag-rt-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_dir / "notify"))
    env = dict(env_for(ws, folder, cache, checkout, None), NOTIFY_SOCKET=str(sock_dir / "notify"))
    out = {}
    with open(folder / "output.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "autotag", "--config", str(config),
                                 str(watched)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=folder)  # not ours: `-m` puts the cwd first on sys.path
        try:
            measure._wait_ready(sock, proc)
            for clip in clips:
                shutil.copy(clip, watched / clip.name)
            sidecars = folder / "sidecars"
            deadline = time.monotonic() + 600
            while len(list(sidecars.rglob("*.autotag.json"))) < len(clips):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the daemon did not tag the clips")
                time.sleep(0.1)
            time.sleep(SETTLE_SECONDS)
            out["steady"] = rss_mb(proc.pid)
            if idle:
                deadline = time.monotonic() + idle + 30
                while b"released the video model" not in (folder / "output.log").read_bytes():
                    if time.monotonic() > deadline:
                        raise RuntimeError("the daemon did not release its model")
                    time.sleep(0.2)
                time.sleep(SETTLE_SECONDS)
                out["released"] = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            sock.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
    return out


def auto_rows(ws, cache: Path, folder: Path, say) -> list[Row]:
    """model.precision auto's --once, on the 720p set and on 1080p clips, each run twice: the
    first checks bf16 on the first windows (where the CPU has it) and records the verdict, the
    second runs what auto chose; and f32's 1080p --once beside it."""
    rows = []
    hd = clipset.generated(CACHE / "clips", "runtimes-1080p", *CLIPS_1080P,
                           clipset.SHORT_SECONDS).folder
    for label, clips in ((f"{CLIPS[1]}p", folder), (f"{CLIPS_1080P[1]}p", hd)):
        say(f"OpenVINO auto: autotag --once on the {label} clips, twice")
        model = {"runtime": "openvino", "precision": "auto"}
        first, _ = once(ws, cache, clips, model)
        rate, rss = once(ws, cache, clips, model)
        rows.append(Row(f"OpenVINO auto (the default now), {label} clips", once=rate,
                        once_rss=rss, note=f"(first run, with its check: {first:.2f})"))
    say("OpenVINO f32: autotag --once on the 1080p clips")
    rate, rss = once(ws, cache, hd, {"runtime": "openvino", "precision": "f32"})
    rows.append(Row("OpenVINO f32, 1080p clips", once=rate, once_rss=rss))
    return rows


def run(ws, before: Path | None, say=print, quick: bool = False) -> Figures:
    name, flags = cpu()
    figures = Figures(f"{name}; flags: {', '.join(f for f in CPU_FLAGS if f in flags) or '-'}")
    clip_set = clipset.generated(CACHE / "clips", "runtimes", *CLIPS, clipset.SHORT_SECONDS)
    folder, clips = clip_set.folder, clip_set.clips
    cache = ws.root / "shared-cache"  # one hub/OpenVINO/text cache: the IR is converted once
    say("OpenVINO f32: autotag --once (converts and caches the IR, embeds the vocabulary)")
    once(ws, cache, folder, {"runtime": "openvino", "precision": "f32"})
    if not quick:
        say("autotag quantize on the clips (INT8)")
        figures.quantize = quantize(ws, cache, folder)
    int8 = bool(figures.quantize and figures.quantize.get("accepted"))
    f32 = ("OpenVINO f32 (model.precision: f32, the default before issue 34)", "openvino",
           "f32", None)
    cases = [f32] if quick else [
        ("TensorFlow, oneDNN off (the default install before issue 19)", "tensorflow", None,
         "0"),
        ("TensorFlow, oneDNN on (model.runtime: tensorflow now)", "tensorflow", None, None),
        f32, ("OpenVINO INT8 (model.precision: int8)", "openvino", "int8", None)]
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        cases.append(("OpenVINO bf16 (model.precision: bf16)", "openvino", "bf16", None))
    for label, runtime, precision, onednn in cases:
        row = Row(label)
        if precision == "int8" and not int8:
            row.note = "refused: " + str((figures.quantize or {}).get("reason"))
            figures.rows.append(row)
            continue
        say(f"{label}: the model alone, then autotag --once")
        row.model = model_alone(ws, cache, runtime, precision, onednn)
        model = {"runtime": runtime, **({"precision": precision} if precision else {})}
        row.once, row.once_rss = once(ws, cache, folder, model, onednn=onednn)
        figures.rows.append(row)
    figures.rows += auto_rows(ws, cache, folder, say)
    if not quick:
        say("the daemon: steady, then released after idle")
        figures.daemon = daemon(ws, cache, clips[:2])
    if before is not None:
        figures.before = run_before(ws, before, folder, say)
        say(f"the daemon at {before.name}")
        old_cache = ws.root / "before-cache"
        once(ws, old_cache, folder, {"runtime": "openvino"}, checkout=before)  # its IR
        figures.before_daemon = daemon(ws, old_cache, clips[:2], checkout=before, idle=None)
    return figures


def run_before(ws, checkout: Path, folder: Path, say) -> list[Row]:
    """The other checkout's `--once` as its default install ran it (TensorFlow, oneDNN as
    TensorFlow decides), with its OpenVINO extra, and its default on the 1080p clips."""
    rows = []
    cache = ws.root / "before-cache"
    hd = clipset.generated(CACHE / "clips", "runtimes-1080p", *CLIPS_1080P,
                           clipset.SHORT_SECONDS).folder
    for label, runtime, clips in (
            ("before: default install (TensorFlow)", "tensorflow", folder),
            ("before: with the [openvino] extra", "openvino", folder),
            (f"before: with the [openvino] extra, {CLIPS_1080P[1]}p clips", "openvino", hd)):
        say(f"{label}: autotag --once")
        rate, rss = once(ws, cache, clips, {"runtime": runtime}, checkout=checkout)
        rows.append(Row(label, once=rate, once_rss=rss))
    return rows


def render(f: Figures, before: Path | None) -> str:
    def num(x, unit=""):
        return "-" if x is None else f"{x:.2f}{unit}" if unit != " MB" else f"{x:.0f} MB"

    lines = [f"# Runtimes side by side ({time.strftime('%Y-%m-%d')})", "",
             f"CPU: {f.cpu}", "",
             (f"Batch {BATCH}, the stand-in model; --once on {CLIPS[2]} generated "
              f"{CLIPS[1]}p clips."), "",
             "| runtime | model alone, windows/s | --once, windows/s | --once peak RSS |",
             "|---|---:|---:|---:|"]
    for row in [*f.rows, *f.before]:
        lines.append(f"| {row.name} | {num(row.model)} | {num(row.once)} | "
                     f"{num(row.once_rss, ' MB')} {row.note} |")
    lines += ["", "| daemon | resident memory |", "|---|---:|"]
    for label, mb in f.daemon.items():
        lines.append(f"| now, {label} | {mb:.0f} MB |")
    for label, mb in f.before_daemon.items():
        lines.append(f"| {before.name if before else 'before'}, {label} | {mb:.0f} MB |")
    if f.quantize:
        shown = {k: v for k, v in f.quantize.items() if not isinstance(v, (list, dict))}
        lines += ["", "autotag quantize: " + json.dumps(shown)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.measure import RESULTS, standin

    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtimes", description=__doc__)
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also measure this checkout's --once and daemon (a git worktree)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    parser.add_argument("--quick", action="store_true",
                        help="OpenVINO f32, bf16 and auto only, no quantize or daemon: to see "
                             "that it runs (the figures are not the table's)")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    handle = str(standin(CACHE))
    scratch = Path(tempfile.mkdtemp(prefix="runtimes-", dir=CACHE))
    try:
        figures = run(measure.Workspace(scratch, handle, {"model": {"batch_size": BATCH}}),
                      args.before and args.before.resolve(),
                      say=lambda m: print(f"[{time.perf_counter() - started:5.0f} s] {m}",
                                          flush=True), quick=args.quick)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = render(figures, args.before)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"runtimes-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(text)
    print(text)
    print(f"written to {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
