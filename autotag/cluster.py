"""Paths → plan (driver) → Ray Data: decode (CPU tasks) → embed (model actors) → driver: store, tags.

The cluster backfill (issues 15, 22). A planner thread on the driver walks and plans the paths
as they are found, with the engine's own rules (Engine.plan_many: a stat, one store query per
500 paths for the up-to-date rule and failures, stored embeddings: renames, and copies, which
are the only files it hashes (a stored clip has their size), are tagged on the driver without
the cluster); the clips left to decode stream through Ray Data, on a local Ray or a cluster,
in chunks of growing size (8, 32, ... up to MAX_CHUNK clips), one dataset each:

    from_items(a chunk of sources)  one row and one block per clip, so a lost task loses one clip
      └─► map_batches(decode_stage)    CPU tasks: the content hash (the task reads the file
                                       anyway), engine.decode; windows uint8 [n, 32, 224, 224, 3]
      └─► map_batches(EmbedActor)      actor pool, the model loaded once per actor; embed_windows
      └─► iter_rows() on the driver    float32 [n, 512] embeddings + duration, windows, thumbnails
      └─► engine.embedded → tagger.result   the one writer of the store, sidecars and outputs
      └─► the pass's Listener            as --once reports (OnRay: what passes.run_pass runs)

Why chunks: Ray Data's inputs are finite (from_items holds its list; a Datasource makes every
read task when the dataset starts), and the driver must not hold a million-clip plan nor wait
for the walk. A chunk costs a start of the model actors (seconds, from the cached model):
chunks grow by CHUNK_GROWTH so the first clip reaches the model at once and a long run pays
that start once per MAX_CHUNK clips. The driver holds at most a chunk being run and one being
planned (PLAN_AHEAD), whatever the archive's size.

A clip that cannot be decoded, or whose worker died (a crashed process, a lost node), is one
FAILED outcome with its reason; nothing a clip does escapes its stage, and a task lost after
its retries drops its one row (DataContext.max_errored_blocks), which the driver reports.
The stage functions live here, in an importable module: Ray workers import them by name.
Ray is imported only inside the functions that need it (`pip install 'autotag[cluster]'`).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import queue
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autotag import engine as stages
from autotag import media
from autotag.clip import SourceInfo, Window
from autotag.config import Config, ModelConfig, SamplingConfig
from autotag.engine import FAILED, Engine, Outcome
from autotag.errors import AutotagError
from autotag.media import pictures
from autotag.model import EMBED_DIM, Embedder, native_stderr_quiet
from autotag.passes import may_retry

if TYPE_CHECKING:
    from autotag.app import App
    from autotag.engine import RetryFailed
    from autotag.tagging import ClipResult

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autotag[cluster]'"
DECODE_CPUS = 1  # per decode task: one clip, one decoding thread (media.DECODE_THREADS)
# Ray's own default retries a task whose worker died for ever (ray.data remote_fn:
# max_retries=-1), so a file that crashes its decoder would hang the run: a lost node is worth
# two more tries, a file that kills three workers in a row is a failed clip.
DECODE_RETRIES = 2
# An actor that dies (a crash, a lost node) is restarted for the next clips, but its clips in
# flight are not retried: a retry waits for the restart, and a lost node's actor may never find
# room to restart on the nodes left (each holds its own actor), so the run hung (issue 22, a
# node removed mid-run). They are named LOST at once and tried again by the next run.
EMBED_RETRIES = 0
# The model's resident memory (docs/design/performance.md: 1.1 GB alone, 1.35 GB with batches). Asked
# of Ray so it places no more actors on a node than it holds; it also makes the stages'
# resources differ where their CPU counts do not (two-core nodes), or Ray fuses decoding into
# the model actor and nothing overlaps (issue 15).
MODEL_MEMORY = 1_500 * 2**20  # bytes
GPU_ACTOR_CPUS = 1  # a GPU actor's CPU: feeding the GPU; the model runs on the GPU
GPU_ACTOR_THREADS = 2  # TensorFlow intra-op threads in a GPU actor (model.threads overrides)
# On a CPU node decoding costs about a quarter of the model's time (docs/design/performance.md:
# 2.9 s of decoding for 9.1 s of model on 720p clips): the actor reserves the rest.
DECODE_SHARE = 4
MIN_NODE_CPUS = 2  # nodes with fewer CPUs (a KubeRay head with num-cpus: 0) run no actor
LOST = ("the Ray worker decoding or embedding it died (a crash, or its node was lost; decoding "
        "is tried {retries} more times, embedding is not); the next run tries it again; see the "
        "Ray logs with --debug")
FIRST_CHUNK = 8  # clips in the first dataset: the model starts on the first clips found
CHUNK_GROWTH = 4  # each dataset holds this many times the clips of the one before ...
MAX_CHUNK = 4_096  # ... up to this: the driver's plan in memory (a row is ~300 bytes)
PLAN_AHEAD = MAX_CHUNK  # planned clips waiting for the next dataset; the planner waits past it
FILL_SECONDS = 2.0  # a chunk starts with what is planned after this long (a slow walk)
EVENTS = 64  # outcomes waiting for the tagging step (the driver's one writer)
STOP_SECONDS = 5.0  # waited for each thread at the end (the Ray thread ends at its next row, or with Ray)
RUN_CONTEXT = {  # ray.data.DataContext for a backfill
    "enable_progress_bars": False,  # ours is the Reporter's
    "max_errored_blocks": -1,  # a lost clip is reported by name (LOST), the others go on
}


class ClusterError(AutotagError):
    """The run cannot start or go on (no Ray, no cluster, the model will not load); one line."""


# -- resources ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """How the embed stage is laid out on the cluster."""

    actors: int  # at most this many model actors (the pool starts with one)
    gpus: int  # per actor: 1 on a cluster with GPUs, else 0
    cpus: float  # per actor, as reserved from Ray
    threads: int  # TensorFlow intra-op threads per actor (Ray's reservation does not bind them)


def plan_resources(nodes: Iterable[dict], threads: int = 0) -> Resources:
    """From `ray.nodes()`: one actor per GPU if the cluster has GPUs; otherwise one actor per
    CPU node, reserving all but a decoding share of the smallest node's CPUs, with TensorFlow
    threads for all of that node's cores (as `--once` runs: on two cores one intra-op thread
    halves the model's speed, docs/design/performance.md). `threads` (model.threads) overrides."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    gpus = int(sum(r.get("GPU", 0) for r in alive))
    if gpus:
        return Resources(gpus, 1, GPU_ACTOR_CPUS, threads or GPU_ACTOR_THREADS)
    cpu_nodes = [int(r.get("CPU", 0)) for r in alive if r.get("CPU", 0) >= MIN_NODE_CPUS]
    if not cpu_nodes:
        raise ClusterError(f"the Ray cluster has no node with {MIN_NODE_CPUS} CPUs or a GPU to "
                           "run the model on; add a worker node ('ray start --address=...')")
    smallest = min(cpu_nodes)
    cpus = max(1, smallest - max(DECODE_CPUS, smallest // DECODE_SHARE))
    return Resources(len(cpu_nodes), 0, cpus, threads or smallest)


# -- the stages (run on Ray workers) -----------------------------------------------------------

def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def source_row(source: SourceInfo) -> dict:
    """A planned clip as a row of the input dataset (plain values: Arrow stores them)."""
    return {"path": str(source.path), "size": source.size, "mtime": source.mtime,
            "sha256": source.sha256}


def row_source(row: dict) -> SourceInfo:
    return SourceInfo(Path(str(row["path"])), int(row["size"]), float(row["mtime"]),
                      str(row["sha256"]))


def decode_stage(batch: dict[str, np.ndarray], sampling: SamplingConfig,
                 debug: bool = False) -> dict[str, np.ndarray]:
    """Ray Data decode stage: planned sources → windows uint8 [n, 32, 224, 224, 3] per row, or
    the reason a clip could not be decoded (`error`, with no windows). Never raises."""
    media.quiet_decoder(debug)
    rows = [_decode_one(row_source({k: batch[k][i] for k in ("path", "size", "mtime", "sha256")}),
                        sampling) for i in range(len(batch["path"]))]
    return _columns(rows)


def _decode_one(source: SourceInfo, sampling: SamplingConfig) -> dict:
    """One clip: its content hash when the driver did not know it (planned with ""), then its
    windows; the row says the hash, for the driver's store."""
    started = time.perf_counter()
    row = {**source_row(source), "error": "", "retryable": False, "decoder": _where()}
    try:
        if not source.sha256:
            source = dataclasses.replace(source, sha256=stages.hash_file(source.path))
            row["sha256"] = source.sha256
        sampled = stages.decode(source, sampling)
    except (media.DecodeError, OSError) as exc:
        failed = stages.decode_failure(source, exc)
        return {**row, **_no_windows(), "error": failed.reason, "retryable": failed.retryable,
                "decode_seconds": time.perf_counter() - started}
    except Exception as exc:
        log.debug("decoding %s", source.path, exc_info=True)
        return {**row, **_no_windows(), "error": f"internal error: {type(exc).__name__}: {exc}",
                "decode_seconds": time.perf_counter() - started}
    return {**row, "frames": sampled.frames, "duration": sampled.duration,
            "windows": np.array([(w.start, w.end) for w in sampled.windows], np.float64),
            "thumbnails": sampled.thumbnails, "decode_seconds": time.perf_counter() - started}


def _no_windows() -> dict:
    size = pictures.FRAME_SIZE
    return {"frames": np.zeros((0, media.WINDOW_FRAMES, size, size, 3), np.uint8),
            "duration": 0.0, "windows": np.zeros((0, 2), np.float64),
            "thumbnails": np.zeros((0, 1, 1, 3), np.uint8)}


def load_embedder(model: ModelConfig, threads: int) -> Embedder:
    """The model inside an actor, on config's runtime (OpenVINO on a CPU node when it is
    installed there, from the cached IR and with no TensorFlow in the actor; TensorFlow on a
    GPU node), with explicit thread counts for both (Ray sets OMP_NUM_THREADS=1 in an actor,
    but TensorFlow and OpenVINO take every core unless told: model.py caps both)."""
    from autotag.model import load_configured

    return load_configured(dataclasses.replace(model, threads=threads))


class EmbedActor:
    """Ray Data embed stage: decoded rows → float32 [n, 512] embeddings per row (frames are
    dropped here: only embeddings, duration, windows, thumbnails and timing go back). The model
    is loaded once per actor; a model failure fails its clip only (engine.embed_windows)."""

    def __init__(self, model: ModelConfig, threads: int) -> None:
        self.embedder = load_embedder(model, threads)
        self.batch_size = model.batch_size
        self.where = _where()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["path"])
        clips = [batch["frames"][i] for i in range(n)]
        started = time.perf_counter()
        try:
            results = embed_clips(self.embedder, clips, self.batch_size,
                                  [str(e) for e in batch["error"]])
        except Exception as exc:
            log.debug("embedding %s", list(batch["path"]), exc_info=True)
            results = [f"internal error: {type(exc).__name__}: {exc}"] * n
        seconds = (time.perf_counter() - started) / max(n, 1)
        out = {k: batch[k] for k in batch if k != "frames"}
        out["error"] = np.array([r if isinstance(r, str) else str(batch["error"][i])
                                 for i, r in enumerate(results)], dtype=object)
        out["embeddings"] = _ragged([r if isinstance(r, np.ndarray)
                                     else np.zeros((0, EMBED_DIM), np.float32) for r in results])
        out["embed_seconds"] = np.full(n, seconds)
        out["embedder"] = np.array([self.where] * n, dtype=object)
        out["model"] = np.array([self.embedder.fingerprint] * n, dtype=object)
        return out


def embed_clips(embedder: Embedder, clips: list[np.ndarray], batch_size: int,
                errors: list[str]) -> list[np.ndarray | str | None]:
    """Each clip's windows (uint8 [n, 32, 224, 224, 3]) → float32 [n, 512], or the reason its
    model call failed; None for a clip that came with an error. Windows of several clips share
    calls of `batch_size`, through the engine's `embed_isolated` (only a culprit fails)."""
    results: list[np.ndarray | str | None] = [None] * len(clips)
    pending = [(c, w) for c, frames in enumerate(clips) if not errors[c]
               for w in range(len(frames))]
    parts: dict[int, list[np.ndarray]] = {c: [] for c, _ in pending}
    for start in range(0, len(pending), batch_size):
        items = [(c, w) for c, w in pending[start:start + batch_size] if results[c] is None]
        if not items:
            continue
        embedded = stages.embed_isolated(embedder, [c for c, _ in items],
                                         [clips[c][w] for c, w in items])
        for (c, _), result in zip(items, embedded, strict=True):
            if isinstance(result, str):
                results[c] = result
            elif results[c] is None:
                parts[c].append(result)
    for c, vectors in parts.items():
        if results[c] is None:
            results[c] = np.stack(vectors).astype(np.float32, copy=False)
    for c, frames in enumerate(clips):
        if results[c] is None and not errors[c] and len(frames) == 0:
            results[c] = "no windows were decoded"
    return results


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows → Ray Data batch columns (arrays of differing shapes as ragged tensors)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = (_ragged(values) if isinstance(values[0], np.ndarray)
                    else np.array(values, dtype=object if isinstance(values[0], str) else None))
    return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    column = np.empty(len(arrays), dtype=object)  # Ray stores it as a variable-shaped tensor
    for i, a in enumerate(arrays):
        column[i] = a
    return column


# -- the driver -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Remote:
    """What comes back of a clip decoded and embedded on the cluster (engine.SampledInfo)."""

    duration: float
    windows: tuple[Window, ...]
    thumbnails: np.ndarray  # uint8 [n, h, w, 3]


@dataclass
class Timing:
    """Seconds spent on the cluster, summed over clips (for --debug and the benchmark)."""

    decode: float = 0.0
    embed: float = 0.0
    clips: int = 0


class OnRay:
    """An app whose clips are decoded and embedded on Ray: what the library's one pass
    (passes.run_pass) runs for `autotag backfill`, reporting to the same Listener as `--once`
    and the daemon (passes.Tags: the app's up-to-date rule, and `tag`, which is `backfill`).
    before_cluster(): connect to Ray, called only if a clip needs it."""

    def __init__(self, app: App, *, debug: bool = False,
                 before_cluster: Callable[[], None] = lambda: None,
                 timing: Timing | None = None) -> None:
        self.app = app
        self.rule = app.rule
        self.debug = debug
        self.before_cluster = before_cluster
        self.timing = timing

    def tag(self, paths: Iterable[Path], *, force: bool = False,
            retry_failed: RetryFailed = may_retry, stop: threading.Event | None = None,
            on_windows: Callable[[int], None] | None = None) -> Iterator[ClipResult]:
        return backfill(self.app, paths, force=force, debug=self.debug,
                        before_cluster=self.before_cluster, on_windows=on_windows,
                        timing=self.timing, retry_failed=retry_failed, stop=stop)


def backfill(app: App, paths: Iterable[Path], *, force: bool = False, debug: bool = False,
             before_cluster: Callable[[], None] = lambda: None,
             on_windows: Callable[[int], None] | None = None,
             timing: Timing | None = None, retry_failed: RetryFailed = may_retry,
             stop: threading.Event | None = None) -> Iterator[ClipResult]:
    """One result per path, as `--once` gives (the same up-to-date rule, failures retried),
    streamed: a planner thread plans the paths as they are found (up to date, failed, or
    stored embeddings are tagged here at once), a Ray thread runs the rest on Ray in chunks
    (`run`) as they are planned, and each outcome is tagged here, on the calling thread, as it
    comes; it ends early once `stop` is set. Raises ClusterError when the cluster part cannot
    start or go on."""
    flow = _Flow(app, paths, force, debug, timing, retry_failed)
    try:
        yield from flow.results(before_cluster, on_windows, stop)
    finally:
        flow.close()


_END = object()  # the planner has planned every path


class _Flow:
    """One backfill's threads: the planner (walk → Engine.plan_many → sources, or outcomes
    for the tagging step) and the Ray thread (sources → chunks → `run` → outcomes), both
    stopped by `close`. Both queues are bounded: the walk waits for the cluster, never the
    other way round, and the driver holds PLAN_AHEAD sources and one chunk at most."""

    def __init__(self, app: App, paths: Iterable[Path], force: bool, debug: bool,
                 timing: Timing | None, retry_failed: RetryFailed = may_retry) -> None:
        self.app = app
        self.retry_failed = retry_failed
        self.paths = paths
        self.force = force
        self.debug = debug
        self.timing = timing
        self.stop = threading.Event()
        self.events: queue.Queue = queue.Queue(EVENTS)  # (kind, value) for the calling thread
        self.sources: queue.Queue = queue.Queue(PLAN_AHEAD)
        self.sizes: np.ndarray | None = None  # of stored clips, read at the first new file
        self.planner = threading.Thread(target=self._plan, name="autotag-backfill-plan",
                                        daemon=True)
        self.runner = threading.Thread(target=self._run, name="autotag-backfill-ray",
                                       daemon=True)

    def results(self, before_cluster: Callable[[], None],
                on_windows: Callable[[int], None] | None,
                stop: threading.Event | None = None) -> Iterator[ClipResult]:
        self.planner.start()
        planned = ran = False
        # "cluster", if it comes, comes before "planned": then the Ray thread's "ran" ends it
        while not (planned and (ran or not self._started)) \
                and not (stop is not None and stop.is_set()):
            kind, value = self.events.get()
            if kind == "outcome":
                if on_windows and value.windows:
                    on_windows(value.windows)
                yield self.app.tagger.result(value)
            elif kind == "cluster":  # the first clip to decode: Ray is joined here, once
                log.debug("clips to decode and embed on Ray: joining it")
                before_cluster()
                self.runner.start()
            elif kind == "planned":
                planned = True
            elif kind == "ran":
                ran = True
            else:  # "error": the planner's or the cluster's
                raise value

    @property
    def _started(self) -> bool:
        return self.runner.ident is not None

    def close(self) -> None:
        self.stop.set()
        for thread in (self.planner, self.runner):
            if thread.ident is not None:
                thread.join(STOP_SECONDS)
                if thread.is_alive():
                    log.debug("%s still waits for Ray; it ends with Ray", thread.name)

    # -- the planner thread -------------------------------------------------------------------

    def _plan(self) -> None:
        engine = self.app.engine
        asked = False
        try:
            for item in engine.plan_many(self.paths, fresh_many=self.app.rule.fresh_many,
                                         force=self.force, hash_if=self._maybe_copy,
                                         retry_failed=self.retry_failed):
                if isinstance(item, Outcome):
                    if not self._put(self.events, ("outcome", item)):
                        return
                    continue
                if not asked:
                    asked = True
                    if not self._put(self.events, ("cluster", None)):
                        return
                if not self._put(self.sources, item):
                    return
            self._put(self.sources, _END)
            self._put(self.events, ("planned", None))
        except Exception as exc:  # noqa: BLE001 - handed to the calling thread, raised there
            self._put(self.events, ("error", exc))

    def _maybe_copy(self, size: int) -> bool:
        """A file the store does not know is hashed on the driver only if stored content has
        its size (a copy): anything else is hashed by its decode task, which reads it anyway."""
        if self.sizes is None:
            self.sizes = self.app.store.sizes(self.app.engine.model)
        at = int(np.searchsorted(self.sizes, size))
        return at < len(self.sizes) and int(self.sizes[at]) == size

    def _put(self, where: queue.Queue, item) -> bool:
        """Put, waiting for room; False once the flow is stopped."""
        while not self.stop.is_set():
            try:
                where.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # -- the Ray thread -----------------------------------------------------------------------

    def _run(self) -> None:
        size, ended = FIRST_CHUNK, False
        try:
            while not ended and not self.stop.is_set():
                chunk, ended = self._take(size)
                if chunk:
                    log.debug("a dataset of %d clips on Ray", len(chunk))
                    for outcome_ in run(self.app.engine, chunk, self.app.config,
                                        debug=self.debug, timing=self.timing):
                        if not self._put(self.events, ("outcome", outcome_)):
                            return  # closing run() stops its dataset
                size = min(size * CHUNK_GROWTH, MAX_CHUNK)
            self._put(self.events, ("ran", None))
        except Exception as exc:  # noqa: BLE001 - ClusterError, or Ray's; raised by results
            self._put(self.events, ("error", exc))

    def _take(self, size: int) -> tuple[list[SourceInfo], bool]:
        """The next chunk: up to `size` sources, started with what is planned FILL_SECONDS
        after its first (a slow walk); True when the planner has ended."""
        chunk: list[SourceInfo] = []
        deadline = None
        while len(chunk) < size and not self.stop.is_set():
            wait = 0.2 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                item = self.sources.get(timeout=min(wait, 0.2))
            except queue.Empty:
                continue
            if item is _END:
                return chunk, True
            chunk.append(item)
            if deadline is None:
                deadline = time.monotonic() + FILL_SECONDS
        return chunk, False


def outcome(engine: Engine, row: dict, source: SourceInfo) -> Outcome:
    """A row back from the embed stage → the clip's outcome (saved to the store if embedded)."""
    if not source.sha256:  # hashed by its decode task
        source = dataclasses.replace(source, sha256=str(row["sha256"]))
    if row["error"]:
        return Outcome(source.path, FAILED, reason=str(row["error"]),
                       retryable=bool(row["retryable"]), size=source.size, mtime=source.mtime)
    if row["model"] != engine.model:
        return Outcome(source.path, FAILED, size=source.size, mtime=source.mtime,
                       reason=f"the model on {row['embedder']} is not the driver's (fingerprint "
                              f"{row['model']}, not {engine.model}); install the same model "
                              "on every node")
    windows = tuple(Window(float(s), float(e)) for s, e in np.asarray(row["windows"]))
    remote = Remote(float(row["duration"]), windows, np.asarray(row["thumbnails"], np.uint8))
    return engine.embedded(source, remote, np.asarray(row["embeddings"], np.float32))


def lost(source: SourceInfo) -> Outcome:
    return Outcome(source.path, FAILED, reason=LOST.format(retries=DECODE_RETRIES),
                   retryable=True, size=source.size, mtime=source.mtime)


def build_dataset(sources: list[SourceInfo], config: Config, resources: Resources,
                  debug: bool = False):
    """The Ray Data pipeline over these sources (lazy: nothing runs until it is iterated)."""
    import ray.data

    clips_per_call = max(1, config.model.batch_size // config.sampling.max_windows)
    # one row per block, one block per task: a worker that dies loses one clip
    ds = ray.data.from_items([source_row(s) for s in sources], override_num_blocks=len(sources))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args (gone in 2.64) without a named parameter for
        # task retries or actor restarts yet; the extra's range stops before 2.64
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(decode_stage, batch_size=1, num_cpus=DECODE_CPUS,
                            max_retries=DECODE_RETRIES,
                            fn_kwargs={"sampling": config.sampling, "debug": debug})
        return ds.map_batches(
            EmbedActor, batch_size=clips_per_call,
            fn_constructor_kwargs={"model": config.model, "threads": resources.threads},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.actors),
            num_gpus=resources.gpus, num_cpus=resources.cpus, memory=MODEL_MEMORY,
            max_restarts=-1, max_task_retries=EMBED_RETRIES)


def run(engine: Engine, sources: list[SourceInfo], config: Config, *, debug: bool = False,
        on_windows: Callable[[int], None] | None = None,
        timing: Timing | None = None) -> Iterator[Outcome]:
    """Decode and embed `sources` on the connected Ray cluster; one outcome per source, as
    each clip comes back (saved to the store as it comes: a run stopped early keeps them).
    A dataset cut short by a lost node (`_attempt`) runs again for the clips not back yet, up
    to DECODE_RETRIES times; a clip still not back is LOST, for the next run to try again.
    Raises ClusterError when the run cannot go on (the model actors cannot start)."""
    import ray
    import ray.data

    if not sources:
        return
    by_path = {str(s.path): s for s in sources}
    context = ray.data.DataContext.get_current()  # this process's; set for this run only
    saved = {key: getattr(context, key) for key in RUN_CONTEXT}
    for key, value in RUN_CONTEXT.items():
        setattr(context, key, value)
    try:
        for _ in range(1 + DECODE_RETRIES):
            # the nodes left decide the actors: a lost node's actor would wait for room
            resources = plan_resources(ray.nodes(), config.model.threads)
            log.debug("model actors: up to %d, %d GPU, %s CPU, %d threads each",
                      resources.actors, resources.gpus, resources.cpus, resources.threads)
            complete = yield from _attempt(engine, by_path, config, resources, debug=debug,
                                           on_windows=on_windows, timing=timing)
            if complete or not by_path:
                break
            log.debug("a node was lost: %d clips on Ray again", len(by_path))
    finally:
        for key, value in saved.items():
            setattr(context, key, value)
    for source in by_path.values():  # rows that never came back: their task was lost
        yield lost(source)


def _attempt(engine: Engine, by_path: dict[str, SourceInfo], config: Config,
             resources: Resources, *, debug: bool, on_windows: Callable[[int], None] | None,
             timing: Timing | None) -> Iterator[Outcome]:
    """One dataset over the clips in `by_path`, each popped as its row comes back (a row
    for a clip already popped, from a task retried after its first result, is ignored).
    Returns False when the dataset was cut short by a lost object: an embedded row whose only
    copy was on a lost node, which Ray cannot rebuild (the actor's tasks are not retried)."""
    rows = iter(build_dataset(list(by_path.values()), config, resources, debug).iter_rows())
    try:
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return True
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all end the run
                if _lost_object(exc):
                    log.debug("a row was lost with its node: %s", exc)
                    return False
                raise ClusterError(_failure(exc)) from None
            source = by_path.pop(str(row["path"]), None)
            if source is None:  # a task retried after its first result came back
                continue
            if timing is not None:
                timing.decode += float(row["decode_seconds"])
                timing.embed += float(row["embed_seconds"])
                timing.clips += 1
            log.debug("%s: decoded on %s in %.2f s, embedded on %s in %.2f s", source.path,
                      row["decoder"], row["decode_seconds"], row["embedder"],
                      row["embed_seconds"])
            result = outcome(engine, row, source)
            if on_windows and result.windows:
                on_windows(result.windows)
            yield result
    finally:
        close = getattr(rows, "close", None)
        if close:
            close()  # stops the streaming executor (Ctrl-C, or the consumer stopped)
        # A dataset whose task failed (a lost node) keeps its model actors alive through
        # reference cycles until Python's collector runs: on full nodes the next chunk's actors
        # found no room, and the run hung (issue 22)
        gc.collect()


def _lost_object(exc: BaseException | None) -> bool:
    """The error (or one it came from) is Ray's ObjectLostError: a lost node's object."""
    import ray.exceptions

    while exc is not None:
        if isinstance(exc, ray.exceptions.ObjectLostError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failure(exc: BaseException) -> str:
    """Ray's error (a remote traceback) → one line: the model's own error if it is one (the
    actors could not load the model), else the error's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    model = [line.split("ModelError:", 1)[1].strip() for line in lines if "ModelError:" in line]
    reason = model[-1] if model else lines[-1] if lines else type(exc).__name__
    return f"the cluster run failed: {reason[:300]}"


# -- connecting --------------------------------------------------------------------------------

def connect(address: str | None, *, debug: bool = False, num_cpus: int | None = None,
            object_store_memory: int | None = None) -> bool:
    """Connect to Ray: `address` (host:port or ray://host:10001), else RAY_ADDRESS, else a
    Ray started here for the run; or the Ray this process has already started (tests, a
    notebook). True if this call started or joined it (the caller shuts it down)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ClusterError(f"autotag backfill needs Ray: {INSTALL_HINT}") from None
    quiet_ray(debug)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict = {"log_to_driver": debug,
                     "logging_level": logging.INFO if debug else logging.ERROR}
    if address is None:
        # a Ray of our own, for this run: no dashboard, no usage report over the network
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options.update(num_cpus=num_cpus or max(MIN_NODE_CPUS, _cores()),
                       include_dashboard=False, object_store_memory=object_store_memory)
    try:
        with native_stderr_quiet(not debug):  # Ray's C++ start-up lines
            # "local": a Ray of our own even when `ray start` runs here (ray.init would join
            # the latest one, and refuse num_cpus); --address or RAY_ADDRESS joins one
            ray.init(address=address or "local", **options)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot start or reach {where}: {first[:200]}; start one with "
                           "'ray start --head', or name it with --address (with "
                           "RAY_AUTH_MODE=token, set RAY_AUTH_TOKEN too)") from None
    quiet_ray(debug)  # ray.init set its loggers' levels again
    return True


def quiet_ray(debug: bool) -> None:
    """Ray's console output (executor plans, progress, worker lines) only with --debug; Ray
    Data keeps its full log in the session folder (/tmp/ray/session_latest/logs)."""
    level = logging.INFO if debug else logging.CRITICAL  # Ray's DEBUG is its internals
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    if debug:
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core worker's lines
    # The raylet's messages ("A worker died ...", "Task ... will be retried") are printed to
    # the driver's stdout whatever log_to_driver says (ray._private.worker's error listener);
    # the clip they concern is reported by name, so they go to the debug log instead.
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # a Ray whose internals moved: its lines stay on the console
        return
    if hasattr(ray_worker, "print_to_stdstream"):
        ray_worker.print_to_stdstream = _raylet_message


def _raylet_message(data: dict, ignore_prefix: bool = False) -> None:
    log.debug("ray (%s): %s", data.get("pid"), " ".join(map(str, data.get("lines", ()))))


def shutdown() -> None:
    import ray

    ray.shutdown()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
