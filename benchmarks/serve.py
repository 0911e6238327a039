"""Synthetic store (N clips, cached) → `autotag serve` in a child → first page load, search latency
through the HTTP API and the HTML page, the server's memory → `autotag search`'s whole time,
this checkout and --before's → a table + JSON.

    python -m benchmarks.serve                              # 100,000 clips, this checkout only
    python -m benchmarks.serve --before /tmp/bench-before   # and a worktree of an older commit
    python -m benchmarks.serve --clips 20000 --no-browser   # smaller, without Chromium

The store: N clips × 8 windows × 512 float32 random embeddings (their values do not change the
cost), a thumbnail strip per clip at the store's real size (8 tiles of 213 × 120, flat colours:
~5 KB on disk, where real footage gives several times that; decoding one costs the same), in
1,000 folders of 100. Its schema is made by the checkout's own `Store` (whatever version that
checkout writes: 1 at 52ad4a4, which must never open a newer store), so each checkout gets a
store of its own; the benchmark then writes the same rows into it with sqlite3, clip by clip
in the daemon's order (clips, thumbs, files) through the columns every version shares, and
the store's own triggers fill the rest (change feed, vectors). Batched transactions of BATCH
clips: 100,000 take 40-55 s on 2 cores (one transaction per clip, as the daemon commits, was
not tried). Built once per N and schema (digest of sqlite_master) under benchmarks/.cache/, and
copied (then fsynced, so the copy's writeback does not run during the measurements) for each
run. Every clip exists on disk (an empty file with the size and mtime the store recorded): a
search checks its results against the disk, and a stale one would widen the ranking.

The model is the stand-in SavedModel `python -m benchmarks` builds (benchmarks/.cache), as
model.handle, so the store's model fingerprint and the config agree. No model is ever loaded:
the text-embedding cache (`$XDG_CACHE_HOME/autotag/text-embeddings/<fingerprint>/`) is filled
beforehand, with random vectors, for the vocabulary's prompts and every query used, so neither
the server nor `autotag search` starts TensorFlow (a query not in the cache would start a
TensorFlow child of several seconds: the cost of a new query's embedding, not of search). The
server's /proc/PID/maps is checked for TensorFlow's library to show it.

Measured, one after another in one run:
  - `autotag serve` in a child process of its own (its memory is the server's alone), timed
    from its start to its "serving" line (the index loads from the store in between);
  - the first page load: from a fresh connection to `GET /` and its CSS and JS (what a
    browser needs before it paints), the server's first request;
  - search latency: p50/p95 of QUERIES requests of /api/search?q=…&top=24, then of the HTML
    page /?q=…, on one keep-alive connection after one warm-up each; every query is new to the
    server (read from the disk cache, as a user's next search is);
  - the server's VmRSS and VmHWM (/proc/PID/status) after the index is loaded and after the
    queries;
  - with Playwright and Chromium: Navigation Timing's loadEventEnd for / and /?q=… in a real
    browser (a fresh context each: no HTTP cache);
  - `autotag search --json --top 10 QUERY` as a user runs it: wall time from start to exit,
    median of CLI_RUNS after one untimed run (which compiles an older checkout's .pyc files),
    the checkouts taking turns;
    for this checkout also `python -c pass` and `python -c` importing the modules the command
    imports (as `-X importtime` names them), so the command's time splits into interpreter
    start, imports and the rest (index load, query, output).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
BASE_CONFIG = ROOT / "config.yaml"  # the shipped vocabulary

CLIPS = 100_000
QUERIES = 50  # timed requests per endpoint
TOP = 24  # results per request (the page's DEFAULT_TOP)
CLI_TOP = 10  # autotag search --top
CLI_RUNS = 3  # timed runs of autotag search (the median is reported)
DIM = 512  # embedding width
WINDOWS = 8  # windows per clip (sampling.max_windows' default)
WINDOW_SECONDS = 3.2  # 32 frames at 10 fps
PER_FOLDER = 100  # clips per folder of the synthetic library
BATCH = 2_000  # clips per transaction while building the store
THUMB_SIZE = (213, 120)  # px, one tile of a stored thumbnail strip (the store's 120 px height)
THUMB_VARIANTS = 16  # distinct strips, reused round-robin
MTIME0 = 1_700_000_000  # s, the first clip's mtime (whole seconds: exact as float)
READY_TIMEOUT = 600.0  # s from the server's start to its "serving" line
HTTP_TIMEOUT = 60.0  # s for one request
SEARCH_TARGET_MS = 200.0  # a search over 100,000 clips answers in under this (p95)
PAGE_TARGET_S = 1.0  # the first page loads in under this
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ACTIVITIES = ("someone skateboarding", "a dog running", "people dancing", "riding a bike",
              "cooking pasta", "playing guitar", "kicking a ball", "swimming laps",
              "surfing a wave", "driving a car", "skiing downhill", "jogging")
PLACES = ("in a park", "at the beach", "in the kitchen", "on a street", "at night",
          "in the snow", "indoors", "with friends", "in the rain", "on a track")
SCHEMA_PROBE = ("import sys; from pathlib import Path; from autotag.store import Store; "
                "Store(Path(sys.argv[1])).close()")
WHICH = "import autotag; print(autotag.__file__)"
IMPORT_ALL = """import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


# -- the synthetic library ------------------------------------------------------------------------

def clip_path(media: Path, i: int) -> Path:
    return media / f"d{i // PER_FOLDER:04d}" / f"clip{i:06d}.mp4"


def build_media(cache: Path, clips: int) -> tuple[Path, float]:
    """CACHE/serve-media-N: every clip as an empty file whose mtime is MTIME0 + i. (folder,
    seconds spent building; 0 when cached)."""
    media = cache / f"serve-media-{clips}"
    done = media / ".complete"
    if done.exists():
        return media, 0.0
    started = time.perf_counter()
    for i in range(clips):
        path = clip_path(media, i)
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
        os.utime(path, (MTIME0 + i, MTIME0 + i))
    done.write_text(f"{clips}\n")
    return media, time.perf_counter() - started


def checkout_env(checkout: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that runs `checkout`'s autotag on this venv (its code first on the path)."""
    env = dict(base if base is not None else os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), env.get("PYTHONPATH")]))
    env.pop("NOTIFY_SOCKET", None)
    return env


def schema_by(checkout: Path, path: Path) -> str:
    """Create an empty store at `path` with `checkout`'s own Store; its schema's digest."""
    with tempfile.TemporaryDirectory() as cwd:  # not a checkout: `-c` puts the cwd on the path
        subprocess.run([sys.executable, "-c", SCHEMA_PROBE, str(path)], check=True, cwd=cwd,
                       env=checkout_env(checkout), capture_output=True)
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        sql = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    return hashlib.sha256(json.dumps([version, sql]).encode()).hexdigest()[:12]


def thumb_strips() -> list[bytes]:
    """THUMB_VARIANTS JPEG strips of WINDOWS flat-coloured tiles at the store's tile size."""
    import cv2

    w, h = THUMB_SIZE
    out = []
    for v in range(THUMB_VARIANTS):
        tiles = [np.full((h, w, 3), ((v * 16 + k * 30) % 256, 128, (200 - k * 20) % 256),
                         np.uint8) for k in range(WINDOWS)]
        _, jpeg = cv2.imencode(".jpg", np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])
        out.append(jpeg.tobytes())
    return out


def fill_store(path: Path, media: Path, clips: int, model: str, vocabulary: str) -> None:
    """Write `clips` tagged clips into the empty store at `path`, as the daemon would have:
    per clip its embeddings (clips), thumbnails (thumbs), then its file row (files)."""
    rng = np.random.default_rng(0)
    windows = json.dumps([[round(i * WINDOW_SECONDS, 1), round((i + 1) * WINDOW_SECONDS, 1)]
                          for i in range(WINDOWS)])
    strips = thumb_strips()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")  # a scratch file until it is renamed into place
        db.execute("PRAGMA synchronous = OFF")
        has_roots = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'roots'").fetchone()
        if has_roots:  # what `autotag DIR` records (version 2): the folder it was pointed at
            db.execute("INSERT INTO roots (path, added) VALUES (?, ?)",
                       (os.path.realpath(media), float(MTIME0)))
        for start in range(0, clips, BATCH):
            n = min(BATCH, clips - start)
            embeddings = rng.standard_normal((n, WINDOWS, DIM), dtype=np.float32)
            means = embeddings.mean(axis=1, dtype=np.float32)
            db.execute("BEGIN")
            for j in range(n):
                i = start + j
                sha = hashlib.sha256(f"clip {i}".encode()).hexdigest()
                db.execute("INSERT INTO clips (sha256, model, duration, windows, embeddings, "
                           "clip_embedding, dim) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (sha, model, WINDOWS * WINDOW_SECONDS, windows,
                            embeddings[j].tobytes(), means[j].tobytes(), DIM))
                db.execute("INSERT INTO thumbs (sha256, count, jpeg) VALUES (?, ?, ?)",
                           (sha, WINDOWS, strips[i % len(strips)]))
                db.execute("INSERT INTO files (path, size, mtime, sha256, status, attempts, "
                           "last_error, model, vocabulary, updated) VALUES "
                           "(?, 0, ?, ?, 'tagged', 0, NULL, ?, ?, ?)",
                           (str(clip_path(media, i)), float(MTIME0 + i), sha, model,
                            vocabulary, float(MTIME0 + i + 60)))
            db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")  # as every Store connection leaves it
    finally:
        db.close()


def cached_store(cache: Path, clips: int, checkout: Path, media: Path, model: str,
                 vocabulary: str) -> tuple[Path, float]:
    """The store of `clips` clips with `checkout`'s schema, built once: (path, build seconds,
    0 when cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix="serve-build-", dir=cache)) / "state.sqlite3"
    try:
        digest = schema_by(checkout, fresh)
        key = hashlib.sha256(f"{digest} {model} {vocabulary}".encode()).hexdigest()[:12]
        path = cache / f"serve-store-{clips}-{key}.sqlite3"
        if path.exists():
            return path, 0.0
        started = time.perf_counter()
        fill_store(fresh, media, clips, model, vocabulary)
        fresh.replace(path)
        return path, time.perf_counter() - started
    finally:
        shutil.rmtree(fresh.parent, ignore_errors=True)


def copy_store(source: Path, target: Path) -> None:
    """A copy the run may open (and an older checkout may write to), on disk before timing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def queries(count: int) -> list[str]:
    """`count` distinct plain-English queries."""
    out = [f"{a} {p}" for p in PLACES for a in ACTIVITIES]
    take = 2
    while len(out) < count:
        out += [f"{q} take {take}" for q in out[:len(ACTIVITIES) * len(PLACES)]]
        take += 1
    return out[:count]


def fill_text_cache(cache_dir: Path, model: str, texts: list[str]) -> None:
    """Random vectors for `texts` (and the empty prompt) in the text-embedding caches, as if
    the model had embedded them: a cached query starts no TensorFlow. Both folders: the
    vocabulary's prompts (text-embeddings) and, since issue 30, search queries apart in a
    bounded cache (query-embeddings; a checkout before it reads the first only)."""
    from autotag.vocabulary import TextCache, normalise_prompt

    for folder in ("text-embeddings", "query-embeddings"):
        cache = TextCache(cache_dir / "autotag" / folder / model)
        rng = np.random.default_rng(7)
        for text in ["", *texts]:
            cache.put(normalise_prompt(text), rng.standard_normal(DIM, dtype=np.float32))


def write_config(folder: Path, handle: str, store: Path) -> Path:
    """model.handle, state.path and the shipped vocabulary: keys every checkout knows."""
    vocabulary = yaml.safe_load(BASE_CONFIG.read_text())["vocabulary"]
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"handle": handle}, "state": {"path": str(store)},
                                    "vocabulary": vocabulary}))
    return path


def prompts_and_fingerprint(config: Path, model: str) -> tuple[list[str], str]:
    from autotag.config import load_config
    from autotag.vocabulary import vocabulary_fingerprint

    entries = load_config(config).vocabulary
    return ([p for e in entries for p in e.prompts],
            vocabulary_fingerprint(entries, model))


# -- the server -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM and VmRSS's anonymous and file-backed parts of a process, MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in MEMORY:
            out[MEMORY[key]] = int(value.split()[0]) / 1024
    return out


MEMORY = {"VmRSS": "rss_mb", "VmHWM": "hwm_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}


def tensorflow_loaded(pid: int) -> bool:
    return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text(errors="replace")


class Server:
    """`python -m autotag serve --listen 127.0.0.1:PORT` as a user starts it."""

    def __init__(self, config: Path, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.log_path = folder / "serve.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the child's, closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autotag", "serve", "--config", str(config), "--listen",
             f"127.0.0.1:{self.port}"], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=folder)

    def wait_ready(self) -> float:
        """Seconds from the start to the "serving N clips" line (uvicorn listens)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while b"serving " not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"autotag serve did not start (exit {self.proc.poll()}):\n"
                                   + self.log_text()[-1500:])
            time.sleep(0.01)
        return time.perf_counter() - self.started

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def index_seconds(self) -> float | None:
        found = re.search(r"search index: \d+ clips loaded in ([\d.]+) s", self.log_text())
        return float(found.group(1)) if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does: uvicorn's graceful stop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def first_page(port: int) -> dict:
    """A fresh connection → GET / → the CSS and JS it links: what a browser must have before
    it paints (fetched one after another on the one connection: a browser would overlap the
    last two)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        status, html = get(conn, "/")
        html_s = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"GET / answered {status}: {html[:300]!r}")
        assets = re.findall(r'(?:href|src)="([^"]+\.(?:css|js)[^"]*)"', html.decode())
        size = len(html)
        for asset in assets:
            status, body = get(conn, asset)
            if status != 200:
                raise RuntimeError(f"GET {asset} answered {status}")
            size += len(body)
        total = time.perf_counter() - started
    finally:
        conn.close()
    return {"html_ms": html_s * 1e3, "total_ms": total * 1e3, "bytes": size, "assets": assets}


def latencies(port: int, paths: list[str], check) -> dict:
    """p50/p95 (ms) of GET each of paths[1:] on one keep-alive connection; paths[0] warms up."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    times = []
    try:
        for n, path in enumerate(paths):
            started = time.perf_counter()
            status, body = get(conn, path)
            seconds = time.perf_counter() - started
            check(path, status, body)
            if n:
                times.append(seconds * 1e3)
    finally:
        conn.close()
    return {"n": len(times), "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)), "mean_ms": statistics.fmean(times),
            "max_ms": max(times)}


def check_api(path: str, status: int, body: bytes) -> None:
    hits = json.loads(body) if status == 200 else None
    if not hits or len(hits) != TOP or not all(Path(h["path"]).exists() for h in hits):
        raise RuntimeError(f"GET {path}: {status}, {body[:300]!r}")


def check_page(path: str, status: int, body: bytes) -> None:
    if status != 200 or body.count(b"/thumbnail?") < TOP:
        raise RuntimeError(f"GET {path}: {status}, {body[:300]!r}")


def in_browser(port: int, query: str) -> dict:
    """Navigation Timing of / and /?q=QUERY in Chromium, a fresh context (no cache) each; or
    why the browser was skipped."""
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} is not installed"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed"}
    timing = ("() => { const n = performance.getEntriesByType('navigation')[0]; return "
              "{response_ms: n.responseEnd, dom_ms: n.domContentLoadedEventEnd, "
              "load_ms: n.loadEventEnd, images: document.images.length}; }")
    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, path in (("/", "/"), ("/?q=", "/?q=" + quote(query))):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}{path}", wait_until="load")
                out[name] = page.evaluate(timing)
                context.close()
        finally:
            browser.close()
    return out


def serve_figures(config: Path, env: dict[str, str], folder: Path, texts: list[str],
                  count: int, browser: bool, say) -> dict:
    """Start the server, take the first page, the latencies and its memory; stop it."""
    server = Server(config, env, folder)
    try:
        ready = server.wait_ready()
        out = {"startup_s": ready, "index_load_s": server.index_seconds(),
               "loaded": memory(server.proc.pid)}
        say(f"server ready in {ready:.2f} s; the first page")
        out["first_page"] = first_page(server.port)
        say(f"{count} searches through the API, then {count} through the page")
        api = ["/api/search?q=" + quote(q) + f"&top={TOP}" for q in texts[:count + 1]]
        out["api_search"] = latencies(server.port, api, check_api)
        pages = ["/?q=" + quote(q) for q in texts[count + 1:2 * count + 2]]
        out["page_search"] = latencies(server.port, pages, check_page)
        out["after_queries"] = memory(server.proc.pid)
        if browser:
            say("Chromium: / and /?q=")
            out["browser"] = in_browser(server.port, texts[2 * count + 2])
        out["tensorflow_loaded"] = tensorflow_loaded(server.proc.pid)
        out["final"] = memory(server.proc.pid)
    finally:
        server.stop()
    return out


# -- autotag search -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """`autotag search --json --top 10 QUERY` as one checkout runs it."""

    name: str
    checkout: Path
    argv: list[str]
    env: dict[str, str]
    folder: Path
    module: str  # autotag/__init__.py as this command imports it

    def run(self) -> float:
        """Wall seconds from start to exit; RuntimeError unless it printed CLI_TOP hits."""
        started = time.perf_counter()
        done = subprocess.run(self.argv, check=False, capture_output=True, text=True,
                              env=self.env, cwd=self.folder)
        seconds = time.perf_counter() - started
        if done.returncode != 0 or len(json.loads(done.stdout or "[]")) != CLI_TOP:
            raise RuntimeError(f"autotag search ({self.checkout}) exit {done.returncode}:\n"
                               f"{done.stdout[-500:]}\n{done.stderr[-1500:]}")
        return seconds


def command(name: str, checkout: Path, config: Path, env: dict[str, str], folder: Path,
            query: str) -> Command:
    """The command for `checkout`, checked to import that checkout's autotag."""
    env = checkout_env(checkout, env)
    which = subprocess.run([sys.executable, "-c", WHICH], capture_output=True, text=True,
                           env=env, cwd=folder, check=True).stdout.strip()
    if not Path(which).resolve().is_relative_to(checkout.resolve()):
        raise RuntimeError(f"{checkout}: autotag comes from {which}")
    return Command(name, checkout, [sys.executable, "-m", "autotag", "search", "--config",
                                    str(config), "--json", "--top", str(CLI_TOP), query],
                   env, folder, which)


def time_commands(commands: list[Command]) -> dict[str, dict]:
    """One untimed run of each (it compiles an older checkout's .pyc files), then CLI_RUNS
    rounds, the checkouts taking turns so that a neighbour's load weighs on each alike; for
    the first, also its interpreter start and imports."""
    for c in commands:
        c.run()
    times: dict[str, list[float]] = {c.name: [] for c in commands}
    for _ in range(CLI_RUNS):
        for c in commands:
            times[c.name].append(c.run())
    out = {c.name: {"module": c.module, "runs_s": times[c.name],
                    "median_s": statistics.median(times[c.name])} for c in commands}
    first = commands[0]
    out[first.name].update(_breakdown(first.argv, first.env, first.folder))
    return out


def _breakdown(argv: list[str], env: dict[str, str], folder: Path) -> dict:
    """The command's interpreter start (`python -c pass`) and imports: the modules one run
    imports (named by `-X importtime`, whose own bookkeeping would inflate their time),
    imported again by `python -c` without it; medians of CLI_RUNS."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], check=False,
                          capture_output=True, text=True, env=env, cwd=folder)
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.MULTILINE)
    start = statistics.median(_wall([sys.executable, "-c", "pass"], env, folder)
                              for _ in range(CLI_RUNS))
    imports = statistics.median(_wall([sys.executable, "-c", IMPORT_ALL, *modules], env, folder)
                                for _ in range(CLI_RUNS))
    return {"python_start_s": start, "imports_s": imports - start, "modules": len(modules)}


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=cwd, capture_output=True)
    return time.perf_counter() - started


# -- the run --------------------------------------------------------------------------------------

def checkout_state(checkout: Path) -> dict:
    """The commit a checkout is at and its uncommitted product files (the code measured)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(checkout), *argv], capture_output=True,
                              text=True, check=False)
        return done.stdout.strip()

    return {"path": str(checkout), "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "autotag").splitlines()}


def machine() -> dict:
    from benchmarks.runtimes import CPU_FLAGS, cpu

    name, flags = cpu()
    return {"cpu": name, "cores": os.cpu_count(), "flags": sorted(flags),
            "notable_flags": [f for f in CPU_FLAGS if f in flags],
            "loadavg_start": list(os.getloadavg())}


def run(args: argparse.Namespace, say=print) -> dict:
    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    if args.model is not None:
        handle = str(args.model.resolve())
    else:
        from benchmarks.measure import standin

        handle = str(standin(cache))
    from autotag.model import fingerprint

    model = fingerprint(handle)
    result = {"clips": args.clips, "queries": args.queries, "machine": machine(),
              "model": {"handle": handle, "fingerprint": model}}
    scratch = Path(tempfile.mkdtemp(prefix="serve-", dir=cache))
    try:
        after_dir, before_dir = scratch / "after", scratch / "before"
        after_dir.mkdir()
        config = write_config(after_dir, handle, after_dir / "state.sqlite3")
        prompts, vocabulary = prompts_and_fingerprint(config, model)
        say(f"the library: {args.clips:,} clips (built once under {cache})")
        media, media_s = build_media(cache, args.clips)
        stores = {"after": (ROOT, after_dir)}
        if args.before is not None:
            before_dir.mkdir()
            stores["before"] = (args.before, before_dir)
        result["build"] = {"media_s": media_s}
        for name, (checkout, folder) in stores.items():
            source, built = cached_store(cache, args.clips, checkout, media, model, vocabulary)
            how = f"built in {built:.0f} s" if built else "cached"
            say(f"{name}: store {source.name} ({how}), copied for this run")
            copy_store(source, folder / "state.sqlite3")
            with sqlite3.connect(folder / "state.sqlite3") as db:
                schema = db.execute("PRAGMA user_version").fetchone()[0]
            db.close()
            result["build"][name] = {"store": str(source), "build_s": built, "schema": schema,
                                     "mb": source.stat().st_size / 2**20}
        texts = queries(2 * args.queries + 4)
        xdg = scratch / "xdg"
        fill_text_cache(xdg / "cache", model, prompts + texts)
        env = dict(os.environ, XDG_CACHE_HOME=str(xdg / "cache"),
                   XDG_DATA_HOME=str(xdg / "data"), XDG_CONFIG_HOME=str(xdg / "config"),
                   TF_CPP_MIN_LOG_LEVEL="3")
        say("autotag serve")
        result["server"] = serve_figures(config, checkout_env(ROOT, env), after_dir, texts,
                                         args.queries, not args.no_browser, say)
        result["checkouts"] = {name: checkout_state(checkout)
                               for name, (checkout, _) in stores.items()}
        commands = []
        for name, (checkout, folder) in stores.items():
            cfg = config if name == "after" else write_config(folder, handle,
                                                              folder / "state.sqlite3")
            commands.append(command(name, checkout, cfg, env, folder, texts[-1]))
        say(f"autotag search: {', '.join(c.name for c in commands)}, taking turns")
        result["command"] = time_commands(commands)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return result


# -- the table ------------------------------------------------------------------------------------

def rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(measure, figure, target, status) rows."""
    s = r["server"]
    api, page, first = s["api_search"], s["page_search"], s["first_page"]
    index = f", index loaded in {s['index_load_s']:.2f} s" if s.get("index_load_s") else ""
    out = [
        ("autotag serve: start → listening", f"{s['startup_s']:.2f} s{index}", "", ""),
        ("first page: connect → GET / + CSS + JS",
         (f"{first['total_ms']:.0f} ms (HTML {first['html_ms']:.0f} ms, "
          f"{first['bytes'] / 1024:.0f} KB)"), f"< {PAGE_TARGET_S:g} s",
         _met(first["total_ms"] < PAGE_TARGET_S * 1e3)),
        (f"search, /api/search top {TOP} (p50 / p95 of {api['n']})",
         f"{api['p50_ms']:.0f} / {api['p95_ms']:.0f} ms (max {api['max_ms']:.0f})",
         f"p95 < {SEARCH_TARGET_MS:.0f} ms", _met(api["p95_ms"] < SEARCH_TARGET_MS)),
        (f"search, the page /?q= (p50 / p95 of {page['n']})",
         f"{page['p50_ms']:.0f} / {page['p95_ms']:.0f} ms (max {page['max_ms']:.0f})",
         f"p95 < {SEARCH_TARGET_MS:.0f} ms", _met(page["p95_ms"] < SEARCH_TARGET_MS)),
        ("server memory, index loaded: VmRSS / VmHWM", _memory(s["loaded"]), "", ""),
        ("server memory, after the queries: VmRSS / VmHWM", _memory(s["after_queries"]), "",
         ""),
        ("TensorFlow in the server", "loaded" if s["tensorflow_loaded"] else "not loaded", "",
         ""),
    ]
    browser = s.get("browser")
    if browser and "skipped" in browser:
        out.append(("Chromium, loadEventEnd", "skipped: " + browser["skipped"], "", ""))
    elif browser:
        for name, t in browser.items():
            out.append((f"Chromium, {name} loadEventEnd",
                        (f"{t['load_ms']:.0f} ms (DOMContentLoaded {t['dom_ms']:.0f} ms, "
                         f"{t['images']} images)"),
                        f"< {PAGE_TARGET_S:g} s" if name == "/" else "",
                        _met(t["load_ms"] < PAGE_TARGET_S * 1e3) if name == "/" else ""))
    for name, c in r["command"].items():
        runs = ", ".join(f"{t:.2f}" for t in c["runs_s"])
        out.append((f"autotag search --json --top {CLI_TOP}, {name} (median of {len(c['runs_s'])})",
                    f"{c['median_s']:.2f} s ({runs})", "", ""))
        if "imports_s" in c:
            rest = c["median_s"] - c["python_start_s"] - c["imports_s"]
            out.append((f"  of which ({name})",
                        (f"interpreter {c['python_start_s']:.2f} s, imports "
                         f"{c['imports_s']:.2f} s, the rest (index load, query, output) "
                         f"{rest:.2f} s"), "", ""))
    return out


def _memory(m: dict) -> str:
    return (f"{m['rss_mb']:.0f} / {m['hwm_mb']:.0f} MB (anonymous {m.get('anon_mb', 0):.0f}, "
            f"file-backed {m.get('file_mb', 0):.0f})")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def caption(r: dict) -> str:
    m = r["machine"]
    load = "/".join(f"{x:.1f}" for x in m["loadavg_start"])
    end = "/".join(f"{x:.1f}" for x in m.get("loadavg_end", m["loadavg_start"]))
    code = "; ".join(f"{name} {c['commit']}" + (f" + {len(c['uncommitted'])} uncommitted"
                                                  if c["uncommitted"] else "")
                     for name, c in r.get("checkouts", {}).items())
    return (f"{r['clips']:,} clips × {WINDOWS} windows; {m['cpu']}, {m['cores']} cores; "
            f"flags: {', '.join(m['notable_flags']) or '-'}; load average {load} → {end}; "
            f"{code}")


def markdown(r: dict) -> str:
    lines = [f"# autotag serve and search ({time.strftime('%Y-%m-%d %H:%M')})", "",
             caption(r), "", "| measure | figure | target | status |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows(r)]
    return "\n".join(lines) + "\n"


def show(r: dict) -> None:
    if not sys.stdout.isatty():
        print(markdown(r))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="autotag serve and search", caption=caption(r))
    for name in ("measure", "figure", "target", "status"):
        table.add_column(name)
    for row in rows(r):
        table.add_row(*row, style="red" if row[3] == "NOT met" else None)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=CLIPS, help="clips in the store")
    parser.add_argument("--queries", type=int, default=QUERIES,
                        help="timed requests per endpoint")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also time this checkout's `autotag search` (a git worktree), on "
                             "a store its own code made")
    parser.add_argument("--no-browser", action="store_true", help="skip Chromium")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="a SavedModel directory as model.handle instead of the stand-in "
                             "(only its fingerprint is used: nothing loads it)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the run's scratch folder")
    args = parser.parse_args(argv)
    if args.clips < TOP + 16 or args.queries < 1:
        parser.error(f"--clips must be at least {TOP + 16} and --queries at least 1")
    if args.before is not None:
        args.before = args.before.resolve()
        if not (args.before / "autotag" / "__init__.py").exists():
            parser.error(f"--before {args.before}: not an autotag checkout")
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", flush=True)

    result = run(args, say)
    show(result)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    print(f"written to {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
