"""N tagged, unchanged clips on disk + a store that knows them → `autotag --once` (this checkout
and `before`'s, in a child each) → its whole time and peak memory; the daemon's start-up
catch-up and a periodic rescan over the same library (DAEMON_SCRIPT); a store of real-sized rows
→ bytes per clip, by table and index.

    python -m benchmarks.scale.uptodate                  # 1,000,000 clips, this checkout
    python -m benchmarks.scale.uptodate --before /tmp/scale-before --clips 200000

The library: N empty `.mp4` files in folders of FOLDER files, each with a JSON sidecar that
says it is tagged with this model and vocabulary (what a tagged clip's sidecar says of its
version), and a store whose files rows record each one's size and mtime, tagged, with a clips
row for its content (a few float32 values: the pass only asks that a row exists; the sizes of
real rows are the second measurement). Each checkout's own Store makes its store's schema (44dee5f
writes 4; 5 also records the sidecar's st_mtime_ns, 6 the output settings' digest); rows are written with
sqlite3. No model is loaded: model.handle is an empty directory (its fingerprint is its name's
hash) and the vocabulary's text embeddings are cached beforehand, so a run with every clip up to
date never starts the model (app.open_app with lazy=True). Every clip must be reported up to
date, or the figure is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLIPS = 1_000_000  # the target library
QUICK_CLIPS = 3_000  # quick=True (a test): seconds
FOLDER = 1_000  # clips per folder
TARGET_S = 60.0  # issue 22: a million unchanged files in under a minute
VOCABULARY = ["red", "green", "a person cooking"]
SIZE_CLIPS = 1_000  # clips in the store measured for bytes per clip
SIZE_WINDOWS = 8  # windows per clip there (sampling.max_windows' default)
DIM = 512  # the model's embedding size
FREE_MARGIN = 2 * 2**30  # bytes of disk left free after the library
INODES_PER_CLIP = 2  # the clip and its sidecar


def measure(quick: bool = False, before: Path | None = None, clips: int | None = None) -> dict:
    """Figures for the report: {"rows": [...], "notes": [...]} (see benchmarks.scale)."""
    wanted = clips or (QUICK_CLIPS if quick else CLIPS)
    scratch = Path(tempfile.mkdtemp(prefix="scale-uptodate-"))
    notes: list[str] = []
    try:
        n = affordable(scratch, wanted)
        if n < wanted:
            notes.append(f"disk allows {n:,} of {wanted:,} clips: the pass is timed over "
                         f"{n:,} and extrapolated linearly to {wanted:,}")
        built = time.perf_counter()
        handle = scratch / "model"  # empty: never loaded, only its fingerprint is used
        handle.mkdir()
        library = build_library(scratch / "clips", n, handle)
        notes.append(f"{n:,} empty clips with sidecars in folders of {FOLDER:,}, written in "
                     f"{time.perf_counter() - built:.0f} s")
        sides = {"after": ROOT} | ({"before": before} if before is not None else {})
        figures = {name: run_side(name, checkout, scratch, library, n, handle)
                   for name, checkout in sides.items()}
        sizes = {name: store_bytes(checkout, scratch / f"sizes-{name}.sqlite3")
                 for name, checkout in sides.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    scale = wanted / n
    rows = [
        row(f"--once over {wanted:,} tagged, unchanged clips", figures, "seconds", scale,
            "s"),
        row("--once: per clip", figures, "per_clip_us", 1.0, "µs"),
        row("--once: peak memory", figures, "peak_mb", 1.0, "MB"),
        row(f"daemon start-up catch-up over {wanted:,} (watches and scan)", figures,
            "catch_up", scale, "s"),
        row(f"daemon periodic rescan over {wanted:,}", figures, "rescan", scale, "s"),
        row("daemon start-up and rescan: peak memory", figures, "daemon_peak_mb", 1.0, "MB"),
    ]
    for table in sorted(sizes["after"]["tables"]):
        rows.append({"metric": f"store bytes per clip: {table}",
                     "before": sizes.get("before", {}).get("tables", {}).get(table),
                     "after": sizes["after"]["tables"][table], "unit": "bytes"})
    rows.append({"metric": "store bytes per clip: whole file",
                 "before": sizes.get("before", {}).get("file"), "after": sizes["after"]["file"],
                 "unit": "bytes"})
    after = figures["after"]["seconds"] * scale
    notes.append(f"target: {wanted:,} clips in under {TARGET_S:.0f} s: "
                 + ("met" if after < TARGET_S else "missed") + f" ({after:.1f} s)")
    notes.append(f"store sizes: {SIZE_CLIPS:,} clips x {SIZE_WINDOWS} windows x {DIM} float32 "
                 "and an 8-tile thumbnail strip each, through each checkout's Store "
                 "(dbstat: pages of each table and index, divided by the clips)")
    return {"rows": rows, "notes": notes}


def row(metric: str, figures: dict, key: str, scale: float, unit: str) -> dict:
    return {"metric": metric, "unit": unit,
            **{side: (figures[side][key] * scale if side in figures else None)
               for side in ("before", "after")}}


def affordable(scratch: Path, wanted: int) -> int:
    """How many clips the disk holds (inodes and a block each, with the store's rows)."""
    st = os.statvfs(scratch)
    by_inodes = st.f_favail // (INODES_PER_CLIP + 1)
    by_bytes = (st.f_bavail * st.f_frsize - FREE_MARGIN) // (3 * 4096 + 600)
    return max(1, min(wanted, by_inodes, by_bytes))


# -- the library -----------------------------------------------------------------------------

def fingerprints(handle: Path) -> tuple[str, str]:
    """(model, vocabulary) fingerprints, as the app computes them for handle and VOCABULARY."""
    sys.path.insert(0, str(ROOT))
    from autotag.config import load_config
    from autotag.model import fingerprint
    from autotag.vocabulary import vocabulary_fingerprint

    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), Path(folder) / "state.sqlite3", handle)
        entries = load_config(config).vocabulary
    model = fingerprint(str(handle))
    return model, vocabulary_fingerprint(entries, model)


def digest_of_outputs(handle: Path) -> str | None:
    """The output settings' digest the app records with each clip (schema 6), for the config
    write_config makes; None for a checkout that has none."""
    sys.path.insert(0, str(ROOT))
    from autotag.config import load_config

    try:
        from autotag.outputs import outputs_digest
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return outputs_digest(load_config(write_config(Path(folder), Path(folder) / "s", handle)))


def write_config(folder: Path, store: Path, handle: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(json.dumps({"model": {"handle": str(handle)}, "state": {"path": str(store)},
                                "vocabulary": VOCABULARY,
                                "outputs": {"previews": None, "log": None}}))
    return path


def build_library(root: Path, n: int, handle: Path) -> list[tuple[str, int, float, int, str]]:
    """n empty clips and their sidecars → (path, size, mtime, sidecar st_mtime_ns, sha256)."""
    model, vocabulary = fingerprints(handle)
    rows = []
    for i in range(n):
        folder = root / f"{i // FOLDER:05d}"
        if i % FOLDER == 0:
            folder.mkdir(parents=True)
        path = folder / f"clip{i:07d}.mp4"
        path.touch()
        st = path.stat()
        sidecar = Path(f"{path}.autotag.json")
        sidecar.write_text(json.dumps({"source": {"path": str(path), "size": st.st_size,
                                                  "mtime": st.st_mtime},
                                       "model": model, "vocabulary": vocabulary, "tags": []}))
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append((str(path), st.st_size, st.st_mtime, sidecar.stat().st_mtime_ns, sha))
    return rows


def fill_store(path: Path, checkout: Path, library: list, model: str, vocabulary: str,
               digest: str | None = None) -> None:
    """The checkout's own empty store, then a files and a clips row per clip (sqlite3);
    digest: the output settings' digest, for a store that records it (schema 6)."""
    from benchmarks.serve import schema_by

    schema_by(checkout, path)
    db = sqlite3.connect(path)
    columns = {r[1] for r in db.execute("PRAGMA table_info(files)")}
    sidecar = "sidecar" in columns
    outputs = "outputs" in columns and digest is not None
    vector = np.zeros(4, np.float32).tobytes()
    now = time.time()
    with db:
        for start in range(0, len(library), 50_000):
            part = library[start:start + 50_000]
            db.executemany(
                "INSERT INTO clips (sha256, model, duration, windows, embeddings, "
                "clip_embedding, dim) VALUES (?, ?, 1.0, '[[0.0, 1.0]]', ?, ?, 4)",
                [(r[4], model, vector, vector) for r in part])
            db.executemany(
                "INSERT INTO files (path, size, mtime, sha256, status, attempts, model, "
                "vocabulary, updated" + (", sidecar" if sidecar else "")
                + (", outputs" if outputs else "") + ") VALUES "
                "(?, ?, ?, ?, 'tagged', 0, ?, ?, ?" + (", ?" if sidecar else "")
                + (", ?" if outputs else "") + ")",
                [(r[0], r[1], r[2], r[4], model, vocabulary, now) + ((r[3],) if sidecar else ())
                 + ((digest,) if outputs else ()) for r in part])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


# -- one checkout's run ------------------------------------------------------------------------

def run_side(name: str, checkout: Path, scratch: Path, library: list, n: int,
             handle: Path) -> dict:
    """`autotag --once` of `checkout` over the library, in a child: seconds, peak RSS."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.serve import checkout_env, fill_text_cache

    folder = scratch / name
    folder.mkdir()
    model, vocabulary = fingerprints(handle)
    fill_store(folder / "state.sqlite3", checkout, library, model, vocabulary,
               digest_of_outputs(handle))
    config = write_config(folder, folder / "state.sqlite3", handle)
    xdg = folder / "xdg"
    fill_text_cache(xdg / "cache", model, VOCABULARY)
    env = checkout_env(checkout, dict(os.environ, XDG_CACHE_HOME=str(xdg / "cache"),
                                 XDG_CONFIG_HOME=str(xdg / "config"),
                                 XDG_DATA_HOME=str(xdg / "data")))
    # a first run migrates an older store (schema 4 → 5 here, once) and warms the page
    # cache, as a library's second pass finds it; the second is timed
    for _ in ("untimed", "timed"):
        seconds, code, peak, err = timed_run(
            [sys.executable, "-m", "autotag", "--once", "--config", str(config),
             str(scratch / "clips")], env, folder)
        if code != 0:
            raise RuntimeError(f"{name}: autotag --once exited {code}: {err[-2000:]}")
    if f"{n} up to date" not in err:
        raise RuntimeError(f"{name}: not every clip was up to date: {err[-500:]}")
    print(f"{name}: {n:,} clips up to date in {seconds:.1f} s, peak {peak:.0f} MB",
          file=sys.stderr)
    _, code, daemon_peak, err = timed_run(
        [sys.executable, "-c", DAEMON_SCRIPT, str(config), str(scratch / "clips")], env, folder)
    if code != 0:
        raise RuntimeError(f"{name}: the daemon's catch-up failed: {err[-2000:]}")
    daemon = json.loads(err.strip().splitlines()[-1])
    if daemon["pending"]:
        raise RuntimeError(f"{name}: the daemon's catch-up found {daemon['pending']} of "
                           f"{n} clips not up to date")
    print(f"{name}: daemon start-up catch-up {daemon['catch_up']:.1f} s, rescan "
          f"{daemon['rescan']:.1f} s, peak {daemon_peak:.0f} MB", file=sys.stderr)
    return {"seconds": seconds, "per_clip_us": seconds / n * 1e6, "peak_mb": peak,
            "catch_up": daemon["catch_up"], "rescan": daemon["rescan"],
            "daemon_peak_mb": daemon_peak}


# The daemon's start (its watches and the catch-up scan, Daemon._start_watcher) over the
# library, then one periodic rescan (Watcher.scan of the roots), timed in the child; the app is
# opened lazily (the model is never needed: every clip is known). Prints JSON on stderr's last
# line: seconds of each, and how many clips each found not up to date (0, or the figure is
# refused).
DAEMON_SCRIPT = """
import json, sys, time
from pathlib import Path
from autotag.app import open_app
from autotag.config import load_config
from autotag.daemon.service import Daemon
config, root = load_config(Path(sys.argv[1])), Path(sys.argv[2])
daemon = Daemon(config, [root], open_app=lambda c, e: open_app(c, e, lazy=True),
                reload_config=lambda: config)
daemon._app = daemon.open_app(config, None)
started = time.perf_counter()
daemon._start_watcher()
catch_up = time.perf_counter() - started
pending = len(daemon._watcher.tracker)
started = time.perf_counter()
pending += daemon._watcher.scan(daemon._watcher.roots)
rescan = time.perf_counter() - started
daemon._watcher.stop()
daemon._app.close()
print(json.dumps({"catch_up": catch_up, "rescan": rescan, "pending": pending}),
      file=sys.stderr)
"""


def timed_run(argv: list[str], env: dict, cwd: Path) -> tuple[float, int, float, str]:
    """(seconds, exit code, peak RSS in MB, stderr) of a child, its peak its own: spawned by
    benchmarks.peak's launcher, not by this process (which holds the library's million rows,
    and wait4 counts a spawner's memory in its child's peak)."""
    from benchmarks.peak import Measured

    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = Measured(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        code, peak = child.wait()
        seconds = time.perf_counter() - started
        err.seek(0)
        return seconds, code, peak, err.read()


# -- store size --------------------------------------------------------------------------------

SIZE_SCRIPT = """
import json, sys, sqlite3
from pathlib import Path
import numpy as np
from autotag.clip import Embedded, SourceInfo, Window
from autotag.store import Store
path, n, windows, dim = Path(sys.argv[1]), *map(int, sys.argv[2:5])
rng = np.random.default_rng(5)
store = Store(path)
thumbs = rng.integers(0, 255, (windows, 224, 224, 3), dtype=np.uint8)
thumbs = np.repeat(np.repeat(thumbs[:, ::28, ::28], 28, 1), 28, 2)  # flat 28-px blocks
for i in range(n):
    source = SourceInfo(Path(f"/library/folder{i // 100:04d}/clip{i:06d}.mp4"), 10_000_000 + i,
                        1.7e9 + i, f"{i:064x}")
    clip = Embedded(source, 30.0, tuple(Window(j * 3.2, j * 3.2 + 3.2) for j in range(windows)),
                    rng.standard_normal((windows, dim), dtype=np.float32), thumbs)
    store.save_embedded(clip, "model-fingerprint")
    store.record_tagged(source, "model-fingerprint", "vocabulary-fingerprint")
store.close()
db = sqlite3.connect(path)
tables = {}
for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
    tables[name] = size / n
print(json.dumps({"tables": tables, "file": path.stat().st_size / n}))
"""


def store_bytes(checkout: Path, path: Path) -> dict:
    """Bytes per clip of a SIZE_CLIPS-clip store written by `checkout`'s Store."""
    from benchmarks.serve import checkout_env

    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", SIZE_SCRIPT, str(path), str(SIZE_CLIPS),
                               str(SIZE_WINDOWS), str(DIM)], check=True, cwd=cwd,
                              env=checkout_env(checkout), capture_output=True, text=True)
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    sizes["tables"] = {k: round(v, 1) for k, v in sizes["tables"].items()
                       if not k.startswith("sqlite_stat")}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.uptodate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="an older checkout (git worktree add /tmp/scale-before 44dee5f)")
    parser.add_argument("--clips", type=int, help=f"clips in the library (default {CLIPS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIPS:,} clips")
    args = parser.parse_args()
    print(json.dumps(measure(args.quick, args.before and args.before.resolve(), args.clips),
                     indent=1))


if __name__ == "__main__":
    main()
