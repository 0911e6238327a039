"""`python -m benchmarks.runtimes [--before CHECKOUT]` → the runtimes side by side on this CPU →
a table (issue 19).

    model alone, windows/s:  TensorFlow as the default install ran it before issue 19 (oneDNN
                             off on a CPU without AVX-512 VNNI/BF16 or AMX), TensorFlow with
                             oneDNN, OpenVINO f32, OpenVINO INT8 (`autotag quantize`), bf16
                             where the CPU has it
    autotag --once:          windows/s after startup, wall with start-up and peak RSS, on
                             each of those, and model.precision auto (the default since issue
                             34: run twice, the first run's bf16 check recorded); on 1080p clips
                             too (issue 34's set: 4 × 20 s 1080p30 H.264 with grain, 28
                             windows), beside the limit on those clips (benchmarks.stages:
                             decoding alone + the model alone on the same windows)
    the daemon:              resident memory after tagging (steady) and after an idle release

Every figure comes from a child process of its own (peak RSS from wait4), one after another in
one run, with the stand-in model and clips `python -m benchmarks` builds (built here if
missing). --before runs the same `--once` and daemon figures on another checkout's autotag
(a `git worktree` of the commit to compare with, with its own .venv where it has one), with
the same model and clips.
--quick keeps what issue 34 asks to see (the model alone at f32 and bf16, auto and f32 on the
1080p clips, the limit, --before's 1080p --once) and drops the rest (TensorFlow, quantize, the
720p --once rows, the daemon): a few minutes on a quiet 2-core machine.
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

from benchmarks import clipset, measure, stages

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
HD = f"{stages.GRAIN[1]}p"  # the 1080p --once set: stages.grain_clips (issue 34's, 28 windows)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass
class Row:
    name: str
    model: float | None = None  # windows/s, the model alone
    once: float | None = None  # windows/s, autotag --once after startup
    once_rss: float | None = None  # MB, peak RSS of autotag --once
    wall: float | None = None  # s, autotag --once from its start to its exit
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
    """The shipped config with `sections`; for another checkout, without the keys and sections
    its own shipped config.yaml lacks (a key it does not know is a configuration error there:
    watch.follow_symlinks_out, the mqtt section, ...)."""
    path = ws.config(folder, **sections)
    if checkout is not None:
        data = yaml.safe_load(path.read_text())
        known = yaml.safe_load((checkout / "config.yaml").read_text())
        for section in list(data):
            if section not in known:
                del data[section]
            elif isinstance(data[section], dict) and isinstance(known[section], dict):
                for key in set(data[section]) - set(known[section]):
                    del data[section][key]
        for key in NEW_KEYS:
            data["model"].pop(key, None)
        if data["model"].get("precision") not in OLD_PRECISIONS:
            data["model"]["precision"] = "f32"
        path.write_text(yaml.safe_dump(data))
    return path


def once(ws, cache: Path, clips: Path, model: dict, checkout: Path | None = None,
         onednn: str | None = None) -> tuple[float, float, float]:
    """(windows/s after startup, peak RSS MB, wall s with start-up) of `autotag --once` on
    `clips`."""
    folder = ws.run_dir(f"once-{model.get('runtime')}-{model.get('precision', 'f32')}-"
                        f"{clips.name}")
    argv = ["--once", "--config", str(config_for(ws, folder, checkout, model=model)),
            str(clips)]
    child = measure.run_child([python_of(checkout), "-m", "benchmarks.probe", "once",
                               json.dumps({"argv": argv})],
                              env_for(ws, folder, cache, checkout, onednn), folder)
    result = child.result
    if result.get("exit_code") != 0 or not result.get("windows"):
        raise RuntimeError(f"--once {model}: {result}\n"
                           + (folder / "output.log").read_text(errors="replace")[-800:])
    return result["windows"] / result["seconds"], child.peak_rss_mb, child.seconds


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


def python_of(checkout: Path | None) -> str:
    """The interpreter a checkout runs with: its own venv's (.venv, as the development guide
    makes it) where it has one, since its dependencies may differ (49c77ea loads hub handles
    with tensorflow_hub, which is no longer installed); else this one."""
    own = checkout / ".venv" / "bin" / "python" if checkout is not None else None
    return str(own) if own is not None and own.exists() else sys.executable


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
        proc = subprocess.Popen([python_of(checkout), "-m", "autotag", "--config", str(config),
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


def auto_rows(ws, cache: Path, folder: Path, say, quick: bool = False) -> list[Row]:
    """model.precision auto's --once, on the 720p set (not --quick) and on the 1080p clips, each
    run twice: the first checks bf16 on the first windows (where the CPU has it) and records the
    verdict, the second runs what auto chose; then auto's model alone, the limit on the 1080p
    clips (decoding alone + the model alone, benchmarks.stages) and f32's 1080p --once."""
    rows = []
    hd = stages.grain_clips(CACHE / "clips")
    model = {"runtime": "openvino", "precision": "auto"}
    sets = ((HD, hd),) if quick else ((f"{CLIPS[1]}p", folder), (HD, hd))
    for label, clips in sets:
        say(f"OpenVINO auto: autotag --once on the {label} clips, twice")
        first, _, _ = once(ws, cache, clips, model)
        rate, rss, wall = once(ws, cache, clips, model)
        rows.append(Row(f"OpenVINO auto (the default now), {label} clips", once=rate,
                        once_rss=rss, wall=wall,
                        note=f"(first run, with its check: {first:.2f})"))
    say("OpenVINO auto: the model alone (its verdict recorded), the limit on the 1080p clips")
    rows[-1].model = model_alone(ws, cache, "openvino", "auto")
    rows.append(limit_row(ws, cache, hd, model, rows[-1]))
    say(f"OpenVINO f32: autotag --once on the {HD} clips")
    rate, rss, wall = once(ws, cache, hd, {"runtime": "openvino", "precision": "f32"})
    rows.append(Row(f"OpenVINO f32, {HD} clips", once=rate, once_rss=rss, wall=wall))
    return rows


def limit_row(ws, cache: Path, clips: Path, model: dict, measured: Row) -> Row:
    """The limit on `clips` (issue 34): decoding them alone, then the model alone on their
    windows, both on every core (benchmarks.stages' child); `measured` is --once's row."""
    folder = ws.run_dir("limit")
    config = config_for(ws, folder, None, model=model)
    limit = stages.run_child("limit", [str(config), str(clips)],
                             env_for(ws, folder, cache, None, None), folder)
    seconds = limit["decode_wall"] + limit["model_wall"]
    rate = limit["windows"] / seconds
    share = f"; --once after start-up at {measured.once / rate:.2f}× it" if measured.once else ""
    return Row(f"the limit, {HD} clips ({limit['precision']}): decoding alone + the model alone",
               once=rate, wall=seconds,
               note=f"(decoding {limit['decode_wall']:.1f} s, {limit['decode_cpu']:.1f} s CPU; "
                    f"the model {limit['model_wall']:.1f} s{share})")


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
        say(f"{label}: the model alone" + ("" if quick else ", then autotag --once"))
        row.model = model_alone(ws, cache, runtime, precision, onednn)
        if not quick:  # --quick: the 1080p --once rows only
            model = {"runtime": runtime, **({"precision": precision} if precision else {})}
            row.once, row.once_rss, row.wall = once(ws, cache, folder, model, onednn=onednn)
        figures.rows.append(row)
    figures.rows += auto_rows(ws, cache, folder, say, quick)
    if not quick:
        say("the daemon: steady, then released after idle")
        figures.daemon = daemon(ws, cache, clips[:2])
    if before is not None:
        figures.before = run_before(ws, before, folder, say, quick)
        if not quick:
            say(f"the daemon at {before.name}")
            old_cache = ws.root / "before-cache"
            figures.before_daemon = daemon(ws, old_cache, clips[:2], checkout=before, idle=None)
    return figures


def run_before(ws, checkout: Path, folder: Path, say, quick: bool = False) -> list[Row]:
    """The other checkout's `--once` as its default install ran it (TensorFlow, oneDNN as
    TensorFlow decides; not --quick), with its OpenVINO extra (its IR converted by a first run
    on the 720p clips, timed unless --quick), and its default on the 1080p clips."""
    rows = []
    cache = ws.root / "before-cache"
    hd = stages.grain_clips(CACHE / "clips")
    say(f"{checkout.name}: autotag --once on the {CLIPS[1]}p clips (converts its IR)")
    rate, rss, wall = once(ws, cache, folder, {"runtime": "openvino"}, checkout=checkout)
    if not quick:
        rows.append(Row("before: with the [openvino] extra, its first run (converts its IR)",
                        once=rate, once_rss=rss, wall=wall))
        say(f"{checkout.name}: autotag --once on the {CLIPS[1]}p clips, its IR cached")
        rate, rss, wall = once(ws, cache, folder, {"runtime": "openvino"}, checkout=checkout)
        rows.append(Row("before: with the [openvino] extra", once=rate, once_rss=rss, wall=wall))
        say("before: default install (TensorFlow): autotag --once")
        rate, rss, wall = once(ws, cache, folder, {"runtime": "tensorflow"}, checkout=checkout)
        rows.append(Row("before: default install (TensorFlow)", once=rate, once_rss=rss,
                        wall=wall))
    say(f"{checkout.name}: autotag --once on the {HD} clips")
    rate, rss, wall = once(ws, cache, hd, {"runtime": "openvino"}, checkout=checkout)
    rows.append(Row(f"before: with the [openvino] extra, {HD} clips", once=rate, once_rss=rss,
                    wall=wall))
    return rows


def render(f: Figures, before: Path | None) -> str:
    def num(x, unit=""):
        return "-" if x is None else f"{x:.2f}{unit}" if unit != " MB" else f"{x:.0f} MB"

    lines = [f"# Runtimes side by side ({time.strftime('%Y-%m-%d')})", "",
             f"CPU: {f.cpu}", "",
             (f"Batch {BATCH}, the stand-in model; --once on {CLIPS[2]} generated "
              f"{CLIPS[1]}p clips unless the row names the {HD} ones ({stages.GRAIN[3]} × "
              f"{stages.GRAIN[2]} s 1080p30 H.264 with grain). --once wall: from its start to "
              "its exit (start-up included)."), "",
             ("| runtime | model alone, windows/s | --once, windows/s | --once wall | "
             "--once peak RSS |"),
             "|---|---:|---:|---:|---:|"]
    for row in [*f.rows, *f.before]:
        lines.append(f"| {row.name} | {num(row.model)} | {num(row.once)} | "
                     f"{num(row.wall, ' s')} | {num(row.once_rss, ' MB')} {row.note} |")
    lines += ["", *side_by_side(f, before)]
    if f.daemon or f.before_daemon:  # not measured by --quick
        lines += ["", "| daemon | resident memory |", "|---|---:|"]
    for label, mb in f.daemon.items():
        lines.append(f"| now, {label} | {mb:.0f} MB |")
    for label, mb in f.before_daemon.items():
        lines.append(f"| {before.name if before else 'before'}, {label} | {mb:.0f} MB |")
    if f.quantize:
        shown = {k: v for k, v in f.quantize.items() if not isinstance(v, (list, dict))}
        lines += ["", "autotag quantize: " + json.dumps(shown)]
    return "\n".join(lines) + "\n"


def side_by_side(f: Figures, before: Path | None) -> list[str]:
    """Issue 34's ratios: on each clip set, the default now over the --before checkout's default
    with its IR cached (wall, start-up included); on the 1080p clips, --once after start-up over
    the limit."""
    def find(rows: list[Row], start: str, clips: str = HD) -> Row | None:
        return next((r for r in rows if r.name.startswith(start) and "first run" not in r.name
                     and (HD in r.name) == (clips == HD)), None)

    out = []
    for clips in (f"{CLIPS[1]}p", HD):
        now = find(f.rows, "OpenVINO auto", clips)
        old = find(f.before, "before: with the [openvino] extra", clips)
        if now and old and now.wall and old.wall:
            out.append(f"{clips}, the default now against "
                       f"{before.name if before else 'before'}'s: {old.wall:.1f} s / "
                       f"{now.wall:.1f} s = **{old.wall / now.wall:.2f}×** (wall, start-up "
                       "included; target ≥ 2×)")
    now, limit = find(f.rows, "OpenVINO auto"), find(f.rows, "the limit")
    if now and limit and now.once and limit.once:
        out.append(f"{HD}, --once after start-up / the limit: {now.once:.2f} / "
                   f"{limit.once:.2f} windows/s = **{now.once / limit.once:.2f}×** "
                   "(target ≥ 0.9×)")
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.measure import RESULTS, standin

    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtimes", description=__doc__)
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also measure this checkout's --once and daemon (a git worktree)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    parser.add_argument("--quick", action="store_true",
                        help="issue 34's rows only (f32 and bf16 alone, auto and f32 on the "
                             "1080p clips, the limit, --before's 1080p --once): minutes, not "
                             "an hour")
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
