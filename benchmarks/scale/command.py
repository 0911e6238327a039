"""A store of N synthetic clips (benchmarks.scale.index's, cached) → `autotag search QUERY` as a user
runs it, whole and phase by phase → where its time goes, against issue 31's budget (1.5 s at
100,000 clips, 3 s at 1,000,000).

    python -m benchmarks.scale.command --clips 100000 --clips 1000000     # the issue's sizes
    python -m benchmarks.scale.command --clips 3000 --runs 1              # a quick look
    python -m benchmarks.scale.command --clips 100000 --cold              # and new queries

Measured, each in a process of its own:
  - the command, first run: no index beside the store (it is built, then saved);
  - the command, warm: the index saved, the query's text embedding in the cache (median of
    --runs): what a user's second search costs;
  - its phases, in one process that takes the command's own steps with a clock between them:
    interpreter start (`python -c pass`), imports, the config, the store, the index opened
    (its manifest and checksum apart from the rest), the query's embedding, the ranking (the
    int8 scan and the exact re-rank), the hits' segments read from the store;
  - with --cold, the command for a query the text cache has never seen (a new one each run):
    the text side of the stand-in model (benchmarks.standin: MIL-NCE's text layers, random
    weights) runs in a TensorFlow child, as a real new query does: the first starts the text
    model every search shares, the next --runs ask it. The stand-in is built once
    under benchmarks/.cache (about a minute).

With --before CHECKOUT (a `git worktree` of an older commit), that checkout's own command on a
store of the same clips in its schema, first, warm and (with --cold) new queries, beside this
one's, at 100,000 clips or fewer (a second million-clip store would double the disk).

Without --cold no model is loaded: model.handle is an empty folder and the query's embedding is
in the cache (benchmarks.serve.fill_text_cache). The library is benchmarks.scale.data's
(--library, clustered by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autotag.runtimes import shared_text
from benchmarks.scale import index as scale_index
from benchmarks.serve import build_media, checkout_env, fill_text_cache

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / ".cache"
QUERY = "someone skateboarding"
BUDGET_S = {100_000: 1.5, 1_000_000: 3.0}  # issue 31: the whole command, start to result

PHASES = r"""
import json, sys, time
started = time.perf_counter()
marks = {}
def mark(name):
    global started
    now = time.perf_counter()
    marks[name] = now - started
    started = now
from pathlib import Path
import numpy as np
import autotag.cli.search, autotag.search, autotag.search.vectors, autotag.store, numkong
from autotag.cli.common import load_config, open_store
from autotag.config import default_cache_dir
from autotag.model import LazyEmbedder
from autotag.search import search
from autotag.search import vectors
from autotag.vocabulary import embed_query
mark("imports")
config_path, query = sys.argv[1], sys.argv[2]
config = load_config(autotag.cli.search.build().parse_args(["--config", config_path, query]))
embedder = LazyEmbedder.from_config(config.model)
mark("config")
store = open_store(config)
mark("store")
folder = vectors.folder_of(store)
manifest = vectors.Manifest.read(folder / f"{vectors._stem(embedder.fingerprint)}.json")
assert manifest is not None, "no saved index: run the command once first"
assert vectors._unsound(store, embedder.fingerprint, manifest, folder) is None
mark("index: manifest and checksum")
index = vectors.open_index(store, embedder.fingerprint)
mark("index: open (checksum again) and refresh")
vector, known = embed_query(query, embedder, default_cache_dir())
mark("query embedding")
ranked = index.ranked(vector, 10 + 16)
mark("ranking: int8 scan + exact re-rank")
hits, stale = search(index, store, embedder.fingerprint, vector, 10, config.tagging.min_score)
mark("search: ranking again + hits' segments")
print(json.dumps(marks))
"""


def standin_handle(cache: Path) -> Path:
    """The stand-in SavedModel (benchmarks.standin), built once under the cache."""
    path = cache / "standin-command"
    if not (path / "saved_model.pb").exists():
        done = subprocess.run([sys.executable, "-m", "benchmarks.standin", str(path)],
                              cwd=ROOT, env=checkout_env(ROOT), check=False,
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building the stand-in failed:\n{done.stderr[-2000:]}")
    return path


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])} … exited {done.returncode}:\n"
                           f"{done.stderr[-2000:]}")
    return seconds, done.stdout


def at_size(clips: int, folder: Path, cache: Path, runs: int, cold: bool, say,
            checkout: Path = ROOT) -> dict:
    """`checkout`'s command on a store of `clips` clips in its schema: first, warm, its
    phases (this checkout only) and, with `cold`, new queries."""
    handle = standin_handle(cache) if cold else cache / "scale-model"
    handle.mkdir(parents=True, exist_ok=True)
    model = scale_index.model_of(handle)
    media, _ = build_media(cache, clips)
    say(f"{clips:,} clips: store in {checkout.name}'s schema (cached after the first run)")
    source = scale_index.cached_store(checkout, clips, media, model, cache)
    store = folder / "state.sqlite3"
    shutil.copyfile(source, store)  # the command writes its index beside it, and may migrate
    home = folder / "home"
    env = checkout_env(checkout, dict(os.environ, XDG_CACHE_HOME=str(home / "cache"),
                                      XDG_CONFIG_HOME=str(home / "config"),
                                      XDG_STATE_HOME=str(home / "state")))
    fill_text_cache(home / "cache", model, [QUERY])
    config = scale_index._config(folder, "command", handle, store)
    argv = [sys.executable, "-m", "autotag", "search", "--config", str(config), "--json",
            "--top", "10"]
    say(f"{clips:,} clips: first command (builds the index)")
    first, out = _run([*argv, QUERY], env, folder)
    if len(json.loads(out)) != 10:
        raise RuntimeError("the first command did not print 10 hits")
    say(f"{clips:,} clips: warm commands")
    warm = [_run([*argv, QUERY], env, folder)[0] for _ in range(runs)]
    result = {"checkout": checkout.name, "clips": clips, "first_s": first, "warm_s": warm,
              "warm_median_s": statistics.median(warm), "budget_s": BUDGET_S.get(clips)}
    if checkout == ROOT:
        say(f"{clips:,} clips: phases")
        result["python_start_s"] = statistics.median(
            _run([sys.executable, "-c", "pass"], env, folder)[0] for _ in range(runs))
        phases = [json.loads(_run([sys.executable, "-c", PHASES, str(config), QUERY], env,
                                  folder)[1].splitlines()[-1]) for _ in range(runs)]
        result["phases_s"] = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    if cold:
        say(f"{clips:,} clips: commands for new queries (the stand-in's text side)")
        try:  # the first starts the shared text model (runtimes/shared_text.py), the rest ask it
            result["cold_s"] = [_run([*argv, f"{QUERY} number {i} {time.time_ns()}"], env,
                                     folder)[0] for i in range(runs + 1)]
        finally:
            shared_text.stop(home)  # it would wait 10 idle minutes
    return result


def report(r: dict) -> str:
    warm = ", ".join(f"{s:.2f}" for s in r["warm_s"])
    lines = [(f"{r['checkout']}, {r['clips']:,} clips (budget {r['budget_s'] or '–'} s): first "
              f"command {r['first_s']:.2f} s, warm median {r['warm_median_s']:.2f} s ({warm})")]
    if "phases_s" in r:
        lines.append(f"  python start {r['python_start_s']:.3f} s")
        lines += [f"  {name:45} {s:.3f} s" for name, s in r["phases_s"].items()]
    if "cold_s" in r:
        first, *rest = r["cold_s"]
        shared = r["checkout"] == ROOT.name  # an older checkout may start one per query
        lines.append(f"  new query, the first{' (starts the shared text model)' * shared}: "
                     f"{first:.2f} s")
        lines.append(f"  new queries after it: {', '.join(f'{s:.2f}' for s in rest)} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.command",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, action="append", metavar="N",
                        help="library sizes (repeat; default: 100,000 and 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (median)")
    parser.add_argument("--cold", action="store_true",
                        help="also new queries, embedded by the stand-in model's text side")
    parser.add_argument("--library", choices=scale_index.data.LIBRARIES, default="clustered")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also this checkout's command, at 100,000 clips or fewer")
    args = parser.parse_args(argv)
    scale_index.use_library(args.library)
    CACHE.mkdir(parents=True, exist_ok=True)
    results = []
    for clips in args.clips or sorted(BUDGET_S):
        checkouts = [ROOT] + ([args.before.resolve()] if args.before and
                              clips <= min(BUDGET_S) else [])
        for checkout in checkouts:
            with tempfile.TemporaryDirectory(prefix="scale-command-", dir=CACHE) as tmp:
                results.append(at_size(clips, Path(tmp), CACHE, args.runs, args.cold,
                                       lambda m: print(m, file=sys.stderr, flush=True),
                                       checkout))
            print(report(results[-1]), flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
