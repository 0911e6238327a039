"""A store of N synthetic clips (benchmarks.scale.index's, cached) → the web app's index
(search.live.LiveIndex, as `autotag serve` loads it) in a process of its own → its memory after
loading, after searches and after teach previews → a line per size.

    python -m benchmarks.scale.live --clips 100000 --clips 1000000
    python -m benchmarks.scale.live --clips 3000                         # a quick look

Memory is the child's VmRSS (now) and VmHWM (its peak) from /proc/self/status, and RSS split
into anonymous memory (the process's own) and file-backed pages (the index files it maps,
which the kernel drops under memory pressure and reads again). The index is
saved beside the store before the child starts (as after the first `autotag search`), so the
figures are a server's steady start, not the one-time build. The vocabulary is 50 tags of
random vectors (their tag scores: float32 [clips, 50]). The preview is LiveIndex.scores, what
the teach form's preview counts, at the median score of a clip query; its time and the number
of clips it read exactly are printed too (timing on a loaded machine is not a figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.scale import index as scale_index
from benchmarks.serve import build_media, checkout_env

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / ".cache"
TAGS = 50

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from autotag.config import TaggingConfig
from autotag.search.live import LiveIndex
from autotag.search.vectors import VectorIndex
from autotag.store import Store
from autotag.vocabulary import Vocabulary

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon",
                                                          "RssFile")}

store_path, model, tags = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(Path(store_path))
out = {"start": status()}
started = time.perf_counter()
vocabulary = Vocabulary((), np.random.default_rng(1).standard_normal((tags, 512)).astype(
    np.float32), "v")
live = LiveIndex(store, model, vocabulary, TaggingConfig(min_score=3.0))
out["load_s"] = time.perf_counter() - started
out["loaded"] = status()
rng = np.random.default_rng(2)
for _ in range(10):
    live.search(rng.standard_normal(512).astype(np.float32), 24)
out["searched"] = status()
times = []
for i in range(3):
    query = rng.standard_normal(512).astype(np.float32)
    started = time.perf_counter()
    records, scores = live.scores(query, float(np.median(scores)) if i else 0.0)
    times.append(time.perf_counter() - started)
out["preview_s"] = times
out["previewed"] = status()
live.close()
print(json.dumps(out))
"""


def at_size(clips: int, folder: Path, cache: Path) -> dict:
    handle = cache / "scale-model"
    handle.mkdir(parents=True, exist_ok=True)
    model = scale_index.model_of(handle)
    media, _ = build_media(cache, clips)
    source = scale_index.cached_store(ROOT, clips, media, model, cache)
    store = folder / "state.sqlite3"
    shutil.copyfile(source, store)
    env = checkout_env(ROOT)
    save = ("import sys; from pathlib import Path; from autotag.store import Store; "
            "from autotag.search.vectors import open_index; "
            "open_index(Store(Path(sys.argv[1])), sys.argv[2])")
    subprocess.run([sys.executable, "-c", save, str(store), model], env=env, check=True,
                   cwd=folder)
    done = subprocess.run([sys.executable, "-c", CHILD, str(store), model, str(TAGS)],
                          capture_output=True, text=True, env=env, cwd=folder, check=False)
    if done.returncode:
        raise RuntimeError(f"the child failed:\n{done.stderr[-2000:]}")
    return {"clips": clips, **json.loads(done.stdout.splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale.live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, action="append", metavar="N",
                        help="library sizes (repeat; default: 100,000 and 1,000,000)")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    for clips in args.clips or (100_000, 1_000_000):
        with tempfile.TemporaryDirectory(prefix="scale-live-", dir=CACHE) as tmp:
            r = at_size(clips, Path(tmp), CACHE)
        print(f"{clips:,} clips: loaded in {r['load_s']:.1f} s; MB RSS / peak: start "
              f"{r['start']['VmRSS']:.0f} / {r['start']['VmHWM']:.0f}, loaded "
              f"{r['loaded']['VmRSS']:.0f} / {r['loaded']['VmHWM']:.0f}, after 10 searches "
              f"{r['searched']['VmRSS']:.0f} / {r['searched']['VmHWM']:.0f}, after 3 previews "
              f"{r['previewed']['VmRSS']:.0f} / {r['previewed']['VmHWM']:.0f} "
              f"(previews {', '.join(f'{s:.2f}' for s in r['preview_s'])} s); of RSS, "
              f"anonymous / file-backed (the index's mapped pages, given back under pressure):"
              f" loaded {r['loaded']['RssAnon']:.0f} / {r['loaded']['RssFile']:.0f}, "
              f"searched {r['searched']['RssAnon']:.0f} / {r['searched']['RssFile']:.0f}, "
              f"previewed {r['previewed']['RssAnon']:.0f} / {r['previewed']['RssFile']:.0f}",
              flush=True)
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
