"""`python -m benchmarks.teach [--trials N]` → synthetic libraries that share one large vector →
precision and recall of a tag taught by 2 and 3 examples, per direction and threshold rule.

What chose scoring.fit_examples (issue 31). A library: K concepts × PER clips, 512 wide; each
clip = COMMON·(1 + 0.05·N(0,1)) + its concept's centre (length CENTRE) + isotropic noise
(length ~NOISE) + a nuisance in NUISANCE_DIMS shared directions (length ~NUISANCE). Taught
from the first n clips of each concept, the tag is scored on every other clip; counts are
summed over concepts and trials. Correctness figures, not timings: any machine, a minute.

Directions: centroid (the examples' centroid, the mean's direction taken out: the product's);
white (the same, whitened by the library's covariance shrunk 5% toward the identity: LDA);
with --logreg, a logistic regression (the examples against the library's sample).
Thresholds, from a typical clip (the background's median) toward the examples' held-out mean,
in background spreads: mid (half way), 0.65 (the product's), gap (the widest gap between).
"""

from __future__ import annotations

import argparse

import numpy as np

from autotag.scoring import HELD_OUT_FRACTION, Background

DIM = 512
SETTINGS = {  # name → (K, PER, COMMON, CENTRE, NOISE, NUISANCE)
    "8 concepts": (8, 30, 20.0, 4.0, 1.6, 3.0),
    "5 concepts": (5, 24, 20.0, 4.0, 1.6, 3.0),
    "30 concepts": (30, 20, 20.0, 4.0, 1.6, 2.0),
    "12 close concepts": (12, 40, 20.0, 3.0, 1.6, 3.0),
}
NUISANCE_DIMS = 8
FRACTIONS = {"mid": 0.5, f"{HELD_OUT_FRACTION:g}": HELD_OUT_FRACTION}


def library(seed: int, k: int, per: int, common: float, centre: float, noise: float,
            nuisance: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 [k·per, DIM] clip embeddings, int [k·per] their concepts."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=DIM)
    shared *= common / np.linalg.norm(shared)
    centres = rng.normal(size=(k, DIM))
    centres *= centre / np.linalg.norm(centres, axis=1, keepdims=True)
    nuis = rng.normal(size=(NUISANCE_DIMS, DIM))
    nuis /= np.linalg.norm(nuis, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), per)
    x = (shared * (1 + 0.05 * rng.normal(size=(len(y), 1))) + centres[y]
         + noise * rng.normal(size=(len(y), DIM)) / np.sqrt(DIM)
         + nuisance * rng.normal(size=(len(y), NUISANCE_DIMS)) @ nuis / np.sqrt(NUISANCE_DIMS))
    return x, y


def direction(examples: np.ndarray, bg: Background, whiten) -> np.ndarray:
    """whiten: None (the centroid), a matrix (LDA) or "logreg" (a classifier)."""
    if isinstance(whiten, str):
        return logreg(examples, bg)
    d = bg.off_mean(examples.mean(axis=0))
    return d if whiten is None else bg.off_mean(whiten @ d)


def logreg(examples: np.ndarray, bg: Background) -> np.ndarray:
    """scikit-learn's LogisticRegression: the examples against the background sample (which
    holds the concept's own clips: a library has no labels), classes balanced."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([bg.off_mean(examples), bg.off_mean(bg.sample)])
    y = np.r_[np.ones(len(examples)), np.zeros(len(bg.sample))]
    model = LogisticRegression(class_weight="balanced", max_iter=1000).fit(x, y)
    return bg.off_mean(model.coef_[0])


def thresholds(examples: np.ndarray, bg: Background, whiten: np.ndarray | None
               ) -> tuple[np.ndarray, dict[str, float]]:
    """The direction and each rule's threshold on it (raw score units)."""
    d = direction(examples, bg, whiten)
    background = bg.off_mean(bg.sample) @ d
    median, spread = float(np.median(background)), bg.spread(d)
    held = []
    for i in range(len(examples)):
        di = direction(np.delete(examples, i, axis=0), bg, whiten)
        bi = bg.off_mean(bg.sample) @ di
        held.append((bg.off_mean(examples[i]) @ di - np.median(bi)) / bg.spread(di))
    top = median + float(np.mean(held)) * spread
    rules = {name: median + f * (top - median) for name, f in FRACTIONS.items()}
    inside = np.sort(np.r_[background[(background > median) & (background < top)], median, top])
    widest = int(np.argmax(np.diff(inside)))
    rules["gap"] = float(inside[widest] + inside[widest + 1]) / 2
    return d, rules


def measure(x: np.ndarray, y: np.ndarray, n: int, method: str) -> dict[str, list[int]]:
    """rule → [given, right, relevant] summed over the concepts."""
    bg = Background(len(x), x.mean(axis=0).astype(np.float32), x.astype(np.float32))
    whiten = "logreg" if method == "logreg" else None
    if method == "white":
        z = bg.off_mean(x - x.mean(axis=0))
        cov = z.T @ z / len(z)
        whiten = np.linalg.inv(0.95 * cov + 0.05 * np.trace(cov) / DIM * np.eye(DIM))
    counts: dict[str, list[int]] = {}
    for concept in np.unique(y):
        members = np.flatnonzero(y == concept)
        d, rules = thresholds(x[members[:n]], bg, whiten)
        rest = np.setdiff1d(np.arange(len(x)), members[:n])
        scores = bg.off_mean(x[rest]) @ d
        for rule, t in rules.items():
            given, relevant = scores >= t, y[rest] == concept
            c = counts.setdefault(rule, [0, 0, 0])
            c[0] += int(given.sum())
            c[1] += int((given & relevant).sum())
            c[2] += int(relevant.sum())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3, help="libraries per setting")
    parser.add_argument("--logreg", action="store_true",
                        help="also a logistic regression (needs scikit-learn; slow)")
    args = parser.parse_args()
    methods = ("centroid", "white", "logreg") if args.logreg else ("centroid", "white")
    print("| library | examples | direction | rule | precision | recall |")
    print("|---|---|---|---|---|---|")
    for name, setting in SETTINGS.items():
        for n in (2, 3):
            for method in methods:
                total: dict[str, list[int]] = {}
                for seed in range(args.trials):
                    for rule, c in measure(*library(seed, *setting), n, method).items():
                        t = total.setdefault(rule, [0, 0, 0])
                        for i in range(3):
                            t[i] += c[i]
                for rule, (given, right, relevant) in total.items():
                    print(f"| {name} | {n} | {method} | {rule} | "
                          f"{right / max(given, 1):.3f} | {right / relevant:.3f} |")


if __name__ == "__main__":
    main()
