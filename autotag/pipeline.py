"""Paths → (workers) stat, hash, decode windows → (model loop) batched embeddings → tags → outputs.

The one place the stages are chained. Decoding runs in `sampling.decode_workers` threads (OpenCV
and hashlib release the GIL) and overlaps the model, which runs on the calling thread with
batches of `model.batch_size` windows drawn from several clips. A partial batch is run only when
no worker is decoding and nothing is queued, so batches are full whenever there is work.

Every clip is isolated: whatever goes wrong with one (it cannot be read, the model fails on it,
an output cannot be written) is one `ClipResult` with a reason, and the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotag import media
from autotag.clip import Embedded, SourceInfo, Tag, Tagged
from autotag.config import Config
from autotag.model import Embedder
from autotag.outputs import OutputSet, read_sidecar, sidecar_path
from autotag.scoring import tag_scores, window_scores
from autotag.store import Store
from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

IDLE_POLL = 0.05  # seconds the model loop waits for decoded work before checking for a flush


@dataclass(frozen=True)
class ClipResult:
    """What became of one clip."""

    path: Path
    status: str  # "tagged" | "reused" (stored embeddings, no model call) | "skipped" | "failed"
    reason: str | None = None
    retryable: bool = False  # a decode failure that may be a file still being copied
    tags: tuple[Tag, ...] = ()
    windows: int = 0  # windows the model embedded for this clip


class Tagger:
    """Embedded clip → scores against the vocabulary → outputs → state store.

    Shared by the pipeline and by `retag`, which feeds it stored embeddings.
    """

    def __init__(self, config: Config, vocabulary: Vocabulary, outputs: OutputSet, store: Store,
                 model: str) -> None:
        self.config = config
        self.vocabulary = vocabulary
        self.outputs = outputs
        self.store = store
        self.model = model

    def tag(self, clip: Embedded) -> Tagged:
        scores = window_scores(clip.embeddings, self.vocabulary.vectors)
        tags, ranking = tag_scores(scores, clip.windows, self.vocabulary.labels,
                                   self.config.tagging)
        return Tagged(clip, self.model, self.vocabulary.fingerprint, tags, ranking)

    def finish(self, clip: Embedded, status: str, windows: int = 0) -> ClipResult:
        """Tag, write every output, record it; a failed output fails the clip (others written)."""
        tagged, errors = self.outputs.write_all(self.tag(clip))
        path = clip.source.path
        if errors:
            reason = "; ".join(errors)
            self.store.record_failure(path, clip.source.size, clip.source.mtime, reason)
            return ClipResult(path, "failed", reason, windows=windows)
        self.store.record_tagged(clip.source, self.model, self.vocabulary.fingerprint)
        return ClipResult(path, status, tags=tagged.tags, windows=windows)

    def is_up_to_date(self, path: Path, st: os.stat_result) -> bool:
        return up_to_date(path, st, self.config, self.store, self.model,
                          self.vocabulary.fingerprint)


def up_to_date(path: Path, st: os.stat_result, config: Config, store: Store, model: str,
               vocabulary: str) -> bool:
    """The sidecar (or, without sidecars, the store) says this version of the file is tagged
    already with this model and vocabulary, and the store does not record it as failed. Needs
    no model: fingerprints are hashes of names."""
    record = store.file(path)
    if record and record.status == "failed" and record.matches(st.st_size, st.st_mtime):
        return False  # its sidecar may be written while another output failed (a bad XMP)
    if config.outputs.sidecars:
        sidecar = read_sidecar(sidecar_path(path, config.outputs)) or {}
        source = sidecar.get("source") or {}
        return (source.get("size") == st.st_size and source.get("mtime") == st.st_mtime
                and sidecar.get("model") == model and sidecar.get("vocabulary") == vocabulary)
    return bool(record and record.status == "tagged" and record.matches(st.st_size, st.st_mtime)
                and record.model == model and record.vocabulary == vocabulary)


@dataclass(eq=False)  # identity semantics: jobs are dict keys while their windows are batched
class _Job:
    """A decoded clip waiting for its windows to be embedded."""

    source: SourceInfo
    sampled: media.Sampled
    embeddings: np.ndarray = field(init=False)  # float32 [n_windows, 512], filled per batch
    done: int = 0
    failed: str | None = None

    def __post_init__(self) -> None:
        self.embeddings = np.zeros((len(self.sampled.windows), 0), np.float32)


class Pipeline:
    def __init__(self, config: Config, embedder: Embedder, tagger: Tagger, store: Store) -> None:
        self.config = config
        self.embedder = embedder
        self.tagger = tagger
        self.store = store
        self._emit_lock = threading.Lock()
        self._in_flight: set[Path] = set()
        self._in_flight_lock = threading.Lock()

    def run(self, source: Iterable[Path], *, force: bool = False,
            retry_failed: bool | Callable[[Path], bool] = True,
            stop: threading.Event | None = None,
            on_result: Callable[[ClipResult], None] | None = None,
            on_windows: Callable[[int], None] | None = None) -> list[ClipResult]:
        """Tag every clip `source` yields (lazily: it may block, and must end once `stop` is set).

        force: re-tag clips that are up to date, decoding and embedding them again (not from
        stored embeddings: `sampling` settings may have changed). retry_failed: False skips a file whose
        unchanged version failed before (the daemon's rescans); True tries it again; a
        predicate decides per path (the daemon's retries with backoff).
        Returns every clip's result, in the order they finished.
        """
        run = _Run(self, iter(source), stop or threading.Event(), force, retry_failed,
                   on_result, on_windows)
        return run.execute()


class _Run:
    """One call of Pipeline.run: the worker threads, the model loop and their shared state."""

    def __init__(self, pipeline: Pipeline, source: Iterator[Path], stop: threading.Event,
                 force: bool, retry_failed: bool | Callable[[Path], bool],
                 on_result: Callable[[ClipResult], None] | None,
                 on_windows: Callable[[int], None] | None) -> None:
        self.p = pipeline
        self.config = pipeline.config
        self.source = source
        self.stop = stop
        self.force = force
        self.retry_failed = retry_failed
        self.on_result = on_result
        self.on_windows = on_windows
        self.results: list[ClipResult] = []
        workers = self.config.sampling.decode_workers
        self.jobs: queue.Queue[_Job] = queue.Queue(maxsize=workers)  # bounds decoded memory
        self.lock = threading.Lock()  # guards waiting and live; never held while blocking
        self.source_lock = threading.Lock()  # next(source) may block (the daemon's queue)
        self.halt = threading.Event()  # the model loop ended: workers stop taking paths
        self.waiting = 0  # workers waiting for the source to give a path
        self.live = workers
        self.threads = [threading.Thread(target=self._worker, name=f"autotag-decode-{i}",
                                         daemon=True) for i in range(workers)]

    # -- the model loop (calling thread) ------------------------------------------------------

    def execute(self) -> list[ClipResult]:
        for t in self.threads:
            t.start()
        try:
            self._model_loop()
        finally:
            self.halt.set()
            while any(t.is_alive() for t in self.threads):
                try:  # a worker blocked on a full queue after an abort must not hang the join
                    self._release(self.jobs.get_nowait().source.path)
                except queue.Empty:
                    pass
                for t in self.threads:
                    t.join(timeout=IDLE_POLL)
        return self.results

    def _model_loop(self) -> None:
        batch_size = self.config.model.batch_size
        pending: list[tuple[_Job, int]] = []  # (job, window index) not yet embedded
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_POLL if pending or self._workers_live() else 0)
                pending.extend((job, i) for i in range(len(job.sampled.windows)))
            except queue.Empty:
                job = None
            while len(pending) >= batch_size:
                self._embed(pending[:batch_size])
                del pending[:batch_size]
            if job is None and pending and self._idle():
                self._embed(pending)
                pending.clear()
            if job is None and not pending and not self._workers_live() and self.jobs.empty():
                return

    def _idle(self) -> bool:
        """Every live worker is waiting for a path and nothing decoded is queued, twice in a row
        (IDLE_POLL apart, so a worker between two clips does not count): a partial batch may run."""
        for attempt in range(2):
            with self.lock:
                if self.waiting < self.live or not self.jobs.empty():
                    return False
            if attempt == 0:
                time.sleep(IDLE_POLL)
        return True

    def _workers_live(self) -> bool:
        with self.lock:
            return self.live > 0

    def _embed(self, items: list[tuple[_Job, int]]) -> None:
        """Run the model on these windows; on an exception or a NaN, isolate the culprit clip."""
        jobs = list(dict.fromkeys(job for job, _ in items))
        try:
            vectors = self._call_model(items)
        except _ModelFailure as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._embed([(j, i) for j, i in items if j is job])
                return
            jobs[0].failed = str(exc)
            vectors = None
        if vectors is not None:
            for (job, i), vector in zip(items, vectors, strict=True):
                if job.embeddings.shape[1] == 0:
                    job.embeddings = np.zeros((len(job.sampled.windows), vector.shape[0]),
                                              np.float32)
                job.embeddings[i] = vector
            if self.on_windows:
                self.on_windows(len(items))
        for job, _ in items:
            job.done += 1
        for job in jobs:
            if job.done == len(job.sampled.windows):
                self._finish(job)

    def _call_model(self, items: list[tuple[_Job, int]]) -> np.ndarray:
        frames = np.stack([media.to_model_input(job.sampled.frames[i]) for job, i in items])
        try:
            vectors = self.p.embedder.embed_video(frames)
        except Exception as exc:  # TensorFlow raises many kinds; all mean "this call failed"
            raise _ModelFailure(f"the model failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}"[:300]) from exc
        if vectors.shape[0] != len(items) or not np.isfinite(vectors).all():
            raise _ModelFailure("the model returned NaN or infinite embeddings")
        return vectors

    def _finish(self, job: _Job) -> None:
        path = job.source.path
        try:
            if job.failed:
                self._fail(path, job.source.size, job.source.mtime, job.failed)
                return
            clip = Embedded(job.source, job.sampled.duration, job.sampled.windows,
                            job.embeddings, job.sampled.thumbnails)
            self.p.store.save_embedded(clip, self.p.tagger.model)
            self._emit(self.p.tagger.finish(clip, "tagged", windows=len(clip.windows)))
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("finishing %s", path, exc_info=True)
            self._emit(ClipResult(path, "failed", f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._release(path)

    # -- workers ----------------------------------------------------------------------------

    def _next_path(self) -> Path | None:
        with self.lock:
            self.waiting += 1
        try:
            with self.source_lock:
                if self.stop.is_set() or self.halt.is_set():
                    return None
                path = next(self.source, None)
                return None if path is None else Path(path)
        finally:
            with self.lock:
                self.waiting -= 1

    def _worker(self) -> None:
        try:
            while (path := self._next_path()) is not None:
                job = self._prepare(path)
                if job is not None:
                    self.jobs.put(job)
        finally:
            with self.lock:
                self.live -= 1

    def _prepare(self, path: Path) -> _Job | None:
        """Stat, check, hash and decode one clip; anything but a decoded job is emitted here."""
        if not self._claim(path):
            return None
        try:
            job = self._prepare_claimed(path)
        except Exception as exc:  # noqa: BLE001 - one clip's fault must not end the run
            log.debug("preparing %s", path, exc_info=True)
            self._emit(ClipResult(path, "failed", f"internal error: {type(exc).__name__}: {exc}"))
            job = None
        if job is None:
            self._release(path)
        return job

    def _prepare_claimed(self, path: Path) -> _Job | None:
        try:
            st = path.stat()
        except OSError as exc:
            self._emit(ClipResult(path, "failed", f"cannot read: {exc.strerror or exc}"))
            return None
        if not stat.S_ISREG(st.st_mode):
            self._emit(ClipResult(path, "failed", "not a regular file"))
            return None
        if not self.force and self.p.tagger.is_up_to_date(path, st):
            self._emit(ClipResult(path, "skipped", "up to date"))
            return None
        record = self.p.store.file(path)
        retry = self.retry_failed(path) if callable(self.retry_failed) else self.retry_failed
        if (not retry and not self.force and record and record.status == "failed"
                and record.matches(st.st_size, st.st_mtime)):
            self._emit(ClipResult(path, "skipped", f"failed before: {record.last_error}"))
            return None
        try:
            sha = (record.sha256 if record and record.sha256 and
                   record.matches(st.st_size, st.st_mtime) else hash_file(path))
            source = SourceInfo(path, st.st_size, st.st_mtime, sha)
            # --force decodes again (sampling settings may have changed); otherwise the same
            # content under another name, or a re-run, reuses its stored embeddings
            stored = None if self.force else self.p.store.load_embedded(source,
                                                                        self.p.tagger.model)
            if stored is not None:
                self._emit(self.p.tagger.finish(stored, "reused"))
                return None
            sampled = media.sample_clip(path, self.config.sampling.max_windows,
                                        self.config.sampling.max_pixels,
                                        timeout=self.config.sampling.decode_timeout,
                                        skip_nonref=self.config.sampling.skip_nonref_frames)
            _check_unchanged(path, st)
        except media.DecodeError as exc:
            self._fail(path, st.st_size, st.st_mtime, str(exc), retryable=True)
            return None
        except OSError as exc:
            self._fail(path, st.st_size, st.st_mtime, f"cannot read: {exc.strerror or exc}",
                       retryable=True)
            return None
        return _Job(source, sampled)

    def _claim(self, path: Path) -> bool:
        """A path is processed by one worker at a time (the daemon may queue it twice)."""
        with self.p._in_flight_lock:
            if path in self.p._in_flight:
                return False
            self.p._in_flight.add(path)
            return True

    def _release(self, path: Path) -> None:
        with self.p._in_flight_lock:
            self.p._in_flight.discard(path)

    # -- results ----------------------------------------------------------------------------

    def _fail(self, path: Path, size: int, mtime: float, reason: str,
              retryable: bool = False) -> None:
        self.p.store.record_failure(path, size, mtime, reason)
        self._emit(ClipResult(path, "failed", reason, retryable=retryable))

    def _emit(self, result: ClipResult) -> None:
        with self.p._emit_lock:
            self.results.append(result)
            if self.on_result:
                self.on_result(result)


class _ModelFailure(Exception):
    pass


def hash_file(path: Path) -> str:
    """SHA-256 of the whole file, streamed (hashlib releases the GIL on large reads)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    """A file replaced or rewritten while it was read gives windows of two versions: refuse."""
    after = path.stat()
    if (after.st_size, after.st_mtime, after.st_ino) != (before.st_size, before.st_mtime,
                                                          before.st_ino):
        raise media.DecodeError("the file changed while it was being read; it will be retried")
