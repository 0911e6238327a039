"""Labelled clips' scores float32 [n_clips, n_tags] → per-tag thresholds for a target precision
+ a softmax temperature → `Calibration`.

Threshold: the lowest score at which tagging every clip scoring at least that much is right for
at least `target` of them (the most recall that precision allows), placed halfway to the next
lower score and shortened to a few decimals. It is fitted on raw clip scores; tagging also
applies top_k, which only takes tags away. A tag whose target cannot be reached on these clips
keeps whatever threshold it had.

Temperature: the T minimising the mean negative log-likelihood of the clips' true tags under
softmax(scores / T) over the vocabulary (temperature scaling, Guo et al. 2017), found by a 1-D
search. NLL is convex in 1/T, so a grid plus golden-section refinement finds the minimum.

Pure numpy; writing the result into the config is config_editor.py's, printing it the command's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autotag.analysis.labelled import Labelled
from autotag.analysis.metrics import precision_recall_curve
from autotag.config import Config

DEFAULT_PRECISION = 0.9  # target precision of each tag's threshold
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

    @property
    def reached(self) -> bool:
        return self.threshold is not None

    def to_json(self) -> dict:
        return {"label": self.label, "clips": self.clips, "others": self.others,
                "threshold": self.threshold, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "current": self.current}


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
                   target: float) -> list[TagThreshold]:
    """Each tag with clips → its threshold for `target` precision on scores [n_clips, n_tags]."""
    truth = labelled.truth
    tagging = config.tagging
    out = []
    for j, label in enumerate(labelled.labels):
        positive = truth[:, j]
        if not positive.any():
            continue
        threshold, precision, recall, at = precision_threshold(scores[:, j], positive, target)
        out.append(TagThreshold(label, int(positive.sum()), int((~positive).sum()), threshold,
                                precision, recall, at,
                                tagging.thresholds.get(label, tagging.min_score)))
    return out


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
              target: float = DEFAULT_PRECISION) -> Calibration:
    """Scores [n_clips, n_tags] (configured prompts) → thresholds and temperature."""
    truth = labelled.truth
    temperature = fit_temperature(scores, truth)
    return Calibration(target, tuple(fit_thresholds(labelled, scores, config, target)),
                       temperature, nll(scores, truth, config.tagging.temperature),
                       nll(scores, truth, temperature), len(labelled.clips),
                       len(labelled.failed))


def merged_thresholds(config: Config, calibration: Calibration) -> dict[str, float]:
    """The config's thresholds with the calibrated ones set, in vocabulary order."""
    values = {**config.tagging.thresholds, **calibration.thresholds}
    return {label: values[label] for label in config.labels if label in values}
