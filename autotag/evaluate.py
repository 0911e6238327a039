"""Labelled folders → clips (stored embeddings, else decode + embed) → clip scores per prompt set
→ top-k accuracy, per-tag precision / recall / average precision, mAP, confusions.

DIR holds one subfolder per tag (DIR/skiing/*.mp4, the layout of UCF101 and HMDB51). A subfolder
matches a vocabulary tag by name, ignoring case, spaces, '_' and '-' (UCF101's "ApplyEyeMakeup"
and HMDB51's "brush_hair" match "apply eye makeup" and "brush hair"). A subfolder that matches no
tag is reported and its clips are left out: with no tag to be right about they have no accuracy,
and counting them only as negatives would mix two questions (see the README). A clip found in
several subfolders (by symlink, hard link or copy: the same content) is one clip with each of
those tags as a true label; its top-1 prediction is right when it is any of them.

Embeddings: each clip is embedded once. Stored embeddings (by content hash and model) are
reused; the others are decoded and embedded in batches across clips and saved to the state store,
so the next evaluation is instant and a later `autotag --once` reuses them. Nothing is written
beside the clips, and the files table (what was tagged) is not touched.

Everything after embedding is numpy on float32 [n_clips, n_tags] clip scores: each clip's mean
window embedding (its clip embedding) · each tag's vector, which is the mean of its window scores,
the clip score tagging uses (scoring.py), up to float rounding.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotag import media
from autotag.clip import Embedded, SourceInfo
from autotag.config import Config, TaggingConfig, VocabEntry, default_cache_dir
from autotag.files import absolute, find_clips, is_ignored_name
from autotag.model import Embedder
from autotag.scoring import window_scores
from autotag.store import Store
from autotag.vocabulary import embed_texts, normalise_prompt, text_cache

log = logging.getLogger(__name__)

TOP_K = 5  # top-k accuracy's k (capped at the vocabulary's size)
MAX_CONFUSIONS = 10  # confusion pairs listed, most costly first
BETTER_BY = 0.02  # AP by which one prompt must beat its ensemble to be pointed out
# Prompt templates for the "templates" prompt set: a tag's name in each, embeddings averaged.
# MIL-NCE learnt from narrated videos (HowTo100M), so plain descriptions of someone doing
# something suit it better than CLIP's "a photo of".
DEFAULT_TEMPLATES = ("{}", "a person {}", "someone {}", "people {}")
PROMPT_SETS = ("name", "configured", "templates")  # compared side by side; "configured" is
#                                                     what tagging uses

OnProgress = Callable[[int, int], None]  # (clips done, clips in all)


class EvalError(Exception):
    """The labelled folder cannot be evaluated; one line naming the fix (exit code 2)."""


# -- the labelled set -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LabelledClip:
    """One distinct clip (by content) and its true tags."""

    sha256: str
    paths: tuple[Path, ...]  # every path it was found under, one per labelled subfolder
    labels: frozenset[str]  # vocabulary labels
    embedding: np.ndarray  # float32 [512]: the mean of its window embeddings (clip_embedding)

    @property
    def path(self) -> Path:
        return self.paths[0]


@dataclass(frozen=True)
class Labelled:
    """A labelled folder, embedded."""

    root: Path
    labels: tuple[str, ...]  # the vocabulary's labels in order: the columns of every matrix
    clips: tuple[LabelledClip, ...]
    model: str  # model fingerprint
    folders: dict[str, str] = field(default_factory=dict)  # subfolder name → label
    unmatched: tuple[str, ...] = ()  # subfolders that match no tag (left out)
    failed: tuple[tuple[Path, str], ...] = ()  # (path, reason) of clips that could not be used

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        """float32 [n_clips, 512]: the clips' embeddings, one row per clip."""
        embeddings = np.stack([c.embedding for c in self.clips]).astype(np.float32, copy=False)
        embeddings.flags.writeable = False  # cached and shared
        return embeddings

    @functools.cached_property
    def truth(self) -> np.ndarray:
        """bool [n_clips, n_tags]: clip i is labelled with tag j."""
        truth = np.zeros((len(self.clips), len(self.labels)), bool)
        index = {label: j for j, label in enumerate(self.labels)}
        for i, clip in enumerate(self.clips):
            truth[i, [index[label] for label in clip.labels]] = True
        truth.flags.writeable = False  # cached and shared
        return truth


def fold_name(name: str) -> str:
    """A folder or tag name as matched: case, spaces, '_' and '-' ignored."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


def match_folders(root: Path, labels: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """DIR's subfolders → ({subfolder name: vocabulary label}, names matching no tag)."""
    by_fold: dict[str, str] = {}
    for label in labels:
        other = by_fold.setdefault(fold_name(label), label)
        if other != label:
            raise EvalError(f"the tags '{other}' and '{label}' would match the same subfolder; "
                            "rename one of them in the vocabulary")
    try:
        names = sorted(e.name for e in root.iterdir() if e.is_dir() and not is_ignored_name(e.name))
    except OSError as exc:
        raise EvalError(f"cannot read {root}: {exc.strerror or exc}; name a readable folder") \
            from None
    matched = {n: by_fold[fold_name(n)] for n in names if fold_name(n) in by_fold}
    unmatched = tuple(n for n in names if n not in matched)
    return matched, unmatched


def check_layout(root: Path, labels: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """match_folders, or EvalError when `root` is no folder or no subfolder matches a tag."""
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder; name a folder with one subfolder per tag")
    folders, unmatched = match_folders(root, labels)
    if not folders:
        raise EvalError(f"no subfolder of {root} is named after a tag of the vocabulary "
                        f"({', '.join(labels)}); put each tag's clips in DIR/<tag>/")
    return folders, unmatched


def load_labelled(root: Path, config: Config, embedder: Embedder, store: Store,
                  on_progress: OnProgress | None = None) -> Labelled:
    """Find, hash and embed every clip of the labelled folder `root` (see the module docstring).
    Raises EvalError when there is nothing to evaluate."""
    labels = config.labels
    root = absolute(root)  # the paths the pipeline records: their stored hashes are reused
    folders, unmatched = check_layout(root, labels)
    for name in unmatched:
        log.warning("subfolder %s matches no tag of the vocabulary; its clips are left out",
                    name)
    failed: list[tuple[Path, str]] = []

    def on_error(path: Path, reason: str) -> None:
        failed.append((path, reason))

    found: dict[Path, set[str]] = collections.defaultdict(set)
    for name, label in folders.items():  # one walk per folder: a symlinked clip counts for each
        for path in find_clips([root / name], config.watch.ignore, (), on_error):
            found[path].add(label)
    sources = _hash_all(list(found), store, config.sampling.decode_workers, failed)
    by_sha: dict[str, list[SourceInfo]] = collections.defaultdict(list)
    for source in sources:
        by_sha[source.sha256].append(source)
    firsts = [group[0] for group in by_sha.values()]
    embedded, reasons = embed_clips(firsts, config, embedder, store, on_progress)
    clips = []
    for sha, group in by_sha.items():
        if sha in reasons:
            failed.extend((s.path, reasons[sha]) for s in group)
            continue
        clip_labels = frozenset().union(*(found[s.path] for s in group))
        clips.append(LabelledClip(sha, tuple(s.path for s in group), clip_labels,
                                  embedded[sha].mean(axis=0).astype(np.float32)))
    for path, reason in failed:
        log.error("skipping %s: %s", path, reason)
    if not clips:
        raise EvalError(f"no clip under {root} could be used; put video clips or GIFs in its "
                        "tag subfolders")
    clips.sort(key=lambda c: str(c.path))
    return Labelled(root, labels, tuple(clips), embedder.fingerprint, folders, unmatched,
                    tuple(failed))


def _hash_all(paths: list[Path], store: Store, workers: int,
              failed: list[tuple[Path, str]]) -> list[SourceInfo]:
    """Stat each path and hash it (unless the store knows this version's hash); hashing runs in
    threads (hashlib releases the GIL), the store is read on this thread only."""
    known: dict[Path, tuple[int, float, str | None]] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError as exc:
            failed.append((path, f"cannot read: {exc.strerror or exc}"))
            continue
        if not stat.S_ISREG(st.st_mode):
            failed.append((path, "not a regular file"))
            continue
        record = store.file(path)
        sha = record.sha256 if record and record.matches(st.st_size, st.st_mtime) else None
        known[path] = (st.st_size, st.st_mtime, sha)

    def digest(path: Path) -> str | OSError:
        try:
            return known[path][2] or _hash_file(path)
        except OSError as exc:
            return exc

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="autotag-eval-hash") as pool:
        digests = list(pool.map(digest, known))
    sources = []
    for (path, (size, mtime, _)), sha in zip(known.items(), digests, strict=True):
        if isinstance(sha, OSError):
            failed.append((path, f"cannot read: {sha.strerror or sha}"))
        else:
            sources.append(SourceInfo(path, size, mtime, sha))
    return sources


def _hash_file(path: Path) -> str:
    from autotag.pipeline import hash_file  # the content hash the store is keyed by

    return hash_file(path)


# -- embedding ------------------------------------------------------------------------------------

def embed_clips(sources: Sequence[SourceInfo], config: Config, embedder: Embedder, store: Store,
                on_progress: OnProgress | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Window embeddings of each source: from the store, else decoded (sampling.decode_workers
    threads) and embedded in batches of model.batch_size windows across clips, then saved to
    the store. Returns ({sha256: float32 [n_windows, 512]}, {sha256: why it failed})."""
    done: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    todo: list[SourceInfo] = []
    total = len(sources)

    def progress() -> None:
        if on_progress:
            on_progress(len(done) + len(failed), total)

    for source in sources:
        stored = store.load_embedded(source, embedder.fingerprint)
        if stored is None:
            todo.append(source)
        else:
            done[source.sha256] = stored.embeddings
            progress()
    if todo:
        log.info("embedding %d clip(s); %d from the state store", len(todo), total - len(todo))

    def finish(job: _Job) -> None:
        if job.failed:
            failed[job.source.sha256] = job.failed
        else:
            clip = Embedded(job.source, job.sampled.duration, job.sampled.windows,
                            job.embeddings, job.sampled.thumbnails)
            store.save_embedded(clip, embedder.fingerprint)
            done[job.source.sha256] = job.embeddings
        progress()

    batcher = _Batcher(embedder, config.model.batch_size)
    workers = config.sampling.decode_workers
    with ThreadPoolExecutor(workers, thread_name_prefix="autotag-eval-decode") as pool:
        decode = _decoder(config)
        for source, sampled in _ahead(pool, decode, todo, 2 * workers):
            if isinstance(sampled, str):
                failed[source.sha256] = sampled
                progress()
                continue
            for job in batcher.add(_Job(source, sampled)):
                finish(job)
        for job in batcher.flush():
            finish(job)
    return done, failed


def _decoder(config: Config) -> Callable[[SourceInfo], media.Sampled | str]:
    sampling = config.sampling

    def decode(source: SourceInfo) -> media.Sampled | str:
        try:
            return media.sample_clip(source.path, sampling.max_windows, sampling.max_pixels,
                                     sampling.decode_timeout, sampling.skip_nonref_frames)
        except media.DecodeError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"
        except Exception as exc:  # one clip's fault must not end the evaluation
            log.debug("decoding %s", source.path, exc_info=True)
            return f"internal error: {type(exc).__name__}: {exc}"

    return decode


def _ahead(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator[tuple]:
    """(item, fn(item)) in order, with at most `ahead` calls submitted at a time (decoded clips
    are large: memory stays bounded however many clips there are)."""
    items = iter(items)
    queue: collections.deque[tuple[object, Future]] = collections.deque(
        (item, pool.submit(fn, item)) for item in itertools.islice(items, max(1, ahead)))
    try:
        while queue:
            item, future = queue.popleft()
            for nxt in itertools.islice(items, 1):
                queue.append((nxt, pool.submit(fn, nxt)))
            yield item, future.result()
    finally:
        for _, future in queue:
            future.cancel()


@dataclass(eq=False)  # identity semantics: jobs are dict keys while their windows are batched
class _Job:
    source: SourceInfo
    sampled: media.Sampled
    embeddings: np.ndarray = field(init=False)  # float32 [n_windows, dim], filled per batch
    done: int = 0
    failed: str | None = None

    def __post_init__(self) -> None:
        self.embeddings = np.zeros((len(self.sampled.windows), 0), np.float32)


class _Batcher:
    """Decoded clips' windows → model calls of batch_size windows, spanning clips. A failing
    call is retried clip by clip, so only the culprit fails (as in the pipeline)."""

    def __init__(self, embedder: Embedder, batch_size: int) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.pending: list[tuple[_Job, int]] = []

    def add(self, job: _Job) -> list[_Job]:
        """Queue a clip's windows; returns the clips whose windows are now all embedded."""
        self.pending.extend((job, i) for i in range(len(job.sampled.windows)))
        finished: list[_Job] = []
        while len(self.pending) >= self.batch_size:
            finished += self._run(self.pending[:self.batch_size])
            del self.pending[:self.batch_size]
        return finished

    def flush(self) -> list[_Job]:
        finished = self._run(self.pending) if self.pending else []
        self.pending = []
        return finished

    def _run(self, items: list[tuple[_Job, int]]) -> list[_Job]:
        jobs = list(dict.fromkeys(job for job, _ in items))
        try:
            vectors = self._call(items)
        except _ModelFailure as exc:
            if len(jobs) > 1:
                return [done for job in jobs
                        for done in self._run([(j, i) for j, i in items if j is job])]
            jobs[0].failed = str(exc)
            vectors = None
        for n, (job, i) in enumerate(items):
            if vectors is not None:
                if job.embeddings.shape[1] == 0:
                    job.embeddings = np.zeros((len(job.sampled.windows), vectors.shape[1]),
                                              np.float32)
                job.embeddings[i] = vectors[n]
            job.done += 1
        return [job for job in jobs if job.done == len(job.sampled.windows)]

    def _call(self, items: list[tuple[_Job, int]]) -> np.ndarray:
        frames = np.stack([media.to_model_input(job.sampled.frames[i]) for job, i in items])
        try:
            vectors = self.embedder.embed_video(frames)
        except Exception as exc:  # TensorFlow raises many kinds; all mean "this call failed"
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise _ModelFailure(f"the model failed: {type(exc).__name__}: {first}"[:300]) from exc
        if vectors.shape[0] != len(items) or not np.isfinite(vectors).all():
            raise _ModelFailure("the model returned NaN or infinite embeddings")
        return vectors


class _ModelFailure(Exception):
    pass


# -- prompts --------------------------------------------------------------------------------------

def prompt_sets(entries: Sequence[VocabEntry], templates: Sequence[str] = DEFAULT_TEMPLATES
                ) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Each prompt set → its prompts per tag (normalised as tagging normalises them):
    name: the tag's name alone; configured: the config's prompts (what tagging uses);
    templates: the tag's name in each template, a prompt ensemble."""
    return {
        "name": tuple((normalise_prompt(e.label),) for e in entries),
        "configured": tuple(tuple(dict.fromkeys(normalise_prompt(p) for p in e.prompts))
                            for e in entries),
        "templates": tuple(tuple(dict.fromkeys(normalise_prompt(t.replace("{}", e.label))
                                               for t in templates)) for e in entries),
    }


def embed_prompts(sets: dict[str, tuple[tuple[str, ...], ...]], embedder: Embedder,
                  cache_dir: Path | None) -> dict[str, np.ndarray]:
    """Every prompt of every set, and "" → float32 [512], through the vocabulary's text cache."""
    texts = sorted({p for per_tag in sets.values() for prompts in per_tag for p in prompts} | {""})
    return embed_texts(texts, embedder, text_cache(cache_dir, embedder))


def set_vectors(prompts: Sequence[Sequence[str]], table: dict[str, np.ndarray]) -> np.ndarray:
    """Prompts per tag → float32 [n_tags, 512], each tag the mean of its prompts (as
    vocabulary.build_vocabulary computes it)."""
    return np.stack([np.mean([table[p] for p in per_tag], axis=0)
                     for per_tag in prompts]).astype(np.float32)


def unknown_prompts(prompts: Iterable[str], table: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Prompts the model knows no word of: they embed like the empty string."""
    return tuple(p for p in dict.fromkeys(prompts)
                 if p and np.allclose(table[p], table[""], atol=1e-6))


# -- metrics (pure numpy) -------------------------------------------------------------------------

def clip_scores(embeddings: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Clip embeddings [n_clips, 512] · tag vectors [n_tags, 512]ᵀ → float32 [n_clips, n_tags]:
    each clip's mean window score per tag, the clip score tagging uses (up to float rounding)."""
    return window_scores(embeddings, vectors)


def ranking(scores: np.ndarray) -> np.ndarray:
    """int [n_clips, n_tags]: tag indices best first; ties keep vocabulary order (as tagging)."""
    return np.argsort(-scores, axis=1, kind="stable")


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of clips with one of their true tags among their k best-scoring tags."""
    top = ranking(scores)[:, :k]
    return float(np.take_along_axis(truth, top, axis=1).any(axis=1).mean())


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tag's clip scores [n] and truth [n] → (thresholds, precision, recall), one point per
    distinct score, highest first: tagging every clip scoring >= threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / max(int(y.sum()), 1)
    return s[last], precision, recall


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated average precision, sum over thresholds of (R_n - R_{n-1}) * P_n
    (scikit-learn's average_precision_score, ties included). NaN without positives."""
    if not positive.any():
        return float("nan")
    _, precision, recall = precision_recall_curve(scores, positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def given_tags(scores: np.ndarray, labels: Sequence[str], tagging: TaggingConfig) -> np.ndarray:
    """bool [n_clips, n_tags]: the tags tagging gives. The rule of scoring.tag_scores, vectorised:
    in score order, the first top_k tags that reach their threshold (a tests checks they agree)."""
    thresholds = np.array([tagging.thresholds.get(label, tagging.min_score) for label in labels],
                          np.float64)
    order = ranking(scores)
    passing = np.take_along_axis(scores >= thresholds, order, axis=1)
    chosen = passing & (np.cumsum(passing, axis=1) <= tagging.top_k)
    given = np.zeros_like(passing)
    np.put_along_axis(given, order, chosen, axis=1)
    return given


@dataclass(frozen=True)
class Confusion:
    """Clips of tag `true` whose best-scoring tag was `predicted`."""

    true: str
    predicted: str
    clips: int
    share: float  # of `true`'s clips

    def to_json(self) -> dict:
        return {"true": self.true, "predicted": self.predicted, "clips": self.clips,
                "share": round(self.share, 4)}


def confusions(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> list[Confusion]:
    """Every (true tag, top-1 tag) pair of the clips whose top-1 is none of their tags, most
    clips first: the mistakes that cost the most top-1 accuracy."""
    top1 = ranking(scores)[:, 0]
    wrong = ~truth[np.arange(len(top1)), top1]
    counts: collections.Counter[tuple[int, int]] = collections.Counter()
    for i in np.flatnonzero(wrong):
        for t in np.flatnonzero(truth[i]):
            counts[(int(t), int(top1[i]))] += 1
    positives = truth.sum(axis=0)
    pairs = [Confusion(labels[t], labels[p], n, n / positives[t]) for (t, p), n in counts.items()]
    return sorted(pairs, key=lambda c: (-c.clips, -c.share, c.true, c.predicted))


def confusion_matrix(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]
                     ) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(rows, columns, int counts [rows, columns]): rows are the tags with clips, columns the
    same tags plus "(other tags)" when a clip's top-1 is a tag without clips. A clip counts once
    per true tag, on the diagonal when its top-1 is any of its tags."""
    present = [j for j in range(len(labels)) if truth[:, j].any()]
    column = {j: n for n, j in enumerate(present)}
    top1 = ranking(scores)[:, 0]
    other = any(int(p) not in column for p in top1)
    counts = np.zeros((len(present), len(present) + other), np.int64)
    for i, p in enumerate(top1):
        right = truth[i, p]
        for t in np.flatnonzero(truth[i]):
            row = column[int(t)]
            counts[row, row if right else column.get(int(p), len(present))] += 1
    rows = tuple(labels[j] for j in present)
    return rows, rows + (("(other tags)",) if other else ()), counts


# -- the evaluation -------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagResult:
    label: str
    clips: int  # clips labelled with the tag
    threshold: float  # its tagging threshold (tagging.thresholds, else min_score)
    given: int  # clips tagging gives it to
    correct: int  # of those, clips labelled with it
    ap: float  # with the configured prompts
    prompt_ap: dict[str, float] = field(default_factory=dict)  # each prompt of an ensemble alone

    @property
    def precision(self) -> float | None:
        return self.correct / self.given if self.given else None

    @property
    def better_prompts(self) -> dict[str, float]:
        """Prompts of the ensemble that alone rank the tag's clips better than the ensemble."""
        return {p: ap for p, ap in self.prompt_ap.items() if ap > self.ap + BETTER_BY}

    @property
    def recall(self) -> float:
        return self.correct / self.clips

    def to_json(self) -> dict:
        return {"label": self.label, "clips": self.clips, "threshold": self.threshold,
                "given": self.given, "precision": _round(self.precision),
                "recall": _round(self.recall), "ap": _round(self.ap),
                "prompt_ap": {p: _round(v) for p, v in self.prompt_ap.items()}}


@dataclass(frozen=True)
class SetResult:
    """One prompt set's results."""

    name: str
    prompts: tuple[tuple[str, ...], ...]  # per vocabulary tag
    top1: float
    topk: float
    map: float
    ap: dict[str, float]  # per tag with clips
    unknown: tuple[str, ...]  # prompts the model knows no word of

    def to_json(self) -> dict:
        return {"name": self.name, "top1": _round(self.top1), "topk": _round(self.topk),
                "map": _round(self.map), "ap": {k: _round(v) for k, v in self.ap.items()},
                "prompts": [list(p) for p in self.prompts], "unknown": list(self.unknown)}


@dataclass(frozen=True)
class Evaluation:
    labelled: Labelled
    scores: np.ndarray  # float32 [n_clips, n_tags], configured prompts
    given: np.ndarray  # bool [n_clips, n_tags]: the tags tagging gives (given_tags)
    k: int  # top-k accuracy's k
    tags: tuple[TagResult, ...]  # the tags with clips, vocabulary order
    confusions: tuple[Confusion, ...]
    matrix: tuple[tuple[str, ...], tuple[str, ...], np.ndarray]  # see confusion_matrix
    sets: tuple[SetResult, ...]  # PROMPT_SETS order

    @property
    def configured(self) -> SetResult:
        return next(s for s in self.sets if s.name == "configured")

    @property
    def top1(self) -> float:
        return self.configured.top1

    @property
    def topk(self) -> float:
        return self.configured.topk

    @property
    def map(self) -> float:
        return self.configured.map

    def to_json(self) -> dict:
        rows, cols, counts = self.matrix
        lab = self.labelled
        return {
            "root": str(lab.root), "model": lab.model, "clips": len(lab.clips),
            "tags": len(self.tags), "k": self.k, "top1": _round(self.top1),
            "topk": _round(self.topk), "map": _round(self.map),
            "per_tag": [t.to_json() for t in self.tags],
            "confusions": [c.to_json() for c in self.confusions],
            "confusion_matrix": {"rows": list(rows), "columns": list(cols),
                                 "counts": counts.tolist()},
            "prompt_sets": [s.to_json() for s in self.sets],
            "folders": lab.folders, "unmatched_folders": list(lab.unmatched),
            "failed": [{"path": str(p), "reason": r} for p, r in lab.failed],
        }


def evaluate(labelled: Labelled, entries: Sequence[VocabEntry], table: dict[str, np.ndarray],
             tagging: TaggingConfig, templates: Sequence[str] = DEFAULT_TEMPLATES) -> Evaluation:
    """Score the labelled clips with each prompt set; `table` holds every prompt's embedding
    (embed_prompts)."""
    labels = labelled.labels
    truth = labelled.truth
    k = min(TOP_K, len(labels))
    sets = prompt_sets(entries, templates)
    results, scores = [], {}
    for name in PROMPT_SETS:
        scores[name] = clip_scores(labelled.embeddings, set_vectors(sets[name], table))
        results.append(_set_result(name, sets[name], scores[name], truth, labels, k, table))
    configured = scores["configured"]
    given = given_tags(configured, labels, tagging)
    tags = []
    for j, label in enumerate(labels):
        if not truth[:, j].any():
            continue
        prompts = sets["configured"][j]
        prompt_ap = {} if len(prompts) < 2 else {
            p: average_precision(clip_scores(labelled.embeddings, table[p][None, :])[:, 0],
                                 truth[:, j]) for p in prompts}
        tags.append(TagResult(label, int(truth[:, j].sum()),
                              tagging.thresholds.get(label, tagging.min_score),
                              int(given[:, j].sum()), int((given[:, j] & truth[:, j]).sum()),
                              results[PROMPT_SETS.index("configured")].ap[label], prompt_ap))
    pairs = confusions(configured, truth, labels)[:MAX_CONFUSIONS]
    return Evaluation(labelled, configured, given, k, tuple(tags), tuple(pairs),
                      confusion_matrix(configured, truth, labels), tuple(results))


def _set_result(name: str, prompts: tuple[tuple[str, ...], ...], scores: np.ndarray,
                truth: np.ndarray, labels: Sequence[str], k: int,
                table: dict[str, np.ndarray]) -> SetResult:
    ap = {labels[j]: average_precision(scores[:, j], truth[:, j])
          for j in range(len(labels)) if truth[:, j].any()}
    return SetResult(name, prompts, top_k_accuracy(scores, truth, 1),
                     top_k_accuracy(scores, truth, k), float(np.mean(list(ap.values()))), ap,
                     unknown_prompts((p for per_tag in prompts for p in per_tag), table))


def _round(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


# -- the command ----------------------------------------------------------------------------------

@dataclass
class Session:
    """The model and the store an evaluation or a calibration runs with."""

    embedder: Embedder
    store: Store
    cache_dir: Path

    def close(self) -> None:
        self.store.close()


def open_session(config: Config, embedder: Embedder | None = None,
                 cache_dir: Path | None = None) -> Session:
    """Load the model (unless given) and open the state store; EvalError with their one line."""
    from autotag.model import ModelError, load_model
    from autotag.store import StoreError

    media.quiet_decoder(log.isEnabledFor(logging.DEBUG))  # broken clips are reported in one line
    try:
        if embedder is None:
            log.info("loading the model from %s", config.model.handle)
            embedder = load_model(config.model.handle, config.model.threads)
        store = Store(config.state.store_path)
    except (ModelError, StoreError) as exc:
        raise EvalError(str(exc)) from None
    return Session(embedder, store, cache_dir or default_cache_dir())


def run_eval(config: Config, root: Path, *, as_json: bool = False, report: Path | None = None,
             templates: Sequence[str] | None = None, embedder: Embedder | None = None,
             cache_dir: Path | None = None) -> Evaluation:
    """`autotag eval`: evaluate, print tables (or JSON) to stdout, write the HTML report.
    Raises EvalError (a usage problem, one line)."""
    from autotag import report as render

    templates = tuple(templates or DEFAULT_TEMPLATES)
    if report is not None and not report.resolve().parent.is_dir():
        raise EvalError(f"cannot write the report to {report}: its folder does not exist; "
                        "create it or pass another --report path")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise EvalError(f"template {bad[0]!r} has no '{{}}' for the tag's name; "
                        "write e.g. --template 'a person {}'")
    check_layout(root, config.labels)  # before the model loads: a typo costs no wait
    session = open_session(config, embedder, cache_dir)
    try:
        with render.progress("embedding", enabled=not as_json) as on_progress:
            labelled = load_labelled(root, config, session.embedder, session.store, on_progress)
        table = embed_prompts(prompt_sets(config.vocabulary, templates), session.embedder,
                              session.cache_dir)
        evaluation = evaluate(labelled, config.vocabulary, table, config.tagging, templates)
        if as_json:
            render.print_json(evaluation)
        else:
            render.print_evaluation(evaluation)
        if report is not None:
            try:
                render.write_html(evaluation, report, session.store.thumbnails)
            except OSError as exc:
                raise EvalError(f"cannot write the report: {exc}; pass another --report path") \
                    from None
            log.info("report written to %s", report)
    finally:
        session.close()
    return evaluation
