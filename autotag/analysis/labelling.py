"""Labelled folder → its clips per tag → Engine.embed → one `LabelledClip` per distinct content.

DIR holds one subfolder per tag (DIR/skiing/*.mp4, the layout of UCF101 and HMDB51). A subfolder
matches a vocabulary tag by name, ignoring case, spaces, '_' and '-' (UCF101's "ApplyEyeMakeup"
and HMDB51's "brush_hair" match "apply eye makeup" and "brush hair"). A subfolder that matches no
tag is reported and its clips are left out: with no tag to be right about they have no accuracy,
and counting them only as negatives would mix two questions (see docs/guides/calibrate.md). A clip found in
several subfolders (by symlink, hard link or copy: the same content) is one clip with each of
those tags as a true label; its top-1 prediction is right when it is any of them.

Embeddings come from the one engine (engine.py): stored embeddings (by content hash and model)
are reused, the others decoded and embedded in batches across clips and saved to the state store,
so the next evaluation is instant and a later `autotag --once` reuses them. The engine does not
write the store's files table (only the tagging step does), so an evaluation tags nothing, and
nothing is written beside the clips. A file reached by several paths (symlink, hard link) goes to
the engine once; copies are told apart after hashing, by `outcome.clip.source.sha256`.

Each clip keeps only its clip embedding, float32 [512]: the mean of its window embeddings, so
its score for a tag is the mean of its window scores, the clip score tagging uses (scoring.py).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autotag.engine import Engine
from autotag.errors import AutotagError
from autotag.files import Edge, absolute, find_clips, is_ignored_name, show

log = logging.getLogger(__name__)

OnProgress = Callable[[int, int], None]  # (clips done, clips in all)


class EvalError(AutotagError):
    """The labelled folder cannot be evaluated; one line naming the fix (a usage error, exit 2)."""


@dataclass(frozen=True, eq=False)
class LabelledClip:
    """One distinct clip (by content) and its true tags."""

    sha256: str
    paths: tuple[Path, ...]  # every path it was found under, one per labelled subfolder
    labels: frozenset[str]  # vocabulary labels
    embedding: np.ndarray  # float32 [512]: the mean of its window embeddings (clip embedding)

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
    """match_folders, or EvalError when `root` is no folder or no subfolder matches a tag.
    Cheap: commands call it before the model loads, so a typo costs no wait."""
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder; name a folder with one subfolder per tag")
    folders, unmatched = match_folders(root, labels)
    if not folders:
        raise EvalError(f"no subfolder of {root} is named after a tag of the vocabulary "
                        f"({', '.join(labels)}); put each tag's clips in DIR/<tag>/")
    return folders, unmatched


def load_labelled(root: Path, engine: Engine, on_progress: OnProgress | None = None) -> Labelled:
    """Find every clip of the labelled folder `root` and embed it through `engine` (see the
    module docstring). on_progress(done, total) after each file. Raises EvalError when there is
    nothing to evaluate."""
    labels = engine.config.labels
    root = absolute(root)  # the paths --once records: their stored hashes are reused
    folders, unmatched = check_layout(root, labels)
    for name in unmatched:
        log.warning("subfolder %s matches no tag of the vocabulary; its clips are left out",
                    show(name))
    failed: list[tuple[Path, str]] = []
    found = _find(root, folders, engine.config.watch.ignore, failed)
    files = _same_file(found)
    order = {path: n for n, path in enumerate(found)}
    paths: dict[str, list[Path]] = collections.defaultdict(list)  # sha256 → paths
    embedding: dict[str, np.ndarray] = {}  # sha256 → float32 [512]
    counts: collections.Counter[str] = collections.Counter()
    with contextlib.closing(engine.embed(files)) as outcomes:  # closed: its workers stop
        for done, outcome in enumerate(outcomes, 1):
            counts[outcome.status] += 1
            if outcome.clip is None:
                failed.extend((p, outcome.reason or outcome.status) for p in files[outcome.path])
            else:
                sha = outcome.clip.source.sha256
                paths[sha].extend(files[outcome.path])
                embedding.setdefault(sha, outcome.clip.embeddings.mean(axis=0).astype(np.float32))
            if on_progress:
                on_progress(done, len(files))
    log.info("%d clip(s) embedded, %d from the state store", counts["embedded"], counts["stored"])
    for path, reason in failed:
        log.error("skipping %s: %s", show(path), reason)
    clips = []
    for sha, group in paths.items():
        group.sort(key=order.__getitem__)
        clip_labels = frozenset().union(*(found[p] for p in group))
        clips.append(LabelledClip(sha, tuple(group), clip_labels, embedding[sha]))
    if not clips:
        raise EvalError(f"no clip under {root} could be used; put video clips or GIFs in its "
                        "tag subfolders")
    clips.sort(key=lambda c: str(c.path))
    return Labelled(root, labels, tuple(clips), engine.model, folders, unmatched, tuple(failed))


def _find(root: Path, folders: dict[str, str], ignore: Sequence[str],
          failed: list[tuple[Path, str]]) -> dict[Path, set[str]]:
    """Every clip path under the matched subfolders → its labels. One walk per folder: a clip
    symlinked into several folders is found under each."""
    found: dict[Path, set[str]] = collections.defaultdict(set)
    edge = Edge.of([root])  # the labelled folder is the library: a link between its folders
    for name, label in folders.items():
        for path in find_clips([root / name], ignore, (), lambda p, r: failed.append((p, r)),
                               edge):
            found[path].add(label)
    return found


def _same_file(paths: Sequence[Path]) -> dict[Path, list[Path]]:
    """The first path to each file (by device and inode) → every path to it, so a symlinked or
    hard-linked clip is decoded once. A path that cannot be stat'ed stands alone: the engine
    reports why."""
    files: dict[Path, list[Path]] = {}
    first: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            files[path] = [path]
            continue
        key = (st.st_dev, st.st_ino)
        if key in first:
            files[first[key]].append(path)
        else:
            first[key] = path
            files[path] = [path]
    return files
