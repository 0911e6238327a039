"""Paths → stat → up to date? → hash / stored embeddings → decode → embed (batched) → outcomes.

The embedding engine: the one place where decoding and the video model are chained. `--once`,
the daemon, `eval`, `calibrate` (and a cluster backfill) all take their embedded clips from
`Engine.embed`, a generator that yields one `Outcome` per path it was given, as each clip is
done, and keeps nothing of a clip once it is yielded (the daemon runs for months).

Decoding runs in `sampling.decode_workers` threads (the decoder and hashlib release the GIL) and
overlaps the model, which runs on the consuming thread with batches of `model.batch_size` windows
drawn from several clips. A partial batch runs when a condition says every worker is waiting for
a path (nothing left to batch with), never after a polling sleep, so an idle engine sleeps.

Every clip is isolated: whatever goes wrong with one (it cannot be read or decoded, the model fails
on it) is one FAILED outcome with a reason, and the engine goes on. The engine reads the store
(hashes, stored embeddings, failures) and saves new embeddings to it; what a clip's outcome means
for its tags, outputs and file record is the tagging step's business (tagging.py).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from autotag import media
from autotag.clip import Embedded, SourceInfo
from autotag.config import Config, SamplingConfig
from autotag.embedder import Embedder, ModelError
from autotag.errors import AutotagError
from autotag.files import Edge
from autotag.media import pictures
from autotag.opener import NotServable, Source
from autotag.store import FileRecord, Store, Version

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # decoded and embedded now
STORED = "stored"  # the same content's embeddings were in the store: no decoding, no model call
SKIPPED = "skipped"  # up to date, failed before, or already in flight
FAILED = "failed"

READY_OUTCOMES = 256  # outcomes waiting for the consumer: bounds memory on an up-to-date pass
PLAN_BATCH = 500  # paths stat'ed and looked up in the store together by plan_many

Fresh = Callable[[Path, os.stat_result], bool]  # this version of the file needs no work
RetryFailed = bool | Callable[[FileRecord], bool]  # try again a version that failed before?


class SampledInfo(Protocol):
    """What of a decoded clip outlives its frames (media.Sampled has it; so may a record of
    a clip decoded elsewhere, on a cluster worker)."""

    duration: float
    windows: tuple
    thumbnails: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """What the engine made of one path: an embedded clip, or why there is none."""

    path: Path
    status: str  # EMBEDDED | STORED | SKIPPED | FAILED
    clip: Embedded | None = None  # EMBEDDED and STORED
    reason: str | None = None  # SKIPPED and FAILED
    retryable: bool = False  # a decode failure that may be a file still being copied
    size: int | None = None  # the failed version (bytes, st_mtime); None: not recordable
    mtime: float | None = None

    @property
    def windows(self) -> int:
        """Windows the model embedded for this clip (none for stored embeddings)."""
        return len(self.clip.windows) if self.status == EMBEDDED and self.clip else 0


class Engine:
    """Embeds clips with `embedder`, reusing and saving embeddings in `store`.

    A path is processed by one run at a time, and its claim lasts until its outcome has been
    handled (the consumer asked for the next one): the daemon may queue a path twice, and the
    second request then finds the outputs and store record of the first (issue 23). Each app
    has its engine: a reload builds a new one.
    """

    def __init__(self, config: Config, embedder: Embedder, store: Store) -> None:
        self.config = config
        self.embedder = embedder
        self.store = store
        self.model = embedder.fingerprint
        self._in_flight: set[Path] = set()
        self._in_flight_lock = threading.Lock()
        # where the library ends (files.Edge), set by whoever pointed autotag at it (the pass
        # of --once, the daemon): then a clip is decoded from a descriptor opened below its
        # root through no symlink, never from a path swapped meanwhile. None: by path.
        self.edge: Edge | None = None

    def embed(self, paths: Iterable[Path | Outcome], *, fresh: Fresh | None = None, force: bool = False,
              retry_failed: RetryFailed = True, stop: threading.Event | None = None,
              on_windows: Callable[[int], None] | None = None) -> Iterator[Outcome]:
        """One outcome per path of `paths` (consumed lazily: it may block, as the daemon's
        queue does, and must end once `stop` is set). An Outcome among them is a path planned
        already (the up-to-date pass, tagging.fresh_pass) and is handed on as it is.

        fresh(path, stat): this version needs no work (SKIPPED "up to date"); force: ignore
        `fresh` and stored embeddings, decode and embed again (sampling settings may have
        changed). retry_failed: False skips an unchanged version that failed before; a
        predicate decides from its file record. on_windows(n): n more windows embedded.
        Closing the generator early stops the workers and sets `stop`.
        """
        run = _Run(self, iter(paths), stop or threading.Event(), fresh, force, retry_failed,
                   on_windows)
        return run.outcomes()

    def plan(self, path: Path, *, fresh: Fresh | None = None, force: bool = False,
             retry_failed: RetryFailed = True) -> SourceInfo | Outcome:
        """The stages before decoding, for one path: stat, the up-to-date rule, a version
        that failed before, the content hash (the store's, if it knows this version) and
        stored embeddings of the same content. Returns the source to decode, or the clip's
        outcome. A cluster driver plans with this too."""
        try:
            st = path.stat()
        except OSError as exc:
            return Outcome(path, FAILED, reason=f"cannot read: {exc.strerror or exc}")
        if not stat.S_ISREG(st.st_mode):
            return Outcome(path, FAILED, reason="not a regular file")
        if not force and fresh is not None and fresh(path, st):
            return Outcome(path, SKIPPED, reason="up to date")
        return self._plan_version(path, st, self.store.file(path), force, retry_failed,
                                  lambda p, _: hash_file(p))

    def plan_many(self, paths: Iterable[Path], *,
                  fresh_many: Callable[[list, dict], list[bool]] | None = None,
                  force: bool = False, hash_if: Callable[[int], bool] = lambda _: True,
                  batch: int | None = None, retry_failed: RetryFailed = True
                  ) -> Iterator[SourceInfo | Outcome]:
        """`plan` for a stream of paths, `batch` at a time (a stat each, one store query for
        the batch, fresh_many(items, versions) for the up-to-date rule; `batch` defaults to
        PLAN_BATCH; both rules are passes.UpToDate's, handed in): nothing is kept beyond a
        batch. A file whose hash the store does not know is hashed here only when
        hash_if(size) (it may be a copy of stored content); otherwise it is planned with an
        empty sha256, for whoever decodes it to hash (a cluster's decode task reads it anyway)."""
        paths, size, batch = iter(paths), 1, batch or PLAN_BATCH
        # batches of 1, 2, 4, ... `batch`: the first path is planned as soon as it is found
        # (a slow walk on a NAS), later ones share their store queries
        while chunk := list(itertools.islice(paths, size)):
            size = min(2 * size, batch)
            items: list[tuple[Path, os.stat_result]] = []
            for path in map(Path, chunk):
                try:
                    st = path.stat()
                except OSError as exc:
                    yield Outcome(path, FAILED, reason=f"cannot read: {exc.strerror or exc}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    yield Outcome(path, FAILED, reason="not a regular file")
                    continue
                items.append((path, st))
            versions = self.store.versions([str(p) for p, _ in items])
            fresh = (fresh_many(items, versions) if fresh_many is not None and not force
                     else [False] * len(items))
            for (path, st), up_to_date in zip(items, fresh, strict=True):
                if up_to_date:
                    yield Outcome(path, SKIPPED, reason="up to date")
                    continue
                yield self._plan_version(
                    path, st, versions.get(str(path)), force, retry_failed,
                    lambda p, size: hash_file(p) if hash_if(size) and not force else "")

    def _plan_version(self, path: Path, st: os.stat_result, record: FileRecord | Version | None,
                      force: bool, retry_failed: RetryFailed,
                      hasher: Callable[[Path, int], str]) -> SourceInfo | Outcome:
        """plan, past the up-to-date rule: a version that failed before, the content hash (the
        store's, if it knows this version, else hasher(path, size); "" for unknown) and stored
        embeddings of the same content."""
        same = record is not None and record.matches(st.st_size, st.st_mtime)
        retry = retry_failed(record) if callable(retry_failed) and same else retry_failed
        if same and record.status == "failed" and not force and not retry:
            return Outcome(path, SKIPPED, reason=f"failed before: {record.last_error}")
        try:
            sha = record.sha256 if same and record.sha256 else hasher(path, st.st_size)
        except OSError as exc:
            return Outcome(path, FAILED, reason=f"cannot read: {exc.strerror or exc}",
                           retryable=True, size=st.st_size, mtime=st.st_mtime)
        source = SourceInfo(path, st.st_size, st.st_mtime, sha)
        # --force decodes again (sampling settings may have changed); otherwise the same
        # content under another name, or a re-run, reuses its stored embeddings
        stored = None if force or not sha else self.store.load_embedded(source, self.model)
        return source if stored is None else Outcome(path, STORED, stored)

    def embedded(self, source: SourceInfo, sampled: media.Sampled | SampledInfo,
                 embeddings: np.ndarray) -> Outcome:
        """A clip whose windows are all embedded: saved to the store, as its outcome."""
        clip = Embedded(source, sampled.duration, sampled.windows, embeddings,
                        sampled.thumbnails)
        try:
            self.store.save_embedded(clip, self.model)
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("saving %s", source.path, exc_info=True)
            return Outcome(source.path, FAILED, reason=f"cannot store its embeddings: {exc}")
        return Outcome(source.path, EMBEDDED, clip)

    def claim(self, path: Path) -> bool:
        with self._in_flight_lock:
            if path in self._in_flight:
                return False
            self._in_flight.add(path)
            return True

    def release(self, path: Path) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(path)


@dataclass(eq=False)  # identity semantics: a job is batched window by window
class _Job:
    """A decoded clip waiting for its windows to be embedded."""

    source: SourceInfo
    sampled: media.Sampled
    embeddings: np.ndarray = field(init=False)  # float32 [n_windows, 512], filled per batch
    done: int = 0
    failed: str | None = None

    def __post_init__(self) -> None:
        self.embeddings = np.zeros((len(self.sampled.windows), 0), np.float32)


class _Run:
    """One call of Engine.embed: the worker threads, the model loop and the state they share
    (guarded by `cond`, never held while decoding, embedding or waiting for a path)."""

    def __init__(self, engine: Engine, source: Iterator[Path], stop: threading.Event,
                 fresh: Fresh | None, force: bool, retry_failed: RetryFailed,
                 on_windows: Callable[[int], None] | None) -> None:
        self.engine = engine
        self.config = engine.config
        self.source = source
        self.stop = stop
        self.fresh = fresh
        self.force = force
        self.retry_failed = retry_failed
        self.on_windows = on_windows
        workers = self.config.sampling.decode_workers
        self.max_decoded = workers  # decoded clips waiting for the model: bounds memory
        self.cond = threading.Condition()
        # decoded jobs, and outcomes with whether this run holds their path's claim
        self.ready: collections.deque[_Job | tuple[Outcome, bool]] = collections.deque()
        self.decoded = 0  # _Jobs in `ready`
        self.waiting = 0  # workers waiting for the source to give a path
        self.live = workers
        self.halt = False  # the model loop ended: workers stop
        self.held: set[Path] = set()  # paths this run claimed whose outcome is not handled yet
        self.source_lock = threading.Lock()  # next(source) may block (the daemon's queue)
        self.threads = [threading.Thread(target=self._worker, name=f"autotag-decode-{i}",
                                         daemon=True) for i in range(workers)]

    # -- the model loop (the consuming thread) ---------------------------------------------

    def outcomes(self) -> Iterator[Outcome]:
        for t in self.threads:
            t.start()
        pending: list[tuple[_Job, int]] = []  # (job, window index) not yet embedded
        batch_size = self.config.model.batch_size
        try:
            while True:
                with self.cond:
                    # Something to take, or every worker waits for a path (so nothing will
                    # join a partial batch), or every worker has ended.
                    self.cond.wait_for(lambda: self.ready or (
                        self.waiting == self.live and (pending or not self.live)))
                    items, self.ready = self.ready, collections.deque()
                    self.decoded = 0
                    self.cond.notify_all()
                    idle = not items and self.waiting == self.live
                    ended = not items and not self.live
                for item in items:
                    if isinstance(item, _Job):
                        pending.extend((item, i) for i in range(len(item.sampled.windows)))
                    else:
                        yield from self._hand_out(*item)
                del items
                while len(pending) >= batch_size:
                    batch, pending = pending[:batch_size], pending[batch_size:]
                    yield from self._embed(batch)
                if idle and pending:
                    batch, pending = pending, []
                    yield from self._embed(batch)
                if ended and not pending:
                    return
        finally:
            self.stop.set()  # the source ends once stop is set: no worker blocks on it for ever
            with self.cond:
                self.halt = True
                self.cond.notify_all()
            for t in self.threads:
                t.join()
            for path in self.held:  # a run closed early: the paths it claimed are free again
                self.engine.release(path)

    def _embed(self, items: list[tuple[_Job, int]]) -> Iterator[Outcome]:
        """Run the model on these windows (a failing call isolates its culprit clip); yields
        the clips whose windows are now all embedded."""
        results = embed_isolated(self.engine.embedder, [job for job, _ in items],
                                 [job.sampled.frames[i] for job, i in items])
        embedded = 0
        for (job, i), result in zip(items, results, strict=True):
            job.done += 1
            if isinstance(result, str):
                job.failed = job.failed or result
                continue
            if job.embeddings.shape[1] == 0:
                job.embeddings = np.zeros((len(job.sampled.windows), result.shape[0]),
                                          np.float32)
            job.embeddings[i] = result
            embedded += 1
        if embedded and self.on_windows:
            self.on_windows(embedded)
        for job in dict.fromkeys(job for job, _ in items):
            if job.done == len(job.sampled.windows):
                yield from self._hand_out(self._finish(job), owned=True)

    def _hand_out(self, outcome: Outcome, owned: bool) -> Iterator[Outcome]:
        """Yield one outcome; the run's claim on its path (owned) ends only when the consumer
        asks for the next one, so after it has written the clip's outputs and store record.
        Released at the yield, a second request for the path (a rename's moved and closed
        events) found neither a claim nor a sidecar yet, and the clip was tagged twice."""
        try:
            yield outcome
        finally:
            if owned:
                self._release(outcome.path)

    def _finish(self, job: _Job) -> Outcome:
        source = job.source
        if job.failed:
            return Outcome(source.path, FAILED, reason=job.failed, size=source.size,
                           mtime=source.mtime)
        return self.engine.embedded(source, job.sampled, job.embeddings)

    # -- workers ----------------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            while (path := self._next_path()) is not None:
                item = self._prepare(path)
                if item is None:
                    return  # the run halted while the path waited its turn
                with self.cond:
                    if isinstance(item, _Job):
                        self.cond.wait_for(lambda: self.decoded < self.max_decoded or self.halt)
                        if self.halt:
                            return  # its claim is released with the run's
                        self.decoded += 1
                    else:  # outcomes too: a million up-to-date clips outran their reporting
                        self.cond.wait_for(lambda: len(self.ready) < READY_OUTCOMES
                                           or self.halt)
                        if self.halt:
                            return
                    self.ready.append(item)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.live -= 1
                self.cond.notify_all()

    def _next_path(self) -> Path | Outcome | None:
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
        try:
            with self.source_lock:
                if self.stop.is_set() or self.halt:
                    return None
                path = next(self.source, None)
                return path if path is None or isinstance(path, Outcome) else Path(path)
        finally:
            with self.cond:
                self.waiting -= 1

    def _prepare(self, path: Path | Outcome) -> _Job | tuple[Outcome, bool] | None:
        """Claim, stat, check, hash and decode one clip: a decoded job, or the clip's outcome
        (with whether this run holds its claim); None when the run halted meanwhile."""
        if isinstance(path, Outcome):  # planned by the caller (up to date): nothing to claim
            return path, False
        claimed = self._claim(path)
        if claimed is None:
            return None
        if not claimed:
            return Outcome(path, SKIPPED, reason="already being processed"), False
        try:
            item = self._prepare_claimed(path)
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("preparing %s", path, exc_info=True)
            item = Outcome(path, FAILED, reason=f"internal error: {type(exc).__name__}: {exc}")
        return item if isinstance(item, _Job) else (item, True)

    def _claim(self, path: Path) -> bool | None:
        """Claim `path` for this run. A path this run is on already waits its turn, until its
        outcome is handled, and is then looked at afresh (up to date, most often; or a newer
        version): every request gets an outcome, and no two overlap. The waiting worker counts
        as waiting, so the model loop runs a partial batch that may hold the path's own
        windows. False: another run holds it; None: this run halted while it waited."""
        with self.cond:
            if path in self.held:
                self.waiting += 1
                self.cond.notify_all()
                try:
                    self.cond.wait_for(lambda: path not in self.held or self.halt)
                finally:
                    self.waiting -= 1
                if self.halt:
                    return None
            if not self.engine.claim(path):
                return False
            self.held.add(path)
            return True

    def _release(self, path: Path) -> None:
        """This run is done with `path` (its outcome is handled): another may claim it."""
        with self.cond:
            self.held.discard(path)
            self.engine.release(path)
            self.cond.notify_all()

    def _prepare_claimed(self, path: Path) -> _Job | Outcome:
        planned = self.engine.plan(path, fresh=self.fresh, force=self.force,
                                   retry_failed=self.retry_failed)
        if isinstance(planned, Outcome):
            return planned
        try:
            return _Job(planned, decode(planned, self.config.sampling, self.engine.edge))
        except (media.DecodeError, OSError) as exc:
            return decode_failure(planned, exc)


class ModelFailure(AutotagError):
    """One model call failed (an exception, or NaN/infinite embeddings); one line."""


def model_input(windows: Sequence[np.ndarray]) -> np.ndarray:
    """Windows uint8 [32, 224, 224, 3] each → the model's batch, float32 [B, 32, 224, 224, 3]
    in [0, 1]: stacked as uint8 and converted once (a float32 window is 19 MB)."""
    return pictures.to_model_input(np.stack(windows))


def embed_windows(embedder: Embedder, windows: Sequence[np.ndarray]) -> np.ndarray:
    """One model call on these windows → float32 [B, 512]. ModelFailure when the call raises
    or returns NaN; ModelError (a model that cannot load) is a startup error and propagates."""
    try:
        vectors = embedder.embed_video(model_input(windows))
    except ModelError:
        raise
    except Exception as exc:  # TensorFlow raises many kinds; all mean "this call failed"
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelFailure(f"the model failed: {type(exc).__name__}: {first}"[:300]) from exc
    if vectors.shape[0] != len(windows) or not np.isfinite(vectors).all():
        raise ModelFailure("the model returned NaN or infinite embeddings")
    return vectors


def embed_isolated(embedder: Embedder, owners: Sequence[Hashable],
                   windows: Sequence[np.ndarray]) -> list[np.ndarray | str]:
    """Windows of several clips in one model call → per window its float32 [512] embedding,
    or the reason its clip failed: a failing call is tried again clip by clip (`owners` says
    whose each window is), so only the culprit fails. The engine batches with it, and so do a
    cluster's model actors."""
    try:
        return list(embed_windows(embedder, windows))
    except ModelFailure as exc:
        clips = list(dict.fromkeys(owners))
        if len(clips) == 1:
            return [str(exc)] * len(windows)
    out: list[np.ndarray | str] = [""] * len(windows)
    for clip in clips:  # one call per clip
        mine = [i for i, owner in enumerate(owners) if owner == clip]
        for i, result in zip(mine, embed_isolated(embedder, [clip] * len(mine),
                                                  [windows[i] for i in mine]), strict=True):
            out[i] = result
    return out


def decode(source: SourceInfo, sampling: SamplingConfig, edge: Edge | None = None
           ) -> media.Sampled:
    """The decode stage: a planned clip's windows (media.sample_clip), refused when the file
    changed since it was planned. Raises media.DecodeError or OSError (see decode_failure).
    With the library's edge, the file is opened once below its root through no symlink and
    checked (opener.Source), and FFmpeg reads that very file through /proc/self/fd: a symlink
    swapped in meanwhile cannot make it tag, and store thumbnails of, a video outside."""
    if edge is None:
        sampled = _sample(source.path, sampling)
    else:
        try:
            opened = Source.of(source.path, source.size, source.mtime, edge).open()
        except NotServable as exc:
            raise media.DecodeError(str(exc)) from None
        with opened:
            sampled = _sample(Path(f"/proc/self/fd/{opened.fd}"), sampling, source.path)
    check_unchanged(source)
    return sampled


def _sample(path: Path, sampling: SamplingConfig, shown: Path | None = None) -> media.Sampled:
    return media.sample_clip(path, sampling.max_windows, sampling.max_pixels,
                             timeout=sampling.decode_timeout,
                             skip_nonref=sampling.skip_nonref_frames, shown=shown,
                             reference_only=sampling.reference_frames_only)


def decode_failure(source: SourceInfo, exc: Exception) -> Outcome:
    """A failed decode as the clip's outcome: retryable (the file may still be arriving)."""
    reason = (f"cannot read: {exc.strerror or exc}" if isinstance(exc, OSError)
              else str(exc))
    return Outcome(source.path, FAILED, reason=reason, retryable=True, size=source.size,
                   mtime=source.mtime)


def hash_file(path: Path) -> str:
    """SHA-256 of the whole file, streamed (hashlib releases the GIL on large reads): the
    content key of stored embeddings, so a copy or a rename is recognised."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_unchanged(source: SourceInfo) -> None:
    """A file replaced or rewritten while it was read gives windows of two versions: refuse.
    (Size and mtime, as the up-to-date rule and the store know a version by them.)"""
    after = source.path.stat()
    if (after.st_size, after.st_mtime) != (source.size, source.mtime):
        raise media.DecodeError("the file changed while it was being read; it will be retried")
