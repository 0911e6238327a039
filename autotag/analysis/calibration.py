"""Labelled clips' scores float32 [n_clips, n_tags] → per-tag thresholds for a target precision
+ a softmax temperature → `Calibration`; or reviewed clips' scores → per-tag thresholds, with
the library clips each would add or take a tag from → `Proposal`.

Threshold: the lowest score at which tagging every clip scoring at least that much is right for
at least `target` of them (the most recall that precision allows), placed halfway to the next
lower score and shortened to a few decimals. It is fitted on raw clip scores; tagging also
applies top_k, which only takes tags away. A tag whose target cannot be reached on these clips
keeps whatever threshold it had, and so does a tag with fewer than MIN_REVIEWS clips of either
kind (clips showing it, clips not showing it): two clips fix a threshold anywhere between them.

From reviews (issue 21): a tag's clips are those a person confirmed it on (positives) or
rejected it on (negatives), each content once; unreviewed clips are not used. A clip's score
is its clip score, the tag's vector · its clip embedding, which is what tagging compares with
the threshold. Nothing is decoded. The proposal also counts, over every clip of the library,
who gains or loses each tag under the new thresholds by tagging's own rule (reaches its
threshold, within top_k, reviews win): a tag left alone can still gain or lose clips through
top_k, when another tag's threshold moves.

Temperature: the T minimising the mean negative log-likelihood of the clips' true tags under
softmax(scores / T) over the vocabulary (temperature scaling, Guo et al. 2017), found by a 1-D
search. NLL is convex in 1/T, so a grid plus golden-section refinement finds the minimum.

Pure numpy, but for from_reviews, which reads the store it is handed; writing the result into
the config is config_editor.py's, printing it the command's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from autotag.analysis.labelling import Labelled
from autotag.analysis.metrics import clip_scores, precision_recall_curve
from autotag.config import Config, TaggingConfig
from autotag.scoring import (  # noqa: F401 - the given tags' rule is scoring's; re-exported
    CONFIRMED,
    REJECTED,
    given_reviewed,
    review_matrix,
)

if TYPE_CHECKING:
    from autotag.store import Store
    from autotag.vocabulary import Vocabulary

log = logging.getLogger(__name__)

DEFAULT_PRECISION = 0.9  # target precision of each tag's threshold
# clips of each kind a tag needs before its threshold is fitted: confirmed and rejected ones
# (from reviews), or clips of the tag's folder and of the other folders (a labelled folder)
MIN_REVIEWS = 5
T_MIN, T_MAX = 0.01, 100.0  # the temperature search's range
T_GRID = 81  # log-spaced grid points before refinement
GOLDEN_STEPS = 60


# -- thresholds -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagThreshold:
    label: str
    clips: int  # labelled with the tag
    others: int  # labelled otherwise
    threshold: float | None  # None: the target precision is not reachable on these clips
    precision: float  # at `threshold` (or the best reachable, when it is None)
    recall: float
    best_score: float  # where the best reachable precision is, when the target is not
    current: float  # the threshold tagging uses now
    # more (clips, others) needed before a threshold is fitted; (0, 0): enough. With too few,
    # threshold is None and precision, recall and best_score are NaN (nothing was fitted)
    needed: tuple[int, int] = (0, 0)

    @property
    def enough(self) -> bool:
        return self.needed == (0, 0)

    @property
    def reached(self) -> bool:
        return self.threshold is not None

    def to_json(self) -> dict:
        return {"label": self.label, "clips": self.clips, "others": self.others,
                "threshold": self.threshold, "precision": _rounded(self.precision),
                "recall": _rounded(self.recall), "current": self.current,
                "needed": {"clips": self.needed[0], "others": self.needed[1]}}


def _rounded(value: float) -> float | None:
    """For JSON: 4 decimals, None for NaN (not fitted)."""
    return None if math.isnan(value) else round(value, 4)


def shortfall(positives: int, negatives: int, minimum: int = MIN_REVIEWS) -> tuple[int, int]:
    """How many more (positives, negatives) a tag needs before its threshold is fitted."""
    return max(0, minimum - positives), max(0, minimum - negatives)


def fit_tag(label: str, scores: np.ndarray, positive: np.ndarray, current: float,
            target: float, minimum: int = MIN_REVIEWS) -> TagThreshold:
    """One tag's clip scores [n] and truth bool [n] → its threshold for `target` precision, or
    none (threshold None) with too few clips of either kind (see `needed`)."""
    positives = int(positive.sum())
    negatives = len(positive) - positives
    needed = shortfall(positives, negatives, minimum)
    if needed != (0, 0) or not positives:
        nan = float("nan")
        return TagThreshold(label, positives, negatives, None, nan, nan, nan, current, needed)
    threshold, precision, recall, at = precision_threshold(scores, positive, target)
    return TagThreshold(label, positives, negatives, threshold, precision, recall, at, current)


def precision_threshold(scores: np.ndarray, positive: np.ndarray, target: float
                        ) -> tuple[float | None, float, float, float]:
    """One tag's clip scores [n] and truth [n] → (threshold or None, precision, recall, score
    of that point). The threshold separates the chosen score from the next lower one."""
    thresholds, precision, recall = precision_recall_curve(scores, positive)
    ok = np.flatnonzero(precision >= target - 1e-12)
    if len(ok) == 0:
        best = int(np.flatnonzero(precision == precision.max())[-1])
        return None, float(precision[best]), float(recall[best]), float(thresholds[best])
    k = int(ok[-1])  # the lowest threshold meeting the target: the most recall
    at = float(thresholds[k])
    below = float(thresholds[k + 1]) if k + 1 < len(thresholds) else None
    return _between(below, at), float(precision[k]), float(recall[k]), at


def _between(low: float | None, high: float) -> float:
    """A short decimal in (low, high], near their midpoint (high itself rounded down without a
    `low`): YAML-friendly, and a clip scoring `high` still reaches it after rounding."""
    if low is None:
        return math.floor(high * 1000) / 1000
    middle = (low + high) / 2
    for decimals in range(1, 7):
        value = round(middle, decimals)
        if low < value <= high:
            return value
    return middle


def fit_thresholds(labelled: Labelled, scores: np.ndarray, config: Config,
                   target: float, minimum: int = MIN_REVIEWS) -> list[TagThreshold]:
    """Each tag with clips → its threshold for `target` precision on scores [n_clips, n_tags]
    (none for a tag with fewer than `minimum` clips, or clips of other tags)."""
    truth = labelled.truth
    tagging = config.tagging
    return [fit_tag(label, scores[:, j], truth[:, j], current_threshold(tagging, label), target,
                    minimum)
            for j, label in enumerate(labelled.labels) if truth[:, j].any()]


def current_threshold(tagging: TaggingConfig, label: str) -> float:
    """The threshold tagging uses for this tag: its own, else min_score."""
    return tagging.thresholds.get(label, tagging.min_score)


def shortfall_message(label: str, needed: tuple[int, int], current: float,
                      reviews: bool = True) -> str:
    """One line: what a tag left alone for too few clips needs, e.g. "skiing: 2 more confirmed
    and 4 more rejected clips needed; threshold left at 3.0". reviews=False: a labelled
    folder's words (clips in the tag's folder, clips in the other folders)."""
    more, fewer = needed
    if reviews:
        parts = [f"{n} more {kind}" for n, kind in ((more, "confirmed"), (fewer, "rejected"))
                 if n]
        wanted = f"{' and '.join(parts)} clip{'s' if max(needed) > 1 else ''}"
    else:
        wanted = " and ".join(f"{n} more clip{'s' if n > 1 else ''} {where}"
                              for n, where in ((more, "in its folder"),
                                               (fewer, "in other tags' folders")) if n)
    return f"{label}: {wanted} needed; threshold left at {float(current)}"


# -- temperature ----------------------------------------------------------------------------------

def nll(scores: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean -log P(the clip's tags) under softmax(scores / T) over the vocabulary; a clip with
    several tags counts the probability of any of them."""
    z = scores.astype(np.float64) / temperature
    return float(np.mean(_logsumexp(z) - _logsumexp(np.where(truth, z, -np.inf))))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """log(sum(exp(z))) per row [n], stable for any temperature (rows hold a finite value)."""
    top = z.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature in [T_MIN, T_MAX] minimising nll(): a log-spaced grid, then a golden-
    section search between the best point's neighbours. Rounded to 3 significant digits."""
    grid = np.geomspace(T_MIN, T_MAX, T_GRID)
    values = [nll(scores, truth, t) for t in grid]
    best = int(np.argmin(values))
    lo, hi = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, T_GRID - 1)])

    def f(x: float) -> float:
        return nll(scores, truth, math.exp(x))

    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(GOLDEN_STEPS):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return float(f"{math.exp((lo + hi) / 2):.3g}")


# -- the calibration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    target: float
    tags: tuple[TagThreshold, ...]
    temperature: float
    nll_before: float  # at the configured temperature
    nll_after: float
    clips: int
    failed: int = 0  # clips that could not be used

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds that reach the target, to write."""
        return {t.label: t.threshold for t in self.tags if t.threshold is not None}

    def to_json(self) -> dict:
        return {"target_precision": self.target, "clips": self.clips,
                "temperature": self.temperature, "nll_before": round(self.nll_before, 4),
                "nll_after": round(self.nll_after, 4), "thresholds": self.thresholds,
                "per_tag": [t.to_json() for t in self.tags]}


def calibrate(labelled: Labelled, scores: np.ndarray, config: Config,
              target: float = DEFAULT_PRECISION, minimum: int = MIN_REVIEWS) -> Calibration:
    """Scores [n_clips, n_tags] (configured prompts) → thresholds and temperature."""
    truth = labelled.truth
    temperature = fit_temperature(scores, truth)
    return Calibration(target, tuple(fit_thresholds(labelled, scores, config, target, minimum)),
                       temperature, nll(scores, truth, config.tagging.temperature),
                       nll(scores, truth, temperature), len(labelled.clips),
                       len(labelled.failed))


def merged_thresholds(config: Config, calibration: Calibration) -> dict[str, float]:
    """The config's thresholds with the calibrated ones set, in vocabulary order."""
    values = {**config.tagging.thresholds, **calibration.thresholds}
    return {label: values[label] for label in config.labels if label in values}


# -- from reviews ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagChange:
    """One tag of a `Proposal`: its threshold now and from the reviews, and what that changes."""

    label: str
    old: float  # the threshold tagging uses now (its own, else min_score)
    new: float | None  # from the reviews; None: left alone (too few reviews, or target not reached)
    confirmed: int  # reviewed contents used: positives
    rejected: int  # negatives
    needed: tuple[int, int]  # more (confirmed, rejected) needed; (0, 0): enough
    precision: float | None  # on the reviewed clips at `new` (best reachable, without one);
    recall: float | None  # None: not fitted (too few reviews)
    gains: int  # library clips given the tag with the new thresholds and not now
    losses: int  # library clips given it now and not with the new thresholds

    @property
    def enough(self) -> bool:
        return self.needed == (0, 0)

    @property
    def reached(self) -> bool:
        return self.new is not None

    def message(self) -> str | None:
        """Why the tag is left alone, in one line; None when it has a new threshold."""
        if not self.enough:
            return shortfall_message(self.label, self.needed, self.old)
        if not self.reached:
            return (f"{self.label}: no threshold reaches the target precision on its reviewed "
                    f"clips (best {100 * (self.precision or 0):.1f}%); threshold left at "
                    f"{float(self.old)}")
        return None

    def to_json(self) -> dict:
        return {"label": self.label, "old": self.old, "new": self.new,
                "confirmed": self.confirmed, "rejected": self.rejected,
                "needed": {"confirmed": self.needed[0], "rejected": self.needed[1]},
                "precision": None if self.precision is None else round(self.precision, 4),
                "recall": None if self.recall is None else round(self.recall, 4),
                "gains": self.gains, "losses": self.losses}


@dataclass(frozen=True)
class Proposal:
    """Thresholds from reviews, not yet written: every tag of the vocabulary, in its order."""

    target: float
    tags: tuple[TagChange, ...]
    clips: int  # library clips the gains and losses are counted over (one per path)
    reviewed: int  # distinct reviewed contents among them
    # what to write into tagging.thresholds: the config's, with the new ones set (vocabulary order)
    merged: dict[str, float] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        """The tags' new thresholds (those with enough reviews that reach the target)."""
        return {t.label: t.new for t in self.tags if t.new is not None}

    @property
    def changed(self) -> bool:
        """Some tag's threshold would change: there is something to write."""
        return any(t.new is not None and t.new != t.old for t in self.tags)

    def tag(self, label: str) -> TagChange:
        return next(t for t in self.tags if t.label == label)

    def to_json(self) -> dict:
        return {"target_precision": self.target, "clips": self.clips,
                "reviewed": self.reviewed, "thresholds": self.merged,
                "per_tag": [t.to_json() for t in self.tags]}


def library_changes(scores: np.ndarray, verdicts: np.ndarray, labels: Sequence[str],
                    before: TaggingConfig, after: TaggingConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(gains, losses), int [n_tags]: the clips given each tag under `after` but not under
    `before`, and the other way round."""
    old = given_reviewed(scores, verdicts, labels, before)
    new = given_reviewed(scores, verdicts, labels, after)
    return (new & ~old).sum(axis=0), (old & ~new).sum(axis=0)


def fit_reviewed(scores: np.ndarray, verdicts: np.ndarray, labels: Sequence[str],
                 tagging: TaggingConfig, target: float,
                 minimum: int = MIN_REVIEWS) -> list[TagThreshold]:
    """Each tag → its threshold from the clips reviewed for it (clips = confirmed, others =
    rejected). scores and verdicts [n, n_tags]: one row per distinct content."""
    out = []
    for k, label in enumerate(labels):
        used = verdicts[:, k] != 0
        out.append(fit_tag(label, scores[used, k], verdicts[used, k] == CONFIRMED,
                           current_threshold(tagging, label), target, minimum))
    return out


def propose(scores: np.ndarray, verdicts: np.ndarray, distinct: np.ndarray,
            labels: Sequence[str], tagging: TaggingConfig, target: float = DEFAULT_PRECISION,
            minimum: int = MIN_REVIEWS) -> Proposal:
    """The library's clip scores float32 [n, n_tags] and reviews int8 [n, n_tags], and which
    rows are each content's first (bool [n]: copies count once in a fit, once per path in the
    gains and losses) → the proposal. Pure numpy."""
    fitted = fit_reviewed(scores[distinct], verdicts[distinct], labels, tagging, target,
                          minimum)
    values = {**tagging.thresholds, **{t.label: t.threshold for t in fitted if t.reached}}
    merged = {label: values[label] for label in labels if label in values}
    gains, losses = library_changes(scores, verdicts, labels, tagging,
                                    replace(tagging, thresholds=merged))
    tags = tuple(TagChange(t.label, t.current, t.threshold, t.clips, t.others, t.needed,
                           None if math.isnan(t.precision) else t.precision,
                           None if math.isnan(t.recall) else t.recall, int(g), int(n))
                 for t, g, n in zip(fitted, gains, losses, strict=True))
    reviewed = int((verdicts[distinct] != 0).any(axis=1).sum()) if len(labels) else 0
    return Proposal(target, tags, len(scores), reviewed, merged)


def from_reviews(store: Store, model: str, vocabulary: Vocabulary, tagging: TaggingConfig,
                 target_precision: float = DEFAULT_PRECISION,
                 minimum: int = MIN_REVIEWS) -> Proposal:
    """The store's reviewed clips (this model's stored clip embeddings) → per-tag thresholds
    for the target precision, and the library's gains and losses under them. Reads the
    store's clip index and reviews; decodes nothing, calls no model."""
    records, matrix = store.clip_index(model)
    labels = vocabulary.labels
    scores = (clip_scores(matrix, vocabulary.vectors) if records
              else np.zeros((0, len(labels)), np.float32))
    shas = [r.sha256 for r in records]
    seen: set[str | None] = set()
    distinct = np.zeros(len(shas), bool)
    for i, sha in enumerate(shas):
        distinct[i] = sha not in seen
        seen.add(sha)
    proposal = propose(scores, review_matrix(shas, store.all_reviews(), labels), distinct,
                       labels, tagging, target_precision, minimum)
    log.info("thresholds from %d reviewed clip(s); %d of %d tag(s) set, over %d clip(s)",
             proposal.reviewed, len(proposal.thresholds), len(labels), proposal.clips)
    return proposal
