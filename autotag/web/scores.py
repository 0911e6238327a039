"""A raw MIL-NCE score and its tag's threshold → what a page says of it: "1.8× threshold", a bar
with the threshold marked, and the one sentence for a page where nothing reaches a threshold.

A raw score (a dot product of unnormalised embeddings: 9.98, 2.4, -5) means nothing to someone
who has never seen one, and the softmax confidence over the vocabulary reads as a probability of
the tag when it is only a share among the tags listed. What a person can read is how far a score
is from the line the tag is given at, so every page shows the score over its tag's threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BAR_SPAN = 2.0  # a bar is full at this many times the threshold; the threshold sits half way
BAR_WIDTH = 100  # the bar's viewBox units


@dataclass(frozen=True)
class Against:
    """A score as a page shows it against its tag's threshold."""

    score: float
    threshold: float
    ratio: float | None  # score / threshold (None: a threshold of 0 or below has no ratio)
    over: bool  # the score reaches the threshold
    fill: float  # viewBox units of BAR_WIDTH the bar fills (the threshold at BAR_WIDTH / 2)

    @property
    def text(self) -> str:
        """'1.8× threshold', '0.4× threshold'; or '+1.2 over threshold' where no ratio reads."""
        if self.ratio is None:
            diff = self.score - self.threshold
            return f"{diff:+.2f} {'over' if diff >= 0 else 'under'} threshold"
        ratio = max(self.ratio, 0.0)  # a score below zero is "nothing", not a negative share
        return f"{ratio:.0f}× threshold" if ratio >= 10 else f"{ratio:.1f}× threshold"

    @property
    def title(self) -> str:
        return f"score {self.score:.2f}; the tag is given from {self.threshold:g}"


def against(score: float, threshold: float) -> Against:
    score, threshold = float(score), float(threshold)
    if threshold > 0 and math.isfinite(score):
        ratio = score / threshold
        fill = min(max(ratio / BAR_SPAN, 0.0), 1.0) * BAR_WIDTH
    else:  # a threshold at or under zero: the bar spans threshold ± a unit of |threshold|
        ratio = None
        unit = max(abs(threshold), 1.0)
        fill = min(max(0.5 + (score - threshold) / (BAR_SPAN * unit), 0.0), 1.0) * BAR_WIDTH
    return Against(score, threshold, ratio, score >= threshold, round(fill, 1))


def nothing_reaches(best_label: str, best: Against, where: str) -> str:
    """The sentence for a page (or a run) where no score reaches its threshold: what the best
    one was, and what changes it."""
    return (f"Nothing reaches its threshold {where}: the closest is {best_label} at "
            f"{best.text} (score {best.score:.2f}, threshold {best.threshold:g}). If it should "
            "match, confirm it on the clip's page and calibrate the thresholds from your "
            "reviews, or lower the threshold in the config.")
